"""Helpers shared by the push integration tests: records shaped like the watcher's, recorders."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from push.records import StoredMessage

ALICE = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
BOB = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"


def make_record(
    n: int, *, contract: str = "DemoToken", status: str = "pending", kind: str = "event",
    frm: str = ALICE, to: str = BOB, value: int = 1000,
) -> dict[str, Any]:
    """A record as docs/seams.md §1 describes it; ``n`` makes the id unique."""
    block_hash = "0x" + f"{n // 4:064x}"
    args: dict[str, Any] = {"from": frm, "to": to, "value": str(value * 10**18 + n)}
    if kind == "state":
        args = {"inputs": [], "value": str(n)}
    return {
        "kind": kind, "id": f"31337:{block_hash}:{n % 4}", "chain_id": 31337,
        "contract": contract, "address": "0x" + "12" * 20,
        "event": "Transfer" if kind == "event" else "value",
        "args": args, "block_number": n // 4, "block_hash": block_hash,
        "block_timestamp": 1700000000 + n, "tx_hash": "0x" + f"{n:064x}",
        "log_index": n % 4 if kind == "event" else -1, "status": status,
    }


@dataclass
class RecordingDispatch:
    """A Dispatch that remembers what it was given."""

    published: list[StoredMessage] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def publish(self, messages: Sequence[StoredMessage]) -> None:
        async with self.changed:
            self.published.extend(messages)
            self.changed.notify_all()

    async def wait_for(self, count: int) -> None:
        """Return once at least ``count`` messages were published."""
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.published) >= count)
