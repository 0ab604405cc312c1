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


async def test_the_webhook_deliverer_waits_at_a_pending_hole(
    mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    """The deliverer polls ``streams.head`` (5) and reads 1..5: it sends 1..3, never 5 before
    4, and sends 4 and 5 once 4 is stored."""
    from chainpush.push.config import StoresConfig
    from chainpush.push.webhook_config import WebhookConfig, WebhooksServerConfig, WebhooksSettings
    from chainpush.push.webhook_delivery import Deliverer
    from tests.integration.webhook_support import SECRET, Receiver

    write(mongo_uri, mongo_db_name, [row(n) for n in (1, 2, 3, 5)],
          {"$set": {"epoch": EPOCH, "next": 5, "head": 5, "open": 1,
                    "r": {"o4": {"m": row(4)["msg_id"], "at": 1.0}}}})
    receiver = Receiver()
    await receiver.start()
    hook = WebhookConfig(name="holes", url=receiver.url("holes"), secret=SECRET, topics=(TOPIC,),
                         timeout_s=0.5, first_backoff_s=0.05, max_backoff_s=0.4)
    settings = WebhooksSettings(webhooks=(hook,), server=WebhooksServerConfig(
        poll_interval_s=0.1, discover_interval_s=0.3, port=0))
    try:
        async with Deliverer(settings, StoresConfig(mongo_uri=mongo_uri,
                                                    database=mongo_db_name)) as deliverer:
            task = asyncio.create_task(deliverer.run())
            try:
                await receiver.wait(lambda: receiver.acked("holes").get(TOPIC) == [1, 2, 3],
                                    10 * unit, "1..3")
                await asyncio.sleep(0.5 * unit)  # several polls and refetches at the hole
                assert receiver.acked("holes").get(TOPIC) == [1, 2, 3]
                write(mongo_uri, mongo_db_name, [row(4)],
                      {"$unset": {"r.o4": ""}, "$inc": {"open": -1}})
                await receiver.wait(
                    lambda: receiver.acked("holes").get(TOPIC) == [1, 2, 3, 4, 5],
                    10 * unit, "4 and 5 after the hole is filled")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await receiver.stop()
