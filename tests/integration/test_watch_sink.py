"""MongoSink: records stored under their message id; a re-delivered batch is a no-op."""

from __future__ import annotations

import asyncio

import pytest

from chainpush.watcher.record import EventRecord
from chainpush.watcher.sink import MongoSink
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration


def record(i: int, status: str = "pending") -> dict[str, object]:
    rec = EventRecord(
        chain_id=31337, contract="DemoToken", address="0x" + "11" * 20, event="Transfer",
        args={"value": str(2**70 + i)}, block_number=i, block_hash=f"0x{i:064x}",
        block_timestamp=1_700_000_000 + i, tx_hash=f"0x{i:064x}", log_index=i,
    ).with_status(status)  # type: ignore[arg-type]
    return dict(rec.to_dict())


async def test_redelivery_is_idempotent(mongo_uri: str, mongo_db_name: str) -> None:
    batch = [record(i) for i in range(50)]
    async with MongoSink(mongo_uri, mongo_db_name) as sink:
        await sink.accept(batch)
        await sink.accept([*batch[10:30], record(60), record(3, "removed")])
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    assert len(docs) == 52
    by_id = {d["_id"]: d for d in docs}
    assert by_id[f"31337:0x{5:064x}:5/pending"]["args"] == {"value": str(2**70 + 5)}
    assert ws.live_ids(docs) == {f"31337:0x{i:064x}:{i}/pending" for i in (*range(50), 60)} - {
        f"31337:0x{3:064x}:3/pending"}
