"""``chainpush push``, ``chainpush auth`` and ``chainpush run`` (the all-in-one demo).

Configuration comes from ``chainpush.toml`` (``[stores]``, ``[push]``, ``[auth]``,
``[publish]``), then the environment (``CHAINPUSH_MONGO_URI``, ``CHAINPUSH_REDIS_URL``,
``CHAINPUSH_AUTH_SECRET``, ``CHAINPUSH_PUBLISH_KEYS``, ``CHAINPUSH_DEV``), then flags. This module
is the only place that reads them.

``CHAINPUSH_DEV`` is parsed strictly (:mod:`chainpush.flags`: ``1/true/yes/on``,
``0/false/no/off``, unset or empty = not given); any other value stops the command with exit
code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from chainpush.constants import RedisNames
from chainpush.flags import InvalidBoolean, env_bool
from chainpush.logs import redact_credentials
from chainpush.project import find_config
from chainpush.push.config import AuthServiceConfig, PushConfig, Settings, StoresConfig, load
from chainpush.push.errors import ConfigError

logger = logging.getLogger(__name__)

#: the defaults shown in --help (a slots dataclass has no class-level default to read)
_PUSH, _AUTH, _STORES = PushConfig(), AuthServiceConfig(), StoresConfig()


def _first_config(args: argparse.Namespace) -> Path | None:
    """``--config`` (the first one, for ``run`` that takes several), else the project's."""
    given = args.config[0] if isinstance(args.config, list) else args.config
    return find_config(given)  # --config, else the project's (cwd or above)


def _settings(args: argparse.Namespace, push: dict[str, Any] | None = None,
              auth: dict[str, Any] | None = None) -> Settings:
    path = _first_config(args)
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
                secret_from_env=os.environ.get("CHAINPUSH_AUTH_SECRET"),
                publish_keys_from_env=os.environ.get("CHAINPUSH_PUBLISH_KEYS"))


