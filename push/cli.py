"""``chainpush push``, ``chainpush auth`` and ``chainpush run`` (the all-in-one demo).

Configuration comes from ``chainpush.toml`` (``[stores]``, ``[push]``, ``[auth]``), then the
environment (``CHAINPUSH_MONGO_URI``, ``CHAINPUSH_REDIS_URL``, ``CHAINPUSH_AUTH_SECRET``,
``CHAINPUSH_DEV``), then flags. This module is the only place that reads them.

``CHAINPUSH_DEV`` is parsed strictly (:mod:`chainpush.flags`: ``1/true/yes/on``,
``0/false/no/off``, unset or empty = not given); any other value stops the command with exit
code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chainpush.constants import RedisNames
from chainpush.flags import InvalidBoolean, env_bool
from chainpush.logs import redact_credentials
from push.config import Settings, load
from push.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("chainpush.toml")


def _settings(args: argparse.Namespace, push: dict[str, Any] | None = None,
              auth: dict[str, Any] | None = None) -> Settings:
    path: Path | None = args.config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    stores = {"mongo_uri": args.mongo_uri, "redis_url": args.redis_url,
              "database": args.database}
    dev: bool | None = args.dev  # --dev / --no-dev win over the environment
    if dev is None:
        try:
            dev = env_bool(os.environ, "CHAINPUSH_DEV")
        except InvalidBoolean as exc:
            raise ConfigError(str(exc)) from exc
    return load(path, dev_mode=dev, dev_default=args.dev_default,
                overrides={"stores": stores, "push": push or {}, "auth": auth or {}},
                secret_from_env=os.environ.get("CHAINPUSH_AUTH_SECRET"))


def _describe(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {name: dataclasses.asdict(getattr(settings, name))
           for name in ("stores", "push", "tokens", "auth")}
    for key in ("secret", "private_key"):
        if out["tokens"].get(key):
            out["tokens"][key] = "<redacted>"
    for key in ("mongo_uri", "redis_url"):  # user:password@ in a URI
        out["stores"][key] = redact_credentials(out["stores"][key])
    out["dev_mode"] = settings.dev_mode
    out["dev_login"] = settings.dev_login
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config (default ./chainpush.toml if present)")
    parser.add_argument("--mongo-uri", default=os.environ.get("CHAINPUSH_MONGO_URI"),
                        help="overrides [stores] mongo_uri (env CHAINPUSH_MONGO_URI)")
    parser.add_argument("--redis-url", default=os.environ.get("CHAINPUSH_REDIS_URL"),
                        help="overrides [stores] redis_url (env CHAINPUSH_REDIS_URL)")
    parser.add_argument("--database", default=None, help="overrides [stores] database")
    parser.add_argument("--dev", action=argparse.BooleanOptionalAction, default=None,
                        help="dev mode: dev login on, the well-known dev secret allowed "
                             "(env CHAINPUSH_DEV=1/true/yes/on or 0/false/no/off; "
                             "[auth] dev_mode = true)")
    parser.set_defaults(dev_default=False)
    parser.add_argument("--print-config", action="store_true",
                        help="print the checked configuration as JSON and exit")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    push = subparsers.add_parser("push", help="run one push node (websocket server)")
    _common(push)
    push.add_argument("--node-id", default=None, help="overrides [push] node_id")
    push.add_argument("--host", default=None, help="overrides [push] host")
    push.add_argument("--port", type=int, default=None, help="overrides [push] port")
    push.add_argument("--public-url", default=None, help="overrides [push] public_url")
    push.set_defaults(func=cmd_push)

    auth = subparsers.add_parser("auth", help="run the auth service (dev login, page, tokens)")
    _common(auth)
    auth.add_argument("--host", default=None, help="overrides [auth] host")
    auth.add_argument("--port", type=int, default=None, help="overrides [auth] port")
    auth.add_argument("--push-url", action="append", default=None,
                      help="a push node URL for the page (repeatable; [auth] push_urls)")
    auth.add_argument("--issue", metavar="USER", default=None,
                      help="print a token for USER (topics from [auth] dev_topics) and exit")
    auth.set_defaults(func=cmd_auth)

    run = subparsers.add_parser(
        "run", help="all-in-one demo: watcher, collect, dispatch, two push nodes, auth, page")
    _common(run)
    run.add_argument("--no-watcher", action="store_true",
                     help="run without the watcher (feed collect some other way)")
    # the demo defaults to dev mode; its dev login still stays off beside a real secret unless
    # dev mode is asked for explicitly (Settings.dev_login)
    run.set_defaults(func=cmd_run, dev_default=True)


def _main(coro_factory: Callable[[], Awaitable[None]]) -> int:
    async def guarded() -> None:
        task = asyncio.ensure_future(coro_factory())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(guarded())
    return 0


def _checked(args: argparse.Namespace, **kw: Any) -> Settings | None:
    try:
        settings = _settings(args, **kw)
    except ConfigError as exc:
        print(f"chainpush {args.command}: {exc}", file=sys.stderr)
        return None
    if args.print_config:
        print(json.dumps(_describe(settings), indent=2))
        return None
    if settings.dev_mode and not settings.dev_login:
        logger.warning("dev mode without the dev login: a real signing key is configured; "
                       "pass --dev or CHAINPUSH_DEV=1 to let the dev login mint tokens with it")
    elif settings.dev_login and settings.real_key:
        logger.warning("the dev login mints tokens signed with the configured (real) key for "
                       "any user and any wallet: never expose this auth service")
    return settings


def cmd_push(args: argparse.Namespace) -> int:
    from push.node import PushNode

    settings = _checked(args, push={"node_id": args.node_id, "host": args.host,
                                    "port": args.port, "public_url": args.public_url})
    if settings is None:
        return 0 if args.print_config else 2

    async def serve() -> None:
        async with PushNode(settings.push, tokens=settings.tokens, stores=settings.stores) as node:
            await node.run()

    return _main(serve)


def _demo_topics(path: Path | None) -> list[str]:
    """Suggested topics for the page: every ``[[contracts]]`` name (and state reads)."""
    if path is None or not path.exists():
        return []
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        raw = tomllib.loads(path.read_text())
        topics: list[str] = []
        for contract in raw.get("contracts", []):
            name = contract.get("name")
            if isinstance(name, str):
                topics.append(f"contract:{name}")
                if contract.get("state"):
                    topics.append(f"state:{name}")
        return topics
    return []


def cmd_auth(args: argparse.Namespace) -> int:
    import time

    from push.tokens import Claims, issue
    from push.web import AuthService

    settings = _checked(args, auth={"host": args.host, "port": args.port,
                                    "push_urls": args.push_url})
    if settings is None:
        return 0 if args.print_config else 2
    if args.issue is not None:
        now = time.time()
        claims = Claims(user=args.issue, wallets=(), topics=settings.auth.dev_topics,
                        expires_at=int(now + settings.auth.token_ttl_s))
        print(issue(claims, settings.tokens, now=now))
        return 0
    push_urls = list(settings.auth.push_urls) or [settings.push.url]
    topics = _demo_topics(args.config or DEFAULT_CONFIG)

    async def serve() -> None:
        async with AuthService(settings.auth, tokens=settings.tokens, dev_mode=settings.dev_login,
                               push_urls=push_urls, topics=topics) as svc:
            await svc.run()

    return _main(serve)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _checked(args)
    if settings is None:
        return 0 if args.print_config else 2
    from push.webhook_cli import load_webhooks
    from watcher.errors import WatcherError

    try:
        webhooks = load_webhooks(args.config or DEFAULT_CONFIG)
    except ConfigError as exc:
        print(f"chainpush run: {exc}", file=sys.stderr)
        return 2
    watch_config: Any = None
    topics = _demo_topics(args.config or DEFAULT_CONFIG)
    if not args.no_watcher:
        from watcher.cli import resolve_config

        try:
            # the watcher's own resolution: --config, ./chainpush.toml, else its demo config,
            # with its CHAINPUSH_* endpoint overrides
            watch_config = resolve_config(args.config, dict(os.environ))
        except WatcherError as exc:
            print(f"chainpush run: {exc}", file=sys.stderr)
            return 2
        # the push side's stores (file, environment, flags) apply to the watcher too
        watch_config = dataclasses.replace(watch_config, stores=dataclasses.replace(
            watch_config.stores, mongo_uri=settings.stores.mongo_uri,
            database=settings.stores.database))
        topics = [f"contract:{c.name}" for c in watch_config.contracts] + [
            f"state:{c.name}" for c in watch_config.contracts if c.state]
    fatal: list[str] = []
    code = 0
    try:
        code = _main(lambda: run_all(settings, topics, watch_config, webhooks))
    except* WatcherError as group:
        # a fatal watcher error (a chain that no longer links to the checkpoint, ...) stops
        # the demo with its message, not a traceback
        fatal.extend(str(e) for e in group.exceptions)
    for message in fatal:
        print(f"chainpush run: watcher stopped: {message}", file=sys.stderr)
    return 1 if fatal else code


async def run_all(settings: Settings, topics: list[str], watch_config: Any,
                  webhooks: Any = None) -> None:
    """Collect + dispatch + two push nodes + auth/page (+ the watcher feeding collect when
    ``watch_config`` is given, + the webhook deliverer when ``webhooks`` has any)."""
    from push.collect import Collector
    from push.dispatch import Dispatcher
    from push.metrics import Metrics
    from push.node import PushNode
    from push.web import AuthService

    base = settings.push
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        # the page first: its origin (its port may be 0, i.e. chosen now) is what nodes allow
        svc = await stack.enter_async_context(AuthService(
            settings.auth, tokens=settings.tokens, dev_mode=settings.dev_login,
            push_urls=[], topics=topics, metrics=metrics))
        page_origins = (f"http://{settings.auth.host}:{svc.port}",
                        f"http://localhost:{svc.port}", f"http://127.0.0.1:{svc.port}")
        origins = base.allowed_origins if base.allowed_origins is not None else page_origins
        # two nodes on consecutive ports (or both on free ports when [push] port = 0)
        nodes = [dataclasses.replace(base, node_id=f"{base.node_id}-{i}",
                                     port=base.port + i - 1 if base.port else 0,
                                     public_url=None, allowed_origins=origins) for i in (1, 2)]
        dispatch = await stack.enter_async_context(
            Dispatcher(settings.stores.redis_url, names=RedisNames(settings.stores.namespace),
                       metrics=metrics))
        collector = await stack.enter_async_context(
            Collector(mongo_uri=settings.stores.mongo_uri, database=settings.stores.database,
                      dispatch=dispatch, metrics=metrics))
        push_nodes = [await stack.enter_async_context(
            PushNode(cfg, tokens=settings.tokens, stores=settings.stores)) for cfg in nodes]
        svc.push_urls = [n.url for n in push_nodes]
        print(f"chainpush demo page: {svc.url}/  (push nodes: "
              f"{', '.join(n.url for n in push_nodes)})", file=sys.stderr, flush=True)
        async with asyncio.TaskGroup() as group:
            for node in push_nodes:
                group.create_task(node.run())
            if watch_config is not None:
                group.create_task(_run_watcher(watch_config, collector))
            if webhooks is not None and webhooks.webhooks:
                from push.webhook_delivery import run_webhooks

                group.create_task(run_webhooks(webhooks, settings.stores, metrics))


async def _run_watcher(config: Any, collector: Any) -> None:
    from watcher.service import Watcher

    async with Watcher(config, collector) as watch:
        await watch.run()
