"""Collect on the real MongoDB-protocol server: idempotent, gap-free offsets, survives restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pymongo
import pytest

from chainpush import procs
from chainpush.constants import EVENTS, MESSAGES, STREAMS
from chainpush.push.collect import Collector
from chainpush.push.retry import RetryPolicy
from tests.integration.push_support import ALICE, BOB, RecordingDispatch, make_record

pytestmark = pytest.mark.integration

FAST = RetryPolicy(first_delay_s=0.05, max_delay_s=0.5)


def rows(uri: str, db: str, topic: str) -> list[tuple[int, str]]:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(uri)
    try:
        found = client[db][MESSAGES].find({"topic": topic}).sort("offset", 1)
        return [(int(str(r["offset"])), str(r["msg_id"])) for r in found]
    finally:
        client.close()


def count_events(uri: str, db: str) -> int:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(uri)
    try:
        return len(list(client[db][EVENTS].find({})))
    finally:
        client.close()


async def test_topics_offsets_and_replay_is_a_noop(mongo_uri: str, mongo_db_name: str) -> None:
    dispatch = RecordingDispatch()
    batch = [make_record(n) for n in range(5)]
    batch.append(make_record(5, kind="state"))
    batch.append(make_record(0, status="confirmed"))
    async with Collector(
        mongo_uri=mongo_uri, database=mongo_db_name, dispatch=dispatch, retry=FAST
    ) as collector:
        await collector.accept(batch)
        first = [(m.topic, m.offset, m.msg_id) for m in dispatch.published]
        dispatch.published.clear()
        await collector.accept(batch)  # the watcher replaying from its checkpoint
        again = [(m.topic, m.offset, m.msg_id) for m in dispatch.published]
    assert again == first  # re-dispatched with the same offsets, never new ones
    contract = rows(mongo_uri, mongo_db_name, "contract:DemoToken")
    assert [o for o, _ in contract] == list(range(1, 7))
    assert contract[-1][1].endswith("/confirmed")
    assert [o for o, _ in rows(mongo_uri, mongo_db_name, f"user:{ALICE}")] == list(range(1, 7))
    assert [o for o, _ in rows(mongo_uri, mongo_db_name, f"user:{BOB}")] == list(range(1, 7))
    assert rows(mongo_uri, mongo_db_name, "state:DemoToken") == [(1, batch[5]["id"] + "/pending")]
    assert count_events(mongo_uri, mongo_db_name) == 7


async def test_nested_address_args_and_no_dispatch(mongo_uri: str, mongo_db_name: str) -> None:
    record = make_record(1)
    record["args"] = {"orders": [{"maker": ALICE, "amounts": ["1", "2"]}], "note": "0x" + "ab" * 20}
    async with Collector(mongo_uri=mongo_uri, database=mongo_db_name, retry=FAST) as collector:
        await collector.accept([record])
    assert rows(mongo_uri, mongo_db_name, f"user:{ALICE}") == [(1, record["id"] + "/pending")]
    # lower-case hex is bytes20 per the seam, not an address
    assert rows(mongo_uri, mongo_db_name, "user:0x" + "ab" * 20) == []


async def test_offsets_gap_free_under_concurrent_writers(
    mongo_uri: str, mongo_db_name: str
) -> None:
    async with (
        Collector(mongo_uri=mongo_uri, database=mongo_db_name, retry=FAST) as one,
        Collector(mongo_uri=mongo_uri, database=mongo_db_name, retry=FAST) as two,
    ):
        batches = [[make_record(100 * k + n) for n in range(8)] for k in range(6)]
        # two collectors (as two processes would) plus a replay of one batch, all at once
        await asyncio.gather(
            *(c.accept(b) for c, b in zip([one, two] * 3, batches, strict=True)),
            two.accept(batches[0]),
        )
    got = rows(mongo_uri, mongo_db_name, "contract:DemoToken")
    assert [o for o, _ in got] == list(range(1, 49))
    assert len({m for _, m in got}) == 48


async def test_mongo_restart_mid_stream_loses_nothing(tmp_path: Path, unit: float) -> None:
    port = procs.free_port()
    server = procs.start_mongo(port=port, state_dir=tmp_path)
    dispatch = RecordingDispatch()
    total = 60
    try:
        async with Collector(
            mongo_uri=server.url, database="cp_restart", dispatch=dispatch, retry=FAST
        ) as collector:

            async def feed() -> None:
                for k in range(0, total, 3):
                    await collector.accept([make_record(n) for n in range(k, k + 3)])

            task = asyncio.create_task(feed())
            async with asyncio.timeout(20 * unit):
                await dispatch.wait_for(30)
            server.kill()
            stalled_at = len(dispatch.published)
            await asyncio.sleep(unit)  # Mongo is down: accept must hold, not drop
            assert len(dispatch.published) - stalled_at <= 3 * 3  # at most the in-flight record
            assert not task.done()
            server = procs.start_mongo(port=port, state_dir=tmp_path)
            async with asyncio.timeout(30 * unit):
                await task
        got = rows(server.url, "cp_restart", "contract:DemoToken")
        assert [o for o, _ in got] == list(range(1, total + 1))
        assert [m for _, m in got] == [f"{make_record(n)['id']}/pending" for n in range(total)]
        # every dispatched message is the stored one: nothing unstored went out
        stored = dict((m, o) for o, m in got)
        for message in dispatch.published:
            if message.topic == "contract:DemoToken":
                assert stored[message.msg_id] == message.offset
    finally:
        server.stop()


async def test_heads_of_many_topics_come_from_streams_and_stay_right(
    mongo_uri: str, mongo_db_name: str
) -> None:
    """``heads()`` (reconcile, webhooks) reads ``streams`` in one query; a head behind its rows
    (a crash before collect wrote it) or a row without one is read from ``messages``."""
    async with Collector(mongo_uri=mongo_uri, database=mongo_db_name, retry=FAST) as collector:
        for n in range(6):
            await collector.accept([make_record(n, to=BOB if n % 2 else ALICE)])
        store = collector.store
        topics = ["contract:DemoToken", f"user:{ALICE}", f"user:{BOB}", "contract:Nothing"]
        one_by_one = {t: await store.head(t) for t in topics}
        assert one_by_one["contract:DemoToken"][0] == 6
        assert one_by_one["contract:Nothing"] == (0, None)
        assert await store.heads(topics) == one_by_one
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo_uri)
        try:
            streams = client[mongo_db_name][STREAMS]
            assert streams.find_one({"_id": "contract:DemoToken"})["head"] == 6  # type: ignore[index]
            streams.update_one({"_id": f"user:{BOB}"}, {"$unset": {"head": ""}})
        finally:
            client.close()
        assert await store.heads(topics) == one_by_one
        assert await store.max_offsets(topics[:1]) == {"contract:DemoToken": 6}
        # a replay writes the heads again (idempotent $max, never backwards)
        await collector.accept([make_record(n, to=BOB if n % 2 else ALICE) for n in range(6)])
        assert await store.heads(topics) == one_by_one
