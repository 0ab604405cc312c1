"""MongoDB adapter: the ``events``, ``messages`` and ``streams`` collections of docs/seams.md §2.

Every operation is idempotent, so a retry after an ambiguous failure (the write may have landed)
is safe: inserts that find their key already present report it instead of failing. Transient
driver errors are retried with backoff (:mod:`push.retry`); callers are blocked meanwhile.

Write concern: every write is ``w: "majority"`` (:data:`WRITE_CONCERN`), reads of history and
heads are read concern ``majority`` (:data:`READ_CONCERN`): on a replica set an offset a client
saw can then never be rolled back by an election and handed to another message
(docs/scaling.md). A standalone ``mongod`` and nx-27017 accept both (nx-27017 ignores them).
The writer's own reads of ``streams`` (offset reservations, :mod:`push.collect`) are primary
reads with the default read concern: a compare-and-swap must see the latest ``next``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pymongo
import pymongo.errors
from pymongo import AsyncMongoClient, WriteConcern
from pymongo.read_concern import ReadConcern

from chainpush.constants import EVENTS, MESSAGES, STREAMS
from chainpush.push.offsets import (
    Stream,
    bindings,
    capped_head,
    first_hole,
    key,
    parse_stream,
    readable,
)
from chainpush.push.offsets import row_id as make_row_id
from chainpush.push.records import StoredMessage
from chainpush.push.retry import RetryPolicy, retrying
from chainpush.resource import AsyncResource

logger = logging.getLogger(__name__)

#: driver errors worth retrying: the server is down, slow, or switching primaries.
TRANSIENT: tuple[type[BaseException], ...] = (
    pymongo.errors.AutoReconnect,
    pymongo.errors.ConnectionFailure,
    pymongo.errors.NetworkTimeout,
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.ExecutionTimeout,
    pymongo.errors.WTimeoutError,
)

InsertResult = Literal["inserted", "offset_taken", "exists"]
#: what :meth:`MessageStore.insert_rows` found for one row: stored now or before at this offset
#: (``stored``), this message already stored at another offset (``elsewhere``), or another
#: message holding the offset (``taken``).
RowResult = Literal["stored", "elsewhere", "taken"]

#: collect's writes wait for a majority of a replica set (a standalone answers at once):
#: ``wtimeout`` bounds the wait, and a ``WTimeoutError`` is retried like any transient error
#: (every write is idempotent).
WRITE_CONCERN = WriteConcern(w="majority", wtimeout=10_000)
#: history, heads and subscribe reads see only majority-committed rows (docs/scaling.md).
READ_CONCERN = ReadConcern("majority")


@dataclass(frozen=True, slots=True)
class Reserve:
    """One topic's part of :meth:`MessageStore.reserve`."""

    topic: str
    epoch: str
    base: int | None
    msg_ids: Sequence[str]
    start: int = 0


