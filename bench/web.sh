#!/usr/bin/env bash
# bench/web.sh [FLAGS] — run the web gateway benchmark (bench/web) from the
# module root; every flag goes to the program (see docs/BENCHMARKS.md):
#
#   bench/web.sh              # full run: 3 rounds × 3 scenarios, 10 s windows (~5 minutes)
#   bench/web.sh -short       # CI smoke: one round of 3 s windows (~40 s)
#
# Needs nginx and wrk (Debian packages nginx-light or nginx, wrk). Exit
# status: 0 when every run worked (a missed target is printed as
# "TARGET MISSED", not an error), 1 on errors.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
exec go run ./bench/web "$@"
