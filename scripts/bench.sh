#!/usr/bin/env bash
# Benchmarks, on demand (never part of the test suite). Each prints ratios against a baseline
# measured in the same run; record results in docs/benchmarks.md with the command used.
#   ./scripts/bench.sh            # all: decode, backfill, push, topics, connections, collect
#   ./scripts/bench.sh decode     # one of: decode backfill push topics connections collect
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
which=("$@")
[ ${#which[@]} -eq 0 ] && which=(decode backfill push topics connections collect)
for name in "${which[@]}"; do
  case "$name" in
    decode|backfill|push|topics|connections|collect) printf '\033[1m==> bench/bench_%s.py\033[0m\n' "$name" >&2
                          .venv/bin/python "bench/bench_$name.py" ;;
    *) echo "bench.sh: unknown benchmark $name (decode, backfill, push, topics, connections, collect)" >&2; exit 2 ;;
  esac
done
