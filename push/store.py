"""MongoDB adapter: the ``events``, ``messages`` and ``streams`` collections of docs/seams.md §2.

Every operation is idempotent, so a retry after an ambiguous failure (the write may have landed)
is safe: inserts that find their key already present report it instead of failing. Transient
driver errors are retried with backoff (:mod:`push.retry`); callers are blocked meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import pymongo
import pymongo.errors
from pymongo import AsyncMongoClient

from chainpush.constants import EVENTS, MESSAGES, STREAMS
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
        self._events = self._db[EVENTS]
        self._messages = self._db[MESSAGES]
        self._streams = self._db[STREAMS]
        self._retry = retry or RetryPolicy()
        self._on_error = on_error

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
        async def create() -> None:
            await self._messages.create_index(
                [("topic", pymongo.ASCENDING), ("offset", pymongo.ASCENDING)], unique=True
            )
            await self._messages.create_index(
                [("topic", pymongo.ASCENDING), ("msg_id", pymongo.ASCENDING)], unique=True
            )

        await self._do("mongo create indexes", create)

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except pymongo.errors.PyMongoError:
            return False
        return True

    # --- events ------------------------------------------------------------------------------

    async def store_event(self, msg_id: str, doc: Mapping[str, Any]) -> bool:
        """Insert ``doc`` under ``_id=msg_id``; True if new, False if it was already stored."""

        async def op() -> bool:
            try:
                await self._events.insert_one({"_id": msg_id, **doc})
            except pymongo.errors.DuplicateKeyError:
                return False
            return True

        return bool(await self._do(f"mongo insert event {msg_id}", op))

    # --- streams -----------------------------------------------------------------------------

    async def ensure_epoch(self, topic: str, candidate: str) -> str:
        """The epoch of ``topic``'s stream, created as ``candidate`` if the topic has none yet.

        Idempotent and safe between concurrent writers: ``$setOnInsert`` on ``_id`` = topic, so
        exactly one candidate wins and everyone reads it back. (An upsert followed by a read,
        not ``find_one_and_update``: nx-27017 ignores ``$setOnInsert`` there.)
        """

        async def op() -> str:
            try:
                await self._streams.update_one(
                    {"_id": topic},
                    {"$setOnInsert": {"epoch": candidate, "created_at": time.time()}},
                    upsert=True,
                )
            except pymongo.errors.DuplicateKeyError:
                pass  # two upserts raced (MongoDB may refuse the loser): the row exists now
            row = await self._streams.find_one({"_id": topic}, {"epoch": 1})
            if row is None or not isinstance(row.get("epoch"), str):
                # a row without an epoch (written by hand?): give it one, the same way
                logger.warning("streams row of %s has no epoch: setting one", topic)
                await self._streams.update_one(
                    {"_id": topic, "epoch": {"$exists": False}}, {"$set": {"epoch": candidate}},
                    upsert=False)
                row = await self._streams.find_one({"_id": topic}, {"epoch": 1}) or {}
            return str(row.get("epoch", candidate))

        result: str = await self._do(f"mongo ensure epoch of {topic}", op)
        return result

    # --- messages ----------------------------------------------------------------------------

    async def position_of(self, topic: str, msg_id: str) -> tuple[int, str | None] | None:
        """``(offset, epoch)`` of the row ``msg_id`` already has under ``topic``, or None."""

        async def op() -> tuple[int, str | None] | None:
            row = await self._messages.find_one(
                {"topic": topic, "msg_id": msg_id}, {"offset": 1, "epoch": 1})
            return None if row is None else (int(row["offset"]), row.get("epoch"))

        result: tuple[int, str | None] | None = await self._do(
            f"mongo find {msg_id} in {topic}", op)
        return result

    async def head(self, topic: str) -> tuple[int, str | None]:
        """``(last offset, its epoch)`` of ``topic``: ``(0, None)`` when it has no message.

        One indexed read: the epoch is the one stored with the last row, so a subscribe learns
        the head and the stream's epoch together (docs/protocol.md §5, Epochs).
        """

        async def op() -> tuple[int, str | None]:
            row = await self._messages.find_one(
                {"topic": topic}, {"offset": 1, "epoch": 1},
                sort=[("offset", pymongo.DESCENDING)],
            )
            return (0, None) if row is None else (int(row["offset"]), row.get("epoch"))

        result: tuple[int, str | None] = await self._do(f"mongo head of {topic}", op)
        return result

    async def max_offset(self, topic: str) -> int:
        """The highest offset of ``topic`` (0 when empty)."""
        return (await self.head(topic))[0]

    async def insert_message(self, message: StoredMessage) -> InsertResult:
        """Insert one (topic, offset) row; the unique indexes arbitrate between writers.

        ``"offset_taken"``: another message holds that offset, pick the next one.
        ``"exists"``: this message is already stored under the topic (a replay or a retry
        whose first attempt landed); read its position with :meth:`position_of`.
        """

        async def op() -> InsertResult:
            try:
                await self._messages.insert_one(_row(message))
            except pymongo.errors.DuplicateKeyError:
                # which index refused? the message's own row decides; nx-27017 and mongod word
                # the error differently, so ask rather than parse.
                row = await self._messages.find_one(
                    {"topic": message.topic, "msg_id": message.msg_id}, {"offset": 1}
                )
                return "offset_taken" if row is None else "exists"
            return "inserted"

        result: InsertResult = await self._do(
            f"mongo insert {message.msg_id} into {message.topic}", op
        )
        return result

    async def insert_messages(self, messages: Sequence[StoredMessage]) -> list[InsertResult]:
        """:meth:`insert_message` for several rows in one round trip (unordered bulk insert)."""

        async def op() -> list[InsertResult]:
            results: list[InsertResult] = ["inserted"] * len(messages)
            try:
                await self._messages.insert_many([_row(m) for m in messages], ordered=False)
            except pymongo.errors.BulkWriteError as exc:
                for error in exc.details.get("writeErrors", []):
                    if error.get("code") != 11000:
                        raise
                    m = messages[error["index"]]
                    row = await self._messages.find_one(
                        {"topic": m.topic, "msg_id": m.msg_id}, {"offset": 1})
                    results[error["index"]] = "offset_taken" if row is None else "exists"
            return results

        first = messages[0].msg_id if messages else "nothing"
        result: list[InsertResult] = await self._do(f"mongo insert rows of {first}", op)
        return result

    async def read_range(
        self, topic: str, first: int, last: int | None = None, *, limit: int = 500
    ) -> list[StoredMessage]:
        """Messages of ``topic`` with ``first <= offset <= last`` in offset order, at most
        ``limit``."""
        bounds: dict[str, int] = {"$gte": first}
        if last is not None:
            bounds["$lte"] = last

        async def op() -> list[StoredMessage]:
            cursor = self._messages.find({"topic": topic, "offset": bounds}).sort(
                "offset", pymongo.ASCENDING
            ).limit(limit)
            return [
                StoredMessage(
                    topic=row["topic"], offset=int(row["offset"]), msg_id=row["msg_id"],
                    record=row["record"], epoch=row.get("epoch"),
                )
                async for row in cursor
            ]

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
            return await self._streams.find(
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
    return {"topic": message.topic, "offset": message.offset, "msg_id": message.msg_id,
            "epoch": message.epoch, "record": dict(message.record)}
