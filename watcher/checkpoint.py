"""The watcher's checkpoint in MongoDB (``checkpoints``, ``_id`` = ``<chain id>:<name>``).

One document per watcher::

    {_id, chain_id, name, block_number, block_hash,       # the cursor's tip, for humans
     cursor: {window, chain: [headers]},                  # recent hashes: reorgs after restart
     ledger: {blocks: [...], final_state: [...],          # what was emitted and may be retracted
              orphaned: [[hash, number, count]]},         # incarnations of blocks that may return
     contracts: [{name, address, selection}],             # what the tip covers (Bound.coverage)
     catchup: null | {contracts: [...], next_block},      # an unfinished catch-up of added ones
     backfill_to: null | N,                               # a backfill under way: final up to N
     proposed: null | {cursor, ledger, batch},            # write-ahead of one live step
     fence: N,                                            # the lease generation of its writer
     updated_at}

Protocol of a step (``watcher.stepper``): ``propose(next state, batch)`` → ``sink.accept(batch)``
→ ``save(next state)``. The committed cursor only ever moves after ``accept`` returned. At the
start of *every* session (after a crash, and after any failed step: a sink or checkpoint error)
the checkpoint is loaded again and a leftover ``proposed`` is completed (its batch accepted
again, idempotently, then saved): without it, a failure between accept and save followed by a
reorg would leave records that nobody knows to retract.

**Fencing** (``watcher.lease``): a leader passes its lease generation as ``fence``. ``load``
then raises the document's ``fence`` to it in the same atomic update that reads it (refused if
the document's is higher: a newer leader exists), and ``propose`` / ``save`` / ``check`` match
``{_id, fence}`` only: a write of a superseded leader matches nothing and raises
``LeaseLost``. Everything an old leader wrote before the new one's ``load`` is what the new one
loads; nothing it tries after is stored. Without ``fence`` (no lease: tests, benchmarks) the
writes are unconditional.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from chainpush.constants import CHECKPOINTS
from chainpush.watcher.errors import WatcherError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class CheckpointError(WatcherError):
    """Reading or writing the checkpoint failed (retryable)."""


class LeaseLost(WatcherError):
    """This watcher no longer holds the lease of its checkpoint key: a write carrying its
    fencing token was refused (``fenced``), or its lease lapsed. It stops its session and
    becomes a standby (``watcher.service``)."""

    def __init__(self, message: str, *, fenced: bool, fence_seen: int | None = None) -> None:
        super().__init__(message)
        self.fenced = fenced
        #: the generation the refusing checkpoint is fenced with, when known: the next
        #: acquisition must go above it (``MongoLease.raise_floor``)
        self.fence_seen = fence_seen


def _unfenced(key: str, what: str, fence: int, doc: dict[str, Any] | None) -> LeaseLost:
    found = None if doc is None else doc.get("fence")
    return LeaseLost(f"{what} of checkpoint {key} refused (fencing): lease generation {fence} "
                     f"superseded by {found}", fenced=True,
                     fence_seen=found if isinstance(found, int) else None)


class MongoCheckpoints:
    """The checkpoint in MongoDB. A connection failure (``ConnectionFailure``: reset, timeout,
    no server selected) is retried ``tries`` times with a short backoff before it becomes a
    ``CheckpointError`` (then the watcher's session retries from a fresh ``load``): every
    write here is idempotent (``$set`` / replace of one document), so repeating one is safe."""

    def __init__(self, mongo_uri: str, database: str, *, tries: int = 3,
                 backoff_s: float = 0.2) -> None:
        if tries < 1:
            raise ValueError(f"tries must be >= 1, got {tries}")
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_uri, serverSelectionTimeoutMS=5000
        )
        self._coll = self._client[database][CHECKPOINTS]
        self._tries = tries
        self._backoff_s = backoff_s

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self._tries + 1):
            try:
                return await op()
            except ConnectionFailure as exc:
                left = self._tries - attempt
                if left == 0:
                    raise CheckpointError(f"{what} failed after {self._tries} tries: "
                                          f"{exc}") from exc
                delay = self._backoff_s * 2 ** (attempt - 1)
                logger.warning("%s failed (%s); retrying in %.1f s (%d tries left)", what, exc,
                               delay, left)
                await asyncio.sleep(delay)
            except PyMongoError as exc:
                raise CheckpointError(f"{what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    async def load(self, key: str, *, fence: int | None = None) -> dict[str, Any] | None:
        """The checkpoint document (None: none yet). With ``fence``: also raises its ``fence``
        to that generation, atomically (a fenced document exists afterwards, maybe without a
        cursor: a first run); ``LeaseLost`` if the document's fence is higher."""
        if fence is None:
            return await self._retrying(f"reading checkpoint {key}",
                                        lambda: self._coll.find_one({"_id": key}))

        async def fenced_read() -> dict[str, Any]:
            try:
                doc = await self._coll.find_one_and_update(
                    {"_id": key, "$or": [{"fence": {"$lte": fence}},
                                         {"fence": {"$exists": False}}]},
                    {"$set": {"fence": fence}}, upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:  # MongoDB: the upsert met a document fenced higher
                doc = None
            if doc is None:  # (nx-27017 answers None instead of the duplicate key error)
                raise _unfenced(key, "reading", fence, await self._coll.find_one({"_id": key}))
            return doc

        doc = await self._retrying(f"reading checkpoint {key}", fenced_read)
        return doc if doc.get("cursor") or doc.get("proposed") else None

    async def propose(self, key: str, state: dict[str, Any], batch: list[dict[str, Any]],
                      *, fence: int | None = None) -> None:
        async def write() -> None:
            result = await self._coll.update_one(
                {"_id": key} if fence is None else {"_id": key, "fence": fence},
                {"$set": {"proposed": {**state, "batch": batch}}}, upsert=fence is None)
            if fence is not None and result.matched_count == 0:
                raise _unfenced(key, "proposal", fence, await self._coll.find_one({"_id": key}))

        await self._retrying(f"writing proposal of checkpoint {key}", write)

    async def save(self, key: str, state: dict[str, Any], *, fence: int | None = None) -> None:
        doc = {"_id": key, **state, "proposed": None, "updated_at": time.time()}

        async def write() -> None:
            if fence is None:
                await self._coll.replace_one({"_id": key}, doc, upsert=True)
                return
            result = await self._coll.replace_one({"_id": key, "fence": fence},
                                                  {**doc, "fence": fence})
            if result.matched_count == 0:
                raise _unfenced(key, "writing", fence, await self._coll.find_one({"_id": key}))

        await self._retrying(f"writing checkpoint {key}", write)

    async def check(self, key: str, *, fence: int) -> None:
        """Raise ``LeaseLost`` unless the checkpoint is still fenced with ``fence`` (before
        handing the sink a batch that no proposal covers)."""

        async def read() -> None:
            doc = await self._coll.find_one({"_id": key}, {"fence": 1})
            if doc is None or doc.get("fence") != fence:
                raise _unfenced(key, "handing a batch", fence, doc)

        await self._retrying(f"checking the fence of checkpoint {key}", read)

    async def aclose(self) -> None:
        await self._client.close()


class MemoryCheckpoints:
    """Checkpoints in a dict: not durable. For benchmarks and ``--sink stdout`` dry runs."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def _fenced(self, key: str, what: str, fence: int | None) -> dict[str, Any]:
        doc = self.docs.setdefault(key, {"_id": key})
        if fence is not None and doc.get("fence") != fence:
            raise _unfenced(key, what, fence, doc)
        return doc

    async def load(self, key: str, *, fence: int | None = None) -> dict[str, Any] | None:
        doc = self.docs.get(key)
        if fence is not None:
            doc = self.docs.setdefault(key, {"_id": key})
            if doc.get("fence", 0) > fence:
                raise _unfenced(key, "reading", fence, doc)
            doc["fence"] = fence
        return doc if doc is not None and (doc.get("cursor") or doc.get("proposed")) else None

    async def propose(self, key: str, state: dict[str, Any], batch: list[dict[str, Any]],
                      *, fence: int | None = None) -> None:
        self._fenced(key, "proposal", fence)["proposed"] = {**state, "batch": batch}

    async def save(self, key: str, state: dict[str, Any], *, fence: int | None = None) -> None:
        old = self._fenced(key, "writing", fence)
        self.docs[key] = {"_id": key, **state, "proposed": None, "fence": old.get("fence")}

    async def check(self, key: str, *, fence: int) -> None:
        self._fenced(key, "handing a batch", fence)

    async def aclose(self) -> None:
        return None
