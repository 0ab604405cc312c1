"""Directed cases of the stepper (``watcher.stepper``) in the simulation's model world, one per
bug of issue 9; the random runs are ``test_watcher_sim.py``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chainpush.watcher.bloom import LogBloom, bloom_mask, bloom_of
from chainpush.watcher.checkpoint import CheckpointError
from chainpush.watcher.cursor import Header
from chainpush.watcher.ledger import Ledger
from chainpush.watcher.record import EventRecord, message_id
from chainpush.watcher.sink import SinkError
from chainpush.watcher.stepper import Accept, Action, Call, Save
from tests.sim.watcher_sim import FAST, OTHER, SLOW, Crash, Faults, directed


def test_restart_after_downtime_across_a_reorg_retracts_the_orphaned_tip() -> None:
    """Issue 9.1: stopped at 10a, the node reorgs to 10b and mines more than the window; on
    restart 10a's records are removed (never confirmed) and 10b's are emitted."""
    sim = directed(window=4, k=2, finality_depth=2)
    sim.chain.mine(10, logs_of=(FAST, SLOW))
    sim.catch_up()
    orphan = list(sim.chain.canon)
    assert sim.messages(10, FAST) == ["pending"]
    sim.stepper = sim._new_stepper()  # the watcher stops; a new process starts later
    sim.chain.fork(9, logs_of=(FAST, SLOW))
    sim.chain.mine(6, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(10, FAST, branch=orphan) == ["pending", "removed"]
    assert sim.messages(10, SLOW, branch=orphan) == []  # never emitted: nothing to retract
    assert sim.messages(10, FAST)[-1] == "confirmed"
    assert sim.messages(10, SLOW) == ["confirmed"]
    sim.check()


@pytest.mark.parametrize("where", ["save fails", "save fails after writing"])
def test_failed_checkpoint_after_accept_is_completed_then_retracted(where: str) -> None:
    """Issue 9.2: the checkpoint write fails after the sink accepted 11a; the node reorgs to
    11b during the backoff; the retry completes the proposal, so 11a is retracted."""
    sim = directed(window=4, k=2, finality_depth=2)
    sim.chain.mine(10, logs_of=(FAST,))
    sim.catch_up()
    sim.chain.mine(1, logs_of=(FAST,))
    orphan = list(sim.chain.canon)
    fired: list[Action] = []

    def inject(action: Action) -> None:
        if isinstance(action, Save) and action.state["block_number"] == 11 and not fired:
            fired.append(action)
            sim.chain.fork(10, logs_of=(FAST,))
            if where == "save fails after writing":
                sim.checkpoints[action.key] = {**action.state, "proposed": None}
            raise CheckpointError("checkpoint write failed")

    sim.inject = inject
    sim.catch_up()
    assert fired
    assert sim.messages(11, FAST, branch=orphan) == ["pending", "removed"]
    assert sim.messages(11, FAST) == ["pending"]
    sim.check()


def test_partial_sink_write_is_completed_then_retracted() -> None:
    """Issue 9.2: the sink stores part of 11a's batch and fails; the node reorgs meanwhile."""
    sim = directed(window=4, k=2, finality_depth=2)
    sim.chain.mine(10, logs_of=(FAST,))
    sim.catch_up()
    sim.chain.mine(1, logs_of=(FAST, FAST))
    orphan = list(sim.chain.canon)
    fired: list[Action] = []

    def inject(action: Action) -> None:
        if isinstance(action, Accept) and action.batch and not fired:
            fired.append(action)
            sim.store.put(action.batch[0])
            sim.chain.fork(10, logs_of=(FAST,))
            raise SinkError("stored 1 record of 2, then failed")

    sim.inject = inject
    sim.catch_up()
    assert fired
    assert sim.messages(11, FAST, branch=orphan) == ["pending", "removed"]
    sim.check()


