"""Factory-created contracts on anvil (issue 13.2): ``DemoFactory`` creates ``DemoPair``
children; the watcher backfills the children created before it started (their constructor's
``Sync`` in the creation block included), follows new ones live, and when ``anvil_reorg``
orphans a creation block, retracts that child's records and stops watching it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.abi import find_abi, load_abi
from chainpush.watcher.config import load_config
from chainpush.watcher.decode import checksum
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

WINDOW = 8
CREATED = load_abi(find_abi(ws.ABI_DIR, "DemoFactory")).event("PairCreated").topic0
TOKEN_A, TOKEN_B = ws.ACCOUNTS[2], ws.ACCOUNTS[3]


def create_pair(url: str, factory: str) -> tuple[str, int]:
    """``factory.createPair`` in a block of its own: (the pair's address, the block)."""
    data = ws.calldata("createPair(address,address)", ["address", "address"], [TOKEN_A, TOKEN_B])
    tx = ws.rpc(url, "eth_sendTransaction", [{"from": ws.OWNER, "to": factory, "data": data,
                                              "gas": hex(3_000_000)}])
    got = ws.receipt(url, tx)
    log = next(lg for lg in got["logs"] if lg["topics"][0] == CREATED)
    return checksum("0x" + log["data"][2 + 24:2 + 64]), int(got["blockNumber"], 16)


def swap(url: str, pair: str, amount: int) -> int:
    data = ws.calldata("swap(uint112,address)", ["uint112", "address"], [amount, ws.ACCOUNTS[1]])
    tx = ws.rpc(url, "eth_sendTransaction", [{"from": ws.OWNER, "to": pair, "data": data,
                                              "gas": hex(200_000)}])
    return int(ws.receipt(url, tx)["blockNumber"], 16)


def of(docs: list[dict[str, Any]], pair: str) -> list[tuple[int, str, str]]:
    return sorted((d["block_number"], d["event"], d["status"]) for d in docs
                  if d["contract"] == "Pair" and d["address"] == pair)


@pytest.mark.parametrize("max_addresses", [None, 0], ids=["address-filter", "topic-only"])
async def test_children_in_backfill_live_and_an_orphaned_creation_block(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
    max_addresses: int | None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """topic-only: as with more children than an ``address`` filter takes (0 here), children's
    logs come from topic-only requests, filtered by the watcher."""
    if max_addresses is not None:
        monkeypatch.setattr("chainpush.watcher.stepper.MAX_FILTER_ADDRESSES", max_addresses)
    url = anvil.http_url
    factory, _ = ws.deploy(url, "DemoFactory")
    early, early_block = await asyncio.to_thread(create_pair, url, factory)
    early_swap = await asyncio.to_thread(swap, url, early, 10)
    await asyncio.to_thread(ws.rpc, url, "anvil_mine", [hex(2 * WINDOW)])  # backfilled
    config = load_config(ws.write_config(
        tmp_path / "watch.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[
            {"name": "Factory", "abi": "DemoFactory", "address": factory},
            {"name": "Pair", "abi": "DemoPair",
             "factory": {"contract": "Factory", "event": "PairCreated", "arg": "pair"}},
        ],
        name="factory", reorg_window=WINDOW, finality_depth=4,
    ))

    async with MongoSink(mongo_uri, mongo_db_name) as sink, Watcher(config, sink) as watcher:
        task = asyncio.create_task(watcher.run())

        async def caught_up() -> None:
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 20 * unit, task.done)
            if task.done():
                task.result()

        await caught_up()
        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        # backfill: the constructor's Sync of the creation block, then the swap's two logs
        assert of(docs, early) == [(early_block, "Sync", "confirmed"),
                                   (early_swap, "Swap", "confirmed"),
                                   (early_swap, "Sync", "confirmed")]

        live, live_block = await asyncio.to_thread(create_pair, url, factory)
        live_swap = await asyncio.to_thread(swap, url, live, 20)
        await caught_up()
        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        assert of(docs, live) == [(live_block, "Sync", "pending"),
                                  (live_swap, "Swap", "pending"), (live_swap, "Sync", "pending")]

        doomed, doomed_block = await asyncio.to_thread(create_pair, url, factory)
        doomed_swap = await asyncio.to_thread(swap, url, doomed, 30)
        await caught_up()
        cp = await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name)
        assert cp is not None and doomed in [c[1] for c in cp["children"]["window"]]
        # orphan the creation block and the swap's; the new blocks create nothing
        await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [2, []])
        await caught_up()
        after = await asyncio.to_thread(swap, url, live, 40)  # the other children go on
        await caught_up()
        await watcher.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    assert of(docs, doomed) == sorted([
        (doomed_block, "Sync", "pending"), (doomed_block, "Sync", "removed"),
        (doomed_swap, "Swap", "pending"), (doomed_swap, "Swap", "removed"),
        (doomed_swap, "Sync", "pending"), (doomed_swap, "Sync", "removed")])
    assert (after, "Swap", "pending") in of(docs, live)
    cp = await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name)
    assert cp is not None
    known = [c[1] for c in cp["children"]["window"]] + cp["children"]["final"].get("Pair", [])
    assert sorted(known) == sorted([early, live])  # the orphaned child is not watched any more
    assert all(d["address"] == checksum(factory) or d["contract"] == "Pair" for d in docs)
