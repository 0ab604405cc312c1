"""Collect: store each record in MongoDB, give it a gap-free offset per topic, then dispatch.

Theory of operation
-------------------
For each record (docs/seams.md §1), in the order given:

1. ``events``: insert ``{_id: message id, ...record}``. A duplicate key means the message was
   stored before (a replay, or a retry whose first attempt landed): not an error.
2. For each topic of the record (:func:`push.records.topics_of`), a ``messages`` row
   ``{topic, offset, msg_id, record}``. The offset is ``max(offset) + 1`` for the topic; the unique
   index ``(topic, offset)`` arbitrates between concurrent writers (the loser re-reads the max and
   tries again) and the unique index ``(topic, msg_id)`` makes a replay find the row it already
   has, so a replay is re-dispatched with its original offset and never gets a new one. No counter
   document exists that a crash could advance without a message: offsets stay gap-free.
3. Only when every row of the record is stored, the stored messages go to dispatch. A dispatch
   failure of any kind is counted and logged, never raised: the record is stored, and push nodes
   reconcile against MongoDB (:meth:`Collector._dispatch`).

Epochs: before a topic's first row, its ``streams`` row is created with ``$setOnInsert``
(:meth:`push.store.MessageStore.ensure_epoch`) and every row of the topic carries that epoch, so
a wiped store starts each stream under a new one (docs/seams.md §2). Collect caches each topic's
epoch and next offset for its lifetime: wipe or restore the store with the watcher stopped.

MongoDB slow or down: each step is retried with backoff until it succeeds (logged with the tries
left); :meth:`Collector.accept` does not return meanwhile, which is the back-pressure the watcher
sees. Nothing is dropped and nothing unstored is dispatched. A crash between steps is repaired by
the replay the watcher does from its checkpoint: every step is idempotent.

Within one Collector, ``accept`` calls are serialised (a lock) so offsets follow record order;
several Collectors (processes) may write the same database safely.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chainpush.constants import RedisNames
from chainpush.logs import Throttle, client_text
from chainpush.push.dispatch import ERROR_LOG_INTERVAL_S, Dispatcher
from chainpush.push.metrics import Metrics
from chainpush.push.records import StoredMessage, topics_of
from chainpush.push.retry import RetryPolicy
from chainpush.push.store import MessageStore
from chainpush.resource import AsyncResource
from chainpush.watcher.record import message_id

logger = logging.getLogger(__name__)


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
    ) -> None:
        self.metrics = metrics or Metrics()
        self.metrics.counter("chainpush_collect_records_total", "records accepted by collect")
        self.metrics.counter("chainpush_collect_replays_total", "records that were already stored")
        self.metrics.counter("chainpush_collect_messages_total", "(topic, message) rows stored")
        self.metrics.counter("chainpush_mongo_errors_total", "transient MongoDB errors (retried)")
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
        #: next offset to try per topic: a hint only, the unique index is the arbiter.
        self._next: dict[str, int] = {}
        #: each topic's stream epoch, read (or created) once per topic.
        self._epochs: dict[str, str] = {}

    async def __aenter__(self) -> Collector:
        if self._owns_store:
            await self.store.ensure_indexes()
        return self


    async def aclose(self) -> None:
        if self._owned_dispatch is not None:
            await self._owned_dispatch.aclose()
        if self._owns_store:
            await self.store.aclose()

    async def run(self) -> None:
        """Collect has no loop of its own (the watcher drives it); wait until cancelled."""
        await asyncio.Event().wait()

    async def accept(self, batch: Sequence[dict[str, object]]) -> None:
        """Store every record of ``batch`` in order, dispatching each once it is stored.

        Raises :class:`push.errors.InvalidRecord` (before storing anything) if a record does not
        follow the seam; retries MongoDB errors until they succeed.
        """
        plans = [(record, message_id(record), topics_of(record)) for record in batch]
        async with self._lock:
            heads: dict[str, int] = {}
            for record, msg_id, topics in plans:
                stored = await self._store_one(record, msg_id, topics)
                for message in stored:
                    heads[message.topic] = max(heads.get(message.topic, 0), message.offset)
                if self.dispatch is not None:
                    await self._dispatch(self.dispatch, stored)
            # the batch's heads in ``streams``, for readers of many topics at once (reconcile,
            # webhooks): one round trip per batch
            await self.store.advance_heads(heads)

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

    async def _store_one(
        self, record: Mapping[str, Any], msg_id: str, topics: list[str]
    ) -> list[StoredMessage]:
        self.metrics.inc("chainpush_collect_records_total")
        fresh = await self.store.store_event(msg_id, {**record, "topics": topics})
        if not fresh:
            self.metrics.inc("chainpush_collect_replays_total")
            logger.debug("record %s already stored: replaying its rows", msg_id)
        epochs = {topic: await self._epoch(topic) for topic in topics}
        stored: dict[str, StoredMessage] = {}
        if fresh and all(topic in self._next for topic in topics):
            # the common case: a new record on known topics, all rows in one round trip; rows
            # another writer got to first fall through to the one-by-one path below
            rows = [StoredMessage(topic=t, offset=self._next[t], msg_id=msg_id, record=record,
                                  epoch=epochs[t])
                    for t in topics]
            for row, result in zip(rows, await self.store.insert_messages(rows), strict=True):
                if result == "inserted":
                    self.metrics.inc("chainpush_collect_messages_total")
                    self._next[row.topic] = row.offset + 1
                    stored[row.topic] = row
        for topic in topics:
            if topic in stored:
                continue
            position = None if fresh else await self.store.position_of(topic, msg_id)
            if position is None:
                position = await self._insert(topic, msg_id, record, epochs[topic])
            stored[topic] = StoredMessage(topic=topic, offset=position[0], msg_id=msg_id,
                                          record=record, epoch=position[1])
        return [stored[topic] for topic in topics]

    async def _epoch(self, topic: str) -> str:
        epoch = self._epochs.get(topic)
        if epoch is None:
            epoch = self._epochs[topic] = await self.store.ensure_epoch(topic, new_epoch())
        return epoch

    async def _insert(
        self, topic: str, msg_id: str, record: Mapping[str, Any], epoch: str
    ) -> tuple[int, str | None]:
        offset = self._next.get(topic)
        if offset is None:
            offset = await self.store.max_offset(topic) + 1
        while True:
            result = await self.store.insert_message(
                StoredMessage(topic=topic, offset=offset, msg_id=msg_id, record=record,
                              epoch=epoch)
            )
            if result == "inserted":
                self.metrics.inc("chainpush_collect_messages_total")
                self._next[topic] = offset + 1
                return offset, epoch
            if result == "exists":
                existing = await self.store.position_of(topic, msg_id)
                if existing is not None:
                    return existing
            # another writer took this offset: start again from the true maximum
            offset = await self.store.max_offset(topic) + 1


def new_epoch() -> str:
    """A fresh stream epoch: 16 random hex digits (docs/seams.md §2)."""
    return secrets.token_hex(8)
