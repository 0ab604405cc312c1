"""The watcher service: backfill in chunks, then follow the chain block by block.

``Watcher(config, sink)`` is an async context manager; ``await run()`` works until cancelled
(``aclose()``). Each *step* reads from the node, computes the records to emit with the pure core
(``decode``, ``cursor``, ``ledger``), hands them to ``sink.accept`` and only then stores the
checkpoint (``watcher.checkpoint``). A crash anywhere repeats at most the last step, whose records
have the same ids: the store sees no duplicate and nothing is skipped.

* **Backfill** (tip older than ``head - reorg_window``): ``eth_getLogs`` over address-filtered
  ranges chosen by ``RangePlanner``, the next range fetched while the current one is stored.
  Blocks that deep are treated as final: records are emitted ``confirmed`` at once (also for
  K = 0 contracts: no ``pending`` first).
* **Catch-up** (at start, before anything else): a contract of the config that the checkpoint
  does not cover (``Bound.coverage``: name, address, event selection) is backfilled alone from
  its own start block up to the checkpoint's tip, chunk by chunk with the same range planning,
  its progress in the checkpoint (``catchup``); records in blocks still in the window join the
  ledger (``Ledger.adopt``) so a later reorg retracts them. Then the checkpoint covers it.
* **Live** (within the window): headers by number into ``BlockCursor`` (reorg detection by parent
  hash), logs by block hash (EIP-234: the logs of exactly that block), state reads by block hash
  (EIP-1898), emission by ``Ledger`` (pending / confirmed / removed).
* **Connections**: HTTP endpoints are polled every ``poll_interval_s``; websocket and IPC ones
  subscribe to ``newHeads`` and use a notification only as a wake-up: the catch-up by block
  number above is what guarantees no gap, also across a dropped subscription. Any node error
  closes the connection and retries with capped exponential backoff on the next endpoint
  (failover), from the last committed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainpush.resource import AsyncResource
from watcher.binding import Bound, bind
from watcher.calls import ViewCall
from watcher.checkpoint import CheckpointError, MongoCheckpoints
from watcher.config import Config
from watcher.cursor import BlockCursor, Event, Header, Reorg
from watcher.decode import DecodeStats, LogDecoder, RawLog
from watcher.errors import (
    ChainMismatch,
    ConfigError,
    NodeError,
    RangeTooLarge,
    RateLimited,
    RPCError,
    WatcherError,
)
from watcher.ledger import Ledger, apply_events, surviving_blocks
from watcher.node import Endpoint
from watcher.progress import BackfillProgress
from watcher.ranges import RangePlanner
from watcher.record import Record, StateRecord
from watcher.rpc import Rpc, open_rpc
from watcher.sink import Sink, SinkError

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 15.0


class CheckpointStore(Protocol):
    async def load(self, key: str) -> dict[str, Any] | None: ...
    async def propose(
        self, key: str, state: dict[str, Any], batch: list[dict[str, Any]]
    ) -> None: ...
    async def save(self, key: str, state: dict[str, Any]) -> None: ...
    async def aclose(self) -> None: ...


@dataclass(slots=True)
class WatchStats:
    blocks: int = 0
    records: int = 0
    reorgs: int = 0
    retries: int = 0
    steps: int = 0


class Watcher(AsyncResource):
    """Follows the configured contracts and hands their records to ``sink``."""

    def __init__(
        self, config: Config, sink: Sink, *, checkpoints: CheckpointStore | None = None
    ) -> None:
        self.config = config
        self.sink = sink
        self._checkpoints = checkpoints
        self._own_checkpoints = checkpoints is None
        self.stats = WatchStats()
        self._bound: Bound | None = None
        self._log_filter: dict[str, object] = {}
        self._decoder: LogDecoder | None = None
        self._key = ""
        self._committed: dict[str, Any] | None = None
        self._cursor: BlockCursor | None = None
        self._ledger: Ledger | None = None
        self._covered: list[dict[str, str]] = []  # coverage entries the checkpoint is good for
        self._catchup: dict[str, Any] | None = None  # an unfinished catch-up: what, from where
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    async def __aenter__(self) -> Watcher:
        if self._checkpoints is None:
            self._checkpoints = MongoCheckpoints(
                self.config.stores.mongo_uri, self.config.stores.database
            )
        return self

    async def aclose(self) -> None:
        """Stop ``run()`` (if running) and release the checkpoint store."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_checkpoints and self._checkpoints is not None:
            await self._checkpoints.aclose()
            self._checkpoints = None

    @property
    def tip(self) -> int | None:
        """The committed tip block number (None before the first checkpoint)."""
        if self._committed is None:
            return None
        return int(self._committed["block_number"])

    @property
    def decode_stats(self) -> DecodeStats | None:
        """Logs decoded / filtered out / unknown / undecodable so far (None before start)."""
        return self._decoder.stats if self._decoder is not None else None

    @property
    def tip_hash(self) -> str | None:
        """The committed tip block hash (None before the first checkpoint)."""
        if self._committed is None:
            return None
        return str(self._committed["block_hash"])

    # --- the outer loop: connections, failover, backoff ----------------------------------------

    async def run(self) -> None:
        """Watch until cancelled. Raises only fatal errors (bad config, wrong chain, a reorg
        deeper than the window); node, sink and checkpoint errors are retried forever."""
        if self._checkpoints is None:
            raise RuntimeError("use `async with Watcher(...)` before run()")
        self._task = asyncio.current_task()
        node = self.config.node
        endpoints = [Endpoint.parse(u, timeout_s=node.timeout_s) for u in node.urls]
        index = 0
        failures = 0
        while True:
            endpoint = endpoints[index % len(endpoints)]
            progress_before = self.stats.steps
            try:
                rpc = await open_rpc(endpoint)
                try:
                    await self._session(rpc)
                finally:
                    await rpc.aclose()
            except (NodeError, SinkError, CheckpointError) as exc:
                if isinstance(exc, NodeError) and not exc.retryable:
                    raise
                failures = 1 if self.stats.steps > progress_before else failures + 1
                if isinstance(exc, NodeError):
                    index += 1  # fail over to the next endpoint (the same one if only one)
                delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(failures - 1, 10))
                delay *= 0.5 + self._rng.random() / 2
                self.stats.retries += 1
                logger.warning(
                    "%s; retrying via %s in %.1f s (attempt %d, retries unlimited)",
                    exc, endpoints[index % len(endpoints)].describe(), delay, failures,
                )
                await asyncio.sleep(delay)

    async def _session(self, rpc: Rpc) -> None:
        cfg = self.config
        chain_id = int(await rpc.call("eth_chainId", []), 16)
        if cfg.node.chain_id is not None and chain_id != cfg.node.chain_id:
            raise ChainMismatch(f"node at {rpc.endpoint.describe()} serves chain id {chain_id}, "
                                f"{cfg.source} [node] chain_id is {cfg.node.chain_id}")
        if self._bound is None:
            self._bound = bind(cfg, chain_id)
            self._decoder = self._bound.decoder()
            self._log_filter = self._bound.log_filter()
            await self._check_code(rpc)
        elif self._bound.chain_id != chain_id:
            raise ChainMismatch(f"node at {rpc.endpoint.describe()} serves chain id {chain_id}, "
                                f"the watcher started on {self._bound.chain_id}")
        logger.info("node connected: %s (chain id %d)", rpc.endpoint.describe(), chain_id)
        if self._committed is None:
            await self._load(rpc)
        self._restore()
        if len(self._covered) < len(self._bound.specs):
            await self._catch_up(rpc)
        if rpc.subscriptions:
            try:
                await rpc.subscribe_heads()
            except RPCError as exc:  # e.g. a provider without eth_subscribe: poll instead
                logger.warning("%s; polling every %.1f s instead", exc, cfg.node.poll_interval_s)
            else:
                logger.info("subscribed to newHeads at %s from block %d",
                            rpc.endpoint.describe(), self._tip().number + 1)
        window = cfg.watch.reorg_window
        while True:
            head = int(await rpc.call("eth_blockNumber", []), 16)
            if self._tip().number < head - window:
                await self._backfill(rpc, head - window)
                continue
            if not await self._live_step(rpc, head):
                await rpc.next_head(cfg.node.poll_interval_s)

    async def _check_code(self, rpc: Rpc) -> None:
        assert self._bound is not None
        codes = await rpc.batch([("eth_getCode", [s.address, "latest"]) for s in self._bound.specs])
        for spec, code in zip(self._bound.specs, codes, strict=True):
            if code in (None, "0x", "0x0"):
                raise ConfigError(
                    f"{self.config.source}: [[contracts]] {spec.name}.address {spec.address}: no "
                    f"contract code there on chain {self._bound.chain_id}"
                )

    # --- state: committed doc ↔ cursor + ledger -------------------------------------------------

    async def _load(self, rpc: Rpc) -> None:
        assert self._bound is not None and self._checkpoints is not None
        self._key = f"{self._bound.chain_id}:{self.config.watch.name}"
        doc = await self._checkpoints.load(self._key)
        if doc is not None and doc.get("proposed"):
            proposed = dict(doc["proposed"])
            batch = proposed.pop("batch")
            logger.info("completing the step interrupted at block %s (%d records)",
                        proposed.get("block_number"), len(batch))
            await self.sink.accept(batch)
            await self._checkpoints.save(self._key, proposed)
            doc = proposed
        if doc is not None and doc.get("cursor"):
            self._committed = {k: doc[k] for k in ("block_number", "block_hash", "cursor",
                                                   "ledger", "chain_id", "name")}
            # absent in checkpoints written before coverage was recorded: taken to cover the
            # configuration as it is (what those versions did)
            self._committed["contracts"] = doc.get("contracts")
            self._committed["catchup"] = doc.get("catchup")
            logger.info("resuming from checkpoint %s at block %d", self._key,
                        doc["block_number"])
            return
        start = self._bound.start_block
        anchor_n = max(0, start - 1)
        raw = await rpc.call("eth_getBlockByNumber", [hex(anchor_n), False])
        if raw is None:
            raise RPCError(f"block {anchor_n} (start_block - 1) does not exist yet",
                           method="eth_getBlockByNumber")
        cursor = BlockCursor([Header.from_rpc(raw)], window=self.config.watch.reorg_window)
        ledger = Ledger(self._bound.confirmations,
                        finality_depth=self.config.watch.finality_depth)
        self._covered = self._bound.coverage()
        self._catchup = None
        self._committed = self._doc(cursor, ledger)
        logger.info("no checkpoint %s: starting at block %d", self._key, anchor_n + 1)

    def _doc(self, cursor: BlockCursor, ledger: Ledger) -> dict[str, Any]:
        assert self._bound is not None
        return {
            "chain_id": self._bound.chain_id, "name": self.config.watch.name,
            "block_number": cursor.tip.number, "block_hash": cursor.tip.hash,
            "cursor": cursor.to_doc(), "ledger": ledger.to_doc(),
            "contracts": list(self._covered), "catchup": self._catchup,
        }

    def _restore(self) -> None:
        assert self._committed is not None and self._bound is not None
        self._cursor = BlockCursor.from_doc(self._committed["cursor"],
                                            window=self.config.watch.reorg_window)
        self._ledger = Ledger.from_doc(self._committed["ledger"], self._bound.confirmations,
                                       finality_depth=self.config.watch.finality_depth)
        current = self._bound.coverage()
        covered = self._committed.get("contracts")
        self._covered = current if covered is None else [e for e in current if e in covered]
        self._catchup = self._committed.get("catchup")

    def _tip(self) -> Header:
        assert self._cursor is not None
        return self._cursor.tip

    async def _commit(self, records: Sequence[Record], *, propose: bool) -> None:
        """Hand ``records`` to the sink, then store the checkpoint (see ``checkpoint``)."""
        assert self._checkpoints is not None and self._cursor is not None
        assert self._ledger is not None
        state = self._doc(self._cursor, self._ledger)
        batch: list[dict[str, Any]] = [dict(r.to_dict()) for r in records]
        if batch:
            if propose:
                await self._checkpoints.propose(self._key, state, batch)
            await self.sink.accept(batch)
        await self._checkpoints.save(self._key, state)
        self._committed = state
        self.stats.steps += 1
        self.stats.records += len(batch)

    # --- backfill ------------------------------------------------------------------------------

    async def _fetch_range(
        self, rpc: Rpc, lo: int, hi: int, log_filter: dict[str, object]
    ) -> tuple[list[RawLog], Header]:
        flt = {"fromBlock": hex(lo), "toBlock": hex(hi), **log_filter}
        logs, end = await rpc.batch([("eth_getLogs", [flt]),
                                     ("eth_getBlockByNumber", [hex(hi), False])])
        if end is None:
            raise RPCError(f"block {hi} is missing on the node", method="eth_getBlockByNumber")
        return list(logs), Header.from_rpc(end)

    async def _timestamps(self, rpc: Rpc, logs: list[RawLog]) -> dict[str, int] | None:
        missing = sorted({lg["blockHash"].lower() for lg in logs if "blockTimestamp" not in lg})
        if not missing:
            return None
        blocks = await rpc.batch([("eth_getBlockByHash", [h, False]) for h in missing])
        return {h: int(b["timestamp"], 16) for h, b in zip(missing, blocks, strict=True) if b}

    async def _chunks(
        self, rpc: Rpc, start: int, target: int, log_filter: dict[str, object]
    ) -> AsyncGenerator[tuple[tuple[int, int], list[RawLog], Header], None]:
        """``eth_getLogs`` of blocks ``start … target`` in ranges planned by ``RangePlanner``
        (shrunk on refusals, grown back after successes): yields ``((lo, hi), logs, header of
        hi)`` in order; the next range is already being fetched while the caller stores one.
        Use under ``contextlib.aclosing`` so an abandoned prefetch is cancelled."""
        planner = RangePlanner(max_range=self.config.watch.max_range)
        pending: asyncio.Task[tuple[list[RawLog], Header]] | None = None
        span = (start, start)
        refusals = 0
        try:
            while start <= target:
                if pending is None:
                    span = planner.plan(start, target)
                    pending = asyncio.create_task(self._fetch_range(rpc, *span, log_filter))
                try:
                    logs, end = await pending
                except (RangeTooLarge, RateLimited) as exc:
                    pending = None
                    refusals += 1
                    size = span[1] - span[0] + 1
                    shrunk = planner.refused(size, str(exc))
                    if isinstance(exc, RateLimited) or not shrunk:
                        if not shrunk and isinstance(exc, RangeTooLarge):
                            raise
                        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(refusals, 6))
                        logger.warning("%s; range now %d blocks, retrying in %.1f s",
                                       exc, planner.span, delay)
                        await asyncio.sleep(delay)
                    else:
                        logger.info("provider refused %d blocks (%s); range now %d blocks",
                                    size, exc, planner.span)
                    continue
                pending = None
                refusals = 0
                planner.succeeded(span[1] - span[0] + 1)
                done_span = span
                start = span[1] + 1
                if start <= target:  # fetch the next range while this one is stored
                    span = planner.plan(start, target)
                    pending = asyncio.create_task(self._fetch_range(rpc, *span, log_filter))
                yield done_span, logs, end
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, WatcherError):
                    await pending

    async def _backfill(self, rpc: Rpc, target: int) -> None:
        """Emit every record of blocks ``tip+1 … target`` (all final), chunk by chunk."""
        assert self._bound is not None and self._decoder is not None
        cfg = self.config.watch
        start = self._tip().number + 1
        began = time.monotonic()
        n_records = 0
        progress = BackfillProgress(start, target, cfg.progress_interval_s)
        # on a terminal, also a status line redrawn in place (only for long backfills)
        tty = (BackfillProgress(start, target, 0.25)
               if sys.stderr.isatty() and target - start >= 10 * cfg.max_range else None)
        # a short catch-up (the head ran ahead of the window) is routine: say so only in DEBUG
        level = logging.INFO if target - start >= 2 * cfg.reorg_window else logging.DEBUG
        logger.log(level, "backfill of blocks %d..%d (%d blocks)", start, target,
                   target - start + 1)
        chunks = self._chunks(rpc, start, target, self._log_filter)
        async with contextlib.aclosing(chunks):
            async for done_span, logs, end in chunks:
                records = await self._backfill_records(rpc, logs)
                n_records += len(records)
                assert self._ledger is not None
                out = self._ledger.finalize_all() + records
                self._cursor = BlockCursor([end], window=cfg.reorg_window)
                self._ledger = Ledger(self._bound.confirmations,
                                      finality_depth=cfg.finality_depth,
                                      final_state=self._ledger.final_state)
                await self._commit(out, propose=False)
                self.stats.blocks += done_span[1] - done_span[0] + 1
                if tty is not None:
                    line = tty.update(done_span[1], n_records)
                    if line is not None:
                        sys.stderr.write("\r" + line + "\x1b[K")
                        sys.stderr.flush()
                line = progress.update(done_span[1], n_records)
                if line is not None:
                    logger.info("%s", line)
        if tty is not None:
            sys.stderr.write("\r\x1b[K")
        stats = self._decoder.stats
        logger.log(level, "backfill done up to block %d: %d records in %.1f s (logs decoded "
                   "%d, filtered out %d, unknown %d, undecodable %d so far)", target, n_records,
                   time.monotonic() - began, stats.decoded, stats.filtered, stats.unknown,
                   stats.undecodable)

    async def _backfill_records(self, rpc: Rpc, logs: list[RawLog]) -> list[Record]:
        """Records of final blocks: ``confirmed`` at once, whatever the contract's K (a block
        deeper than the window is deeper than every K and than ``finality_depth``)."""
        assert self._decoder is not None
        timestamps = await self._timestamps(rpc, logs)
        return [rec.with_status("confirmed")
                for rec in self._decoder.decode_many(logs, timestamps)]

    # --- catch-up of contracts the checkpoint does not cover -----------------------------------

    async def _catch_up(self, rpc: Rpc) -> None:
        """Backfill the contracts of the config the checkpoint does not cover, from their own
        start blocks up to the committed tip, then record that the checkpoint covers them.

        The tip does not move meanwhile. Each chunk is handed to the sink, then the checkpoint
        stores how far the catch-up got (``catchup``): a crash resumes from there, repeating at
        most one chunk (same ids; the sink is idempotent). Blocks up to the cursor's anchor are
        final (``confirmed``); records of blocks still in the window join the ledger when that
        block is the one the cursor holds (``Ledger.adopt``), with the proposal protocol of a
        live step. A held block the node no longer has at that height was replaced while we
        were down: the next live step orphans it and fetches its successor's logs with every
        contract's filter, this one included.
        """
        assert self._bound is not None and self._cursor is not None
        current = self._bound.coverage()
        missing = [e for e in current if e not in self._covered]
        names = {e["name"] for e in missing}
        sub = self._bound.only(names)
        starts = {n: self._bound.start_blocks.get(n, 0) for n in names}
        target = self._tip().number
        begin = min(starts.values())
        resumed = self._catchup is not None and self._catchup.get("contracts") == missing
        if self._catchup is not None and resumed:
            begin = int(self._catchup["next_block"])
        for name in sorted(names, key=lambda n: starts[n]) if begin <= target else ():
            logger.info("catching up %s from block %d to %d%s", name, max(begin, starts[name]),
                        target, " (resumed)" if resumed else "")
        decoder = sub.decoder()
        self._catchup = {"contracts": missing, "next_block": begin}
        n_records = 0
        chunks = self._chunks(rpc, begin, target, sub.log_filter())
        async with contextlib.aclosing(chunks):
            async for (_, hi), logs, _end in chunks:
                timestamps = await self._timestamps(rpc, logs)
                recs = [r for r in decoder.decode_many(logs, timestamps)
                        if r.block_number >= starts[r.contract]]
                out, adopted = self._catch_up_records(recs)
                n_records += len(out)
                self._catchup = {"contracts": missing, "next_block": hi + 1}
                await self._commit(out, propose=adopted)
        self._covered = current
        self._catchup = None
        await self._commit([], propose=False)
        logger.info("catch-up of %s done: %d records", ", ".join(sorted(names)), n_records)

    def _catch_up_records(self, records: Sequence[Record]) -> tuple[list[Record], bool]:
        """What to emit for caught-up ``records``; True when the ledger took some."""
        assert self._cursor is not None and self._ledger is not None
        chain = self._cursor.chain
        anchor, tip = chain[0].number, chain[-1].number
        out: list[Record] = []
        late: dict[int, list[Record]] = {}
        for rec in records:
            if rec.block_number <= anchor:
                out.append(rec.with_status("confirmed"))
            else:
                late.setdefault(rec.block_number, []).append(rec)
        for number, recs in sorted(late.items()):
            held = chain[number - anchor]
            mine = [r for r in recs if r.block_hash == held.hash]
            if len(mine) < len(recs):
                logger.debug("catch-up: block %d is not %s any more; the live step will "
                             "orphan it", number, held.hash)
            out += self._ledger.adopt(held, mine, tip)
        return out, bool(late)

    # --- live ----------------------------------------------------------------------------------

    async def _header(self, rpc: Rpc, number: int) -> Header | None:
        raw = await rpc.call("eth_getBlockByNumber", [hex(number), False])
        return Header.from_rpc(raw) if raw else None

    async def _live_step(self, rpc: Rpc, head: int) -> bool:
        """Follow the chain up to ``head`` (at most ``live_batch_blocks`` headers); returns
        False when there was nothing new."""
        cursor, ledger = self._cursor, self._ledger
        assert cursor is not None and ledger is not None and self._decoder is not None
        budget = self.config.watch.live_batch_blocks
        events: list[Event] = []
        latest = await self._header(rpc, head)
        if latest is not None:
            cursor.receive_head(latest)
            events += cursor.events_received()
        fetched = 0
        while cursor.next_number <= head and fetched < budget:
            lo = cursor.next_number
            hi = lo if cursor.resolving else min(head, lo + budget - fetched - 1)
            raws = await rpc.batch([("eth_getBlockByNumber", [hex(n), False])
                                    for n in range(lo, hi + 1)])
            stalled = True
            for raw in raws:
                if raw is None:
                    break  # the chain is shorter than `head` now: look again next step
                header = Header.from_rpc(raw)
                if header.number != cursor.next_number:
                    break
                cursor.receive_block(header)
                events += cursor.events_received()
                fetched += 1
                stalled = False
                if cursor.resolving:
                    break
            if stalled:
                break
        if not events:
            return False
        survivors = surviving_blocks(events)
        logs_by_block, values = await self._live_fetch(rpc, list(survivors.values()))
        decoder = self._decoder

        def records_of(header: Header) -> list[Record]:
            recs: list[Record] = list(decoder.decode_many(
                logs_by_block[header.hash], {header.hash: header.timestamp}
            ))
            self.stats.blocks += 1
            return recs + self._state_records(header, values.get(header.hash, []))

        for ev in events:
            if isinstance(ev, Reorg):
                self.stats.reorgs += 1
                logger.info("reorg of depth %d: blocks %d..%d orphaned, common ancestor %d %s",
                            ev.depth, ev.orphaned[0].number, ev.orphaned[-1].number,
                            ev.ancestor.number, ev.ancestor.hash)
        out = apply_events(ledger, events, records_of, cursor.tip.number)
        await self._commit(out, propose=True)
        return True

    async def _live_fetch(
        self, rpc: Rpc, headers: list[Header]
    ) -> tuple[dict[str, list[RawLog]], dict[str, list[tuple[ViewCall, str]]]]:
        """Logs (by block hash) and state-call results of ``headers``, in two batches."""
        assert self._bound is not None and self._decoder is not None
        if not headers:
            return {}, {}
        results = await rpc.batch([("eth_getLogs", [{"blockHash": h.hash, **self._log_filter}])
                                   for h in headers])
        logs_by_block: dict[str, list[RawLog]] = {}
        for h, logs in zip(headers, results, strict=True):
            for lg in logs:
                if str(lg.get("blockHash", "")).lower() != h.hash:
                    raise RPCError(f"eth_getLogs for block {h.hash} returned a log of block "
                                   f"{lg.get('blockHash')}", method="eth_getLogs")
            logs_by_block[h.hash] = list(logs)
        wanted: list[tuple[Header, ViewCall]] = []
        for h in headers:
            if not self._bound.calls:
                break
            seen: dict[str, set[str]] = {}
            for rec in self._decoder.decode_many(logs_by_block[h.hash], {h.hash: h.timestamp}):
                seen.setdefault(rec.contract, set()).add(rec.event)
            for call in self._bound.calls:
                if call.triggered_by(seen.get(call.contract, set())):
                    wanted.append((h, call))
        values: dict[str, list[tuple[ViewCall, str]]] = {}
        if wanted:
            outs = await rpc.batch([
                ("eth_call", [{"to": c.address, "data": c.calldata}, {"blockHash": h.hash}])
                for h, c in wanted
            ])
            for (h, c), result in zip(wanted, outs, strict=True):
                values.setdefault(h.hash, []).append((c, str(result)))
        return logs_by_block, values

    def _state_records(
        self, header: Header, values: list[tuple[ViewCall, str]]
    ) -> list[Record]:
        assert self._ledger is not None and self._bound is not None
        out: list[Record] = []
        for call, result in values:
            if result in ("0x", ""):
                logger.debug("state read %s at block %d: no code there yet", call.key,
                             header.number)
                continue
            try:
                value = call.decode(result)
            except WatcherError as exc:
                logger.warning("state read skipped at block %d: %s", header.number, exc)
                continue
            found, last = self._ledger.last_state(call.key)
            if found and last == value:
                continue
            out.append(StateRecord(
                chain_id=self._bound.chain_id, contract=call.contract, address=call.address,
                function=call.function.name, inputs=call.inputs, value=value,
                block_number=header.number, block_hash=header.hash,
                block_timestamp=header.timestamp,
            ))
        return out
