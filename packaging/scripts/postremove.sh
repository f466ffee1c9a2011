#!/bin/sh
# After removing the files (deb postrm, rpm %postun). Remove keeps the data
# (/var/lib/postern: blocks, audit log, admin token, GeoIP files) and the
# configuration; dpkg --purge deletes them. RPM has no purge: after
# 'rpm -e' delete /var/lib/postern by hand if it is no longer wanted.
# The postern user stays, as Debian does for system users, so that no file
# left behind is ever owned by a reused id.
set -e

case "$1" in
purge)
	rm -rf /var/lib/postern /run/postern
	# dpkg has deleted postern.yaml. The self-signed pair the package made
	# goes if it is still the one it made; certificates an admin put here
	# stay.
	if [ -f /etc/postern/tls/.made-by-package ]; then
		sum=$(cat /etc/postern/tls/cert.pem /etc/postern/tls/key.pem 2>/dev/null | sha256sum | cut -d' ' -f1)
		if [ "$sum" = "$(cat /etc/postern/tls/.made-by-package)" ]; then
			rm -f /etc/postern/tls/cert.pem /etc/postern/tls/key.pem
		fi
		rm -f /etc/postern/tls/.made-by-package
	fi
	rmdir /etc/postern/tls /etc/postern 2>/dev/null || true
	;;
esac
case "$1" in
remove | purge | 0)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
	;;
esac
exit 0
