"""The ledger of emitted statuses: confirmations, retraction on reorg, restart from its doc."""

from __future__ import annotations

from watcher.cursor import Header
from watcher.ledger import Ledger
from watcher.record import EventRecord, StateRecord


def hdr(n: int, tag: str = "a") -> Header:
    return Header(n, f"0x{tag}{n:063x}", f"0x{tag}{n - 1:063x}", 1000 + n)


def ev(contract: str, h: Header, i: int = 0) -> EventRecord:
    return EventRecord(
        chain_id=1, contract=contract, address="0x" + "11" * 20, event="Transfer",
        args={"value": str(i)}, block_number=h.number, block_hash=h.hash,
        block_timestamp=h.timestamp, tx_hash="0x" + "22" * 32, log_index=i,
    )


def ids(records: list[EventRecord] | list[object]) -> list[str]:
    return [r.message_id for r in records]  # type: ignore[attr-defined]


def test_pending_at_once_confirmed_when_deep_removed_on_reorg() -> None:
    ledger = Ledger({"Fast": 0, "Slow": 2})
    b1, b2, b3 = hdr(1), hdr(2), hdr(3)
    out = ledger.add_block(b1, [ev("Fast", b1), ev("Slow", b1, 1)])
    assert ids(out) == [ev("Fast", b1).message_id]
    assert ledger.confirm(1) == []
    ledger.add_block(b2, [ev("Slow", b2)])
    assert ledger.confirm(2) == []
    ledger.add_block(b3, [])
    assert ids(ledger.confirm(3)) == [ev("Slow", b1, 1).with_status("confirmed").message_id]
    # b2 and b3 orphaned: b2's Slow record was never emitted, so nothing to retract for it
    assert ledger.orphan([b2, b3]) == []
    # b1 orphaned: its pending and confirmed records are both retracted
    removed = ledger.orphan([b1])
    assert sorted(r.status for r in removed) == ["removed", "removed"]
    assert {r.id for r in removed} == {ev("Fast", b1).id, ev("Slow", b1, 1).id}


def test_finalize_emits_what_still_waited_and_keeps_state() -> None:
    ledger = Ledger({"Slow": 5})
    b1 = hdr(1)
    st = StateRecord(chain_id=1, contract="Slow", address="0x" + "11" * 20, function="get",
                     inputs=[], value="2020", block_number=1, block_hash=b1.hash,
                     block_timestamp=1)
    ledger.add_block(b1, [ev("Slow", b1), st])
    assert ledger.last_state(st.key) == (True, "2020")
    out = ledger.finalize(b1)
    assert [r.status for r in out] == ["confirmed", "confirmed"]
    assert ledger.last_state(st.key) == (True, "2020")
    assert ledger.final_state == {"Slow.get()": "2020"}


def test_round_trip_through_the_checkpoint_doc() -> None:
    ledger = Ledger({"Fast": 0, "Slow": 1})
    b1, b2 = hdr(1), hdr(2)
    ledger.add_block(b1, [ev("Fast", b1), ev("Slow", b1, 1)])
    restored = Ledger.from_doc(ledger.to_doc(), {"Fast": 0, "Slow": 1})
    restored.add_block(b2, [])
    assert ids(restored.confirm(2)) == [ev("Slow", b1, 1).with_status("confirmed").message_id]
    assert ids(restored.orphan([b1])) == [
        ev("Fast", b1).with_status("removed").message_id,
        ev("Slow", b1, 1).with_status("removed").message_id,
    ]
