"""The watcher's checkpoint in MongoDB (``checkpoints``, ``_id`` = ``<chain id>:<name>``).

One document per watcher::

    {_id, chain_id, name, block_number, block_hash,       # the cursor's tip, for humans
     cursor: {window, chain: [headers]},                  # recent hashes: reorgs after restart
     ledger: {blocks: [...], final_state: {...}},         # what was emitted and may be retracted
     contracts: [{name, address, selection}],             # what the tip covers (Bound.coverage)
     catchup: null | {contracts: [...], next_block},      # an unfinished catch-up of added ones
     proposed: null | {cursor, ledger, batch},            # write-ahead of one live step
     updated_at}

Protocol of a live step (``Watcher``): ``propose(next state, batch)`` → ``sink.accept(batch)``
→ ``save(next state)``. The committed cursor only ever moves after ``accept`` returned. On
restart a leftover ``proposed`` is completed (its batch accepted again, idempotently, then
saved): without it, a crash between accept and save followed by a reorg while down would leave
records that nobody knows to retract.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from chainpush.constants import CHECKPOINTS
from watcher.errors import WatcherError


class CheckpointError(WatcherError):
    """Reading or writing the checkpoint failed (retryable)."""


class MongoCheckpoints:
    def __init__(self, mongo_uri: str, database: str) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_uri, serverSelectionTimeoutMS=5000
        )
        self._coll = self._client[database][CHECKPOINTS]

    async def load(self, key: str) -> dict[str, Any] | None:
        try:
            return await self._coll.find_one({"_id": key})
        except PyMongoError as exc:
            raise CheckpointError(f"reading checkpoint {key} failed: {exc}") from exc

    async def propose(self, key: str, state: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        try:
            await self._coll.update_one(
                {"_id": key}, {"$set": {"proposed": {**state, "batch": batch}}}, upsert=True
            )
        except PyMongoError as exc:
            raise CheckpointError(f"writing proposal of checkpoint {key} failed: {exc}") from exc

    async def save(self, key: str, state: dict[str, Any]) -> None:
        doc = {"_id": key, **state, "proposed": None, "updated_at": time.time()}
        try:
            await self._coll.replace_one({"_id": key}, doc, upsert=True)
        except PyMongoError as exc:
            raise CheckpointError(f"writing checkpoint {key} failed: {exc}") from exc

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
