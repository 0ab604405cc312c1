"""Stream epochs on real parts (docs/protocol.md §5, docs/seams.md §2): a client resuming with a
position from before the store was wiped or restored is reset and gets every message of the new
stream, instead of being clamped to the head and dropping them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from chainpush.constants import MESSAGES, STREAMS
from chainpush.push.collect import Collector
from chainpush.push.config import StoresConfig
from tests.integration.push_support import (
    ALICE,
    BOB,
    FAST,
    Client,
    ResilientClient,
    collector_for,
    make_record,
    push_node,
    stores,
    token,
)

pytestmark = pytest.mark.integration
TOPIC = "contract:DemoToken"


async def _mongo(cfg: StoresConfig, action: str, **kw: Any) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(cfg.mongo_uri)
    try:
        db = client[cfg.database]
        if action == "wipe":
            return await client.drop_database(cfg.database)
        if action == "delete_above":  # a restore from an older backup of the same stream
            return await db[MESSAGES].delete_many({"topic": TOPIC,
                                                   "offset": {"$gt": kw["offset"]}})
        if action == "streams":
            return [row async for row in db[STREAMS].find({})]
        if action == "epochs":
            return {row.get("epoch") async for row in db[MESSAGES].find({"topic": TOPIC})}
        raise AssertionError(action)
    finally:
        await client.close()


async def _fill(cfg: StoresConfig, numbers: range, *, dispatch: bool = True) -> None:
    # a fresh collector each time: after a wipe, the watcher (and its collect) restarts
    if not dispatch:  # stored only: push nodes find the messages by their reconcile
        async with Collector(mongo_uri=cfg.mongo_uri, database=cfg.database,
                             retry=FAST) as collector:
            await collector.accept([make_record(n) for n in numbers])
        return
    async with collector_for(cfg) as collector:
        await collector.accept([make_record(n) for n in numbers])


async def test_resilient_client_gets_every_message_after_a_wipe(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with push_node(cfg, "e1", unit) as node, asyncio.timeout(30 * unit):
        await _fill(cfg, range(6))
        client = ResilientClient([node.url], token(), TOPIC, retry_s=0.1 * unit)
        task = asyncio.create_task(client.run())
        await client.wait_for(6)
        old_epoch = client.epoch
        assert old_epoch is not None
        task.cancel()  # the client goes away (a closed laptop) ...
        with pytest.raises(asyncio.CancelledError):
            await task
        await _mongo(cfg, "wipe")  # ... the store is wiped, the watcher refills it
        await _fill(cfg, range(100, 109))
        task = asyncio.create_task(client.run())  # and the client resumes at (6, old epoch)
        try:
            await client.wait_for(9)
            # before epochs: clamped to since=6 of the new stream, offsets 1..6 never shown
            assert client.offsets == [*range(1, 7), *range(1, 10)]
            assert client.ids[6:] == [make_record(n)["id"] + "/pending" for n in range(100, 109)]
            assert client.resets == 1
            assert client.epoch not in (None, old_epoch)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_stale_positions_are_reset_and_current_ones_resume(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with push_node(cfg, "e2", unit) as node, asyncio.timeout(30 * unit):
        await _fill(cfg, range(6))
        (first,) = {row["epoch"] for row in await _mongo(cfg, "streams") if row["_id"] == TOPIC}
        assert await _mongo(cfg, "epochs") == {first}
        async with Client.connect(node.url, token()) as c:
            answer = await c.subscribe(TOPIC, since=4, epoch=first)
            assert (answer["since"], answer["head"], answer["epoch"], answer["reset"]) == \
                (4, 6, first, False)
            got = await c.until(2)
            assert [(m["offset"], m["epoch"]) for m in got] == [(5, first), (6, first)]

        # restored from an older backup of the same stream: since 6 is above the head (2)
        await _mongo(cfg, "delete_above", offset=2)
        async with Client.connect(node.url, token()) as c:
            answer = await c.subscribe(TOPIC, since=6, epoch=first)
            assert (answer["since"], answer["head"], answer["epoch"], answer["reset"]) == \
                (0, 2, first, True)
            assert [m["offset"] for m in await c.until(2)] == [1, 2]

        # wiped, then refilled with fewer messages than the client had seen
        await _mongo(cfg, "wipe")
        async with Client.connect(node.url, token()) as c:
            answer = await c.subscribe(TOPIC, since=6, epoch=first)
            # nothing stored yet: no epoch, and the old position cannot be in this stream
            assert (answer["since"], answer["head"], answer["epoch"], answer["reset"]) == \
                (0, 0, None, True)
            await _fill(cfg, range(200, 203))
            got = await c.until(3)
            second = got[0]["epoch"]
            assert second not in (None, first)
            assert [(m["offset"], m["epoch"]) for m in got] == [(1, second), (2, second),
                                                                 (3, second)]
        async with Client.connect(node.url, token()) as c:
            # the new stream grew past the old position: only the epoch tells them apart
            await _fill(cfg, range(203, 210))
            answer = await c.subscribe(TOPIC, since=6, epoch=first)
            assert (answer["since"], answer["head"], answer["epoch"], answer["reset"]) == \
                (0, 10, second, True)
            assert [m["offset"] for m in await c.until(10)] == list(range(1, 11))
            # an old client that sends no epoch keeps the old behaviour
            answer = await c.subscribe(TOPIC, since=8)
            assert (answer["since"], answer["reset"]) == (8, False)


async def test_one_epoch_per_stream_between_concurrent_collectors(
    mongo_uri: str, redis_url: str, mongo_db_name: str
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    collectors = [Collector(mongo_uri=cfg.mongo_uri, database=cfg.database, retry=FAST)
                  for _ in range(3)]
    for c in collectors:
        await c.__aenter__()
    try:
        await asyncio.gather(*(c.accept([make_record(10 * i + n) for n in range(3)])
                               for i, c in enumerate(collectors)))
    finally:
        for c in collectors:
            await c.aclose()
    streams = await _mongo(cfg, "streams")
    assert sorted(row["_id"] for row in streams) == sorted([TOPIC, f"user:{ALICE}",
                                                            f"user:{BOB}"])
    (epoch,) = {row["epoch"] for row in streams if row["_id"] == TOPIC}
    assert len(epoch) == 16 and int(epoch, 16) >= 0
    assert await _mongo(cfg, "epochs") == {epoch}


@pytest.mark.parametrize("found_by", ["live", "reconcile"])
async def test_a_live_subscription_follows_the_new_stream(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, found_by: str
) -> None:
    """Connected through the wipe: the node sees the new epoch on the first live message (or
    in its reconcile, when dispatch did not tell it) and sends the new stream from offset 1
    (before: offsets 1..6 of the new stream were taken for duplicates and never sent)."""
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    live = found_by == "live"
    async with (
        push_node(cfg, "e3", unit, reconcile_s=600 if live else 0.5 * unit) as node,
        Client.connect(node.url, token()) as c,
        asyncio.timeout(30 * unit),
    ):
        assert (await c.subscribe(TOPIC, since=0))["epoch"] is None  # nothing stored yet
        # reconcile only: the subscription learns its epoch from the rows it reads (it once
        # learnt it only from live messages, and missed the new stream when pub/sub lost them)
        await _fill(cfg, range(6), dispatch=live)
        first = (await c.until(6))[0]["epoch"]
        await _mongo(cfg, "wipe")
        await _fill(cfg, range(100, 104), dispatch=live)
        got = (await c.until(10))[6:]
        assert [m["offset"] for m in got] == [1, 2, 3, 4]
        assert [m["id"] for m in got] == [make_record(n)["id"] + "/pending"
                                          for n in range(100, 104)]
        second = got[0]["epoch"]
        assert second not in (None, first)
        assert all(m["epoch"] == second for m in got)
        await _fill(cfg, range(104, 106), dispatch=live)  # and on from there
        assert [m["offset"] for m in (await c.until(12))[10:]] == [5, 6]
