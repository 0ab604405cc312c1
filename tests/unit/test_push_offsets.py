"""The pure offset/hole decisions (push/offsets.py, docs/seams.md §2)."""

from __future__ import annotations

import random

from chainpush.push.offsets import (
    bindings,
    capped_head,
    first_hole,
    hole_kind,
    parse_stream,
    readable,
    row_id,
)


def stream(next_: int | None, reserved: dict[int, str] | None = None, at: float = 100.0,
           ) -> object:
    doc: dict[str, object] = {"_id": "contract:A", "epoch": "e1"}
    if next_ is not None:
        doc["next"] = next_
    if reserved:
        doc["r"] = {f"o{o}": {"m": m, "at": at} for o, m in reserved.items()}
        doc["open"] = len(reserved)
    return parse_stream(doc)


def test_bindings_round_trip_through_the_document() -> None:
    entries = bindings(7, ["a/pending", "b.c:d/confirmed"], 5.0)
    assert entries == {"r.o8": {"m": "a/pending", "at": 5.0},
                       "r.o9": {"m": "b.c:d/confirmed", "at": 5.0}}
    doc = {"_id": "t", "epoch": "e", "next": 9, "open": 2,
           "r": {k.removeprefix("r."): v for k, v in entries.items()}}
    parsed = parse_stream(doc)
    assert parsed.offset_of("b.c:d/confirmed") == 9 and parsed.offset_of("x") is None
    assert [r.offset for r in parsed.stale(10.0, 5.0)] == [8, 9]
    assert parsed.stale(9.0, 5.0) == []
    # junk in r (a hand edit) is ignored, never fatal
    junk = parse_stream({"_id": "t", "r": {"o1x": {"m": "a"}, "o2": "b", "q3": {"m": "c"}}})
    assert junk.reserved == {} and junk.next is None and junk.epoch is None


def test_row_ids_are_unambiguous() -> None:
    # topics are printable (docs/seams.md §3): the first newline splits the pair back
    for topic in ("contract:A", "app:a b/c:d", "inbox:user@example.com"):
        assert topic.isprintable()
        assert row_id(topic, "31337:0xab:7/pending/1").split("\n", 1) == \
            [topic, "31337:0xab:7/pending/1"]


def test_a_pending_hole_stops_every_reader_and_a_lost_one_is_passed() -> None:
    # rows 1, 2, 4, 5 stored; 3 reserved (its writer is between reservation and rows)
    pending = stream(5, {3: "m3"})
    assert first_hole(1, [1, 2, 4, 5]) == 3
    assert hole_kind(3, pending) == "pending"
    assert readable(1, [1, 2, 4, 5], pending) == 2  # 1, 2: never 4 before 3
    assert readable(3, [4, 5], pending) == 0
    # 3 neither reserved nor stored, below next: lost (deleted by hand), passed over
    lost = stream(5)
    assert hole_kind(3, lost) == "lost"
    assert readable(1, [1, 2, 4, 5], lost) == 4
    # a stream from before reservations (no next) has no pending holes
    assert readable(1, [2], stream(None)) == 1
    # an offset above next (as read) was not handed out then: its rows, read after, may be
    # later reservations' — pending, never passed (the simulation's seed 150)
    assert hole_kind(3, stream(2)) == "pending"
    assert readable(1, [1, 2, 4], stream(2)) == 2
    assert readable(1, [1, 2, 3], pending) == 3 and first_hole(1, [1, 2, 3]) is None


def test_head_is_capped_below_the_lowest_pending_hole() -> None:
    assert capped_head(9, stream(9, {4: "m4", 7: "m7"})) == 3
    assert capped_head(9, stream(9)) == 9
    assert capped_head(9, None) == 9
    assert capped_head(12, stream(10)) == 10  # rows above next came after the streams read
    assert capped_head(1, stream(1, {1: "m1"})) == 0


def test_readable_never_passes_a_pending_hole_whatever_the_rows() -> None:
    """Property, seeded: over random streams (rows present, reservations open, lost offsets),
    the run a reader takes is contiguous from ``first`` except for lost offsets, and stops
    before the first pending one."""
    rng = random.Random(12)
    for _ in range(2000):
        top = rng.randint(0, 30)
        kinds = {o: rng.choice(["row", "row", "row", "pending", "lost"]) for o in
                 range(1, top + 1)}
        st = stream(top, {o: f"m{o}" for o, k in kinds.items() if k == "pending"})
        first = rng.randint(1, top + 1)
        offsets = [o for o in range(first, top + 1) if kinds[o] == "row"]
        n = readable(first, offsets, st)
        taken = offsets[:n]
        blocked = [o for o in range(first, top + 1) if kinds[o] == "pending"]
        if blocked:
            assert all(o < blocked[0] for o in taken)
            assert taken == [o for o in offsets if o < blocked[0]]
        else:
            assert taken == offsets
