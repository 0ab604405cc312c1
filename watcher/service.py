"""The watcher service: performs the actions of the pure stepper (``watcher.stepper``).

``Watcher(config, sink)`` is an async context manager; ``await run()`` works until cancelled
(``aclose()``). Every decision — backfill vs live vs catch-up, reorg handling, when to confirm,
what to propose and commit, recovery at session start — is the stepper's; this module only
talks to the node, the sink and the checkpoint store, in the order the stepper asks:

* a **session** per connection: ``eth_chainId`` (checked against ``[node] chain_id``), the
  stepper's ``session()`` generator driven action by action (``_Performer``); a refused
  ``eth_getLogs`` range (``RangeTooLarge`` / ``RateLimited``) is thrown back into the stepper,
  which shrinks the range or waits; any other error ends the session.
* the **outer loop**: after a node, sink or checkpoint error, capped exponential backoff
  (jittered) and a new session — on the next endpoint for a node error (failover). The new
  session reloads the checkpoint and completes a leftover proposal: nothing the failed
  session held in memory is trusted.
* **prefetch**: a ``Prefetch`` starts the next backfill range while the current one is stored;
  the following ``FetchRange`` takes it if it matches.
* **the lease** (``watcher.lease``): with a ``MongoLease`` (the default when the watcher opens
  its own checkpoint store) a session first waits as a *standby* until this process holds the
  lease of the checkpoint key, then leads: a background task renews the lease every
  ``[watch] lease_renew_s``, every checkpoint write carries the lease generation as its fencing
  token, and a batch that no proposal covers is handed to the sink only after checking the
  fence. A refused renewal or write (``LeaseLost``) ends the session: back to standby.
* **connections**: HTTP endpoints are polled every ``poll_interval_s``; websocket and IPC ones
  subscribe to ``newHeads`` and use a notification only as a wake-up (``WaitHead``): the
  stepper's catch-up by block number is what guarantees no gap, also across a dropped
  subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from typing import Any, Protocol

import redis.exceptions

from chainpush.constants import RedisNames
from chainpush.logs import Throttle, client_text
from chainpush.push.metrics import Metrics
from chainpush.resource import AsyncResource, raise_if_cancelling
from chainpush.watcher.binding import Bound, bind
from chainpush.watcher.checkpoint import CheckpointError, LeaseLost, MongoCheckpoints
from chainpush.watcher.claims import claim_names
from chainpush.watcher.config import Config
from chainpush.watcher.decode import DecodeStats, RawLog
from chainpush.watcher.errors import (
    ChainMismatch,
    ConfigError,
    NodeError,
    RangeTooLarge,
    RateLimited,
    RPCError,
    WatcherError,
)
from chainpush.watcher.interest import Interest
from chainpush.watcher.lease import LeaseDoc, MongoLease
from chainpush.watcher.node import Endpoint
from chainpush.watcher.progress import BackfillProgress
from chainpush.watcher.rpc import Rpc, open_rpc
from chainpush.watcher.sink import Sink, SinkError
from chainpush.watcher.stepper import (
    Accept,
    Action,
    Backfilling,
    Call,
    FetchRange,
    Interested,
    Load,
    Prefetch,
    Propose,
    Save,
    Sleep,
    Stepper,
    Subscribe,
    WaitHead,
    WatchStats,
)

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 15.0
RATE_LIMIT_TRIES = 4  # of one JSON-RPC batch the provider answered with 429 / rate limit

__all__ = ["CheckpointStore", "WatchStats", "Watcher"]

#: ``WatchStats`` fields served as ``chainpush_watch_<name>_total`` counters
_STAT_COUNTERS = {"blocks": "blocks followed live", "records": "records handed to the sink",
                  "reorgs": "reorgs seen", "retries": "sessions retried after an error"}


class CheckpointStore(Protocol):
    """``watcher.checkpoint``: ``fence`` is the lease generation (None: no lease)."""

    async def load(self, key: str, *, fence: int | None = None) -> dict[str, Any] | None: ...
    async def propose(
        self, key: str, state: dict[str, Any], batch: list[dict[str, Any]], *,
        fence: int | None = None,
    ) -> None: ...
    async def save(self, key: str, state: dict[str, Any], *, fence: int | None = None
                   ) -> None: ...
    async def check(self, key: str, *, fence: int) -> None: ...
    async def aclose(self) -> None: ...


class Lease(Protocol):
    """``watcher.lease.MongoLease``."""

    @property
    def holder(self) -> str: ...
    @property
    def generation(self) -> int | None: ...
    #: the lease document last seen held by another contender (None: none seen)
    other: LeaseDoc | None
    async def acquire(self, key: str, *, on_wait: Any = None) -> int: ...
    async def renew(self) -> None: ...
    async def release(self) -> None: ...
    def raise_floor(self, generation: int) -> None: ...
    async def aclose(self) -> None: ...


class Watcher(AsyncResource):
    """Follows the configured contracts and hands their records to ``sink``."""

    def __init__(
        self, config: Config, sink: Sink, *, checkpoints: CheckpointStore | None = None,
        lease: Lease | None = None, metrics: Metrics | None = None,
    ) -> None:
        """Without ``checkpoints``, the watcher opens MongoDB's checkpoint store and lease
        (``[stores]``); given ``checkpoints`` and no ``lease`` (tests, benchmarks), it runs
        without a lease: it always leads and writes unconditionally."""
        self.config = config
        self.sink = sink
        self._checkpoints = checkpoints
        self._own_checkpoints = checkpoints is None
        self._lease = lease
        self._own_lease = lease is None and checkpoints is None
        self._renewal: asyncio.Task[None] | None = None
        #: why this watcher stopped leading (set by the renewal task; the performer raises it)
        self._lost: LeaseLost | None = None
        self.leading = False
        self._stepped_down = False
        self.stats = WatchStats()
        self.metrics = metrics if metrics is not None else Metrics()
        self._declare_metrics()
        self._stepper: Stepper | None = None
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._interest: Interest | None = None
        self._throttle = Throttle(30.0)

    async def __aenter__(self) -> Watcher:
        stores, watch = self.config.stores, self.config.watch
        if self._checkpoints is None:
            self._checkpoints = MongoCheckpoints(stores.mongo_uri, stores.database)
        if self._own_lease and self._lease is None:
            self._lease = MongoLease(stores.mongo_uri, stores.database, lease_s=watch.lease_s,
                                     renew_s=watch.lease_renew_s)
        return self

    def _declare_metrics(self) -> None:
        m = self.metrics
        m.gauge("chainpush_watch_leader", "1 while this watcher holds the lease and leads, "
                "0 as a standby", lambda: 1.0 if self.leading else 0.0)
        m.gauge("chainpush_watch_lease_generation", "the lease generation (fencing token) this "
                "watcher holds, else the last one seen held by another (0: none)",
                lambda: float(self.lease_generation or 0))
        m.gauge("chainpush_watch_tip", "the committed tip block number (-1: none yet)",
                lambda: float(-1 if self.tip is None else self.tip))
        m.gauge("chainpush_watch_tracked_txs", "transactions followed now (tx:<hash> with a "
                "subscriber, not final yet; [watch] max_tracked_txs)",
                lambda: float(len(self._stepper.txs.tracked)) if self._stepper else 0.0)
        for name, what in _STAT_COUNTERS.items():
            m.counter(f"chainpush_watch_{name}_total", f"{what} by this process")
        m.counter("chainpush_watch_fenced_writes_total", "writes (lease renewals, checkpoint "
                  "writes) refused by the fencing token: this watcher had lost the lease")
        m.counter("chainpush_watch_lease_transitions_total", "changes between leader and "
                  "standby")
        m.counter("chainpush_watch_redis_errors_total", "failed reads of the subscribers' "
                  "topics from the Redis registry (the last answer is kept)")
        if self.config.watch.wallet_activity:
            m.gauge("chainpush_watch_wallets", "wallets with a user: subscriber whose token "
                    "transfers are followed ([watch] wallet_activity)",
                    lambda: float(self._stepper.wallets_in_force if self._stepper else 0))

    def render_metrics(self) -> str:
        """``/metrics``: the Prometheus text of ``metrics``, the stats counters brought up to
        date first (``WatchStats`` is the stepper's; it knows nothing of metrics)."""
        for name in _STAT_COUNTERS:
            self.metrics.counters[f"chainpush_watch_{name}_total"] = float(
                getattr(self.stats, name))
        return self.metrics.render()

    @property
    def lease_generation(self) -> int | None:
        """The generation this watcher leads with, else the one last seen held by another."""
        lease = self._lease
        if lease is None:
            return None
        if lease.generation is not None:
            return lease.generation
        return None if lease.other is None else lease.other.generation

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows."""
        return {"status": "ok", "leader": self.leading, "lease_generation":
                self.lease_generation, "tip": self.tip, "blocks": self.stats.blocks,
                "records": self.stats.records, "reorgs": self.stats.reorgs}

    async def aclose(self) -> None:
        """Stop ``run()`` (if running) and release the checkpoint store."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_renewal()
        if self._lease is not None and self.leading:
            await self._lease.release()
            logger.info("lease released")
        self.leading = False
        if self._own_lease and self._lease is not None:
            await self._lease.aclose()
            self._lease = None
        if self._own_checkpoints and self._checkpoints is not None:
            await self._checkpoints.aclose()
            self._checkpoints = None
        interest, self._interest = self._interest, None
        if interest is not None:
            await interest.aclose()

    async def interested(self, prefix: str) -> set[str] | None:
        """The stepper's ``Interested``: topics under ``prefix`` with a live subscriber, from
        the registry in ``[stores] redis_url`` (opened on first use); None while Redis cannot
        answer (counted in ``chainpush_watch_redis_errors_total``, logged at most every 30 s)."""
        stores = self.config.stores
        if self._interest is None:
            self._interest = Interest(stores.redis_url, RedisNames(stores.namespace))
        try:
            return await self._interest.topics(prefix)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise_if_cancelling()
            self.metrics.inc("chainpush_watch_redis_errors_total")
            held = self._throttle.ready("interest")
            if held is not None:
                logger.warning("reading the subscribers' %s topics from Redis failed (%s: %s); "
                               "keeping the last set; %d similar lines held back", prefix,
                               type(exc).__name__, client_text(exc), held)
            return None

    def _key(self) -> str:
        assert self._stepper is not None
        return self._stepper.key

    @property
    def _committed(self) -> dict[str, Any] | None:
        return self._stepper.committed if self._stepper is not None else None

    @property
    def tip(self) -> int | None:
        """The committed tip block number (None before the first checkpoint)."""
        committed = self._committed
        return None if committed is None else int(committed["block_number"])

    @property
    def decode_stats(self) -> DecodeStats | None:
        """Logs decoded / filtered out / unknown / undecodable so far (None before start)."""
        return self._stepper.decoder.stats if self._stepper is not None else None

    @property
    def tip_hash(self) -> str | None:
        """The committed tip block hash (None before the first checkpoint)."""
        committed = self._committed
        return None if committed is None else str(committed["block_hash"])

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
            except LeaseLost as exc:
                await self._step_down(exc)
                failures = 0  # the next session waits as a standby: no backoff needed
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
        if self._stepper is None:
            bound = bind(cfg, chain_id)
            await self._check_code(rpc, bound)
            if self._own_checkpoints:  # a deployment's MongoDB (not a test's own store)
                await claim_names(cfg, bound)  # unique per deployment: docs/seams.md §3
            self._stepper = Stepper(bound, cfg.watch, poll_interval_s=cfg.node.poll_interval_s)
            self._stepper.stats = self.stats
        elif self._stepper.bound.chain_id != chain_id:
            raise ChainMismatch(f"node at {rpc.endpoint.describe()} serves chain id {chain_id}, "
                                f"the watcher started on {self._stepper.bound.chain_id}")
        logger.info("node connected: %s (chain id %d)", rpc.endpoint.describe(), chain_id)
        await self._lead(self._stepper.key)
        steps = self._stepper.session(subscriptions=rpc.subscriptions)
        performer = _Performer(self, rpc)
        try:
            result: Any = None
            error: BaseException | None = None
            while True:
                action = steps.send(result) if error is None else steps.throw(error)
                result, error = None, None
                try:
                    result = await performer.perform(action)
                except (RangeTooLarge, RateLimited) as exc:
                    if not isinstance(action, FetchRange):
                        raise
                    error = exc  # the stepper shrinks the range or waits
                # a cancel that pymongo's or an rpc timeout's await swallowed (Python 3.11):
                # without this the loop goes on after aclose() asked it to stop
                raise_if_cancelling()
        finally:
            steps.close()
            await performer.aclose()

    # --- the lease: leader or standby ----------------------------------------------------------

    async def _lead(self, key: str) -> None:
        """Return once this watcher leads (at once without a lease, or while it holds one)."""
        lease = self._lease
        if lease is None:
            self.leading = True  # no lease (tests, benchmarks): always the leader
            return
        if self.leading:
            return

        def waiting(doc: LeaseDoc) -> None:
            # one INFO line per transition: after a step-down (already logged) this is detail
            level = logging.DEBUG if self._stepped_down else logging.INFO
            self._stepped_down = False
            logger.log(level, "standby: lease %s is held by %s (generation %d); taking over "
                       "if it is not renewed for %.1f s", key, doc.holder, doc.generation,
                       self.config.watch.lease_s)

        generation = await lease.acquire(key, on_wait=waiting)
        self._lost = None
        self._stepped_down = False
        self.leading = True
        self.metrics.inc("chainpush_watch_lease_transitions_total")
        logger.info("leader: holding lease %s, generation %d (as %s)", key, generation,
                    lease.holder)
        self._renewal = asyncio.create_task(self._renew(lease), name=f"lease renewal {key}")

    async def _renew(self, lease: Lease) -> None:
        try:
            while True:
                await asyncio.sleep(self.config.watch.lease_renew_s)
                await lease.renew()
        except LeaseLost as exc:
            if exc.fenced:
                self.metrics.inc("chainpush_watch_fenced_writes_total")
            self._lost = exc  # the performer ends the session at its next action
        except Exception as exc:  # a bug here must not leave a leader without renewals
            logger.exception("lease renewal failed")
            self._lost = LeaseLost(f"lease renewal failed: {exc!r}", fenced=False)

    async def _stop_renewal(self) -> None:
        task, self._renewal = self._renewal, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _step_down(self, exc: LeaseLost) -> None:
        if exc is not self._lost and exc.fenced:
            self.metrics.inc("chainpush_watch_fenced_writes_total")  # a checkpoint write
        await self._stop_renewal()
        self._lost = None
        if self._lease is not None and exc.fence_seen is not None:
            self._lease.raise_floor(exc.fence_seen)
        if self._lease is not None and self._lease.generation is not None:
            await self._lease.release()  # a CAS on our generation: a no-op if superseded
        if self.leading:
            self.leading = False
            self.metrics.inc("chainpush_watch_lease_transitions_total")
        logger.info("standby: %s", exc)
        self._stepped_down = True

    def fence(self) -> int | None:
        """The fencing token for checkpoint writes (None without a lease); raises the
        ``LeaseLost`` the renewal found, if any."""
        if self._lost is not None:
            raise self._lost
        if self._lease is None:
            return None
        generation = self._lease.generation
        if generation is None:  # never write unfenced while a lease is in use
            raise LeaseLost(f"lease {self._key()} not held", fenced=False)
        return generation

    async def _check_code(self, rpc: Rpc, bound: Bound) -> None:
        codes = await rpc.batch([("eth_getCode", [s.address, "latest"]) for s in bound.specs])
        for spec, code in zip(bound.specs, codes, strict=True):
            if code in (None, "0x", "0x0"):
                raise ConfigError(
                    f"{self.config.source}: [[contracts]] {spec.name}.address {spec.address}: no "
                    f"contract code there on chain {bound.chain_id}"
                )


class _Performer:
    """Performs one session's actions (``watcher.stepper``) with the node, sink and store."""

    def __init__(self, watcher: Watcher, rpc: Rpc) -> None:
        self._w = watcher
        self._rpc = rpc
        self._prefetch: tuple[tuple[int, int], asyncio.Task[tuple[list[RawLog], Any]]] | None = None
        self._progress: BackfillProgress | None = None
        self._tty: BackfillProgress | None = None
        self._began = 0.0
        self._level = logging.DEBUG
        self._covered = False  # the batch about to be accepted is in a stored proposal

    async def perform(self, action: Action) -> Any:
        w, rpc = self._w, self._rpc
        checkpoints = w._checkpoints
        assert checkpoints is not None
        fence = w.fence()  # before every action: a lost lease ends the session at once
        covered, self._covered = self._covered, False
        if isinstance(action, Call):
            try:
                return await self._call(action)
            except RateLimited:
                raise  # transient: not an answer that the node lacks the method
            except RPCError as exc:
                if not action.optional:
                    raise
                logger.debug("optional %s: %s", action.calls[0][0], exc)
                return None
        if isinstance(action, FetchRange):
            return await self._fetch_range(action)
        if isinstance(action, Prefetch):
            await self._cancel_prefetch()
            task = asyncio.create_task(self._fetch(action.lo, action.hi, action.log_filter))
            self._prefetch = ((action.lo, action.hi), task)
            return None
        if isinstance(action, Load):
            doc = await checkpoints.load(action.key, fence=fence)
            # a leftover proposal is accepted next: the fenced load just covered it
            self._covered = bool(doc and doc.get("proposed"))
            return doc
        if isinstance(action, Propose):
            await checkpoints.propose(action.key, action.state, action.batch, fence=fence)
            self._covered = True
            return None
        if isinstance(action, Accept):
            if fence is not None and not covered:
                # a chunk of final blocks (no proposal): hand it over only while still fenced
                await checkpoints.check(self._w._key(), fence=fence)
            await w.sink.accept(action.batch)
            return None
        if isinstance(action, Save):
            await checkpoints.save(action.key, action.state, fence=fence)
            return None
        if isinstance(action, Subscribe):
            await self._subscribe()
            return None
        if isinstance(action, WaitHead):
            await rpc.next_head(action.timeout_s)
            return None
        if isinstance(action, Sleep):
            await asyncio.sleep(action.delay_s)
            return None
        if isinstance(action, Backfilling):
            self._report(action)
            return None
        if isinstance(action, Interested):
            return await self._w.interested(action.prefix)
        raise AssertionError(f"unknown action {action!r}")

    async def _call(self, action: Call) -> list[Any]:
        """The batch, retried here (reads are idempotent) when the provider rate-limits it:
        ``RATE_LIMIT_TRIES`` tries with a doubling delay, then the session's retry takes over."""
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            try:
                return await self._rpc.batch(list(action.calls))
            except RateLimited as exc:
                left = RATE_LIMIT_TRIES - attempt
                if left == 0:
                    raise
                delay = BACKOFF_BASE_S * 2 ** (attempt - 1)
                logger.warning("%s; retrying %s in %.1f s (%d tries left)", exc,
                               action.calls[0][0], delay, left)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _fetch(self, lo: int, hi: int, log_filter: dict[str, object]
                     ) -> tuple[list[RawLog], Any]:
        flt = {"fromBlock": hex(lo), "toBlock": hex(hi), **log_filter}
        logs, end = await self._rpc.batch([("eth_getLogs", [flt]),
                                           ("eth_getBlockByNumber", [hex(hi), False])])
        return list(logs), end

    async def _fetch_range(self, action: FetchRange) -> tuple[list[RawLog], Any]:
        if self._prefetch is not None:
            span, task = self._prefetch
            self._prefetch = None
            if span == (action.lo, action.hi):
                return await task
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WatcherError):
                await task
        return await self._fetch(action.lo, action.hi, action.log_filter)

    async def _cancel_prefetch(self) -> None:
        if self._prefetch is not None:
            _, task = self._prefetch
            self._prefetch = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WatcherError):
                await task

    async def _subscribe(self) -> None:
        rpc = self._rpc
        if not rpc.subscriptions:
            return
        try:
            await rpc.subscribe_heads()
        except RPCError as exc:  # e.g. a provider without eth_subscribe: poll instead
            logger.warning("%s; polling every %.1f s instead", exc,
                           self._w.config.node.poll_interval_s)
        else:
            tip = self._w.tip
            logger.info("subscribed to newHeads at %s from block %d",
                        rpc.endpoint.describe(), (tip or 0) + 1)

    def _report(self, b: Backfilling) -> None:
        cfg = self._w.config.watch
        if b.done == b.start - 1 and not b.finished:
            self._began = time.monotonic()
            self._progress = BackfillProgress(b.start, b.target, cfg.progress_interval_s)
            # on a terminal, also a status line redrawn in place (only for long backfills)
            self._tty = (BackfillProgress(b.start, b.target, 0.25)
                         if sys.stderr.isatty() and b.target - b.start >= 10 * cfg.max_range
                         else None)
            # a short catch-up (the head ran ahead of the window) is routine: DEBUG only
            self._level = (logging.INFO if b.target - b.start >= 2 * cfg.reorg_window
                           else logging.DEBUG)
            logger.log(self._level, "backfill of blocks %d..%d (%d blocks)", b.start, b.target,
                       b.target - b.start + 1)
            return
        if b.finished:
            if self._tty is not None:
                sys.stderr.write("\r\x1b[K")
            stats = self._w.decode_stats
            assert stats is not None
            logger.log(self._level, "backfill done up to block %d: %d records in %.1f s (logs "
                       "decoded %d, filtered out %d, unknown %d, undecodable %d so far)",
                       b.target, b.records, time.monotonic() - self._began, stats.decoded,
                       stats.filtered, stats.unknown, stats.undecodable)
            self._progress = self._tty = None
            return
        if self._tty is not None:
            line = self._tty.update(b.done, b.records)
            if line is not None:
                sys.stderr.write("\r" + line + "\x1b[K")
                sys.stderr.flush()
        if self._progress is not None:
            line = self._progress.update(b.done, b.records)
            if line is not None:
                logger.info("%s", line)

    async def aclose(self) -> None:
        await self._cancel_prefetch()
