#!/bin/sh
# mkconfig.sh POSTERN OUT — the packaged /etc/postern/postern.yaml:
# 'postern init's starter configuration with the block store and the admin
# token under /var/lib/postern, the admin socket in /run/postern (the
# systemd unit's StateDirectory and RuntimeDirectory) and run_as: postern.
# Fails if the starter configuration no longer has the lines it rewrites,
# or if the result does not pass 'postern check'. Its certificate is
# /etc/postern/tls/{cert,key}.pem, made at install time.
set -eu
postern=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") # absolute: used from a temporary directory
out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# init writes its self-signed pair next to the file: those two files are
# only for the check below. The package never ships a private key: the
# post-install script makes a pair for the machine it is installed on.
(cd "$tmp" && "$postern" init -o starter.yaml >/dev/null)

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
# Checked with this build's pair in place (no ports probed: this is not the
# machine that will serve it), then pointed at /etc/postern/tls.
(cd "$tmp" && "$postern" check --bind=false -c postern.yaml >/dev/null)
grep -q 'cert: "cert\.pem", key: "key\.pem"' "$tmp/postern.yaml" || {
	echo "mkconfig.sh: the starter configuration has no 'cert: \"cert.pem\", key: \"key.pem\"' to rewrite; update packaging/mkconfig.sh" >&2
	exit 1
}
sed -i -e 's|cert: "cert\.pem", key: "key\.pem"|cert: "/etc/postern/tls/cert.pem", key: "/etc/postern/tls/key.pem"|' "$tmp/postern.yaml"
grep -q '^run_as:' "$tmp/postern.yaml" || cat >>"$tmp/postern.yaml" <<'YAML'

# The systemd unit starts postern as this user with CAP_NET_BIND_SERVICE;
# started as root by hand, postern switches to it once the ports are bound.
run_as: postern
YAML

cp "$tmp/postern.yaml" "$out"