def test_k_positive_flip_flop_gets_a_new_incarnation() -> None:
    """Issue 9.3: confirmed → removed → the block comes back: ``confirmed/1``, not a duplicate
    of the retracted ``confirmed``."""
    sim = directed(window=6, k=2, finality_depth=3)
    sim.chain.mine(10, logs_of=(SLOW, FAST))
    sim.catch_up()
    a = list(sim.chain.canon)
    assert sim.messages(8, SLOW) == ["confirmed"]
    sim.chain.fork(7, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(8, SLOW, branch=a) == ["confirmed", "removed"]
    assert sim.messages(8, FAST, branch=a) == ["pending", "removed"]
    sim.chain.switch_to(a)  # A → B → A
    sim.chain.mine(4, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(8, SLOW) == ["confirmed", "removed", "confirmed/1"]
    assert sim.messages(8, FAST) == ["pending", "removed", "pending/1", "confirmed/1"]
    sim.check()


def test_flip_flop_during_downtime_and_backfill_keeps_the_incarnation() -> None:
    """The block comes back while the watcher is down and is emitted by backfill."""
    sim = directed(window=4, k=2, finality_depth=2)
    sim.chain.mine(10, logs_of=(FAST,))
    sim.catch_up()
    a = list(sim.chain.canon)
    sim.chain.fork(8, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(10, FAST, branch=a) == ["pending", "removed"]
    sim.stepper = sim._new_stepper()
    sim.chain.switch_to(a)
    sim.chain.mine(8, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(10, FAST)[-1] == "confirmed/1"
    sim.check()


def test_contract_removed_from_the_config_keeps_its_confirmations() -> None:
    """Issue 9.7: a K=3 record pending when its contract leaves the config is confirmed at
    depth 3, not at once."""
    sim = directed(window=6, k=3, finality_depth=2)
    sim.chain.mine(8, logs_of=(SLOW,))
    sim.catch_up()
    assert sim.messages(8, SLOW) == []
    # as if [[contracts]] Slow were deleted from the file: gone from the confirmations too
    sim.bound = replace(sim.bound.only({"Fast"}), confirmations={"Fast": 0})
    sim.stepper = sim._new_stepper()
    sim.chain.mine(1, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(8, SLOW) == []
    sim.chain.mine(2, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(8, SLOW) == ["confirmed"]


def record(contract: str = "Slow", number: int = 5) -> EventRecord:
    return EventRecord(chain_id=1, contract=contract, address="0x" + "bb" * 20,
                       event="Transfer", args={}, block_number=number,
                       block_hash=f"0x{number:064x}", block_timestamp=0, tx_hash="0x" + "00" * 32,
                       log_index=0)


def test_ledger_keeps_k_of_a_contract_gone_from_the_config() -> None:
    ledger = Ledger({"Slow": 3}, finality_depth=2)
    h = Header(5, f"0x{5:064x}", "0x" + "00" * 32, 0)
    assert ledger.add_block(h, [record()]) == []
    restored = Ledger.from_doc(ledger.to_doc(), {}, finality_depth=2)
    assert restored.confirm(6) == []
    assert [r.status for r in restored.confirm(8)] == ["confirmed"]


def test_ledger_without_k_in_an_old_checkpoint_waits_for_finalization() -> None:
    ledger = Ledger({"Slow": 3}, finality_depth=2)
    h = Header(5, f"0x{5:064x}", "0x" + "00" * 32, 0)
    ledger.add_block(h, [record()])
    doc: dict[str, Any] = ledger.to_doc()
    for b in doc["blocks"]:
        for e in b["entries"]:
            del e["k"]
    restored = Ledger.from_doc(doc, {}, finality_depth=2)
    assert restored.confirm(100) == []
    assert [r.status for r in restored.finalize(h)] == ["confirmed"]


def test_message_id_carries_the_incarnation_after_the_first() -> None:
    assert message_id({"id": "1:0xab:0", "status": "pending"}) == "1:0xab:0/pending"
    assert message_id({"id": "1:0xab:0", "status": "pending", "incarnation": 0}) \
        == "1:0xab:0/pending"
    assert message_id({"id": "1:0xab:0", "status": "confirmed", "incarnation": 2}) \
        == "1:0xab:0/confirmed/2"
    rec = record().with_incarnation(1).with_status("removed")
    assert rec.message_id == f"{rec.id}/removed/1"
    assert rec.to_dict()["incarnation"] == 1
    assert Faults.none().crash == 0


@pytest.mark.parametrize("receipts", [True, False])
def test_logs_answered_empty_against_the_bloom_are_not_lost(receipts: bool) -> None:
    """Issue 9.6: a provider answers ``[]`` for a block whose ``logsBloom`` holds our address
    and topic: its receipts are read instead, or the step is retried."""
    sim = directed(window=4, k=2, finality_depth=2)
    sim.faults.receipts = receipts
    sim.chain.mine(6, logs_of=(FAST,))
    sim.catch_up()
    lies: list[str] = []

    def inject(action: Action) -> None:
        lying = len(lies) < 2  # twice: with receipts the first lie is settled at once
        sim.faults.lie = 1.0 if lying else 0.0
        if lying and isinstance(action, Call) and any(
                m == "eth_getLogs" and "blockHash" in p[0] for m, p in action.calls):
            lies.append(str(action.calls))

    sim.inject = inject
    sim.chain.mine(1, logs_of=(FAST,))
    sim.catch_up()
    assert lies
    assert sim.messages(7, FAST) == ["pending"]
    sim.check()


def test_bloom_masks_match_the_logs_they_were_made_of() -> None:
    topic = "0x" + "ab" * 32
    bloom = bloom_of([(FAST, [topic])])
    assert LogBloom([FAST], [topic]).may_match(bloom)
    assert LogBloom([FAST], None).may_match(bloom)
    assert not LogBloom([SLOW], None).may_match(bloom)
    assert not LogBloom([FAST], ["0x" + "cd" * 32]).may_match(bloom)
    assert not LogBloom([FAST], None).may_match("0x" + "00" * 256)
    assert LogBloom([FAST], None).may_match(None)  # no bloom: no proof
    assert bin(bloom_mask(b"x")).count("1") in (1, 2, 3)


def test_finality_by_the_nodes_finalized_tag() -> None:
    """Issue 9.6: with ``finality = "tag"`` a K=0 record is confirmed when the node's
    ``finalized`` block reaches it — not at ``finality_depth``; by depth on a node without
    the tag."""
    sim = directed(window=8, k=2, finality_depth=2)
    sim.watch = replace(sim.watch, finality="tag")
    sim.stepper = sim._new_stepper()
    sim.finality_lag = 5
    sim.chain.mine(10, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(7, FAST) == ["pending"]  # 3 deep: past finality_depth, not finalized
    assert sim.messages(5, FAST)[-1] == "confirmed"  # the finalized block
    sim.finality_lag = None  # another node, without the tag: by depth again
    sim.stepper = sim._new_stepper()
    sim.chain.mine(1, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(7, FAST) == ["pending", "confirmed"]


def test_ledger_confirms_by_the_tag_not_by_depth() -> None:
    ledger = Ledger({"Fast": 0, "Slow": 3}, finality_depth=2)
    h = Header(5, f"0x{5:064x}", "0x" + "00" * 32, 0)
    out = ledger.add_block(h, [record("Fast"), record("Slow")])
    assert [r.status for r in out] == ["pending"]
    assert ledger.confirm(7, finalized=4) == []  # 2 deep (= finality_depth), not finalized
    # finalized: Fast confirmed; Slow too, before its K = 3 confirmations
    assert [(r.contract, r.status) for r in ledger.confirm(7, finalized=5)] == [
        ("Fast", "confirmed"), ("Slow", "confirmed")]


def test_contract_removed_during_its_catch_up_and_added_again_is_caught_up_in_full() -> None:
    """Found by the simulation (seed 16042 before the fix): a catch-up leaves a held block the
    node replaced to the live step; the contract leaves the config before that step, so the
    replacement is read without it; re-added, its catch-up must not resume past that block."""
    sim = directed(window=6, k=2, finality_depth=2)
    sim.watch = replace(sim.watch, max_range=1)
    sim.chain.mine(8, logs_of=(FAST, OTHER))
    sim.catch_up()
    sim.stepper = sim._new_stepper()
    sim.chain.fork(5, logs_of=(FAST, OTHER))  # while down: blocks 6-8 replaced
    sim.late = True  # Late (the OTHER address) added to the config
    sim.bound = sim._bound()
    sim.stepper = sim._new_stepper()
    crashed: list[Action] = []

    def inject(action: Action) -> None:
        if isinstance(action, Save) and (action.state.get("catchup") or {}).get(
                "next_block") == 7 and not crashed:
            crashed.append(action)
            sim.checkpoints[action.key] = {**action.state, "proposed": None}
            sim.late = False  # the watcher restarts with Late removed again ...
            sim.bound = sim._bound()
            raise Crash("killed after the catch-up chunk of block 6")

    sim.inject = inject
    sim.catch_up()
    assert crashed
    sim.inject = None
    sim.chain.mine(1, logs_of=(FAST,))
    sim.catch_up()
    sim.late = True  # ... and added back
    sim.bound = sim._bound()
    sim.stepper = sim._new_stepper()
    sim.chain.mine(2, logs_of=(FAST,))
    sim.catch_up()
    assert sim.messages(6, OTHER)[-1] in ("pending", "confirmed")
    sim.check()


def test_backfill_stored_in_part_is_finished_by_backfill_whatever_head_the_retry_sees() -> None:
    """Found by the simulation (seed 13048 before the fix): a backfill chunk is stored in part
    (block 2 ``confirmed``), then the sink fails; the retry's node lags one block, so block 2
    looks within the window — following it live would store ``pending`` after ``confirmed``."""
    sim = directed(window=4, k=2, finality_depth=1)
    sim.chain.mine(6, logs_of=(FAST,))
    failed: list[Action] = []

    def inject(action: Action) -> None:
        if isinstance(action, Accept) and len(action.batch) == 2 and not failed:
            failed.append(action)
            sim.store.put(action.batch[1])
            sim.faults.lag = 1.0  # from now on the node reports head - 1
            raise SinkError("stored 1 record of 2, then failed")

    sim.inject = inject
    sim.drive(sim.faults, chaos=False, budget=200, until_caught_up=False)  # head 5 seen
    assert failed
    assert sim.messages(2, FAST) == ["confirmed"]
    sim.faults.lag = 0.0
    sim.catch_up()
    sim.check()
