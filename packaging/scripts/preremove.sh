#!/bin/sh
# Before removing the files (deb prerm "remove", rpm %preun with 0): stop
# and disable the service. On an upgrade it keeps running until postinstall
# restarts it.
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now postern.service >/dev/null 2>&1 || true
fi
exit 0
