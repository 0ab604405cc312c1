"""The seam watcher → collect: the watcher's records, through reorgs, are accepted by
``push.collect.Collector`` (which validates every record) and land in gap-free topics."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.config import load_config
from chainpush.watcher.service import Watcher
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration


def collections(mongo_uri: str, db: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        return list(client[db]["events"].find({})), list(client[db]["messages"].find({}))
    finally:
        client.close()


async def test_records_flow_into_collect_through_a_reorg(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    from chainpush.push import collect as push_collect

    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    calldemo, _ = ws.deploy(url, "CallDemo")
    n = await asyncio.to_thread(ws.mine_traffic, url, token, blocks=12, txs_per_block=3)
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[anvil.ws_url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token},
                   {"name": "CallDemo", "address": calldemo, "state": [{"function": "get"}]}],
        reorg_window=8,
    ))
    async with push_collect.Collector(mongo_uri=mongo_uri, database=mongo_db_name) as collector:
        async with Watcher(config, collector) as watcher:
            task = asyncio.create_task(watcher.run())
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 20 * unit, task.done)
            await asyncio.to_thread(ws.mine_traffic, url, token, blocks=4, txs_per_block=2,
                                    first=n)
            await asyncio.to_thread(ws.rpc, url, "eth_sendTransaction", [{
                "from": ws.OWNER, "to": calldemo,
                "data": ws.calldata("set(uint256)", ["uint256"], [77])}])
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 20 * unit, task.done)
            await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [2, []])
            await asyncio.to_thread(ws.rpc, url, "anvil_mine", ["0x1"])
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 20 * unit, task.done)
            if task.done():
                task.result()
            await watcher.aclose()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    events, messages = await asyncio.to_thread(collections, mongo_uri, mongo_db_name)
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)},
                                   finality_depth=config.watch.finality_depth)
    want.check(ws.live_ids(events))
    assert any(d["status"] == "removed" for d in events)
    # every stored message is in its topics, offsets 1..n without gaps, one row per message
    by_topic: dict[str, list[int]] = {}
    for m in messages:
        by_topic.setdefault(m["topic"], []).append(m["offset"])
    assert {"contract:DemoToken", "state:CallDemo"} <= set(by_topic)
    assert any(t.startswith("user:0x") for t in by_topic)
    for topic, offsets in by_topic.items():
        assert sorted(offsets) == list(range(1, len(offsets) + 1)), topic
    contract_rows = {m["msg_id"] for m in messages if m["topic"] == "contract:DemoToken"}
    assert contract_rows == {d["_id"] for d in events if d["contract"] == "DemoToken"}
