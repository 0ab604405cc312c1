"""A push node: websocket connections, subscriptions, and delivery without gap or duplicate.

Theory of operation
-------------------
A browser connects (Origin checked against ``allowed_origins`` during the handshake), and must
send ``{"type": "auth", "token": …}`` as its first frame within ``auth_timeout_s``; the token is
checked locally with the shared secret or public key (:mod:`push.tokens`), so a connection costs
no call to another service. The node keeps ``user → connections`` and ``topic → {connection:
subscription}`` in memory, and its Redis entries fresh (:class:`push.dispatch.NodeLink`).

Each subscription owns a :class:`push.subscription.Cursor`. Live messages arrive from the node's
Redis inbox and are written only when ``offset == cursor.next``; a gap or a subscribe with
``since`` starts one repair task that reads the topic from MongoDB page by page
(:meth:`PushNode._repair`) and hands over to live delivery without gap, duplicate or reordering.
Every ``reconcile_s`` and after each Redis reconnection the node compares each topic's last
offset in MongoDB with its subscriptions, which catches messages that pub/sub lost at the tail.

Live frames are serialised once per message, JSON and websocket framing both (a server frame is
unmasked, so without compression its bytes are the same for every connection), and the bytes are
written straight to each subscriber's transport (:meth:`PushNode._fan_out`): no per-connection
task, queue or frame encoding. The send queue of a connection is its transport write
buffer; above ``max_send_buffer_bytes`` the connection is closed with 4008 (slow consumer) and the
client resumes with ``since``, so a client that never reads costs at most that much memory and
never slows the others. History is written with ``await send`` and so waits for the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from chainpush.constants import RedisNames
from chainpush.logs import client_text
from chainpush.resource import AsyncResource
from push import wire
from push.config import PushConfig, StoresConfig
from push.dispatch import NodeLink
from push.errors import ProtocolError, StoreUnavailable, TokenError
from push.metrics import Metrics
from push.ratelimit import TokenBucket
from push.records import StoredMessage
from push.resume import resume_point, stream_replaced
from push.store import MessageStore
from push.subscription import Cursor, Filter
from push.tokens import Claims, TokenConfig, TokenExpired, verify

logger = logging.getLogger(__name__)

#: how long a subscribe waits for MongoDB before answering ``unavailable``.
SUBSCRIBE_TIMEOUT_S = 5.0
#: pause before re-reading when a repair found MongoDB behind what Redis announced.
REPAIR_PAUSE_S = 0.1


@dataclass(eq=False, slots=True)
class Subscription:
    topic: str
    cursor: Cursor
    filter: Filter
    task: asyncio.Task[None] | None = None
    #: the stream epoch the cursor's offsets belong to (None until the topic has a message)
    epoch: str | None = None


@dataclass(eq=False, slots=True)
class Connection:
    id: int
    ws: ServerConnection
    claims: Claims
    bucket: TokenBucket
    subs: dict[str, Subscription] = field(default_factory=dict)
    closing: bool = False


class PushNode(AsyncResource):
    """Serve websocket clients; ``async with PushNode(...) as node`` starts everything.

    ``run()`` waits until the background loops stop (they only stop on error or ``aclose()``).
    """

    def __init__(
        self, config: PushConfig, *, tokens: TokenConfig, stores: StoresConfig,
        metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.stores = stores
        self.names = RedisNames(stores.namespace)
        self.metrics = metrics or Metrics()
        self._clock = clock
        self.store = MessageStore(
            stores.mongo_uri, stores.database,
            on_error=lambda: self.metrics.inc("chainpush_mongo_errors_total"),
        )
        self.users: dict[str, set[Connection]] = {}
        self.topics: dict[str, dict[Connection, Subscription]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._link: NodeLink | None = None
        self._main: asyncio.Task[None] | None = None
        self._declare_metrics()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "node not started"
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        return self.config.public_url or f"ws://{self.config.host}:{self.port}/ws"

    @property
    def link(self) -> NodeLink:
        assert self._link is not None, "node not started"
        return self._link

    async def __aenter__(self) -> PushNode:
        origins: list[str | None] | None = None
        if self.config.allowed_origins is None and not self.tokens.dev_mode:
            logger.warning("push.allowed_origins is not set: pages of any origin may open "
                           "connections (they still need a token)")
        if self.config.allowed_origins is not None:
            # ``None`` admits clients that send no Origin (servers, CLI tools); browsers send one
            origins = [*self.config.allowed_origins, None]
        self._server = await serve(
            self._handler, self.config.host, self.config.port, origins=origins,  # type: ignore[arg-type]
            process_request=self._process_request, max_size=self.config.max_frame_bytes,
            ping_interval=self.config.ping_interval_s, ping_timeout=self.config.ping_timeout_s,
            max_queue=16, server_header=None,
            compression="deflate" if self.config.compression else None,
        )
        self._link = NodeLink(
            self.stores.redis_url, node_id=self.config.node_id, public_url=self.url,
            names=self.names, topics=lambda: list(self.topics),
            on_messages=self._on_inbox, on_resync=self.reconcile,
            heartbeat_s=self.config.heartbeat_s, node_ttl_s=self.config.node_ttl_s,
            metrics=self.metrics,
        )
        self._main = asyncio.create_task(self._background(), name=f"push-{self.config.node_id}")
        logger.info("push node %s serving %s", self.config.node_id, self.url)
        return self


    async def _background(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.link.run())
            group.create_task(self._reconcile_loop())

    async def run(self) -> None:
        assert self._main is not None, "use `async with PushNode(...)` first"
        await self._main

    async def aclose(self) -> None:
        """Close every connection with 1001 (going away), stop the loops, leave the registry."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        for task in [*self._tasks, *([self._main] if self._main else [])]:
            task.cancel()
        for task in [*self._tasks, *([self._main] if self._main else [])]:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # shutting down: errors were logged
                pass
        if self._link is not None:
            await self._link.aclose()
        await self.store.aclose()
        logger.info("push node %s stopped", self.config.node_id)

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- HTTP side: /healthz and /metrics on the websocket port -------------------------------

    def _declare_metrics(self) -> None:
        m = self.metrics
        m.counter("chainpush_messages_in_total", "messages received from the inbox")
        m.counter("chainpush_messages_out_total", "message frames written to clients")
        m.counter("chainpush_history_out_total", "message frames written from MongoDB history")
        m.counter("chainpush_repairs_total", "repairs (history reads) started")
        m.counter("chainpush_client_errors_total", "error frames sent to clients")
        m.counter("chainpush_closes_total", "connections closed by the node for a policy")
        m.counter("chainpush_mongo_errors_total", "transient MongoDB errors (retried)")
        m.counter("chainpush_dispatch_lag_seconds_sum", "sum of dispatch → node delays")
        m.counter("chainpush_dispatch_lag_seconds_count", "number of inbox payloads timed")
        m.gauge("chainpush_connections", "open authenticated connections",
                lambda: float(sum(len(c) for c in self.users.values())))
        m.gauge("chainpush_subscriptions", "subscriptions on this node",
                lambda: float(sum(len(s) for s in self.topics.values())))
        m.gauge("chainpush_send_queue_bytes", "bytes waiting in connections' send buffers",
                self._queued_bytes)

    def _queued_bytes(self) -> float:
        total = 0
        for conns in self.users.values():
            for conn in conns:
                transport = conn.ws.transport
                total += transport.get_write_buffer_size() if transport else 0
        return float(total)

    def health(self) -> dict[str, object]:
        redis_ok = self._link is not None and self._link.connected.is_set()
        return {"node": self.config.node_id, "redis": redis_ok,
                "connections": sum(len(c) for c in self.users.values())}

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            health = self.health()
            return _response(200 if health["redis"] else 503, json.dumps(health) + "\n",
                             "application/json")
        if path == "/metrics":
            return _response(200, self.metrics.render(), "text/plain; version=0.0.4")
        if path not in ("/", "/ws"):
            return _response(404, f"no such path {path[:100]}\n", "text/plain")
        return None

    # --- connections ---------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        conn_id = next(self._ids)
        claims = await self._authenticate(ws, conn_id)
        if claims is None:
            return
        conn = Connection(id=conn_id, ws=ws, claims=claims,
                          bucket=TokenBucket(self.config.rate_per_s, self.config.rate_burst))
        self.users.setdefault(claims.user, set()).add(conn)
        logger.info("conn %d: user %s connected from %s", conn_id, claims.user, ws.remote_address)
        loop = asyncio.get_running_loop()
        try:
            await ws.send(wire.welcome(
                user=claims.user, node=self.config.node_id, topics=list(claims.topics),
                wallets=list(claims.wallets), expires_at=claims.expires_at,
                heartbeat_s=self.config.ping_interval_s,
            ))
            # the token's expiry closes the connection with 4003 (the client gets a new token)
            expiry = loop.call_at(
                loop.time() + (claims.expires_at + self.tokens.leeway_s - self._clock()),
                lambda: self._spawn(self._close(conn, wire.CLOSE_TOKEN_EXPIRED), f"exp-{conn_id}"),
            )
            try:
                # keep reading after a policy close: the closing handshake needs the client's
                # close frame, which sits behind whatever it sent before
                async for data in ws:
                    if conn.closing:
                        continue
                    if not conn.bucket.allow(loop.time()):
                        self._spawn(self._close(conn, wire.CLOSE_RATE_LIMITED), f"rate-{conn_id}")
                        continue
                    await self._on_frame(conn, data)
            finally:
                expiry.cancel()
        except ConnectionClosed:
            pass
        finally:
            self._forget(conn)
            logger.info("conn %d: user %s disconnected (%s)", conn_id, claims.user,
                        ws.close_code)

    async def _authenticate(self, ws: ServerConnection, conn_id: int) -> Claims | None:
        try:
            async with asyncio.timeout(self.config.auth_timeout_s):
                first = await ws.recv()
        except TimeoutError:
            await _refuse(ws, wire.CLOSE_AUTH_TIMEOUT, conn_id, "no auth frame in time")
            return None
        except ConnectionClosed:
            return None
        try:
            frame = wire.parse_client_frame(first)
        except ProtocolError as exc:
            await _refuse(ws, wire.CLOSE_BAD_FIRST_FRAME, conn_id, str(exc))
            return None
        if not isinstance(frame, wire.Auth):
            await _refuse(ws, wire.CLOSE_BAD_FIRST_FRAME, conn_id, f"first frame {frame.type}")
            return None
        try:
            return verify(frame.token, self.tokens, now=self._clock())
        except TokenExpired as exc:
            await _refuse(ws, wire.CLOSE_TOKEN_EXPIRED, conn_id, str(exc))
        except TokenError as exc:
            await _refuse(ws, wire.CLOSE_AUTH_FAILED, conn_id, str(exc))
        return None

    async def _close(self, conn: Connection, code: int) -> None:
        if conn.closing:
            return
        conn.closing = True
        self.metrics.inc("chainpush_closes_total")
        logger.info("conn %d: user %s closed with %d (%s)", conn.id, conn.claims.user, code,
                    wire.CLOSE_REASONS[code])
        self._forget(conn)
        await conn.ws.close(code, wire.CLOSE_REASONS[code])

    def _forget(self, conn: Connection) -> None:
        for sub in conn.subs.values():
            if sub.task is not None:
                sub.task.cancel()
            subs = self.topics.get(sub.topic)
            if subs is not None:
                subs.pop(conn, None)
                if not subs:
                    del self.topics[sub.topic]
        conn.subs.clear()
        conns = self.users.get(conn.claims.user)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[conn.claims.user]

    async def _error(self, conn: Connection, code: str, text: str, ref: str | None) -> None:
        self.metrics.inc("chainpush_client_errors_total")
        # per frame, so DEBUG (counted in chainpush_client_errors_total); client text escaped
        logger.debug("conn %d: user %s: %s (%s)", conn.id, client_text(conn.claims.user), code,
                     client_text(text))
        await conn.ws.send(wire.error(code, text, ref))

    async def _on_frame(self, conn: Connection, data: str | bytes) -> None:
        try:
            frame = wire.parse_client_frame(data)
        except ProtocolError as exc:
            await self._error(conn, exc.code, str(exc), exc.ref)
            return
        if isinstance(frame, wire.Subscribe):
            await self._subscribe(conn, frame)
        elif isinstance(frame, wire.Unsubscribe):
            sub = conn.subs.pop(frame.topic, None)
            if sub is None:
                await self._error(conn, "not_subscribed", f"not subscribed to {frame.topic}",
                                  frame.ref)
                return
            self._drop(conn, sub)
            await conn.ws.send(wire.unsubscribed(topic=frame.topic, ref=frame.ref))
        elif isinstance(frame, wire.Ping):
            await conn.ws.send(wire.pong(frame.ref))
        else:
            await self._error(conn, "bad_message", "already authenticated", None)

    def _drop(self, conn: Connection, sub: Subscription) -> None:
        if sub.task is not None:
            sub.task.cancel()
        subs = self.topics.get(sub.topic)
        if subs is not None and subs.get(conn) is sub:
            del subs[conn]
            if not subs:
                del self.topics[sub.topic]

    async def _subscribe(self, conn: Connection, frame: wire.Subscribe) -> None:
        topic = frame.topic
        if not conn.claims.allows(topic):
            await self._error(conn, "forbidden_topic", f"the token does not grant {topic}",
                              frame.ref)
            return
        if topic not in conn.subs and len(conn.subs) >= self.config.max_subscriptions:
            await self._error(conn, "too_many_subscriptions",
                              f"at most {self.config.max_subscriptions} per connection", frame.ref)
            return
        old = conn.subs.pop(topic, None)
        if old is not None:
            self._drop(conn, old)
        # registered before the head is read, in repair: a live message arriving meanwhile is
        # remembered as ``missed`` and the repair reads up to it (no window to lose it in)
        sub = Subscription(topic=topic, cursor=Cursor(next=0, repairing=True),
                           filter=Filter(frame.filter))
        conn.subs[topic] = sub
        self.topics.setdefault(topic, {})[conn] = sub
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self.link.register_topic(topic)
                head, epoch = await self.store.head(topic)
        except (TimeoutError, StoreUnavailable):
            if conn.subs.get(topic) is sub:
                del conn.subs[topic]
                self._drop(conn, sub)
            await self._error(conn, "unavailable", f"history of {topic} cannot be read now; "
                              "subscribe again", frame.ref)
            return
        if conn.subs.get(topic) is not sub or conn.closing:
            return
        start = resume_point(since=frame.since, epoch=frame.epoch, head=head, stream_epoch=epoch)
        sub.cursor.next = start.since + 1
        if epoch is not None:  # the head read is what the cursor's offsets refer to
            sub.epoch = epoch
        await conn.ws.send(wire.subscribed(topic=topic, since=start.since, head=head, epoch=epoch,
                                           reset=start.reset, ref=frame.ref))
        self.metrics.inc("chainpush_repairs_total")
        sub.task = self._spawn(self._repair(conn, sub), f"repair-{conn.id}-{topic}")

    # --- delivery --------------------------------------------------------------------------------

    async def _repair(self, conn: Connection, sub: Subscription) -> None:
        """Read ``sub.topic`` from MongoDB from ``cursor.next`` until live delivery can resume."""
        page = self.config.history_page
        try:
            while True:
                before = sub.cursor.next
                rows = await self.store.read_range(sub.topic, sub.cursor.next, limit=page)
                if conn.subs.get(sub.topic) is not sub or conn.closing:
                    return
                if rows and rows[0].offset != before:
                    # a hole in MongoDB (collect never makes one: rows deleted by hand?): say
                    # so and go on from what exists rather than wait for it forever
                    logger.error("topic %s: offsets %d..%d missing in MongoDB; conn %d skips "
                                 "them", sub.topic, before, rows[0].offset - 1, conn.id)
                    sub.cursor.next = rows[0].offset
                for row in rows:
                    if not sub.cursor.fetched(row.offset):
                        break
                    sub.epoch = sub.epoch or row.epoch  # the stream these offsets belong to
                    if sub.filter.matches(row.record):
                        await conn.ws.send(wire.message(row))
                        self.metrics.inc("chainpush_history_out_total")
                if sub.cursor.finish_page(full_page=len(rows) == page):
                    return
                if not rows:  # Redis announced an offset MongoDB does not show yet
                    await asyncio.sleep(REPAIR_PAUSE_S)
        except ConnectionClosed:
            return
        finally:
            if sub.task is asyncio.current_task():
                sub.task = None

    def _restart(self, conn: Connection, sub: Subscription, epoch: str | None, seen: int) -> None:
        """The topic's stream was replaced (store wiped or restored, docs/protocol.md §5):
        follow the new one from offset 1; its messages carry the new epoch, which tells the
        client to take offsets from it."""
        logger.info("conn %d: topic %s has a new stream (epoch %s, was %s): from offset 1",
                    conn.id, sub.topic, epoch, sub.epoch)
        if sub.task is not None:
            sub.task.cancel()
        sub.epoch = epoch
        sub.cursor = Cursor(next=1, repairing=True, missed=seen)
        self._start_repair(conn, sub)

    def _start_repair(self, conn: Connection, sub: Subscription) -> None:
        self.metrics.inc("chainpush_repairs_total")
        sub.task = self._spawn(self._repair(conn, sub), f"repair-{conn.id}-{sub.topic}")

    def _on_inbox(self, sent_at: float, messages: list[StoredMessage]) -> None:
        self.metrics.inc("chainpush_dispatch_lag_seconds_sum", max(0.0, self._clock() - sent_at))
        self.metrics.inc("chainpush_dispatch_lag_seconds_count")
        for message in messages:
            self.metrics.inc("chainpush_messages_in_total")
            try:
                self.deliver(message)
            except (ValueError, TypeError) as exc:  # a record that cannot be sent as JSON
                self.metrics.inc("chainpush_inbox_bad_total")
                logger.error("node %s: cannot deliver %s at %s:%d (%s)", self.config.node_id,
                             message.msg_id, message.topic, message.offset, exc)

    def deliver(self, message: StoredMessage) -> int:
        """Offer one live message to the topic's subscribers; return how many got it now."""
        subs = self.topics.get(message.topic)
        if not subs:
            return 0
        targets: list[Connection] = []
        epoch = message.epoch
        for conn, sub in list(subs.items()):
            if sub.epoch != epoch:  # rare: one comparison per subscriber otherwise
                if stream_replaced(sub.epoch, epoch):
                    self._restart(conn, sub, epoch, message.offset)
                    continue
                sub.epoch = sub.epoch or epoch
            action = sub.cursor.offer(message.offset)
            if action == "deliver":
                if sub.filter.matches(message.record):
                    targets.append(conn)
            elif action == "repair":
                self._start_repair(conn, sub)
        if not targets:
            return 0
        sent = self._fan_out(targets, wire.message(message))
        self.metrics.inc("chainpush_messages_out_total", sent)
        return sent

    def _fan_out(self, targets: list[Connection], text: str) -> int:
        """Write one live frame to ``targets`` now; close slow consumers with 4008.

        What :func:`websockets.broadcast` does per connection (check the state, build the frame,
        serialise it, write it) minus the per-connection frame building: the frame is serialised
        once (RFC 6455 §5.1: a server never masks, so the bytes are the same for everyone) and
        written to each transport. That is equivalent for a connection that is OPEN, not in the
        middle of a fragmented send, and without extensions (``compression`` off); anything else
        goes through :func:`websockets.broadcast`, which does the same checks itself.
        """
        limit = self.config.max_send_buffer_bytes
        data = text.encode()
        frame = Frame(Opcode.TEXT, data).serialize(mask=False) if not self.config.compression \
            else b""
        sent = 0
        others: list[ServerConnection] = []
        for conn in targets:
            ws = conn.ws
            transport = ws.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > limit:
                self._spawn(self._close(conn, wire.CLOSE_SLOW_CONSUMER), f"slow-{conn.id}")
                continue
            protocol = ws.protocol
            if (frame and protocol.state is State.OPEN and ws.send_in_progress is None
                    and not protocol.expect_continuation_frame and not protocol.writes):
                transport.write(frame)
                sent += 1
            else:
                others.append(ws)
        if others:
            websockets.broadcast(others, data, text=True)
            sent += sum(1 for ws in others if ws.protocol.state is State.OPEN)
        return sent

    async def reconcile(self) -> None:
        """Repair every subscription that is behind its topic's last offset in MongoDB."""
        for topic in list(self.topics):
            try:
                head, epoch = await self.store.head(topic)
            except StoreUnavailable:
                return
            for conn, sub in list(self.topics.get(topic, {}).items()):
                if stream_replaced(sub.epoch, epoch):
                    self._restart(conn, sub, epoch, head)
                elif sub.cursor.next <= head and sub.cursor.start_repair():
                    self._start_repair(conn, sub)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_s)
            await self.reconcile()


def _response(status: int, body: str, content_type: str) -> Response:
    import http

    headers = Headers({"Content-Type": content_type, "Cache-Control": "no-store"})
    return Response(status, http.HTTPStatus(status).phrase, headers, body.encode())


async def _refuse(ws: ServerConnection, code: int, conn_id: int, why: str) -> None:
    # ``why`` comes from token checks or the parser: never the token itself
    logger.info("conn %d refused with %d (%s): %s", conn_id, code, wire.CLOSE_REASONS[code],
                client_text(why))
    closing = asyncio.ensure_future(ws.close(code, wire.CLOSE_REASONS[code]))
    # read (and drop) what the client sent meanwhile so its close frame is seen at once
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
    await closing
