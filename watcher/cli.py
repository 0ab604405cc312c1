"""``chainpush watch``: follow the configured contracts and store their records.

    chainpush watch --config chainpush.toml                 # records → push's Collector
    chainpush watch --config chainpush.toml --sink mongo    # records → `events` only
    chainpush watch --config chainpush.toml --print-config  # resolved configuration as JSON
    chainpush watch --config chainpush.toml --check-config  # validate (and reach the node)
    chainpush watch --claims                # contract names claimed, and the chain of each
    chainpush watch --release-claim NAME    # free a name a chain no longer watches

Without ``--config`` it reads the project's ``chainpush.toml``: in the current directory or the
nearest one above (``chainpush.project.find_config``); without one, it watches the demo
contracts that ``scripts/deploy.py`` recorded in ``deployments/`` (``watcher.config.DEMO_CONFIG``).

Environment (read here, at the entry point, and nowhere else): ``CHAINPUSH_WATCH_CONFIG``
(config path), ``CHAINPUSH_MONGO_URI`` (overrides ``[stores] mongo_uri``),
``CHAINPUSH_RPC`` / ``CHAINPUSH_WS`` / ``CHAINPUSH_IPC`` (override ``[node]`` endpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from chainpush import project
from chainpush.watcher.binding import bind
from chainpush.watcher.config import Config, demo_config, load_config
from chainpush.watcher.errors import ConfigError, NodeError, NodeUnreachable, WatcherError
from chainpush.watcher.node import Endpoint
from chainpush.watcher.rpc import Rpc, open_rpc

logger = logging.getLogger(__name__)


WATCH_DESCRIPTION = """\
Follow the [[contracts]] of the configuration on an Ethereum node (IPC, websocket or HTTP): decode
their events (and state reads), track confirmations and reorgs, and hand the records to collect,
which stores them in MongoDB with an offset per topic for the push nodes (docs/watcher.md)."""

WATCH_EPILOG = """\
examples:
  chainpush watch                                   # ./chainpush.toml, records → collect
  chainpush watch --config chainpush.toml --sink mongo    # records → `events` only
  chainpush watch --check-config                    # check ABIs, names, addresses, the node
  chainpush watch --print-config                    # the resolved configuration as JSON
  chainpush watch --config base.toml                # a second chain: its own file, same [stores]
  chainpush watch --claims                          # contract names and the chain of each
  CHAINPUSH_WS=ws://127.0.0.1:8545 chainpush watch  # another node endpoint

environment: CHAINPUSH_WATCH_CONFIG (config path), CHAINPUSH_MONGO_URI, CHAINPUSH_REDIS_URL,
CHAINPUSH_RPC / CHAINPUSH_WS / CHAINPUSH_IPC (override [node] endpoints). Every key with its
default: docs/configuration.md."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("watch", help="watch contracts on a node and store their events",
                            description=WATCH_DESCRIPTION, epilog=WATCH_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config (env CHAINPUSH_WATCH_CONFIG; default: chainpush.toml in "
                             "the current directory or the nearest one above, else the "
                             "built-in demo config: DemoToken + CallDemo from deployments/)")
    parser.add_argument("--sink", choices=("collect", "mongo", "stdout"), default=None,
                        help="where records go (default: collect if installed, else mongo)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-config", action="store_true",
                      help="print the resolved configuration as JSON and exit")
    mode.add_argument("--check-config", action="store_true",
                      help="validate the configuration (ABIs, names; then each [node] "
                           "endpoint's chain id against [node] chain_id and the addresses' "
                           "code) and exit")
    mode.add_argument("--claims", action="store_true",
                      help="list the contract names claimed in [stores]'s database (one chain "
                           "each: docs/watcher.md, Several chains) and exit")
    mode.add_argument("--release-claim", metavar="NAME", default=None,
                      help="release the claim of contract name NAME (a chain that no longer "
                           "watches it) and exit")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve /metrics (Prometheus) and /healthz on 127.0.0.1:PORT "
                             "(default: [watch] metrics_port; unset: not served)")
    parser.set_defaults(func=main)


