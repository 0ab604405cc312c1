"""Deterministic simulation of several collectors on shared topics (docs/seams.md §2, Offsets).

The real :class:`push.collect.Collector` runs against an in-memory model of the store whose every
operation yields to the other tasks a seeded number of times before and after its atomic part, and
may *crash* its caller there (the operation landed or not). Watchers replay a crashed batch with a
new collector (as from their checkpoint) or, sometimes, give it up (a publisher that went away);
one watcher also re-sends the other's batches (the same records at once). A reader follows every
topic meanwhile. At the end the repair runs. Invariants: every topic's offsets are 1..n with each
message once, every record in each of its topics; the reader never passed an offset (it saw every
offset, in order, without a skip); no reservation is left open.

    .venv/bin/python -m pytest tests/unit/test_collect_sim.py -k 'test_seed[N]'   # replay seed N
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from chainpush.push.collect import Collector
from chainpush.push.offsets import Stream, first_hole, key, parse_stream, readable
from chainpush.push.records import StoredMessage, topics_of
from chainpush.push.store import Reserve, RowResult

SEEDS = 300
#: which collector (one per attempt of a watcher) is calling the model
CALLER: contextvars.ContextVar[int] = contextvars.ContextVar("caller", default=0)


class Crash(BaseException):
    """The collector's process died here (BaseException: nothing in collect catches it)."""


