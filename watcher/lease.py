"""One active watcher per checkpoint key: a lease in MongoDB (``leases``) with a fencing token.

Theory of operation
-------------------
The lease document ``{_id: <chain id>:<name>, holder, generation, beat, renewed_at}`` names the
watcher allowed to write the checkpoint of that key. ``generation`` grows by one at every
acquisition, always by a compare-and-swap on the document as it was last seen, so two
contenders can never both win the same generation. The generation is the **fencing token**:
the leader passes it to every checkpoint write (``watcher.checkpoint``), which matches
``{_id, fence: generation}`` only; the new leader sets the checkpoint's ``fence`` to its
generation in the same atomic update that reads the checkpoint. A leader that was paused
(SIGSTOP, a long GC, a VM migration) past its lease therefore cannot write stale state: its
write matches nothing and it learns that it lost the lease (``LeaseLost``).

Timing, without a shared clock: the leader bumps ``beat`` every ``renew_s``. A standby polls
every ``renew_s / 2`` and remembers, on its own monotonic clock, when it first saw the document
as it is; unchanged for ``lease_s``, the lease is taken over (CAS on that exact document). A
released lease (``holder`` null: a clean stop) is taken at once. The leader counts its lease
valid until ``lease_s`` after it *sent* its last successful renewal, which is before any standby
can have seen that renewal: with clocks that run at the same rate, a leader that still believes
it holds the lease is never replaced (and if one is, fencing still keeps the checkpoint right).
Takeover after the leader dies: at most ``lease_s + renew_s`` (4 s with the defaults).

``LeaseTimer`` holds the decisions (pure, the clock passed in: unit-tested with a fake clock);
``MongoLease`` performs them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from chainpush.constants import LEASES
from chainpush.watcher.checkpoint import LeaseLost

logger = logging.getLogger(__name__)

__all__ = ["LeaseDoc", "LeaseLost", "LeaseTimer", "MongoLease", "Take", "Wait", "holder_id"]


def holder_id() -> str:
    """A name for this process that no other contender shares: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class LeaseDoc:
    """The lease document as read (``holder`` None: released)."""

    holder: str | None
    generation: int
    beat: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LeaseDoc:
        return cls(doc.get("holder"), int(doc.get("generation", 0)), int(doc.get("beat", 0)))


