"""The watcher's decisions, sans-I/O: what to fetch, what to emit, what to propose and commit.

Theory of operation
-------------------
``Stepper.session()`` is a generator: it *yields actions* (``Load``, ``Call``, ``FetchRange``,
``Prefetch``, ``Propose``, ``Accept``, ``Save``, ``Subscribe``, ``WaitHead``, ``Sleep``,
``Backfilling``) and is *sent their results* (a checkpoint document, JSON-RPC results, nothing).
It never awaits and never touches a socket; ``watcher.service.Watcher`` performs each action
with the node, the sink and the checkpoint store, and the deterministic simulation
(``tests/unit/test_watcher_sim.py``) performs them against a model chain that forks, a node
that lies or times out, and stores that fail. Any failure of an action other than a refused
``FetchRange`` ends the session: the performer closes the generator, backs off and starts a
new session. A crash is the same as a failure: nothing lives in memory that the next session
needs.

A session:

1. ``Load`` the checkpoint. A leftover ``proposed`` step (a crash or failure between
   ``Propose`` and ``Save``: its batch may be partly or wholly stored) is *completed*: its batch
   accepted again (idempotent) and its state saved. It is never rolled back: once a record may
   have reached the store, only the proposed state knows to retract it after a reorg.
2. Catch up contracts of the config that the checkpoint does not cover (``_catch_up``).
3. Loop: read the head. If the tip is older than ``head - reorg_window``, *first* check that the
   committed tip is still canonical (the first block after any gap must link to it): a live
   step at the tip's height walks back through the cursor, retracting orphaned records, and only
   then backfills the (final) blocks ``tip+1 … head - window`` by ``eth_getLogs`` ranges.
   Otherwise a live step: headers by number into the cursor, logs by block hash, the ledger's
   emissions.
4. Each step that emits records of blocks the ledger may later retract is committed as
   ``Propose(state, batch)`` → ``Accept(batch)`` → ``Save(state)``; a backfill chunk of final
   blocks only as ``Accept`` → ``Save`` (repeating it gives the same records).

Factory children (``watcher.factory``): every fetch (a range, or a live step's blocks) is
completed by ``_complete``: the factory records in it discover children, whose logs of the same
fetch are read by a request of their own (by address, or by topic once there are more than
``max_filter_addresses``); a reorg un-discovers the children of the blocks it orphans before the
new branch is read. The child set is part of the committed state (``children``).

Wallet activity (``watcher.wallets``, ``[watch] wallet_activity``): every pass of the loop asks
``Interested("user:")`` for the wallets with a subscriber (None: keep the set in force, which is
part of the committed state, ``wallets``); live steps and backfill chunks fetch those wallets'
standard transfers of any contract with filters of their own, skip configured contracts' and
children's logs, and read each new token's ``symbol()``/``decimals()`` once (``tokens``).

Invariants (checked by the simulation at the end of every run): every canonical log has exactly
one live final message; every record emitted for a block that left the canonical chain has a
``removed`` after it; nothing confirmed that is not canonical; each message id stored once —
with ``incarnation`` (``docs/seams.md`` §1) a block that comes back gets new message ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chainpush.watcher.binding import Bound
from chainpush.watcher.bloom import LogBloom
from chainpush.watcher.calls import ViewCall
from chainpush.watcher.config import WatchConfig
from chainpush.watcher.cursor import BlockCursor, Event, Header, Reorg
from chainpush.watcher.decode import LogDecoder, RawLog, checksum
from chainpush.watcher.errors import RangeTooLarge, RateLimited, RPCError, WatcherError
from chainpush.watcher.factory import MAX_FILTER_ADDRESSES, Child, Children, discovered
from chainpush.watcher.ledger import Ledger, apply_events, surviving_blocks
from chainpush.watcher.ranges import RangePlanner
from chainpush.watcher.record import EventRecord, Record, StateRecord, TxRecord
from chainpush.watcher.txs import TxTracker
from chainpush.watcher.wallets import (
    TokenInfo,
    WalletActivity,
    is_wallet,
    metadata_calls,
    pad,
    token_info,
)

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.2
#: token metadata kept (wallet activity; in the checkpoint, ~70 bytes each): airdropped spam
#: tokens must not grow the checkpoint without bound; a token that left is read again
MAX_TOKENS = 10_000
BACKOFF_MAX_S = 15.0

RpcCall = tuple[str, list[Any]]


# --- actions: what the performer must do next (and what it sends back) -------------------------

@dataclass(frozen=True, slots=True)
class Load:
    """Read the checkpoint ``key``; send back the document or None."""

    key: str


@dataclass(frozen=True, slots=True)
class Call:
    """One JSON-RPC batch; send back the list of results, in order. With ``optional``, a
    JSON-RPC error reply (e.g. a method the node lacks) sends back None instead of ending the
    session; an unreachable node still ends it."""

    calls: tuple[RpcCall, ...]
    optional: bool = False


@dataclass(frozen=True, slots=True)
class FetchRange:
    """``eth_getLogs`` over ``lo … hi`` with ``log_filter`` plus the header of ``hi``; send back
    ``(logs, raw header or None)``, or throw ``RangeTooLarge`` / ``RateLimited`` into the
    generator (it shrinks the range or waits). A matching ``Prefetch`` may have started it."""

    lo: int
    hi: int
    log_filter: dict[str, object]


@dataclass(frozen=True, slots=True)
class Prefetch:
    """The next ``FetchRange`` will probably be this one: the performer may start it now (while
    it stores the current chunk). Send back None."""

    lo: int
    hi: int
    log_filter: dict[str, object]


@dataclass(frozen=True, slots=True)
class Propose:
    """Write ahead: store ``state`` with ``batch`` as the checkpoint's ``proposed`` step."""

    key: str
    state: dict[str, Any]
    batch: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Accept:
    """Hand ``batch`` to the sink; return once it is durably stored."""

    batch: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Save:
    """Store ``state`` as the committed checkpoint (clearing ``proposed``)."""

    key: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to new heads if the connection can (else poll); send back None."""


@dataclass(frozen=True, slots=True)
class WaitHead:
    """Nothing new: wait for a new head notification or ``timeout_s``; send back None."""

    timeout_s: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``delay_s`` (a provider asked us to slow down)."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Backfilling:
    """Progress of a backfill of ``start … target``: blocks up to ``done`` and ``records`` so
    far (``done == start - 1`` when it begins; ``finished`` at the end). For logs only."""

    start: int
    target: int
    done: int
    records: int
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Interested:
    """Which topics ``<prefix><suffix>`` have a live subscriber (``prefix``: ``"user:"``,
    ``"tx:"``; docs/seams.md §4 *Interest*); send back the set of suffixes, or None when it
    cannot be known now (no Redis, Redis away): the stepper keeps what it had."""

    prefix: str


Action = (Load | Call | FetchRange | Prefetch | Propose | Accept | Save | Subscribe | WaitHead
          | Sleep | Backfilling | Interested)
Steps = Generator[Action, Any, Any]


@dataclass(slots=True)
class WatchStats:
    blocks: int = 0
    records: int = 0
    reorgs: int = 0
    retries: int = 0
    steps: int = 0


@dataclass(slots=True)
class _Session:
    cursor: BlockCursor
    ledger: Ledger
    covered: list[dict[str, str]]  # coverage entries the checkpoint is good for
    catchup: dict[str, Any] | None  # an unfinished catch-up: what, from where
    finalized: int | None = None  # the node's `finalized` block ([watch] finality = "tag")
    #: a backfill under way emits blocks up to here as final: they must not be followed live
    #: again (a lagging head later), or `pending` would follow a stored `confirmed`
    backfill_to: int | None = None
    has_tag: bool = True  # False once the node answered that it has no `finalized` tag
    #: factory children known at the tip (``watcher.factory``; in the checkpoint)
    children: Children = field(default_factory=Children)
    #: wallet activity: the wallets with a ``user:`` subscriber in force (in the checkpoint:
    #: a restart with Redis away goes on with them)
    wallets: frozenset[str] = frozenset()
    #: wallet activity: token metadata read so far, (standard, address) → info (checkpoint)
    tokens: dict[tuple[str, str], TokenInfo] = field(default_factory=dict)


#: fetches the logs of blocks ``lo … hi`` with a filter (by ranges, or by block hashes)
Fetch = Callable[[dict[str, object], int, int], Generator[Action, Any, list[RawLog]]]


class Stepper:
    """The decisions of one watcher (see the module docstring). ``committed`` is the last state
    known to be saved; ``stats`` and ``decoder`` live across sessions."""

    def __init__(self, bound: Bound, watch: WatchConfig, *, poll_interval_s: float) -> None:
        self.bound = bound
        self.watch = watch
        self.poll_interval_s = poll_interval_s
        self.key = f"{bound.chain_id}:{watch.name}"
        self.decoder: LogDecoder = bound.decoder()
        self.log_filter = bound.log_filter()
        self.stats = WatchStats()
        self.committed: dict[str, Any] | None = None
        self._s: _Session | None = None
        topics = self.log_filter.get("topics")
        topic0s = list(topics[0]) if isinstance(topics, list) and topics else None
        self._addresses = {a.lower() for a in bound.addresses}
        self._topic0s = None if topic0s is None else {t.lower() for t in topic0s}
        self.bloom = LogBloom(bound.addresses, topic0s)
        self._planners: dict[str, RangePlanner] = {}
        #: children beyond this many are fetched by topic only (``watcher.factory``)
        self.max_filter_addresses = MAX_FILTER_ADDRESSES
        factories = {t.factory for t in bound.templates}
        #: decodes the factories' logs for discovery only (its counts are not reported)
        self._discovery = LogDecoder(bound.chain_id,
                                     [s for s in bound.specs if s.name in factories])
        #: transaction lifecycles (``watcher.txs``; restored from the checkpoint each session)
        self.txs = TxTracker(bound.chain_id, max_tracked=watch.max_tracked_txs)
        self._init_wallets()

    # --- the session ---------------------------------------------------------------------------

    def session(self, *, subscriptions: bool) -> Steps:
        """The actions of one connection to the node, from loading the checkpoint on; runs
        until the performer stops it (an error, a crash, shutdown)."""
        self._s = None
        yield from self._start()
        s = self._sess()
        self._sync_decoder()
        if len(s.covered) < len(self.bound.specs) + len(self.bound.templates):
            yield from self._catch_up()
        if subscriptions:
            yield Subscribe()
        window = self.watch.reorg_window
        while True:
            yield from self._read_wallets()
            (raw_head,) = yield Call((("eth_blockNumber", []),))
            head = int(raw_head, 16)
            if self.watch.finality == "tag" and s.has_tag:
                yield from self._read_finalized()
            tip = s.cursor.tip.number
            target = head - window
            if s.backfill_to is not None:
                if tip >= s.backfill_to:
                    s.backfill_to = None  # done (stored with the next commit)
                else:
                    target = max(target, s.backfill_to)
            if tip < target:
                # the first block after a gap must link to the committed tip: a reorg while
                # we were away (or fell behind) walks back from the tip's height first
                if (yield from self._relink()):
                    continue
                yield from self._backfill(target)
                continue
            stepped = yield from self._live_step(head)
            yield from self._track_txs()
            if not stepped:
                yield WaitHead(self.poll_interval_s)

    def _sess(self) -> _Session:
        assert self._s is not None
        return self._s

    # --- state: committed doc ↔ cursor + ledger -----------------------------------------------

    def _start(self) -> Steps:
        doc = yield Load(self.key)
        if doc is not None and doc.get("proposed"):
            proposed = dict(doc["proposed"])
            batch = proposed.pop("batch")
            logger.info("completing the step interrupted at block %s (%d records)",
                        proposed.get("block_number"), len(batch))
            yield Accept(batch)
            yield Save(self.key, proposed)
            doc = proposed
        # what the tracker knew when that state was proposed (nothing learnt since is lost:
        # the node is asked again)
        self.txs = TxTracker.from_doc((doc or {}).get("txs"), self.bound.chain_id,
                                      max_tracked=self.watch.max_tracked_txs)
        if doc is not None and doc.get("cursor"):
            committed = {k: doc[k] for k in ("block_number", "block_hash", "cursor", "ledger",
                                             "chain_id", "name")}
            # absent in checkpoints written before coverage was recorded: taken to cover the
            # configuration as it is (what those versions did)
            committed["contracts"] = doc.get("contracts")
            committed["catchup"] = doc.get("catchup")
            committed["backfill_to"] = doc.get("backfill_to")
            committed["children"] = doc.get("children")
            committed["txs"] = doc.get("txs")
            committed.update({k: doc[k] for k in ("wallets", "tokens") if k in doc})
            logger.info("resuming from checkpoint %s at block %d", self.key, doc["block_number"])
            self.committed = committed
            self._restore(committed)
            return
        start = self.bound.start_block
        anchor_n = max(0, start - 1)
        (raw,) = yield Call((("eth_getBlockByNumber", [hex(anchor_n), False]),))
        if raw is None:
            raise RPCError(f"block {anchor_n} (start_block - 1) does not exist yet",
                           method="eth_getBlockByNumber")
        cursor = BlockCursor([Header.from_rpc(raw)], window=self.watch.reorg_window)
        ledger = Ledger(self.bound.confirmations, finality_depth=self.watch.finality_depth)
        self._s = _Session(cursor, ledger, self.bound.coverage(), None)
        self.committed = self._doc()
        logger.info("no checkpoint %s: starting at block %d", self.key, anchor_n + 1)

    def _restore(self, committed: dict[str, Any]) -> None:
        cursor = BlockCursor.from_doc(committed["cursor"], window=self.watch.reorg_window)
        ledger = Ledger.from_doc(committed["ledger"], self.bound.confirmations,
                                 finality_depth=self.watch.finality_depth)
        current = self.bound.coverage()
        covered = committed.get("contracts")
        catchup = committed.get("catchup")
        if catchup is not None and any(e not in current for e in catchup["contracts"]):
            # a contract being caught up left the config: its progress is void (blocks its
            # catch-up left to the live step were followed without it), a re-add starts over
            logger.info("catch-up of %s abandoned: not in the config any more",
                        ", ".join(e["name"] for e in catchup["contracts"]))
            catchup = None
        children = Children.from_doc(committed.get("children"),
                                     [t.name for t in self.bound.templates])
        self._s = _Session(cursor, ledger,
                           current if covered is None else [e for e in current if e in covered],
                           catchup, backfill_to=committed.get("backfill_to"),
                           children=children)
        self._restore_wallets(committed)

    def _doc(self) -> dict[str, Any]:
        s = self._sess()
        return {
            "chain_id": self.bound.chain_id, "name": self.watch.name,
            "block_number": s.cursor.tip.number, "block_hash": s.cursor.tip.hash,
            "cursor": s.cursor.to_doc(), "ledger": s.ledger.to_doc(),
            "contracts": list(s.covered), "catchup": s.catchup, "backfill_to": s.backfill_to,
            "children": s.children.to_doc(), **self._wallets_doc(),
            "txs": self.txs.to_doc(),
        }

    def _commit(self, records: Sequence[Record], *, propose: bool) -> Steps:
        """Hand ``records`` to the sink, then store the checkpoint (see ``watcher.checkpoint``)."""
        s = self._sess()
        s.children.finalize(s.cursor.chain[0].number)  # at or below the anchor: final
        self.txs.emitted(records)
        state = self._doc()
        batch: list[dict[str, Any]] = [dict(r.to_dict()) for r in records]
        if batch:
            if propose:
                yield Propose(self.key, state, batch)
            yield Accept(batch)
        yield Save(self.key, state)
        self.committed = state
        self.stats.steps += 1
        self.stats.records += len(batch)

    # --- ranges: backfill and catch-up ---------------------------------------------------------

    def _timestamps(self, logs: list[RawLog]) -> Generator[Action, Any, dict[str, int] | None]:
        missing = sorted({lg["blockHash"].lower() for lg in logs if "blockTimestamp" not in lg})
        if not missing:
            return None
        blocks = yield Call(tuple(("eth_getBlockByHash", [h, False]) for h in missing))
        return {h: int(b["timestamp"], 16) for h, b in zip(missing, blocks, strict=True) if b}

    def _chunks(
        self, start: int, target: int,
        log_filter: dict[str, object] | Callable[[], dict[str, object]],
        consume: Any, *, key: str | None = None, prefetch: bool = True,
    ) -> Steps:
        """``eth_getLogs`` of blocks ``start … target`` in ranges planned by ``RangePlanner``
        (shrunk on refusals, grown back after successes); for each range in order, runs
        ``consume((lo, hi), logs, header of hi, filter used)`` (a generator function). The
        next range is announced (``Prefetch``) before the current one is consumed. A callable
        ``log_filter`` is asked for the filter of each range (when it is announced: factory
        children found meanwhile are fetched by ``consume``)."""
        current: Callable[[], dict[str, object]] = (
            log_filter if callable(log_filter) else lambda: log_filter)
        # one planner per filter for the watcher's life: a provider's range limit, once
        # learned, holds across sessions (a retry does not refuse its way down again)
        if key is None:
            key = repr(sorted(current().items()))
        planner = self._planners.get(key)
        if planner is None:
            planner = self._planners[key] = RangePlanner(max_range=self.watch.max_range)
        refusals = 0
        announced: tuple[tuple[int, int], dict[str, object]] | None = None
        while start <= target:
            span = planner.plan(start, target)
            flt = announced[1] if announced is not None and announced[0] == span else current()
            announced = None
            try:
                logs, raw_end = yield FetchRange(span[0], span[1], flt)
            except (RangeTooLarge, RateLimited) as exc:
                refusals += 1
                size = span[1] - span[0] + 1
                shrunk = planner.refused(size, str(exc))
                if not shrunk and isinstance(exc, RangeTooLarge):
                    raise
                if isinstance(exc, RateLimited) or not shrunk:
                    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(refusals, 6))
                    logger.warning("%s; range now %d blocks, retrying in %.1f s",
                                   exc, planner.span, delay)
                    yield Sleep(delay)
                else:
                    logger.info("provider refused %d blocks (%s); range now %d blocks",
                                size, exc, planner.span)
                continue
            if raw_end is None:
                raise RPCError(f"block {span[1]} is missing on the node",
                               method="eth_getBlockByNumber")
            refusals = 0
            planner.succeeded(span[1] - span[0] + 1)
            start = span[1] + 1
            if start <= target and prefetch:  # fetch the next range while this one is stored
                nxt = planner.plan(start, target)
                announced = (nxt, current())
                yield Prefetch(*nxt, announced[1])
            yield from consume(span, list(logs), Header.from_rpc(raw_end), flt)

    def _backfill(self, target: int) -> Steps:
        """Emit every record of blocks ``tip+1 … target`` (all final), chunk by chunk. The tip
        was just checked to be canonical (``_relink``): what the ledger waits on is final."""
        s = self._sess()
        if len(s.cursor.chain) > 1:
            # the tracked blocks are final now (the tip is deeper than the window): what the
            # ledger still waits on is confirmed, in a step of its own (a proposal of these few
            # records, not of a whole chunk), and the cursor starts again from the tip
            waiting = s.ledger.finalize_all()
            tip = s.cursor.tip
            s.cursor = BlockCursor([tip], window=self.watch.reorg_window)
            s.ledger = self._fresh_ledger(above=tip.number)
            yield from self._commit(waiting, propose=True)
        if s.backfill_to is None or s.backfill_to < target:
            # before any of these blocks may reach the store as final (a chunk can be stored
            # in part, then fail): a retry backfills up to here whatever head it sees
            s.backfill_to = target
            yield from self._commit([], propose=False)
        start = s.cursor.tip.number + 1
        done = {"records": 0}
        yield Backfilling(start, target, start - 1, 0)

        def consume(span: tuple[int, int], logs: list[RawLog], end: Header,
                    used: dict[str, object]) -> Steps:
            logs = yield from self._complete(logs, used, span, self._range_fetch,
                                             {t.name for t in self.bound.templates},
                                             self.decoder)
            wallet_logs = yield from self._wallet_range(span)
            timestamps = yield from self._timestamps(logs + wallet_logs)
            # records of final blocks: ``confirmed`` at once, whatever the contract's K (a block
            # deeper than the window is deeper than every K and than ``finality_depth``)
            # (a block orphaned earlier may be back: its records are a new incarnation)
            inc = s.ledger.incarnation
            found = self.decoder.decode_many(logs, timestamps)
            found = yield from self._with_wallet_records(found, wallet_logs, timestamps or {})
            records: list[Record] = [
                rec.with_status("confirmed").with_incarnation(inc(rec.block_hash))
                for rec in found
            ]
            done["records"] += len(records)
            s.cursor = BlockCursor([end], window=self.watch.reorg_window)
            s.ledger = self._fresh_ledger(above=end.number)
            # final blocks: repeating this chunk gives the same records, no proposal needed
            yield from self._commit(records, propose=False)
            self.stats.blocks += span[1] - span[0] + 1
            yield Backfilling(start, target, span[1], done["records"])

        yield from self._chunks(start, target, self._main_filter, consume, key="main")
        yield Backfilling(start, target, target, done["records"], finished=True)

    def _fresh_ledger(self, *, above: int) -> Ledger:
        """An empty ledger after a jump ahead: the final state values and the orphan counts of
        heights above ``above`` carry over."""
        old = self._sess().ledger
        return Ledger(self.bound.confirmations, finality_depth=self.watch.finality_depth,
                      final_state=old.final_state, orphaned=old.orphans(above=above))

    # --- catch-up of contracts the checkpoint does not cover -----------------------------------

    def _catch_up(self) -> Steps:
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
        s = self._sess()
        current = self.bound.coverage()
        missing = [e for e in current if e not in s.covered]
        names = {e["name"] for e in missing}
        sub = self.bound.only(names)
        starts = {n: self.bound.start_blocks.get(n, 0) for n in names}
        target = s.cursor.tip.number
        begin = min(starts.values())
        resumed = s.catchup is not None and s.catchup.get("contracts") == missing
        if s.catchup is not None and resumed:
            begin = int(s.catchup["next_block"])
        for name in sorted(names, key=lambda n: starts[n]) if begin <= target else ():
            logger.info("catching up %s from block %d to %d%s", name, max(begin, starts[name]),
                        target, " (resumed)" if resumed else "")
        # a template's children are discovered again from its factory's logs (not emitted)
        templates = {t.name for t in sub.templates}
        if templates and not resumed:
            s.children.drop(templates)
        fetched = self.bound.only(names | {t.factory for t in sub.templates})
        decoder = fetched.decoder()
        for address in s.children.addresses():
            template = s.children.template_of(address)
            if template in templates:
                decoder.add_child(template, address)
        s.catchup = {"contracts": missing, "next_block": begin}
        count = {"records": 0}

        def log_filter() -> dict[str, object]:
            return self._filter_with_children(fetched.log_filter(), templates)

        def consume(span: tuple[int, int], logs: list[RawLog], _end: Header,
                    used: dict[str, object]) -> Steps:
            logs = yield from self._complete(logs, used, span, self._range_fetch, templates,
                                             decoder)
            timestamps = yield from self._timestamps(logs)
            recs = [r for r in decoder.decode_many(logs, timestamps)
                    if r.contract in names and r.block_number >= starts[r.contract]]
            out, adopted = self._catch_up_records(recs)
            count["records"] += len(out)
            s.catchup = {"contracts": missing, "next_block": span[1] + 1}
            yield from self._commit(out, propose=adopted)

        yield from self._chunks(begin, target, log_filter, consume,
                                key="catchup:" + ",".join(sorted(names)))
        s.covered = current
        s.catchup = None
        self._sync_decoder()
        yield from self._commit([], propose=False)
        logger.info("catch-up of %s done: %d records", ", ".join(sorted(names)),
                    count["records"])

    def _catch_up_records(self, records: Sequence[EventRecord]) -> tuple[list[Record], bool]:
        """What to emit for caught-up ``records``; True when the ledger took some."""
        s = self._sess()
        chain = s.cursor.chain
        anchor, tip = chain[0].number, chain[-1].number
        out: list[Record] = []
        late: dict[int, list[EventRecord]] = {}
        for rec in records:
            if rec.block_number <= anchor:
                out.append(rec.with_status("confirmed").with_incarnation(
                    s.ledger.incarnation(rec.block_hash)))
            else:
                late.setdefault(rec.block_number, []).append(rec)
        for number, recs in sorted(late.items()):
            held = chain[number - anchor]
            mine = [r for r in recs if r.block_hash == held.hash]
            if len(mine) < len(recs):
                logger.debug("catch-up: block %d is not %s any more; the live step will "
                             "orphan it", number, held.hash)
            out += s.ledger.adopt(held, mine, tip)
        return out, bool(late)

    # --- live ----------------------------------------------------------------------------------

    def _read_finalized(self) -> Steps:
        """The node's ``finalized`` block number; a node without the tag (an error, or
        ``null`` for a chain too short to have one) leaves finality to depth."""
        s = self._sess()
        answer = yield Call((("eth_getBlockByNumber", ["finalized", False]),), optional=True)
        if answer is None:
            logger.info("the node has no `finalized` block tag: finality by depth (%d blocks)",
                        self.watch.finality_depth)
            s.has_tag = False
            return
        raw = answer[0]
        if raw is None:
            return  # not yet (a young chain): keep the last one, or depth
        number = int(raw["number"], 16)
        if s.finalized is None or number > s.finalized:
            s.finalized = number

    def _relink(self) -> Generator[Action, Any, bool]:
        """Before jumping ahead by backfill: is the committed tip still canonical? If not, a
        live step at its height walks the cursor back (retracting what was orphaned) and
        returns True; the caller then looks at the head again."""
        tip = self._sess().cursor.tip
        (raw,) = yield Call((("eth_getBlockByNumber", [hex(tip.number), False]),))
        if raw is None:
            raise RPCError(f"block {tip.number} (the committed tip) is missing on the node",
                           method="eth_getBlockByNumber")
        if Header.from_rpc(raw).hash == tip.hash:
            return False
        logger.info("the committed tip %d %s is not canonical any more: walking back",
                    tip.number, tip.hash)
        # the walk may stop half way (a block the node did not return): look again either way
        yield from self._live_step(tip.number)
        return True

    def _live_step(self, head: int) -> Generator[Action, Any, bool]:
        """Follow the chain up to ``head`` (at most ``live_batch_blocks`` headers); returns
        False when there was nothing new."""
        s = self._sess()
        cursor = s.cursor
        budget = self.watch.live_batch_blocks
        events: list[Event] = []
        blooms: dict[str, str | None] = {}
        (latest,) = yield Call((("eth_getBlockByNumber", [hex(head), False]),))
        if latest:
            h = Header.from_rpc(latest)
            blooms[h.hash] = latest.get("logsBloom")
            cursor.receive_head(h)
            events += cursor.events_received()
        fetched = 0
        while cursor.next_number <= head and fetched < budget:
            lo = cursor.next_number
            hi = lo if cursor.resolving else min(head, lo + budget - fetched - 1)
            raws = yield Call(tuple(("eth_getBlockByNumber", [hex(n), False])
                                    for n in range(lo, hi + 1)))
            stalled = True
            for raw in raws:
                if raw is None:
                    break  # the chain is shorter than `head` now: look again next step
                header = Header.from_rpc(raw)
                if header.number != cursor.next_number:
                    break
                blooms[header.hash] = raw.get("logsBloom")
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
        for ev in events:
            if isinstance(ev, Reorg):
                # before the new branch is read: its blocks may create the same addresses
                for child in s.children.orphan(h.hash for h in ev.orphaned):
                    self.decoder.remove_child(child.address)
                    logger.info("%s child %s un-discovered: its creation block %d %s was "
                                "orphaned", child.template, child.address, child.number,
                                child.hash)
        survivors = surviving_blocks(events)
        logs_by_block, values = yield from self._live_fetch(list(survivors.values()), blooms)
        wallet = yield from self._wallet_live(list(survivors.values()), blooms)
        decoder = self.decoder

        def records_of(header: Header) -> list[Record]:
            recs: list[Record] = list(_merged(decoder.decode_many(
                logs_by_block[header.hash], {header.hash: header.timestamp}
            ), wallet.get(header.hash, [])))
            self.stats.blocks += 1
            return recs + self._state_records(header, values.get(header.hash, []))

        for ev in events:
            if isinstance(ev, Reorg):
                self.stats.reorgs += 1
                logger.info("reorg of depth %d: blocks %d..%d orphaned, common ancestor %d %s",
                            ev.depth, ev.orphaned[0].number, ev.orphaned[-1].number,
                            ev.ancestor.number, ev.ancestor.hash)
        out = apply_events(s.ledger, events, records_of, cursor.tip.number, s.finalized)
        yield from self._commit(out, propose=True)
        return True

    def _live_fetch(
        self, headers: list[Header], blooms: dict[str, str | None]
    ) -> Generator[Action, Any, tuple[dict[str, list[RawLog]],
                                      dict[str, list[tuple[ViewCall, str]]]]]:
        """Logs (by block hash) and state-call results of ``headers``, in two batches (three
        when a block's ``[]`` contradicts its bloom)."""
        if not headers:
            return {}, {}
        main = self._main_filter()
        logs_by_block = yield from self._by_hash(headers, main)
        bloom = self.bloom if main is self.log_filter else self._bloom_of(main)
        doubted = [h for h in headers
                   if not logs_by_block[h.hash] and bloom.may_match(blooms.get(h.hash))]
        if doubted:
            # before discovery: a factory log the `[]` hid announces children of later blocks
            yield from self._settle(doubted, logs_by_block)
        if self.bound.templates:
            templates = {t.name for t in self.bound.templates}
            children = self._sess().children
            again: list[Header] = []

            def fetch(flt: dict[str, object], lo: int, hi: int
                      ) -> Generator[Action, Any, list[RawLog]]:
                hs = [h for h in headers if lo <= h.number <= hi]
                got = yield from self._by_hash(hs, flt)
                by_topic = "address" not in flt
                check = self._bloom_of(flt if not by_topic else {
                    **flt, "address": self._children_of(templates)})
                for h in hs:
                    mine = got[h.hash] if not by_topic else [
                        lg for lg in got[h.hash]
                        if children.template_of(str(lg.get("address", ""))) is not None]
                    if not mine and check.may_match(blooms.get(h.hash)):
                        again.append(h)  # a `[]` the bloom contradicts: the receipts decide
                return [lg for logs in got.values() for lg in logs]

            merged = yield from self._complete(
                [lg for h in headers for lg in logs_by_block[h.hash]], main,
                (headers[0].number, headers[-1].number), fetch, templates, self.decoder)
            logs_by_block = {h.hash: [] for h in headers}
            for lg in merged:
                logs_by_block[str(lg["blockHash"]).lower()].append(lg)
            if again:
                yield from self._settle(sorted(set(again), key=lambda h: h.number),
                                        logs_by_block)
        wanted: list[tuple[Header, ViewCall]] = []
        for h in headers:
            if not self.bound.calls:
                break
            seen: dict[str, set[str]] = {}
            for rec in self.decoder.decode_many(logs_by_block[h.hash], {h.hash: h.timestamp}):
                seen.setdefault(rec.contract, set()).add(rec.event)
            for call in self.bound.calls:
                if call.triggered_by(seen.get(call.contract, set())):
                    wanted.append((h, call))
        values: dict[str, list[tuple[ViewCall, str]]] = {}
        if wanted:
            outs = yield Call(tuple(
                ("eth_call", [{"to": c.address, "data": c.calldata}, {"blockHash": h.hash}])
                for h, c in wanted
            ))
            for (h, c), result in zip(wanted, outs, strict=True):
                values.setdefault(h.hash, []).append((c, str(result)))
        return logs_by_block, values

    def _by_hash(self, headers: list[Header], flt: dict[str, object]
                 ) -> Generator[Action, Any, dict[str, list[RawLog]]]:
        """``eth_getLogs`` by block hash (EIP-234) of each of ``headers`` with ``flt``."""
        if not headers:
            return {}
        results = yield Call(tuple(("eth_getLogs", [{"blockHash": h.hash, **flt}])
                                   for h in headers))
        logs_by_block: dict[str, list[RawLog]] = {}
        for h, logs in zip(headers, results, strict=True):
            for lg in logs:
                if str(lg.get("blockHash", "")).lower() != h.hash:
                    raise RPCError(f"eth_getLogs for block {h.hash} returned a log of block "
                                   f"{lg.get('blockHash')}", method="eth_getLogs")
            logs_by_block[h.hash] = list(logs)
        return logs_by_block

    # --- factory children (``watcher.factory``) ------------------------------------------------

    def _sync_decoder(self) -> None:
        """The decoder for the configured contracts and the children known now (the counts
        carry over)."""
        s = self._sess()
        stats = self.decoder.stats
        self.decoder = self.bound.decoder()
        self.decoder.stats = stats
        for address in s.children.addresses():
            template = s.children.template_of(address)
            if template is not None:
                self.decoder.add_child(template, address)

    def _main_filter(self) -> dict[str, object]:
        """The filter of every fetch: the configured contracts, plus the children while they
        are few enough for an ``address`` array."""
        return self._filter_with_children(self.log_filter,
                                          {t.name for t in self.bound.templates})

    def _filter_with_children(self, base: dict[str, object], templates: set[str]
                              ) -> dict[str, object]:
        if not templates:
            return base
        children = self._children_of(templates)
        if not children or len(children) > self.max_filter_addresses:
            return base
        addresses = base.get("address")
        assert isinstance(addresses, list)
        return {**base, "address": [*addresses, *children]}

    def _bloom_of(self, flt: dict[str, object]) -> LogBloom:
        """The bloom check of a filter's addresses (and topic0s)."""
        addresses = flt.get("address")
        topics = flt.get("topics")
        topic0s = list(topics[0]) if isinstance(topics, list) and topics else None
        return LogBloom([str(a) for a in addresses] if isinstance(addresses, list) else [],
                        topic0s)

    def _children_of(self, templates: set[str]) -> list[str]:
        s = self._sess()
        return [a for a in s.children.addresses() if s.children.template_of(a) in templates]

    def _range_fetch(self, flt: dict[str, object], lo: int, hi: int, *, key: str = "children"
                     ) -> Generator[Action, Any, list[RawLog]]:
        """Every log of ``lo … hi`` with ``flt``, by ranges (no prefetch; ``key``: whose
        range planner)."""
        out: list[RawLog] = []

        def collect(_span: tuple[int, int], logs: list[RawLog], _end: Header,
                    _used: dict[str, object]) -> Steps:
            out.extend(logs)
            return
            yield

        yield from self._chunks(lo, hi, flt, collect, key=key, prefetch=False)
        return out

    def _complete(
        self, logs: list[RawLog], used: dict[str, object], span: tuple[int, int],
        fetch: Fetch, templates: set[str], decoder: LogDecoder,
    ) -> Generator[Action, Any, list[RawLog]]:
        """``logs`` of blocks ``span`` (fetched with ``used``) completed with the logs of the
        factory children of ``templates``: children discovered in them (their factory's
        records) and known ones the filter did not name get a fetch of their own, by address
        (from their creation block), or by topic alone once there are more than
        ``max_filter_addresses`` of them; then only logs of a child at or after its creation
        block are kept. In (block, log index) order, without duplicates."""
        if not templates:
            return logs
        s = self._sess()
        lo, hi = span
        named = used.get("address")
        covered = {str(a).lower() for a in named} if isinstance(named, list) else set()
        out = list(logs)
        by_topic: list[RawLog] | None = None
        while True:
            for child in self._discover(out, templates):
                decoder.add_child(child.template, child.address)
                logger.info("%s child %s discovered in block %d", child.template,
                            child.address, child.number)
            missing = [a for a in self._children_of(templates) if a.lower() not in covered]
            if by_topic is not None or not missing:
                break
            topics = self.log_filter.get("topics")
            if len(missing) > self.max_filter_addresses:
                topic0s = sorted({t0 for t in self.bound.templates if t.name in templates
                                  for t0 in decoder.template_topic0s(t.name)})
                by_topic = yield from fetch({"topics": [topic0s]}, lo, hi)
                continue  # (a child is never a factory: nothing new to discover)
            first = max(lo, min(s.children.created_at(a) for a in missing))
            flt: dict[str, object] = {"address": missing}
            if topics is not None:
                flt["topics"] = topics
            out += yield from fetch(flt, first, hi)
            covered.update(a.lower() for a in missing)
        kept: dict[tuple[int, int], RawLog] = {}
        for lg in out + [lg for lg in by_topic or ()
                         if s.children.template_of(str(lg.get("address", ""))) is not None]:
            address = str(lg.get("address", ""))
            template = s.children.template_of(address)
            number = int(lg["blockNumber"], 16)
            if template is not None and (template not in templates
                                         or number < s.children.created_at(address)):
                continue
            kept[(number, int(lg["logIndex"], 16))] = lg
        return [kept[k] for k in sorted(kept)]

    def _discover(self, logs: list[RawLog], templates: set[str]) -> list[Child]:
        """The children the factory logs among ``logs`` announce, added to the session's set
        (those already known are not returned)."""
        s = self._sess()
        wanted = [t for t in self.bound.templates if t.name in templates]
        factories = {spec.address.lower() for spec in self.bound.specs
                     if any(t.factory == spec.name for t in wanted)}
        mine = [lg for lg in logs if str(lg.get("address", "")).lower() in factories]
        if not mine:
            return []
        stamps = {str(lg["blockHash"]).lower(): 0 for lg in mine}  # unused by discovery
        # an address that is a configured contract stays that contract (never a child too)
        return [c for c in discovered(wanted, self._discovery.decode_many(mine, stamps))
                if c.address.lower() not in self._addresses and s.children.add(c)]

    def _settle(self, doubted: list[Header], logs_by_block: dict[str, list[RawLog]]) -> Steps:
        """``eth_getLogs`` answered ``[]`` for blocks whose ``logsBloom`` says our logs may be
        there (a bloom false positive, or a provider that has not indexed the block — or
        lies). The blocks' receipts settle it: their logs that our filter selects replace the
        ``[]``. ``eth_getBlockReceipts`` where the node has it, else the receipt of each of the
        block's transactions (costly, but only for such blocks)."""
        receipts = yield Call(tuple(("eth_getBlockReceipts", [h.hash]) for h in doubted),
                              optional=True)
        if receipts is None:
            blocks = yield Call(tuple(("eth_getBlockByHash", [h.hash, False]) for h in doubted))
            receipts = []
            for h, block in zip(doubted, blocks, strict=True):
                if block is None:
                    raise RPCError(f"block {h.number} {h.hash} is missing on the node",
                                   method="eth_getBlockByHash")
                txs = [t if isinstance(t, str) else t["hash"] for t in block["transactions"]]
                receipts.append((yield Call(tuple(("eth_getTransactionReceipt", [t])
                                                  for t in txs))) if txs else [])
        for h, block_receipts in zip(doubted, receipts, strict=True):
            if block_receipts is None:
                raise RPCError(f"no receipts for block {h.number} {h.hash}",
                               method="eth_getBlockReceipts")
            found: list[RawLog] = []
            every: list[RawLog] = []
            for receipt in block_receipts:
                if receipt is None:
                    raise RPCError(f"a receipt of block {h.number} {h.hash} is missing",
                                   method="eth_getTransactionReceipt")
                for lg in receipt.get("logs") or []:
                    if str(lg.get("blockHash", h.hash)).lower() != h.hash:
                        raise RPCError(f"a receipt of block {h.hash} holds a log of block "
                                       f"{lg.get('blockHash')}", method="eth_getBlockReceipts")
                    every.append(lg)
            if self.bound.templates:  # children the block's factory logs create count too
                for child in self._discover(every, {t.name for t in self.bound.templates}):
                    self.decoder.add_child(child.template, child.address)
            children = self._sess().children
            for lg in every:
                topics = lg.get("topics") or []
                address = str(lg.get("address", ""))
                if address.lower() not in self._addresses:
                    if children.template_of(address) is None or (
                            children.created_at(address) > h.number):
                        continue
                elif self._topic0s is not None and (
                        not topics or str(topics[0]).lower() not in self._topic0s):
                    continue
                found.append(lg)
            if found:
                logger.warning("eth_getLogs answered [] for block %d %s, its receipts hold %d "
                               "watched logs: using those", h.number, h.hash, len(found))
            logs_by_block[h.hash] = found

    def _state_records(
        self, header: Header, values: list[tuple[ViewCall, str]]
    ) -> list[Record]:
        ledger = self._sess().ledger
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
            found, last = ledger.last_state(call.key)
            if found and last == value:
                continue
            out.append(StateRecord(
                chain_id=self.bound.chain_id, contract=call.contract, address=call.address,
                function=call.function.name, inputs=call.inputs, value=value,
                block_number=header.number, block_hash=header.hash,
                block_timestamp=header.timestamp,
            ))
        return out

    # --- transaction lifecycles (``watcher.txs``) ---------------------------------------------

    def _track_txs(self) -> Steps:
        """One step of the subscribed ``tx:`` hashes (``watcher.txs``): ask the node about
        those whose fate the ledger does not hold, emit what changed (a commit of its own)."""
        if not self.watch.tx_lifecycle:
            return
        self.txs.interest((yield Interested("tx:")))
        hashes = self.txs.to_poll()
        if not hashes:
            return
        s = self._sess()
        chain = s.cursor.chain
        anchor, tip = chain[0].number, chain[-1].number
        canonical = {h.number: h.hash for h in chain[1:]}
        answers = yield Call(self.txs.calls(hashes))
        out: list[Record] = []
        gone: list[str] = []
        final: list[TxRecord] = []
        for i, tx_hash in enumerate(hashes):
            try:
                v = self.txs.seen(tx_hash, answers[2 * i], answers[2 * i + 1], anchor=anchor,
                                  tip=tip, canonical=canonical)
                header = chain[v.block_number - anchor] if (
                    v.what == "mined" and not v.final) else None
                stamp = header.timestamp if header is not None else None
                rec = self.txs.mined_record(v, timestamp=stamp, events=self._tx_events(
                    v.receipt, stamp)) if v.what == "mined" else None
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise RPCError(f"the node's answer about transaction {tx_hash} is malformed: "
                               f"{exc!r:.120}", method="eth_getTransactionReceipt") from exc
            if v.what == "pending" and v.record is not None:
                out.append(v.record)
            elif v.what == "gone":
                gone.append(tx_hash)
            elif rec is not None and header is None:
                final.append(rec)
            elif rec is not None and header is not None:
                out += s.ledger.adopt(header, [rec], tip)
        if final:
            # mined below the window (subscribed late): final at once, as backfilled records —
            # once the block at that height is the receipt's (a node behind a load balancer
            # may serve a receipt of a block it no longer has as canonical)
            blocks = yield Call(tuple(("eth_getBlockByNumber", [hex(r.block_number or 0), False])
                                      for r in final))
            for rec, block in zip(final, blocks, strict=True):
                if not block or str(block.get("hash", "")).lower() != rec.block_hash:
                    logger.debug("transaction %s: its receipt's block %s %s is not canonical "
                                "on the node; asking again", rec.tx_hash, rec.block_number,
                                rec.block_hash)
                    continue
                out.append(replace(rec, block_timestamp=int(block["timestamp"], 16))
                           .with_status("confirmed")
                           .with_incarnation(s.ledger.incarnation(str(rec.block_hash))))
        if gone:
            out += yield from self._gone_txs(gone)
        if out:
            yield from self._commit(out, propose=True)

    def _tx_events(self, receipt: Any, timestamp: int | None) -> list[dict[str, Any]]:
        """The decoded events of watched contracts (factory children included) in a receipt."""
        out: list[dict[str, Any]] = []
        for lg in (receipt or {}).get("logs") or []:
            try:
                rec = self.decoder.decode(lg, timestamp if timestamp is not None else 0)
            except WatcherError:
                continue  # not a watched contract's (or not decodable): not one of ours
            if rec is not None:
                out.append({"contract": rec.contract, "address": rec.address,
                            "event": rec.event, "args": rec.args, "log_index": rec.log_index})
        return out

    def _gone_txs(self, gone: list[str]) -> Generator[Action, Any, list[Record]]:
        """Hashes the node knows nothing of: ``replaced`` / ``dropped`` once their sender's
        nonce is used in the chain the cursor holds (``latest`` first: cheap, and most often
        not yet)."""
        known = [(h, *self.txs.sender_nonce(h)) for h in gone]
        counts = yield Call(tuple(("eth_getTransactionCount", [sender, "latest"])
                                  for _, sender, _ in known))
        out: list[Record] = []
        for (tx_hash, sender, nonce), count in zip(known, counts, strict=True):
            if not self.txs.nonce_used(tx_hash, _quantity(count, sender)):
                continue
            found, replaced_by = yield from self._nonce_user(sender, nonce)
            if not found:
                continue  # used in a block the cursor has not reached: decided there
            logger.info("transaction %s: its nonce %d was used by %s", tx_hash, nonce,
                        replaced_by or "a transaction below the window")
            out.append(self.txs.gone_record(tx_hash, replaced_by))
        return out

    def _nonce_user(self, sender: str, nonce: int
                    ) -> Generator[Action, Any, tuple[bool, str | None]]:
        """Whether ``sender``'s ``nonce`` is used in the blocks the cursor holds (its count at
        the tip is past it, EIP-1898 block hashes), and by which transaction: the one of the
        first held block after which the count is past ``nonce`` (None: at or below the
        anchor). A held block the node no longer has (a reorg the next live step will see):
        not decided."""
        chain = self._sess().cursor.chain
        counts = yield Call(tuple(("eth_getTransactionCount", [sender, {"blockHash": h.hash}])
                                  for h in chain), optional=True)
        if counts is None:
            return False, None
        used = [i for i, c in enumerate(counts) if _quantity(c, sender) > nonce]
        if not used:
            return False, None
        if used[0] == 0:
            return True, None
        (block,) = yield Call((("eth_getBlockByHash", [chain[used[0]].hash, True]),))
        for tx in (block or {}).get("transactions") or []:
            if (isinstance(tx, dict) and str(tx.get("from", "")).lower() == sender.lower()
                    and int(str(tx.get("nonce", "0x0")), 16) == nonce):
                return True, str(tx["hash"]).lower()
        return True, None

    # --- wallet activity (``watcher.wallets``; docs/watcher.md §Wallet activity) --------------

    def _init_wallets(self) -> None:
        watch = self.watch
        #: wallet activity (``[watch] wallet_activity``); None: off
        self.wallets: WalletActivity | None = (
            WalletActivity(self.bound.chain_id, watch.wallet_activity)
            if watch.wallet_activity else None)
        #: token metadata read in this process (a failed session does not read it again)
        self._tokens: dict[tuple[str, str], TokenInfo] = {}
        self._bloom_of_wallets: tuple[frozenset[str], LogBloom] | None = None
        if watch.wallet_activity:
            # records of the standards are confirmed like a contract's: `[watch] confirmations`
            self.bound = replace(self.bound, confirmations={
                **dict.fromkeys(watch.wallet_activity, watch.confirmations),
                **self.bound.confirmations})

    @property
    def wallets_in_force(self) -> int:
        """How many wallets' activity the current session follows (0 without one)."""
        return 0 if self._s is None else len(self._s.wallets)

    def _wallets_doc(self) -> dict[str, Any]:
        """The checkpoint's part: the wallets in force and the token metadata read (compact:
        one address per wallet, one row per token)."""
        if self.wallets is None:
            return {}
        s = self._sess()
        return {"wallets": sorted(s.wallets),
                "tokens": [[address, standard, info.symbol, info.decimals]
                           for (standard, address), info in s.tokens.items()]}

    def _restore_wallets(self, committed: dict[str, Any]) -> None:
        s = self._sess()
        s.wallets = frozenset(str(w) for w in committed.get("wallets") or ())
        s.tokens = dict(self._tokens)
        for address, standard, symbol, decimals in committed.get("tokens") or ():
            s.tokens[(standard, address)] = TokenInfo(standard, symbol, decimals)

    def _read_wallets(self) -> Steps:
        """The wallets in force from this step on: those with a ``user:`` subscriber now. An
        answer of None (Redis away) keeps the set in force, stored with every commit."""
        if self.wallets is None:
            return
        got = yield Interested("user:")
        if got is None:
            return
        s = self._sess()
        wallets = frozenset(checksum(w) for w in got if is_wallet(w))
        if wallets != s.wallets:
            logger.debug("wallet activity: %d wallets with a subscriber (was %d)",
                         len(wallets), len(s.wallets))
            s.wallets = wallets

    def _wallet_filters(self) -> list[dict[str, object]]:
        if self.wallets is None:
            return []
        self.wallets.max_addresses = self.max_filter_addresses
        return self.wallets.filters(self._sess().wallets)

    def _wallet_live(self, headers: list[Header], blooms: dict[str, str | None]
                     ) -> Generator[Action, Any, dict[str, list[EventRecord]]]:
        """The wallet-activity records of ``headers`` (logs by block hash, every filter in one
        batch), per block hash. A block whose ``logsBloom`` proves it holds no standard
        transfer from or to a wallet in force is not asked (most blocks, for few wallets)."""
        filters = self._wallet_filters()
        if filters:
            bloom = self._wallet_bloom()
            headers = [h for h in headers if bloom.may_match(blooms.get(h.hash))]
        if not filters or not headers:
            return {}
        pairs = [(h, flt) for flt in filters for h in headers]
        results = yield Call(tuple(("eth_getLogs", [{"blockHash": h.hash, **flt}])
                                   for h, flt in pairs))
        logs: list[RawLog] = []
        for (h, _), got in zip(pairs, results, strict=True):
            for lg in got:
                if str(lg.get("blockHash", "")).lower() != h.hash:
                    raise RPCError(f"eth_getLogs for block {h.hash} returned a log of block "
                                   f"{lg.get('blockHash')}", method="eth_getLogs")
                logs.append(lg)
        recs = yield from self._wallet_records(logs, {h.hash: h.timestamp for h in headers})
        out: dict[str, list[EventRecord]] = {}
        for rec in recs:
            out.setdefault(rec.block_hash, []).append(rec)
        return out

    def _wallet_bloom(self) -> LogBloom:
        """The bloom check of the wallets in force (as topics) and the standards' topic0s."""
        wa, s = self.wallets, self._sess()
        assert wa is not None
        if self._bloom_of_wallets is None or self._bloom_of_wallets[0] is not s.wallets:
            self._bloom_of_wallets = (s.wallets, LogBloom([pad(w) for w in s.wallets],
                                                          wa.topic0s()))
        return self._bloom_of_wallets[1]

    def _wallet_range(self, span: tuple[int, int]) -> Generator[Action, Any, list[RawLog]]:
        """The logs of blocks ``span`` that the wallet filters find (by ranges)."""
        out: list[RawLog] = []
        for flt in self._wallet_filters():
            out += yield from self._range_fetch(flt, span[0], span[1], key="wallets")
        return out

    def _with_wallet_records(self, found: list[EventRecord], wallet_logs: list[RawLog],
                             timestamps: dict[str, int]
                             ) -> Generator[Action, Any, list[EventRecord]]:
        """``found`` (the configured contracts' records of a range) with the wallet-activity
        records of ``wallet_logs``, in (block, log index) order."""
        if not wallet_logs:
            return found
        recs = yield from self._wallet_records(wallet_logs, timestamps)
        return sorted([*found, *recs], key=lambda r: (r.block_number, r.log_index))

    def _wallet_records(self, logs: list[RawLog], timestamps: dict[str, int]
                        ) -> Generator[Action, Any, list[EventRecord]]:
        """The records of the standard transfers among ``logs`` from or to a wallet in force,
        except logs of a configured contract or a factory child (their own records win); each
        with its token's metadata (read once per token, at the block of its first record)."""
        wa = self.wallets
        assert wa is not None
        s = self._sess()
        out: list[EventRecord] = []
        for lg in wa.select(logs, s.wallets):
            address = str(lg.get("address", ""))
            if address.lower() in self._addresses or s.children.template_of(address):
                continue
            raw_ts = lg.get("blockTimestamp")
            ts = (int(raw_ts, 16) if isinstance(raw_ts, str)
                  else timestamps.get(str(lg["blockHash"]).lower(), 0))
            rec = wa.decode(lg, ts)
            if rec is None:
                self.decoder.stats.undecodable += 1
                logger.warning("skipped log %s:%s of %s: not the standard's shape",
                               lg.get("transactionHash"), lg.get("logIndex"), address)
                continue
            self.decoder.stats.decoded += 1
            out.append(rec)
        found: dict[tuple[str, str], TokenInfo] = {}
        for rec in out:
            key = (rec.contract, rec.address)
            if key not in found:
                info = s.tokens.get(key)
                if info is None:
                    info = self._tokens[key] = yield from self._read_token(rec)
                found[key] = info
        for key, info in found.items():  # the most recent last: the oldest leave first
            s.tokens.pop(key, None)
            s.tokens[key] = info
        for cache in (s.tokens, self._tokens):
            while len(cache) > MAX_TOKENS:
                del cache[next(iter(cache))]
        return [replace(rec, token=found[(rec.contract, rec.address)].to_dict())
                for rec in out]

    def _read_token(self, rec: EventRecord) -> Generator[Action, Any, TokenInfo]:
        """``symbol()`` / ``decimals()`` of ``rec``'s token at its block, one optional call
        each; an error there (a revert, or state a non-archive node pruned: a backfill of old
        blocks) is asked again at ``latest``, and a second error gives None for good."""
        answers: dict[str, str | None] = {}
        for selector in metadata_calls(rec.contract):
            call = {"to": rec.address, "data": selector}
            got = yield Call((("eth_call", [call, {"blockHash": rec.block_hash}]),),
                             optional=True)
            if got is None:
                got = yield Call((("eth_call", [call, "latest"]),), optional=True)
            answers[selector] = None if got is None else got[0]
        info = token_info(rec.contract, answers)
        logger.info("token %s (%s): symbol %r, decimals %s", rec.address, rec.contract,
                    info.symbol, info.decimals)
        return info


def _quantity(value: object, sender: str) -> int:
    """An ``eth_getTransactionCount`` answer (a hex quantity), or ``RPCError``."""
    try:
        return int(str(value), 16)
    except ValueError:
        raise RPCError(f"eth_getTransactionCount of {sender} answered {value!r:.60}, not a "
                       "hex quantity", method="eth_getTransactionCount") from None


def _merged(found: Sequence[EventRecord], wallet: Sequence[EventRecord]) -> list[EventRecord]:
    """A block's records of the configured contracts and of wallet activity, by log index."""
    if not wallet:
        return list(found)
    return sorted([*found, *wallet], key=lambda r: r.log_index)
