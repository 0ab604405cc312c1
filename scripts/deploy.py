#!/usr/bin/env python3
"""Deploy the demo contracts (CallDemo, DemoToken) and record their addresses per chain id.

    python scripts/deploy.py                       # node at $CHAINPUSH_RPC or :8545
    python scripts/deploy.py --ws ws://127.0.0.1:8545
    python scripts/deploy.py --ipc .chainpush/dev/anvil.ipc

Idempotent: contracts already deployed at the recorded address are left alone.
Writes deployments/<chain_id>.json (format: docs/configuration.md, "Deployments").
Your own contracts, with constructor arguments: ``chainpush deploy NAME [ARGS…]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chainpush import deploy
from chainpush.watcher.errors import WatcherError
from chainpush.watcher.node import add_endpoint_arguments, connect, endpoint_from_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_endpoint_arguments(parser)
    parser.add_argument("--abi-dir", type=Path, default=deploy.DEFAULT_ABI_DIR)
    parser.add_argument("--deployments-dir", type=Path, default=deploy.DEFAULT_DEPLOYMENTS_DIR)
    parser.add_argument("--private-key", help="sign locally (default: the node's first account)")
    parser.add_argument("--force", action="store_true", help="deploy even if already deployed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        w3 = connect(endpoint_from_arguments(args))
        deploy.use_sender(w3, args.private_key)
        found = deploy.deploy(
            w3, abi_dir=args.abi_dir, deployments_dir=args.deployments_dir, force=args.force
        )
    except (WatcherError, deploy.DeployError) as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    for d in found.values():
        print(f"{d.name} {d.address} block {d.block}")
    print(f"recorded in {deploy.deployments_path(int(w3.eth.chain_id), args.deployments_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
