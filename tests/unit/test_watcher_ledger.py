"""The ledger of emitted statuses: confirmations, retraction on reorg, restart from its doc;
and cursor + ledger together against a model chain with reorgs and crashes (hypothesis)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from chainpush.watcher.cursor import BlockCursor, Header
from chainpush.watcher.ledger import Ledger, apply_events
from chainpush.watcher.record import EventRecord, StateRecord
from tests.unit.test_watcher_cursor import ModelChain


def hdr(n: int, tag: str = "a") -> Header:
    return Header(n, f"0x{tag}{n:063x}", f"0x{tag}{n - 1:063x}", 1000 + n)


def ev(contract: str, h: Header, i: int = 0) -> EventRecord:
    return EventRecord(
        chain_id=1, contract=contract, address="0x" + "11" * 20, event="Transfer",
        args={"value": str(i)}, block_number=h.number, block_hash=h.hash,
        block_timestamp=h.timestamp, tx_hash="0x" + "22" * 32, log_index=i,
    )


def ids(records: Sequence[object]) -> list[str]:
    return [r.message_id for r in records]  # type: ignore[attr-defined]


def test_pending_at_once_confirmed_when_deep_removed_on_reorg() -> None:
    ledger = Ledger({"Fast": 0, "Slow": 2}, finality_depth=5)
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
    ledger = Ledger({"Slow": 5}, finality_depth=6)
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
    ledger = Ledger({"Fast": 0, "Slow": 1}, finality_depth=3)
    b1, b2 = hdr(1), hdr(2)
    ledger.add_block(b1, [ev("Fast", b1), ev("Slow", b1, 1)])
    restored = Ledger.from_doc(ledger.to_doc(), {"Fast": 0, "Slow": 1}, finality_depth=3)
    restored.add_block(b2, [])
    assert ids(restored.confirm(2)) == [ev("Slow", b1, 1).with_status("confirmed").message_id]
    assert ids(restored.orphan([b1])) == [
        ev("Fast", b1).with_status("removed").message_id,
        ev("Slow", b1, 1).with_status("removed").message_id,
    ]


def test_k0_pending_is_confirmed_once_final_and_never_after_removal() -> None:
    ledger = Ledger({"Fast": 0, "Slow": 2}, finality_depth=3)
    b = [hdr(n) for n in range(1, 6)]
    assert [r.status for r in ledger.add_block(b[0], [ev("Fast", b[0])])] == ["pending"]
    ledger.add_block(b[1], [ev("Fast", b[1], 1)])
    assert ledger.confirm(3) == []  # b1 is 2 deep: not final yet
    # b1 3 deep: final; the pending record is confirmed (same id), exactly once
    assert ids(ledger.confirm(4)) == [ev("Fast", b[0]).with_status("confirmed").message_id]
    assert ledger.confirm(4) == []
    # round trip: b2 is still due its confirmation after a restart, b1 is not
    ledger = Ledger.from_doc(ledger.to_doc(), {"Fast": 0, "Slow": 2}, finality_depth=3)
    assert ledger.confirm(4) == []
    # b2 is orphaned before it got final: removed, and no confirmed ever after
    assert [r.status for r in ledger.orphan([b[1]])] == ["removed"]
    assert ledger.confirm(50) == []
    # a confirmed record orphaned by a reorg deeper than finality_depth is retracted too
    assert ids(ledger.orphan([b[0]])) == [ev("Fast", b[0]).with_status("removed").message_id]


def test_finalize_confirms_a_pending_record_that_skipped_confirm() -> None:
    ledger = Ledger({"Fast": 0}, finality_depth=3)
    b1 = hdr(1)
    ledger.add_block(b1, [ev("Fast", b1)])
    # the block left the window in the same step that added it (a long live batch)
    assert ids(ledger.finalize(b1)) == [ev("Fast", b1).with_status("confirmed").message_id]


def test_adopt_emits_by_depth_and_is_idempotent() -> None:
    ledger = Ledger({"Fast": 0, "Slow": 2}, finality_depth=3)
    b1, b3 = hdr(1), hdr(3)
    ledger.add_block(b1, [ev("Fast", b1)])
    late = [ev("New", b1, 5), ev("Slow", b1, 6)]
    # tip 4: b1 is 3 deep, final for K = 0 and past K = 2: confirmed at once, no pending
    assert [(r.contract, r.status) for r in ledger.adopt(b1, late, 4)] == [
        ("New", "confirmed"), ("Slow", "confirmed")]
    assert ledger.adopt(b1, late, 4) == []  # a repeated catch-up adds nothing
    # b3 is 1 deep: K = 0 pending now, K = 2 nothing yet; both follow the usual rules after
    out = ledger.adopt(b3, [ev("New", b3), ev("Slow", b3, 1)], 4)
    assert [(r.contract, r.status) for r in out] == [("New", "pending")]
    assert [(r.contract, r.status, r.block_number) for r in ledger.confirm(6)] == [
        ("Fast", "confirmed", 1), ("New", "confirmed", 3), ("Slow", "confirmed", 3)]
    removed = ledger.orphan([b1])
    assert {(r.contract, r.status) for r in removed} == {
        ("Fast", "removed"), ("New", "removed"), ("Slow", "removed")}


# --- cursor + ledger together, against a model chain (hypothesis) --------------------------------

CONF = {"Fast": 0, "Slow": 2}
FINALITY = 4


def block_records(h: Header) -> list[EventRecord]:
    """Deterministic per block hash: 0 to 3 logs, alternating the two contracts."""
    n = int(h.hash[-2:], 16) % 4
    return [ev("Fast" if (i + h.number) % 2 else "Slow", h, i) for i in range(n)]


steps = st.lists(
    st.one_of(
        st.tuples(st.just("mine"), st.integers(1, 6)),
        st.tuples(st.just("reorg"), st.integers(1, 5), st.integers(0, 4)),
        st.tuples(st.just("crash"), st.booleans()),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(FINALITY + 2, 10))
def test_emitted_stream_converges_to_the_canonical_chain(
    operations: list[tuple[object, ...]], window: int
) -> None:
    chain = ModelChain()
    chain.mine(3)
    cursor = BlockCursor([chain.at(3)], window=window)
    ledger = Ledger(CONF, finality_depth=FINALITY)
    committed = (cursor.to_doc(), ledger.to_doc())
    store: dict[str, dict[str, object]] = {}

    def step(commit: bool) -> None:
        nonlocal cursor, ledger, committed
        events = []
        cursor.receive_head(chain.head)
        events += cursor.events_received()
        while cursor.next_number <= chain.head.number:
            cursor.receive_block(chain.at(cursor.next_number))
            events += cursor.events_received()
        out = apply_events(ledger, events, block_records, cursor.tip.number)
        if commit:  # accept, then checkpoint
            for r in out:
                store[r.message_id] = dict(r.to_dict())
            committed = (cursor.to_doc(), ledger.to_doc())
        else:  # the process died before accept: restart from the checkpoint
            cursor = BlockCursor.from_doc(committed[0])
            ledger = Ledger.from_doc(committed[1], CONF, finality_depth=FINALITY)

    for op in operations:
        if op[0] == "mine":
            chain.mine(int(op[1]))  # type: ignore[call-overload]
        elif op[0] == "reorg":
            depth = min(int(op[1]), window - 2, len(cursor.chain) - 1)  # type: ignore[call-overload]
            if depth >= 1:
                chain.reorg(depth, depth + int(op[2]))  # type: ignore[call-overload]
        step(commit=not (op[0] == "crash" and op[1]))
    step(commit=True)

    removed = {str(d["id"]) for d in store.values() if d["status"] == "removed"}
    emitted = {str(d["id"]) for d in store.values() if d["status"] != "removed"}
    assert removed <= emitted  # only what was emitted is ever retracted
    live = {m for m, d in store.items() if d["status"] != "removed" and d["id"] not in removed}
    head = chain.head.number
    want = set()
    for h in chain.blocks[4:]:
        for r in block_records(h):
            k = CONF[r.contract]
            if k == 0:  # every block went through the live path: pending, then confirmed
                want.add(r.message_id)
                if head - h.number >= FINALITY:
                    want.add(r.with_status("confirmed").message_id)
            elif head - h.number >= k:
                want.add(r.with_status("confirmed").message_id)
    assert live == want
