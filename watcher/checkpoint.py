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
     updated_at}

Protocol of a step (``watcher.stepper``): ``propose(next state, batch)`` → ``sink.accept(batch)``
→ ``save(next state)``. The committed cursor only ever moves after ``accept`` returned. At the
start of *every* session (after a crash, and after any failed step: a sink or checkpoint error)
the checkpoint is loaded again and a leftover ``proposed`` is completed (its batch accepted
again, idempotently, then saved): without it, a failure between accept and save followed by a
reorg would leave records that nobody knows to retract.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, PyMongoError

from chainpush.constants import CHECKPOINTS
from watcher.errors import WatcherError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class CheckpointError(WatcherError):
    """Reading or writing the checkpoint failed (retryable)."""


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

    async def load(self, key: str) -> dict[str, Any] | None:
        return await self._retrying(f"reading checkpoint {key}",
                                    lambda: self._coll.find_one({"_id": key}))

    async def propose(self, key: str, state: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        await self._retrying(f"writing proposal of checkpoint {key}", lambda: self._coll.update_one(
            {"_id": key}, {"$set": {"proposed": {**state, "batch": batch}}}, upsert=True
        ))

    async def save(self, key: str, state: dict[str, Any]) -> None:
        doc = {"_id": key, **state, "proposed": None, "updated_at": time.time()}
        await self._retrying(f"writing checkpoint {key}",
                             lambda: self._coll.replace_one({"_id": key}, doc, upsert=True))

    async def aclose(self) -> None:
        await self._client.close()


class MemoryCheckpoints:
    """Checkpoints in a dict: not durable. For benchmarks and ``--sink stdout`` dry runs."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    async def load(self, key: str) -> dict[str, Any] | None:
        return self.docs.get(key)

    async def propose(self, key: str, state: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        self.docs.setdefault(key, {})["proposed"] = {**state, "batch": batch}

    async def save(self, key: str, state: dict[str, Any]) -> None:
        self.docs[key] = {"_id": key, **state, "proposed": None}

    async def aclose(self) -> None:
        return None