def apply_env(config: Config, env: dict[str, str]) -> Config:
    """The configuration with ``CHAINPUSH_*`` environment overrides applied."""
    stores, node = config.stores, config.node
    if env.get("CHAINPUSH_MONGO_URI"):
        stores = dataclasses.replace(stores, mongo_uri=env["CHAINPUSH_MONGO_URI"])
    if env.get("CHAINPUSH_REDIS_URL"):
        stores = dataclasses.replace(stores, redis_url=env["CHAINPUSH_REDIS_URL"])
    urls = [env[k] for k in ("CHAINPUSH_IPC", "CHAINPUSH_WS", "CHAINPUSH_RPC") if env.get(k)]
    if urls:
        node = dataclasses.replace(node, urls=tuple(urls))
    return dataclasses.replace(config, stores=stores, node=node)


async def _check(config: Config, say: Callable[[str], None]) -> None:
    """``--check-config``: what needs no node (ABIs, names, filters), then every endpoint's
    chain id against ``[node] chain_id`` and each address's code on the first that answers.

    Raises ``ConfigError`` for a wrong configuration, ``NodeUnreachable`` when no endpoint
    answers (after saying what was checked without the node)."""
    bind(config, config.node.chain_id)  # ABIs, event/function/filter names, without the node
    say(f"{config.source}: {len(config.contracts)} contract(s), ABIs and names ok")
    expected = config.node.chain_id
    live: list[tuple[Rpc, int]] = []
    unreachable: list[str] = []
    try:
        for url in config.node.urls:
            endpoint = Endpoint.parse(url, timeout_s=config.node.timeout_s)
            try:
                rpc = await open_rpc(endpoint)
            except NodeError as exc:
                unreachable.append(endpoint.describe())
                say(f"{endpoint.describe()}: unreachable ({exc})")
                continue
            try:
                chain_id = int(await rpc.call("eth_chainId", []), 16)
            except NodeError as exc:
                await rpc.aclose()
                unreachable.append(endpoint.describe())
                say(f"{endpoint.describe()}: unreachable ({exc})")
                continue
            live.append((rpc, chain_id))
            if expected is not None and chain_id != expected:
                raise ConfigError(f"{config.source}: [node] chain_id is {expected}, but "
                                  f"{endpoint.describe()} serves chain {chain_id}")
            if expected is not None:
                say(f"[node] chain_id {expected}: {endpoint.describe()} serves it")
            else:
                say(f"{endpoint.describe()} serves chain {chain_id} ([node] chain_id unset)")
            if live[0][1] != chain_id:
                raise ConfigError(f"{config.source}: [node] endpoints serve different chains: "
                                  f"{live[0][1]} and {chain_id} ({endpoint.describe()})")
        if not live:
            wanted = f"[node] chain_id {expected}" if expected is not None else "the chain id"
            raise NodeUnreachable(f"no node answered ({', '.join(unreachable)}): {wanted} and "
                                  "the contracts' code not checked")
        rpc, chain_id = live[0]
        bound = bind(config, chain_id)
        codes = await rpc.batch([("eth_getCode", [s.address, "latest"]) for s in bound.specs])
        for spec, code in zip(bound.specs, codes, strict=True):
            if code in (None, "0x", "0x0"):
                raise ConfigError(f"{config.source}: [[contracts]] {spec.name}.address "
                                  f"{spec.address}: no contract code there on chain {chain_id}")
            say(f"{spec.name} at {spec.address} on chain {chain_id}: code present")
        await _check_claims(config, bound, say)
    finally:
        for rpc, _ in live:
            await rpc.aclose()


async def _claims(config: Config, release: str | None) -> int:
    """``--claims`` / ``--release-claim NAME``."""
    from chainpush.watcher.claims import MongoClaims

    stores = config.stores
    async with MongoClaims(stores.mongo_uri, stores.database) as claims:
        if release is not None:
            if not await claims.release(release):
                print(f"chainpush watch: no claim of {release!r} in "
                      f"{stores.database}.contracts (see: chainpush watch --claims)",
                      file=sys.stderr)
                return 1
            print(f"released {release}: the next watcher to claim it owns it")
            return 0
        for doc in await claims.list():
            print(f"{doc['_id']}\tchain {doc.get('chain_id')}\t{doc.get('watch')}\t"
                  f"{','.join(doc.get('addresses') or []) or '-'}\t{doc.get('source', '')}")
    return 0


