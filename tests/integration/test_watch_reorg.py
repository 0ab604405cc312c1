"""Reorgs made with ``anvil_reorg``: orphaned records retracted, replacements stored (K=0, K=2)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.config import load_config
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

K = 2
FINALITY = 6  # above every reorg depth here (1-5): no Fast record is confirmed, then removed
WINDOW = 16


def replacement(token: str, i: int) -> dict[str, Any]:
    data = ws.calldata("sendMessage(address,string,bytes)", ["address", "string", "bytes"],
                       [ws.ACCOUNTS[1], f"replacement {i}", b"r"])
    return {"from": ws.OWNER, "to": token, "data": data, "gas": hex(300_000)}


async def test_reorgs_of_depth_1_to_5_in_both_confirmation_modes(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    url = anvil.http_url
    fast, _ = ws.deploy(url, "DemoToken")
    slow, _ = ws.deploy(url, "DemoToken")
    calldemo, _ = ws.deploy(url, "CallDemo")
    contracts = {"Fast": (fast, 0), "Slow": (slow, K)}
    n = await asyncio.to_thread(ws.mine_traffic, url, [fast, slow], blocks=10, txs_per_block=2)
    config = load_config(ws.write_config(
        tmp_path / "watch.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[
            {"name": "Fast", "abi": "DemoToken", "address": fast},
            {"name": "Slow", "abi": "DemoToken", "address": slow, "confirmations": K},
            {"name": "CallDemo", "address": calldemo, "state": [{"function": "get"}]},
        ],
        name="reorgs", reorg_window=WINDOW, finality_depth=FINALITY,
    ))
    # nothing is mined until the watcher has caught up: it backfills up to head - WINDOW and
    # follows every later block live (so a final Fast event there has its pending too)
    live_from = await asyncio.to_thread(ws.head, url) - WINDOW + 1

    async with MongoSink(mongo_uri, mongo_db_name) as sink, Watcher(config, sink) as watcher:
        task = asyncio.create_task(watcher.run())

        async def caught_up() -> None:
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 20 * unit, task.done)
            if task.done():
                task.result()

        await caught_up()
        for depth in (1, 2, 3, 5, 4):
            # events (and a state change) in the blocks the reorg will orphan
            n = await asyncio.to_thread(ws.mine_traffic, url, [fast, slow], blocks=6,
                                        txs_per_block=2, first=n)
            await asyncio.to_thread(ws.rpc, url, "eth_sendTransaction", [{
                "from": ws.OWNER, "to": calldemo,
                "data": ws.calldata("set(uint256)", ["uint256"], [1000 + depth])}])
            await caught_up()
            pairs = [[replacement(fast, depth), 0], [replacement(slow, depth), depth - 1]]
            await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [depth, pairs])
            await caught_up()
            await asyncio.to_thread(ws.rpc, url, "anvil_mine", [hex(K + 1)])
            await caught_up()
        await watcher.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    want = await asyncio.to_thread(ws.canonical_ids, url, contracts, finality_depth=FINALITY,
                                   live_from=live_from)
    want.check(ws.live_ids(docs))
    assert any(d["contract"] == "Fast" and d["status"] == "confirmed" for d in docs)
    removed = [d for d in docs if d["status"] == "removed"]
    # Fast (K=0): a record retracted before it was final never gets confirmed
    stored = {x["_id"] for x in docs}
    for d in removed:
        if d["contract"] == "Fast":
            assert f"{d['id']}/pending" in stored and f"{d['id']}/confirmed" not in stored
    assert watcher.stats.reorgs == 5
    assert {d["contract"] for d in removed} >= {"Fast", "Slow", "CallDemo"}
    # Slow (K=2) only retracts what was confirmed, i.e. orphaned blocks more than 2 deep
    for d in removed:
        if d["contract"] == "Slow":
            assert f"{d['id']}/confirmed" in {x["_id"] for x in docs}
    # every replacement event is stored and live
    texts = {(d["contract"], d["args"]["text"]) for d in docs
             if d["event"] == "Message" and d["_id"] in want.required}
    assert {(c, f"replacement {i}") for c in ("Fast", "Slow") for i in (1, 2, 3, 4, 5)} <= texts
    # the last live state record of CallDemo.get() is the chain's value now (the set() of the
    # last round was orphaned by its reorg: the value went back)
    states = [d for d in docs if d["kind"] == "state"]
    live_states = ws.live_ids(docs, kind="state")
    last = max((d for d in states if d["_id"] in live_states), key=lambda d: d["block_number"])
    value = int(await asyncio.to_thread(
        ws.rpc, url, "eth_call", [{"to": calldemo, "data": ws.selector("get()")}, "latest"]), 16)
    assert last["args"]["value"] == str(value)
