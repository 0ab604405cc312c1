"""Helpers shared by the push integration tests: records shaped like the watcher's, recorders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from chainpush.push.collect import Collector
from chainpush.push.config import PushConfig, StoresConfig
from chainpush.push.dispatch import Dispatcher
from chainpush.push.node import PushNode
from chainpush.push.records import StoredMessage
from chainpush.push.retry import RetryPolicy
from chainpush.push.tokens import Claims, TokenConfig, issue

ALICE = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
BOB = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"


def make_record(
    n: int, *, contract: str = "DemoToken", status: str = "pending", kind: str = "event",
    frm: str = ALICE, to: str = BOB, value: int = 1000,
) -> dict[str, Any]:
    """A record as docs/seams.md §1 describes it; ``n`` makes the id unique."""
    block_hash = "0x" + f"{n // 4:064x}"
    args: dict[str, Any] = {"from": frm, "to": to, "value": str(value * 10**18 + n)}
    if kind == "state":
        args = {"inputs": [], "value": str(n)}
    return {
        "kind": kind, "id": f"31337:{block_hash}:{n % 4}", "chain_id": 31337,
        "contract": contract, "address": "0x" + "12" * 20,
        "event": "Transfer" if kind == "event" else "value",
        "args": args, "block_number": n // 4, "block_hash": block_hash,
        "block_timestamp": 1700000000 + n, "tx_hash": "0x" + f"{n:064x}",
        "log_index": n % 4 if kind == "event" else -1, "status": status,
    }


@dataclass
class RecordingDispatch:
    """A Dispatch that remembers what it was given."""

    published: list[StoredMessage] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def publish(self, messages: Sequence[StoredMessage]) -> None:
        async with self.changed:
            self.published.extend(messages)
            self.changed.notify_all()

    async def wait_for(self, count: int) -> None:
        """Return once at least ``count`` messages were published."""
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.published) >= count)


# --- a push stack in this process: collect → dispatch → push nodes ------------------------------




SECRET = "test-secret-" + "x" * 32
TOKENS = TokenConfig(secret=SECRET)
FAST = RetryPolicy(first_delay_s=0.05, max_delay_s=0.5)


def token(user: str = "alice", *, topics: tuple[str, ...] = ("contract:*", "state:*"),
          wallets: tuple[str, ...] = (), ttl_s: float = 600) -> str:
    now = time.time()
    return issue(Claims(user=user, wallets=wallets, topics=topics, expires_at=int(now + ttl_s)),
                 TOKENS, now=now)


def stores(mongo_uri: str, redis_url: str, database: str) -> StoresConfig:
    return StoresConfig(mongo_uri=mongo_uri, redis_url=redis_url, database=database,
                        namespace="t" + uuid.uuid4().hex[:8])


def node_config(node_id: str, unit: float, **kw: Any) -> PushConfig:
    base: dict[str, Any] = {"node_id": node_id, "port": 0, "heartbeat_s": 1.0,
                            "node_ttl_s": 3.0, "reconcile_s": 0.5 * unit}
    base.update(kw)
    return PushConfig(**base)


@contextlib.asynccontextmanager
async def collector_for(cfg: StoresConfig) -> AsyncIterator[Collector]:
    from chainpush.constants import RedisNames

    async with (
        Dispatcher(cfg.redis_url, names=RedisNames(cfg.namespace)) as dispatch,
        Collector(mongo_uri=cfg.mongo_uri, database=cfg.database, dispatch=dispatch,
                  retry=FAST) as collector,
    ):
        yield collector


@contextlib.asynccontextmanager
async def push_node(cfg: StoresConfig, node_id: str, unit: float, *,
                    tokens: TokenConfig = TOKENS, **kw: Any) -> AsyncIterator[PushNode]:
    async with PushNode(node_config(node_id, unit, **kw), tokens=tokens, stores=cfg) as node:
        async with asyncio.timeout(10 * unit):
            await node.link.connected.wait()
        yield node


class Client:
    """A websocket client that speaks the protocol and records what it gets."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, tok: str | None = None, **kw: Any
                      ) -> AsyncIterator[Client]:
        async with connect(url, **kw) as ws:
            client = cls(ws)
            if tok is not None:
                await ws.send(json.dumps({"type": "auth", "token": tok}))
                welcome = await client.next_frame()
                assert welcome["type"] == "welcome", welcome
            yield client

    async def next_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await self.ws.recv())
        self.frames.append(frame)
        if frame["type"] == "message":
            self.messages.append(frame)
        return frame

    async def subscribe(self, topic: str, since: int | None = None, **kw: Any
                        ) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "topic": topic, **kw}
        if since is not None:
            frame["since"] = since
        await self.ws.send(json.dumps(frame))
        while True:
            got = await self.next_frame()
            if got["type"] in ("subscribed", "error"):
                return got

    async def until(self, count: int, topic: str | None = None) -> list[dict[str, Any]]:
        """Read frames until ``count`` messages (of ``topic``) arrived; return those."""
        def mine() -> list[dict[str, Any]]:
            return [m for m in self.messages if topic is None or m["topic"] == topic]
        while len(mine()) < count:
            await self.next_frame()
        return mine()

    def offsets(self, topic: str) -> list[int]:
        return [m["offset"] for m in self.messages if m["topic"] == topic]


class ResilientClient:
    """Keeps one subscription alive across node failures: reconnect to the next URL, resume
    with ``since`` = the last offset received and ``epoch`` = the stream it belongs to (a
    ``reset`` or a message of another epoch starts the offsets again: docs/protocol.md §5).
    Records every message it gets; ``resets`` counts the subscribes answered with a reset."""

    def __init__(self, urls: list[str], tok: str, topic: str, *, retry_s: float) -> None:
        self.urls = urls
        self.token = tok
        self.topic = topic
        self.retry_s = retry_s
        self.last = 0
        self.epoch: str | None = None
        self.resets = 0
        self.offsets: list[int] = []
        self.ids: list[str] = []
        self.nodes: list[str] = []
        self.reached = asyncio.Event()
        self.target = -1

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        attempt = 0
        while True:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                async with Client.connect(url, self.token) as client:
                    self.nodes.append(url)
                    answer = await client.subscribe(self.topic, since=self.last,
                                                    **self._epoch_field())
                    if answer["type"] == "subscribed":
                        self._on_subscribed(answer)
                    while True:
                        frame = await client.next_frame()
                        if frame["type"] == "message":
                            self._on_epoch(frame.get("epoch"))
                            self.offsets.append(frame["offset"])
                            self.ids.append(frame["id"])
                            self.last = frame["offset"]
                            if self.last >= self.target >= 0:
                                self.reached.set()
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                await asyncio.sleep(self.retry_s)  # reconnect backoff, as a real client does

    def _epoch_field(self) -> dict[str, str]:
        return {} if self.epoch is None else {"epoch": self.epoch}

    def _on_subscribed(self, answer: dict[str, Any]) -> None:
        if answer.get("reset"):
            self.resets += 1
            self.last = int(answer["since"])
        if answer.get("epoch") is not None:
            self.epoch = str(answer["epoch"])

    def _on_epoch(self, epoch: str | None) -> None:
        from chainpush.push.resume import stream_replaced

        if stream_replaced(self.epoch, epoch):
            self.last = 0  # a new stream: its offsets start again
        if epoch is not None:
            self.epoch = epoch

    async def wait_for(self, offset: int) -> None:
        self.target = offset
        if self.last >= offset:
            return
        self.reached.clear()
        await self.reached.wait()
