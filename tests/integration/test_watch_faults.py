"""Faults the watcher must ride out: range-limited / rate-limited providers, dropped
subscriptions (websocket and IPC), a dead first endpoint; and a wrong address refused at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from pathlib import Path

import pytest

from chainpush.watcher.config import load_config
from chainpush.watcher.errors import ConfigError
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration


async def run_until_caught_up(
    watcher: Watcher, task: asyncio.Task[None], url: str, unit: float
) -> None:
    await ws.until_caught_up(lambda: watcher.tip_hash, url, 30 * unit, task.done)
    if task.done():
        task.result()


async def stop(watcher: Watcher, task: asyncio.Task[None]) -> None:
    await watcher.aclose()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_range_limits_and_429_still_backfill_everything(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    n = await asyncio.to_thread(ws.mine_traffic, url, token, blocks=80, txs_per_block=2)
    async with ws.RefusingProxy(url, max_span=5, rate_every=7, strip_timestamps=True) as proxy:
        config = load_config(ws.write_config(
            tmp_path / "w.toml", urls=[proxy.url], mongo_uri=mongo_uri, database=mongo_db_name,
            contracts=[{"name": "DemoToken", "address": token}], reorg_window=8, max_range=50,
        ))
        async with MongoSink(mongo_uri, mongo_db_name) as sink, Watcher(config, sink) as w:
            task = asyncio.create_task(w.run())
            await run_until_caught_up(w, task, url, unit)
            await asyncio.to_thread(ws.mine_traffic, url, token, blocks=30, txs_per_block=2,
                                    first=n)
            await run_until_caught_up(w, task, url, unit)
            await stop(w, task)
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)},
                                   finality_depth=config.watch.finality_depth)
    assert len(want.required) > 200
    want.check({d["_id"] for d in docs})
    assert proxy.refused_ranges > 0 and proxy.rate_limited > 0
    assert max(proxy.served_spans) <= 5
    # logs came without blockTimestamp: the watcher took it from the block headers
    for d in docs[::25]:
        block = await asyncio.to_thread(ws.rpc, url, "eth_getBlockByHash", [d["block_hash"], False])
        assert d["block_timestamp"] == int(block["timestamp"], 16)


@pytest.mark.parametrize("transport", ["ws", "ipc"])
async def test_dropped_subscription_leaves_no_gap(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
    transport: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chainpush.watcher")
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    n = await asyncio.to_thread(ws.mine_traffic, url, token, blocks=5, txs_per_block=2)
    listen = f"/tmp/cp-drop-{uuid.uuid4().hex[:8]}.ipc"
    proxy = (ws.DroppingProxy(upstream_port=anvil.port) if transport == "ws"
             else ws.DroppingProxy(upstream_path=str(anvil.ipc_path), listen_path=listen))
    endpoint = f"ws://127.0.0.1:{proxy.port}" if transport == "ws" else listen
    try:
        async with proxy:
            config = load_config(ws.write_config(
                tmp_path / "w.toml", urls=[endpoint], mongo_uri=mongo_uri,
                database=mongo_db_name, contracts=[{"name": "DemoToken", "address": token}],
                reorg_window=8,
            ))
            async with MongoSink(mongo_uri, mongo_db_name) as sink, Watcher(config, sink) as w:
                task = asyncio.create_task(w.run())
                await run_until_caught_up(w, task, url, unit)
                for _ in range(3):
                    before = w.tip or 0
                    traffic = threading.Thread(
                        target=ws.mine_traffic, args=(url, token),
                        kwargs={"blocks": 30, "txs_per_block": 2, "first": n})
                    traffic.start()
                    n += 60
                    # cut the connection while blocks arrive, once the watcher has seen some
                    await ws.await_for(lambda b=before: (w.tip or 0) > b, 10 * unit,
                                       "the watcher to follow new blocks")
                    proxy.drop()
                    await asyncio.to_thread(traffic.join)
                    await run_until_caught_up(w, task, url, unit)
                # blocks after the last drop: only a new connection can see them
                await asyncio.to_thread(ws.mine_traffic, url, token, blocks=3, txs_per_block=2,
                                        first=n)
                await run_until_caught_up(w, task, url, unit)
                await stop(w, task)
    finally:
        await asyncio.to_thread(Path(listen).unlink, missing_ok=True)
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)},
                                   finality_depth=config.watch.finality_depth)
    want.check({d["_id"] for d in docs})
    assert proxy.connections >= 4
    assert caplog.text.count("subscribed to newHeads") >= 4
    assert w.stats.retries >= 3


async def test_failover_past_a_dead_endpoint(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    await asyncio.to_thread(ws.mine_traffic, url, token, blocks=8, txs_per_block=3)
    dead = f"http://127.0.0.1:{ws.procs.free_port()}"
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[dead, url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token, "events": ["Transfer", "Message"]}],
        reorg_window=8,
    ))
    async with MongoSink(mongo_uri, mongo_db_name) as sink, Watcher(config, sink) as w:
        task = asyncio.create_task(w.run())
        await run_until_caught_up(w, task, url, unit)
        await stop(w, task)
    assert w.stats.retries >= 1
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    # events named in the config travel as an eth_getLogs topics filter
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)}, None,
                                   ["Transfer", "Message"],
                                   finality_depth=config.watch.finality_depth)
    want.check({d["_id"] for d in docs})
    assert {d["event"] for d in docs} == {"Transfer", "Message"}
    assert w.decode_stats is not None and w.decode_stats.filtered == 0


async def test_address_without_code_is_a_config_error(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path
) -> None:
    path = ws.write_config(
        tmp_path / "w.toml", urls=[anvil.http_url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "Ghost", "abi": "DemoToken", "address": "0x" + "12" * 20}],
    )
    async with MongoSink(mongo_uri, mongo_db_name) as sink, Watcher(load_config(path), sink) as w:
        with pytest.raises(ConfigError, match=r"w\.toml: \[\[contracts\]\] Ghost\.address .*no "
                                              r"contract code"):
            await w.run()
