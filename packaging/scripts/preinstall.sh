#!/bin/sh
# Before unpacking (deb preinst, rpm %pre): the system user and group
# "postern", so that the packaged files get their owner.
set -e

if ! getent group postern >/dev/null; then
	if command -v addgroup >/dev/null 2>&1 && addgroup --help 2>&1 | grep -q -- --system; then
		addgroup --system postern >/dev/null
	else
		groupadd --system postern
	fi
fi
if ! getent passwd postern >/dev/null; then
	# Its home, so that adduser finds it; the package gives it owner and mode.
	[ -d /var/lib/postern ] || install -d -m 0750 /var/lib/postern
	if command -v adduser >/dev/null 2>&1 && adduser --help 2>&1 | grep -q -- --system; then
		adduser --system --ingroup postern --home /var/lib/postern --no-create-home \
			--shell /usr/sbin/nologin --gecos "postern mail security gateway" postern >/dev/null
	else
		useradd --system --gid postern --home-dir /var/lib/postern --no-create-home \
			--shell /usr/sbin/nologin --comment "postern mail security gateway" postern
	fi
fi
exit 0
