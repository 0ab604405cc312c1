"""Dispatch over Redis: the routing registry and the cross-node transport.

Registry (names in :class:`chainpush.constants.RedisNames`):

* ``<ns>:topic:<topic>`` — hash ``node_id → expiry``: nodes with subscribers to the topic;
* ``<ns>:user:<user>`` — hash ``node_id → expiry``: nodes holding a connection of the user;
* ``<ns>:node:<node_id>`` — the node's public websocket URL, with a TTL.

Every push node rewrites its entries each ``heartbeat_s`` with an expiry ``node_ttl_s`` ahead, and
registers a topic at once when it gets its first subscriber. A node that dies simply stops
refreshing: its entries expire and dispatch stops sending to it.

Transport: Redis pub/sub, one channel per node (``<ns>:inbox:<node_id>``), one publish per node
and record carrying every topic of that record the node asked for (one copy per node, never per
user). Pub/sub is fire-and-forget, and that is enough here because MongoDB, not Redis, is the
log: every message is stored with its offset before it is published, each push node checks
offsets per subscription and reads any gap back from MongoDB, and each node reconciles its topics'
last offsets against MongoDB every ``reconcile_s`` and whenever its Redis connection comes back.
Streams would add a second durable log to trim, consumer groups to clean up after dead nodes, and
still need the MongoDB read for clients resuming after a disconnect. docs/push.md says more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from chainpush.constants import RedisNames
from chainpush.resource import AsyncResource
from push.metrics import Metrics
from push.records import StoredMessage
from push.retry import RetryPolicy
from push.routing import live_nodes, plan, registrations

logger = logging.getLogger(__name__)

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError,
)


def encode_inbox(messages: Sequence[StoredMessage], *, sent_at: float) -> str:
    """The payload published to a node's inbox."""
    return json.dumps({
        "sent_at": sent_at,
        "messages": [{"topic": m.topic, "offset": m.offset, "id": m.msg_id, "epoch": m.epoch,
                      "record": m.record} for m in messages],
    }, separators=(",", ":"))


def decode_inbox(payload: str | bytes) -> tuple[float, list[StoredMessage]]:
    """Parse an inbox payload; raise ValueError (KeyError, TypeError included) if malformed."""
    obj = json.loads(payload)
    return float(obj["sent_at"]), [
        StoredMessage(topic=str(m["topic"]), offset=int(m["offset"]), msg_id=str(m["id"]),
                      record=m["record"], epoch=_epoch(m.get("epoch")))
        for m in obj["messages"]
    ]


def _epoch(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"inbox message epoch must be a string or null, got {type(value).__name__}")


