"""What the watcher has emitted for the blocks it may still have to retract: the ledger.

Each unfinalized canonical block (the cursor's window) holds the records found in it and, per
record, the status last emitted for it (``None``: not yet). Emission rules, per contract with
``K`` confirmations:

* ``K == 0``: ``pending`` as soon as the block is added, then ``confirmed`` once the block is
  final: ``tip - block_number >= finality_depth`` (or when the block leaves the window);
* ``K > 0``: ``confirmed`` once ``tip - block_number >= K`` (or when the block is finalized);
  nothing before;
* a reorg orphaning the block emits ``removed`` for every record already emitted, then forgets
  the block; a record never emitted is dropped silently, and a retracted one never gets
  ``confirmed`` (its block is gone from the ledger).

``adopt`` adds records found later for a block already tracked (a contract added to the config
is caught up, ``Watcher._catch_up``): emitted in the status their depth calls for, without a
``pending`` first when the block is already final.

**Incarnations** (``docs/seams.md`` §1): the ledger counts, per block hash, how often the block
was orphaned (``orphan``) for as long as it could come back (until its height leaves the window).
A block that returns (a flip-flop A → B → A) has its records emitted with ``incarnation`` = that
count, so ``…/pending/1`` or ``…/confirmed/1`` is a new message, not a duplicate of the one the
``removed`` retracted.

**A contract removed from the config**: each entry keeps the ``K`` it was added with (stored in
the checkpoint), so its waiting records are confirmed at the depth they were promised — not at
once — and retracted if their block is orphaned. No new record of that contract is added (the
decoder no longer knows it).

Because the emitted status is stored with the checkpoint, a restart neither re-emits nor misses
a transition. State records ride along as records of the block they were read at; the last
known value of each view call (``last_state``) therefore follows reorgs for free. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chainpush.watcher.cursor import Event, Finalized, Header, NewBlock, Reorg
from chainpush.watcher.record import Record, StateRecord, Status, record_from_dict

#: the K of a held record whose contract left the config before checkpoints kept K: confirmed
#: only when its block leaves the window (``finalize``), never by depth
NEVER_BY_DEPTH = 2**31


@dataclass(slots=True)
class _Entry:
    record: Record
    emitted: Status | None
    k: int  # the contract's confirmations when the record was added (kept if it leaves the config)


@dataclass(slots=True)
class _Block:
    number: int
    hash: str
    entries: list[_Entry]


class Ledger:
    """Per-block emitted statuses; every method returns the records to hand to the sink."""

    def __init__(
        self, confirmations: Mapping[str, int], *, finality_depth: int,
        final_state: Mapping[str, Any] | None = None,
        orphaned: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        if finality_depth < 1:
            raise ValueError(f"finality_depth must be >= 1, got {finality_depth}")
        self._k = dict(confirmations)
        self.finality_depth = finality_depth
        self._blocks: dict[str, _Block] = {}
        # hashes of blocks with a record still due a transition (not emitted, or only pending)
        self._waiting: set[str] = set()
        self.final_state: dict[str, Any] = dict(final_state or {})
        # block hash -> (number, times orphaned): the incarnation of its records if it returns
        self._orphaned: dict[str, tuple[int, int]] = dict(orphaned or {})

    def confirmations(self, contract: str) -> int:
        """``K`` of a configured contract. Not for a record already held: its entry keeps the
        ``K`` it was added with (a contract removed from the config keeps its promise)."""
        return self._k.get(contract, 0)

    def incarnation(self, block_hash: str) -> int:
        """How many times the block ``block_hash`` was orphaned (while it could return)."""
        return self._orphaned.get(block_hash, (0, 0))[1]

    def orphans(self, *, above: int) -> dict[str, tuple[int, int]]:
        """The orphan counts of heights above ``above`` (to carry into a new ledger)."""
        return {h: v for h, v in self._orphaned.items() if v[0] > above}

    def forget_orphans(self, below: int) -> None:
        """Drop the orphan counts of heights below ``below`` (out of the window: a block there
        cannot come back without a reorg deeper than the window, which is fatal)."""
        for h in [h for h, (n, _) in self._orphaned.items() if n < below]:
            del self._orphaned[h]

    def add_block(self, header: Header, records: Sequence[Record]) -> list[Record]:
        """Track ``header``'s records; returns the ``pending`` ones (contracts with K = 0)."""
        out: list[Record] = []
        entries: list[_Entry] = []
        n = self.incarnation(header.hash)
        for rec in records:
            rec = rec.with_incarnation(n)
            k = self.confirmations(rec.contract)
            if k == 0:
                emitted = rec.with_status("pending")
                out.append(emitted)
                entries.append(_Entry(emitted, "pending", k))
            else:
                entries.append(_Entry(rec, None, k))
        self._blocks[header.hash] = _Block(header.number, header.hash, entries)
        if entries:
            self._waiting.add(header.hash)
        return out

    def adopt(self, header: Header, records: Sequence[Record], tip: int) -> list[Record]:
        """Add ``records`` found late for canonical block ``header`` (tracked or not yet) with
        the tip at ``tip``; returns what to emit: ``confirmed`` at once when the block is deep
        enough for the record's contract (``finality_depth`` for K = 0, K otherwise),
        else ``pending`` (K = 0) or nothing yet (K > 0). A record id already held is skipped,
        so adopting the same records twice (a repeated catch-up) emits nothing new."""
        block = self._blocks.setdefault(header.hash, _Block(header.number, header.hash, []))
        held = {e.record.id for e in block.entries}
        depth = tip - header.number
        n = self.incarnation(header.hash)
        out: list[Record] = []
        for rec in records:
            if rec.id in held:
                continue
            held.add(rec.id)
            rec = rec.with_incarnation(n)
            k = self.confirmations(rec.contract)
            if depth >= (k or self.finality_depth):
                entry = _Entry(rec.with_status("confirmed"), "confirmed", k)
            elif k == 0:
                entry = _Entry(rec.with_status("pending"), "pending", k)
            else:
                entry = _Entry(rec, None, k)
            if entry.emitted is not None:
                out.append(entry.record)
            block.entries.append(entry)
        if any(e.emitted != "confirmed" for e in block.entries):
            self._waiting.add(header.hash)
        return out

    def confirm(self, tip: int, finalized: int | None = None) -> list[Record]:
        """Records that reached their confirmations (K > 0) or finality (``pending`` ones)
        now that the tip is at ``tip``. With ``finalized`` (the node's ``finalized`` block,
        ``[watch] finality = "tag"``), finality is that tag instead of ``finality_depth``, and
        a K > 0 record of a finalized block is confirmed even before K."""
        out: list[Record] = []
        for h in sorted(self._waiting, key=lambda x: self._blocks[x].number):
            block = self._blocks[h]
            left = False
            final = finalized is not None and block.number <= finalized
            for e in block.entries:
                if e.emitted == "confirmed":
                    continue
                if e.emitted == "pending":
                    due = final if finalized is not None else (
                        tip - block.number >= self.finality_depth)
                else:
                    due = final or tip - block.number >= e.k
                if due:
                    e.emitted = "confirmed"
                    e.record = e.record.with_status("confirmed")
                    out.append(e.record)
                else:
                    left = True
            if not left:
                self._waiting.discard(h)
        return out

    def orphan(self, headers: Iterable[Header]) -> list[Record]:
        """Retract everything emitted for ``headers`` (orphaned by a reorg) and forget them."""
        out: list[Record] = []
        for header in headers:
            block = self._blocks.pop(header.hash, None)
            self._waiting.discard(header.hash)
            if block is None:
                continue
            self._orphaned[header.hash] = (header.number, self.incarnation(header.hash) + 1)
            out.extend(e.record.with_status("removed") for e in block.entries if e.emitted)
        return out

    def finalize(self, header: Header) -> list[Record]:
        """``header`` left the window: emit what still waited (it is final now), forget it."""
        block = self._blocks.pop(header.hash, None)
        self._waiting.discard(header.hash)
        self.forget_orphans(header.number + 1)
        if block is None:
            return []
        out: list[Record] = []
        for e in block.entries:
            if e.emitted != "confirmed":  # not emitted yet, or only pending
                e.emitted = "confirmed"
                e.record = e.record.with_status("confirmed")
                out.append(e.record)
            if isinstance(e.record, StateRecord):
                self.final_state[e.record.key] = e.record.value
        return out

    def finalize_all(self) -> list[Record]:
        """Finalize every tracked block, oldest first (the watcher jumps ahead by backfill)."""
        out: list[Record] = []
        for block in sorted(self._blocks.values(), key=lambda b: b.number):
            out.extend(self.finalize(Header(block.number, block.hash, "", 0)))
        return out

    def last_state(self, key: str) -> tuple[bool, Any]:
        """The latest known value of a view call: (found, value)."""
        for block in sorted(self._blocks.values(), key=lambda b: -b.number):
            for e in reversed(block.entries):
                if isinstance(e.record, StateRecord) and e.record.key == key:
                    return True, e.record.value
        if key in self.final_state:
            return True, self.final_state[key]
        return False, None

    def records(self, block_hash: str) -> list[Record]:
        block = self._blocks.get(block_hash)
        return [e.record for e in block.entries] if block else []

    def to_doc(self) -> dict[str, Any]:
        return {
            "blocks": [
                {"number": b.number, "hash": b.hash,
                 "entries": [{"record": e.record.to_dict(), "emitted": e.emitted, "k": e.k}
                             for e in b.entries]}
                for b in sorted(self._blocks.values(), key=lambda b: b.number)
            ],
            "orphaned": [[h, n, c] for h, (n, c) in sorted(self._orphaned.items())],
            # as pairs: keys like "CallDemo.get()" hold dots, which MongoDB field names must not
            "final_state": [[k, v] for k, v in self.final_state.items()],
        }

    @classmethod
    def from_doc(
        cls, doc: Mapping[str, Any], confirmations: Mapping[str, int], *, finality_depth: int
    ) -> Ledger:
        ledger = cls(confirmations, finality_depth=finality_depth,
                     final_state=dict(doc.get("final_state") or []))
        for h, n, c in doc.get("orphaned") or []:
            ledger._orphaned[str(h)] = (int(n), int(c))
        for b in doc.get("blocks", []):
            entries = []
            for e in b["entries"]:
                rec = record_from_dict(e["record"])
                # checkpoints written before "k" was kept: the contract's K now, and for a
                # contract gone from the config the strictest: wait for finalization
                k = e.get("k")
                if k is None:
                    k = confirmations.get(rec.contract, NEVER_BY_DEPTH)
                entries.append(_Entry(rec, e["emitted"], int(k)))
            ledger._blocks[b["hash"]] = _Block(int(b["number"]), b["hash"], entries)
            if any(e.emitted != "confirmed" for e in entries):
                ledger._waiting.add(b["hash"])
        return ledger


