#!/usr/bin/env python3
"""Backfill speed: the watcher's backfill vs a plain web3 ``get_logs`` + ``process_log`` loop.

    .venv/bin/python bench/bench_backfill.py [--blocks 500 --txs-per-block 20 --max-range 2000]

Starts a fresh anvil, deploys DemoToken, mines the traffic, then in the same run times:

* **web3 loop**: ``w3.eth.get_logs`` over ``max_range`` chunks, ``process_log`` on every log;
* **chainpush (null sink)**: ``Watcher.run()`` from block 1 until its checkpoint reaches the head,
  records handed to a sink that drops them, checkpoints in memory: the pipeline alone;
* **chainpush (MongoDB)**: the same into nx-27017 (``MongoSink`` + Mongo checkpoints): end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chainpush import procs  # noqa: E402
from tests.integration import watch_support as ws  # noqa: E402


class NullSink:
    def __init__(self) -> None:
        self.records = 0

    async def accept(self, batch: Sequence[dict[str, object]]) -> None:
        self.records += len(batch)


def web3_loop(url: str, token: str, top: int, max_range: int) -> tuple[int, float]:
    import json

    from web3 import Web3

    abi = json.loads((ROOT / "abi" / "DemoToken.json").read_text())["abi"]
    w3 = Web3(Web3.HTTPProvider(url))
    contract = w3.eth.contract(address=Web3.to_checksum_address(token), abi=abi)
    by_topic = {}
    for ev in contract.all_events():
        by_topic[ev.topic] = ev
    n = 0
    t0 = time.perf_counter()
    start = 1
    while start <= top:
        end = min(top, start + max_range - 1)
        flt = {"fromBlock": start, "toBlock": end, "address": contract.address}
        for log in w3.eth.get_logs(flt):  # type: ignore[arg-type]
            by_topic[log["topics"][0].to_0x_hex()].process_log(log)
            n += 1
        start = end + 1
    return n, time.perf_counter() - t0


async def watcher_run(
    url: str, token: str, top: int, max_range: int, mongo: str | None
) -> tuple[int, float]:
    from chainpush.watcher.checkpoint import MemoryCheckpoints
    from chainpush.watcher.config import load_config
    from chainpush.watcher.service import Watcher
    from chainpush.watcher.sink import MongoSink

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(ws.write_config(
            Path(tmp) / "bench.toml", urls=[url], mongo_uri=mongo or "mongodb://127.0.0.1:1/",
            database=f"bench_{time.time_ns()}", contracts=[{"name": "DemoToken", "address": token}],
            reorg_window=2, max_range=max_range, progress_interval_s=60,
        ))
    sink: Any = MongoSink(config.stores.mongo_uri, config.stores.database) if mongo else NullSink()
    checkpoints = None if mongo else MemoryCheckpoints()
    t0 = time.perf_counter()
    async with Watcher(config, sink, checkpoints=checkpoints) as watcher:
        task = asyncio.create_task(watcher.run())
        while (watcher.tip or 0) < top - 2:
            if task.done():
                task.result()
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        await watcher.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if mongo:
        await sink.aclose()
    return watcher.stats.records, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--txs-per-block", type=int, default=20)
    parser.add_argument("--max-range", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        anvil = procs.start_anvil(port=procs.free_port(), state_dir=Path(tmp) / "a")
        mongo = procs.start_mongo(port=procs.free_port(), state_dir=Path(tmp) / "m")
        try:
            token, _ = ws.deploy(anvil.url, "DemoToken")
            ws.mine_traffic(anvil.url, token, blocks=args.blocks, txs_per_block=args.txs_per_block)
            top = ws.head(anvil.url)
            results = {
                "web3 get_logs loop": web3_loop(anvil.url, token, top, args.max_range),
                "chainpush (null sink)": asyncio.run(
                    watcher_run(anvil.url, token, top, args.max_range, None)),
                "chainpush (MongoDB)": asyncio.run(
                    watcher_run(anvil.url, token, top, args.max_range, mongo.url)),
            }
        finally:
            anvil.stop()
            mongo.stop()
    base = results["web3 get_logs loop"]
    print(f"{top} blocks, max_range {args.max_range}")
    for name, (n, secs) in results.items():
        rate = n / secs
        print(f"{name:>22}: {n:>6} logs in {secs:6.2f} s = {rate:>9,.0f} logs/s "
              f"({rate / (base[0] / base[1]):.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
