"""``chainpush webhooks`` (the deliverer) and ``webhooks status | replay | resume``.

Configuration: ``[[webhooks]]`` and ``[webhooks_server]`` (:mod:`push.webhook_config`) and
``[stores]`` from ``chainpush.toml`` (or ``--config``), then ``CHAINPUSH_MONGO_URI``, then flags.
This module and :mod:`push.cli` are the only places that read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chainpush.project import find_config
from chainpush.push.config import StoresConfig, load
from chainpush.push.errors import ConfigError
from chainpush.push.webhook_config import WebhookConfig, WebhooksSettings, parse


def load_webhooks(path: Path | None) -> WebhooksSettings:
    """``[[webhooks]]`` and ``[webhooks_server]`` of ``path`` (none when ``path`` is None or
    absent); ``secret_env`` is read from the environment here. :class:`ConfigError` if invalid.

    ``chainpush run`` calls this, then runs :func:`push.webhook_delivery.run_webhooks` when
    the result has webhooks."""
    if path is None or not path.exists():
        return WebhooksSettings()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return parse(raw, os.environ)


def read_settings(path: Path | None, *, mongo_uri: str | None = None,
                  database: str | None = None) -> tuple[WebhooksSettings, StoresConfig]:
    """The webhooks and the stores of ``path`` (default: the project's chainpush.toml, in the
    current directory or above, as every command finds it)."""
    path = find_config(path)
    if path is not None and not path.exists():
        raise ConfigError(f"cannot read config {path}: no such file")
    stores = load(path, dev_mode=True, overrides={"stores": {
        "mongo_uri": mongo_uri, "database": database}}).stores
    return load_webhooks(path), stores


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # on the sub-subcommands the defaults are SUPPRESS, so that an option given before the
    # action (`webhooks --config x status`) is not reset by the action's own default
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--config", type=Path, default=default(None),
                        help="TOML config (default: the nearest chainpush.toml in the current "
                             "directory or above)")
    parser.add_argument("--mongo-uri", default=default(os.environ.get("CHAINPUSH_MONGO_URI")),
                        help="overrides [stores] mongo_uri (env CHAINPUSH_MONGO_URI)")
    parser.add_argument("--database", default=default(None), help="overrides [stores] database")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hooks = subparsers.add_parser(
        "webhooks", help="deliver stored messages to [[webhooks]] (signed, in order)",
        description="Deliver every stored message of the matching topics to each [[webhooks]] "
                    "entry of chainpush.toml: signed per Standard Webhooks, in offset order per "
                    "topic, at least once, cursors in MongoDB (docs/webhooks.md). Without an "
                    "action: run the deliverer.",
        epilog="examples:\n"
               "  chainpush webhooks                          # run the deliverer\n"
               "  chainpush webhooks status                   # active/paused, cursor vs head\n"
               "  chainpush webhooks replay backend --since 40   # send again after offset 40\n"
               "  chainpush webhooks resume backend           # after fixing the endpoint\n"
               "  chainpush webhooks receive --secret whsec_… --port 8790   # a dev receiver",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(hooks, top=True)
    hooks.add_argument("--print-config", action="store_true",
                       help="print the checked configuration as JSON and exit")
    hooks.set_defaults(func=cmd_run)
    actions = hooks.add_subparsers(dest="webhooks_action", metavar="ACTION")

    status = actions.add_parser("status", help="per webhook: active/paused, cursor vs head")
    _common(status, top=False)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    replay = actions.add_parser("replay", help="deliver again every message after OFFSET")
    _common(replay, top=False)
    replay.add_argument("name", help="the webhook's name")
    replay.add_argument("--since", type=int, required=True, metavar="OFFSET",
                        help="the last offset the endpoint keeps (0 = from the first message)")
    replay.add_argument("--topic", default=None,
                        help="only this topic (default: every topic of the webhook)")
    replay.set_defaults(func=cmd_replay)

    receive = actions.add_parser(
        "receive", help="a development receiver: verify and print what a webhook sends")
    _common(receive, top=False)
    receive.add_argument("name", nargs="?", default=None,
                         help="take the secret of this [[webhooks]] entry")
    receive.add_argument("--secret", default=os.environ.get("CHAINPUSH_WEBHOOK_SECRET"),
                         help="whsec_… secret instead of NAME (env CHAINPUSH_WEBHOOK_SECRET)")
    receive.add_argument("--host", default="127.0.0.1")
    receive.add_argument("--port", type=int, default=8790)
    receive.set_defaults(func=cmd_receive)

    resume = actions.add_parser("resume", help="resume a paused webhook where it stopped")
    _common(resume, top=False)
    resume.add_argument("name", help="the webhook's name")
    resume.set_defaults(func=cmd_resume)


def _checked(args: argparse.Namespace) -> tuple[WebhooksSettings, StoresConfig] | None:
    try:
        return read_settings(args.config, mongo_uri=args.mongo_uri, database=args.database)
    except ConfigError as exc:
        print(f"chainpush webhooks: {exc}", file=sys.stderr)
        return None


def _named(args: argparse.Namespace, action: str
           ) -> tuple[WebhookConfig, StoresConfig] | None:
    """The configuration, then the webhook named ``args.name``; errors printed, None then."""
    checked = _checked(args)
    if checked is None:
        return None
    settings, stores = checked
    try:
        return settings.get(args.name), stores
    except ConfigError as exc:
        print(f"chainpush webhooks {action}: {exc}", file=sys.stderr)
        return None


def _describe(settings: WebhooksSettings, stores: StoresConfig) -> dict[str, Any]:
    hooks = []
    for hook in settings.webhooks:
        out = dataclasses.asdict(hook)
        out["secret"] = "<redacted>"
        hooks.append(out)
    return {"stores": dataclasses.asdict(stores), "webhooks": hooks,
            "webhooks_server": dataclasses.asdict(settings.server)}


def _serve(factory: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        task = asyncio.ensure_future(factory())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(guarded())


def cmd_receive(args: argparse.Namespace) -> int:
    from chainpush.push.webhook_config import secret_bytes
    from chainpush.push.webhook_receiver import Receiver

    secret: str | None = args.secret
    try:
        if args.name is not None:
            checked = read_settings(args.config)
            secret = checked[0].get(args.name).secret
        if secret is None:
            raise ConfigError("give a webhook NAME from the config, or --secret whsec_…")
        secret_bytes(secret)
    except ConfigError as exc:
        print(f"chainpush webhooks receive: {exc}", file=sys.stderr)
        return 2
    key = secret

    async def serve() -> None:
        async with Receiver(key, host=args.host, port=args.port) as receiver:
            await receiver.run()

    _serve(serve)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from chainpush.push.webhook_delivery import run_webhooks

    checked = _checked(args)
    if checked is None:
        return 2
    settings, stores = checked
    if args.print_config:
        print(json.dumps(_describe(settings, stores), indent=2))
        return 0
    if not settings.webhooks:
        print("chainpush webhooks: no [[webhooks]] in the configuration", file=sys.stderr)
        return 2

    try:
        _serve(lambda: run_webhooks(settings, stores))
    except ConfigError as exc:
        print(f"chainpush webhooks: {exc}", file=sys.stderr)
        return 2
    return 0


async def _status(settings: WebhooksSettings, stores: StoresConfig) -> list[dict[str, Any]]:
    from chainpush.push.store import MessageStore
    from chainpush.push.webhook_store import WebhookStore

    out: list[dict[str, Any]] = []
    async with (MessageStore(stores.mongo_uri, stores.database) as store,
                WebhookStore(stores.mongo_uri, stores.database) as state):
        hooks = await state.hooks([h.name for h in settings.webhooks])
        for cfg in settings.webhooks:
            lanes = await state.lanes(cfg.name)
            topics = sorted(set(lanes) | set(cfg.exact_topics))
            heads = await store.max_offsets(topics)
            doc = hooks.get(cfg.name)
            entry: dict[str, Any] = {
                "name": cfg.name, "url": cfg.url,
                "state": ("not started" if doc is None else
                          "paused" if doc.paused else "active"),
                "paused": None if doc is None else doc.paused,
                "paused_at": None if doc is None else doc.paused_at,
                "topics": [],
            }
            for topic in topics:
                lane = lanes.get(topic)
                cursor = 0 if lane is None else lane.cursor
                entry["topics"].append({
                    "topic": topic, "cursor": cursor, "head": heads.get(topic, 0),
                    "behind": max(0, heads.get(topic, 0) - cursor),
                    "failures": 0 if lane is None else lane.failures,
                    "last_error": None if lane is None else lane.last_error,
                    "last_error_at": None if lane is None else lane.last_error_at,
                })
            out.append(entry)
    return out


def _ago(at: float | None) -> str:
    return "" if at is None else f" ({max(0, int(time.time() - at))} s ago)"


def cmd_status(args: argparse.Namespace) -> int:
    checked = _checked(args)
    if checked is None:
        return 2
    report = asyncio.run(_status(*checked))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report:
        print("no [[webhooks]] configured")
    for hook in report:
        print(f"{hook['name']}  {hook['state']}  {hook['url']}")
        if hook["paused"]:
            print(f"  paused{_ago(hook['paused_at'])}: {hook['paused']}")
        for lane in hook["topics"]:
            line = (f"  {lane['topic']}  cursor {lane['cursor']} / head {lane['head']}"
                    f"  ({lane['behind']} behind)")
            if lane["last_error"]:
                line += f"  last error{_ago(lane['last_error_at'])}: {lane['last_error']}"
                if lane["failures"]:
                    line += f" ({lane['failures']} in a row)"
            print(line)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from chainpush.push.webhook_store import WebhookStore

    named = _named(args, "replay")
    if named is None:
        return 2
    cfg, stores = named
    try:
        if args.since < 0:
            raise ConfigError(f"--since must be >= 0, got {args.since}")
        if args.topic is not None and not cfg.wants(args.topic):
            raise ConfigError(f"webhook {cfg.name} does not deliver topic {args.topic!r} "
                              f"(its topics: {', '.join(cfg.topics)})")
    except ConfigError as exc:
        print(f"chainpush webhooks replay: {exc}", file=sys.stderr)
        return 2

    async def replay() -> list[str]:
        async with WebhookStore(stores.mongo_uri, stores.database) as state:
            topics = ([args.topic] if args.topic is not None else
                      sorted(set(await state.lanes(cfg.name)) | set(cfg.exact_topics)))
            return await state.replay(cfg.name, args.since, topics)

    changed = asyncio.run(replay())
    for topic in changed:
        print(f"{cfg.name} {topic}: delivering again from offset {args.since + 1}")
    if not changed:
        print(f"{cfg.name}: no topic to replay yet", file=sys.stderr)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from chainpush.push.webhook_store import WebhookStore

    named = _named(args, "resume")
    if named is None:
        return 2
    cfg, stores = named

    async def resume() -> bool:
        async with WebhookStore(stores.mongo_uri, stores.database) as state:
            return await state.resume(cfg.name)

    if not asyncio.run(resume()):
        print(f"chainpush webhooks resume: webhook {cfg.name} has not run yet", file=sys.stderr)
        return 1
    print(f"{cfg.name}: resumed (the deliverer picks it up within its poll interval)")
    return 0
