"""A push node: websocket connections, subscriptions, and delivery without gap or duplicate.

Theory of operation
-------------------
Three layers. :mod:`push.connection` moves bytes (websockets' sans-I/O protocol over an asyncio
transport) and enforces every deadline; :mod:`push.session` decides, per connection, what a frame
means and what the client gets (pure); this module holds what the connections share: the
``topic → {subscription: connection}`` index, the caps across connections
(:class:`push.ratelimit.Admission`, ``max_topics``), MongoDB reads, Redis registration
(:class:`push.dispatch.NodeLink`) and the fan-out.

A browser connects (Origin checked against ``allowed_origins`` during the handshake), and must
send ``{"type": "auth", "token": …}`` as its first frame within ``auth_timeout_s``; the token is
checked locally with the shared secret or public key (:mod:`push.tokens`).

Each subscription owns a :class:`push.subscription.Cursor`. Live messages arrive from the node's
Redis inbox and are written only when ``offset == cursor.next``; a gap or a subscribe with
``since`` starts one repair task that reads the topic from MongoDB page by page
(:meth:`PushNode._repair`) and hands over to live delivery without gap, duplicate or reordering.
Every ``reconcile_s`` and after each Redis reconnection the node compares each topic's last
offset in MongoDB with its subscriptions, which catches messages that pub/sub lost at the tail.

Isolation: every per-subscriber step (offer, filter, repair) runs under its own ``try``; a
failure drops that subscription with an error frame (:meth:`push.session.Session.fail`) and
touches nothing else. A repair yields to the event loop after every ``REPAIR_BATCH`` frames and
waits for its client's buffer to drain, so one subscribe with ``since: 0`` cannot hold the loop.

Live frames are serialised once per message, JSON and websocket framing both, and the same bytes
are written to each subscriber's transport (:meth:`PushNode._fan_out`).
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import logging
import time
from collections.abc import Callable

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from chainpush.constants import RedisNames
from chainpush.logs import client_text
from chainpush.push import wire
from chainpush.push.config import PushConfig, StoresConfig
from chainpush.push.connection import Connection, encode_text
from chainpush.push.dispatch import NodeLink
from chainpush.push.errors import StoreUnavailable
from chainpush.push.metrics import Metrics
from chainpush.push.ratelimit import Admission, AdmissionLimits
from chainpush.push.records import StoredMessage
from chainpush.push.session import (
    Action,
    Admit,
    Close,
    Drop,
    Fetch,
    Repair,
    Send,
    SessionConfig,
    SessionLimits,
    Subscription,
)
from chainpush.push.store import MessageStore
from chainpush.push.tokens import TokenConfig
from chainpush.resource import AsyncResource

logger = logging.getLogger(__name__)

#: how long a subscribe waits for MongoDB before answering ``unavailable``.
SUBSCRIBE_TIMEOUT_S = 5.0
#: how often the contract names watchers claimed (``watcher.claims``) are read again: a
#: watcher of another chain started after this node is served within this long
CLAIMS_REFRESH_S = 5.0
#: the ``contract:`` names of wallet activity (``[watch] wallet_activity``: the standard
#: transfers of any token, ``watcher.wallets.STANDARDS``): served on every node, one topic per
#: standard for the whole deployment (every chain's, told apart by ``chain_id``), not claimed
WALLET_STANDARDS = frozenset({"erc20", "erc721", "erc1155"})
#: how long one read of the claims may wait for MongoDB (the first delays the node's start)
CLAIMS_TIMEOUT_S = 2.0
#: subscribes that read their head (Redis registration + MongoDB) at the same time.
SUBSCRIBE_CONCURRENCY = 8
#: pause before re-reading when a repair found MongoDB behind what Redis announced.
REPAIR_PAUSE_S = 0.1
#: history frames a repair writes before it yields to the event loop (other clients' turn).
REPAIR_BATCH = 50


class PushNode(AsyncResource):
    """Serve websocket clients; ``async with PushNode(...) as node`` starts everything.

    ``run()`` waits until the background loops stop (they only stop on error or ``aclose()``).
    """

    def __init__(
        self, config: PushConfig, *, tokens: TokenConfig, stores: StoresConfig,
        metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
        claims_refresh_s: float = CLAIMS_REFRESH_S,
    ) -> None:
        self.config = config
        self.claims_refresh_s = claims_refresh_s
        self.tokens = tokens
        self.stores = stores
        self.names = RedisNames(stores.namespace)
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.store = MessageStore(
            stores.mongo_uri, stores.database,
            on_error=lambda: self.metrics.inc("chainpush_mongo_errors_total"),
        )
        #: the contract names served (None: any): the config's, and every name a watcher of
        #: this deployment claimed (any chain: ``watcher.claims``), added by ``_claims_loop``
        #: in place (the sessions share this set)
        self.contract_names: set[str] | None = (
            None if config.contracts is None else {*config.contracts, *WALLET_STANDARDS})
        self.session_config = SessionConfig(
            node_id=config.node_id, tokens=tokens, heartbeat_s=config.ping_interval_s,
            limits=SessionLimits(
                max_subscriptions=config.max_subscriptions, rate_per_s=config.rate_per_s,
                rate_burst=config.rate_burst, contracts=self.contract_names,
            ),
        )
        self.admission = Admission(AdmissionLimits(
            max_connections=config.max_connections,
            max_connections_per_ip=config.max_connections_per_ip,
            max_connections_per_user=config.max_connections_per_user,
            connect_rate_per_ip_s=config.connect_rate_per_ip_s,
            connect_burst_per_ip=config.connect_burst_per_ip,
        ))
        self.origins: list[str | None] | None = None
        if config.allowed_origins is not None:
            # ``None`` admits clients that send no Origin (servers, CLI tools); browsers send one
            self.origins = [*config.allowed_origins, None]
        self.connections: set[Connection] = set()
        self.users: dict[str, set[Connection]] = {}
        self.topics: dict[str, dict[Subscription, Connection]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._link: NodeLink | None = None
        self._main: asyncio.Task[None] | None = None
        self._all_closed: asyncio.Future[None] | None = None
        self._subscribing = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)
        self._declare_metrics()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "node not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return self.config.public_url or f"ws://{self.config.host}:{self.port}/ws"

    @property
    def link(self) -> NodeLink:
        assert self._link is not None, "node not started"
        return self._link

    async def __aenter__(self) -> PushNode:
        if self.config.allowed_origins is None and not self.tokens.dev_mode:
            logger.warning("push.allowed_origins is not set: pages of any origin may open "
                           "connections (they still need a token)")
        if self.contract_names is not None:
            await self._read_claims()  # before the first client: every chain's names
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self, next(self._ids)), self.config.host, self.config.port,
            # workers of one host share the port; the kernel spreads connections over them
            reuse_port=self.config.workers > 1 or None,
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
            if self.contract_names is not None:
                group.create_task(self._claims_loop())

    async def run(self) -> None:
        assert self._main is not None, "use `async with PushNode(...)` first"
        await self._main

    async def aclose(self) -> None:
        """Close every connection with 1001 (going away), stop the loops, leave the registry."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            self.run_actions(conn, conn.session.close(wire.CLOSE_GOING_AWAY), quiet=True)
            if conn.session.state == "closed" and not conn.open:
                conn.send_close(wire.CLOSE_GOING_AWAY)
        # each connection has close_timeout_s to finish its closing handshake, then is aborted
        if self.connections:
            self._all_closed = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.config.close_timeout_s + 1.0):
                    await self._all_closed
            except TimeoutError:
                pass
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
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
        m.counter("chainpush_slow_consumers_total", "connections closed with 4008 (slow)")
        m.counter("chainpush_aborts_total",
                  "transports aborted after a handshake or close deadline")
        m.counter("chainpush_refused_total", "connections refused by a connection cap")
        m.counter("chainpush_subscription_failures_total",
                  "subscriptions dropped after an internal error")
        m.counter("chainpush_mongo_errors_total", "transient MongoDB errors (retried)")
        m.counter("chainpush_dispatch_lag_seconds_sum", "sum of dispatch → node delays")
        m.counter("chainpush_dispatch_lag_seconds_count", "number of inbox payloads timed")
        m.gauge("chainpush_connections", "open authenticated connections",
                lambda: float(sum(len(c) for c in self.users.values())))
        m.gauge("chainpush_tcp_connections", "open TCP connections (any state)",
                lambda: float(len(self.connections)))
        m.gauge("chainpush_subscriptions", "subscriptions on this node",
                lambda: float(sum(len(s) for s in self.topics.values())))
        m.gauge("chainpush_topics", "distinct topics on this node",
                lambda: float(len(self.topics)))
        m.gauge("chainpush_send_queue_bytes", "bytes waiting in connections' send buffers",
                self._queued_bytes)

    def _queued_bytes(self) -> float:
        return float(sum(c.transport.get_write_buffer_size() for c in self.connections
                         if c.transport is not None and not c.lost))

    def health(self) -> dict[str, object]:
        redis_ok = self._link is not None and self._link.connected.is_set()
        return {"node": self.config.node_id, "redis": redis_ok,
                "connections": sum(len(c) for c in self.users.values())}

    def http_response(self, request: Request) -> Response | None:
        """The answer to a plain HTTP request, or None for a websocket handshake."""
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            health = self.health()
            return _response(200 if health["redis"] else 503, json.dumps(health) + "\n",
                             "application/json")
        if path == "/metrics":
            return _response(200, self.metrics.render(), "text/plain; version=0.0.4")
        if path not in ("/", "/ws"):
            return _response(404, f"no such path {path[:100]!r}\n", "text/plain")
        return None

    def refused(self, why: str) -> None:
        self.metrics.inc("chainpush_refused_total")
        logger.debug("connection refused: %s", why)

    # --- connections: what the sessions asked for -----------------------------------------------

    def run_actions(self, conn: Connection, actions: list[Action], *, quiet: bool = False
                    ) -> None:
        """Carry out a session's actions for ``conn``, in order."""
        session = conn.session
        for action in actions:
            if isinstance(action, Send):
                if action.error is not None:
                    self.metrics.inc("chainpush_client_errors_total")
                    logger.debug("conn %d: error %s", conn.id, action.error)
                conn.send_text(action.text)
            elif isinstance(action, Drop):
                self._unindex(action.sub)
            elif isinstance(action, Fetch):
                self._fetch(conn, action.sub)
            elif isinstance(action, Repair):
                self._start_repair(conn, action.sub)
            elif isinstance(action, Admit):
                self._admit(conn, action)
            elif isinstance(action, Close):
                self._leave(conn)
                if not quiet:
                    self.metrics.inc("chainpush_closes_total")
                    logger.info("conn %d: user %s closed with %d (%s)", conn.id,
                                client_text(session.user),
                                action.code, wire.CLOSE_REASONS.get(action.code, "?"))
                conn.send_close(action.code)

    def _admit(self, conn: Connection, action: Admit) -> None:
        claims = action.claims
        if not self.admission.join(claims.user):
            self.run_actions(conn, conn.session.close(wire.CLOSE_TOO_MANY_CONNECTIONS))
            return
        conn.joined = True
        self.users.setdefault(claims.user, set()).add(conn)
        logger.info("conn %d: user %s connected from %s", conn.id, client_text(claims.user),
                    conn.ip)
        self.run_actions(conn, conn.session.admit())
        # the token's expiry closes the connection with 4003 (the client gets a new token)
        loop = asyncio.get_running_loop()
        when = loop.time() + (claims.expires_at + self.tokens.leeway_s - self.clock())
        conn.arm_at("expiry", when, lambda: self.run_actions(
            conn, conn.session.close(wire.CLOSE_TOKEN_EXPIRED)))

    def _leave(self, conn: Connection) -> None:
        if not conn.joined:
            return
        conn.joined = False
        user = conn.session.user
        assert user is not None
        self.admission.leave(user)
        conns = self.users.get(user)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[user]

    def connection_lost(self, conn: Connection) -> None:
        """The transport is gone: forget the connection (called once, by the transport)."""
        self.run_actions(conn, conn.session.close(wire.CLOSE_GOING_AWAY), quiet=True)
        self._leave(conn)
        if conn.counted:
            conn.counted = False
            self.admission.close(conn.ip)
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None \
                and not self._all_closed.done():
            self._all_closed.set_result(None)
        if conn.session.user is not None:
            logger.info("conn %d: user %s disconnected (%s)", conn.id,
                        client_text(conn.session.user),
                        conn.protocol.close_code)

    def _unindex(self, sub: Subscription) -> None:
        if sub.task is not None and sub.task is not asyncio.current_task():
            sub.task.cancel()
        sub.task = None
        subs = self.topics.get(sub.topic)
        if subs is not None and subs.pop(sub, None) is not None and not subs:
            del self.topics[sub.topic]

    def _fetch(self, conn: Connection, sub: Subscription) -> None:
        subs = self.topics.get(sub.topic)
        if subs is None:
            if len(self.topics) >= self.config.max_topics:
                self.run_actions(conn, conn.session.subscribe_failed(
                    sub, "too_many_topics", f"this node serves at most {self.config.max_topics} "
                    "topics"))
                return
            subs = self.topics[sub.topic] = {}
        # indexed before the head is read, in repair: a live message arriving meanwhile is
        # remembered as ``missed`` and the repair reads up to it (no window to lose it in)
        subs[sub] = conn
        sub.task = self._spawn(self._subscribe(conn, sub), f"subscribe-{conn.id}")

    async def _subscribe(self, conn: Connection, sub: Subscription) -> None:
        try:
            # a burst of subscribes (a reconnect storm, junk topics) waits here rather than
            # opening one Redis and one MongoDB request each at once
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S), self._subscribing:
                await self.link.register_topic(sub.topic)
                head, epoch = await self.store.head(sub.topic)
        except (TimeoutError, StoreUnavailable):
            sub.task = None
            self.run_actions(conn, conn.session.subscribe_failed(
                sub, "unavailable", "history cannot be read now; subscribe again"))
            return
        except Exception as exc:  # isolate: only this subscription fails
            sub.task = None
            self.metrics.inc("chainpush_subscription_failures_total")
            self.run_actions(conn, conn.session.fail(sub, f"subscribe: {exc!r}"))
            return
        sub.task = None
        self.run_actions(conn, conn.session.subscribe_ready(sub, head, epoch))

    # --- delivery --------------------------------------------------------------------------------

    def _restart(self, conn: Connection, sub: Subscription, epoch: str | None, seen: int
                 ) -> None:
        """The stream was replaced under ``sub``: start over from offset 1 of the new one."""
        if sub.task is not None and sub.task is not asyncio.current_task():
            sub.task.cancel()
        sub.task = None
        sub.restart(epoch, seen)
        self._start_repair(conn, sub)

    def _start_repair(self, conn: Connection, sub: Subscription) -> None:
        if not sub.active:
            return
        self.metrics.inc("chainpush_repairs_total")
        sub.task = self._spawn(self._repair(conn, sub), f"repair-{conn.id}")

    async def _repair(self, conn: Connection, sub: Subscription) -> None:
        """Read ``sub.topic`` from MongoDB from ``cursor.next`` until live delivery can resume."""
        page = self.config.history_page
        try:
            while True:
                rows = await self.store.read_range(sub.topic, sub.cursor.next, limit=page)
                # the subscription stays in repair while the page is written (with awaits): a
                # live message arriving meanwhile is noted as missed and read with the next
                # page, never written before this page's last row
                out, step = conn.session.history(sub, rows, page=page, finish=False)
                if step == "stale":
                    return
                for i, row in enumerate(out):
                    if i % REPAIR_BATCH == REPAIR_BATCH - 1:
                        await asyncio.sleep(0)  # let the loop serve everyone else
                    if not await conn.writable() or not sub.active:
                        return
                    conn.send_text(wire.message(row))
                self.metrics.inc("chainpush_history_out_total", len(out))
                step = conn.session.finish_history(sub, full_page=len(rows) >= page,
                                                   empty=not rows)
                if step in ("done", "stale"):
                    return
                await asyncio.sleep(REPAIR_PAUSE_S if step == "behind" else 0)
        except asyncio.CancelledError:
            raise
        except StoreUnavailable:
            self.run_actions(conn, conn.session.subscribe_failed(
                sub, "unavailable", "history cannot be read now; subscribe again with since"))
        except Exception as exc:  # isolate: only this subscription fails, never stuck
            self.metrics.inc("chainpush_subscription_failures_total")
            self.run_actions(conn, conn.session.fail(sub, f"repair: {exc!r}"))
        finally:
            if sub.task is asyncio.current_task():
                sub.task = None

    def _on_inbox(self, sent_at: float, messages: list[StoredMessage]) -> None:
        self.metrics.inc("chainpush_dispatch_lag_seconds_sum", max(0.0, self.clock() - sent_at))
        self.metrics.inc("chainpush_dispatch_lag_seconds_count")
        for message in messages:
            self.metrics.inc("chainpush_messages_in_total")
            try:
                self.deliver(message)
            except (ValueError, TypeError) as exc:  # a record that cannot be sent as JSON
                self.metrics.inc("chainpush_inbox_bad_total")
                logger.error("node %s: cannot deliver %s at %r:%d (%s)", self.config.node_id,
                             message.msg_id, message.topic, message.offset, exc)

    def deliver(self, message: StoredMessage) -> int:
        """Offer one live message to the topic's subscribers; return how many got it now.

        Each subscriber's step is isolated: one that raises is dropped with an error frame and
        the others' cursors are untouched by it.
        """
        subs = self.topics.get(message.topic)
        if not subs:
            return 0
        targets: list[Connection] = []
        for sub, conn in list(subs.items()):
            try:
                verdict = sub.offer(message)
                if verdict == "send":
                    targets.append(conn)
                elif verdict == "repair":
                    self._start_repair(conn, sub)
                elif verdict == "restart":
                    self._restart(conn, sub, message.epoch, message.offset)
            except Exception as exc:
                self.metrics.inc("chainpush_subscription_failures_total")
                self.run_actions(conn, conn.session.fail(sub, f"deliver: {exc!r}"))
        if not targets:
            return 0
        sent = self._fan_out(targets, wire.message(message))
        self.metrics.inc("chainpush_messages_out_total", sent)
        return sent

    def _fan_out(self, targets: list[Connection], text: str) -> int:
        """Write one live frame to ``targets`` now; a connection past its buffer cap is closed
        with 4008 by :meth:`Connection.write_frame`. The frame is serialised once (RFC 6455
        §5.1: a server never masks); with compression each connection compresses its own."""
        if self.config.compression:
            for conn in targets:
                conn.send_text(text)
            return len(targets)
        frame = encode_text(text)
        return sum(1 for conn in targets if conn.write_frame(frame))

    async def reconcile(self) -> None:
        """Repair every subscription that is behind its topic's last offset in MongoDB."""
        # one query for every topic's head and epoch (MessageStore.heads reads ``streams``)
        try:
            heads = await self.store.heads(list(self.topics))
        except StoreUnavailable:
            return
        for topic, (head, epoch) in heads.items():
            for sub, conn in list(self.topics.get(topic, {}).items()):
                try:
                    step = sub.behind(head, epoch)
                    if step == "repair":
                        self._start_repair(conn, sub)
                    elif step == "restart":
                        self._restart(conn, sub, epoch, head)
                except Exception as exc:
                    self.run_actions(conn, conn.session.fail(sub, f"reconcile: {exc!r}"))

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_s)
            await self.reconcile()

    async def _read_claims(self) -> None:
        """Add the contract names watchers claimed in MongoDB (several chains: each watcher
        claims its own, docs/watcher.md §Several chains) to :attr:`contract_names`. MongoDB
        away: logged, the names known so far stay (the next round tries again)."""
        from chainpush.watcher.checkpoint import CheckpointError
        from chainpush.watcher.claims import MongoClaims

        assert self.contract_names is not None
        try:
            async with MongoClaims(self.stores.mongo_uri, self.stores.database,
                                   timeout_s=CLAIMS_TIMEOUT_S) as claims:
                names = await claims.names()
        except CheckpointError as exc:
            logger.warning("%s; serving the %d contract names known so far", exc,
                           len(self.contract_names))
            return
        new = names - self.contract_names
        if new:
            logger.info("contract names claimed by watchers, now served: %s",
                        ", ".join(sorted(new)))
            self.contract_names.update(new)

    async def _claims_loop(self) -> None:
        while True:
            await asyncio.sleep(self.claims_refresh_s)
            await self._read_claims()


def _response(status: int, body: str, content_type: str) -> Response:
    headers = Headers({"Content-Type": content_type, "Cache-Control": "no-store",
                       "Content-Length": str(len(body.encode())), "Connection": "close"})
    return Response(status, http.HTTPStatus(status).phrase, headers, body.encode())
