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
    # Go's fuzzer ends with "context deadline exceeded" and no failing
    # input when the time runs out before it has even run the seed corpus
    # (a loaded machine): that target is run once more for 30 s; a real
    # failure names its input and fails at once.
    if ! out=$("$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
      echo "$out"
      if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input' <<<"$out"; then
        echo "== $target again: the fuzzer ran out of time before it started ($pkg, 30s)"
        "$go" test -run '^$' -fuzz "^${target}\$" -fuzztime 30s "$pkg"
      else
        exit 1
      fi
    else
      echo "$out"
    fi
    n=$((n + 1))
  done
done
echo "fuzzed $n targets"