class MessageStore(AsyncResource):
    """Async context manager over one MongoDB database; ``aclose()`` closes the client."""

    def __init__(
        self, uri: str, database: str, *, retry: RetryPolicy | None = None,
        timeout_ms: int = 2000, on_error: Callable[[], None] | None = None,
    ) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms * 5, retryWrites=False,
        )
        self._db = self._client[database]
        self._events = self._db.get_collection(EVENTS, write_concern=WRITE_CONCERN)
        self._messages = self._db.get_collection(MESSAGES, write_concern=WRITE_CONCERN)
        self._streams = self._db.get_collection(STREAMS, write_concern=WRITE_CONCERN)
        #: the readers' views (push nodes, webhooks): majority-committed data only
        self._history = self._db.get_collection(MESSAGES, read_concern=READ_CONCERN)
        self._heads = self._db.get_collection(STREAMS, read_concern=READ_CONCERN)
        self._retry = retry or RetryPolicy()
        self._on_error = on_error
        #: rows stored before rows had ``_id`` = ``<topic>\n<msg_id>`` may exist (until
        #: :meth:`ensure_indexes` found no index of that time)
        self._legacy_rows = True

    async def __aenter__(self) -> MessageStore:
        await self.ensure_indexes()
        return self


    async def aclose(self) -> None:
        await self._client.close()

    async def _do(self, what: str, op: Callable[[], Any]) -> Any:
        return await retrying(
            what, op, policy=self._retry, retry_on=TRANSIENT, logger=logger,
            on_error=self._on_error,
        )

    async def ensure_indexes(self) -> None:
        """The unique ``(topic, offset)`` index. ``(topic, msg_id)`` is unique by the rows'
        ``_id`` (``<topic>\n<msg_id>``): its own unique index doubled the cost of every row on
        nx-27017 (measured: 12.2 → 6.0 ms per 60 rows), so it is no longer created. A store
        that has it (written before rows had that ``_id``) keeps it, and only there are rows
        also looked up by fields (:meth:`rows_of` ``legacy``)."""

        async def create() -> bool:
            await self._messages.create_index(
                [("topic", pymongo.ASCENDING), ("offset", pymongo.ASCENDING)], unique=True
            )
            indexes = await self._messages.index_information()
            return any(list(info.get("key", [])) == [("topic", 1), ("msg_id", 1)]
                       for info in indexes.values())

        self._legacy_rows = bool(await self._do("mongo create indexes", create))

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except pymongo.errors.PyMongoError:
            return False
        return True

    # --- events ------------------------------------------------------------------------------

    async def store_event(self, msg_id: str, doc: Mapping[str, Any]) -> bool:
        """Insert ``doc`` under ``_id=msg_id``; True if new, False if it was already stored."""
        return (await self.insert_events([(msg_id, doc)]))[0]

    async def insert_events(self, docs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[bool]:
        """Insert each ``doc`` under ``_id=msg_id`` in one round trip (unordered): True where
        it is new, False where it was stored before (a replay, or a retry whose first attempt
        landed)."""
        if not docs:
            return []

        async def op() -> list[bool]:
            fresh = [True] * len(docs)
            try:
                await self._events.insert_many([{"_id": m, **d} for m, d in docs],
                                               ordered=False)
            except pymongo.errors.BulkWriteError as exc:
                for error in exc.details.get("writeErrors", []):
                    if error.get("code") != 11000:
                        raise
                    fresh[error["index"]] = False
            return fresh

        result: list[bool] = await self._do(f"mongo insert events of {docs[0][0]}", op)
        return result

    async def events(self, msg_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The ``events`` documents of ``msg_ids`` that exist (by ``_id``, one query)."""
        wanted = list(dict.fromkeys(msg_ids))

        async def op() -> dict[str, dict[str, Any]]:
            return {str(d["_id"]): d async for d in self._events.find({"_id": {"$in": wanted}})}

        result: dict[str, dict[str, Any]] = await self._do("mongo read events", op)
        return result

    # --- streams -----------------------------------------------------------------------------

    async def ensure_epoch(self, topic: str, candidate: str) -> str:
        """The epoch of ``topic``'s stream, created as ``candidate`` if the topic has none yet."""
        await self.ensure_streams({topic: candidate})
        stream = (await self.streams([topic])).get(topic)
        return candidate if stream is None or stream.epoch is None else stream.epoch

    async def ensure_streams(self, candidates: Mapping[str, str]) -> None:
        """Create the ``streams`` document of each topic that has none, with the candidate
        epoch, in one round trip.

        Idempotent and safe between concurrent writers: ``$setOnInsert`` on ``_id`` = topic, so
        exactly one candidate wins. (Upserts, not ``find_one_and_update``: nx-27017 ignores
        ``$setOnInsert`` there.) A document without an epoch (written by hand?) gets one.
        """
        if not candidates:
            return
        now = time.time()

        async def op() -> None:
            try:
                await self._streams.bulk_write([
                    pymongo.UpdateOne({"_id": t}, {"$setOnInsert": {"epoch": e, "created_at": now}},
                                      upsert=True) for t, e in candidates.items()],
                    ordered=False)
            except pymongo.errors.BulkWriteError as exc:
                # two upserts raced (MongoDB may refuse the loser): the document exists now
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
            await self._streams.bulk_write([
                pymongo.UpdateOne({"_id": t, "epoch": {"$exists": False}}, {"$set": {"epoch": e}})
                for t, e in candidates.items()], ordered=False)

        await self._do(f"mongo ensure streams of {len(candidates)} topics", op)

    async def streams(self, topics: Iterable[str]) -> dict[str, Stream]:
        """The ``streams`` documents of ``topics`` that exist, in one query (the writer's
        view: latest data, default read concern)."""
        wanted = list(dict.fromkeys(topics))
        if not wanted:
            return {}

        async def op() -> dict[str, Stream]:
            return {str(d["_id"]): parse_stream(d)
                    async for d in self._streams.find({"_id": {"$in": wanted}})}

        result: dict[str, Stream] = await self._do("mongo read streams", op)
        return result

    async def reserve(self, requests: Sequence[Reserve]) -> int:
        """Reserve offsets for several topics in one round trip: per :class:`Reserve`, the
        offsets after ``base`` for ``msg_ids`` (in order), by a compare-and-swap on the topic's
        ``streams`` document. Returns how many landed; when fewer than all, the caller reads
        the documents again (its own landed ones show its messages reserved) and retries.

        ``base=None``: the document has no ``next`` yet (new, or written before reservations);
        the reservation then starts after ``start`` (the rows' highest offset). The binding
        msg_id → offset is written in the same update as the counter (docs/seams.md §2).
        """
        if not requests:
            return 0
        now = time.time()
        ops = []
        for r in requests:
            first = r.start if r.base is None else r.base
            match: dict[str, Any] = {"_id": r.topic, "epoch": r.epoch,
                                     "next": {"$exists": False} if r.base is None else r.base}
            ops.append(pymongo.UpdateOne(match, {
                "$set": {"next": first + len(r.msg_ids), **bindings(first, r.msg_ids, now)},
                "$inc": {"open": len(r.msg_ids)}}))

        async def op() -> int:
            return int((await self._streams.bulk_write(ops, ordered=False)).matched_count)

        result: int = await self._do(f"mongo reserve offsets of {len(requests)} topics", op)
        return result

    async def release(self, reserved: Mapping[str, Sequence[int]],
                      heads: Mapping[str, int]) -> None:
        """Clear the reservations ``topic → offsets`` whose rows are stored, and advance each
        topic's ``head`` (``$max``: never back), in one round trip.

        Each clear is conditional on its entries (``$unset`` with ``$inc open -k`` only if all
        are still there), so a second clear (a retry, the repair racing a slow writer) changes
        nothing; if another clear got to some entries first, they are cleared one by one.
        """
        topics = list(dict.fromkeys([*reserved, *heads]))
        if not topics:
            return

        def clear(topic: str, offsets: Sequence[int], head: int | None) -> pymongo.UpdateOne:
            match: dict[str, Any] = {"_id": topic}
            match.update({f"r.{key(o)}": {"$exists": True} for o in offsets})
            update: dict[str, Any] = {}
            if offsets:
                update["$unset"] = {f"r.{key(o)}": "" for o in offsets}
                update["$inc"] = {"open": -len(offsets)}
            if head is not None:
                update["$max"] = {"head": int(head)}
            return pymongo.UpdateOne(match, update)

        async def op() -> None:
            ops = [clear(t, reserved.get(t, ()), heads.get(t)) for t in topics]
            result = await self._streams.bulk_write(ops, ordered=False)
            if result.matched_count == len(ops):
                return
            # some entries were cleared by someone else: one conditional clear per offset
            singles = [clear(t, (o,), None) for t in topics for o in reserved.get(t, ())]
            singles += [clear(t, (), h) for t, h in heads.items()]
            await self._streams.bulk_write(singles, ordered=False)

        await self._do(f"mongo release offsets of {len(topics)} topics", op)

    async def open_streams(self) -> list[Stream]:
        """The ``streams`` documents with open reservations (``open > 0``), for the repair."""

        async def op() -> list[Stream]:
            return [parse_stream(d) async for d in self._streams.find({"open": {"$gt": 0}})]

        result: list[Stream] = await self._do("mongo read open reservations", op)
        return result

    async def recount(self, stream: Stream) -> None:
        """Set ``open`` to the entries ``stream`` holds, if the document is unchanged since (a
        counter that drifted, e.g. an entry removed by hand: the repair stops looking at it)."""
        match = {"_id": stream.topic, "next": stream.next, "open": stream.open}

        async def op() -> None:
            await self._streams.update_one(match, {"$set": {"open": len(stream.reserved)}})

        await self._do(f"mongo recount reservations of {stream.topic}", op)

    # --- messages ----------------------------------------------------------------------------

    async def position_of(self, topic: str, msg_id: str) -> tuple[int, str | None] | None:
        """``(offset, epoch)`` of the row ``msg_id`` already has under ``topic``, or None."""
        return (await self.rows_of([(topic, msg_id)], legacy=True)).get((topic, msg_id))

    async def rows_of(self, pairs: Sequence[tuple[str, str]], *, legacy: bool = False
                      ) -> dict[tuple[str, str], tuple[int, str | None]]:
        """``(topic, msg_id) → (offset, epoch)`` of the rows that exist, by ``_id`` in one
        query. ``legacy``: also look for rows stored before rows had that ``_id`` (by fields:
        a scan on nx-27017), for the pairs not found."""
        if not pairs:
            return {}
        ids = {make_row_id(t, m): (t, m) for t, m in pairs}

        async def op() -> dict[tuple[str, str], tuple[int, str | None]]:
            out = {ids[str(d["_id"])]: (int(d["offset"]), d.get("epoch")) async for d in
                   self._messages.find({"_id": {"$in": list(ids)}}, {"offset": 1, "epoch": 1})}
            missing = [p for p in ids.values() if p not in out]
            if legacy and missing and self._legacy_rows:
                topics = sorted({t for t, _ in missing})
                async for d in self._messages.find(
                        {"topic": {"$in": topics}, "msg_id": {"$in": [m for _, m in missing]}},
                        {"topic": 1, "msg_id": 1, "offset": 1, "epoch": 1}):
                    pair = (str(d["topic"]), str(d["msg_id"]))
                    if pair in ids.values():
                        out.setdefault(pair, (int(d["offset"]), d.get("epoch")))
            return out

        result: dict[tuple[str, str], tuple[int, str | None]] = await self._do(
            f"mongo find rows of {pairs[0][1]}", op)
        return result

    async def insert_rows(self, messages: Sequence[StoredMessage]) -> list[RowResult]:
        """Insert the rows at their reserved offsets in one round trip (unordered); for each,
        ``stored`` (now, or by an earlier attempt), ``elsewhere`` (this message already has
        a row under the topic at another offset) or ``taken`` (another message holds it)."""
        if not messages:
            return []

        async def op() -> list[RowResult]:
            results: list[RowResult] = ["stored"] * len(messages)
            try:
                await self._messages.insert_many([_row(m) for m in messages], ordered=False)
            except pymongo.errors.BulkWriteError as exc:
                failed = []
                for error in exc.details.get("writeErrors", []):
                    if error.get("code") != 11000:
                        raise
                    failed.append(error["index"])
                # which index refused? the rows decide; nx-27017 and mongod word the error
                # differently, so ask rather than parse
                found = await self.rows_of([(messages[i].topic, messages[i].msg_id)
                                            for i in failed], legacy=True)
                for i in failed:
                    m = messages[i]
                    where = found.get((m.topic, m.msg_id))
                    results[i] = ("taken" if where is None else
                                  "stored" if where[0] == m.offset else "elsewhere")
            return results

        result: list[RowResult] = await self._do(
            f"mongo insert rows of {messages[0].msg_id}", op)
        return result

    async def head(self, topic: str) -> tuple[int, str | None]:
        """``(last offset, its epoch)`` of ``topic``: ``(0, None)`` when it has no message.

        The epoch is the one stored with the last row, so a subscribe learns the head and the
        stream's epoch together (docs/protocol.md §5, Epochs). The offset is capped below the
        lowest pending hole (docs/seams.md §2), read from ``streams`` first.
        """

        async def op() -> tuple[int, str | None]:
            doc = await self._heads.find_one({"_id": topic}, {"next": 1, "r": 1, "epoch": 1})
            row = await self._history.find_one(
                {"topic": topic}, {"offset": 1, "epoch": 1},
                sort=[("offset", pymongo.DESCENDING)],
            )
            if row is None:
                return 0, None
            stream = None if doc is None else parse_stream(doc)
            return capped_head(int(row["offset"]), stream), row.get("epoch")

        result: tuple[int, str | None] = await self._do(f"mongo head of {topic}", op)
        return result

    async def max_offset(self, topic: str) -> int:
        """The highest offset of ``topic``'s rows (0 when empty)."""

        async def op() -> int:
            row = await self._messages.find_one(
                {"topic": topic}, {"offset": 1}, sort=[("offset", pymongo.DESCENDING)])
            return 0 if row is None else int(row["offset"])

        result: int = await self._do(f"mongo max offset of {topic}", op)
        return result

    async def read_range(
        self, topic: str, first: int, last: int | None = None, *, limit: int = 500
    ) -> list[StoredMessage]:
        """Messages of ``topic`` with ``first <= offset <= last`` in offset order, at most
        ``limit`` — the contiguous run from ``first``: the rows stop before a *pending* hole
        (an offset reserved by a writer and not stored yet: read again later) and pass over a
        *lost* one (docs/seams.md §2), which the caller sees as a gap and may log.

        Contiguous rows cost one query; a hole costs a read of ``streams`` and the rows again
        (after it: a reservation is cleared only once its row is stored)."""
        bounds: dict[str, int] = {"$gte": first}
        if last is not None:
            bounds["$lte"] = last

        async def rows() -> list[StoredMessage]:
            cursor = self._history.find({"topic": topic, "offset": bounds}).sort(
                "offset", pymongo.ASCENDING
            ).limit(limit)
            return [
                StoredMessage(
                    topic=row["topic"], offset=int(row["offset"]), msg_id=row["msg_id"],
                    record=row["record"], epoch=row.get("epoch"),
                )
                async for row in cursor
            ]

        async def op() -> list[StoredMessage]:
            found = await rows()
            if first_hole(first, [m.offset for m in found]) is None:
                return found  # contiguous: nothing to judge
            doc = await self._heads.find_one({"_id": topic}, {"next": 1, "r": 1, "epoch": 1})
            stream = None if doc is None else parse_stream(doc)
            found = await rows()
            return found[:readable(first, [m.offset for m in found], stream)]

        result: list[StoredMessage] = await self._do(f"mongo read {topic} from {first}", op)
        return result

    async def advance_heads(self, heads: Mapping[str, int]) -> None:
        """Record in ``streams`` that each topic's stream reaches at least that offset
        (``$max``: idempotent, never moves a head back), in one round trip.

        Collect calls it after storing a batch; :meth:`heads` reads these. A crash between the
        rows and this write leaves a head behind its rows until the watcher's replay of the
        batch, which writes it again: readers of :meth:`heads` (reconcile, webhooks) only catch
        messages later, never lose them.
        """
        if not heads:
            return

        async def op() -> None:
            await self._streams.bulk_write(
                [pymongo.UpdateOne({"_id": t}, {"$max": {"head": int(o)}}) for t, o in
                 heads.items()], ordered=False)

        await self._do(f"mongo advance heads of {len(heads)} topics", op)

    async def heads(self, topics: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        """``topic → (last offset, epoch)`` for many topics in one query on ``streams``.

        A topic whose ``streams`` row has no ``head`` yet (a row just created, or written before
        heads were kept) is read from ``messages`` instead (:meth:`head`). A topic with no row
        has no message — collect makes the row before a topic's first one — and is ``(0,
        None)`` without a query: a node serving 10,000 ``user:`` topics, most of them never
        written, costs one query per interval, not 10,000. (Messages stored before ``streams``
        existed, or restored with ``streams`` dropped, count from the topic's next message,
        which makes the row; :meth:`head`, which a subscribe reads, sees them at once.)
        """
        wanted = list(dict.fromkeys(topics))
        if not wanted:
            return {}

        async def op() -> list[dict[str, Any]]:
            return await self._heads.find(
                {"_id": {"$in": wanted}}, {"head": 1, "epoch": 1}).to_list(None)

        rows: list[dict[str, Any]] = await self._do("mongo heads", op)
        out: dict[str, tuple[int, str | None]] = {}
        headless: list[str] = []
        for row in rows:
            epoch = row.get("epoch")
            if isinstance(row.get("head"), int):
                out[str(row["_id"])] = (row["head"], epoch if isinstance(epoch, str) else None)
            else:
                headless.append(str(row["_id"]))
        for topic in headless:
            out[topic] = await self.head(topic)
        for topic in wanted:
            out.setdefault(topic, (0, None))
        return out

    async def max_offsets(self, topics: Iterable[str]) -> dict[str, int]:
        """Highest offset per topic (0 when empty): :meth:`heads` without the epochs."""
        return {topic: head for topic, (head, _) in (await self.heads(topics)).items()}


def _row(message: StoredMessage) -> dict[str, Any]:
    return {"_id": make_row_id(message.topic, message.msg_id), "topic": message.topic,
            "offset": message.offset, "msg_id": message.msg_id,
            "epoch": message.epoch, "record": dict(message.record)}
