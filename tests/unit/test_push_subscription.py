"""The resume cursor and argument filters."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from chainpush.push.subscription import Cursor, Filter


def test_live_in_order_and_duplicates() -> None:
    c = Cursor(next=1)
    assert [c.offer(o) for o in (1, 2, 2, 1, 3)] == [
        "deliver", "deliver", "duplicate", "duplicate", "deliver"]
    assert c.next == 4


def test_gap_starts_one_repair_and_waits() -> None:
    c = Cursor(next=1)
    assert c.offer(3) == "repair"
    assert c.offer(4) == "wait"
    assert not c.start_repair()
    assert [c.fetched(o) for o in (1, 2, 3)] == [True, True, True]
    assert not c.finish_page(full_page=False)  # 4 went past while reading
    assert c.fetched(4)
    assert c.finish_page(full_page=False)
    assert c.offer(5) == "deliver"


def test_full_page_reads_again() -> None:
    c = Cursor(next=1)
    assert c.start_repair()
    assert c.fetched(1) and c.fetched(2)
    assert not c.finish_page(full_page=True)
    assert c.finish_page(full_page=False)


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=60),
       st.randoms(use_true_random=False), st.integers(min_value=1, max_value=7))
def test_delivers_each_offset_once_in_order(
    total: int, since: int, rng: random.Random, page: int
) -> None:
    """Model: MongoDB holds 1..stored, live traffic arrives shuffled and lossy; every offset
    after ``since`` is delivered exactly once, in order, whatever the interleaving."""
    since = min(since, total)
    stored = 0
    delivered: list[int] = []
    c = Cursor(next=since + 1)
    assert c.start_repair()
    repairing = True
    for _ in range(100 * total + 100):
        if stored < total and (not repairing or rng.random() < 0.5):
            stored += 1  # collect stores it, then dispatch delivers it live, or loses it
            live = [stored] if rng.random() < 0.7 else []
            replayed = [rng.randint(1, stored)] if rng.random() < 0.2 else []
            for offset in live + replayed:
                action = c.offer(offset)
                if action == "deliver":
                    delivered.append(offset)
                repairing = repairing or action == "repair"
        elif repairing:
            page_rows = list(range(c.next, min(stored, c.next + page - 1) + 1))
            for offset in page_rows:
                if c.fetched(offset):
                    delivered.append(offset)
            repairing = not c.finish_page(full_page=len(page_rows) == page)
        elif c.next <= stored:
            assert c.start_repair()  # the node's periodic reconcile finds the lost tail
            repairing = True
        else:
            break
    assert delivered == list(range(since + 1, total + 1))


RECORD = {"event": "Transfer", "status": "pending", "kind": "event",
          "args": {"to": "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2", "value": "7",
                   "order": {"ids": ["1", "2"]}, "ok": True}}


def test_filters() -> None:
    assert Filter().matches(RECORD)
    assert Filter({"event": ("Transfer", "Approval")}).matches(RECORD)
    assert not Filter({"event": ("Approval",)}).matches(RECORD)
    assert Filter({"args.to": ("0xab8483f64d9c6d1ecf9b849ae677dd3315835cb2",)}).matches(RECORD)
    assert Filter({"args.value": (7,)}).matches(RECORD)
    assert Filter({"args.order.ids.1": ("2",)}).matches(RECORD)
    assert Filter({"args.ok": (True,)}).matches(RECORD)
    assert not Filter({"args.ok": (1,)}).matches(RECORD)
    assert not Filter({"args.missing": ("x",)}).matches(RECORD)
    assert not Filter({"event": ("Transfer",), "status": ("removed",)}).matches(RECORD)
