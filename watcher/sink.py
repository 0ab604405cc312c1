"""Where the watcher's records go: the ``Sink`` protocol, and two small sinks of its own.

``Sink.accept(batch)`` returns only once every record of ``batch`` is durably stored, and is
idempotent (the same records again are a no-op): the watcher re-delivers after a crash between
``accept`` and its checkpoint. ``push.collect.Collector`` is the production sink (events +
per-topic messages + dispatch). ``MongoSink`` stores into ``events`` only (``chainpush watch
--sink mongo``: the watcher without the push side); ``JsonLinesSink`` prints (``--sink stdout``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError, PyMongoError

from chainpush.constants import EVENTS
from chainpush.resource import AsyncResource
from chainpush.watcher.errors import WatcherError
from chainpush.watcher.record import message_id

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000


class Sink(Protocol):
    """Durable, idempotent hand-off of records (``docs/seams.md`` §1)."""

    async def accept(self, batch: Sequence[dict[str, object]]) -> None: ...


class SinkError(WatcherError):
    """The sink could not store a batch (retryable: the watcher retries from its checkpoint)."""


class MongoSink(AsyncResource):
    """Stores each record in ``events`` under ``_id`` = message id; duplicates are no-ops."""

    def __init__(self, mongo_uri: str, database: str) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_uri, serverSelectionTimeoutMS=5000
        )
        self._events = self._client[database][EVENTS]

    async def accept(self, batch: Sequence[dict[str, object]]) -> None:
        if not batch:
            return
        # plain inserts, unordered: a duplicate key (11000) is a record stored before, which is
        # the idempotence we need; 3-4x faster than upserts on nx-27017
        docs = [{"_id": message_id(r), **r} for r in batch]
        try:
            await self._events.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if other:
                raise SinkError(f"storing {len(batch)} records in {EVENTS} failed: "
                                f"{other[0].get('errmsg')}") from exc
        except PyMongoError as exc:
            raise SinkError(f"storing {len(batch)} records in {EVENTS} failed: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.close()


class JsonLinesSink(AsyncResource):
    """Prints each record as one JSON line (a debugging aid; ``--sink stdout``)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

    async def accept(self, batch: Sequence[dict[str, object]]) -> None:
        for r in batch:
            self._out.write(json.dumps(r, separators=(",", ":")) + "\n")
        self._out.flush()

    async def aclose(self) -> None:
        return None
