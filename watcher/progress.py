"""Backfill progress: blocks/s and ETA, as a terminal status line or as periodic log lines. Pure:
``update()`` returns the text when one is due; the caller writes it (``Watcher``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class BackfillProgress:
    first: int
    target: int
    every_s: float
    clock: Callable[[], float] = time.monotonic
    began: float = field(default=0.0)
    _last: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.began = self._last = self.clock()

    def text(self, block: int, records: int) -> str:
        done = block - self.first + 1
        total = max(1, self.target - self.first + 1)
        elapsed = max(self.clock() - self.began, 1e-9)
        rate = done / elapsed
        eta = (self.target - block) / rate if rate > 0 else float("inf")
        return (f"backfill at block {block} of {self.target} ({100 * done / total:.0f}%): "
                f"{rate:,.0f} blocks/s, {records} records, eta {eta:.0f} s")

    def update(self, block: int, records: int) -> str | None:
        """The status text if ``every_s`` passed since the last one, else None."""
        now = self.clock()
        if now - self._last < self.every_s:
            return None
        self._last = now
        return self.text(block, records)