@dataclass(frozen=True, slots=True)
class Take:
    """Try to take the lease: CAS from ``seen`` (None: insert the first document) to
    ``generation``."""

    seen: LeaseDoc | None
    generation: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Someone else holds the lease: look again in ``delay_s``."""

    delay_s: float


class LeaseTimer:
    """The lease decisions of one contender (sans-I/O; ``now`` is a monotonic clock reading).

    As a standby: ``observe(doc, now)`` → ``Take`` or ``Wait``. After a won ``Take``:
    ``acquired(generation, sent_at)``; after each successful renewal: ``renewed(sent_at)``
    (``sent_at``: when the write was *sent*); ``valid(now)`` says whether the lease still holds
    locally; ``lost()`` returns to standby."""

    def __init__(self, holder: str, *, lease_s: float, renew_s: float) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        if not 0 < renew_s <= lease_s / 2:
            raise ValueError(f"renew_s must be > 0 and at most lease_s / 2 ({lease_s / 2:g}), "
                             f"got {renew_s}")
        self.holder = holder
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.generation: int | None = None
        #: the next acquisition takes a generation above this one (a checkpoint fenced higher
        #: than the lease document says: the document was deleted or restored from a backup)
        self.floor = 0
        self._valid_until = 0.0
        self._seen: LeaseDoc | None = None
        self._seen_at = 0.0

    @property
    def poll_s(self) -> float:
        """How often a standby looks at the lease."""
        return self.renew_s / 2

    def observe(self, doc: LeaseDoc | None, now: float) -> Take | Wait:
        if doc is None:
            return Take(None, self.floor + 1)
        after = max(doc.generation, self.floor) + 1
        if doc.holder is None or doc.holder == self.holder:
            # released, or ours from before (we lost it and nobody took it): take it at once;
            # the CAS on the exact document makes this safe against a concurrent taker
            return Take(doc, after)
        if doc != self._seen:
            self._seen, self._seen_at = doc, now
            return Wait(self.poll_s)
        left = self._seen_at + self.lease_s - now
        if left <= 0:
            return Take(doc, after)
        return Wait(min(self.poll_s, left))

    def acquired(self, generation: int, sent_at: float) -> None:
        self.generation = generation
        self._valid_until = sent_at + self.lease_s
        self._seen = None

    def renewed(self, sent_at: float) -> None:
        self._valid_until = max(self._valid_until, sent_at + self.lease_s)

    def valid(self, now: float) -> bool:
        return self.generation is not None and now < self._valid_until

    def lost(self) -> None:
        self.generation = None
        self._seen = None


class MongoLease:
    """The lease of checkpoint ``key`` in MongoDB's ``leases`` collection (see the module
    docstring). ``acquire()`` waits as a standby until this process leads and returns the
    generation (the fencing token); ``renew()`` keeps it (raises ``LeaseLost`` when refused);
    ``release()`` hands it over at once (a clean stop)."""

    def __init__(self, mongo_uri: str, database: str, *, lease_s: float, renew_s: float,
                 holder: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timer = LeaseTimer(holder or holder_id(), lease_s=lease_s, renew_s=renew_s)
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_uri, serverSelectionTimeoutMS=int(max(1.0, renew_s) * 1000)
        )
        self._coll = self._client[database][LEASES]
        self._clock = clock
        self._key: str | None = None
        #: the holder and generation last seen held by someone else (for logs and metrics)
        self.other: LeaseDoc | None = None

    @property
    def holder(self) -> str:
        return self.timer.holder

    @property
    def generation(self) -> int | None:
        return self.timer.generation

    def raise_floor(self, generation: int) -> None:
        """A checkpoint write was refused with the checkpoint fenced at ``generation``: take
        the lease above it next time (else a deleted lease document would restart at 1 and
        every acquisition would be refused by the checkpoint)."""
        self.timer.floor = max(self.timer.floor, generation)

    async def acquire(self, key: str, *, on_wait: Callable[[LeaseDoc], None] | None = None
                      ) -> int:
        """Wait until this process holds the lease of ``key``; returns its generation.
        ``on_wait(doc)`` is called once per holder seen while waiting (for the standby log).
        MongoDB errors are logged and retried forever (a standby has nothing else to do)."""
        self._key = key
        timer = self.timer
        announced: tuple[str | None, int] | None = None
        while True:
            try:
                raw = await self._coll.find_one({"_id": key})
                seen = None if raw is None else LeaseDoc.from_doc(raw)
                decision = timer.observe(seen, self._clock())
                if isinstance(decision, Take):
                    sent = self._clock()
                    if await self._take(key, decision):
                        timer.acquired(decision.generation, sent)
                        return decision.generation
                    decision = Wait(0.0)  # lost the race: look again at once
                elif seen is not None and (seen.holder, seen.generation) != announced:
                    announced = (seen.holder, seen.generation)
                    self.other = seen
                    if on_wait is not None:
                        on_wait(seen)
            except PyMongoError as exc:
                logger.warning("reading lease %s failed (%s); retrying in %.1f s "
                               "(retries unlimited)", key, exc, timer.poll_s)
                decision = Wait(timer.poll_s)
            await asyncio.sleep(decision.delay_s)

    async def _take(self, key: str, take: Take) -> bool:
        now = time.time()
        doc = {"holder": self.holder, "generation": take.generation, "beat": 0,
               "renewed_at": now, "lease_s": self.timer.lease_s}
        if take.seen is None:
            try:
                await self._coll.insert_one({"_id": key, **doc})
            except DuplicateKeyError:
                return False
            return True
        seen = take.seen
        won = await self._coll.find_one_and_update(
            {"_id": key, "holder": seen.holder, "generation": seen.generation,
             "beat": seen.beat},
            {"$set": doc}, return_document=ReturnDocument.AFTER,
        )
        return won is not None and won.get("holder") == self.holder

    async def renew(self) -> None:
        """Renew the lease (a CAS on our generation). Raises ``LeaseLost`` when the write is
        refused (another holder took over: the fencing check) or when no renewal succeeded
        for ``lease_s`` (MongoDB unreachable: the lease has lapsed); a failed write before
        that is only logged."""
        key, generation = self._key, self.timer.generation
        assert key is not None and generation is not None, "renew() before acquire()"
        sent = self._clock()
        try:
            result = await self._coll.find_one_and_update(
                {"_id": key, "holder": self.holder, "generation": generation},
                {"$inc": {"beat": 1}, "$set": {"renewed_at": time.time()}},
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as exc:
            if self.timer.valid(self._clock()):
                logger.warning("renewing lease %s failed (%s); retrying in %.1f s", key, exc,
                               self.timer.renew_s)
                return
            self.timer.lost()
            raise LeaseLost(f"lease {key} generation {generation} lapsed: no renewal for "
                            f"{self.timer.lease_s:g} s ({exc})", fenced=False) from exc
        if result is None:
            current = await self._read_quietly(key)
            self.timer.lost()
            self.other = current
            by = (f"generation {current.generation} of {current.holder}" if current is not None
                  else "nobody (the lease document is gone)")
            raise LeaseLost(f"lease {key} renewal refused (fencing): generation {generation} "
                            f"superseded by {by}", fenced=True)
        self.timer.renewed(sent)

    async def _read_quietly(self, key: str) -> LeaseDoc | None:
        try:
            raw = await self._coll.find_one({"_id": key})
        except PyMongoError:
            return None
        return None if raw is None else LeaseDoc.from_doc(raw)

    async def release(self) -> None:
        """Give the lease up (a clean stop): a standby takes it at its next look."""
        key, generation = self._key, self.timer.generation
        self.timer.lost()
        if key is None or generation is None:
            return
        try:
            await self._coll.update_one(
                {"_id": key, "holder": self.holder, "generation": generation},
                {"$set": {"holder": None, "renewed_at": time.time()}},
            )
        except PyMongoError as exc:
            logger.warning("releasing lease %s failed (%s): a standby takes over after "
                           "%.1f s", key, exc, self.timer.lease_s)

    async def aclose(self) -> None:
        await self._client.close()
