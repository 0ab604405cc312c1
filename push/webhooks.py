"""Webhook delivery decisions: one :class:`Lane` per (webhook, topic), sans-I/O.

Theory of operation
-------------------
A lane delivers one topic's stream to one endpoint, strictly in offset order, at least once:

* ``cursor`` is the last offset the endpoint acknowledged (2xx); ``head`` the topic's last stored
  offset as last observed. Everything in ``(cursor, head]`` is owed.
* At most one request is in flight per lane: the next batch is only built after the previous one
  was acknowledged. A batch is ``(cursor, min(head, cursor + batch_size)]``, read from the store
  in offset order, sent as the websocket's ``message`` frame (one message) or
  ``{"type": "batch", "messages": [...]}``.
* An unacknowledged batch is re-sent unchanged (same body, same ``webhook-id``) after a delay
  drawn with full jitter from ``[cap/2, cap]``, ``cap = min(max_backoff_s, first_backoff_s ·
  2^(failures-1))``. The id is derived from the topic and offsets (``<topic>:<offset>``, or
  ``<topic>:<first>-<last>`` for a batch), so a receiver can deduplicate on it. A multi-message
  batch's range is *pinned* (persisted by the adapter before the first send) so a restart re-sends
  the same range under the same id even if more messages arrived meanwhile.
* Nothing is ever skipped: a 410, ``max_client_errors`` consecutive 4xx (other than 408, 425,
  429, which are retried like 5xx), or ``max_failures`` consecutive failures of any kind **pause
  the whole webhook** (:class:`HookState`). A paused webhook sends nothing until an operator
  resumes it; its cursors stay where they are.
* A head below the cursor means the topic's stream was replaced (docs/protocol.md §5, Epochs: the
  store was wiped and offsets start again at 1): the lane starts over from offset 1, as a push node
  answers ``reset: true``; the caller logs it.

Caller's loop, per lane: ``action = lane.poll(now)`` then

* :class:`Idle` — wait until :meth:`Lane.observe_head` raises the head (or the hook resumes);
* :class:`Wait` — sleep until ``action.until``;
* :class:`Fetch` — read ``[first, last]`` from the store, pass the rows to :meth:`Lane.fetched`;
  if the returned attempt has ``pin`` set, persist the range before sending;
* :class:`Send` — POST ``action.attempt`` signed with :func:`signed_headers` at the current
  whole second, then feed the outcome to :meth:`Lane.result` and act on the decision
  (:class:`Acked`: persist the cursor; :class:`Retry`; :class:`Paused`: persist the pause;
  :class:`Stale`: nothing, the head moved below the attempt meanwhile).

Pure: never awaits, never imports an I/O library.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from standardwebhooks import Webhook

from chainpush.push import wire
from chainpush.push.records import StoredMessage
from chainpush.push.retry import RetryPolicy
from chainpush.push.webhook_config import WebhookConfig

#: 4xx answers that mean "later", not "never": retried like a 5xx (RFC 9110 §15.5.9,
#: RFC 8470 §5.2, RFC 6585 §4) and never count towards ``max_client_errors``.
RETRYABLE_4XX = frozenset({408, 425, 429})
#: how long a lane waits before reading again when the store returned fewer rows than the head
#: promised (a read from a lagging secondary).
REFETCH_S = 0.2


# --- what the caller must do next ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing owed (or the webhook is paused): wait for a new head or a resume."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Back off: call :meth:`Lane.poll` again at ``until`` (the caller's clock)."""

    until: float


@dataclass(frozen=True, slots=True)
class Fetch:
    """Read offsets ``first..last`` of the lane's topic (at most ``last - first + 1`` rows)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request, re-sent unchanged until acknowledged."""

    topic: str
    first: int
    last: int
    webhook_id: str
    body: str
    #: the adapter must persist ``(first, last)`` as the lane's pinned range before sending
    pin: bool = False
    #: the stream epoch of the messages it carries (None for rows stored before epochs)
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Send:
    attempt: Attempt


Action = Idle | Wait | Fetch | Send


# --- what happened to a request -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """The endpoint answered with ``status`` (and, for 429/503, maybe a ``Retry-After``)."""

    status: int
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """No answer: timeout, refused or reset connection; ``error`` says which."""

    error: str


