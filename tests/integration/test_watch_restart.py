"""`chainpush watch` as a subprocess, SIGKILLed at random moments: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

FINALITY = 4  # Fast (K = 0) records: pending, then confirmed 4 blocks deep


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_restarts_store_exactly_the_canonical_set(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float
) -> None:
    seed = int(os.environ.get("CHAINPUSH_TEST_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"seed {seed}")  # rerun a failure with CHAINPUSH_TEST_SEED
    url = anvil.http_url
    fast, _ = ws.deploy(url, "DemoToken")
    slow, _ = ws.deploy(url, "DemoToken")
    contracts = {"Fast": (fast, 0), "Slow": (slow, 2)}
    n = ws.mine_traffic(url, [fast, fast, slow], blocks=150, txs_per_block=4)
    config = ws.write_config(
        tmp_path / "watch.toml", urls=[url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "Fast", "abi": "DemoToken", "address": fast},
                   {"name": "Slow", "abi": "DemoToken", "address": slow, "confirmations": 2}],
        name="killtest", reorg_window=16, max_range=10, live_batch_blocks=10,
        finality_depth=FINALITY, lease_s=1.0, lease_renew_s=0.3,  # a quick takeover
    )
    log = tmp_path / "watch.log"
    tips: list[int] = []
    kills = 0
    proc = ws.start_watch_process(config, log)
    try:
        for round_ in range(6):
            # this process is past start-up (it leads: its predecessor's lease ran out), so
            # the kill lands in its work
            ws.wait_for(lambda r=round_: log.read_text().count("leader: holding lease") > r,
                        20 * unit, "the watcher to lead")
            traffic = threading.Thread(target=ws.mine_traffic, args=(url, [fast, fast, slow]),
                                       kwargs={"blocks": 30, "txs_per_block": 4, "first": n})
            traffic.start()
            time.sleep(rng.uniform(0.0, 0.6) * unit)  # a random instant, not a race fix
            assert proc.poll() is None, log.read_text()[-3000:]
            kill(proc)
            kills += 1
            traffic.join()
            n += 30 * 4
            cp = ws.checkpoint(mongo_uri, mongo_db_name)
            tips.append(cp["block_number"] if cp else -1)
            proc = ws.start_watch_process(config, log)
        ws.rpc(url, "anvil_mine", ["0x3"])  # the last events become 2 deep (Slow confirms)
        top = ws.head(url)

        def reached() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return (ws.checkpoint(mongo_uri, mongo_db_name) or {}).get("block_number") == top

        ws.wait_for(
            reached,
            60 * unit, f"the watcher to reach block {top}",
        )
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop on SIGTERM
        code = proc.wait(timeout=10 * unit)
    assert code == 0, log.read_text()[-2000:]
    docs = ws.stored_docs(mongo_uri, mongo_db_name)
    # every canonical event in its due statuses: Slow confirmed 2 deep; Fast pending, and also
    # confirmed once FINALITY deep. Whether a final Fast event also has its pending depends on
    # whether its block was backfilled or followed live, which the random kills decide.
    want = ws.canonical_ids(url, contracts, finality_depth=FINALITY)
    got = [d["_id"] for d in docs]
    assert kills >= 5
    assert top >= 300 and len(want.required) >= 1000, (top, len(want.required))
    assert len(got) == len(set(got))
    want.check(set(got), f"; tips at kills {tips}")
    # the kills hit live following too, not only backfill: confirmed after pending happened
    assert {d["id"] for d in docs if d["status"] == "pending"} & {
        d["id"] for d in docs if d["status"] == "confirmed" and d["contract"] == "Fast"}
    assert all(d["status"] != "removed" for d in docs)
    assert tips == sorted(tips) and tips[-1] > tips[0], tips
    assert "resuming from checkpoint" in log.read_text()