def _raise_if_cancel_was_swallowed() -> None:
    """Re-raise a cancellation that redis-py's read timeout swallowed.

    On Python 3.11, a ``task.cancel()`` that lands while ``asyncio.timeout`` is already expiring
    is turned into the timeout's ``TimeoutError``; redis-py's ``get_message(timeout=…)`` then
    returns None and a ``while True`` read loop never ends, so shutting a node down hung (seen in
    test_redis_restarted_mid_stream_loses_nothing, about 1 run in 30). The request is still
    counted by ``Task.cancelling()``: honour it here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _client(url: str, timeout_s: float, health_check_s: float = 5.0) -> aioredis.Redis:
    # health checks PING idle connections (the inbox's included) so that a connection that died
    # silently (no RST: a partition) is noticed and replaced, not waited on forever
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True,
        health_check_interval=health_check_s,
    )
    return client


class Dispatcher(AsyncResource):
    """Collect's side: route each stored record to the nodes with subscribers.

    Publishing is best effort by design (see the module docstring): a Redis error is counted and
    logged, never raised to collect, because the message is already in MongoDB and every node
    catches up from there.
    """

    def __init__(
        self, redis_url: str, *, names: RedisNames | None = None, timeout_s: float = 2.0,
        metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = _client(redis_url, timeout_s)
        self.names = names or RedisNames()
        self.metrics = metrics or Metrics()
        self.metrics.counter("chainpush_dispatch_publishes_total", "inbox publishes (one per node)")
        self.metrics.counter("chainpush_redis_errors_total", "Redis errors (dispatch or registry)")
        self.metrics.counter("chainpush_dispatch_skipped_total",
                             "records not published while Redis was failing (nodes catch up)")
        self._clock = clock
        #: after a Redis error, publishing pauses this long: a frozen Redis would otherwise cost
        #: collect a socket timeout per record, while nodes recover everything from MongoDB anyway
        self.pause_s = max(1.0, timeout_s)
        self._paused_until = 0.0


    async def aclose(self) -> None:
        await self._redis.aclose()

    async def run(self) -> None:
        """Dispatch is driven by collect; wait until cancelled."""
        await asyncio.Event().wait()

    async def publish(self, messages: Sequence[StoredMessage]) -> None:
        topics = sorted({m.topic for m in messages})
        if not topics:
            return
        now = self._clock()
        if now < self._paused_until:
            self.metrics.inc("chainpush_dispatch_skipped_total")
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for topic in topics:
                    pipe.hgetall(self.names.topic(topic))
                tables: list[dict[str, str]] = await pipe.execute()
            routes: dict[str, list[str]] = {}
            expired: dict[str, list[str]] = {}
            for topic, table in zip(topics, tables, strict=True):
                routes[topic], expired[topic] = live_nodes(table, now)
            by_node = plan(messages, routes)
            async with self._redis.pipeline(transaction=False) as pipe:
                for node_id, node_messages in by_node.items():
                    payload = encode_inbox(node_messages, sent_at=now)
                    pipe.publish(self.names.inbox(node_id), payload)
                for topic, gone in expired.items():
                    if gone:
                        pipe.hdel(self.names.topic(topic), *gone)
                await pipe.execute()
            self.metrics.inc("chainpush_dispatch_publishes_total", len(by_node))
        except REDIS_ERRORS as exc:
            self.metrics.inc("chainpush_redis_errors_total")
            self._paused_until = self._clock() + self.pause_s
            logger.warning(
                "dispatch of %s to %d topics failed (%s: %s); not retried, publishing paused "
                "for %.1f s: nodes catch up from MongoDB", messages[0].msg_id, len(topics),
                type(exc).__name__, exc, self.pause_s,
            )


InboxHandler = Callable[[float, list[StoredMessage]], None]


class NodeLink(AsyncResource):
    """A push node's side: keep its registry entries fresh and listen on its inbox.

    ``topics()`` and ``users()`` give what the node currently serves; ``on_messages`` is called
    with each inbox payload; ``on_resync`` after every (re)subscription to the inbox, when
    anything published meanwhile may have been lost.
    """

    def __init__(
        self, redis_url: str, *, node_id: str, public_url: str, names: RedisNames | None = None,
        topics: Callable[[], list[str]], users: Callable[[], list[str]],
        on_messages: InboxHandler, on_resync: Callable[[], Awaitable[None]],
        heartbeat_s: float = 5.0, node_ttl_s: float = 15.0, timeout_s: float = 2.0,
        metrics: Metrics | None = None, retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = _client(redis_url, timeout_s, health_check_s=heartbeat_s)
        self.names = names or RedisNames()
        self.node_id = node_id
        self.public_url = public_url
        self._topics = topics
        self._users = users
        self._on_messages = on_messages
        self._on_resync = on_resync
        self.heartbeat_s = heartbeat_s
        self.node_ttl_s = node_ttl_s
        self.metrics = metrics or Metrics()
        self.metrics.counter("chainpush_redis_errors_total", "Redis errors (dispatch or registry)")
        self.metrics.counter("chainpush_inbox_bad_total", "inbox payloads that did not parse")
        self._retry = retry or RetryPolicy(first_delay_s=0.1, max_delay_s=2.0)
        self._clock = clock
        self._registered: set[str] = set()
        #: registrations under way: a burst of first subscribers to one topic shares one
        #: round trip instead of opening one Redis connection each
        self._registering: dict[str, asyncio.Future[None]] = {}
        self.connected = asyncio.Event()


    async def aclose(self) -> None:
        try:
            await self.unregister()
        except REDIS_ERRORS:
            pass
        await self._redis.aclose()

    async def run(self) -> None:
        """Heartbeat and inbox loops, until cancelled; Redis errors are retried forever."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._heartbeat_loop())
            group.create_task(self._inbox_loop())

    async def register_topic(self, topic: str) -> None:
        """Register a first subscriber's topic now rather than at the next heartbeat.

        Concurrent calls for one topic wait for the same registration (cancelling one caller
        does not cancel it for the others)."""
        if topic in self._registered:
            return
        pending = self._registering.get(topic)
        if pending is None:
            pending = asyncio.ensure_future(self._register(topic))
            self._registering[topic] = pending
            pending.add_done_callback(lambda _: self._registering.pop(topic, None))
        await asyncio.shield(pending)

    async def _register(self, topic: str) -> None:
        expiry = self._clock() + self.node_ttl_s
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.names.topic(topic), self.node_id, str(expiry))
                pipe.expire(self.names.topic(topic), int(self.node_ttl_s) + 1)
                await pipe.execute()
            self._registered.add(topic)
        except REDIS_ERRORS as exc:
            self.metrics.inc("chainpush_redis_errors_total")
            logger.warning("registering topic %s failed (%s); the next heartbeat retries it",
                           topic, exc)

    async def heartbeat(self) -> None:
        """Write this node's URL, topics and users with a fresh expiry; drop stale topics."""
        now = self._clock()
        topics, users = self._topics(), self._users()
        topic_exp, user_exp = registrations(topics, users, now, self.node_ttl_s)
        ttl = int(self.node_ttl_s) + 1
        stale = self._registered - set(topics)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self.names.node(self.node_id), self.public_url, ex=ttl)
            for topic, expiry in topic_exp.items():
                pipe.hset(self.names.topic(topic), self.node_id, str(expiry))
                pipe.expire(self.names.topic(topic), ttl)
            for user, expiry in user_exp.items():
                pipe.hset(self.names.user(user), self.node_id, str(expiry))
                pipe.expire(self.names.user(user), ttl)
            for topic in stale:
                pipe.hdel(self.names.topic(topic), self.node_id)
            await pipe.execute()
        self._registered = set(topics)

    async def unregister(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.names.node(self.node_id))
            for topic in self._registered:
                pipe.hdel(self.names.topic(topic), self.node_id)
            for user in self._users():
                pipe.hdel(self.names.user(user), self.node_id)
            await pipe.execute()
        self._registered.clear()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except REDIS_ERRORS as exc:
                self.metrics.inc("chainpush_redis_errors_total")
                logger.warning("heartbeat of node %s failed (%s); retry in %.1f s, tries left: "
                               "unlimited", self.node_id, exc, self.heartbeat_s)
            await asyncio.sleep(self.heartbeat_s)

    async def _inbox_loop(self) -> None:
        attempt = 0
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.names.inbox(self.node_id))
                    await self.heartbeat()
                    attempt = 0
                    self.connected.set()
                    logger.info("node %s listening on %s", self.node_id,
                                self.names.inbox(self.node_id))
                    await self._on_resync()
                    while True:
                        # a bounded wait, so the health check runs on an idle inbox too
                        message: dict[str, Any] | None = await pubsub.get_message(
                            timeout=self.heartbeat_s)
                        _raise_if_cancel_was_swallowed()
                        if message is not None and message.get("type") == "message":
                            self._handle(message["data"])
            except REDIS_ERRORS as exc:
                self.connected.clear()
                self.metrics.inc("chainpush_redis_errors_total")
                attempt += 1
                delay = self._retry.delay_s(attempt)
                logger.warning("inbox of node %s lost (%s: %s); resubscribing in %.2f s, tries "
                               "left: unlimited", self.node_id, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    def _handle(self, data: str | bytes) -> None:
        try:
            sent_at, messages = decode_inbox(data)
        except (ValueError, KeyError, TypeError) as exc:
            self.metrics.inc("chainpush_inbox_bad_total")
            logger.warning("node %s: unreadable inbox payload (%s)", self.node_id, exc)
            return
        self._on_messages(sent_at, messages)
