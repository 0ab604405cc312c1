"""Offsets by reservation: the pure decisions behind ``streams.next`` / ``streams.r`` (docs/seams.md
§2, Offsets).

Pure, sans-I/O: :mod:`push.store` reads and writes the documents, :mod:`push.collect` sequences
the round trips; what an offset, a reservation or a hole *means* is decided here.

* A topic's ``streams`` document carries ``next`` (the last offset handed out) and ``r``, the open
  reservations ``r.o<offset> = {m: msg_id, at: unix s}``. A writer reserves ``next+1 … next+k``
  and binds them to its messages in one compare-and-swap, so no offset is ever handed out without
  the message that owns it being written down next to it.
* An offset ``<= next`` without a row is a *hole*: **pending** while ``r`` holds it (a writer is
  between reservation and rows, or died there and the repair or a replay will fill it), **lost**
  otherwise (the row was deleted by hand). Readers stop before a pending hole and skip a lost one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: separator of a ``messages`` row's ``_id`` (``<topic>\n<msg_id>``): topics are printable
#: (docs/seams.md §3), so it cannot occur in one and the pair is unambiguous.
ROW_SEP = "\n"
#: the key prefix of a reservation in ``streams.r``: ``r.o17`` (a bare number would read as an
#: array index in an update path).
KEY_PREFIX = "o"


def row_id(topic: str, msg_id: str) -> str:
    """The ``_id`` of ``msg_id``'s row under ``topic``: a replay finds it by ``_id`` (indexed on
    every engine, nx-27017 included), never by a scan."""
    return f"{topic}{ROW_SEP}{msg_id}"


def key(offset: int) -> str:
    """The field of ``offset``'s reservation inside ``streams.r``."""
    return f"{KEY_PREFIX}{offset}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """``offset`` is bound to ``msg_id`` since ``at`` (unix seconds, the writer's clock)."""

    offset: int
    msg_id: str
    at: float


@dataclass(frozen=True, slots=True)
class Stream:
    """A topic's ``streams`` document as far as offsets go."""

    topic: str
    epoch: str | None
    #: the last offset handed out; None: the document predates reservations (or is new) and
    #: the first reservation starts after the rows' highest offset
    next: int | None
    reserved: Mapping[int, Reservation] = field(default_factory=dict)
    #: the document's ``open`` counter (entries of ``r``, as the writers counted them)
    open: int = 0
    head: int | None = None

    def offset_of(self, msg_id: str) -> int | None:
        """The offset reserved for ``msg_id``, if any (a replay writes its row there)."""
        for reservation in self.reserved.values():
            if reservation.msg_id == msg_id:
                return reservation.offset
        return None

    def stale(self, now: float, after_s: float) -> list[Reservation]:
        """Reservations older than ``after_s``: their writer is presumed dead (the repair fills
        them; a writer that was only slow writes the same row, which is harmless)."""
        return sorted((r for r in self.reserved.values() if now - r.at >= after_s),
                      key=lambda r: r.offset)


def parse_stream(doc: Mapping[str, Any]) -> Stream:
    """A ``streams`` document → :class:`Stream`; malformed entries of ``r`` are ignored (they
    can only come from a hand edit, and ignoring one makes its hole *lost*, i.e. skipped)."""
    reserved: dict[int, Reservation] = {}
    raw = doc.get("r")
    if isinstance(raw, Mapping):
        for name, entry in raw.items():
            digits = str(name)[len(KEY_PREFIX):]
            if not (str(name).startswith(KEY_PREFIX) and digits.isascii() and digits.isdigit()
                    and isinstance(entry, Mapping) and isinstance(entry.get("m"), str)):
                continue
            at = entry.get("at")
            reserved[int(digits)] = Reservation(
                offset=int(digits), msg_id=str(entry["m"]),
                at=float(at) if isinstance(at, int | float) else 0.0)
    nxt, epoch, head, count = doc.get("next"), doc.get("epoch"), doc.get("head"), doc.get("open")
    return Stream(topic=str(doc["_id"]), epoch=epoch if isinstance(epoch, str) else None,
                  next=nxt if isinstance(nxt, int) else None, reserved=reserved,
                  open=count if isinstance(count, int) else 0,
                  head=head if isinstance(head, int) else None)


def bindings(base: int, msg_ids: Sequence[str], now: float) -> dict[str, dict[str, Any]]:
    """The ``$set`` entries of a reservation of ``base+1 …`` for ``msg_ids`` (in order)."""
    return {f"r.{key(base + 1 + i)}": {"m": m, "at": now} for i, m in enumerate(msg_ids)}


# --- readers ---------------------------------------------------------------------------------

HoleKind = Literal["pending", "lost"]


def first_hole(first: int, offsets: Sequence[int]) -> int | None:
    """The first offset from ``first`` missing before the last of ``offsets`` (ascending, all
    ``>= first``), or None when they are contiguous from ``first``."""
    expected = first
    for offset in offsets:
        if offset != expected:
            return expected
        expected += 1
    return None


def hole_kind(offset: int, stream: Stream | None) -> HoleKind:
    """What a missing ``offset`` is, given the ``streams`` document read *after* the rows that
    showed the hole, the rows then being read again (docs/seams.md §2: a reservation is cleared
    only once its row is stored, so an offset neither reserved then nor stored after is lost).

    An offset above ``next`` was not handed out when ``streams`` was read: the rows read again
    after it may already hold later reservations' rows, so it is pending (found by the
    deterministic simulation, ``tests/unit/test_collect_sim.py``). A stream without ``next``
    predates reservations: its holes are lost."""
    if stream is None or stream.next is None:
        return "lost"
    if offset in stream.reserved or offset > stream.next:
        return "pending"
    return "lost"


def readable(first: int, offsets: Sequence[int], stream: Stream | None) -> int:
    """How many of ``offsets`` (ascending, read from ``first``) a reader may take: the run up to
    the first *pending* hole; lost holes are passed over (the reader logs them)."""
    expected = first
    for i, offset in enumerate(offsets):
        while expected < offset:
            if hole_kind(expected, stream) == "pending":
                return i
            expected += 1
        expected = offset + 1
    return len(offsets)


def capped_head(last_row: int, stream: Stream | None) -> int:
    """A subscribe's head: the highest row, but below the lowest pending hole, so that a client
    subscribing "from now" still gets a message stored after it subscribed. ``stream`` is read
    *before* the highest row."""
    if stream is None or stream.next is None:
        return last_row
    head = min(last_row, stream.next)
    if stream.reserved:
        head = min(head, min(stream.reserved) - 1)
    return max(head, 0)


def lost_between(first: int, offsets: Iterable[int]) -> list[tuple[int, int]]:
    """The ranges ``(a, b)`` missing from ``offsets`` (ascending, from ``first``), for a log."""
    out: list[tuple[int, int]] = []
    expected = first
    for offset in offsets:
        if offset > expected:
            out.append((expected, offset - 1))
        expected = offset + 1
    return out
