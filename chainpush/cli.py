"""The ``chainpush`` command line: one subcommand per service, plus the dev stack.

Each subcommand lives in the module that owns it and registers itself through
``register(subparsers)``; this entry point only configures logging and dispatches.
Environment variables are read by each subcommand's argument defaults (``CHAINPUSH_*``), here at
the entry point and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from chainpush.flags import InvalidBoolean, env_bool

#: modules that own subcommands, each with ``register(subparsers) -> None``; the registered
#: parser sets ``func(args) -> int``.
COMMAND_MODULES = (
    "chainpush.init",
    "chainpush.watcher.compile",
    "chainpush.devstack",
    "chainpush.deploy",
    "chainpush.watcher.cli",
    "chainpush.push.cli",
    "chainpush.push.webhook_cli",
)


QUICKSTART = """\
a project of your own (each command has --help with examples):
  chainpush init app && cd app     # chainpush.toml, contracts/, abi/, package.json; npm install
  chainpush compile                # contracts/*.sol → abi/<Name>.abi + abi/<Name>.json
  chainpush dev up                 # anvil, redis, nx-27017; state in ./.chainpush
  chainpush deploy Counter         # → deployments/<chain id>.json
  chainpush call Counter count     # view call: prints the result
  chainpush call Counter increment 5 --send
  chainpush run                    # watch [[contracts]] of ./chainpush.toml, push to browsers
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainpush",
        description="Watch smart contracts on an Ethereum node and push their events to browsers.",
        epilog=QUICKSTART, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("CHAINPUSH_LOG_LEVEL", "INFO"),
        help="logging level (env CHAINPUSH_LOG_LEVEL; default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _choose_event_loop()
    except InvalidBoolean as exc:
        print(f"chainpush: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def _choose_event_loop() -> None:
    """uvloop only when asked (``CHAINPUSH_UVLOOP=1``, with uvloop installed): measured, it
    did not make the push node's fan-out faster here (docs/benchmarks.md, "uvloop"), so the
    default stays asyncio's loop."""
    if not env_bool(os.environ, "CHAINPUSH_UVLOOP"):
        return
    try:
        import uvloop
    except ImportError:
        raise InvalidBoolean("CHAINPUSH_UVLOOP=1 but uvloop is not installed: pip install "
                             "uvloop (or unset CHAINPUSH_UVLOOP)") from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())
