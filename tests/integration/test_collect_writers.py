"""Several collectors on shared topics, and a collector killed between reservation and rows
(docs/seams.md §2, Offsets and holes), on the real MongoDB-protocol server, with a real push node
and websocket client where delivery is what is checked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymongo
import pytest

from chainpush.constants import MESSAGES, STREAMS, RedisNames
from chainpush.push.collect import Collector
from chainpush.push.dispatch import Dispatcher
from chainpush.push.records import topics_of
from chainpush.push.store import MessageStore
from tests.integration.collect_worker import records
from tests.integration.push_support import (
    FAST,
    Client,
    RecordingDispatch,
    collector_for,
    push_node,
    stores,
    token,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOPIC = "contract:DemoToken"


def worker(mongo_uri: str, db: str, first: int, count: int, *extra: str
           ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.collect_worker", "--mongo", mongo_uri,
         "--db", db, "--first", str(first), "--records", str(count), *extra],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def table(mongo_uri: str, db: str) -> dict[str, list[tuple[int, str]]]:
    """topic → [(offset, msg_id)] in offset order, every row of the database."""
    with pymongo.MongoClient(mongo_uri) as client:
        out: dict[str, list[tuple[int, str]]] = {}
        for row in client[db][MESSAGES].find({}).sort([("topic", 1), ("offset", 1)]):
            out.setdefault(str(row["topic"]), []).append((int(row["offset"]), str(row["msg_id"])))
        return out


def open_reservations(mongo_uri: str, db: str, topic: str) -> dict[str, Any]:
    """``streams.r`` of ``topic``; checks that the ``open`` counter agrees with it."""
    with pymongo.MongoClient(mongo_uri) as client:
        doc = client[db][STREAMS].find_one({"_id": topic}) or {}
        reserved = dict(doc.get("r") or {})
        assert doc.get("open", 0) == len(reserved), doc
        return reserved


def assert_gap_free(got: dict[str, list[tuple[int, str]]], batch: list[dict[str, Any]]) -> None:
    expected: dict[str, set[str]] = {}
    for record in batch:
        for topic in topics_of(record):
            expected.setdefault(topic, set()).add(f"{record['id']}/pending")
    assert set(got) == set(expected)
    for topic, rows in got.items():
        assert [o for o, _ in rows] == list(range(1, len(rows) + 1)), topic
        ids = [m for _, m in rows]
        assert len(ids) == len(set(ids)) and set(ids) == expected[topic], topic


async def test_two_collector_processes_on_shared_topics_are_gap_free(
    mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    """Two processes write records that all share ``contract:DemoToken`` and four ``user:``
    topics, started together: every topic's offsets are 1..n, each message once per topic."""
    count = 300
    procs = [worker(mongo_uri, mongo_db_name, first, count, "--wait", "--batch", "10")
             for first in (0, 100_000)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, _ = await asyncio.to_thread(p.communicate, timeout=120 * unit)
            assert p.returncode == 0 and json.loads(out)["records"] == count
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    got = table(mongo_uri, mongo_db_name)
    assert_gap_free(got, records(0, count, 4) + records(100_000, count, 4))
    assert len(got[TOPIC]) == 2 * count
    assert open_reservations(mongo_uri, mongo_db_name, TOPIC) == {}


async def _killed_mid_batch(mongo_uri: str, db: str) -> list[dict[str, Any]]:
    """A worker writes batch 1 (records 0..9) and is SIGKILLed in batch 2 (10..19) between
    its reservations and its rows; returns batch 2."""
    p = worker(mongo_uri, db, 0, 20, "--batch", "10", "--kill-before-rows", "2")
    _, _ = await asyncio.to_thread(p.communicate, timeout=60)
    assert p.returncode == -9
    assert len(open_reservations(mongo_uri, db, TOPIC)) == 10  # offsets 11..20 reserved
    assert [o for o, _ in table(mongo_uri, db)[TOPIC]] == list(range(1, 11))
    return records(10, 10, 4)


@pytest.mark.parametrize("filled_by", ["replay", "repair"])
async def test_a_collector_killed_between_reservation_and_rows_leaves_a_hole_that_is_filled(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, filled_by: str
) -> None:
    """The hole (offsets 11..20 reserved, rows missing) with 21.. stored by another writer:
    no reader passes it — a push node's websocket client gets 1..10 and waits — until the
    watcher's replay (same batch again) or the repair (from ``events``) fills it; the client
    then gets every offset, in order, once."""
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    lost_batch = await _killed_mid_batch(mongo_uri, mongo_db_name)
    async with push_node(cfg, "w1", unit) as node, asyncio.timeout(60 * unit):
        async with collector_for(cfg) as other:
            # another writer goes on past the hole (its repair is far off: 5 s)
            await other.accept(records(50, 5, 4))
        # every reader of messages stops at 11: history, a subscribe from now, the store
        store = MessageStore(mongo_uri, mongo_db_name, retry=FAST)
        async with store:
            assert [m.offset for m in await store.read_range(TOPIC, 1)] == list(range(1, 11))
            assert await store.read_range(TOPIC, 11) == []
            assert (await store.head(TOPIC))[0] == 10
        async with Client.connect(node.url, token()) as history, \
                Client.connect(node.url, token()) as live:
            await history.subscribe(TOPIC, since=0)
            answer = await live.subscribe(TOPIC)  # "from now": starts below the hole
            assert answer["since"] == 10
            assert [m["offset"] for m in await history.until(10)] == list(range(1, 11))
            await node.reconcile()  # a reconcile sees head 25 and repairs: still nothing past
            await asyncio.sleep(0.5 * unit)
            assert history.offsets(TOPIC) == list(range(1, 11)) and live.offsets(TOPIC) == []
            if filled_by == "replay":
                async with collector_for(cfg) as replay:
                    await replay.accept(lost_batch)  # the watcher replays from its checkpoint
            else:  # nobody replays: a collector's repair fills it from ``events``
                async with Dispatcher(redis_url, names=RedisNames(cfg.namespace)) as dispatch, \
                        Collector(mongo_uri=mongo_uri, database=mongo_db_name, retry=FAST,
                                  dispatch=dispatch, repair_after_s=0.01,
                                  repair_interval_s=None) as repairer:
                    assert await repairer.repair() == sum(len(topics_of(r)) for r in lost_batch)
            await history.until(25)
            await live.until(15)
            assert history.offsets(TOPIC) == list(range(1, 26))
            assert live.offsets(TOPIC) == list(range(11, 26))
    got = table(mongo_uri, mongo_db_name)
    assert_gap_free(got, records(0, 20, 4) + records(50, 5, 4))
    assert [m for o, m in got[TOPIC] if 11 <= o <= 20] == \
        [f"{r['id']}/pending" for r in lost_batch]  # at the offsets reserved before the crash
    assert open_reservations(mongo_uri, mongo_db_name, TOPIC) == {}


async def test_repair_runs_by_itself_in_every_collector(
    mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    """No replay, nobody calls repair(): an idle collector's own loop fills the hole."""
    await _killed_mid_batch(mongo_uri, mongo_db_name)
    dispatch = RecordingDispatch()
    async with Collector(mongo_uri=mongo_uri, database=mongo_db_name, retry=FAST,
                         dispatch=dispatch, repair_after_s=0.2, repair_interval_s=0.1), \
            asyncio.timeout(20 * unit):
        await dispatch.wait_for(30)  # 10 records, 3 topics each: repaired and dispatched
    assert_gap_free(table(mongo_uri, mongo_db_name), records(0, 20, 4))
