"""The block cursor: follows the canonical chain one header at a time and detects reorgs.

Theory of operation
-------------------
The cursor keeps the last ``window`` canonical headers as a contiguous chain
``chain[0] … tip`` (``chain[0]`` is the *anchor*: the oldest block still tracked). Nodes here
never send logs with ``removed: true``, so reorganisations are detected the way a light client
does: by parent hashes.

* The caller fetches the canonical header at ``next_number`` and feeds it to ``receive_block``.
* If its ``parent_hash`` is the hash we hold one below, it extends the chain (``NewBlock``);
  anything we held at or above its height is orphaned first (``Reorg``).
* If the parent hash does not match, our block below is not canonical any more: the cursor
  asks for the block one lower (``next_number`` goes *down*), and so on, until the fetched
  header's parent is one we hold — the *common ancestor*. The caller need not know it is walking.
* A header equal to one we hold means everything above it was orphaned.
* When the chain grows past ``window`` headers, the oldest is dropped (``Finalized``): from then
  on its events are treated as final. A reorg reaching below the anchor raises ``ReorgTooDeep``.

A head *below* our tip is taken for a lagging node (a load balancer's other backend) and
ignored; fork choice never replaces a chain by a shorter one, so a reorg always shows as a
header at or above a height we hold with another hash.

Invariants: ``chain`` is contiguous by number and linked by parent hash; every header the
cursor ever reported in a ``NewBlock`` is either still in ``chain``, reported in a ``Reorg``,
or reported ``Finalized`` — exactly one of the three.

This module is pure: no I/O, no awaiting. ``to_doc``/``from_doc`` round-trip the state for the
checkpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chainpush.watcher.errors import ReorgTooDeep


@dataclass(frozen=True, slots=True)
class Header:
    number: int
    hash: str
    parent_hash: str
    timestamp: int

    @classmethod
    def from_rpc(cls, block: Mapping[str, Any]) -> Header:
        """From an ``eth_getBlockBy*`` result or a ``newHeads`` notification (hex fields)."""
        return cls(
            number=int(block["number"], 16), hash=str(block["hash"]).lower(),
            parent_hash=str(block["parentHash"]).lower(), timestamp=int(block["timestamp"], 16),
        )

    def to_doc(self) -> dict[str, Any]:
        return {"number": self.number, "hash": self.hash, "parent_hash": self.parent_hash,
                "timestamp": self.timestamp}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Header:
        return cls(number=int(doc["number"]), hash=str(doc["hash"]),
                   parent_hash=str(doc["parent_hash"]), timestamp=int(doc["timestamp"]))


@dataclass(frozen=True, slots=True)
class NewBlock:
    """``header`` is the new canonical tip: fetch its logs (by block hash) and emit them."""

    header: Header


@dataclass(frozen=True, slots=True)
class Reorg:
    """``orphaned`` (oldest first) left the canonical chain; ``ancestor`` is the common one.

    The caller must retract every record it emitted for the orphaned blocks.
    """

    depth: int
    orphaned: tuple[Header, ...]
    ancestor: Header


@dataclass(frozen=True, slots=True)
class Finalized:
    """``header`` fell out of the window: its events will not be retracted any more."""

    header: Header


Event = NewBlock | Reorg | Finalized


class BlockCursor:
    """Sans-I/O tracker of the canonical chain; see the module docstring."""

    def __init__(self, chain: Iterable[Header], *, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._chain: deque[Header] = deque(chain)
        if not self._chain:
            raise ValueError("the cursor needs at least an anchor header")
        for a, b in zip(self._chain, list(self._chain)[1:], strict=False):
            if b.number != a.number + 1 or b.parent_hash != a.hash:
                raise ValueError(f"headers {a.number} and {b.number} are not linked")
        self._probe: int | None = None
        self._events: list[Event] = []

    @property
    def tip(self) -> Header:
        return self._chain[-1]

    @property
    def anchor(self) -> Header:
        return self._chain[0]

    @property
    def chain(self) -> tuple[Header, ...]:
        return tuple(self._chain)

    @property
    def resolving(self) -> bool:
        """True while walking back to a common ancestor."""
        return self._probe is not None

    @property
    def next_number(self) -> int:
        """The block number whose canonical header the caller must feed next."""
        return self._probe if self._probe is not None else self.tip.number + 1

    def _held(self, number: int) -> Header | None:
        i = number - self._chain[0].number
        if 0 <= i < len(self._chain):
            return self._chain[i]
        return None

    def receive_head(self, header: Header) -> None:
        """Feed the node's latest header. If it is at or below our tip and differs from what
        we hold there, a walk back starts (``next_number`` drops); otherwise nothing happens and
        the caller catches up by feeding ``next_number`` … head with ``receive_block``."""
        held = self._held(header.number)
        if self._probe is None and held is not None and held.hash != header.hash:
            self._probe = header.number
            self.receive_block(header)

    def receive_block(self, header: Header) -> None:
        """Feed the canonical header at ``next_number``; then read ``events_received()``."""
        if header.number != self.next_number:
            raise ValueError(f"expected header {self.next_number}, got {header.number}")
        held = self._held(header.number)
        if held is not None and held.hash == header.hash:
            self._orphan_above(header.number)
            self._probe = None
            return
        parent = self._held(header.number - 1)
        if parent is not None and header.parent_hash == parent.hash:
            self._orphan_above(parent.number)
            self._chain.append(header)
            self._events.append(NewBlock(header))
            while len(self._chain) > self.window:
                self._events.append(Finalized(self._chain.popleft()))
            self._probe = None
            return
        if header.number - 1 <= self._chain[0].number:
            raise ReorgTooDeep(
                f"block {header.number} ({header.hash}) does not link to the tracked chain "
                f"(anchor {self.anchor.number} {self.anchor.hash}); the reorg is deeper than "
                f"the window of {self.window} blocks (a dev node restarted from genesis looks "
                f"like this: `chainpush dev down --wipe` starts its chain and stores afresh)"
            )
        self._probe = header.number - 1

    def _orphan_above(self, number: int) -> None:
        orphaned: list[Header] = []
        while self._chain and self._chain[-1].number > number:
            orphaned.append(self._chain.pop())
        if orphaned:
            orphaned.reverse()
            self._events.append(Reorg(len(orphaned), tuple(orphaned), self.tip))

    def events_received(self) -> list[Event]:
        """What happened since the last call, in order (each event returned once)."""
        events, self._events = self._events, []
        return events

    def to_doc(self) -> dict[str, Any]:
        return {"window": self.window, "chain": [h.to_doc() for h in self._chain]}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], *, window: int | None = None) -> BlockCursor:
        chain = [Header.from_doc(h) for h in doc["chain"]]
        w = window if window is not None else int(doc["window"])
        return cls(chain[-w:], window=w)
