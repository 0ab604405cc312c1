"""Which topics have a live subscriber: the watcher's read of the push nodes' Redis registry.

Wallet activity (``[watch] wallet_activity``) and transaction lifecycles (``tx:<hash>``) are
followed only for what someone is listening to. The watcher does not know subscribers; the
registry does (docs/seams.md §4): ``<ns>:topic:<topic>`` is a hash node_id → time, written when a
node gets the topic's first subscriber and removed when its last one leaves, and ``<ns>:nodes``
says which nodes are alive. :class:`Interest` reads both and answers the topics under one prefix
(``user:``, ``tx:``) with at least one live node, as their suffixes.

Cost per read: one ``SCAN`` walk of the matching keys (every master on a Redis Cluster), one
pipelined ``HKEYS`` per page of keys, one ``ZRANGEBYSCORE`` — O(matching topics), every
``poll_interval_s`` of the watcher. It is an input to the stepper (sans-I/O, like a header):
the decisions stay in pure code, and a Redis that is away keeps the last answer (the caller
decides; :meth:`Interest.topics` raises ``redis.exceptions.RedisError``).
"""

from __future__ import annotations

import time

from chainpush.constants import RedisNames
from chainpush.push.redisio import Client, open_client
from chainpush.resource import AsyncResource

#: keys asked per SCAN call and per HKEYS pipeline.
PAGE = 500


class Interest(AsyncResource):
    """``async with Interest(url, RedisNames(ns)) as interest: await interest.topics("tx:")``."""

    def __init__(self, redis_url: str, names: RedisNames, *, timeout_s: float = 2.0) -> None:
        self.names = names
        self._redis: Client = open_client(redis_url, timeout_s=timeout_s)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def topics(self, prefix: str) -> set[str]:
        """The suffixes of the topics ``<prefix><suffix>`` that a live push node serves.

        ``prefix`` is a topic prefix such as ``"user:"`` or ``"tx:"`` (docs/seams.md §3)."""
        key_prefix = self.names.topic(prefix)
        live = set(await self._redis.zrangebyscore(self.names.nodes(), time.time(), "+inf"))
        if not live:
            return set()
        keys = [key async for key in self._redis.scan_iter(match=_glob(key_prefix) + "*",
                                                            count=PAGE)]
        found: set[str] = set()
        for start in range(0, len(keys), PAGE):
            page = keys[start:start + PAGE]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in page:
                    pipe.hkeys(key)
                holders = await pipe.execute()
            for key, nodes in zip(page, holders, strict=True):
                if live.intersection(nodes):
                    found.add(key[len(key_prefix):])
        return found


def _glob(text: str) -> str:
    """``text`` with the glob characters of ``SCAN MATCH`` escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
