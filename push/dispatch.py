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

import redis.exceptions

from chainpush.constants import RedisNames
from chainpush.logs import Throttle, client_text
from chainpush.push.metrics import Metrics
from chainpush.push.records import StoredMessage
from chainpush.push.redisio import Inbox, open_client, publish
from chainpush.push.retry import RetryPolicy
from chainpush.push.routing import LiveNodes, plan, registry_changes, routes
from chainpush.resource import AsyncResource, raise_if_cancelling

logger = logging.getLogger(__name__)

#: every error Redis or the socket can raise. Not only a lost connection: a Redis that answers
#: errors (``MOVED`` / ``CLUSTERDOWN`` from a cluster, ``READONLY`` from a replica, ``WRONGTYPE``
#: on a key someone else wrote, ``NOPERM``, ``OOM``) must not kill collect, the watcher or a push
#: node either: Redis only carries routing, MongoDB has every message, and each loop retries.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError, OSError,
    # the cluster client's own errors (SlotNotCoveredError while a master is down, ...) do not
    # derive from RedisError
    redis.exceptions.RedisClusterException,
)

#: a node whose liveness score is older than this is removed from the live set by any heartbeat
NODE_FORGET_S = 86_400.0

#: repeated Redis errors are logged at most once per this many seconds per loop (the rest counted
#: in ``chainpush_redis_errors_total`` and summed up in the next line that goes out)
ERROR_LOG_INTERVAL_S = 10.0


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
        self._redis = open_client(redis_url, timeout_s=timeout_s)
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
        self._throttle = Throttle(ERROR_LOG_INTERVAL_S, clock)
        self._live = LiveNodes()


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
            by_topic = dict(zip(topics, tables, strict=True))
            candidates = {n for table in tables for n in table}
            if self._live.stale(candidates, now):
                live = await self._redis.zrangebyscore(self.names.nodes(), now, "+inf")
                self._live.update((str(n) for n in live), candidates, now)
            by_node = plan(messages, routes(by_topic, self._live.live))
            # one publish per node; on a cluster each inbox is a sharded channel in its own
            # slot (a cluster pipeline refuses PUBLISH, and SPUBLISH goes to one shard each)
            await asyncio.gather(*(
                publish(self._redis, self.names.inbox(node_id),
                        encode_inbox(node_messages, sent_at=now))
                for node_id, node_messages in by_node.items()
            ))
            self.metrics.inc("chainpush_dispatch_publishes_total", len(by_node))
        except REDIS_ERRORS as exc:
            self.metrics.inc("chainpush_redis_errors_total")
            self._paused_until = self._clock() + self.pause_s
            held = self._throttle.ready("publish")
            if held is not None:
                logger.warning(
                    "dispatch of %s to %d topics failed (%s: %s); publishing paused for %.1f s, "
                    "then retried with the next record (tries left: unlimited); nodes catch up "
                    "from MongoDB; %d similar lines held back", messages[0].msg_id, len(topics),
                    type(exc).__name__, client_text(exc), self.pause_s, held,
                )


InboxHandler = Callable[[float, list[StoredMessage]], None]


