#!/bin/sh
# After unpacking (deb postinst "configure", rpm %post): make sure the user
# owns its state, then tell systemd about the unit. The service is NOT
# enabled or started: the starter configuration listens on ports 25, 587,
# 143, 110 and 8443, which the mail server behind postern usually holds until
# it is moved (see /usr/share/doc/postern/INSTALL.md). On an upgrade a
# running postern is restarted.
set -e

case "$1" in
configure | [0-9]*) ;;
*) exit 0 ;;
esac

# preinstall made the user; a dpkg -i --force-* or an admin may have undone it.
getent passwd postern >/dev/null || {
	echo "postern: the system user postern is missing; reinstall the package" >&2
	exit 1
}
chown postern:postern /var/lib/postern
chmod 0750 /var/lib/postern
# The admin socket's directory (also made at boot: /usr/lib/tmpfiles.d/postern.conf).
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/postern.conf || true
fi
mkdir -p /run/postern
chown postern:postern /run/postern
chmod 0750 /run/postern
chown root:postern /etc/postern /etc/postern/tls
# A self-signed certificate for this machine, made here so that no two
# installations share a private key. Replace it with a real one (see
# /etc/postern/postern.yaml); an existing pair is never touched.
if [ ! -e /etc/postern/tls/cert.pem ] && [ ! -e /etc/postern/tls/key.pem ]; then
	host=$(hostname -f 2>/dev/null || hostname)
	case "$host" in *.*) ;; *) host=mail.example.com ;; esac
	/usr/bin/postern init --certificate-only --hostname "$host" -o /etc/postern/tls/postern.yaml >/dev/null
	chown root:postern /etc/postern/tls/key.pem
	chmod 0640 /etc/postern/tls/key.pem
	# Purge removes the pair only while it is still this one.
	cat /etc/postern/tls/cert.pem /etc/postern/tls/key.pem | sha256sum | cut -d' ' -f1 >/etc/postern/tls/.made-by-package
fi
[ ! -e /etc/postern/postern.yaml ] || chgrp postern /etc/postern/postern.yaml

upgrade=
case "$1" in
configure) [ -z "$2" ] || upgrade=1 ;;
[0-9]*) [ "$1" -lt 2 ] || upgrade=1 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ -n "$upgrade" ]; then
		systemctl try-restart postern.service || true
	fi
fi
if [ -z "$upgrade" ]; then
	cat <<'MSG'
postern is installed but not started. Edit /etc/postern/postern.yaml, check it
with 'postern check -c /etc/postern/postern.yaml', move the mail server off the
ports postern takes over, then: systemctl enable --now postern
MSG
fi
exit 0
