"""MongoDB adapter for webhook delivery state: the ``webhooks`` collection (chainpush.constants).

Documents (docs/webhooks.md §State):

* ``{_id: "hook:<name>", kind: "hook", webhook, rev, paused: reason | None, paused_at}`` — one per
  webhook. ``rev`` is bumped by every operator action (``replay``, ``resume``): the deliverer
  polls the hook documents and reloads a webhook whose ``rev`` changed.
* ``{_id: "lane:<name>:<topic>", kind: "lane", webhook, topic, cursor, rev, pinned: [first, last]
  | None, failures, last_error, last_error_at, acked_at}`` — one per (webhook, topic). ``cursor``
  is the last acknowledged offset. The deliverer's writes are conditional on the lane's ``rev``
  it loaded, so an operator's replay is never overwritten by an acknowledgement in flight.

The adapter also lists the distinct topics of ``messages`` (read only) for ``*`` patterns. All
operations are retried on transient driver errors (:mod:`push.retry`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pymongo
import pymongo.errors
from pymongo import AsyncMongoClient

from chainpush.constants import MESSAGES, WEBHOOKS
from chainpush.push.retry import RetryPolicy, retrying
from chainpush.push.store import TRANSIENT
from chainpush.resource import AsyncResource

logger = logging.getLogger(__name__)


def hook_key(name: str) -> str:
    return f"hook:{name}"


def lane_key(name: str, topic: str) -> str:
    return f"lane:{name}:{topic}"


@dataclass(frozen=True, slots=True)
class HookDoc:
    name: str
    rev: int
    paused: str | None
    paused_at: float | None


@dataclass(frozen=True, slots=True)
class LaneDoc:
    webhook: str
    topic: str
    cursor: int
    rev: int
    pinned: tuple[int, int] | None
    failures: int
    last_error: str | None
    last_error_at: float | None
    acked_at: float | None
    epoch: str | None = None


def _hook(row: dict[str, Any]) -> HookDoc:
    return HookDoc(name=row["webhook"], rev=int(row.get("rev", 0)), paused=row.get("paused"),
                   paused_at=row.get("paused_at"))


def _lane(row: dict[str, Any]) -> LaneDoc:
    pinned = row.get("pinned")
    return LaneDoc(
        webhook=row["webhook"], topic=row["topic"], cursor=int(row.get("cursor", 0)),
        rev=int(row.get("rev", 0)),
        pinned=(int(pinned[0]), int(pinned[1])) if pinned else None,
        failures=int(row.get("failures", 0)), last_error=row.get("last_error"),
        last_error_at=row.get("last_error_at"), acked_at=row.get("acked_at"),
        epoch=row.get("epoch") if isinstance(row.get("epoch"), str) else None)


class WebhookStore(AsyncResource):
    """Async context manager over one database's ``webhooks`` collection."""

    def __init__(self, uri: str, database: str, *, retry: RetryPolicy | None = None,
                 timeout_ms: int = 2000, on_error: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms * 5, retryWrites=False)
        db = self._client[database]
        self._state = db[WEBHOOKS]
        self._messages = db[MESSAGES]
        self._retry = retry or RetryPolicy()
        self._on_error = on_error
        self._clock = clock

    async def __aenter__(self) -> WebhookStore:
        async def create() -> None:
            await self._state.create_index([("kind", pymongo.ASCENDING),
                                            ("webhook", pymongo.ASCENDING)])

        await self._do("mongo create webhook indexes", create)
        return self

    async def aclose(self) -> None:
        await self._client.close()

    async def _do(self, what: str, op: Callable[[], Any]) -> Any:
        return await retrying(what, op, policy=self._retry, retry_on=TRANSIENT, logger=logger,
                              on_error=self._on_error)

    async def _insert_absent(self, doc: dict[str, Any]) -> bool:
        try:
            await self._state.insert_one(doc)
        except pymongo.errors.DuplicateKeyError:
            return False
        return True

    # --- reads -------------------------------------------------------------------------------

    async def hooks(self, names: Iterable[str] | None = None) -> dict[str, HookDoc]:
        """Hook documents (of ``names``, or all) by name; absent ones are missing."""
        query: dict[str, Any] = {"kind": "hook"}
        if names is not None:
            query["webhook"] = {"$in": list(names)}

        async def op() -> dict[str, HookDoc]:
            return {row["webhook"]: _hook(row) async for row in self._state.find(query)}

        result: dict[str, HookDoc] = await self._do("mongo read webhook hooks", op)
        return result

    async def lanes(self, name: str) -> dict[str, LaneDoc]:
        async def op() -> dict[str, LaneDoc]:
            return {row["topic"]: _lane(row)
                    async for row in self._state.find({"kind": "lane", "webhook": name})}

        result: dict[str, LaneDoc] = await self._do(f"mongo read lanes of webhook {name}", op)
        return result

    async def topics(self) -> list[str]:
        """Distinct topics that have messages (read only), for ``*`` patterns."""
        async def op() -> list[str]:
            return sorted(str(t) for t in await self._messages.distinct("topic"))

        result: list[str] = await self._do("mongo list topics", op)
        return result

    # --- writes by the deliverer ---------------------------------------------------------------

    async def create_hook(self, name: str) -> None:
        """Mark the webhook as started (after its first lanes exist: see ``start = "head"``)."""
        doc = {"_id": hook_key(name), "kind": "hook", "webhook": name, "rev": 0, "paused": None,
               "paused_at": None, "created_at": self._clock()}
        await self._do(f"mongo create webhook {name}", lambda: self._insert_absent(doc))

    async def create_lane(self, name: str, topic: str, cursor: int) -> LaneDoc:
        """The lane's document; created with ``cursor`` only if it does not exist yet."""
        doc = {"_id": lane_key(name, topic), "kind": "lane", "webhook": name, "topic": topic,
               "cursor": cursor, "rev": 0, "pinned": None, "failures": 0, "last_error": None,
               "last_error_at": None, "acked_at": None}

        async def op() -> LaneDoc:
            if await self._insert_absent(doc):
                return _lane(doc)
            row = await self._state.find_one({"_id": lane_key(name, topic)})
            assert row is not None
            return _lane(row)

        result: LaneDoc = await self._do(f"mongo create lane {name} {topic}", op)
        return result

    async def _lane_update(self, name: str, topic: str, rev: int, update: dict[str, Any],
                           what: str) -> bool:
        async def op() -> bool:
            done = await self._state.update_one(
                {"_id": lane_key(name, topic), "rev": rev}, update)
            return bool(done.matched_count)

        return bool(await self._do(f"mongo {what} {name} {topic}", op))

    async def save_cursor(self, name: str, topic: str, rev: int, cursor: int,
                          epoch: str | None = None) -> bool:
        """Record an acknowledgement (and the stream epoch it belongs to); False if an operator
        changed the lane meanwhile."""
        return await self._lane_update(name, topic, rev, {"$set": {
            "cursor": cursor, "epoch": epoch, "pinned": None, "failures": 0,
            "acked_at": self._clock()}}, "save cursor of")

    async def reset_cursor(self, name: str, topic: str, rev: int,
                           epoch: str | None = None) -> bool:
        """The topic's stream was replaced (head below the cursor, or another epoch): start it
        over in ``epoch``, bumping the lane's ``rev`` (the caller then writes with ``rev + 1``)."""
        return await self._lane_update(name, topic, rev, {
            "$set": {"cursor": 0, "epoch": epoch, "pinned": None, "failures": 0},
            "$inc": {"rev": 1}}, "reset cursor of")

    async def save_pin(self, name: str, topic: str, rev: int, first: int, last: int) -> bool:
        return await self._lane_update(name, topic, rev, {"$set": {"pinned": [first, last]}},
                                       "pin batch of")

    async def save_error(self, name: str, topic: str, rev: int, error: str,
                         failures: int) -> bool:
        return await self._lane_update(name, topic, rev, {"$set": {
            "last_error": error, "last_error_at": self._clock(), "failures": failures}},
            "save error of")

    async def pause(self, name: str, reason: str) -> None:
        """Pause the webhook (idempotent: the first reason stays)."""
        async def op() -> None:
            await self._state.update_one(
                {"_id": hook_key(name), "paused": None},
                {"$set": {"paused": reason, "paused_at": self._clock()}})

        await self._do(f"mongo pause webhook {name}", op)

    # --- operator actions (the CLI) -------------------------------------------------------------

    async def resume(self, name: str) -> bool:
        """Clear the pause and bump ``rev`` (the deliverer reloads); False if never started."""
        async def op() -> bool:
            await self._state.update_many(
                {"kind": "lane", "webhook": name}, {"$set": {"failures": 0}})
            done = await self._state.update_one(
                {"_id": hook_key(name)},
                {"$set": {"paused": None, "paused_at": None}, "$inc": {"rev": 1}})
            return bool(done.matched_count)

        return bool(await self._do(f"mongo resume webhook {name}", op))

    async def replay(self, name: str, since: int, topics: Iterable[str]) -> list[str]:
        """Set the cursor of each lane in ``topics`` to ``since`` (creating missing lanes), bump
        each lane's and the hook's ``rev``; returns the topics changed."""
        changed: list[str] = []
        for topic in topics:
            await self.create_lane(name, topic, since)

            async def op(topic: str = topic) -> None:
                await self._state.update_one(
                    {"_id": lane_key(name, topic)},
                    {"$set": {"cursor": since, "pinned": None, "failures": 0},
                     "$inc": {"rev": 1}})

            await self._do(f"mongo replay {name} {topic}", op)
            changed.append(topic)

        async def bump() -> None:
            await self._state.update_one({"_id": hook_key(name)}, {"$inc": {"rev": 1}})

        await self._do(f"mongo bump webhook {name}", bump)
        return changed
