"""Plan ``eth_getLogs`` block ranges: shrink when the provider refuses, grow back when it can.

Providers cap ``eth_getLogs`` by block span or by result count and say so in many dialects
(geth: "query returned more than 10000 results", Infura -32005 "query returned more than 10000
results. Try with this block range [0x1, 0x2]", Alchemy "Log response size exceeded…", others
"block range is too wide", "exceed maximum block range: 2000", HTTP 413/429). ``classify``
reads one; ``RangePlanner`` halves the span on a refusal (or jumps to the span the provider
suggests) and doubles it again after a few successes, never above ``max_range``. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Refusal = Literal["range", "rate"]

_RANGE_PATTERNS = re.compile(
    r"(more than \d+ results|too many (results|logs|blocks)|block range|range (is )?too "
    r"(large|wide|big)|exceed(s|ed)? (the )?max(imum)?|response size|limit exceeded|"
    r"query timeout|range limit|max(imum)? range)",
    re.IGNORECASE,
)
_RATE_PATTERNS = re.compile(r"(rate limit|too many requests|429|capacity|throttl)", re.IGNORECASE)
_SUGGESTED = re.compile(r"\[\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*(0x[0-9a-fA-F]+|\d+)\s*\]")
_MAX_N = re.compile(r"(?:max(?:imum)?(?: block)? range(?: is| of)?:?|up to)\s*(\d+)", re.I)


def classify(code: int | None, message: str) -> Refusal | None:
    """``"rate"`` for rate limiting, ``"range"`` for span/result limits, else ``None``."""
    if code == 429 or _RATE_PATTERNS.search(message):
        return "rate"
    if code == 413 or _RANGE_PATTERNS.search(message):
        return "range"
    return None


def suggested_span(message: str) -> int | None:
    """The span a provider suggests ("Try with this block range [0x10, 0x1f]" → 16)."""
    m = _SUGGESTED.search(message)
    if m:
        lo, hi = (int(x, 0) for x in m.groups())
        if hi >= lo:
            return hi - lo + 1
    m = _MAX_N.search(message)
    if m:
        return max(1, int(m.group(1)))
    return None


@dataclass(slots=True)
class RangePlanner:
    """Current ``eth_getLogs`` span; feed it outcomes, ask it for the next range."""

    max_range: int
    min_range: int = 1
    grow_after: int = 3
    span: int = field(default=0)
    _streak: int = 0

    def __post_init__(self) -> None:
        if self.max_range < 1:
            raise ValueError(f"max_range must be >= 1, got {self.max_range}")
        if not 1 <= self.min_range <= self.max_range:
            raise ValueError(f"min_range must be in 1..{self.max_range}, got {self.min_range}")
        if self.span <= 0:
            self.span = self.max_range

    def plan(self, start: int, end: int) -> tuple[int, int]:
        """The next range ``[start, to]`` with ``to <= end`` (``start <= end`` required)."""
        if start > end:
            raise ValueError(f"empty range {start}..{end}")
        return start, min(end, start + self.span - 1)

    def succeeded(self, span: int) -> None:
        """A range of ``span`` blocks was served: after ``grow_after`` in a row, double."""
        if span < self.span:
            return  # a short last range says nothing about the limit
        self._streak += 1
        if self._streak >= self.grow_after and self.span < self.max_range:
            self.span = min(self.max_range, self.span * 2)
            self._streak = 0

    def refused(self, span: int, message: str = "") -> bool:
        """A range of ``span`` blocks was refused. Returns False when already at the minimum
        (the caller must back off instead of shrinking)."""
        self._streak = 0
        if span <= self.min_range:
            return False
        hint = suggested_span(message)
        new = hint if hint is not None and hint < span else span // 2
        self.span = max(self.min_range, min(new, self.max_range))
        return True
