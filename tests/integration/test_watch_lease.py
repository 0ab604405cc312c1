"""Two real ``chainpush watch`` processes on one checkpoint key (anvil + nx-27017 + redis,
records through collect): one leads, the other is a hot standby; SIGKILL of the leader → the
standby leads within 5 s and nothing is lost or doubled; a leader SIGSTOPped past its lease
while the other takes over and a reorg happens, then SIGCONTed → its write is refused by the
fencing token, it becomes a standby and the stream still satisfies the invariant."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pymongo
import pytest

from chainpush import procs
from chainpush.watcher.checkpoint import MongoCheckpoints
from chainpush.watcher.config import load_config
from chainpush.watcher.lease import MongoLease
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink
from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

FINALITY = 4
NAME = "leased"


class Proc:
    """One ``chainpush watch --sink collect --metrics-port N`` subprocess and its log."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = procs.free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] = ws.start_watch_process(
            config, log, "--sink", "collect", "--metrics-port", str(self.port))

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def health(self) -> dict[str, Any] | None:
        body = self.get("/healthz")
        return None if body is None else dict(json.loads(body))

    def metric(self, name: str) -> float | None:
        body = self.get("/metrics")
        for line in (body or "").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def leading(self) -> bool:
        h = self.health()
        return bool(h and h["leader"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()


def setup(anvil: Anvil, mongo_uri: str, db: str, tmp_path: Path, redis_url: str,
          monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    monkeypatch.setenv("CHAINPUSH_REDIS_URL", redis_url)
    token, _ = ws.deploy(anvil.http_url, "DemoToken")
    config = ws.write_config(
        tmp_path / "watch.toml", urls=[anvil.http_url], mongo_uri=mongo_uri, database=db,
        contracts=[{"name": "DemoToken", "address": token}], name=NAME, reorg_window=8,
        finality_depth=FINALITY, max_range=10, live_batch_blocks=10,
    )
    return token, config


def two_watchers(config: Path, tmp_path: Path, unit: float) -> tuple[Proc, Proc]:
    a = Proc(config, tmp_path / "a.log")
    ws.wait_for(lambda: "leader: holding lease" in a.text() or not a.alive(), 30 * unit,
                "the first watcher to lead")
    assert a.alive(), a.text()[-3000:]
    b = Proc(config, tmp_path / "b.log")
    ws.wait_for(lambda: "standby: lease" in b.text() or not b.alive(), 30 * unit,
                "the second watcher to wait as a standby")
    assert b.alive(), b.text()[-3000:]
    ws.wait_for(lambda: a.health() is not None and b.health() is not None, 10 * unit,
                "both /healthz")
    return a, b


def committed(mongo_uri: str, db: str) -> dict[str, Any]:
    return ws.checkpoint(mongo_uri, db) or {}


def wait_tip(mongo_uri: str, db: str, url: str, unit: float, procs_: list[Proc]) -> None:
    def done() -> bool:
        for p in procs_:
            assert p.alive(), p.text()[-3000:]
        latest = ws.rpc(url, "eth_getBlockByNumber", ["latest", False])
        return committed(mongo_uri, db).get("block_hash") == latest["hash"]

    ws.wait_for(done, 30 * unit, "the leader to reach the node's latest block")


def messages(mongo_uri: str, db: str) -> list[dict[str, Any]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        return list(client[db]["messages"].find({}))
    finally:
        client.close()


def check_stream(mongo_uri: str, db: str, url: str, token: str) -> list[dict[str, Any]]:
    """Events: exactly the canonical set live, each message id once; messages: each message id
    once per topic, offsets gap-free."""
    docs = ws.stored_docs(mongo_uri, db)
    ids = [d["_id"] for d in docs]
    assert len(ids) == len(set(ids))
    want = ws.canonical_ids(url, {"DemoToken": (token, 0)}, finality_depth=FINALITY)
    want.check(ws.live_ids(docs))
    rows = [m for m in messages(mongo_uri, db) if m["topic"] == "contract:DemoToken"]
    msg_ids = [m["msg_id"] for m in rows]
    assert len(msg_ids) == len(set(msg_ids)), "a message stored twice in contract:DemoToken"
    assert set(msg_ids) == set(ids)
    assert sorted(m["offset"] for m in rows) == list(range(1, len(rows) + 1))
    return docs


def test_standby_takes_over_within_5_s_of_the_leaders_sigkill(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, redis_url: str, tmp_path: Path,
    unit: float, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = anvil.http_url
    token, config = setup(anvil, mongo_uri, mongo_db_name, tmp_path, redis_url, monkeypatch)
    a, b = two_watchers(config, tmp_path, unit)
    try:
        assert a.metric("chainpush_watch_leader") == 1.0
        assert b.metric("chainpush_watch_leader") == 0.0
        assert a.metric("chainpush_watch_lease_generation") == 1.0
        n = ws.mine_traffic(url, token, blocks=12, txs_per_block=3)
        wait_tip(mongo_uri, mongo_db_name, url, unit, [a, b])
        assert b.metric("chainpush_watch_records_total") == 0.0  # the standby did none of the work
        assert (a.metric("chainpush_watch_records_total") or 0) >= 36

        a.signal(signal.SIGKILL)
        a.proc.wait()
        killed = time.monotonic()
        n = ws.mine_traffic(url, token, blocks=6, txs_per_block=3, first=n)  # meanwhile
        ws.wait_for(b.leading, 10 * unit, "the standby to lead", step_s=0.02)
        took = time.monotonic() - killed
        assert took < 5.0, f"the standby led {took:.1f} s after the leader's SIGKILL"
        assert b.metric("chainpush_watch_lease_generation") == 2.0
        assert "leader: holding lease" in b.text()
        ws.mine_traffic(url, token, blocks=6, txs_per_block=3, first=n)
        wait_tip(mongo_uri, mongo_db_name, url, unit, [b])
        assert committed(mongo_uri, mongo_db_name)["fence"] == 2
    finally:
        a.stop()
        b.stop()
    assert b.proc.returncode == 0, b.text()[-3000:]
    check_stream(mongo_uri, mongo_db_name, url, token)


def test_a_leader_paused_past_its_lease_is_fenced_and_becomes_standby(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, redis_url: str, tmp_path: Path,
    unit: float, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = anvil.http_url
    token, config = setup(anvil, mongo_uri, mongo_db_name, tmp_path, redis_url, monkeypatch)
    a, b = two_watchers(config, tmp_path, unit)
    try:
        n = ws.mine_traffic(url, token, blocks=10, txs_per_block=3)
        wait_tip(mongo_uri, mongo_db_name, url, unit, [a, b])

        a.signal(signal.SIGSTOP)  # the leader freezes with its lease (generation 1)
        ws.wait_for(b.leading, 15 * unit, "the standby to take over from the paused leader")
        # meanwhile: the chain moves and reorgs; the new leader retracts what was orphaned
        n = ws.mine_traffic(url, token, blocks=2, txs_per_block=3, first=n)
        wait_tip(mongo_uri, mongo_db_name, url, unit, [b])
        data = ws.calldata("sendMessage(address,string,bytes)", ["address", "string", "bytes"],
                           [ws.ACCOUNTS[2], "while the old leader slept", b""])
        ws.rpc(url, "anvil_reorg", [2, [[{"from": ws.OWNER, "to": token, "data": data,
                                          "gas": hex(300_000)}, 0]]])
        wait_tip(mongo_uri, mongo_db_name, url, unit, [b])
        before = committed(mongo_uri, mongo_db_name)
        assert before["fence"] == 2

        standby_lines = a.text().count("standby:")
        a.signal(signal.SIGCONT)
        ws.wait_for(lambda: a.text().count("standby:") > standby_lines, 15 * unit,
                    "the old leader to step down")
        assert "refused (fencing): " in a.text().split("standby:", standby_lines)[-1]
        assert (a.metric("chainpush_watch_fenced_writes_total") or 0) >= 1
        assert a.metric("chainpush_watch_leader") == 0.0
        assert b.leading()
        after = committed(mongo_uri, mongo_db_name)
        assert after["fence"] == 2 and after["block_hash"] == before["block_hash"]

        ws.mine_traffic(url, token, blocks=5, txs_per_block=2, first=n)
        wait_tip(mongo_uri, mongo_db_name, url, unit, [a, b])
        assert not a.leading() and b.leading()
    finally:
        a.stop()
        b.stop()
    docs = check_stream(mongo_uri, mongo_db_name, url, token)
    removed = [d for d in docs if d["status"] == "removed"]
    assert len(removed) >= 6  # the two orphaned blocks' records were retracted
    assert any(d["args"].get("text") == "while the old leader slept" for d in docs
               if d["status"] != "removed")


# --- in process: a leader frozen in the middle of a step, deterministically ------------------


class Freeze:
    """Stands for SIGSTOP of one watcher: once ``armed``, its next proposal and its lease
    renewals wait until ``thaw()`` (the rest of this test process runs on)."""

    def __init__(self) -> None:
        self.armed = False
        self.frozen = asyncio.Event()
        self._thawed = asyncio.Event()
        self._thawed.set()

    async def point(self) -> None:
        if self.armed:
            self.armed = False
            self._thawed.clear()
            self.frozen.set()
        await self._thawed.wait()

    def thaw(self) -> None:
        self._thawed.set()


class Crash(RuntimeError):
    """Stands for the process dying (not an error the watcher retries)."""


class FreezingCheckpoints(MongoCheckpoints):
    """Freezes before a proposal (``Freeze``); dies right after saving block ``die_after``."""

    def __init__(self, mongo_uri: str, database: str, freeze: Freeze) -> None:
        super().__init__(mongo_uri, database)
        self.freeze = freeze
        self.proposals: list[int] = []
        self.die_after: int | None = None

    async def save(self, key: str, state: dict[str, Any], *, fence: int | None = None
                   ) -> None:
        await super().save(key, state, fence=fence)
        if state["block_number"] == self.die_after:
            raise Crash(f"killed right after saving block {self.die_after}")

    async def propose(self, key: str, state: dict[str, Any], batch: list[dict[str, Any]],
                      *, fence: int | None = None) -> None:
        await self.freeze.point()
        self.proposals.append(state["block_number"])
        await super().propose(key, state, batch, fence=fence)


class FreezingLease(MongoLease):
    def __init__(self, mongo_uri: str, database: str, freeze: Freeze, watch: Any) -> None:
        super().__init__(mongo_uri, database, lease_s=watch.lease_s,
                         renew_s=watch.lease_renew_s)
        self.freeze = freeze

    async def renew(self) -> None:
        await self.freeze.point()
        await super().renew()


@pytest.mark.parametrize("leased", [
    True,
    pytest.param(False, marks=pytest.mark.xfail(strict=True, reason=(
        "issue 12, the bug this lease fixes: without it the frozen watcher's late step stores "
        "the pending records of an orphaned block that nobody will retract"))),
])
async def test_a_frozen_leaders_proposal_is_refused_by_the_fence(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
    leased: bool, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chainpush.watcher.service")
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    n = await asyncio.to_thread(ws.mine_traffic, url, token, blocks=3, txs_per_block=2)
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token}], name=NAME, reorg_window=8,
        finality_depth=FINALITY, lease_s=1.0, lease_renew_s=0.3,
    ))
    freeze = Freeze()
    a_store = FreezingCheckpoints(mongo_uri, mongo_db_name, freeze)
    a_lease = FreezingLease(mongo_uri, mongo_db_name, freeze, config.watch) if leased else None
    b_store = MongoCheckpoints(mongo_uri, mongo_db_name)
    b_lease = MongoLease(mongo_uri, mongo_db_name, lease_s=1.0, renew_s=0.3) if leased else None
    async with MongoSink(mongo_uri, mongo_db_name) as sink:
        async with Watcher(config, sink, checkpoints=a_store, lease=a_lease) as a, \
                Watcher(config, sink, checkpoints=b_store, lease=b_lease) as b:
            a_task = asyncio.create_task(a.run())
            await ws.until_caught_up(lambda: a.tip_hash, url, 20 * unit, a_task.done)
            frozen_at = a.tip
            assert frozen_at is not None
            # A computes the step of the next block (pending records) and freezes before
            # proposing it, its lease renewals frozen too
            freeze.armed = True
            await asyncio.to_thread(ws.mine_traffic, url, token, blocks=1, txs_per_block=3,
                                    first=n)
            await asyncio.wait_for(freeze.frozen.wait(), 10 * unit)
            orphan = await asyncio.to_thread(ws.rpc, url, "eth_getBlockByNumber",
                                             ["latest", False])
            # meanwhile that block is replaced, and B takes over (once A's lease lapses)
            data = ws.calldata("sendMessage(address,string,bytes)",
                               ["address", "string", "bytes"],
                               [ws.ACCOUNTS[2], "replacement", b""])
            await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [1, [[
                {"from": ws.OWNER, "to": token, "data": data, "gas": hex(300_000)}, 0]]])
            b_task = asyncio.create_task(b.run())
            await ws.until_caught_up(lambda: b.tip_hash, url, 20 * unit, b_task.done)
            assert b.leading  # (without a lease: always)
            # A thaws: its proposal (computed for the orphaned block) must not be stored; if
            # it is, A dies right after its save, so only its checkpoint knew those records
            a_store.die_after = frozen_at + 1
            freeze.thaw()
            if leased:
                await ws.await_for(lambda: not a.leading, 10 * unit, "A to step down")
                assert a.metrics.counters["chainpush_watch_fenced_writes_total"] >= 1
                assert re.search(r"standby: proposal of checkpoint 31337:leased refused "
                                 r"\(fencing\): lease generation 1 superseded by 2",
                                 caplog.text), caplog.text
                assert b.leading
            else:
                with pytest.raises(Crash):
                    await asyncio.wait_for(a_task, 10 * unit)
            assert a_store.proposals[-1] == frozen_at + 1  # it did try, after the takeover
            await asyncio.to_thread(ws.mine_traffic, url, token, blocks=2, txs_per_block=1,
                                    first=n + 3)
            await ws.until_caught_up(lambda: b.tip_hash, url, 20 * unit, b_task.done)
            for task in (a_task, b_task) if leased else (b_task,):
                if task.done() and not task.cancelled() and task.exception():
                    raise AssertionError("a watcher failed") from task.exception()
    for closable in (a_store, b_store, a_lease, b_lease):
        if closable is not None:
            await closable.aclose()
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    want = await asyncio.to_thread(ws.canonical_ids, url, {"DemoToken": (token, 0)},
                                   finality_depth=FINALITY)
    want.check(ws.live_ids(docs), "(a record of the orphaned block is live)")
    assert not [d for d in docs if d["block_hash"] == orphan["hash"]]


async def test_a_deleted_lease_document_does_not_lock_the_watcher_out(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The checkpoint is fenced at generation 2 when the lease document is deleted: the next
    watcher's generation 1 is refused by the checkpoint, and it takes the lease again *above*
    the fence (3), never reusing 2 (a paused holder of 2 could still write) nor being refused
    forever."""
    caplog.set_level(logging.INFO, logger="chainpush.watcher.service")
    url = anvil.http_url
    token, _ = ws.deploy(url, "DemoToken")
    await asyncio.to_thread(ws.mine_traffic, url, token, blocks=2, txs_per_block=2)
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": token}], name=NAME, reorg_window=8,
        finality_depth=FINALITY, lease_s=1.0, lease_renew_s=0.3,
    ))
    async with MongoSink(mongo_uri, mongo_db_name) as sink:
        for _ in range(2):  # generations 1 and 2, each stopped cleanly (lease released)
            async with Watcher(config, sink) as w:
                task = asyncio.create_task(w.run())
                await ws.until_caught_up(lambda w=w: w.tip_hash, url, 20 * unit, task.done)
        assert committed(mongo_uri, mongo_db_name)["fence"] == 2

        def drop_lease() -> None:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
            try:
                client[mongo_db_name]["leases"].delete_many({})
            finally:
                client.close()

        await asyncio.to_thread(drop_lease)
        await asyncio.to_thread(ws.mine_traffic, url, token, blocks=1, txs_per_block=1, first=4)
        async with Watcher(config, sink) as w:
            task = asyncio.create_task(w.run())
            await ws.until_caught_up(lambda: w.tip_hash, url, 20 * unit, task.done)
            assert w.leading and w.lease_generation == 3
    assert "reading of checkpoint 31337:leased refused (fencing): lease generation 1 " \
           "superseded by 2" in caplog.text
    assert committed(mongo_uri, mongo_db_name)["fence"] == 3
