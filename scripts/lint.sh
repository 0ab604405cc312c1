#!/usr/bin/env bash
# Static checks, as CI runs them: ruff, mypy --strict, and abi/ up to date with contracts/.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/chainpush compile --check