class ModelStore:
    """The collections of docs/seams.md §2 in memory, with the semantics of push.store."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.event_docs: dict[str, dict[str, Any]] = {}
        self.rows: dict[tuple[str, str], StoredMessage] = {}
        self.offsets: dict[tuple[str, int], str] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.refused = 0
        self.clock = 0.0
        #: per caller (collector id): ops left before it crashes (None: never)
        self.crash_after: dict[int, int | None] = {}

    async def _step(self) -> None:
        # mostly a few turns; sometimes a long stall (a slow process, a GC pause, a network
        # hiccup), which is when another writer overtakes
        turns = self.rng.randint(20, 80) if self.rng.random() < 0.05 else self.rng.randint(0, 3)
        for _ in range(turns):
            await asyncio.sleep(0)

    async def _op(self) -> int:
        me = CALLER.get()
        await self._step()
        left = self.crash_after.get(me)
        if left is not None:
            if left <= 0 and self.rng.random() < 0.5:
                raise Crash  # before the write
            self.crash_after[me] = left - 1
        return me

    async def _after(self, me: int) -> None:
        left = self.crash_after.get(me)
        if left is not None and left <= 0 and self.rng.random() < 0.5:
            raise Crash  # the write landed, the caller never learnt it
        await self._step()

    # --- the MessageStore API collect uses ------------------------------------------------------

    async def ensure_indexes(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def insert_events(self, docs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[bool]:
        me = await self._op()
        fresh = []
        for m, d in docs:
            fresh.append(m not in self.event_docs)
            self.event_docs.setdefault(m, {"_id": m, **d})
        await self._after(me)
        return fresh

    async def events(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {m: dict(self.event_docs[m]) for m in ids if m in self.event_docs}

    async def streams(self, topics: Iterable[str]) -> dict[str, Stream]:
        me = await self._op()
        out = {t: parse_stream(_copy(self.docs[t])) for t in topics if t in self.docs}
        await self._after(me)
        return out

    async def ensure_streams(self, candidates: Mapping[str, str]) -> None:
        me = await self._op()
        for t, e in candidates.items():
            self.docs.setdefault(t, {"_id": t, "epoch": e})
        await self._after(me)

    async def max_offset(self, topic: str) -> int:
        return max((o for (t, o) in self.offsets if t == topic), default=0)

    async def reserve(self, requests: Sequence[Reserve]) -> int:
        me = await self._op()
        landed = 0
        for r in requests:
            doc = self.docs.get(r.topic)
            if doc is None or doc.get("epoch") != r.epoch or doc.get("next") != r.base:
                continue
            first = r.start if r.base is None else r.base
            doc["next"] = first + len(r.msg_ids)
            doc.setdefault("r", {})
            for i, m in enumerate(r.msg_ids):
                doc["r"][key(first + 1 + i)] = {"m": m, "at": self.clock}
            doc["open"] = doc.get("open", 0) + len(r.msg_ids)
            landed += 1
        await self._after(me)
        return landed

    async def release(self, reserved: Mapping[str, Sequence[int]],
                      heads: Mapping[str, int]) -> None:
        me = await self._op()
        for t in {*reserved, *heads}:
            doc = self.docs[t]
            for o in reserved.get(t, ()):
                if key(o) in doc.get("r", {}):  # conditional per entry: idempotent
                    del doc["r"][key(o)]
                    doc["open"] -= 1
            if t in heads:
                doc["head"] = max(doc.get("head", 0), heads[t])
        await self._after(me)

    async def rows_of(self, pairs: Sequence[tuple[str, str]], *, legacy: bool = False
                      ) -> dict[tuple[str, str], tuple[int, str | None]]:
        me = await self._op()
        out = {p: (self.rows[p].offset, self.rows[p].epoch) for p in pairs if p in self.rows}
        await self._after(me)
        return out

    async def position_of(self, topic: str, msg_id: str) -> tuple[int, str | None] | None:
        return (await self.rows_of([(topic, msg_id)])).get((topic, msg_id))

    async def insert_rows(self, messages: Sequence[StoredMessage]) -> list[RowResult]:
        me = await self._op()
        out: list[RowResult] = []
        for m in messages:
            have = self.rows.get((m.topic, m.msg_id))
            if have is not None:
                out.append("stored" if have.offset == m.offset else "elsewhere")
            elif (m.topic, m.offset) in self.offsets:
                out.append("taken")
            else:
                self.rows[(m.topic, m.msg_id)] = m
                self.offsets[(m.topic, m.offset)] = m.msg_id
                out.append("stored")
        self.refused += sum(r != "stored" for r in out)
        await self._after(me)
        return out

    async def open_streams(self) -> list[Stream]:
        return [parse_stream(_copy(d)) for d in self.docs.values() if d.get("open", 0) > 0]

    async def recount(self, stream: Stream) -> None:
        return None

    # --- a reader, as MessageStore.read_range ---------------------------------------------------

    async def read_range(self, topic: str, first: int) -> list[int]:
        found = sorted(o for (t, o) in self.offsets if t == topic and o >= first)
        if first_hole(first, found) is None:
            return found
        await self._step()
        stream = parse_stream(_copy(self.docs[topic])) if topic in self.docs else None
        await self._step()
        found = sorted(o for (t, o) in self.offsets if t == topic and o >= first)
        return found[:readable(first, found, stream)]


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "r": dict(doc.get("r", {}))}


def record(n: int, rng: random.Random) -> dict[str, Any]:
    wallet = "0xB" + f"{rng.randint(1, 3):039x}"
    return {"kind": "event", "id": f"31337:0x{n:064x}:0", "chain_id": 31337,
            "contract": "DemoToken", "address": "0x" + "12" * 20, "event": "Transfer",
            "args": {"from": "0xA" + f"{1:039x}", "to": wallet, "value": str(n)},
            "address_paths": ["from", "to"], "block_number": n, "block_hash": f"0x{n:064x}",
            "block_timestamp": n, "tx_hash": f"0x{n:064x}", "log_index": 0,
            "status": "pending"}


async def simulate(seed: int) -> None:
    rng = random.Random(seed)
    store = ModelStore(rng)
    plans = {w: [[record(1000 * w + 10 * b + i, rng) for i in range(rng.randint(1, 3))]
                 for b in range(rng.randint(2, 5))] for w in (1, 2)}
    # watcher 2 also re-sends some of watcher 1's batches at once (the same records)
    plans[2] += [b for b in plans[1] if rng.random() < 0.3]
    given_up: list[list[dict[str, Any]]] = []  # crashed batches nobody replays
    succeeded: list[list[dict[str, Any]]] = []  # batches an accept returned for
    ids = iter(range(10, 10_000))

    def collector() -> Collector:
        return Collector(store=store, repair_interval_s=None,  # type: ignore[arg-type]
                         repair_after_s=1.0, clock=lambda: store.clock)

    async def watcher(w: int) -> None:
        for batch in plans[w]:
            while True:
                caller = next(ids)
                CALLER.set(caller)
                store.crash_after[caller] = rng.randint(0, 8) if rng.random() < 0.4 else None
                try:
                    await collector().accept(batch)
                    succeeded.append(batch)
                    break
                except Crash:
                    if rng.random() < 0.3:
                        given_up.append(batch)  # nobody replays it: the repair must
                        break

    seen: dict[str, list[int]] = {}
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            for topic in list(store.docs):
                cursor = seen.setdefault(topic, [])
                run = await store.read_range(topic, len(cursor) + 1)
                # every offset handed out follows the last one: nothing passed
                assert run == list(range(len(cursor) + 1, len(cursor) + 1 + len(run))), \
                    (seed, topic, cursor[-3:], run[:3])
                cursor.extend(run)
            await asyncio.sleep(0)

    read = asyncio.create_task(reader())
    await asyncio.gather(watcher(1), watcher(2))
    store.clock = 10.0
    CALLER.set(0)
    await collector().repair()
    done.set()
    await read
    # the reader catches up once more, after the repair
    for topic in store.docs:
        cursor = seen.setdefault(topic, [])
        cursor.extend(await store.read_range(topic, len(cursor) + 1))
    # every record of a batch someone saw through is in each of its topics; a given-up one may
    # be (whatever its collector reserved before dying, the repair completed) or not
    must: dict[str, set[str]] = {}
    may: dict[str, set[str]] = {}
    for batch in plans[1] + plans[2]:
        for rec in batch:
            for topic in topics_of(rec):
                if any(batch is ok for ok in succeeded):
                    must.setdefault(topic, set()).add(f"{rec['id']}/pending")
                may.setdefault(topic, set()).add(f"{rec['id']}/pending")
    for topic in may:
        got = sorted((o, m) for (t, o), m in store.offsets.items() if t == topic)
        msgs = [m for _, m in got]
        assert [o for o, _ in got] == list(range(1, len(got) + 1)), (seed, topic)
        assert len(msgs) == len(set(msgs)), (seed, topic)
        assert must.get(topic, set()) <= set(msgs) <= may[topic], (seed, topic)
        assert seen.get(topic, []) == list(range(1, len(got) + 1)), (seed, topic)
        if topic in store.docs:
            doc = store.docs[topic]
            assert doc.get("r", {}) == {} and doc.get("open", 0) == 0, seed
    assert store.refused == 0, seed  # no row ever refused: no offset reserved twice


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_seed(seed: int) -> None:
    await asyncio.wait_for(simulate(seed), 10)
