"""``MongoCheckpoints`` retries a connection failure a few times before ``CheckpointError``
(issue 9.2: checkpoint I/O retried in the adapter; every write there is idempotent)."""

from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from chainpush.watcher.checkpoint import CheckpointError, MongoCheckpoints

URI = "mongodb://127.0.0.1:1/?directConnection=true"  # never contacted: ops are stand-ins


async def test_connection_failures_are_retried_then_succeed() -> None:
    store = MongoCheckpoints(URI, "db", tries=3, backoff_s=0.0)
    calls: list[int] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise AutoReconnect("connection reset")
        return "ok"

    try:
        assert await store._retrying("writing checkpoint 1:x", op) == "ok"
    finally:
        await store.aclose()
    assert len(calls) == 3


async def test_persistent_connection_failure_becomes_checkpoint_error() -> None:
    store = MongoCheckpoints(URI, "db", tries=2, backoff_s=0.0)

    async def op() -> None:
        raise AutoReconnect("connection reset")

    try:
        with pytest.raises(CheckpointError, match="writing checkpoint 1:x failed after 2 tries"):
            await store._retrying("writing checkpoint 1:x", op)
    finally:
        await store.aclose()


async def test_other_errors_are_not_retried() -> None:
    store = MongoCheckpoints(URI, "db", tries=3, backoff_s=0.0)
    calls: list[int] = []

    async def op() -> None:
        calls.append(1)
        raise OperationFailure("document too large")

    try:
        with pytest.raises(CheckpointError, match="document too large"):
            await store._retrying("writing checkpoint 1:x", op)
    finally:
        await store.aclose()
    assert len(calls) == 1
