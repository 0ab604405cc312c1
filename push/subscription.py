"""Subscriptions: argument filters and the per-subscription resume cursor.

Pure, sans-I/O. The push node feeds each :class:`Cursor` the offsets it sees (live from Redis, or
read back from MongoDB) and does what the returned action says.

Invariant: a subscriber receives the offsets ``since+1, since+2, …`` of its topic, each once, in
order. Live messages are delivered only when ``offset == next``. Any other state is repaired from
MongoDB, which holds every offset before any node hears of it (collect stores, then dispatches):

* ``offset < next``: a duplicate (a replay re-dispatched, or already read from history) → skip;
* ``offset > next``: a gap (pub/sub lost a message, or history is still being read) → repair:
  read ``next…`` from MongoDB in pages, deliver what follows on, then go live again. Live
  messages that arrive during a repair are not queued: the cursor remembers the highest such
  offset (``missed``), and the repair reads again until it has passed it, so nothing is lost and
  memory stays bounded however long the repair takes.
* subscribing with ``since`` starts in repair (history first), which is the history → live
  switch: no gap, no duplicate, no reordering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["deliver", "duplicate", "repair", "wait"]


@dataclass(slots=True)
class Cursor:
    """Where one subscription stands in its topic."""

    next: int
    repairing: bool = False
    missed: int = 0

    def offer(self, offset: int) -> Action:
        """A live message arrived. ``deliver`` (cursor advanced), ``duplicate`` (skip it),
        ``repair`` (start a repair task now), or ``wait`` (a repair is running; skip it)."""
        if self.repairing:
            self.missed = max(self.missed, offset)
            return "wait"
        if offset < self.next:
            return "duplicate"
        if offset == self.next:
            self.next += 1
            return "deliver"
        self.repairing = True
        self.missed = offset
        return "repair"

    def start_repair(self) -> bool:
        """Enter repair (history read); False if one is already running (do not start another)."""
        if self.repairing:
            return False
        self.repairing = True
        return True

    def fetched(self, offset: int) -> bool:
        """A message read from MongoDB during repair: True → deliver it (cursor advanced)."""
        if offset == self.next:
            self.next += 1
            return True
        return False

    def finish_page(self, *, full_page: bool) -> bool:
        """After delivering one page of a repair: True → repair done, the cursor is live;
        False → read the next page (the page was full, or live messages went past it)."""
        if full_page or self.missed >= self.next:
            return False
        self.repairing = False
        self.missed = 0
        return True


def _lookup(record: Mapping[str, Any], path: str) -> tuple[bool, object]:
    value: object = record
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _same(want: object, got: object) -> bool:
    if isinstance(want, str) and isinstance(got, str) and want.startswith("0x"):
        return want.lower() == got.lower()  # addresses: checksum case must not matter
    if isinstance(want, int) and not isinstance(want, bool) and isinstance(got, str):
        return got == str(want)  # uints travel as decimal strings
    return type(want) is type(got) and want == got


@dataclass(frozen=True, slots=True)
class Filter:
    """``{"event": ("Transfer",), "args.to": ("0x…",)}``: every key must match one of its values.

    Keys are ``event``, ``status``, ``kind`` or ``args.<path>`` (dots descend into tuples and list
    indexes). Addresses compare case-insensitively; an integer matches its decimal string.
    """

    conditions: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def matches(self, record: Mapping[str, Any]) -> bool:
        for key, wanted in self.conditions.items():
            found, got = _lookup(record, key)
            if not found or not any(_same(w, got) for w in wanted):
                return False
        return True
