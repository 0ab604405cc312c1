"""The Redis registry at scale: a node's heartbeat costs O(1) Redis commands, not O(topics);
dispatch still routes to every node with subscribers, stops routing to dead ones, and a node
restarting under its id removes what its previous run left."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from chainpush.constants import RedisNames
from chainpush.push.dispatch import Dispatcher, NodeLink
from chainpush.push.records import StoredMessage

pytestmark = pytest.mark.integration

TOPICS = [f"user:0x{n:040x}" for n in range(2000)]


async def commands(r: aioredis.Redis) -> int:
    return int((await r.info("stats"))["total_commands_processed"])


class Got(list[StoredMessage]):
    """What a node's inbox received; ``await got.reach(n)`` waits for ``n`` of them."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def add(self, _sent_at: float, messages: list[StoredMessage]) -> None:
        self.extend(messages)
        self.changed.set()

    async def reach(self, count: int) -> None:
        while len(self) < count:
            self.changed.clear()
            await self.changed.wait()


def link(redis_url: str, names: RedisNames, node_id: str, topics: list[str],
         got: Got) -> NodeLink:
    async def resync() -> None:
        return None

    return NodeLink(redis_url, node_id=node_id, public_url=f"ws://{node_id}", names=names,
                    topics=lambda: topics, on_messages=got.add, on_resync=resync,
                    heartbeat_s=0.5, node_ttl_s=1.5)


async def test_heartbeat_is_o1_in_topics_and_routing_still_follows_nodes(
    redis_url: str, unit: float
) -> None:
    names = RedisNames("t" + uuid.uuid4().hex[:8])
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    got1, got2 = Got(), Got()
    n1 = link(redis_url, names, "n1", TOPICS, got1)
    n2 = link(redis_url, names, "n2", TOPICS[:1], got2)
    try:
        await n1.heartbeat()  # the first one writes every topic (and cleans up a previous run)
        await n2.heartbeat()
        assert len(await r.smembers(names.node_topics("n1"))) == len(TOPICS)
        before = await commands(r)
        for _ in range(5):
            await n1.heartbeat()
        per_heartbeat = (await commands(r) - before - 5) / 5  # minus the INFO calls
        assert per_heartbeat <= 6, per_heartbeat  # was 2 per topic: 4,000 with 2,000 topics

        tasks = [asyncio.create_task(n.run()) for n in (n1, n2)]
        async with Dispatcher(redis_url, names=names) as dispatch, asyncio.timeout(20 * unit):
            await n1.connected.wait()
            await n2.connected.wait()
            msg = StoredMessage(TOPICS[0], 1, "m/pending", {"n": 1})
            last = StoredMessage(TOPICS[-1], 1, "z/pending", {"n": 2})
            await dispatch.publish([msg, last])
            await got1.reach(2)
            await got2.reach(1)
            assert [m.msg_id for m in got1] == ["m/pending", "z/pending"]
            assert [m.msg_id for m in got2] == ["m/pending"]
            # n2 dies without unregistering: once its liveness lapses, dispatch stops sending
            # to it (its entry stays behind, ignored)
            tasks[1].cancel()
            await asyncio.gather(tasks[1], return_exceptions=True)
            await asyncio.sleep(1.6)  # node_ttl_s
            await dispatch.publish([StoredMessage(TOPICS[0], 2, "m2/pending", {"n": 3})])
            await got1.reach(3)
            assert [m.msg_id for m in got2] == ["m/pending"]
            assert sorted(await r.hkeys(names.topic(TOPICS[0]))) == ["n1", "n2"]
            # n2 starts again under its id, serving nothing: its previous run's entry goes
            again = link(redis_url, names, "n2", [], got2)
            await again.heartbeat()
            await again.aclose()
            assert await r.hkeys(names.topic(TOPICS[0])) == ["n1"]
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
    finally:
        await n1.aclose()
        await n2.aclose()
        await r.aclose()
