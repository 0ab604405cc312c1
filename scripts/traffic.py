#!/usr/bin/env python3
"""Generate demo traffic: a random mix of the demo events, one transaction every interval.

    python scripts/traffic.py                       # forever, one tx per second
    python scripts/traffic.py --count 50 --interval 0.1
    python scripts/traffic.py --announce http://127.0.0.1:8700   # key: $CHAINPUSH_PUBLISH_KEY

With ``--announce``, every transaction's hash is published to ``app:demo-txs`` before it is
mined (the page follows each one on ``tx:<hash>``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from chainpush import deploy, traffic
from chainpush.watcher.errors import WatcherError
from chainpush.watcher.node import add_endpoint_arguments, connect, endpoint_from_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_endpoint_arguments(parser)
    parser.add_argument("--count", type=int, default=None, help="stop after N transactions")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between transactions")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--deployments-dir", type=Path, default=deploy.DEFAULT_DEPLOYMENTS_DIR)
    parser.add_argument("--private-key", help="sign locally (default: the node's first account)")
    parser.add_argument("--announce", metavar="AUTH_URL",
                        help="publish each transaction's hash to app:demo-txs through this auth "
                             "service's POST /v1/publish (key: $CHAINPUSH_PUBLISH_KEY)")
    args = parser.parse_args(argv)
    announce = None
    if args.announce:
        key = os.environ.get("CHAINPUSH_PUBLISH_KEY", "")
        if not key:
            print("traffic: --announce needs CHAINPUSH_PUBLISH_KEY (one of the auth service's "
                  "[publish] keys)", file=sys.stderr)
            return 2
        announce = traffic.Announcer(args.announce, key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        w3 = connect(endpoint_from_arguments(args))
        deploy.use_sender(w3, args.private_key)
        demo = traffic.Demo.attach(w3, args.deployments_dir, announce=announce)
        sent = traffic.run(demo, count=args.count, interval_s=args.interval, seed=args.seed)
    except (WatcherError, deploy.DeployError) as exc:
        print(f"traffic: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(f"sent {sent} transactions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
