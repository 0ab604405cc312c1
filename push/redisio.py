"""Redis for dispatch: one standalone server or a Redis Cluster, chosen by the URL.

``redis://host:6379/0`` is one server: classic pub/sub for node inboxes. ``redis://host:6379?
cluster=true`` (any one seed node; ``rediss://`` too) is a Redis Cluster: the cluster client
(``redis.asyncio.RedisCluster``, which follows ``MOVED``/``ASK`` and refreshes its slot map) and
**sharded pub/sub** (Redis 7: ``SPUBLISH``/``SSUBSCRIBE``) for inboxes. Classic ``PUBLISH`` on a
cluster is broadcast to every shard, so shards would add no capacity; a sharded channel lives in
the shard of its slot, like a key.

The inbox subscription (:class:`Inbox`) turns every way a subscription can end into
:class:`InboxLost`, so the caller's loop resubscribes and resyncs:

* the connection drops (server restarted, master killed, partition noticed by the health check);
* on a cluster, the channel's slot moves to another master (resharding, failover): Redis then
  sends the subscriber an ``sunsubscribe`` for the channel and delivers nothing more to it —
  without this check the node would hear nothing and fall back to its periodic reconcile while
  ``/healthz`` said all was well.

Only public redis-py API is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from chainpush.flags import InvalidBoolean, parse_bool

Client = aioredis.Redis | RedisCluster


class InboxLost(redis.exceptions.ConnectionError):
    """The inbox subscription ended (connection lost, or its slot moved): resubscribe."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``redis_url``: the URL for redis-py, and whether it names a cluster."""

    url: str
    cluster: bool

    @classmethod
    def parse(cls, redis_url: str) -> RedisTarget:
        """Split off ``cluster=…`` (strict boolean); a cluster URL may not select a database
        other than 0 (a cluster has only database 0). Raises ``ValueError`` naming the URL's
        problem, never echoing a password."""
        parts = urlsplit(redis_url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        rest = [(k, v) for k, v in query if k != "cluster"]
        flags = [v for k, v in query if k == "cluster"]
        try:
            cluster = parse_bool(flags[-1], name="redis_url query parameter cluster") \
                if flags else False
        except InvalidBoolean as exc:
            raise ValueError(str(exc)) from None
        if not cluster:
            return cls(redis_url if not flags else
                       urlunsplit(parts._replace(query=urlencode(rest))), False)
        db = parts.path.strip("/")
        if db not in ("", "0"):
            raise ValueError(f"a Redis Cluster has only database 0; redis_url selects /{db[:10]}")
        return cls(urlunsplit(parts._replace(path="", query=urlencode(rest))), True)


def open_client(redis_url: str, *, timeout_s: float, health_check_s: float = 5.0) -> Client:
    """A client for ``redis_url`` (see the module docstring); nothing is connected yet."""
    target = RedisTarget.parse(redis_url)
    # health checks PING idle connections (the inbox's included) so that a connection that died
    # silently (no RST: a partition) is noticed and replaced, not waited on forever
    options: dict[str, Any] = {
        "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
        "decode_responses": True, "health_check_interval": health_check_s,
    }
    if target.cluster:
        return RedisCluster.from_url(target.url, **options)
    client: aioredis.Redis = aioredis.Redis.from_url(target.url, **options)
    return client


async def publish(client: Client, channel: str, payload: str) -> None:
    """``SPUBLISH`` on a cluster (the channel's shard only), ``PUBLISH`` otherwise."""
    if isinstance(client, RedisCluster):
        await client.spublish(channel, payload)
    else:
        await client.publish(channel, payload)


class Inbox:
    """``async with Inbox(redis_url, channel, …) as inbox: data = await inbox.next(timeout_s)``.

    Each ``Inbox`` opens a client of its own: after a slot moved, a new cluster client reads the
    new slot map before subscribing (the old one's map may still name the previous owner)."""

    def __init__(self, redis_url: str, channel: str, *, timeout_s: float,
                 health_check_s: float) -> None:
        self.channel = channel
        self._client = open_client(redis_url, timeout_s=timeout_s,
                                   health_check_s=health_check_s)
        self._sharded = isinstance(self._client, RedisCluster)
        self._pubsub: Any = None

    async def __aenter__(self) -> Inbox:
        try:
            if isinstance(self._client, RedisCluster):
                await self._client.initialize()  # the slot map, before ClusterPubSub uses it
            self._pubsub = self._client.pubsub()
            if self._sharded:
                await self._pubsub.ssubscribe(self.channel)
            else:
                await self._pubsub.subscribe(self.channel)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._pubsub is not None:
                await self._pubsub.aclose()
        finally:
            await self._client.aclose()

    async def next(self, timeout_s: float) -> str | None:
        """The next payload published to the channel, or None after ``timeout_s`` of silence.
        Raises :class:`InboxLost` when the subscription ended."""
        if self._sharded:
            message = await self._pubsub.get_sharded_message(
                ignore_subscribe_messages=False, timeout=timeout_s)
        else:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=False, timeout=timeout_s)
        if message is None:
            return None
        kind = message.get("type")
        if kind in ("message", "smessage"):
            return str(message["data"])
        if kind in ("unsubscribe", "sunsubscribe"):
            raise InboxLost(f"the subscription to {self.channel} was ended by the server "
                            "(on a cluster: its slot moved to another master)")
        return None  # the confirmation of our own (s)subscribe
