#!/usr/bin/env bash
# The deterministic simulation of the watcher (tests/sim/watcher_sim.py), beyond what CI runs.
#   scripts/simulate.sh --seeds 20000 [--first 100000]   many seeds
#   scripts/simulate.sh --seed 1236 [-v]                 replay one (with -v: the watcher's logs)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m tests.sim.watcher_sim "$@"
