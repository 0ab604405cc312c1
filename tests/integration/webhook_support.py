"""A real webhook receiver (aiohttp on a free port) that verifies every request with the
``standardwebhooks`` package and misbehaves on demand: random failures, hangs past the sender's
timeout, 410/4xx answers, going down and coming back on the same port."""

from __future__ import annotations

import asyncio
import base64
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from chainpush import procs

SECRET = "whsec_" + base64.b64encode(b"webhook-test-secret-32-bytes-ok!").decode()
_ID = re.compile(r"(?P<topic>.+):(?P<first>\d+)(?:-(?P<last>\d+))?(?:@(?P<epoch>[0-9a-f]+))?")


@dataclass
class Delivery:
    path: str
    webhook_id: str
    timestamp: int
    messages: list[dict[str, Any]]
    answered: int | None  # None: hung, never answered


@dataclass
class Receiver:
    """``behaviour(path, delivery) -> status | "hang"`` decides each answer (default 200)."""

    hang_s: float = 5.0
    seed: int = 0
    port: int = field(default_factory=procs.free_port)
    behaviour: Callable[[str, Delivery], int | str] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: seconds each answer takes (a slow endpoint); requests being answered are counted
    delay_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = (await request.read()).decode()
        headers = dict(request.headers)
        try:
            payload = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError as exc:
            self.bad.append(f"{path}: {exc}: {headers.get('webhook-id')}")
            return web.Response(status=400)
        msg_id = request.headers["webhook-id"]
        messages = payload["messages"] if payload["type"] == "batch" else [payload]
        check = _ID.fullmatch(msg_id)
        offsets = [m["offset"] for m in messages]
        if (check is None or any(m["topic"] != check["topic"] for m in messages)
                or any(m.get("epoch") != check["epoch"] for m in messages)
                or offsets[0] != int(check["first"])
                or offsets[-1] != int(check["last"] or check["first"])
                or offsets != list(range(offsets[0], offsets[-1] + 1))):
            self.bad.append(f"{path}: id {msg_id} does not match offsets {offsets}")
        timestamp = request.headers["webhook-timestamp"]
        if not timestamp.isdigit():
            self.bad.append(f"{path}: timestamp {timestamp!r} is not whole seconds")
        delivery = Delivery(path=path, webhook_id=msg_id, timestamp=int(timestamp),
                            messages=messages, answered=None)
        self.deliveries.append(delivery)
        answer = self.behaviour(path, delivery) if self.behaviour is not None else 200
        if self.delay_s:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)  # a slow endpoint
            finally:
                self.in_flight -= 1
        if answer == "hang":
            await asyncio.sleep(self.hang_s)  # the sender gave up long ago
            return web.Response(status=503)
        assert isinstance(answer, int)
        delivery.answered = answer
        self.changed.set()
        return web.Response(status=answer, text="ok" if answer < 300 else "not now")

    # --- what arrived --------------------------------------------------------------------------

    def acked(self, path: str) -> dict[str, list[int]]:
        """Per topic, the offsets of the requests answered 2xx, in arrival order."""
        out: dict[str, list[int]] = {}
        for d in self.deliveries:
            if d.path == path and d.answered is not None and 200 <= d.answered < 300:
                for m in d.messages:
                    out.setdefault(m["topic"], []).append(m["offset"])
        return out

    def first_acks(self, path: str) -> dict[str, list[int]]:
        return {t: list(dict.fromkeys(o)) for t, o in self.acked(path).items()}

    async def wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                self.changed.clear()
                if done():
                    return
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.5)
                except TimeoutError:
                    pass
        assert done(), what


def check_in_order(receiver: Receiver, path: str, heads: dict[str, int]) -> None:
    """Every offset of every topic acknowledged, first acknowledgements in offset order, and a
    repeat only ever re-sends something already acknowledged (at least once, never a gap)."""
    acked = receiver.acked(path)
    assert set(acked) == set(heads), (sorted(acked), sorted(heads))
    for topic, offsets in acked.items():
        assert list(dict.fromkeys(offsets)) == list(range(1, heads[topic] + 1)), (path, topic)
        top = 0
        for offset in offsets:
            assert offset <= top + 1, f"{path} {topic}: gap before {offset} (had up to {top})"
            top = max(top, offset)


async def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """For state in another process (its log, its /metrics): look every 50 ms, within a bound."""
    for _ in range(max(1, int(timeout_s / 0.05))):
        if check():
            return
        await asyncio.sleep(0.05)
    assert check(), f"not within {timeout_s:g} s: {what}"