def _describe(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {name: dataclasses.asdict(getattr(settings, name))
           for name in ("stores", "push", "tokens", "auth", "publish")}
    out["publish"]["keys"] = ["<redacted>" for _ in settings.publish.keys]
    for key in ("secret", "private_key"):
        if out["tokens"].get(key):
            out["tokens"][key] = "<redacted>"
    for key in ("mongo_uri", "redis_url"):  # user:password@ in a URI
        out["stores"][key] = redact_credentials(out["stores"][key])
    out["dev_mode"] = settings.dev_mode
    out["dev_login"] = settings.dev_login
    return out


_CONFIG_HELP = """\
configuration: chainpush.toml ([stores], [push], [auth], [publish]) < environment
(CHAINPUSH_MONGO_URI, CHAINPUSH_REDIS_URL, CHAINPUSH_AUTH_SECRET, CHAINPUSH_PUBLISH_KEYS,
CHAINPUSH_DEV) < flags; every key with its default: docs/configuration.md. Check what will be
used: add --print-config."""

PUSH_DESCRIPTION = """\
Run one push node: a websocket server that authenticates clients by their token (first frame),
serves topic history from MongoDB and live messages from Redis (docs/protocol.md). Run several
on different ports (--node-id, --port); any node serves any user."""

PUSH_EPILOG = f"""\
examples:
  chainpush push                                    # [push] of ./chainpush.toml, port 8701
  chainpush push --node-id push-2 --port 8702       # a second node beside the first
  CHAINPUSH_AUTH_SECRET=$(cat secret) chainpush push --public-url wss://push.example.com/ws
  chainpush push --print-config                     # the checked configuration, secrets redacted

{_CONFIG_HELP}"""

AUTH_DESCRIPTION = """\
Run the auth service (the demo page, GET /config.json, /healthz, /metrics; POST /auth/login in
dev mode only; POST /v1/publish for app messages when [publish] keys are set), or with --issue
print one token and exit: what an app backend does with push.tokens.mint(...) (docs/push.md,
Tokens)."""

AUTH_EPILOG = f"""\
examples:
  chainpush auth --dev                              # page + dev login on http://127.0.0.1:8700/
  chainpush auth --issue alice --wallet 0x5B38Da6a701c568545dCfcB03FcB875f56beddC4 \\
      --topic contract:DemoToken --topic 'state:*' --ttl-s 600
                                                    # the token alone on the last line
  chainpush auth --port 8800 --push-url ws://127.0.0.1:8701/ws

{_CONFIG_HELP}"""

RUN_DESCRIPTION = """\
The all-in-one demo in one process: the watcher (as `chainpush watch` resolves its
configuration), collect, dispatch, two push nodes on consecutive ports and the auth service with
the page. Defaults to dev mode."""

RUN_EPILOG = f"""\
examples:
  chainpush dev up && chainpush run                 # then open http://127.0.0.1:8700/
  chainpush run --auth-port 8800 --push-port 8811   # page on 8800, push nodes on 8811 and 8812
  chainpush run --no-watcher                        # feed collect some other way
  chainpush run --config mainnet.toml --config base.toml   # several chains: a watcher each

{_CONFIG_HELP}"""


def _common(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    if several:
        parser.add_argument("--config", type=Path, action="append", default=None,
                            help="TOML config; repeat it for several chains: one watcher per "
                                 "file, [stores]/[push]/[auth] from the first (default: the "
                                 "nearest chainpush.toml in the current directory or above)")
    else:
        parser.add_argument("--config", type=Path, default=None,
                            help="TOML config (default: the nearest chainpush.toml in the "
                                 "current directory or above, else built-in defaults)")
    parser.add_argument("--mongo-uri", default=os.environ.get("CHAINPUSH_MONGO_URI"),
                        help="overrides [stores] mongo_uri (env CHAINPUSH_MONGO_URI; default "
                             f"{_STORES.mongo_uri})")
    parser.add_argument("--redis-url", default=os.environ.get("CHAINPUSH_REDIS_URL"),
                        help="overrides [stores] redis_url (env CHAINPUSH_REDIS_URL; default "
                             f"{_STORES.redis_url})")
    parser.add_argument("--database", default=None,
                        help=f"overrides [stores] database (default {_STORES.database})")
    parser.add_argument("--dev", action=argparse.BooleanOptionalAction, default=None,
                        help="dev mode: dev login on, the well-known dev secret allowed "
                             "(env CHAINPUSH_DEV=1/true/yes/on or 0/false/no/off; "
                             "[auth] dev_mode = true; default off, on for `run`)")
    parser.set_defaults(dev_default=False)
    parser.add_argument("--print-config", action="store_true",
                        help="print the checked configuration as JSON and exit")


def _parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
            help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    push = _parser(subparsers, "push", "run one push node (websocket server)",
                   PUSH_DESCRIPTION, PUSH_EPILOG)
    _common(push)
    push.add_argument("--node-id", default=None,
                      help=f"overrides [push] node_id (default {_PUSH.node_id})")
    push.add_argument("--host", default=None,
                      help=f"overrides [push] host (default {_PUSH.host})")
    push.add_argument("--port", type=int, default=None,
                      help=f"overrides [push] port (default {_PUSH.port}; 0 = any free)")
    push.add_argument("--public-url", default=None,
                      help="overrides [push] public_url, the URL clients are given (default "
                           "ws://HOST:PORT/ws)")
    push.add_argument("--workers", type=int, default=None, metavar="N",
                      help="overrides [push] workers: N node processes sharing the port with "
                           "SO_REUSEPORT, one per core, registered as NODE_ID-0 … NODE_ID-N-1 "
                           f"(default {_PUSH.workers})")
    push.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    push.set_defaults(func=cmd_push)

    auth = _parser(subparsers, "auth", "run the auth service (dev login, page), or --issue a "
                   "token", AUTH_DESCRIPTION, AUTH_EPILOG)
    _common(auth)
    auth.add_argument("--host", default=None,
                      help=f"overrides [auth] host (default {_AUTH.host})")
    auth.add_argument("--port", type=int, default=None,
                      help=f"overrides [auth] port (default {_AUTH.port}; 0 = any "
                           "free)")
    auth.add_argument("--push-url", action="append", default=None,
                      help="a push node URL for the page (repeatable; [auth] push_urls; "
                           "default: [push]'s URL)")
    issue = auth.add_argument_group("issuing a token (prints it alone on the last line, exits)")
    issue.add_argument("--issue", metavar="USER", default=None,
                       help="mint a token for USER (the sub claim) with the configured key")
    issue.add_argument("--wallet", metavar="0xADDRESS", action="append", default=None,
                       help="a wallet of USER: grants user:<wallet> (repeatable; default none)")
    issue.add_argument("--topic", metavar="PATTERN", action="append", default=None,
                       help="a topic or pattern (contract:DemoToken, 'state:*', '*') the token "
                            "grants (repeatable; default: [auth] dev_topics, "
                            f"{' '.join(_AUTH.dev_topics)})")
    issue.add_argument("--ttl-s", metavar="N", type=float, default=None,
                       help="seconds until the token expires (default: [auth] token_ttl_s, "
                            f"{_AUTH.token_ttl_s})")
    auth.set_defaults(func=cmd_auth)

    run = _parser(subparsers, "run",
                  "all-in-one demo: watcher, collect, dispatch, two push nodes, auth, page",
                  RUN_DESCRIPTION, RUN_EPILOG)
    _common(run, several=True)
    run.add_argument("--auth-port", type=int, default=None,
                     help="the page / auth service port: overrides [auth] port (default "
                          f"{_AUTH.port})")
    run.add_argument("--push-port", type=int, default=None,
                     help="the first push node's port, the second gets the next one: overrides "
                          f"[push] port (default {_PUSH.port})")
    run.add_argument("--no-watcher", action="store_true",
                     help="run without the watcher (feed collect some other way)")
    # the demo defaults to dev mode; its dev login still stays off beside a real secret unless
    # dev mode is asked for explicitly (Settings.dev_login)
    run.set_defaults(func=cmd_run, dev_default=True)


class PortInUse(Exception):
    """A listening socket could not be opened; ``str()`` is the one-line message for the user."""


@contextlib.asynccontextmanager
async def _listening(what: str, host: str, port: int, fix: str) -> AsyncIterator[None]:
    """Turn a failed bind inside the block into :class:`PortInUse` naming ``port`` and ``fix``
    (the command or setting that changes it), instead of a traceback."""
    try:
        yield
    except OSError as exc:
        reasons = {errno.EADDRINUSE: "is already in use", errno.EACCES: "is not allowed",
                   errno.EADDRNOTAVAIL: "is not an address of this machine"}
        if exc.errno not in reasons:
            raise
        where = (f"host {host}" if exc.errno == errno.EADDRNOTAVAIL
                 else f"port {port} on {host}")
        raise PortInUse(f"{what}: {where} {reasons[exc.errno]}; pick another: {fix}") from None


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


_SECRET_FIX = ("export CHAINPUSH_AUTH_SECRET=$(python3 -c 'import secrets; "
               "print(secrets.token_urlsafe(32))')   # or --dev to try it locally")


def _config_fix(command: str, message: str) -> str:
    """The command that fixes a configuration error (the CLI's errors end with one)."""
    if "auth.secret" in message:
        return _SECRET_FIX
    if "[publish] keys" in message:
        return _SECRET_FIX.replace("CHAINPUSH_AUTH_SECRET", "CHAINPUSH_PUBLISH_KEYS")
    if "CHAINPUSH_DEV" in message:
        return "export CHAINPUSH_DEV=1   # or 0, or unset CHAINPUSH_DEV"
    return f"edit chainpush.toml (keys: docs/configuration.md), then: chainpush {command} " \
           "--print-config"


def _checked(args: argparse.Namespace, **kw: Any) -> Settings | None:
    try:
        settings = _settings(args, **kw)
    except ConfigError as exc:
        print(f"chainpush {args.command}: {exc}; fix: {_config_fix(args.command, str(exc))}",
              file=sys.stderr)
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


def _free_near(host: str, port: int, count: int = 1) -> int:
    """A port above ``port`` where ``count`` consecutive ports are free now (0 if none near):
    only a suggestion printed with a bind error, so that the fix can be copied."""
    for start in range(port + 1, min(port + 200, 65536 - count)):
        socks: list[socket.socket] = []
        try:
            for p in range(start, start + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((host, p))
            return start
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    return 0


def _run_reporting(command: str, coro_factory: Callable[[], Awaitable[None]]) -> int:
    """:func:`_main`, with a bind failure reported as one line and exit code 2."""
    try:
        return _main(coro_factory)
    except PortInUse as exc:
        print(f"chainpush {command}: {exc}", file=sys.stderr)
        return 2


def cmd_push(args: argparse.Namespace) -> int:
    from chainpush.push.node import PushNode

    settings = _checked(args, push={"node_id": args.node_id, "host": args.host,
                                    "port": args.port, "public_url": args.public_url,
                                    "workers": args.workers})
    if settings is None:
        return 0 if args.print_config else 2
    cfg = settings.push
    if cfg.workers > 1 and args.worker is None:
        return _supervise(cfg.workers)
    metrics_port = cfg.metrics_port
    if args.worker is not None:
        # one of the workers: its own node id (registry entry, inbox), the host's public URL,
        # its own scrape port
        cfg = dataclasses.replace(cfg, node_id=f"{cfg.node_id}-{args.worker}",
                                  public_url=cfg.public_url or cfg.url)
        if metrics_port is not None:
            metrics_port += args.worker

    async def serve() -> None:
        from chainpush.scrape import serve_scrape

        async with contextlib.AsyncExitStack() as stack:
            suggestion = _free_near(cfg.host, cfg.port)
            async with _listening(f"push node {cfg.node_id}", cfg.host, cfg.port,
                                  f"chainpush push --port {suggestion}   # or [push] port"):
                node = await stack.enter_async_context(
                    PushNode(cfg, tokens=settings.tokens, stores=settings.stores))
            # the suggested fix is looked up only when there is a port to fail on
            fix = "" if metrics_port is None else (
                f"[push] metrics_port = {_free_near('127.0.0.1', metrics_port, cfg.workers)}")
            async with _listening(f"push node {cfg.node_id} metrics", "127.0.0.1",
                                  metrics_port or 0, fix):
                await stack.enter_async_context(serve_scrape(
                    node.metrics.render, lambda: _node_health(node), metrics_port,
                    setting="[push] metrics_port"))
            await node.run()

    return _run_reporting("push", serve)


def _node_health(node: Any) -> tuple[int, Any]:
    health = node.health()
    return (200 if health["redis"] else 503), health


def _supervise(workers: int) -> int:
    """Run ``workers`` copies of this very command, each with ``--worker I``."""
    from chainpush.push.workers import Supervisor

    argv = [sys.executable, "-m", "chainpush.cli", *sys.argv[1:]]

    def worker(i: int) -> list[str]:
        return [*argv, "--worker", str(i)]

    logger.info("starting %d push workers", workers)
    return asyncio.run(Supervisor(worker, workers).run())


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


_ISSUE_EXAMPLE = ("chainpush auth --issue alice --wallet "
                  "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4 --topic contract:DemoToken "
                  "--ttl-s 600")


def _issue(args: argparse.Namespace, settings: Settings) -> int:
    """``--issue USER``: the token alone on the last line of stdout."""
    from chainpush.push.errors import MintError
    from chainpush.push.tokens import mint

    ttl_s = args.ttl_s if args.ttl_s is not None else settings.auth.token_ttl_s
    topics = args.topic if args.topic is not None else settings.auth.dev_topics
    try:
        token = mint(args.issue, wallets=args.wallet or (), topics=topics, ttl_s=ttl_s,
                     config=settings.tokens)
    except MintError as exc:
        print(f"chainpush auth: cannot issue a token: {exc}; e.g.: {_ISSUE_EXAMPLE}",
              file=sys.stderr)
        return 2
    except ConfigError as exc:  # RS256/ES256 with only the public key configured
        print(f"chainpush auth: cannot issue a token: {exc}; fix: add private_key to [auth] "
              "in chainpush.toml, then: " + _ISSUE_EXAMPLE, file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_auth(args: argparse.Namespace) -> int:
    from chainpush.push.web import AuthService

    settings = _checked(args, auth={"host": args.host, "port": args.port,
                                    "push_urls": args.push_url})
    if settings is None:
        return 0 if args.print_config else 2
    if args.issue is not None:
        return _issue(args, settings)
    for name in ("wallet", "topic", "ttl_s"):
        if getattr(args, name) is not None:
            print(f"chainpush auth: --{name.replace('_', '-')} only applies with --issue USER; "
                  f"e.g.: {_ISSUE_EXAMPLE}", file=sys.stderr)
            return 2
    push_urls = list(settings.auth.push_urls) or [settings.push.url]
    topics = _demo_topics(find_config(args.config))
    cfg = settings.auth

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            suggestion = _free_near(cfg.host, cfg.port)
            async with _listening("auth service", cfg.host, cfg.port,
                                  f"chainpush auth --port {suggestion}   # or [auth] port"):
                svc = await stack.enter_async_context(AuthService(
                    cfg, tokens=settings.tokens, dev_mode=settings.dev_login,
                    push_urls=push_urls, topics=topics, publish=settings.publish,
                    directory=await stack.enter_async_context(_directory(settings))))
            if settings.publish.keys:
                from chainpush.push.collect import Collector

                # POST /v1/publish stores through collect (MongoDB) and dispatches (Redis)
                stores = settings.stores
                svc.collector = await stack.enter_async_context(Collector(
                    mongo_uri=stores.mongo_uri, database=stores.database,
                    redis_url=stores.redis_url, namespace=stores.namespace,
                    metrics=svc.metrics))
                logger.info("POST /v1/publish on (%d server key(s))", len(settings.publish.keys))
            await svc.run()

    return _run_reporting("auth", serve)


def _directory(settings: Settings) -> Any:
    """The live push nodes of the registry, for the auth service's placement of users."""
    from chainpush.push.directory import NodeDirectory

    return NodeDirectory(settings.stores.redis_url,
                         names=RedisNames(settings.stores.namespace))


def cmd_run(args: argparse.Namespace) -> int:
    settings = _checked(args, push={"port": args.push_port}, auth={"port": args.auth_port})
    if settings is None:
        return 0 if args.print_config else 2
    from chainpush.push.webhook_cli import load_webhooks
    from chainpush.watcher.errors import WatcherError

    try:
        webhooks = load_webhooks(_first_config(args))
    except ConfigError as exc:
        print(f"chainpush run: {exc}; fix: {_config_fix('run', str(exc))}", file=sys.stderr)
        return 2
    watch_configs: list[Any] = []
    topics = _demo_topics(_first_config(args))
    if not args.no_watcher:
        from chainpush.watcher.cli import resolve_config
        from chainpush.watcher.config import check_several

        try:
            # the watcher's own resolution of each --config (none: ./chainpush.toml, else its
            # demo config), with its CHAINPUSH_* endpoint overrides; one watcher per file
            watch_configs = [resolve_config(path, dict(os.environ))
                             for path in (args.config or [None])]
            check_several(watch_configs)
        except WatcherError as exc:
            print(f"chainpush run: {exc}; check the fix with: chainpush watch --check-config",
                  file=sys.stderr)
            return 2
        # the push side's stores (file, environment, flags) apply to every watcher too
        watch_configs = [dataclasses.replace(c, stores=dataclasses.replace(
            c.stores, mongo_uri=settings.stores.mongo_uri, database=settings.stores.database))
            for c in watch_configs]
        contracts = [c for config in watch_configs for c in config.contracts]
        topics = [f"contract:{c.name}" for c in contracts] + [
            f"state:{c.name}" for c in contracts if c.state]
        if settings.push.contracts is not None:
            # the push nodes serve every file's names (each file's own [[contracts]] are only
            # the first file's; watchers elsewhere are learnt from their claims)
            names = list(dict.fromkeys([*settings.push.contracts, *(c.name for c in contracts)]))
            settings = dataclasses.replace(settings, push=dataclasses.replace(
                settings.push, contracts=tuple(names)))
    fatal: list[str] = []
    code = 0
    try:
        code = _run_reporting("run", lambda: run_all(settings, topics, watch_configs, webhooks))
    except* WatcherError as group:
        # a fatal watcher error (a chain that no longer links to the checkpoint, ...) stops
        # the demo with its message, not a traceback
        fatal.extend(str(e) for e in group.exceptions)
    for message in fatal:
        print(f"chainpush run: watcher stopped: {message}", file=sys.stderr)
    return 1 if fatal else code


async def run_all(settings: Settings, topics: list[str], watch_configs: Any,
                  webhooks: Any = None) -> None:
    """Collect + dispatch + two push nodes + auth/page (+ one watcher feeding collect per
    config in ``watch_configs``, a list, or one config, or None; + the webhook deliverer when
    ``webhooks`` has any)."""
    if watch_configs is None:
        watch_configs = []
    elif not isinstance(watch_configs, list):
        watch_configs = [watch_configs]
    from chainpush.push.collect import Collector
    from chainpush.push.dispatch import Dispatcher
    from chainpush.push.metrics import Metrics
    from chainpush.push.node import PushNode
    from chainpush.push.web import AuthService

    base = settings.push
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        # the page first: its origin (its port may be 0, i.e. chosen now) is what nodes allow
        auth = settings.auth
        async with _listening("auth service (the page)", auth.host, auth.port,
                              f"chainpush run --auth-port {_free_near(auth.host, auth.port)}"
                              "   # or [auth] port"):
            svc = await stack.enter_async_context(AuthService(
                auth, tokens=settings.tokens, dev_mode=settings.dev_login,
                push_urls=[], topics=topics, metrics=metrics, publish=settings.publish,
                directory=await stack.enter_async_context(_directory(settings))))
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
        push_nodes = []
        for cfg in nodes:
            async with _listening(
                    f"push node {cfg.node_id}", cfg.host, cfg.port,
                    f"chainpush run --push-port {_free_near(base.host, base.port, 2)}"
                    "   # or [push] port; the second node takes the next port"):
                push_nodes.append(await stack.enter_async_context(
                    PushNode(cfg, tokens=settings.tokens, stores=settings.stores)))
        svc.push_urls = [n.url for n in push_nodes]
        svc.collector = collector  # POST /v1/publish, when [publish] keys are set
        print(f"chainpush demo page: {svc.url}/  (push nodes: "
              f"{', '.join(n.url for n in push_nodes)})", file=sys.stderr, flush=True)
        async with asyncio.TaskGroup() as group:
            for node in push_nodes:
                group.create_task(node.run())
            for watch_config in watch_configs:
                group.create_task(_run_watcher(watch_config, collector))
            if webhooks is not None and webhooks.webhooks:
                from chainpush.push.webhook_delivery import run_webhooks

                group.create_task(run_webhooks(webhooks, settings.stores, metrics))


async def _run_watcher(config: Any, collector: Any) -> None:
    from chainpush.watcher.service import Watcher

    async with Watcher(config, collector) as watch:
        await watch.run()
