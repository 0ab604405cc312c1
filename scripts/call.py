#!/usr/bin/env python3
"""Call the demo contracts: read CallDemo.get() (2020 on a fresh deploy), or send transactions
that emit the demo events.

    python scripts/call.py                    # prints 2020
    python scripts/call.py --set 2021         # CallDemo.set → ValueChanged, then prints 2021
    python scripts/call.py --emit Transfer    # one transaction emitting Transfer
    python scripts/call.py --emit all         # one transaction for each demo event
    python scripts/call.py --ws ws://127.0.0.1:8545     (or --ipc PATH, --rpc URL)

Any deployed contract, any function: ``chainpush call NAME FN [ARGS…] [--send --value WEI]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from chainpush import deploy, traffic
from chainpush.watcher.errors import WatcherError
from chainpush.watcher.node import add_endpoint_arguments, connect, endpoint_from_arguments

EVENTS = ("ValueChanged", "Transfer", "Approval", "Message", "Batch", "Tagged", "Order")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_endpoint_arguments(parser)
    parser.add_argument("--set", type=int, metavar="N", help="send CallDemo.set(N) first")
    parser.add_argument("--emit", action="append", choices=[*EVENTS, "all"], default=[],
                        help="send a transaction emitting this event (repeatable)")
    parser.add_argument("--deployments-dir", type=Path, default=deploy.DEFAULT_DEPLOYMENTS_DIR)
    parser.add_argument("--private-key", help="sign locally (default: the node's first account)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random arguments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        w3 = connect(endpoint_from_arguments(args))
        deploy.use_sender(w3, args.private_key)
        demo = traffic.Demo.attach(w3, args.deployments_dir)
        if args.set is not None:
            demo.value_changed(args.set)
        emitters = demo.emitters(random.Random(args.seed))
        wanted = EVENTS if "all" in args.emit else tuple(args.emit)
        for name in wanted:
            receipt = emitters[name]()
            print(json.dumps({
                "event": name, "block": receipt["blockNumber"],
                "tx": "0x" + receipt["transactionHash"].hex(), "logs": len(receipt["logs"]),
            }))
        print(demo.call_demo.functions.get().call())
    except (WatcherError, deploy.DeployError) as exc:
        print(f"call: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
