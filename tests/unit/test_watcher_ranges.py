"""The eth_getLogs range planner and the provider-error classifier."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainpush.watcher.ranges import RangePlanner, classify, suggested_span


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (-32005, "query returned more than 10000 results. Try with this block range [0x1, 0x2]",
         "range"),
        (-32602, "block range is too wide", "range"),
        (-32000, "exceed maximum block range: 2000", "range"),
        (-32602, "Log response size exceeded. You can make eth_getLogs requests with up to a 2K "
                 "block range", "range"),
        (429, "Too Many Requests", "rate"),
        (-32005, "daily request count exceeded, request rate limited", "rate"),
        (-32602, "BlockOutOfRangeError: block height is 0 but requested was 5", None),
        (-32000, "execution reverted", None),
    ],
)
def test_classify(code: int, message: str, kind: str | None) -> None:
    assert classify(code, message) == kind


def test_suggested_span() -> None:
    assert suggested_span("Try with this block range [0x10, 0x1f].") == 16
    assert suggested_span("exceed maximum block range: 2000") == 2000
    assert suggested_span("nothing here") is None


def test_shrink_then_grow_back() -> None:
    p = RangePlanner(max_range=1000, grow_after=2)
    assert p.plan(1, 5000) == (1, 1000)
    assert p.refused(1000)
    assert p.plan(1, 5000) == (1, 500)
    assert p.refused(500, "Try with this block range [0x1, 0x64]")
    assert p.span == 100
    p.succeeded(100)
    p.succeeded(100)
    assert p.span == 200
    for _ in range(20):
        p.succeeded(p.span)
    assert p.span == 1000
    assert p.plan(10, 20) == (10, 20)


def test_refusal_at_the_minimum_says_back_off() -> None:
    p = RangePlanner(max_range=4, min_range=1)
    assert p.refused(4) and p.refused(2)
    assert p.span == 1
    assert p.refused(1) is False


@given(st.integers(1, 10_000), st.lists(st.booleans(), max_size=200))
def test_plans_always_cover_forward_within_limits(max_range: int, outcomes: list[bool]) -> None:
    p = RangePlanner(max_range=max_range)
    start, end = 0, 50_000
    for ok in outcomes:
        lo, hi = p.plan(start, end)
        assert lo == start and lo <= hi <= end
        assert 1 <= hi - lo + 1 <= max_range
        if ok:
            p.succeeded(hi - lo + 1)
            start = hi + 1
            if start > end:
                break
        else:
            p.refused(hi - lo + 1)


def test_backfill_progress_reports_rate_and_eta_when_due() -> None:
    from chainpush.watcher.progress import BackfillProgress

    now = [100.0]
    p = BackfillProgress(1, 1000, 5.0, clock=lambda: now[0])
    now[0] = 102.0
    assert p.update(200, 50) is None  # not due yet
    now[0] = 110.0
    assert p.update(500, 120) == ("backfill at block 500 of 1000 (50%): 50 blocks/s, "
                                  "120 records, eta 10 s")
    assert p.update(501, 121) is None
