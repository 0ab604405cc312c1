"""A crash between ``sink.accept`` and the checkpoint, then a reorg while the watcher is down:
the interrupted step is completed on restart, so its records are retracted like any other."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.checkpoint import MongoCheckpoints
from chainpush.watcher.config import load_config
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration


class Crash(RuntimeError):
    """Stands for the process dying (not an error the watcher retries)."""


class CrashBeforeSave(MongoCheckpoints):
    armed = False

    async def save(self, key: str, state: dict[str, Any], *, fence: int | None = None
                   ) -> None:
        if self.armed:
            raise Crash("killed after accept, before the checkpoint")
        await super().save(key, state, fence=fence)


async def test_step_interrupted_after_accept_is_completed_then_retracted(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    n = await asyncio.to_thread(ws.mine_traffic, url, token, blocks=3, txs_per_block=2)
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token}], reorg_window=8,
    ))
    crashing = CrashBeforeSave(mongo_uri, mongo_db_name)
    async with MongoSink(mongo_uri, mongo_db_name) as sink:
        async with Watcher(config, sink, checkpoints=crashing) as first:
            task = asyncio.create_task(first.run())
            top = await asyncio.to_thread(ws.head, url)
            await ws.await_for(lambda: first.tip == top, 20 * unit, "the first watcher")
            crashing.armed = True
            await asyncio.to_thread(ws.mine_traffic, url, token, blocks=1, txs_per_block=3,
                                    first=n)
            with pytest.raises(Crash):
                await asyncio.wait_for(task, 20 * unit)
        await crashing.aclose()
        doc = await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name)
        assert doc is not None and doc["proposed"] is not None
        assert doc["block_number"] == top and doc["proposed"]["block_number"] == top + 1
        orphan_ids = {r["id"] for r in doc["proposed"]["batch"]}
        assert len(orphan_ids) == 3

        # while the watcher is down, the block whose records were accepted is replaced
        data = ws.calldata("sendMessage(address,string,bytes)", ["address", "string", "bytes"],
                           [ws.ACCOUNTS[2], "after the crash", b""])
        await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [1, [[
            {"from": ws.OWNER, "to": token, "data": data, "gas": hex(300_000)}, 0]]])
        await asyncio.to_thread(ws.rpc, url, "anvil_mine", ["0x2"])

        async with Watcher(config, sink) as second:
            task = asyncio.create_task(second.run())
            await ws.until_caught_up(lambda: second.tip_hash, url, 20 * unit, task.done)
            if task.done():
                task.result()
            await second.aclose()
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)},
                                   finality_depth=config.watch.finality_depth)
    want.check(ws.live_ids(docs))
    removed = {d["id"] for d in docs if d["status"] == "removed"}
    assert removed == orphan_ids
    assert any(d["args"].get("text") == "after the crash" for d in docs
               if d["_id"] in want.required)
