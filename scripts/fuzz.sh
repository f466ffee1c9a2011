#!/usr/bin/env bash
# Runs every fuzz target of the module (every `func FuzzXxx` in a _test.go
# file) for FUZZTIME each (default 30s). CI runs it briefly (FUZZTIME=5s).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
go=${GO:-go}
n=0
for file in $(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(' internal cmd | sort); do
  pkg=./$(dirname "$file")
  for target in $(grep -ohE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed 's/^func //'); do
    echo "== $target ($pkg, $fuzztime)"
    "$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    n=$((n + 1))
  done
done
echo "fuzzed $n targets"