class NodeLink(AsyncResource):
    """A push node's side: keep its registry entries fresh and listen on its inbox.

    ``topics()`` gives the topics the node currently serves; ``on_messages`` is called
    with each inbox payload; ``on_resync`` after every (re)subscription to the inbox, when
    anything published meanwhile may have been lost.
    """

    def __init__(
        self, redis_url: str, *, node_id: str, public_url: str, names: RedisNames | None = None,
        topics: Callable[[], list[str]],
        on_messages: InboxHandler, on_resync: Callable[[], Awaitable[None]],
        heartbeat_s: float = 5.0, node_ttl_s: float = 15.0, timeout_s: float = 2.0,
        metrics: Metrics | None = None, retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis_url = redis_url
        self._timeout_s = timeout_s
        self._redis = open_client(redis_url, timeout_s=timeout_s, health_check_s=heartbeat_s)
        self.names = names or RedisNames()
        self.node_id = node_id
        self.public_url = public_url
        self._topics = topics
        self._on_messages = on_messages
        self._on_resync = on_resync
        self.heartbeat_s = heartbeat_s
        self.node_ttl_s = node_ttl_s
        self.metrics = metrics or Metrics()
        self.metrics.counter("chainpush_redis_errors_total", "Redis errors (dispatch or registry)")
        self.metrics.counter("chainpush_inbox_bad_total", "inbox payloads that did not parse")
        self.metrics.counter("chainpush_inbox_resubscribes_total",
                             "inbox subscriptions lost and made again (connection, slot move)")
        self._retry = retry or RetryPolicy(first_delay_s=0.1, max_delay_s=2.0)
        self._clock = clock
        #: topics whose entries this node has written (docs/seams.md §4)
        self._registered: set[str] = set()
        #: whether what a previous run under this node id registered has been removed
        self._clean = False
        #: registrations under way: a burst of first subscribers to one topic shares one
        #: round trip instead of opening one Redis connection each
        self._registering: dict[str, asyncio.Future[None]] = {}
        self.connected = asyncio.Event()
        self._throttle = Throttle(ERROR_LOG_INTERVAL_S)


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
        if not self._clean:
            return  # the first heartbeat cleans up after a previous run, then registers it
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.names.topic(topic), self.node_id, str(int(self._clock())))
                pipe.sadd(self.names.node_topics(self.node_id), topic)
                await pipe.execute()
            self._registered.add(topic)
        except REDIS_ERRORS as exc:
            self.metrics.inc("chainpush_redis_errors_total")
            held = self._throttle.ready("register")
            if held is not None:
                logger.warning("registering topic %s failed (%s: %s); the next heartbeat retries "
                               "it; %d similar lines held back", client_text(topic),
                               type(exc).__name__, client_text(exc), held)

    async def heartbeat(self) -> None:
        """Refresh this node's liveness (O(1) commands) and write what changed in its topics.

        The first one removes the entries a previous run under this node id left (a crash
        leaves them); a heartbeat that finds the node absent from the live set (Redis lost its
        data) writes every topic again."""
        now = self._clock()
        ttl = int(self.node_ttl_s) + 1
        if not self._clean:
            await self._cleanup()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.names.nodes(), {self.node_id: now + self.node_ttl_s})
            # nodes gone for a day (SIGKILLed, never restarted under their id) leave the set
            pipe.zremrangebyscore(self.names.nodes(), "-inf", now - NODE_FORGET_S)
            pipe.set(self.names.node(self.node_id), self.public_url, ex=ttl)
            joined, _, _ = await pipe.execute()
        wanted = set(self._topics())
        add, remove = registry_changes(wanted, self._registered, rejoined=bool(joined))
        if add or remove:
            stamp = str(int(now))
            async with self._redis.pipeline(transaction=False) as pipe:
                for topic in add:
                    pipe.hset(self.names.topic(topic), self.node_id, stamp)
                for topic in remove:
                    pipe.hdel(self.names.topic(topic), self.node_id)
                if add:
                    pipe.sadd(self.names.node_topics(self.node_id), *add)
                if remove:
                    pipe.srem(self.names.node_topics(self.node_id), *remove)
                await pipe.execute()
        self._registered = (self._registered | add) - remove

    async def _cleanup(self) -> None:
        """Remove the topic entries a previous run under this node id registered."""
        key = self.names.node_topics(self.node_id)
        members = await self._redis.smembers(key)
        leftover = {str(m) for m in members}
        async with self._redis.pipeline(transaction=False) as pipe:
            for topic in leftover:
                pipe.hdel(self.names.topic(topic), self.node_id)
            pipe.delete(key)
            await pipe.execute()
        if leftover:
            logger.info("node %s: removed %d topic entries left by its previous run",
                        self.node_id, len(leftover))
        self._clean = True

    async def unregister(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.names.nodes(), self.node_id)
            pipe.delete(self.names.node(self.node_id))
            for topic in self._registered:
                pipe.hdel(self.names.topic(topic), self.node_id)
            pipe.delete(self.names.node_topics(self.node_id))
            await pipe.execute()
        self._registered.clear()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except REDIS_ERRORS as exc:
                self.metrics.inc("chainpush_redis_errors_total")
                held = self._throttle.ready("heartbeat")
                if held is not None:
                    logger.warning("heartbeat of node %s failed (%s: %s); retry in %.1f s, tries "
                                   "left: unlimited; %d similar lines held back", self.node_id,
                                   type(exc).__name__, client_text(exc), self.heartbeat_s, held)
            await asyncio.sleep(self.heartbeat_s)

    async def _inbox_loop(self) -> None:
        attempt = 0
        listening = False
        while True:
            try:
                async with Inbox(self._redis_url, self.names.inbox(self.node_id),
                                 timeout_s=self._timeout_s,
                                 health_check_s=self.heartbeat_s) as inbox:
                    try:
                        await self.heartbeat()
                    except redis.exceptions.ResponseError as exc:
                        # Redis answered (WRONGTYPE on one key, ...): the inbox itself works;
                        # the heartbeat loop keeps retrying the registry
                        self.metrics.inc("chainpush_redis_errors_total")
                        logger.warning("heartbeat of node %s failed (%s: %s); listening anyway",
                                       self.node_id, type(exc).__name__, client_text(exc))
                    attempt = 0
                    listening = True
                    self.connected.set()
                    logger.info("node %s listening on %s", self.node_id,
                                self.names.inbox(self.node_id))
                    await self._on_resync()
                    while True:
                        # a bounded wait, so the health check runs on an idle inbox too
                        data = await inbox.next(self.heartbeat_s)
                        raise_if_cancelling()
                        if data is not None:
                            self._handle(data)
            except REDIS_ERRORS as exc:
                self.connected.clear()
                self.metrics.inc("chainpush_redis_errors_total")
                if listening:  # a subscription that worked was lost (InboxLost, a drop)
                    listening = False
                    self.metrics.inc("chainpush_inbox_resubscribes_total")
                attempt += 1
                delay = self._retry.delay_s(attempt)
                held = self._throttle.ready("inbox")
                if held is not None:
                    logger.warning("inbox of node %s lost (%s: %s); resubscribing in %.2f s, "
                                   "tries left: unlimited; %d similar lines held back",
                                   self.node_id, type(exc).__name__, client_text(exc), delay, held)
                await asyncio.sleep(delay)

    def _handle(self, data: str | bytes) -> None:
        try:
            sent_at, messages = decode_inbox(data)
        except (ValueError, KeyError, TypeError) as exc:
            self.metrics.inc("chainpush_inbox_bad_total")
            logger.warning("node %s: unreadable inbox payload (%s)", self.node_id, exc)
            return
        self._on_messages(sent_at, messages)
