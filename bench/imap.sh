#!/usr/bin/env bash
# bench/imap.sh [FLAGS] — run the IMAP/POP3 benchmark (bench/imap) as root
# from the module root; every flag goes to the program (see bench/README.md):
#
#   sudo bench/imap.sh                  # full run, ~9 minutes
#   sudo bench/imap.sh -short           # CI smoke, under a minute
#   sudo bench/imap.sh -only fetch,idle # a subset
#
# Exit status: 0 when every run worked (a missed target is printed as
# "TARGET MISSED", not an error), 1 on errors.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
if [ "$(id -u)" != 0 ]; then
  echo "bench/imap.sh: run as root (the harness starts Dovecot; the big message is stored as the vmail user)" >&2
  exit 1
fi
exec go run ./bench/imap "$@"
