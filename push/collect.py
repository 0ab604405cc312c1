"""Collect: store each record in MongoDB, give it a gap-free offset per topic, then dispatch.

Theory of operation
-------------------
For each batch (docs/seams.md §1 records, in order), in a fixed number of round trips:

1. ``events``: one unordered ``insert_many`` of ``{_id: message id, ...record, topics}``. A
   duplicate key means the message was stored before (a replay, or a retry whose first attempt
   landed): not an error, but the message is *replayed*: its rows and reservations are looked up
   instead of assumed absent.
2. Offsets, per (batch, topic): one compare-and-swap on the topic's ``streams`` document reserves
   ``next+1 … next+k`` for the batch's new messages of the topic and binds each offset to its
   message in the same write (:meth:`push.store.MessageStore.reserve`; docs/seams.md §2). A
   writer that lost the race to another (matched nothing) reads the document again — and the
   rows of its messages by ``_id``, since the other writer may have been replaying the same
   record — and retries; no query ever scans ``messages``. A message already reserved (by this
   collector before a crash, or by another one) is written at that offset.
3. ``messages``: one unordered ``insert_many`` of every row of the batch at its offset.
4. The stored messages go to dispatch (one publish per batch). A dispatch failure of any kind is
   counted and logged, never raised: the record is stored, and push nodes reconcile against
   MongoDB (:meth:`Collector._dispatch`).
5. ``streams``: one ``bulk_write`` clears the batch's reservations and advances each ``head``.

Why nothing is lost or skipped: the events are stored before any offset is reserved, the
reservation names its message, and a reservation is cleared only after its row is stored. A
crash between 2 and 3 leaves *holes* (offsets reserved, rows missing) that readers wait at,
never pass (:meth:`push.store.MessageStore.read_range`); they are filled by the watcher's replay
from its checkpoint (which finds its messages reserved) or by the **repair**: every collector,
at start and every ``repair_interval_s``, completes reservations older than ``repair_after_s``
from the ``events`` document of their message (:meth:`Collector.repair`). A writer that was only
slow writes the same row as the repair: harmless.

Epochs: a topic's ``streams`` document is created (``$setOnInsert``) with a new epoch before its
first reservation, and every row of the topic carries the epoch; the reservation matches on the
epoch, so a stream replaced under a running collector (a wiped store) is noticed at the next
batch. Collect caches each topic's (epoch, next) between batches: a hint only, the
compare-and-swap is the arbiter.

MongoDB slow or down: each step is retried with backoff until it succeeds (logged with the tries
left); :meth:`Collector.accept` does not return meanwhile, which is the back-pressure the watcher
sees. Nothing is dropped and nothing unstored is dispatched; every step is idempotent.

Within one Collector, ``accept`` calls are serialised (a lock) so offsets follow record order;
several Collectors (processes) may write the same database, and the same topics, at full speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainpush.constants import RedisNames
from chainpush.logs import Throttle, client_text
from chainpush.push.dispatch import ERROR_LOG_INTERVAL_S, Dispatcher
from chainpush.push.errors import ConfigError, StoreUnavailable
from chainpush.push.metrics import Metrics
from chainpush.push.offsets import Stream
from chainpush.push.records import StoredMessage, topics_of
from chainpush.push.retry import RetryPolicy
from chainpush.push.store import MessageStore, Reserve
from chainpush.resource import AsyncResource, raise_if_cancelling
from chainpush.watcher.record import message_id

logger = logging.getLogger(__name__)

#: rounds of compare-and-swap (or of rows refused) before collect gives up on a batch: another
#: writer winning every round this many times means something else is wrong.
MAX_ROUNDS = 1000


class Dispatch(Protocol):
    """Where stored messages go next (:class:`push.dispatch.Dispatcher`)."""

    async def publish(self, messages: Sequence[StoredMessage]) -> None: ...


class Collector(AsyncResource):
    """The watcher's ``Sink``: ``await accept(batch)`` returns once the batch is stored.

    Use as ``async with Collector(mongo_uri=..., database=..., redis_url=...) as collector``:
    with ``redis_url`` (and the ``[stores] namespace``) it dispatches through a
    :class:`push.dispatch.Dispatcher` of its own; without it and without ``dispatch`` it only
    stores, and push nodes still find the messages by their periodic reconcile (slower). Pass
    ``store`` / ``dispatch`` to share open ones instead (they are then not closed by
    :meth:`aclose`).
    """

    def __init__(
        self, *, mongo_uri: str | None = None, database: str | None = None,
        store: MessageStore | None = None, dispatch: Dispatch | None = None,
        retry: RetryPolicy | None = None, metrics: Metrics | None = None,
        redis_url: str | None = None, namespace: str = "cp",
        repair_after_s: float = 5.0, repair_interval_s: float | None = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if repair_after_s <= 0:
            raise ConfigError(f"repair_after_s must be > 0, got {repair_after_s}")
        if repair_interval_s is not None and repair_interval_s <= 0:
            raise ConfigError(f"repair_interval_s must be > 0 or None, got {repair_interval_s}")
        #: a reservation this old (by the writers' clocks) is presumed abandoned: repaired
        self.repair_after_s = repair_after_s
        self.repair_interval_s = repair_interval_s
        self._clock = clock
        self.metrics = metrics or Metrics()
        self.metrics.counter("chainpush_collect_records_total", "records accepted by collect")
        self.metrics.counter("chainpush_collect_replays_total", "records that were already stored")
        self.metrics.counter("chainpush_collect_messages_total", "(topic, message) rows stored")
        self.metrics.counter("chainpush_mongo_errors_total", "transient MongoDB errors (retried)")
        self.metrics.counter("chainpush_collect_conflicts_total",
                             "offset reservations lost to another writer (retried)")
        self.metrics.counter("chainpush_collect_repaired_total",
                             "reserved offsets filled by the repair (their writer died)")
        if store is None:
            if mongo_uri is None or database is None:
                raise ValueError("Collector needs mongo_uri and database, or an open store")
            store = MessageStore(
                mongo_uri, database, retry=retry,
                on_error=lambda: self.metrics.inc("chainpush_mongo_errors_total"),
            )
            self._owns_store = True
        else:
            self._owns_store = False
        self.store = store
        self._owned_dispatch: Dispatcher | None = None
        if dispatch is None and redis_url is not None:
            dispatch = self._owned_dispatch = Dispatcher(
                redis_url, names=RedisNames(namespace), metrics=self.metrics)
        self.dispatch = dispatch
        self.metrics.counter("chainpush_dispatch_errors_total",
                             "dispatch failures after a record was stored (nodes reconcile)")
        self._throttle = Throttle(ERROR_LOG_INTERVAL_S)
        self._lock = asyncio.Lock()
        #: per topic, (epoch, next) as last seen: a hint, the compare-and-swap is the arbiter
        self._cache: dict[str, tuple[str, int | None]] = {}
        #: per topic without ``next`` yet: the rows' highest offset, where reservations start
        self._start: dict[str, int] = {}
        self._repair_task: asyncio.Task[None] | None = None
        #: per topic, the last ``streams`` document read
        self._seen: dict[str, Stream] = {}
        #: per topic, (epoch, next) as of the last look at the rows — or of the read made
        #: before this batch's events existed: a reservation of one of our messages by anyone
        #: else can only come after it (docs/seams.md §2)
        self._trusted: dict[str, tuple[str, int]] = {}

    async def __aenter__(self) -> Collector:
        if self._owns_store:
            await self.store.ensure_indexes()
        if self.repair_interval_s is not None:
            # at start (what a collector that died before us left) and then periodically
            self._repair_task = asyncio.create_task(
                self._repair_loop(self.repair_interval_s), name="collect-repair")
        return self

    async def aclose(self) -> None:
        if self._repair_task is not None:
            self._repair_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repair_task
            self._repair_task = None
        if self._owned_dispatch is not None:
            await self._owned_dispatch.aclose()
        if self._owns_store:
            await self.store.aclose()

    async def run(self) -> None:
        """Collect has no loop of its own (the watcher drives it); wait until cancelled."""
        await asyncio.Event().wait()

    async def accept(self, batch: Sequence[dict[str, object]]) -> None:
        """Store every record of ``batch`` in order, then dispatch the stored messages.

        Raises :class:`push.errors.InvalidRecord` (before storing anything) if a record does not
        follow the seam; retries MongoDB errors until they succeed.
        """
        plans = [(record, message_id(record), topics_of(record)) for record in batch]
        if not plans:
            return
        async with self._lock:
            self.metrics.inc("chainpush_collect_records_total", len(plans))
            records = {msg_id: record for record, msg_id, _ in plans}
            wanted: dict[str, list[str]] = {}
            for _, msg_id, topics in plans:
                for topic in topics:
                    wanted.setdefault(topic, [])
                    if msg_id not in wanted[topic]:
                        wanted[topic].append(msg_id)
            # ``next`` of every topic, read *before* the events are stored: anyone else who
            # handles one of these messages (a replay elsewhere) learns of it after, so its
            # reservation moves ``next`` and fails our compare-and-swap — no new message needs
            # a look for rows of its own (docs/seams.md §2)
            self._trusted.clear()
            slots = await self._read_streams(list(wanted), wanted)
            self._trust(wanted)  # no message of ours had an event yet: nothing to look for
            fresh = await self.store.insert_events(
                [(msg_id, {**record, "topics": topics}) for record, msg_id, topics in plans])
            replayed = {msg_id for (_, msg_id, _), new in zip(plans, fresh, strict=True)
                        if not new}
            if replayed:
                self.metrics.inc("chainpush_collect_replays_total", len(replayed))
                logger.debug("%d record(s) already stored: replaying their rows", len(replayed))
                await self._read_rows([(t, m) for t, ms in wanted.items() for m in ms
                                       if m in replayed], slots, legacy=True)
            slots = await self._store_rows(wanted, records, replayed, slots)
            stored = [StoredMessage(topic=t, offset=slots[(t, m)].offset, msg_id=m,
                                    record=record, epoch=slots[(t, m)].epoch)
                      for record, m, topics in plans for t in topics]
            if self.dispatch is not None:
                await self._dispatch(self.dispatch, stored)
            heads: dict[str, int] = {}
            reserved: dict[str, list[int]] = {}
            for (topic, _), slot in slots.items():
                heads[topic] = max(heads.get(topic, 0), slot.offset)
                if slot.reserved:
                    reserved.setdefault(topic, []).append(slot.offset)
            # the reservations are done with, and the heads for readers of many topics at once
            # (reconcile, webhooks): one round trip per batch
            await self.store.release(reserved, heads)

    async def _dispatch(self, dispatch: Dispatch, stored: list[StoredMessage]) -> None:
        """Hand stored messages to dispatch; never fail because of it.

        The messages are in MongoDB already, and every push node's reconcile finds them there
        (``reconcile_s``): a dispatch failure of any kind (a Redis answering errors, a bug) only
        delays delivery. It is counted, logged at most every ``ERROR_LOG_INTERVAL_S``, and the
        next record dispatches again (the retry)."""
        try:
            await dispatch.publish(stored)
        except Exception as exc:  # any dispatch failure; a cancellation passes through
            self.metrics.inc("chainpush_dispatch_errors_total")
            held = self._throttle.ready("dispatch")
            if held is not None:
                logger.warning(
                    "dispatch of %s failed (%s: %s); it is stored, push nodes pick it up at "
                    "their next reconcile; the next record is dispatched again; %d similar "
                    "lines held back", stored[0].msg_id if stored else "?", type(exc).__name__,
                    client_text(exc), held, exc_info=held == 0)

    async def _store_rows(self, wanted: dict[str, list[str]],
                          records: Mapping[str, Mapping[str, Any]], replayed: set[str],
                          slots: dict[tuple[str, str], Slot]) -> dict[tuple[str, str], Slot]:
        """Give every (topic, message) of ``wanted`` an offset (``slots``: those known already)
        and store its row there."""
        todo = wanted
        suspect = set(replayed)
        for _ in range(MAX_ROUNDS):
            await self._place(todo, suspect, slots)
            rows = [StoredMessage(topic=t, offset=slots[(t, m)].offset, msg_id=m,
                                  record=records[m], epoch=slots[(t, m)].epoch)
                    for t, msg_ids in todo.items() for m in msg_ids if not slots[(t, m)].stored]
            again: dict[str, list[str]] = {}
            for row, result in zip(rows, await self.store.insert_rows(rows), strict=True):
                pair = (row.topic, row.msg_id)
                if result == "stored":
                    self.metrics.inc("chainpush_collect_messages_total")
                    continue
                # neither happens between collectors of this version; both mean rows written
                # by hand or by an older collector running beside this one
                if result == "elsewhere":
                    position = await self.store.position_of(row.topic, row.msg_id)
                    assert position is not None  # insert_rows just saw it
                    logger.error("topic %r: %s is already stored at offset %d, so its "
                                 "reserved offset %d stays empty (readers skip it)",
                                 row.topic, row.msg_id, position[0], row.offset)
                    slots[pair] = Slot(position[0], position[1], stored=True, reserved=False)
                    await self.store.release({row.topic: [row.offset]}, {})
                else:  # taken: the offset is filled by another message, reserve another one
                    logger.error("topic %r: offset %d reserved for %s holds another message; "
                                 "reserving again", row.topic, row.offset, row.msg_id)
                    await self.store.release({row.topic: [row.offset]}, {})
                    self._cache.pop(row.topic, None)
                    del slots[pair]
                    again.setdefault(row.topic, []).append(row.msg_id)
                    suspect.add(row.msg_id)
            if not again:
                return slots
            todo = again
        raise StoreUnavailable(f"collect could not store the rows of {next(iter(records))} in "
                               f"{MAX_ROUNDS} rounds (offsets taken by another writer each time)")

    async def _place(self, wanted: dict[str, list[str]], suspect: set[str],
                     slots: dict[tuple[str, str], Slot]) -> None:
        """Add to ``slots`` the offset of every (topic, message) of ``wanted`` without one: a
        new reservation's, or (after losing a race) the row's or reservation's another writer
        made meanwhile (docs/seams.md §2)."""
        cold = [t for t in wanted if t not in self._cache]
        if cold:  # a topic forgotten after a refused row: read it (and the rows) again
            await self._read(cold, wanted, slots, legacy=bool(suspect))
        for _ in range(MAX_ROUNDS):
            requests = []
            for topic, msg_ids in wanted.items():
                need = [m for m in msg_ids if (topic, m) not in slots]
                if need:
                    epoch, base = self._cache[topic]
                    requests.append(Reserve(topic, epoch, base, need,
                                            self._start.get(topic, 0)))
            if not requests:
                return
            landed = await self.store.reserve(requests)
            if landed == len(requests):
                for r in requests:
                    first = r.start if r.base is None else r.base
                    for i, m in enumerate(r.msg_ids):
                        slots[(r.topic, m)] = Slot(first + 1 + i, r.epoch, stored=False,
                                                   reserved=True)
                    self._cache[r.topic] = (r.epoch, first + len(r.msg_ids))
                return
            # another writer moved some ``next`` (or replaced a stream): read them all again
            # (the reservations that did land show our messages reserved), then retry the rest
            self.metrics.inc("chainpush_collect_conflicts_total", len(requests) - landed)
            await self._read([r.topic for r in requests], {r.topic: r.msg_ids for r in requests},
                             slots, legacy=bool(suspect))
        raise StoreUnavailable(f"collect could not reserve offsets of {sorted(wanted)} in "
                               f"{MAX_ROUNDS} tries (another writer each time)")

    async def _read(self, topics: list[str], wanted: Mapping[str, Sequence[str]],
                    slots: dict[tuple[str, str], Slot], *, legacy: bool) -> None:
        """Read the ``streams`` documents of ``topics``, then the rows of their wanted messages
        — in that order: a reservation is cleared only after its row is stored, so a message
        found in neither has neither. Adds what it finds to ``slots``; refreshes the cache."""
        slots.update(await self._read_streams(topics, wanted))
        # the rows can only hold a message of ours whose reservation came after the last look
        # (``_trusted``): if every reservation since is still open, none was completed, and
        # what they hold for our messages is in ``slots`` already — no need to read the rows
        look = [t for t in topics if not self._unchanged_since_trusted(t)]
        await self._read_rows([(t, m) for t in look for m in wanted[t]], slots, legacy=legacy)
        self._trust(look)

    def _unchanged_since_trusted(self, topic: str) -> bool:
        trusted, stream = self._trusted.get(topic), self._seen[topic]
        if trusted is None or stream.next is None or trusted[0] != stream.epoch:
            return False
        return all(o in stream.reserved for o in range(trusted[1] + 1, stream.next + 1))

    def _trust(self, topics: Iterable[str]) -> None:
        """The rows were looked at after the last read of these topics' ``streams``."""
        for topic in topics:
            stream = self._seen[topic]
            if stream.epoch is not None:
                self._trusted[topic] = (stream.epoch, self._start.get(topic, 0)
                                        if stream.next is None else stream.next)

    async def _read_streams(self, topics: list[str], wanted: Mapping[str, Sequence[str]]
                            ) -> dict[tuple[str, str], Slot]:
        """Read (creating missing ones) the ``streams`` documents of ``topics``: refresh the
        cache, and return the reservations they hold for the wanted messages."""
        streams = await self.store.streams(topics)
        missing = {t: new_epoch() for t in topics if t not in streams or
                   streams[t].epoch is None}
        if missing:
            await self.store.ensure_streams(missing)
            streams.update(await self.store.streams(list(missing)))
        slots: dict[tuple[str, str], Slot] = {}
        for topic in topics:
            stream = streams.get(topic)
            if stream is None or stream.epoch is None:
                raise StoreUnavailable(f"streams document of {topic!r} vanished while creating it")
            for m in wanted[topic]:
                offset = stream.offset_of(m)
                if offset is not None:
                    slots[(topic, m)] = Slot(offset, stream.epoch, stored=False, reserved=True)
            self._cache[topic] = (stream.epoch, stream.next)
            self._seen[topic] = stream
            if stream.next is None:
                # a new document (or one from before reservations): start after the rows
                self._start[topic] = await self.store.max_offset(topic)
        return slots

    async def _read_rows(self, pairs: list[tuple[str, str]], slots: dict[tuple[str, str], Slot],
                         *, legacy: bool) -> None:
        """Add to ``slots`` the rows that exist of ``pairs`` (by ``_id``; ``legacy``: also rows
        stored before rows had that ``_id``)."""
        for pair, (offset, epoch) in (await self.store.rows_of(pairs, legacy=legacy)).items():
            known = slots.get(pair)
            slots[pair] = Slot(offset, epoch, stored=True,
                               reserved=known is not None and known.offset == offset)

    # --- repair --------------------------------------------------------------------------------

    async def repair(self) -> int:
        """Complete the reservations older than ``repair_after_s`` (their writer died between
        reservation and rows) from the ``events`` documents of their messages; return how many
        rows were written. Idempotent, and safe beside the writer if it was only slow."""
        done = 0
        now = self._clock()
        for stream in await self.store.open_streams():
            if not stream.reserved:
                await self.store.recount(stream)
                continue
            stale = stream.stale(now, self.repair_after_s)
            if not stale or stream.epoch is None:
                continue
            events = await self.store.events(r.msg_id for r in stale)
            rows = []
            for r in stale:
                doc = events.get(r.msg_id)
                if doc is None:
                    logger.error("topic %r: offset %d is reserved for %s, whose events document "
                                 "is gone: it stays empty (readers skip it)", stream.topic,
                                 r.offset, r.msg_id)
                    continue
                record = {k: v for k, v in doc.items() if k not in ("_id", "topics")}
                rows.append(StoredMessage(topic=stream.topic, offset=r.offset, msg_id=r.msg_id,
                                          record=record, epoch=stream.epoch))
            results = await self.store.insert_rows(rows)
            stored = [row for row, result in zip(rows, results, strict=True)
                      if result == "stored"]
            for row, result in zip(rows, results, strict=True):
                if result != "stored":
                    logger.error("topic %r: repair of offset %d for %s found it %s", row.topic,
                                 row.offset, row.msg_id, result)
            if stored:
                logger.info("topic %r: repaired %d reserved offset(s) from %d (a writer died "
                            "between reservation and rows)", stream.topic, len(stored),
                            stored[0].offset)
                if self.dispatch is not None:
                    await self._dispatch(self.dispatch, stored)
            self.metrics.inc("chainpush_collect_repaired_total", len(stored))
            done += len(stored)
            await self.store.release({stream.topic: [r.offset for r in stale]},
                                     {stream.topic: max(r.offset for r in stored)} if stored
                                     else {})
        return done

    async def _repair_loop(self, interval_s: float) -> None:
        while True:
            try:
                await self.repair()
            except Exception as exc:  # the next round tries again; never kill the collector
                held = self._throttle.ready("repair")
                if held is not None:
                    logger.warning("repair of reserved offsets failed (%s: %s); next try in "
                                   "%.1f s; %d similar lines held back", type(exc).__name__,
                                   client_text(exc), interval_s, held)
            raise_if_cancelling()  # pymongo's async layer can swallow a cancel (3.11)
            await asyncio.sleep(interval_s)


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one (topic, message) goes: ``offset`` under ``epoch``; ``stored``: its row exists
    already; ``reserved``: a reservation entry binds it (cleared once the row is stored)."""

    offset: int
    epoch: str | None
    stored: bool
    reserved: bool


def new_epoch() -> str:
    """A fresh stream epoch: 16 random hex digits (docs/seams.md §2)."""
    return secrets.token_hex(8)
