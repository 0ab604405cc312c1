"""A contract added to the config after a checkpoint exists is caught up: its history before the
checkpoint is backfilled on restart (once), also across a crash in the middle of the catch-up;
records caught up in blocks still in the window are retracted by a later reorg like any other;
a contract removed from the config is no longer followed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.checkpoint import MongoCheckpoints
from chainpush.watcher.config import Config, load_config
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

WINDOW = 8
FINALITY = 3


class CountingSink:
    """Hands batches on to ``MongoSink`` and counts each message id handed over."""

    def __init__(self, inner: MongoSink) -> None:
        self.inner = inner
        self.handed: Counter[str] = Counter()

    async def accept(self, batch: Sequence[dict[str, object]]) -> None:
        self.handed.update(f"{r['id']}/{r['status']}" for r in batch)
        await self.inner.accept(batch)


class Crash(RuntimeError):
    """Stands for the process dying (not an error the watcher retries)."""


class CrashDuringCatchUp(MongoCheckpoints):
    """Dies instead of storing catch-up progress ``next_block > after``: the chunk's records
    were accepted, the progress was not (the worst instant: the chunk is handed again)."""

    def __init__(self, mongo_uri: str, database: str, *, after: int) -> None:
        super().__init__(mongo_uri, database)
        self.after = after

    async def save(self, key: str, state: dict[str, Any], *, fence: int | None = None
                   ) -> None:
        catchup = state.get("catchup")
        if catchup is not None and catchup["next_block"] > self.after:
            raise Crash(f"killed before saving catch-up progress {catchup['next_block']}")
        await super().save(key, state, fence=fence)


def config_of(tmp_path: Path, mongo_uri: str, db: str, url: str,
              contracts: dict[str, tuple[str, int]], names: Sequence[str],
              max_range: int = 5) -> Config:
    """A config watching ``names`` of ``contracts`` (name → (address, deployment block)),
    addresses and start blocks from a deployments file, as scripts/deploy.py writes it."""
    deployments = tmp_path / "deployments.json"
    deployments.write_text(json.dumps({"chain_id": 31337, "contracts": {
        n: {"address": a, "block": blk} for n, (a, blk) in contracts.items()}}))
    return load_config(ws.write_config(
        tmp_path / f"{'-'.join(names)}.toml", urls=[url], mongo_uri=mongo_uri, database=db,
        contracts=[{"name": n, "abi": "DemoToken"} for n in names],
        name="catchup", reorg_window=WINDOW, finality_depth=FINALITY, max_range=max_range,
        deployments=str(deployments),
    ))


async def watch_until_caught_up(config: Config, sink: Any, url: str, unit: float,
                                checkpoints: MongoCheckpoints | None = None) -> Watcher:
    async with Watcher(config, sink, checkpoints=checkpoints) as w:
        task = asyncio.create_task(w.run())
        await ws.until_caught_up(lambda: w.tip_hash, url, 30 * unit, task.done)
        if task.done():
            task.result()
        await w.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return w


async def test_contract_added_later_is_backfilled_once_and_reorgs_retract_it(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chainpush.watcher")
    url = anvil.http_url
    a, a_block = ws.deploy(url, "DemoToken")
    b, b_block = ws.deploy(url, "DemoToken")
    # B has events throughout A's history, also in the blocks still in A's window at the stop
    n = await asyncio.to_thread(ws.mine_traffic, url, [a, b], blocks=40, txs_per_block=3)
    deployed = {"A": (a, a_block), "B": (b, b_block)}
    only_a = config_of(tmp_path, mongo_uri, mongo_db_name, url, deployed, ["A"])
    both = config_of(tmp_path, mongo_uri, mongo_db_name, url, deployed, ["A", "B"])
    async with MongoSink(mongo_uri, mongo_db_name) as mongo:
        sink = CountingSink(mongo)
        await watch_until_caught_up(only_a, sink, url, unit)
        tip = (await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name) or {})[
            "block_number"]
        first = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        assert {d["contract"] for d in first} == {"A"}
        # one more block while down, then restart with B added
        n = await asyncio.to_thread(ws.mine_traffic, url, [a, b], blocks=1, txs_per_block=2,
                                    first=n)
        await watch_until_caught_up(both, sink, url, unit)
        assert f"catching up B from block {b_block} to {tip}" in caplog.text
        doc = await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name)
        assert doc is not None and doc["catchup"] is None
        assert [c["name"] for c in doc["contracts"]] == ["A", "B"]

        # every B message was handed exactly once (no repeats without a crash)
        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        b_ids = {d["_id"] for d in docs if d["contract"] == "B"}
        assert len(b_ids) > 40 and all(sink.handed[m] == 1 for m in b_ids)
        ws.canonical_ids(url, {"B": (b, 0)}, finality_depth=FINALITY).check(b_ids)
        # blocks deeper than the window at the checkpoint: confirmed only (backfilled)
        assert all(d["status"] == "confirmed" for d in docs
                   if d["contract"] == "B" and d["block_number"] <= tip - WINDOW)

        # a reorg through the checkpoint's window: B records caught up there are retracted
        caught_up_in_window = {d["id"] for d in docs if d["contract"] == "B"
                               and tip - 2 < d["block_number"] <= tip}
        assert caught_up_in_window
        replace = ws.calldata("sendMessage(address,string,bytes)",
                              ["address", "string", "bytes"], [ws.ACCOUNTS[1], "new B", b""])
        await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [3, [
            [{"from": ws.OWNER, "to": b, "data": replace, "gas": hex(300_000)}, 0]]])
        await asyncio.to_thread(ws.rpc, url, "anvil_mine", ["0x1"])
        await watch_until_caught_up(both, sink, url, unit)
        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        removed = {d["id"] for d in docs if d["status"] == "removed"}
        assert caught_up_in_window <= removed
        want = ws.canonical_ids(url, {"A": (a, 0), "B": (b, 0)}, finality_depth=FINALITY)
        want.check(ws.live_ids(docs))
        assert any(d["args"].get("text") == "new B" for d in docs if d["_id"] in want.required)

        # B removed from the config: no catch-up, and no B records of the blocks mined since
        # (B records already emitted as pending still get their confirmed: the ledger keeps
        # them until their blocks are final)
        caplog.clear()
        last = max(d["block_number"] for d in docs)
        await asyncio.to_thread(ws.mine_traffic, url, [a, b], blocks=2, txs_per_block=2,
                                first=n)
        await watch_until_caught_up(only_a, sink, url, unit)
        assert "catching up" not in caplog.text
        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        new = [d for d in docs if d["block_number"] > last]
        assert new and {d["contract"] for d in new} == {"A"}


@pytest.mark.parametrize("where", ["middle", "window"])
async def test_crash_during_catch_up_resumes_without_gap(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
    caplog: pytest.LogCaptureFixture, where: str,
) -> None:
    caplog.set_level(logging.INFO, logger="chainpush.watcher")
    url = anvil.http_url
    a, a_block = ws.deploy(url, "DemoToken")
    b, b_block = ws.deploy(url, "DemoToken")
    n = await asyncio.to_thread(ws.mine_traffic, url, [a, b], blocks=40, txs_per_block=2)
    deployed = {"A": (a, a_block), "B": (b, b_block)}
    only_a = config_of(tmp_path, mongo_uri, mongo_db_name, url, deployed, ["A"])
    both = config_of(tmp_path, mongo_uri, mongo_db_name, url, deployed, ["A", "B"])
    async with MongoSink(mongo_uri, mongo_db_name) as mongo:
        sink = CountingSink(mongo)
        await watch_until_caught_up(only_a, sink, url, unit)
        doc = await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name)
        assert doc is not None
        tip = doc["block_number"]
        # a block while down: the tip can reach the head only after the catch-up (else the
        # checkpoint alone would satisfy `until_caught_up` before the catch-up ran)
        await asyncio.to_thread(ws.mine_traffic, url, [a, b], blocks=1, txs_per_block=2,
                                first=n)
        # "middle": dies on the progress save after block b_block + 10 (final blocks, no
        # proposal); "window": on the last chunk, whose records join the ledger (a proposal)
        after = b_block + 10 if where == "middle" else tip
        crashing = CrashDuringCatchUp(mongo_uri, mongo_db_name, after=after)
        with pytest.raises(Crash):
            await watch_until_caught_up(both, sink, url, unit, checkpoints=crashing)
        await crashing.aclose()
        doc = await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name)
        assert doc is not None and doc["block_number"] == tip
        assert [c["name"] for c in doc["contracts"]] == ["A"]  # B not covered yet
        saved = doc["catchup"]["next_block"] if doc["catchup"] else None
        caplog.clear()
        await watch_until_caught_up(both, sink, url, unit)
    if where == "window":  # the proposal was completed; nothing left but to cover B
        assert "completing the step interrupted" in caplog.text
    else:
        assert saved is not None and b_block < saved <= after
        assert f"catching up B from block {saved} to {tip} (resumed)" in caplog.text
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    want = ws.canonical_ids(url, {"A": (a, 0), "B": (b, 0)}, finality_depth=FINALITY)
    want.check({d["_id"] for d in docs})
    # only the interrupted chunk was handed twice: at most max_range (5) blocks of one B log
    b_ids = {d["_id"] for d in docs if d["contract"] == "B"}
    assert len(b_ids) > 30
    assert 1 <= sum(1 for m in b_ids if sink.handed[m] > 1) <= 5


def test_sigkill_during_catch_up_resumes_without_gap(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    """`chainpush watch` SIGKILLed while it catches up an added contract (the checkpoint shows
    the catch-up under way), restarted: B's history complete, A's records untouched."""
    url = anvil.http_url
    a, a_block = ws.deploy(url, "DemoToken")
    b, b_block = ws.deploy(url, "DemoToken")
    n = ws.mine_traffic(url, [a, b], blocks=300, txs_per_block=2)
    deployed = {"A": (a, a_block), "B": (b, b_block)}
    # max_range = 1: one eth_getLogs per block, so the catch-up lasts long enough to be killed
    only_a = config_of(tmp_path, mongo_uri, mongo_db_name, url, deployed, ["A"], max_range=1)
    both = config_of(tmp_path, mongo_uri, mongo_db_name, url, deployed, ["A", "B"], max_range=1)
    log = tmp_path / "watch.log"

    def cp() -> dict[str, Any]:
        return ws.checkpoint(mongo_uri, mongo_db_name) or {}

    def run_to_head(config: Config) -> None:
        top = ws.head(url)
        proc = ws.start_watch_process(Path(config.source), log)
        try:
            ws.wait_for(lambda: cp().get("block_number") == top and cp().get("catchup") is None
                        and proc.poll() is None, 60 * unit, f"the watcher to reach {top}")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10 * unit) == 0, log.read_text()[-2000:]

    run_to_head(only_a)
    tip = cp()["block_number"]
    ws.mine_traffic(url, [a, b], blocks=1, txs_per_block=2, first=n)
    proc = ws.start_watch_process(Path(both.source), log)
    try:
        ws.wait_for(lambda: (cp().get("catchup") or {}).get("next_block", 0) > b_block + 20,
                    30 * unit, "the catch-up to get under way")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = cp()
    # the kill landed during the catch-up: B not covered yet, the tip where it was
    assert killed["catchup"] is not None and killed["block_number"] == tip, killed["catchup"]
    assert [c["name"] for c in killed["contracts"]] == ["A"]
    run_to_head(both)
    text = log.read_text()
    assert f"catching up B from block {killed['catchup']['next_block']} to {tip} (resumed)" in text
    docs = ws.stored_docs(mongo_uri, mongo_db_name)
    want = ws.canonical_ids(url, {"A": (a, 0), "B": (b, 0)}, finality_depth=FINALITY)
    want.check({d["_id"] for d in docs})
    assert sum(1 for d in docs if d["contract"] == "B") > 300
