"""Issue 9 on real parts (anvil, nx-27017, the Watcher with a Mongo sink): a restart after
downtime across a reorg, a checkpoint write failing after the sink accepted, the logsBloom
check and the ``finalized`` tag against what anvil really serves."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.bloom import LogBloom
from chainpush.watcher.checkpoint import CheckpointError, MongoCheckpoints
from chainpush.watcher.config import load_config
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

WINDOW = 8


def replacement(token: str, text: str) -> list[Any]:
    data = ws.calldata("sendMessage(address,string,bytes)", ["address", "string", "bytes"],
                       [ws.ACCOUNTS[2], text, b""])
    return [{"from": ws.OWNER, "to": token, "data": data, "gas": hex(300_000)}, 0]


async def run_until_caught_up(w: Watcher, url: str, unit: float) -> None:
    task = asyncio.create_task(w.run())
    try:
        await ws.until_caught_up(lambda: w.tip_hash, url, 20 * unit, task.done)
        if task.done():
            task.result()
    finally:
        await w.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_restart_after_downtime_across_a_reorg_retracts_the_orphaned_tip(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    """Stopped at 10a; the node reorgs to 10b and mines more than the window; on restart the
    10a records are removed (never confirmed) and 10b's are stored."""
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    await asyncio.to_thread(ws.mine_traffic, url, token, blocks=3, txs_per_block=2)
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token}], reorg_window=WINDOW,
        finality_depth=4,
    ))
    async with MongoSink(mongo_uri, mongo_db_name) as sink:
        async with Watcher(config, sink) as first:
            await run_until_caught_up(first, url, unit)
        tip = await asyncio.to_thread(ws.rpc, url, "eth_getBlockByNumber", ["latest", False])
        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        orphan_ids = {d["id"] for d in docs if d["block_hash"] == tip["hash"]}
        assert len(orphan_ids) == 2
        assert {d["status"] for d in docs if d["id"] in orphan_ids} == {"pending"}

        # while the watcher is down: its tip is replaced, then more than the window is mined
        await asyncio.to_thread(ws.rpc, url, "anvil_reorg",
                                [1, [replacement(token, "after the downtime")]])
        await asyncio.to_thread(ws.rpc, url, "anvil_mine", [hex(WINDOW + 4)])

        async with Watcher(config, sink) as second:
            await run_until_caught_up(second, url, unit)
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    statuses = {(d["id"], d["status"]) for d in docs if d["id"] in orphan_ids}
    assert statuses == {(i, s) for i in orphan_ids for s in ("pending", "removed")}
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)},
                                   finality_depth=config.watch.finality_depth)
    want.check(ws.live_ids(docs))
    assert any(d["args"].get("text") == "after the downtime" and d["status"] == "confirmed"
               for d in docs)


class FailingSaveOnce(MongoCheckpoints):
    """Fails the first checkpoint write of block ``at`` after the sink accepted its batch, and
    makes the node reorg that block away meanwhile (``during``)."""

    at: int | None = None
    during: Any = None
    failed = 0

    async def save(self, key: str, state: dict[str, Any], *, fence: int | None = None
                   ) -> None:
        if self.at is not None and state["block_number"] == self.at and not self.failed:
            self.failed += 1
            await asyncio.to_thread(self.during)
            raise CheckpointError(f"writing checkpoint {key} failed: injected")
        await super().save(key, state, fence=fence)


async def test_checkpoint_failure_after_accept_is_completed_then_retracted(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    """The sink accepted block 11a's records, the checkpoint write failed, the node reorged
    during the backoff: the retry reloads the checkpoint, completes the proposal, and so
    retracts 11a's records."""
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    n = await asyncio.to_thread(ws.mine_traffic, url, token, blocks=3, txs_per_block=2)
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token}], reorg_window=WINDOW,
        finality_depth=4,
    ))
    checkpoints = FailingSaveOnce(mongo_uri, mongo_db_name)
    orphan: dict[str, Any] = {}

    def reorg() -> None:
        orphan.update(ws.rpc(url, "eth_getBlockByNumber", ["latest", False]))
        ws.rpc(url, "anvil_reorg", [1, [replacement(token, "during the backoff")]])

    async with MongoSink(mongo_uri, mongo_db_name) as sink:
        async with Watcher(config, sink, checkpoints=checkpoints) as w:
            task = asyncio.create_task(w.run())
            try:
                top = await asyncio.to_thread(ws.head, url)
                await ws.await_for(lambda: w.tip == top, 20 * unit, "the watcher")
                checkpoints.at, checkpoints.during = top + 1, reorg
                await asyncio.to_thread(ws.mine_traffic, url, token, blocks=1, txs_per_block=3,
                                        first=n)
                await ws.await_for(lambda: checkpoints.failed > 0, 20 * unit, "the failure")
                await ws.until_caught_up(lambda: w.tip_hash, url, 20 * unit, task.done)
                if task.done():
                    task.result()
            finally:
                await w.aclose()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await checkpoints.aclose()
    assert w.stats.retries >= 1
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    orphan_ids = {d["id"] for d in docs if d["block_hash"] == orphan["hash"]}
    assert len(orphan_ids) == 3
    statuses = {(d["id"], d["status"]) for d in docs if d["id"] in orphan_ids}
    assert statuses == {(i, s) for i in orphan_ids for s in ("pending", "removed")}
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)},
                                   finality_depth=config.watch.finality_depth)
    want.check(ws.live_ids(docs))
    assert any(d["args"].get("text") == "during the backoff" for d in docs)


