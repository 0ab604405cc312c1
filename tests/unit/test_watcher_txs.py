"""Transaction lifecycles: the pure tracker (watcher/txs.py), the tx record (watcher/record.py)
and the push side's rules for ``tx:`` topics (records, wire, tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainpush.push import wire
from chainpush.push.errors import InvalidRecord, ProtocolError
from chainpush.push.records import normalise_topic, topics_of, validate
from chainpush.push.tokens import Claims, check_pattern
from chainpush.watcher.cursor import Header
from chainpush.watcher.ledger import Ledger
from chainpush.watcher.record import TxRecord, message_id, record_from_dict
from chainpush.watcher.txs import TxTracker

CHAIN = 31337
A = "0x" + "aa" * 32
B = "0x" + "bb" * 32
C = "0x" + "cc" * 32
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
B10 = "0x" + "10" * 32
B11 = "0x" + "11" * 32
CANON = {10: B10, 11: B11}


def tx(h: str, nonce: int = 3, block: str | None = None) -> dict[str, object]:
    return {"hash": h, "from": SENDER.lower(), "to": SENDER.lower(), "nonce": hex(nonce),
            "blockHash": block, "blockNumber": None if block is None else "0xa"}


def receipt(h: str, block: str, number: int, status: int = 1) -> dict[str, object]:
    return {"transactionHash": h, "blockHash": block, "blockNumber": hex(number),
            "status": hex(status), "gasUsed": "0x5208", "effectiveGasPrice": "0x3b9aca00",
            "from": SENDER.lower(), "to": SENDER.lower(), "logs": []}


def seen(t: TxTracker, h: str, tx_: object, rc: object, anchor: int = 9):
    return t.seen(h, tx_, rc, anchor=anchor, tip=11, canonical=CANON)  # type: ignore[arg-type]


def test_interest_follows_the_registry_within_the_bound() -> None:
    t = TxTracker(CHAIN, max_tracked=2)
    t.interest({A, B, C, "0xNOTAHASH", A.upper()})
    assert t.tracked == [A, B]  # in hash order; malformed suffixes never followed
    t.interest(None)  # Redis away: keep what we follow
    assert t.tracked == [A, B]
    t.interest({B, C})  # A unsubscribed: its place goes to C
    assert t.tracked == [B, C]
    assert t.to_poll() == [B, C]
    assert TxTracker.calls([B]) == (("eth_getTransactionByHash", [B]),
                                    ("eth_getTransactionReceipt", [B]))
    with pytest.raises(ValueError, match="max_tracked_txs must be >= 1, got 0"):
        TxTracker(CHAIN, max_tracked=0)


def test_pending_once_per_stay_in_the_pool_then_mined_held_by_the_ledger() -> None:
    t = TxTracker(CHAIN)
    t.interest({A})
    v = seen(t, A, tx(A), None)
    assert v.what == "pending" and v.record is not None
    assert v.record.to_dict()["stage"] == "pending" and v.record.sender == SENDER
    t.emitted([v.record])
    assert seen(t, A, tx(A), None).what == "wait"  # still in the pool: nothing new
    v = seen(t, A, tx(A, block=B11), receipt(A, B11, 11))
    assert (v.what, v.block_number, v.block_hash, v.final) == ("mined", 11, B11, False)
    mined = t.mined_record(v, timestamp=123, events=[])
    assert (mined.result, mined.gas_used, mined.effective_gas_price) == (
        "success", "21000", "1000000000")
    assert mined.id == f"{CHAIN}:{B11}:tx:{A}" and mined.stage == "mined"
    t.emitted([mined])
    assert t.to_poll() == []  # the ledger holds it: confirmed / removed come from there
    # its block orphaned: asked again; back in the pool → `pending` again, a new incarnation
    t.emitted([mined.with_status("removed")])
    assert t.to_poll() == [A]
    v = seen(t, A, tx(A), None)
    assert v.record is not None and v.record.incarnation == 1
    assert v.record.message_id == f"{CHAIN}:tx:{A}/pending/1"
    t.emitted([v.record])
    # final: no longer followed, and not again while still subscribed
    t.emitted([mined.with_status("confirmed")])
    assert t.tracked == [] and t.to_poll() == []
    t.interest({A})
    assert t.tracked == []
    t.interest(set())  # unsubscribed: forgotten; a new subscription follows it again
    t.interest({A})
    assert t.tracked == [A]


def test_a_confirmed_block_orphaned_after_all_is_followed_again() -> None:
    """Confirmed by the node's finality tag, then orphaned by a deeper reorg within the window
    (the ledger emits ``removed``): the hash is followed again, so the block it lands in next
    is recorded (simulation seed 3088: it stayed ``removed`` for good, its block canonical)."""
    t = TxTracker(CHAIN)
    t.interest({A})
    v = seen(t, A, tx(A, block=B11), receipt(A, B11, 11))
    mined = t.mined_record(v, timestamp=123, events=[])
    t.emitted([mined])
    t.emitted([mined.with_status("confirmed")])
    assert t.tracked == []
    t.emitted([mined.with_status("removed")])
    assert t.tracked == [A] and t.to_poll() == [A]
    again = seen(t, A, tx(A, block=B11), receipt(A, B11, 11))
    assert (again.what, again.block_hash) == ("mined", B11)
    assert t.sender_nonce(A) == (SENDER, 3)  # what it knew of the transaction is kept


def test_a_receipt_the_cursor_does_not_hold_waits_and_a_deep_one_is_final() -> None:
    t = TxTracker(CHAIN)
    t.interest({A})
    other = "0x" + "ee" * 32
    assert seen(t, A, tx(A, block=other), receipt(A, other, 11)).what == "wait"  # reorg ahead
    assert seen(t, A, tx(A), receipt(A, "0x" + "12" * 32, 12)).what == "wait"  # above the tip
    v = seen(t, A, tx(A, block=B10), receipt(A, B10, 8))
    assert v.what == "mined" and v.final
    reverted = t.mined_record(seen(t, A, tx(A, block=B10), receipt(A, B10, 10, status=0)),
                              timestamp=None, events=[])
    assert reverted.result == "reverted"
    assert seen(t, A, tx(A, block=B10), None).what == "wait"  # mined, receipt not served yet


def test_gone_with_its_nonce_used_is_replaced_or_dropped() -> None:
    t = TxTracker(CHAIN)
    t.interest({A, B})
    assert seen(t, B, None, None).what == "wait"  # never seen: maybe not sent yet
    v = seen(t, A, tx(A, nonce=3), None)
    assert v.record is not None
    t.emitted([v.record])
    assert seen(t, A, None, None).what == "gone"
    assert t.sender_nonce(A) == (SENDER, 3)
    assert not t.nonce_used(A, 3)  # the node forgot it, its nonce is free: it may come back
    assert t.nonce_used(A, 4)
    rec = t.gone_record(A, C)
    assert (rec.event, rec.status, rec.stage, rec.replaced_by) == (
        "replaced", "confirmed", "replaced", C)
    assert rec.message_id == f"{CHAIN}:tx:{A}/confirmed"
    assert t.gone_record(A, None).stage == "dropped"
    t.emitted([rec])
    assert t.tracked == [B]


def test_the_checkpoint_keeps_every_fact() -> None:
    t = TxTracker(CHAIN, max_tracked=5)
    t.interest({A, B, C})
    v = seen(t, A, tx(A), None)
    assert v.record is not None
    t.emitted([v.record])
    m = seen(t, B, tx(B, block=B11), receipt(B, B11, 11))
    t.emitted([t.mined_record(m, timestamp=1, events=[])])
    doc = json.loads(json.dumps(t.to_doc()))
    back = TxTracker.from_doc(doc, CHAIN, max_tracked=5)
    assert back.to_doc() == t.to_doc()
    assert back.to_poll() == [A, C]
    assert seen(back, A, tx(A), None).what == "wait"  # its `pending` is not emitted twice
    assert TxTracker.from_doc(None, CHAIN).tracked == []


def test_tx_records_round_trip_and_ride_the_ledger() -> None:
    t = TxTracker(CHAIN)
    t.interest({A})
    v = seen(t, A, tx(A, block=B11), receipt(A, B11, 11))
    events = [{"contract": "DemoToken", "address": SENDER, "event": "Transfer",
               "args": {"value": "1"}, "log_index": 0}]
    rec = t.mined_record(v, timestamp=5, events=events)
    d = rec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert record_from_dict(d) == rec
    assert message_id(d) == f"{CHAIN}:{B11}:tx:{A}/pending"
    # the ledger's block machinery: pending now, confirmed at finality, removed by a reorg
    ledger = Ledger({"DemoToken": 3}, finality_depth=2)
    header = Header(11, B11, B10, 5)
    assert ledger.adopt(header, [rec], 11) == [rec]
    assert ledger.confirm(12) == []
    assert [r.status for r in ledger.confirm(13)] == ["confirmed"]
    ledger2 = Ledger.from_doc(json.loads(json.dumps(Ledger({}, finality_depth=2).to_doc())),
                              {}, finality_depth=2)
    ledger2.adopt(header, [rec], 11)
    back = Ledger.from_doc(json.loads(json.dumps(ledger2.to_doc())), {}, finality_depth=2)
    (removed,) = back.orphan([header])
    assert removed == rec.with_status("removed")
    assert back.incarnation(B11) == 1


def test_push_routes_tx_records_to_their_topic_only() -> None:
    rec = TxRecord(chain_id=CHAIN, tx_hash=A, event="pending").to_dict()
    assert topics_of(rec) == [f"tx:{A}"]
    for bad in ({**rec, "tx_hash": A.upper().replace("0X", "0x")}, {**rec, "tx_hash": None},
                {**rec, "status": "mined"}):
        with pytest.raises(InvalidRecord):
            validate(bad)


def test_tx_topics_on_the_wire() -> None:
    upper = "tx:0x" + "AB" * 32
    assert normalise_topic(upper) == "tx:0x" + "ab" * 32
    frame = wire.parse_client_frame(json.dumps({"type": "subscribe", "topic": upper}))
    assert isinstance(frame, wire.Subscribe) and frame.topic == "tx:0x" + "ab" * 32
    for bad in ("tx:0x1234", "tx:" + "ab" * 32, "tx:0x" + "zz" * 32, "tx:"):
        with pytest.raises(ProtocolError, match="a tx topic must be tx:<transaction hash>") as e:
            wire.parse_client_frame(json.dumps({"type": "subscribe", "topic": bad}))
        assert e.value.code == "unknown_topic"


def test_only_a_tx_pattern_grants_a_tx_topic() -> None:
    def grants(*patterns: str) -> bool:
        return Claims(user="u", wallets=(), topics=patterns, expires_at=0).allows(f"tx:{A}")

    assert not grants("*")  # an operator's `*` does not make the watcher follow every hash
    assert not grants("t*", "contract:*")
    assert grants("tx:*")
    assert grants(f"tx:{A}")
    assert grants("tx:0xaa*")
    assert not grants(f"tx:{B}")
    assert check_pattern("tx:0x" + "AA" * 32) == f"tx:{A}"


def test_only_the_built_in_demo_dev_token_grants_tx_topics(tmp_path: Path) -> None:
    from chainpush.push.config import load

    demo = load(None, dev_mode=True).auth.dev_topics
    assert "tx:*" in demo and "app:demo-txs" in demo
    configured = tmp_path / "chainpush.toml"
    configured.write_text("[auth]\nport = 8700\n")
    assert load(configured, dev_mode=True).auth.dev_topics == ("contract:*", "state:*")
    configured.write_text('[auth]\ndev_topics = ["tx:*"]\n')
    assert load(configured, dev_mode=True).auth.dev_topics == ("tx:*",)


def test_watch_config_keys_are_validated() -> None:
    from chainpush.watcher.config import ConfigError, WatchConfig

    assert WatchConfig().tx_lifecycle is False and WatchConfig().max_tracked_txs == 10_000
    with pytest.raises(ConfigError, match=r"\[watch\] max_tracked_txs must be an integer >= 1, "
                                          "got 0"):
        WatchConfig(max_tracked_txs=0)
    with pytest.raises(ConfigError, match=r"\[watch\] tx_lifecycle must be true or false, "
                                          "got 'yes'"):
        WatchConfig(tx_lifecycle="yes")  # type: ignore[arg-type]


def test_a_malformed_answer_is_an_rpc_error_naming_the_transaction() -> None:
    """Through the stepper (the simulation's node, directed): a receipt whose blockNumber is
    not hex ends the session with an RPCError (a new session retries), never a bare
    ValueError out of the generator, which would stop the watcher."""
    from dataclasses import replace

    from tests.sim.watcher_sim import FAST, SimFailure, directed

    sim = directed(window=4, k=1, finality_depth=2)
    sim.watch = replace(sim.watch, tx_lifecycle=True)
    sim.stepper = sim._new_stepper()
    sim.chain.mine(2, logs_of=(FAST,))
    block = sim.chain.blocks[sim.chain.canon[2]]
    tx_hash = block.logs[0]["transactionHash"]
    sim.interest["tx:"] = {tx_hash}
    answer = sim._answer

    def node(method: str, params: list[object], f: object) -> object:
        got = answer(method, params, f)  # type: ignore[arg-type]
        if method == "eth_getTransactionReceipt" and isinstance(got, dict):
            return {**got, "blockNumber": "two"}
        return got

    sim._answer = node  # type: ignore[method-assign]
    with pytest.raises(SimFailure, match="did not catch up"):
        sim.catch_up()  # every session ends at the malformed receipt
    assert sim.failures > 0
    assert not [m for m in sim.store.order if sim.store.docs[m].get("kind") == "tx"]
    sim._answer = answer  # type: ignore[method-assign]
    sim.catch_up()
    (mined,) = [sim.store.docs[m] for m in sim.store.order
                if sim.store.docs[m].get("kind") == "tx"]
    assert (mined["stage"], mined["block_hash"]) == ("mined", block.hash)

