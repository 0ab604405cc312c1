"""Where a subscription starts in its topic's stream: the subscribe decision of
docs/protocol.md §3 and §5 (Epochs).

Pure, sans-I/O: the push node reads the topic's head and epoch (one MongoDB read,
:meth:`push.store.MessageStore.head`) and asks :func:`resume_point` what to answer.

A client's position is a pair (``since``, ``epoch``): offsets are comparable only within one
epoch. The node trusts a position only when it can belong to the current stream:

* no ``since``: live only, from the head on (nothing to check);
* ``epoch`` sent and different from the stream's: the position belongs to another stream (the
  store was wiped or replaced) → reset, replay from offset 1;
* ``since`` above the head: the stream is shorter than what the client has seen, so it is not
  the stream the client read (restored from an older backup, or wiped and not yet refilled) →
  reset, replay from offset 1;
* otherwise: resume after ``since``. A client that sends no epoch (older clients) is trusted as
  long as its ``since`` is not above the head.

Before the topic's first message the stream has no epoch (``None``): only the ``since`` check
applies. The client, told ``reset``, forgets its offset for the topic and keeps its dedup by
message id, so replayed messages it already showed are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resume:
    """The answer to a subscribe: ``since`` (offsets above it follow) and whether the client's
    position was stale (``reset``)."""

    since: int
    reset: bool


def resume_point(
    *, since: int | None, epoch: str | None, head: int, stream_epoch: str | None
) -> Resume:
    """Decide where a subscribe with (``since``, ``epoch``) starts, given the topic's ``head``
    (last offset, 0 when empty) and ``stream_epoch`` (the epoch of that last row, or None)."""
    if since is None:
        return Resume(since=head, reset=False)
    foreign = epoch is not None and stream_epoch is not None and epoch != stream_epoch
    if foreign or since > head:
        return Resume(since=0, reset=True)
    return Resume(since=since, reset=False)


def stream_replaced(known: str | None, seen: str | None) -> bool:
    """True if a message of epoch ``seen`` shows that the stream a subscription follows (of
    epoch ``known``) was replaced: its offsets must be taken from 1 again. Unknown epochs on
    either side (a topic with no message yet, rows stored before epochs) change nothing."""
    return known is not None and seen is not None and known != seen
