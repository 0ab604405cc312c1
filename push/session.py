"""One client connection's session: pure, sans-I/O, in the shape of websockets' ``protocol.py``.

The node (:mod:`push.node`) moves bytes and keeps time; every decision about what a client may do
and what it gets is here. Feed the session what happened, then do what the returned actions say,
in order:

* :meth:`Session.receive_text` / :meth:`Session.receive_binary`: a frame from the client;
* :meth:`Session.admit` / :meth:`Session.close`: after :class:`Admit` (the node checked its caps);
* :meth:`Session.subscribe_ready` / :meth:`Session.subscribe_failed`: after :class:`Fetch`;
* :meth:`Session.history`: a page read from MongoDB for a :class:`Repair`;
* :meth:`Subscription.offer`: a live message (the hot path: no action objects, one verdict);
* :meth:`Session.fail`: a per-subscription step raised; only that subscription is dropped.

Actions: :class:`Send` (write this text frame), :class:`Close` (close with this code, then
expect nothing more), :class:`Admit` (the token is good: check per-user caps, then call
:meth:`~Session.admit` or :meth:`~Session.close`), :class:`Fetch` (register the topic and read
its head, then call back), :class:`Repair` (read history for this subscription until
:meth:`~Session.history` says ``done``), :class:`Drop` (forget this subscription: unindex it and
cancel its task).

States (:attr:`Session.state`), whatever frames arrive (tests/unit/test_push_session.py checks it
with hypothesis):

* ``auth``: waiting for the first frame; anything but a valid ``auth`` → ``Close`` (4000, 4001,
  4003), and the state is ``closed``. A valid one → ``Admit`` and the state ``admitting``.
* ``admitting``: frames are ignored until the node calls ``admit()`` (→ ``open``, ``welcome``
  sent) or ``close(code)``.
* ``open``: frames are served; a bad frame gets an error frame and the connection stays; frames
  above the rate → ``Close(4029)``.
* ``closed``: terminal. Every subscription has been dropped (a ``Drop`` was returned for each),
  every later input returns no action.

Invariants: :attr:`Session.subs` holds only active subscriptions, at most
``limits.max_subscriptions``; a dropped subscription is never active again, so a late callback
for it (head read, history page) is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

from chainpush.logs import client_text
from chainpush.push import wire
from chainpush.push.errors import ProtocolError, TokenError
from chainpush.push.ratelimit import TokenBucket
from chainpush.push.records import StoredMessage
from chainpush.push.resume import resume_point, stream_replaced
from chainpush.push.subscription import Cursor, Filter
from chainpush.push.tokens import Claims, TokenConfig, TokenExpired, verify

logger = logging.getLogger(__name__)

State = Literal["auth", "admitting", "open", "closed"]
Step = Literal["more", "behind", "done", "stale"]
Verdict = Literal["send", "skip", "repair", "restart"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLimits:
    """What one connection may do (docs/protocol.md §3, §6, §7)."""

    max_subscriptions: int = 64
    rate_per_s: float = 20.0
    rate_burst: int = 40
    #: contract names the node serves; a ``contract:``/``state:`` topic of another name gets
    #: ``unknown_topic``. None: any name (tests, or a node not told its contracts). The node's
    #: set grows while it runs (names claimed by the watchers of every chain).
    contracts: AbstractSet[str] | None = None

    def __post_init__(self) -> None:
        if self.max_subscriptions < 1:
            raise ValueError(f"max_subscriptions must be >= 1, got {self.max_subscriptions}")
        if self.rate_per_s <= 0 or self.rate_burst < 1:
            raise ValueError(f"rate_per_s must be > 0 and rate_burst >= 1, got "
                             f"{self.rate_per_s}, {self.rate_burst}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    node_id: str
    tokens: TokenConfig
    heartbeat_s: float
    limits: SessionLimits = field(default_factory=SessionLimits)


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    text: str
    error: str | None = None  #: the error code, when this is an error frame (for metrics)


@dataclass(frozen=True, slots=True)
class Close:
    code: int


@dataclass(frozen=True, slots=True)
class Admit:
    claims: Claims


@dataclass(frozen=True, slots=True)
class Fetch:
    sub: Subscription


@dataclass(frozen=True, slots=True)
class Repair:
    sub: Subscription


@dataclass(frozen=True, slots=True)
class Drop:
    sub: Subscription


Action = Send | Close | Admit | Fetch | Repair | Drop


@dataclass(eq=False, slots=True)
class Subscription:
    """One topic of one session. ``task`` belongs to the node (its repair task), opaque here."""

    session: Session
    topic: str
    filter: Filter
    since: int | None
    client_epoch: str | None  #: the epoch the client's ``since`` belongs to
    ref: str | None
    cursor: Cursor = field(default_factory=lambda: Cursor(next=0, repairing=True))
    #: the stream epoch the cursor's offsets belong to (None until the topic has a message)
    epoch: str | None = None
    active: bool = True
    task: Any = None

    def offer(self, message: StoredMessage) -> Verdict:
        """A live message of this topic: ``send`` it now, ``skip`` it, start a ``repair``, or
        ``restart``: its epoch shows the stream was replaced (:meth:`restart`, then repair)."""
        epoch = message.epoch
        if self.epoch != epoch:  # rare: one comparison per subscriber otherwise
            if stream_replaced(self.epoch, epoch):
                return "restart"
            self.epoch = self.epoch or epoch
        action = self.cursor.offer(message.offset)
        if action == "deliver":
            return "send" if self.filter.matches(message.record) else "skip"
        return "repair" if action == "repair" else "skip"

    def behind(self, head: int, epoch: str | None) -> Literal["repair", "restart"] | None:
        """Reconcile saw the topic's ``head`` and its ``epoch``: ``repair`` (the head passed
        this cursor: start a repair now), ``restart`` (the stream was replaced), or None."""
        if not self.active:
            return None
        if stream_replaced(self.epoch, epoch):
            return "restart"
        if self.cursor.next <= head and self.cursor.start_repair():
            return "repair"
        return None

    def restart(self, epoch: str | None, seen: int) -> None:
        """The topic's stream was replaced (store wiped or restored, docs/protocol.md §5):
        follow the new one from offset 1, reading at least up to ``seen``; its messages carry
        the new epoch, which tells the client to take offsets from it. The caller cancels the
        running repair, if any, and starts a new one."""
        logger.info("conn %d: topic %s has a new stream (epoch %s, was %s): from offset 1",
                    self.session.id, client_text(self.topic), epoch, self.epoch)
        self.epoch = epoch
        self.cursor = Cursor(next=1, repairing=True, missed=seen)


class Session:
    """The state of one connection; see the module docstring for the call protocol."""

    def __init__(self, conn_id: int, config: SessionConfig) -> None:
        self.id = conn_id
        self.config = config
        self.limits = config.limits
        self.state: State = "auth"
        self.claims: Claims | None = None
        self.subs: dict[str, Subscription] = {}
        self.bucket = TokenBucket(self.limits.rate_per_s, self.limits.rate_burst)

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state} {len(self.subs)} subs>"

    @property
    def user(self) -> str | None:
        return self.claims.user if self.claims is not None else None

    # --- input: frames ---------------------------------------------------------------------------

    def receive_binary(self, now: float) -> list[Action]:
        return self.receive_text(b"", now)

    def receive_text(self, data: str | bytes, now: float) -> list[Action]:
        """A frame from the client (bytes = a binary frame)."""
        if self.state == "auth":
            return self._authenticate(data, now)
        if self.state != "open":
            return []
        if not self.bucket.allow(now):
            return self.close(wire.CLOSE_RATE_LIMITED)
        try:
            frame = wire.parse_client_frame(data)
        except ProtocolError as exc:
            return [self._error(exc.code, str(exc), exc.ref)]
        if isinstance(frame, wire.Subscribe):
            return self._subscribe(frame)
        if isinstance(frame, wire.Unsubscribe):
            sub = self.subs.pop(frame.topic, None)
            if sub is None:
                return [self._error("not_subscribed", "not subscribed to that topic", frame.ref)]
            sub.active = False
            return [Drop(sub), Send(wire.unsubscribed(topic=frame.topic, ref=frame.ref))]
        if isinstance(frame, wire.Ping):
            return [Send(wire.pong(frame.ref))]
        return [self._error("bad_message", "already authenticated", None)]

    def _authenticate(self, data: str | bytes, now: float) -> list[Action]:
        try:
            frame = wire.parse_client_frame(data)
        except ProtocolError as exc:
            logger.info("conn %d: bad first frame (%s)", self.id, client_text(exc))
            return self.close(wire.CLOSE_BAD_FIRST_FRAME)
        if not isinstance(frame, wire.Auth):
            logger.info("conn %d: first frame is %s, not auth", self.id, frame.type)
            return self.close(wire.CLOSE_BAD_FIRST_FRAME)
        try:
            claims = verify(frame.token, self.config.tokens, now=now)
        except TokenExpired as exc:
            logger.info("conn %d: %s", self.id, client_text(exc))
            return self.close(wire.CLOSE_TOKEN_EXPIRED)
        except TokenError as exc:  # the message never contains the token
            logger.info("conn %d: %s", self.id, client_text(exc))
            return self.close(wire.CLOSE_AUTH_FAILED)
        self.claims = claims
        self.state = "admitting"
        return [Admit(claims)]

    def admit(self) -> list[Action]:
        """The node accepted the connection (its caps allow it): send ``welcome``."""
        if self.state != "admitting" or self.claims is None:
            return []
        self.state = "open"
        c = self.claims
        return [Send(wire.welcome(user=c.user, node=self.config.node_id, topics=list(c.topics),
                                  wallets=list(c.wallets), expires_at=c.expires_at,
                                  heartbeat_s=self.config.heartbeat_s))]

    def close(self, code: int) -> list[Action]:
        """Close with ``code`` (a policy, the token's expiry, shutdown); drop every subscription.
        Also the way to record that the transport went away (any code: no ``Close`` is sent
        for a closed transport by the node)."""
        if self.state == "closed":
            return []
        self.state = "closed"
        actions: list[Action] = [Drop(sub) for sub in self.subs.values()]
        for sub in self.subs.values():
            sub.active = False
        self.subs.clear()
        actions.append(Close(code))
        return actions

    def _error(self, code: str, text: str, ref: str | None) -> Send:
        return Send(wire.error(code, text, ref), error=code)

    # --- subscribe -------------------------------------------------------------------------------

    def _subscribe(self, frame: wire.Subscribe) -> list[Action]:
        assert self.claims is not None
        topic = frame.topic
        if not self.claims.allows(topic):
            return [self._error("forbidden_topic", "the token does not grant that topic",
                                frame.ref)]
        kind, _, name = topic.partition(":")
        contracts = self.limits.contracts
        if contracts is not None and kind in ("contract", "state") and name not in contracts:
            return [self._error("unknown_topic", "no such contract on this deployment "
                                f"({len(contracts)} configured)", frame.ref)]
        if topic not in self.subs and len(self.subs) >= self.limits.max_subscriptions:
            return [self._error("too_many_subscriptions",
                                f"at most {self.limits.max_subscriptions} per connection",
                                frame.ref)]
        try:
            compiled = Filter(frame.filter)
        except ValueError as exc:  # the parser validated the filter; this is a last guard
            return [self._error("bad_message", str(exc)[:200], frame.ref)]
        actions: list[Action] = []
        old = self.subs.pop(topic, None)
        if old is not None:
            old.active = False
            actions.append(Drop(old))
        sub = Subscription(session=self, topic=topic, filter=compiled, since=frame.since,
                           client_epoch=frame.epoch, ref=frame.ref)
        self.subs[topic] = sub
        # the node indexes ``sub`` before it reads the head: a live message arriving meanwhile
        # is remembered by the cursor (it starts in repair) and read back, never lost
        actions.append(Fetch(sub))
        return actions

    def subscribe_ready(self, sub: Subscription, head: int, epoch: str | None = None
                        ) -> list[Action]:
        """The topic is registered and its head read: answer ``subscribed``, start the repair."""
        if not sub.active:
            return []
        start = resume_point(since=sub.since, epoch=sub.client_epoch, head=head,
                             stream_epoch=epoch)
        sub.cursor.next = start.since + 1
        if epoch is not None:  # the head read is what the cursor's offsets refer to
            sub.epoch = epoch
        return [Send(wire.subscribed(topic=sub.topic, since=start.since, head=head, epoch=epoch,
                                     reset=start.reset, ref=sub.ref)),
                Repair(sub)]

    def subscribe_failed(self, sub: Subscription, code: str, text: str) -> list[Action]:
        """The subscribe cannot be served (store down, node's topic cap): drop it, say why."""
        if not sub.active:
            return []
        return self._drop(sub, code, text)

    def fail(self, sub: Subscription, why: str) -> list[Action]:
        """A step for ``sub`` raised: drop only that subscription, with an error frame."""
        if not sub.active:
            return []
        logger.error("conn %d: subscription to %s dropped: %s", self.id, client_text(sub.topic),
                     client_text(why))
        return self._drop(sub, "subscription_failed",
                          "the node dropped this subscription; subscribe again with since")

    def _drop(self, sub: Subscription, code: str, text: str) -> list[Action]:
        sub.active = False
        if self.subs.get(sub.topic) is sub:
            del self.subs[sub.topic]
        return [Drop(sub), self._error(code, f"{sub.topic[:wire.MAX_TOPIC_CHARS]}: {text}",
                                       sub.ref)]

    # --- history ---------------------------------------------------------------------------------

    def history(self, sub: Subscription, rows: Sequence[StoredMessage], *, page: int,
                finish: bool = True) -> tuple[list[StoredMessage], Step]:
        """One page read from ``sub.cursor.next`` (at most ``page`` rows): what to send, and
        what next: ``more`` (read the next page at once), ``behind`` (MongoDB has not caught up
        with what Redis announced: read again after a pause), ``done`` (live from now),
        ``stale`` (the subscription was dropped meanwhile: stop).

        ``finish=False``: the subscription stays in repair (live messages are only noted as
        missed) until :meth:`finish_history` — for a caller that writes the rows with awaits in
        between, so that no live message is written before the page's last row (offsets must
        reach the client strictly increasing); the step returned is then provisional."""
        if not sub.active:
            return [], "stale"
        cursor = sub.cursor
        if rows and rows[0].offset != cursor.next:
            # a hole in MongoDB (collect never makes one: rows deleted by hand?): say so and
            # go on from what exists rather than wait for it forever
            logger.error("topic %r: offsets %d..%d missing in MongoDB; conn %d skips them",
                         sub.topic, cursor.next, rows[0].offset - 1, self.id)
            cursor.next = rows[0].offset
        out: list[StoredMessage] = []
        for row in rows:
            if not cursor.fetched(row.offset):
                break
            sub.epoch = sub.epoch or row.epoch  # the stream these offsets belong to
            if sub.filter.matches(row.record):
                out.append(row)
        if not finish:
            return out, "more" if rows else "behind"
        return out, self.finish_history(sub, full_page=len(rows) >= page, empty=not rows)

    def finish_history(self, sub: Subscription, *, full_page: bool, empty: bool) -> Step:
        """The page given to :meth:`history` (``finish=False``) has been written: ``done``
        (live from now), or ``more`` / ``behind`` as :meth:`history` says; ``stale`` if the
        subscription was dropped meanwhile."""
        if not sub.active:
            return "stale"
        if sub.cursor.finish_page(full_page=full_page):
            return "done"
        return "behind" if empty else "more"
