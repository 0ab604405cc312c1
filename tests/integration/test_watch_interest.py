"""The watcher's read of the registry (watcher/interest.py) against a real Redis, with entries
written by real push-node links (push/dispatch.py NodeLink)."""

from __future__ import annotations

import asyncio
import time

import redis

from chainpush.constants import RedisNames
from chainpush.push.dispatch import NodeLink
from chainpush.watcher.interest import Interest

WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TX = "0x" + "ab" * 32


async def _noop_messages(_: object) -> None:
    return None


async def _noop() -> None:
    return None


def _link(redis_url: str, names: RedisNames, node_id: str, topics: list[str]) -> NodeLink:
    return NodeLink(redis_url, node_id=node_id, public_url=f"ws://127.0.0.1:1/{node_id}",
                    names=names, topics=lambda: list(topics), on_messages=_noop_messages,
                    on_resync=_noop)


def test_interest_answers_topics_with_a_live_node_only(redis_url: str) -> None:
    names = RedisNames("cpint")

    async def main() -> None:
        served = [f"user:{WALLET}", f"tx:{TX}", "contract:DemoToken", "user:we*ird?[x]"]
        async with _link(redis_url, names, "n1", served) as link, \
                Interest(redis_url, names) as interest:
            await link.heartbeat()
            assert await interest.topics("user:") == {WALLET, "we*ird?[x]"}
            assert await interest.topics("tx:") == {TX}
            assert await interest.topics("state:") == set()
            # a node that died (its liveness score has passed) counts for nothing
            client = redis.Redis.from_url(redis_url)
            client.zadd(names.nodes(), {"n1": time.time() - 1})
            client.close()
            assert await interest.topics("user:") == set()
            # another namespace's registry is not ours
            async with Interest(redis_url, RedisNames("other")) as other:
                assert await other.topics("user:") == set()

    asyncio.run(main())
