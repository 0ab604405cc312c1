"""Collect → dispatch (Redis) → two push nodes → websocket clients, on real servers."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.push_support import (
    ALICE,
    Client,
    collector_for,
    make_record,
    push_node,
    stores,
    token,
)

pytestmark = pytest.mark.integration
TOPIC = "contract:DemoToken"


async def test_events_reach_clients_on_two_nodes(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit) as n1,
        push_node(cfg, "n2", unit) as n2,
        Client.connect(n1.url, token("alice")) as a1,
        Client.connect(n1.url, token("alice")) as a2,  # a second tab of the same user
        Client.connect(n2.url, token("bob", wallets=(ALICE,))) as b,
    ):
        for client in (a1, a2, b):
            assert (await client.subscribe(TOPIC, since=0))["type"] == "subscribed"
        assert (await b.subscribe(f"user:{ALICE}", since=0))["type"] == "subscribed"
        await collector.accept([make_record(n) for n in range(10)])
        # a confirmation, and a reorg's retraction: delivered like any message
        await collector.accept([make_record(3, status="confirmed"),
                                make_record(5, status="removed")])
        async with asyncio.timeout(10 * unit):
            for client in (a1, a2, b):
                got = await client.until(12, TOPIC)
                assert [m["offset"] for m in got] == list(range(1, 13))
                assert got[-2]["id"] == make_record(3)["id"] + "/confirmed"
                assert got[-2]["record"]["status"] == "confirmed"
                assert got[-1]["id"] == make_record(5)["id"] + "/removed"
                assert got[-1]["record"] == make_record(5, status="removed")
            await b.until(12, f"user:{ALICE}")
        assert b.offsets(f"user:{ALICE}") == list(range(1, 13))
        # one copy per node and batch (collect publishes a stored batch at once), however many
        # users and tabs are behind it
        assert collector.dispatch.metrics.counters["chainpush_dispatch_publishes_total"] == 4


async def test_collector_with_its_own_dispatcher(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    from chainpush.push.collect import Collector

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        Collector(mongo_uri=mongo_uri, database=mongo_db_name, redis_url=redis_url,
                  namespace=cfg.namespace) as collector,
        push_node(cfg, "n1", unit, reconcile_s=600) as n1,  # no reconcile: dispatch only
        Client.connect(n1.url, token()) as client,
    ):
        await client.subscribe(TOPIC)
        await collector.accept([make_record(n) for n in range(3)])
        async with asyncio.timeout(10 * unit):
            assert [m["offset"] for m in await client.until(3)] == [1, 2, 3]


async def test_live_frames_with_compression_on(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    # live frames are written pre-encoded only without extensions; with permessage-deflate the
    # node hands them to websockets.broadcast, which compresses per connection
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit, compression=True) as n1,
        Client.connect(n1.url, token()) as deflated,
        Client.connect(n1.url, token(), compression=None) as plain,
    ):
        assert deflated.ws.protocol.extensions and not plain.ws.protocol.extensions
        for client in (deflated, plain):
            await client.subscribe(TOPIC)
        await collector.accept([make_record(n) for n in range(5)])
        async with asyncio.timeout(10 * unit):
            for client in (deflated, plain):
                got = await client.until(5, TOPIC)
                assert [m["offset"] for m in got] == [1, 2, 3, 4, 5]
                assert got[0]["record"] == make_record(0)


async def test_reconnect_with_since_gets_exactly_the_missed(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with collector_for(cfg) as collector, push_node(cfg, "n1", unit) as n1:
        async with Client.connect(n1.url, token()) as first:
            await first.subscribe(TOPIC)  # live only
            await collector.accept([make_record(n) for n in range(5)])
            async with asyncio.timeout(10 * unit):
                await first.until(5)
        last = first.messages[-1]["offset"]
        await collector.accept([make_record(n) for n in range(5, 12)])  # while disconnected
        async with Client.connect(n1.url, token()) as again:
            reply = await again.subscribe(TOPIC, since=last)
            assert reply["since"] == 5 and reply["head"] == 12
            await collector.accept([make_record(n) for n in range(12, 15)])
            async with asyncio.timeout(10 * unit):
                got = await again.until(10)
        assert [m["offset"] for m in got] == list(range(6, 16))
        assert len({m["id"] for m in got + first.messages}) == 15


async def test_history_to_live_switch_under_load_has_no_gap_dup_or_reorder(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    total = 150
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit, history_page=7) as n1,
    ):
        await collector.accept([make_record(n) for n in range(40)])

        async def feed() -> None:
            for k in range(40, total, 5):
                await collector.accept([make_record(n) for n in range(k, k + 5)])

        feeding = asyncio.create_task(feed())
        async with Client.connect(n1.url, token()) as client:
            # subscribe while collect is writing: history from MongoDB, then live
            await client.subscribe(TOPIC, since=3, filter={"event": "Transfer"})
            async with asyncio.timeout(30 * unit):
                got = await client.until(total - 3)
                await feeding
        assert [m["offset"] for m in got] == list(range(4, total + 1))


async def test_registry_entries_follow_connections_and_subscriptions(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    import time

    import redis.asyncio as aioredis

    from chainpush.constants import RedisNames

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    names = RedisNames(cfg.namespace)
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with push_node(cfg, "n1", unit) as n1:
            async with Client.connect(n1.url, token("carol")) as c:
                await c.subscribe(TOPIC)
                topic_entry = await r.hgetall(names.topic(TOPIC))  # registered at subscribe
                assert list(topic_entry) == ["n1"]
                assert float(topic_entry["n1"]) <= time.time()  # when it was registered
                await n1.link.heartbeat()
                assert await r.zscore(names.nodes(), "n1") > time.time()  # live
                assert await r.get(names.node("n1")) == n1.url
                assert 0 < await r.ttl(names.node("n1")) <= 4
                await c.ws.send(json.dumps({"type": "unsubscribe", "topic": TOPIC}))
                assert (await c.next_frame())["type"] == "unsubscribed"
                await n1.link.heartbeat()  # the subscription is gone: so is the topic entry
                assert await r.hgetall(names.topic(TOPIC)) == {}
        assert await r.get(names.node("n1")) is None  # a clean stop leaves the registry
        assert await r.zscore(names.nodes(), "n1") is None
    finally:
        await r.aclose()