def test_anvil_logs_bloom_and_finalized_tag(anvil: Anvil) -> None:
    """What the watcher relies on, as anvil serves it: a block's ``logsBloom`` holds the
    address and topic0 of its logs and proves a block without them empty; the ``finalized``
    tag is answered (``null`` until the chain is long enough, then a block below the head)."""
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    other, _ = ws.deploy(url, "DemoToken")
    ws.mine_traffic(url, token, blocks=1, txs_per_block=2)
    block = ws.rpc(url, "eth_getBlockByNumber", ["latest", False])
    logs = ws.rpc(url, "eth_getLogs", [{"blockHash": block["hash"]}])
    topic0s = sorted({lg["topics"][0] for lg in logs})
    assert LogBloom([token], topic0s).may_match(block["logsBloom"])
    assert not LogBloom([other], None).may_match(block["logsBloom"])
    ws.rpc(url, "anvil_mine", ["0x1"])
    empty = ws.rpc(url, "eth_getBlockByNumber", ["latest", False])
    assert not LogBloom([token], None).may_match(empty["logsBloom"])
    receipts = ws.rpc(url, "eth_getBlockReceipts", [block["hash"]])
    assert sum(len(r["logs"]) for r in receipts) == len(logs)

    finalized = ws.rpc(url, "eth_getBlockByNumber", ["finalized", False])
    head = ws.head(url)
    assert finalized is None or int(finalized["number"], 16) <= head
    ws.rpc(url, "anvil_mine", [hex(80)])
    finalized = ws.rpc(url, "eth_getBlockByNumber", ["finalized", False])
    assert finalized is not None
    assert int(finalized["number"], 16) < ws.head(url)


async def test_finality_by_the_finalized_tag_on_anvil(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    """``finality = "tag"``: a K=0 record 10 blocks deep (past ``finality_depth`` = 4) stays
    ``pending`` until anvil's ``finalized`` block (head - 64) reaches it."""
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    await asyncio.to_thread(ws.rpc, url, "anvil_mine", [hex(70)])  # anvil has the tag now
    await asyncio.to_thread(ws.mine_traffic, url, token, blocks=2, txs_per_block=2)
    events_at = await asyncio.to_thread(ws.head, url)
    await asyncio.to_thread(ws.rpc, url, "anvil_mine", [hex(10)])
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token}], reorg_window=80,
        finality_depth=4, finality="tag",
    ))
    assert config.watch.finality == "tag"

    def statuses() -> set[str]:
        return {d["status"] for d in ws.stored_docs(mongo_uri, mongo_db_name)
                if d["block_number"] == events_at}

    async with MongoSink(mongo_uri, mongo_db_name) as sink:
        async with Watcher(config, sink) as w:
            await run_until_caught_up(w, url, unit)
        assert await asyncio.to_thread(statuses) == {"pending"}  # 10 deep, not finalized
        await asyncio.to_thread(ws.rpc, url, "anvil_mine", [hex(60)])
        finalized = await asyncio.to_thread(ws.rpc, url, "eth_getBlockByNumber",
                                            ["finalized", False])
        assert int(finalized["number"], 16) >= events_at
        async with Watcher(config, sink) as w:
            await run_until_caught_up(w, url, unit)
    assert await asyncio.to_thread(statuses) == {"pending", "confirmed"}
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    assert len({d["id"] for d in docs if d["block_number"] == events_at}) == 2