async def _check_claims(config: Config, bound: Any, say: Callable[[str], None]) -> None:
    """The names against those other chains claimed in ``[stores]`` (docs/watcher.md, Several
    chains): a clash is a ``ConfigError``; MongoDB unreachable is said, not an error."""
    from chainpush.watcher.checkpoint import CheckpointError
    from chainpush.watcher.claims import MongoClaims, claims_of

    stores = config.stores
    try:
        async with MongoClaims(stores.mongo_uri, stores.database, timeout_s=2.0) as claims:
            clashes = await claims.conflicts(claims_of(config, bound))
    except CheckpointError as exc:
        say(f"contract names not checked against other chains' claims ({exc})")
        return
    if clashes:
        raise ConfigError(clashes[0])
    say(f"contract names: none claimed by another chain in {stores.database}.contracts")


def _sink_kind(requested: str | None) -> str:
    if requested:
        return requested
    return "collect" if importlib.util.find_spec("chainpush.push.collect") else "mongo"


@contextlib.asynccontextmanager
async def serve_metrics(watcher: Any, port: int | None) -> AsyncIterator[int | None]:
    """``/metrics`` (Prometheus text: leader 0|1, lease generation, blocks, records, reorgs,
    fenced writes) and ``/healthz`` (JSON) of ``watcher`` on 127.0.0.1:``port`` (0: a free
    port; None: nothing served). Yields the port."""
    from chainpush.scrape import ScrapePortError, serve_scrape

    try:
        async with serve_scrape(watcher.render_metrics, lambda: (200, watcher.health()), port,
                                setting="[watch] metrics_port") as bound:
            yield bound
    except ScrapePortError as exc:
        raise ConfigError(str(exc.strerror)) from exc


async def _run(config: Config, sink_kind: str) -> None:
    from chainpush.watcher.service import Watcher
    from chainpush.watcher.sink import JsonLinesSink, MongoSink

    sink: Any
    if sink_kind == "collect":
        from chainpush.push.collect import Collector

        sink = Collector(
            mongo_uri=config.stores.mongo_uri, database=config.stores.database,
            redis_url=config.stores.redis_url, namespace=config.stores.namespace,
        )
    elif sink_kind == "mongo":
        sink = MongoSink(config.stores.mongo_uri, config.stores.database)
    else:
        sink = JsonLinesSink()
    async with sink, Watcher(config, sink) as watcher, \
            serve_metrics(watcher, config.watch.metrics_port):
        # SIGTERM (systemd, docker stop, `chainpush dev down`) stops like Ctrl-C: cleanly. Not
        # that it matters for correctness: a SIGKILL anywhere is recovered from the checkpoint.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await watcher.run()
        except asyncio.CancelledError:
            logger.info("stopping at block %s", watcher.tip)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)


def resolve_config(path: Path | None, env: dict[str, str]) -> Config:
    """The config named by ``--config`` / ``CHAINPUSH_WATCH_CONFIG``, else the project's
    ``chainpush.toml`` (in the current directory or the nearest one above:
    ``chainpush.project.find_config``, as ``compile``/``deploy``/``call`` find it), else the
    built-in demo config. Relative paths in the file are relative to the file's directory."""
    if path is None and env.get("CHAINPUSH_WATCH_CONFIG"):
        path = Path(env["CHAINPUSH_WATCH_CONFIG"])
    path = project.find_config(path)
    if path is None:
        logger.info("no chainpush.toml here or above: watching the demo contracts (DemoToken, "
                    "CallDemo) from deployments/")
        return apply_env(demo_config(Path.cwd().resolve()), env)
    return apply_env(load_config(path), env)


def main(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args.config, dict(os.environ))
        if args.metrics_port is not None:
            config = dataclasses.replace(config, watch=dataclasses.replace(
                config.watch, metrics_port=args.metrics_port))
        if args.print_config:
            print(json.dumps(config.describe(), indent=2))
            return 0
        if args.claims or args.release_claim is not None:
            return asyncio.run(_claims(config, args.release_claim))
        if args.check_config:
            asyncio.run(_check(config, lambda line: print(line, flush=True)))
            print("config ok")
            return 0
        asyncio.run(_run(config, _sink_kind(args.sink)))
    except WatcherError as exc:
        print(f"chainpush watch: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0
