#!/usr/bin/env bash
# bench/smtp.sh [FLAGS] — run the SMTP benchmark (bench/smtp) as root from
# the module root; every flag goes to the program (see bench/README.md):
#
#   sudo bench/smtp.sh                  # full run, ~6 minutes
#   sudo bench/smtp.sh -short           # CI smoke, under a minute
#   sudo bench/smtp.sh -profile /tmp/pp # plus CPU and heap profiles of the gateway
#
# Exit status: 0 when every run worked (a missed target is printed as
# "TARGET MISSED", not an error), 1 on errors.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
if [ "$(id -u)" != 0 ]; then
  echo "bench/smtp.sh: run as root (the harness starts Postfix and Dovecot)" >&2
  exit 1
fi
exec go run ./bench/smtp "$@"