Outcome = Response | Failure


@dataclass(frozen=True, slots=True)
class Acked:
    """Persist ``cursor`` for the lane (and clear its pinned range)."""

    cursor: int
    count: int
    #: the stream epoch the cursor belongs to (persisted with it)
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    until: float
    failures: int
    error: str


@dataclass(frozen=True, slots=True)
class Paused:
    """The webhook is now paused for ``reason``: persist it, stop every lane of the webhook."""

    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class Stale:
    """The attempt is no longer the lane's (the stream was replaced while it was in flight):
    nothing to record."""


Decision = Acked | Retry | Paused | Stale


# --- pure helpers ------------------------------------------------------------------------------


def webhook_id(topic: str, first: int, last: int, epoch: str | None = None) -> str:
    """Stable across retries and restarts: the topic, the offsets the request carries and
    their stream's epoch (``contract:X:42@9b1c…``, ``contract:X:42-49@9b1c…``). The epoch keeps
    a replaced stream's offset 1 from reusing the old stream's id, which a receiver
    deduplicating by id would drop; rows stored before epochs existed give no ``@`` part."""
    offsets = f"{first}" if first == last else f"{first}-{last}"
    return f"{topic}:{offsets}" if epoch is None else f"{topic}:{offsets}@{epoch}"


def body_of(messages: Sequence[StoredMessage]) -> str:
    """One message: the websocket ``message`` frame, byte for byte. Several: a ``batch`` whose
    ``messages`` are those frames in offset order."""
    if len(messages) == 1:
        return wire.message(messages[0])
    return '{"type":"batch","messages":[' + ",".join(wire.message(m) for m in messages) + "]}"


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for ``body`` sent at ``timestamp`` (whole unix seconds)."""
    sent_at = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(key).sign(msg_id, sent_at, body),
        "content-type": "application/json",
    }


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header in delay-seconds form; None if absent or an HTTP date (which a
    webhook endpoint has no reason to send; the backoff applies then)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def classify(status: int) -> str:
    """``"ok"`` (2xx), ``"gone"`` (410), ``"client"`` (4xx that will not change by retrying),
    or ``"retry"`` (anything else: 3xx, 408/425/429, 5xx)."""
    if 200 <= status < 300:
        return "ok"
    if status == 410:
        return "gone"
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return "client"
    return "retry"


# --- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class HookState:
    """What every lane of one webhook shares: whether it is paused, and why."""

    name: str
    paused: str | None = None

    def pause(self, reason: str) -> None:
        if self.paused is None:
            self.paused = reason


@dataclass(slots=True)
class Lane:
    """One (webhook, topic): cursor, head, the request in flight and its failures."""

    config: WebhookConfig
    hook: HookState
    topic: str
    cursor: int = 0
    head: int = 0
    pinned: tuple[int, int] | None = None
    rng: random.Random = field(default_factory=random.Random)
    attempt: Attempt | None = None
    retry_at: float | None = None
    refetch_at: float | None = None
    failures: int = 0
    client_errors: int = 0
    last_error: str | None = None
    #: the stream epoch of the cursor (None: not known yet, or rows without epochs)
    epoch: str | None = None

    def __post_init__(self) -> None:
        if self.pinned is not None and self.pinned[0] != self.cursor + 1:
            self.pinned = None  # a stale pin (the cursor moved by replay): forget it

    # --- inputs ------------------------------------------------------------------------------

    def observe_head(self, head: int, epoch: str | None = None) -> bool:
        """Feed the topic's last offset and its stream epoch. True if the stream was replaced —
        the head is below the cursor, or the epoch is not the cursor's — and the lane restarted
        from offset 1 (the caller logs this and persists the cursor)."""
        other = epoch is not None and self.epoch is not None and epoch != self.epoch
        if head < self.cursor or other:
            self.cursor = 0
            self.head = head
            self.epoch = epoch
            self.attempt = None
            self.pinned = None
            self.retry_at = None
            self.failures = self.client_errors = 0
            return True
        if self.epoch is None:
            # a lane created at a head (``start = "head"``) or before epochs were kept: its
            # cursor is in the stream as it is now
            self.epoch = epoch
        self.head = max(self.head, head)
        return False

    def poll(self, now: float) -> Action:
        if self.hook.paused is not None:
            return Idle()
        if self.attempt is not None:
            if self.retry_at is not None and now < self.retry_at:
                return Wait(self.retry_at)
            return Send(self.attempt)
        if self.refetch_at is not None and now < self.refetch_at:
            return Wait(self.refetch_at)
        if self.pinned is not None:
            return Fetch(*self.pinned)
        if self.head <= self.cursor:
            return Idle()
        first = self.cursor + 1
        return Fetch(first, min(self.head, self.cursor + self.config.batch_size))

    def fetched(self, messages: Sequence[StoredMessage], now: float) -> Attempt | None:
        """The rows a :class:`Fetch` read. Returns the attempt to send, or None when the store
        did not have the first owed offset yet (the lane reads again after :data:`REFETCH_S`)."""
        first = self.cursor + 1
        rows: list[StoredMessage] = []
        for msg in messages:
            if msg.topic != self.topic or msg.offset != first + len(rows):
                break  # never send past a gap: offsets are gap-free, so the rest comes later
            if (self.cursor and self.epoch is not None and msg.epoch is not None
                    and msg.epoch != self.epoch):
                break  # another stream's row: the next head observed restarts the lane
            if rows and msg.epoch != rows[0].epoch:
                break  # one stream per request
            rows.append(msg)
        if not rows:
            self.refetch_at = now + REFETCH_S
            return None
        self.refetch_at = None
        last = rows[-1].offset
        pin = len(rows) > 1 and self.pinned != (first, last)
        self.pinned = (first, last) if len(rows) > 1 else None
        epoch = rows[0].epoch
        self.attempt = Attempt(topic=self.topic, first=first, last=last,
                               webhook_id=webhook_id(self.topic, first, last, epoch),
                               body=body_of(rows), pin=pin, epoch=epoch)
        self.retry_at = None
        return self.attempt

    def result(self, outcome: Outcome, now: float, sent: Attempt | None = None) -> Decision:
        """Feed what became of ``sent``, the attempt :meth:`poll` returned in :class:`Send`
        (default: the one in flight). :class:`Stale` if the lane dropped it meanwhile."""
        attempt = self.attempt
        if attempt is None or (sent is not None and sent is not attempt):
            return Stale()
        kind = classify(outcome.status) if isinstance(outcome, Response) else "retry"
        if kind == "ok":
            self.cursor = attempt.last
            if attempt.epoch is not None:
                self.epoch = attempt.epoch
            self.attempt = None
            self.pinned = None
            self.retry_at = None
            self.failures = self.client_errors = 0
            return Acked(cursor=self.cursor, count=attempt.last - attempt.first + 1,
                         epoch=self.epoch)
        error = (f"HTTP {outcome.status}" if isinstance(outcome, Response) else outcome.error)
        self.failures += 1
        self.last_error = f"{attempt.webhook_id}: {error}"
        where = f"webhook {self.config.name} topic {self.topic} at {attempt.webhook_id}"
        if kind == "gone":
            self.hook.pause(f"{where}: the endpoint answered 410 Gone")
        elif kind == "client":
            self.client_errors += 1
            if self.client_errors >= self.config.max_client_errors:
                self.hook.pause(f"{where}: {self.client_errors} client errors in a row "
                                f"(last {error})")
        else:
            self.client_errors = 0
        if self.hook.paused is None and self.failures >= self.config.max_failures:
            self.hook.pause(f"{where}: {self.failures} failures in a row (last {error})")
        if self.hook.paused is not None:
            self.retry_at = None
            return Paused(reason=self.hook.paused, error=error)
        policy = RetryPolicy(first_delay_s=self.config.first_backoff_s,
                             max_delay_s=self.config.max_backoff_s)
        delay = policy.delay_s(self.failures, self.rng)
        if isinstance(outcome, Response) and outcome.retry_after_s is not None:
            # honour the endpoint's Retry-After (RFC 9110 §10.2.3), within max_backoff_s
            delay = max(delay, min(outcome.retry_after_s, self.config.max_backoff_s))
        self.retry_at = now + delay
        return Retry(until=self.retry_at, failures=self.failures, error=error)
