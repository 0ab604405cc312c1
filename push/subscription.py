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

import re
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


#: a list index in a filter path: ASCII digits only (``'²'.isdigit()`` is true but ``int('²')``
#: raises), and short (``int()`` refuses more than 4,300 digits; no record has a list that long).
MAX_INDEX_DIGITS = 6

Path = tuple[str | int, ...]
#: a path part: a Solidity identifier (argument, struct field) or a list index
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}")


def compile_path(key: str) -> Path:
    """``"args.orders.0.maker"`` → ``("args", "orders", 0, "maker")``; ValueError if malformed.

    A part made of ASCII digits is a list index (it also matches a mapping key of that text:
    :func:`_lookup` tries both); any other part must be an identifier.
    """
    parts: list[str | int] = []
    for part in key.split("."):
        if part.isascii() and part.isdigit():
            if len(part) > MAX_INDEX_DIGITS:
                raise ValueError(f"filter key {key[:50]!r}: index {part[:20]}… is longer than "
                                 f"{MAX_INDEX_DIGITS} digits")
            parts.append(int(part))
        elif _NAME.fullmatch(part):
            parts.append(part)
        else:
            raise ValueError(f"filter key {key[:50]!r}: each part must be a name (letters, "
                             "digits, _, $) or an index (ASCII digits)")
    return tuple(parts)


def _lookup(record: Mapping[str, Any], path: Path) -> tuple[bool, object]:
    value: object = record
    for part in path:
        if isinstance(value, Mapping):
            key = part if isinstance(part, str) else str(part)
            if key not in value:
                return False, None
            value = value[key]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return False, None
    return True, value


_NO_MATCH = object()


def normalise(value: object) -> object:
    """The form a filter value and a record value are compared in (set membership, O(1)):
    addresses (``0x…`` strings) lower-cased, so checksum case does not matter; integers as
    their decimal string, since uints travel as strings; booleans stay booleans (``True`` is
    never ``"1"``); anything else (floats, null, objects) matches nothing."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        return text.lower() if text.startswith("0x") else text
    if kind is bool:
        return value
    if kind is int:
        return str(value)
    return _NO_MATCH


@dataclass(frozen=True, slots=True)
class Filter:
    """``{"event": ("Transfer",), "args.to": ("0x…",)}``: every key must match one of its values.

    Keys are ``event``, ``status``, ``kind`` or ``args.<path>`` (dots descend into tuples and list
    indexes). Addresses compare case-insensitively; an integer matches its decimal string.
    Compiled once at construction (paths split, values normalised into sets), so
    :meth:`matches` costs O(number of keys) per record, whatever the number of values.
    Construction raises ValueError for a malformed path (the wire parser validates the shape
    and size first: :func:`push.wire.parse_client_frame`).
    """

    conditions: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    _tests: tuple[tuple[Path, frozenset[object]], ...] = field(init=False, repr=False,
                                                                compare=False)

    def __post_init__(self) -> None:
        tests = []
        for key, wanted in self.conditions.items():
            values = frozenset(v for v in map(normalise, wanted) if v is not _NO_MATCH)
            tests.append((compile_path(key), values))
        object.__setattr__(self, "_tests", tuple(tests))

    def matches(self, record: Mapping[str, Any]) -> bool:
        for path, wanted in self._tests:
            found, got = _lookup(record, path)
            if not found:
                return False
            got = normalise(got)
            if got is _NO_MATCH or got not in wanted:
                return False
        return True
