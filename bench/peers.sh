#!/usr/bin/env bash
# bench/peers.sh [FLAGS] — run the side-by-side benchmark against nginx and haproxy (bench/peers) as root
# from the module root; every flag goes to the program (see bench/README.md):
#
#   sudo bench/peers.sh                 # full run
#   sudo bench/peers.sh -short           # CI smoke, under a minute
#   sudo bench/peers.sh -only fetch,login # a subset
#
# Exit status: 0 when every run worked, 1 on errors (a failed session, a
# server that does not start).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
if [ "$(id -u)" != 0 ]; then
  echo "bench/peers.sh: run as root (the harness starts Dovecot and Postfix; the big message is stored as the vmail user)" >&2
  exit 1
fi
exec go run ./bench/peers "$@"