def surviving_blocks(events: Iterable[Event]) -> dict[str, Header]:
    """The blocks of ``NewBlock`` events not orphaned by a later ``Reorg`` of the same batch:
    the only ones whose logs need fetching."""
    out: dict[str, Header] = {}
    for ev in events:
        if isinstance(ev, NewBlock):
            out[ev.header.hash] = ev.header
        elif isinstance(ev, Reorg):
            for h in ev.orphaned:
                out.pop(h.hash, None)
    return out


def apply_events(
    ledger: Ledger, events: Sequence[Event], records_of: Callable[[Header], Sequence[Record]],
    tip: int, finalized: int | None = None,
) -> list[Record]:
    """Everything to emit for the cursor's ``events`` (in order), then for the tip at ``tip``.

    ``records_of(header)`` gives the records found in a surviving new block; it is called when
    the block is added, so it may consult ``ledger.last_state`` of the blocks before it.
    """
    keep = surviving_blocks(events)
    out: list[Record] = []
    for ev in events:
        if isinstance(ev, Reorg):
            out += ledger.orphan(ev.orphaned)
        elif isinstance(ev, NewBlock):
            if ev.header.hash in keep:
                out += ledger.add_block(ev.header, records_of(ev.header))
        elif isinstance(ev, Finalized):
            out += ledger.finalize(ev.header)
    out += ledger.confirm(tip, finalized)
    return out
