#!/usr/bin/env bash
# The demo command: set up everything, start the dev stack (anvil, redis-server, nx-27017),
# compile-check, deploy and call the demo contracts (2020), then run the whole pipeline —
# watcher → collect → dispatch → two push nodes → the page — with demo traffic flowing, a
# factory creating pairs (each child watched), every transaction's lifecycle on the page, and a
# webhook receiver logging what a backend gets. Ctrl-C stops everything it started.
#
#   ./scripts/demo.sh            # run until Ctrl-C
#   DEMO_SECONDS=60 ./scripts/demo.sh   # run for a minute, then stop
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

bash scripts/install.sh
CP=.venv/bin/chainpush
PY=.venv/bin/python

cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  [ -n "${run_pid:-}" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null || true
  [ -n "${traffic_pid:-}" ] && kill "$traffic_pid" 2>/dev/null && wait "$traffic_pid" 2>/dev/null || true
  [ -n "${receiver_pid:-}" ] && kill "$receiver_pid" 2>/dev/null && wait "$receiver_pid" 2>/dev/null || true
  "$CP" dev down >/dev/null || true
}
trap cleanup EXIT INT TERM

say "compiling contracts/ with py-solc-x (checking abi/ is current)"
"$CP" compile --check

say "starting the dev stack"
"$CP" dev up
eval "$("$CP" dev env)"

say "deploying the demo contracts"
"$PY" scripts/deploy.py

say "calling CallDemo.get() — the geth tutorial's call"
"$PY" scripts/call.py

DEMO_CONFIG=.chainpush/dev/demo.toml
AUTH_URL=http://127.0.0.1:8700   # the page ([auth] port)
"$PY" scripts/demo_config.py "$DEMO_CONFIG" --webhook-url http://127.0.0.1:8790/hooks
# the traffic generator announces each transaction on app:demo-txs with this server key
CHAINPUSH_PUBLISH_KEY=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
export CHAINPUSH_PUBLISH_KEY CHAINPUSH_PUBLISH_KEYS=$CHAINPUSH_PUBLISH_KEY

say "starting a webhook receiver (what an app backend gets): tail -f .chainpush/dev/webhooks.log"
"$CP" webhooks receive demo-receiver --config "$DEMO_CONFIG" --port 8790 \
  >.chainpush/dev/webhooks.log 2>&1 &
receiver_pid=$!

say "running watcher, collect, dispatch, two push nodes, the page and the webhook deliverer"
"$CP" run --config "$DEMO_CONFIG" &
run_pid=$!
for _ in $(seq 1 120); do
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$AUTH_URL/healthz" 2>/dev/null && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.5
done

say "generating demo traffic (one transaction a second; hashes announced on app:demo-txs)"
"$PY" scripts/traffic.py --interval 1 --announce "$AUTH_URL" >.chainpush/dev/traffic.log 2>&1 &
traffic_pid=$!

# watch both: a demo that stops, or a traffic generator that crashed, says so (never silently)
started=$SECONDS
while kill -0 "$run_pid" 2>/dev/null; do
  if [ -n "${traffic_pid:-}" ] && ! kill -0 "$traffic_pid" 2>/dev/null; then
    wait "$traffic_pid" && code=0 || code=$?
    say "the demo traffic generator stopped (exit code $code); its last lines:"
    tail -n 15 .chainpush/dev/traffic.log >&2 || true
    say "the page keeps running; restart traffic with: $PY scripts/traffic.py --interval 1"
    traffic_pid=
  fi
  if [ -n "${DEMO_SECONDS:-}" ] && [ $((SECONDS - started)) -ge "$DEMO_SECONDS" ]; then
    exit 0
  fi
  sleep 1
done
wait "$run_pid" && code=0 || code=$?
say "chainpush run stopped (exit code $code)"
exit "$code"
