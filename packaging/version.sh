#!/bin/sh
# The package version, from git, in a form dpkg and rpm both order
# correctly: 1.2.3 at tag v1.2.3; 1.2.3+git4.gabcdef1 four commits after it;
# a pre-release tag v1.3.0-rc1 gives 1.3.0~rc1;
# 0.0.0~git20261203.abcdef1 before the first tag (~ sorts below any
# release); +dirty or .dirty for uncommitted changes. Outside a git checkout
# set PKG_VERSION instead.
set -eu
git rev-parse -q --verify HEAD >/dev/null 2>&1 || {
	echo "version.sh: not a git checkout; set PKG_VERSION" >&2
	exit 1
}
dirty=
git diff --quiet HEAD -- 2>/dev/null || dirty=dirty
if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	v=${d#v}
	case "$v" in
	*-[0-9]*-g*) # n commits after the tag
		n=${v%-g*}
		v="$(echo "${n%-*}" | tr - '~')+git${n##*-}.g${v##*-g}"
		;;
	*) v=$(echo "$v" | tr - '~') ;; # v1.2.3-rc1: 1.2.3~rc1, below 1.2.3
	esac
else
	v="0.0.0~git$(TZ=UTC git log -1 --date=format-local:%Y%m%d --format=%cd).$(git rev-parse --short=7 HEAD)"
fi
if [ -n "$dirty" ]; then
	case "$v" in
	*+*) v="$v.$dirty" ;;
	*) v="$v+$dirty" ;;
	esac
fi
echo "$v"
