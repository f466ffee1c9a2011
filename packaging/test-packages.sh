#!/usr/bin/env bash
# Build the .deb and the .rpm; query the .rpm (where rpm is installed);
# install the .deb with dpkg, check what it installed and that the packaged
# layout serves (as the postern user, state in /var/lib/postern, admin
# socket in /run/postern), then remove and purge it. Root on Debian;
# .ci/run runs it. Refuses to run where postern is installed already.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: run as root" >&2; exit 1; }
if dpkg-query -W -f='${Status}' postern 2>/dev/null | grep 'install ok\|config-files' >/dev/null; then
	echo "test-deb.sh: a postern package is installed here already; not touching it" >&2
	exit 1
fi

fail() { echo "test-deb.sh: FAIL: $*" >&2; exit 1; }
serve_pid=
work=$(mktemp -d /tmp/postern-deb.XXXXXX)
cleanup() {
	[ -z "$serve_pid" ] || kill "$serve_pid" 2>/dev/null || true
	[ -z "$serve_pid" ] || wait "$serve_pid" 2>/dev/null || true
	dpkg-query -W postern >/dev/null 2>&1 && dpkg --purge postern >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# dpkg, retried for up to 2 minutes while another dpkg or apt holds its lock
# (the end-to-end harness installs Postfix and Dovecot with apt).
dpkg_() {
	local deadline=$((SECONDS + 120))
	while :; do
		if dpkg "$@" 2>"$work/dpkg.err"; then
			cat "$work/dpkg.err" >&2
			return 0
		fi
		if ! grep -qi 'lock' "$work/dpkg.err" || [ $SECONDS -ge $deadline ]; then
			cat "$work/dpkg.err" >&2
			return 1
		fi
		sleep 1
	done
}

make --no-print-directory package >"$work/make.log" 2>&1 || { cat "$work/make.log"; fail "make package"; }
debs=(build/postern_*.deb)
rpms=(build/postern-*.rpm)
[ ${#debs[@]} = 1 ] && [ ${#rpms[@]} = 1 ] || fail "expected one .deb and one .rpm, got: ${debs[*]} ${rpms[*]}"
echo "built ${debs[0]} ($(du -h "${debs[0]}" | cut -f1)), ${rpms[0]} ($(du -h "${rpms[0]}" | cut -f1))"

if command -v rpm >/dev/null; then
	rpm -qp "${rpms[0]}" >/dev/null
	want=$(dpkg-deb -f "${debs[0]}" Version)
	[ "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "${rpms[0]}")" = "$want" ] || fail "the .rpm's version is not $want"
	rpm -qplv "${rpms[0]}" | grep -E '^drwxr-x--- +[0-9]+ +postern +postern .* /var/lib/postern$' >/dev/null || fail "/var/lib/postern in the .rpm"
	[ "$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "${rpms[0]}" | grep ' /etc/postern/postern.yaml$')" = "cn /etc/postern/postern.yaml" ] ||
		fail "postern.yaml is not %config(noreplace) in the .rpm"
	for s in preinstall postinstall preuninstall postuninstall; do
		rpm -qp --scripts "${rpms[0]}" | grep "^$s scriptlet" >/dev/null || fail "the .rpm has no $s scriptlet"
	done
fi

dpkg_ -i "${debs[0]}"

# postern version: the package's version, a full revision, both spellings.
pkgver=$(dpkg-query -W -f='${Version}' postern)
postern version
[ "$(postern version | head -1)" = "postern ${pkgver%-1}" ] || fail "postern version does not say ${pkgver%-1}"
postern version | grep -E '^  revision  [0-9a-f]{40}( \(modified\)|-dirty)?$' >/dev/null || fail "no revision in postern version"
[ "$(postern --version)" = "$(postern version)" ] || fail "postern --version differs from postern version"

# The packaged configuration passes check, as root and as the service user.
postern check -c /etc/postern/postern.yaml
runuser -u postern -- postern check -c /etc/postern/postern.yaml >/dev/null 2>&1 || fail "the postern user cannot check /etc/postern/postern.yaml"

# Users, owners, modes; man pages, completion, unit.
getent passwd postern | grep ':/var/lib/postern:/usr/sbin/nologin$' >/dev/null || fail "postern user: $(getent passwd postern)"
[ "$(stat -c '%U:%G %a' /var/lib/postern)" = "postern:postern 750" ] || fail "/var/lib/postern: $(stat -c '%U:%G %a' /var/lib/postern)"
[ "$(stat -c '%U:%G %a' /etc/postern)" = "root:postern 750" ] || fail "/etc/postern: $(stat -c '%U:%G %a' /etc/postern)"
[ "$(stat -c '%U:%G %a' /etc/postern/postern.yaml)" = "root:postern 640" ] || fail "postern.yaml: $(stat -c '%U:%G %a' /etc/postern/postern.yaml)"
grep -qx /etc/postern/postern.yaml /var/lib/dpkg/info/postern.conffiles || fail "postern.yaml is not a conffile"
zcat /usr/share/man/man1/postern-serve.1.gz | grep '^\.TH "POSTERN-SERVE" "1"' >/dev/null || fail "man page postern-serve(1)"
grep -q 'complete -o default -F __start_postern postern' /usr/share/bash-completion/completions/postern || fail "bash completion"
if command -v systemd-analyze >/dev/null; then
	# Warnings (an unknown key, a bad value) exit 0: fail on any about postern.
	verify=$(systemd-analyze verify /usr/lib/systemd/system/postern.service 2>&1) || fail "systemd-analyze verify: $verify"
	if grep -i postern <<<"$verify"; then fail "systemd-analyze verify warns about postern.service"; fi
fi

# Reinstalling (as an upgrade does) keeps an edited configuration.
echo "# edited by the package test" >>/etc/postern/postern.yaml
dpkg_ -i "${debs[0]}" >/dev/null
tail -1 /etc/postern/postern.yaml | grep -x '# edited by the package test' >/dev/null || fail "reinstalling replaced the edited configuration"
[ "$(stat -c '%U:%G %a' /etc/postern/postern.yaml)" = "root:postern 640" ] || fail "postern.yaml after reinstall: $(stat -c '%U:%G %a' /etc/postern/postern.yaml)"

# Serve with the packaged paths as the service user (the unit's User= and
# RuntimeDirectory=), on loopback ports of its own: the store and the token
# go to /var/lib/postern, the socket to /run/postern, and root administers
# it with 'postern blocks'.
sed -E 's/listen: ":[0-9]+"/listen: "127.0.0.1:0"/' /etc/postern/postern.yaml >"$work/serve.yaml"
chmod 0755 "$work" && chmod 0644 "$work/serve.yaml"
install -d -o postern -g postern -m 0750 /run/postern
runuser -u postern -- postern serve -c "$work/serve.yaml" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
	[ -S /run/postern/admin.sock ] && break
	kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; fail "postern serve exited"; }
	sleep 0.1
done
[ -S /run/postern/admin.sock ] || { cat "$work/serve.log"; fail "no admin socket after 10 s"; }
postern blocks add -c "$work/serve.yaml" 203.0.113.66 --for 1h --comment "package test"
postern blocks list -c "$work/serve.yaml" | grep '^203\.0\.113\.66 ' >/dev/null || fail "the manual block is not listed"
[ "$(stat -c '%U' /var/lib/postern/postern.db)" = postern ] || fail "store not owned by postern"
[ "$(stat -c '%U %a' /var/lib/postern/admin.token)" = "postern 600" ] || fail "token: $(stat -c '%U %a' /var/lib/postern/admin.token)"
kill "$serve_pid"
wait "$serve_pid" || true
serve_pid=

# Remove keeps the configuration and the data; purge deletes them.
dpkg_ -r postern
[ ! -e /usr/bin/postern ] || fail "/usr/bin/postern left after remove"
[ -f /etc/postern/postern.yaml ] || fail "remove deleted the configuration"
[ -f /var/lib/postern/postern.db ] || fail "remove deleted the block store"
dpkg_ --purge postern
[ ! -e /etc/postern ] || fail "/etc/postern left after purge: $(ls -la /etc/postern)"
[ ! -e /var/lib/postern ] || fail "/var/lib/postern left after purge"
[ ! -e /run/postern ] || fail "/run/postern left after purge"
echo "package test: ok"
