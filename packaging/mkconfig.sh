#!/bin/sh
# mkconfig.sh POSTERN OUT — the packaged /etc/postern/postern.yaml:
# 'postern init's starter configuration with the block store and the admin
# token under /var/lib/postern, the admin socket in /run/postern (the
# systemd unit's StateDirectory and RuntimeDirectory) and run_as: postern.
# Fails if the starter configuration no longer has the lines it rewrites,
# or if the result does not pass 'postern check'.
set -eu
postern=$1
out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$postern" init -o - >"$tmp/starter.yaml"

# key  value in the starter  packaged value
while read -r key from to; do
	grep -Eq "^[[:space:]]+$key:[[:space:]]+\"?$from\"?([[:space:]]|\$)" "$tmp/starter.yaml" || {
		echo "mkconfig.sh: the starter configuration has no '$key: $from' to rewrite; update packaging/mkconfig.sh" >&2
		exit 1
	}
done <<'MAP'
path state/postern.db /var/lib/postern/postern.db
listen unix:state/admin.sock unix:/run/postern/admin.sock
token_file state/admin.token /var/lib/postern/admin.token
MAP

sed -e 's|^\([[:space:]]*path:[[:space:]]*\)state/postern\.db|\1/var/lib/postern/postern.db|' \
	-e 's|^\([[:space:]]*listen:[[:space:]]*"\{0,1\}\)unix:state/admin\.sock|\1unix:/run/postern/admin.sock|' \
	-e 's|^\([[:space:]]*token_file:[[:space:]]*\)state/admin\.token|\1/var/lib/postern/admin.token|' \
	-e 's|postern check -c postern\.yaml|postern check -c /etc/postern/postern.yaml|' \
	-e 's|(SQLite), relative to this file\.|(SQLite).|' \
	"$tmp/starter.yaml" >"$tmp/postern.yaml"

# Nothing may be left under a relative state/ directory (it would land in
# /etc/postern, read-only to the service).
if grep -nE '^[^#]*[" :]state/' "$tmp/postern.yaml" >&2; then
	echo "mkconfig.sh: the lines above still keep state under /etc/postern; update packaging/mkconfig.sh" >&2
	exit 1
fi
grep -q '^run_as:' "$tmp/postern.yaml" || cat >>"$tmp/postern.yaml" <<'YAML'

# The systemd unit starts postern as this user with CAP_NET_BIND_SERVICE;
# started as root by hand, postern switches to it once the ports are bound.
run_as: postern
YAML

"$postern" check -c "$tmp/postern.yaml" >/dev/null
cp "$tmp/postern.yaml" "$out"
