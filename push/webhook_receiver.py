"""A development webhook receiver: ``chainpush webhooks receive``.

Listens on one port, verifies every request with ``standardwebhooks`` (as an app backend
should), answers 204, and prints one line per message — for the demo, and to try a
``[[webhooks]]`` entry by hand. Not a production endpoint: it keeps the ids it has seen in
memory to flag duplicates, and nothing else.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from typing import Any, TextIO

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from chainpush.resource import AsyncResource

logger = logging.getLogger(__name__)


def describe(msg: dict[str, Any]) -> str:
    """One line for one message frame."""
    record = msg.get("record") or {}
    what = record.get("event", "?")
    head = f"{msg.get('topic')} #{msg.get('offset')} {what}"
    if record.get("kind") == "app":
        data = json.dumps(record.get("data"), separators=(",", ":"), ensure_ascii=False)
        return f"{head} {data[:120]}"
    args = record.get("args") or {}
    shown = ", ".join(f"{k}={v}" for k, v in list(args.items())[:3]) if isinstance(
        args, dict) else ""
    return (f"{head}({shown}) {record.get('status', '?')} "
            f"block {record.get('block_number', '?')}")


class Receiver(AsyncResource):
    """``async with Receiver(secret, port=...)`` then ``run()``; ``port`` 0 picks a free one."""

    def __init__(self, secret: str, *, host: str = "127.0.0.1", port: int = 8790,
                 out: TextIO | None = None) -> None:
        self.webhook = Webhook(secret)
        self.host = host
        self.port = port
        self.out = out or sys.stdout
        self.seen: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        print(f"webhook receiver at http://{self.host}:{self.port}/ (verifying signatures)",
              file=self.out, flush=True)
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self) -> None:
        import asyncio

        await asyncio.Event().wait()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = self.webhook.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            print(f"REFUSED {request.headers.get('webhook-id')}: {exc}", file=self.out,
                  flush=True)
            return web.Response(status=400, text=str(exc))
        msg_id = request.headers["webhook-id"]
        repeat = " (again)" if msg_id in self.seen else ""
        self.seen.add(msg_id)
        messages = payload["messages"] if payload.get("type") == "batch" else [payload]
        for msg in messages:
            print(f"{describe(msg)}  [{msg_id}]{repeat}", file=self.out, flush=True)
        return web.Response(status=204)
