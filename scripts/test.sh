#!/usr/bin/env bash
# The test command: set up everything, then run the whole suite on real servers
# (anvil, redis-server, nx-27017, headless Chromium). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --browser
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
