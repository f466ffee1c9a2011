#!/bin/sh
# Before unpacking (deb preinst, rpm %pre): the system user and group
# "postern", so that the packaged files get their owner. Debian's adduser
# where it is installed, else useradd (on RPM systems "adduser" is useradd).
set -e

debian_adduser=
if command -v adduser >/dev/null 2>&1 && adduser --help 2>&1 | grep -q -- --ingroup; then
	debian_adduser=1
fi
if ! getent group postern >/dev/null; then
	if [ -n "$debian_adduser" ]; then
		addgroup --system postern >/dev/null
	else
		groupadd --system postern
	fi
fi
if ! getent passwd postern >/dev/null; then
	# Its home, so that adduser finds it; the package gives it owner and mode.
	[ -d /var/lib/postern ] || install -d -m 0750 /var/lib/postern
	if [ -n "$debian_adduser" ]; then
		adduser --system --ingroup postern --home /var/lib/postern --no-create-home \
			--shell /usr/sbin/nologin --gecos "postern mail security gateway" postern >/dev/null
	else
		useradd --system --gid postern --home-dir /var/lib/postern --no-create-home \
			--shell /usr/sbin/nologin --comment "postern mail security gateway" postern
	fi
fi
exit 0
