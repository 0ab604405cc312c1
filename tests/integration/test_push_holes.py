"""Readers of ``messages`` and holes (docs/seams.md §2): offset 4 missing, 5 stored. Pending
(reserved in ``streams``): nobody delivers 5 before 4 — a push node's history and its live
path, a subscribe "from now", the store's range read. Lost (not reserved): passed over."""

from __future__ import annotations

import asyncio
from typing import Any

import pymongo
import pytest

from chainpush.constants import MESSAGES, STREAMS
from chainpush.push.store import MessageStore
from tests.integration.push_support import FAST, Client, make_record, push_node, stores, token

pytestmark = pytest.mark.integration
TOPIC = "contract:DemoToken"
EPOCH = "00000000000000e1"


def row(offset: int) -> dict[str, Any]:
    record = make_record(offset)
    msg_id = f"{record['id']}/pending"
    return {"_id": f"{TOPIC}\n{msg_id}", "topic": TOPIC, "offset": offset, "msg_id": msg_id,
            "epoch": EPOCH, "record": record}


def write(uri: str, db: str, rows: list[dict[str, Any]], stream: dict[str, Any]) -> None:
    with pymongo.MongoClient(uri) as client:
        if rows:
            client[db][MESSAGES].insert_many(rows)
        client[db][STREAMS].update_one({"_id": TOPIC}, stream, upsert=True)


@pytest.mark.parametrize("kind", ["pending", "lost"])
async def test_readers_wait_at_a_pending_hole_and_pass_a_lost_one(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, kind: str
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    reserved = {"r": {"o4": {"m": row(4)["msg_id"], "at": 1.0}}, "open": 1} \
        if kind == "pending" else {}
    write(mongo_uri, mongo_db_name, [row(n) for n in (1, 2, 3, 5)],
          {"$set": {"epoch": EPOCH, "next": 5, "head": 5, **reserved}})
    async with MessageStore(mongo_uri, mongo_db_name, retry=FAST) as store:
        offsets = [m.offset for m in await store.read_range(TOPIC, 1)]
        head = (await store.head(TOPIC))[0]
    async with push_node(cfg, "h1", unit) as node, asyncio.timeout(30 * unit), \
            Client.connect(node.url, token()) as history, \
            Client.connect(node.url, token()) as live:
        await history.subscribe(TOPIC, since=0)
        answer = await live.subscribe(TOPIC)
        if kind == "lost":
            assert offsets == [1, 2, 3, 5] and head == 5
            assert [m["offset"] for m in await history.until(4)] == [1, 2, 3, 5]
            assert answer["since"] == 5
            return
        assert offsets == [1, 2, 3] and head == 3
        assert answer["since"] == 3  # "from now" starts below the hole
        assert [m["offset"] for m in await history.until(3)] == [1, 2, 3]
        await node.reconcile()  # head 5 > 3: a repair runs, and stops at the hole again
        await asyncio.sleep(0.3 * unit)
        assert history.offsets(TOPIC) == [1, 2, 3] and live.offsets(TOPIC) == []
        # the writer (or the repair) stores 4 and clears its reservation: both get 4, then 5
        write(mongo_uri, mongo_db_name, [row(4)],
              {"$unset": {"r.o4": ""}, "$inc": {"open": -1}})
        await node.reconcile()
        await history.until(5)
        await live.until(2)
        assert history.offsets(TOPIC) == [1, 2, 3, 4, 5]
        assert live.offsets(TOPIC) == [4, 5]
