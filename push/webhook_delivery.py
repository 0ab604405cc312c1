"""The webhook deliverer: drives the :mod:`push.webhooks` lanes with MongoDB and aiohttp.

Theory of operation
-------------------
* One :class:`HookRunner` per ``[[webhooks]]`` entry, one asyncio task per (webhook, topic) lane,
  and one ``aiohttp.ClientSession`` per webhook: a slow or dead endpoint only ever holds its own
  lanes; another webhook, or another topic of the same webhook, never waits for it.
* Messages are read from ``messages`` through :meth:`push.store.MessageStore.read_range` (read
  only); cursors and pauses live in the ``webhooks`` collection (:mod:`push.webhook_store`), so a
  restart (or a SIGKILL) resumes from the last acknowledged offset. A request acknowledged by the
  endpoint whose cursor write did not land is sent again after a restart, under the same
  ``webhook-id``: delivery is at least once, and receivers deduplicate on that id.
* New messages are found by **polling**: every ``poll_interval_s`` one
  :meth:`~push.store.MessageStore.heads` call reads the head of every lane's topic and wakes
  the lanes whose head rose. (A Redis wake-up would cut the latency below the poll interval; the
  poll stays as the safety net either way.) The same tick reads the hook documents, so an
  operator's ``replay`` / ``resume`` (which bump the hook's ``rev``) reload that webhook.
* Topics matching a ``*`` pattern are **discovered** every ``discover_interval_s`` from the
  distinct topics of ``messages``; a topic found later starts at offset 1 (even with
  ``start = "head"``, which only applies to the topics present when the webhook first runs).

Observability: counters and gauges in :class:`push.metrics.Metrics`, served at ``/metrics`` (and
``/healthz``) when ``[webhooks_server] port`` is set; ``chainpush webhooks status`` reads the same
state from MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from chainpush.push.config import StoresConfig
from chainpush.push.errors import ConfigError
from chainpush.push.metrics import Metrics
from chainpush.push.store import MessageStore
from chainpush.push.webhook_config import WebhookConfig, WebhooksSettings
from chainpush.push.webhook_store import LaneDoc, WebhookStore
from chainpush.push.webhooks import (
    Acked,
    Failure,
    Fetch,
    HookState,
    Idle,
    Lane,
    Outcome,
    Paused,
    Response,
    Retry,
    Send,
    Stale,
    Wait,
    retry_after_s,
    signed_headers,
)
from chainpush.resource import AsyncResource, raise_if_cancelling

logger = logging.getLogger(__name__)

#: bytes of an error answer's body kept for ``status`` (a hint, not a log)
ERROR_BODY_BYTES = 200


class Reload(Exception):
    """A lane's document changed under the deliverer (replay): reload the webhook."""


def declare_metrics(metrics: Metrics) -> None:
    metrics.counter("chainpush_webhook_deliveries_total", "webhook requests acknowledged (2xx)")
    metrics.counter("chainpush_webhook_messages_total", "messages acknowledged by webhooks")
    metrics.counter("chainpush_webhook_failures_total",
                    "webhook requests not acknowledged (non-2xx, timeout, connection error)")
    metrics.counter("chainpush_webhook_pauses_total", "times a webhook was paused")
    metrics.counter("chainpush_webhook_resets_total",
                    "lanes restarted from offset 1 because their topic's stream was replaced")


class HookRunner:
    """One webhook: its lanes, their tasks, its HTTP session, its pause."""

    def __init__(self, config: WebhookConfig, *, store: MessageStore, state: WebhookStore,
                 metrics: Metrics, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.state = state
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.clock = clock
        self.hook = HookState(config.name)
        self.rev = -1
        self.lanes: dict[str, Lane] = {}
        self.revs: dict[str, int] = {}
        self.wakes: dict[str, asyncio.Event] = {}
        self.reload = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._crash: BaseException | None = None
        # (re)loading and discovery both replace or add lanes: never interleaved, so no lane
        # ever has two tasks
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    # --- called by the poller ----------------------------------------------------------------

    def topics(self) -> list[str]:
        return list(self.lanes)

    async def observe_heads(self, heads: dict[str, tuple[int, str | None]]) -> None:
        for topic, lane in list(self.lanes.items()):
            if topic not in heads:
                continue
            before = lane.head
            head, epoch = heads[topic]
            if lane.observe_head(head, epoch):
                self.metrics.inc("chainpush_webhook_resets_total")
                logger.warning("webhook %s topic %s: the stream was replaced (head %d, epoch "
                               "%s); delivering it again from offset 1", self.config.name,
                               topic, head, epoch)
                # the reset bumps the lane's rev: an acknowledgement of the old stream still
                # being written (with the old rev) cannot land after it
                if await self.state.reset_cursor(self.config.name, topic, self.revs[topic],
                                                 epoch):
                    self.revs[topic] += 1
                else:
                    self.reload.set()
                self.wakes[topic].set()
            elif lane.head > before:
                self.wakes[topic].set()

    async def discovered(self, topics: list[str]) -> None:
        """Topics that now exist: start a lane (at offset 1) for each new match."""
        async with self._lock:
            if not self._running:
                return  # reloading: the load lists the topics itself
            for topic in topics:
                if topic not in self.lanes and self.config.wants(topic):
                    doc = await self.state.create_lane(self.config.name, topic, 0)
                    self._start_lane(doc)

    def check_rev(self, rev: int | None) -> None:
        if rev is not None and rev != self.rev:
            self.reload.set()

    # --- running -----------------------------------------------------------------------------

    async def run(self, known_topics: Callable[[], list[str]]) -> None:
        """Deliver until cancelled; reload from MongoDB whenever an operator changed the state.

        Lane tasks are plain tasks cancelled at each reload, not a TaskGroup: on Python 3.11 a
        TaskGroup whose child fails while the parent already waits in ``__aexit__`` leaves the
        parent's cancellation count raised (fixed in 3.12), which would read as a shutdown.
        """
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        # the semaphore bounds requests in flight; the connector must not queue behind it, or
        # a request's timeout would include waiting for a pooled connection
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            while True:
                raise_if_cancelling()
                self.reload.clear()
                try:
                    async with self._lock:
                        self._running = True
                        await self._load(known_topics())
                    raise_if_cancelling()
                    await self.reload.wait()
                finally:
                    async with self._lock:
                        self._running = False
                        tasks, self._tasks = self._tasks, set()
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                if self._crash is not None:
                    raise self._crash
                logger.info("webhook %s: reloading its state from MongoDB", self.config.name)

    def _lane_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if not isinstance(exc, Reload):
            self._crash = exc  # a bug, not an endpoint failure: stop the deliverer with it
        self.reload.set()

    async def _load(self, topics: list[str]) -> None:
        name = self.config.name
        hooks = await self.state.hooks([name])
        docs = await self.state.lanes(name)
        wanted = sorted(set(self.config.exact_topics) | {t for t in topics if self.config.wants(t)}
                        | set(docs))
        if name not in hooks:
            # first run of this webhook: its lanes first, then the hook document (a crash in
            # between redoes this; lanes that exist keep their cursors)
            heads = (await self.store.max_offsets(wanted) if self.config.start == "head"
                     else {})
            for topic in wanted:
                if topic not in docs:
                    docs[topic] = await self.state.create_lane(name, topic, heads.get(topic, 0))
            await self.state.create_hook(name)
            hooks = await self.state.hooks([name])
            logger.info("webhook %s: first run, %d topic(s) from %s", name, len(wanted),
                        "their head" if self.config.start == "head" else "offset 1")
        hook = hooks[name]
        self.rev = hook.rev
        self.hook = HookState(name, paused=hook.paused)
        self.lanes, self.revs, self.wakes = {}, {}, {}
        for topic in wanted:
            doc = docs.get(topic) or await self.state.create_lane(name, topic, 0)
            self._start_lane(doc)
        await self.observe_heads(await self.store.heads(self.lanes))
        if hook.paused:
            logger.warning("webhook %s is paused: %s (resume with `chainpush webhooks resume "
                           "%s`)", name, hook.paused, name)
        else:
            logger.info("webhook %s delivering %d topic(s) to %s", name, len(self.lanes),
                        self.config.url)

    def _start_lane(self, doc: LaneDoc) -> None:
        lane = Lane(config=self.config, hook=self.hook, topic=doc.topic, cursor=doc.cursor,
                    pinned=doc.pinned, rng=self.rng, epoch=doc.epoch)
        self.lanes[doc.topic] = lane
        self.revs[doc.topic] = doc.rev
        self.wakes[doc.topic] = asyncio.Event()
        task = asyncio.create_task(self._deliver(lane),
                                   name=f"webhook {self.config.name} {doc.topic}")
        self._tasks.add(task)
        task.add_done_callback(self._lane_done)

    async def _deliver(self, lane: Lane) -> None:
        """One lane's loop: the caller's side of :class:`push.webhooks.Lane`."""
        loop = asyncio.get_running_loop()
        wake = self.wakes[lane.topic]
        name, topic = self.config.name, lane.topic
        while True:
            raise_if_cancelling()
            wake.clear()
            action = lane.poll(loop.time())
            if isinstance(action, Idle):
                await wake.wait()
            elif isinstance(action, Wait):
                await asyncio.sleep(max(0.0, action.until - loop.time()))
            elif isinstance(action, Fetch):
                rows = await self.store.read_range(topic, action.first, action.last,
                                                   limit=action.last - action.first + 1)
                attempt = lane.fetched(rows, loop.time())
                if attempt is not None and attempt.pin and not await self.state.save_pin(
                        name, topic, self.revs[topic], attempt.first, attempt.last):
                    raise Reload(name)
            elif isinstance(action, Send):
                outcome = await self._post(action.attempt.webhook_id, action.attempt.body)
                decision = lane.result(outcome, loop.time(), action.attempt)
                if not isinstance(decision, Stale):
                    await self._after(lane, decision)

    async def _after(self, lane: Lane, decision: Acked | Retry | Paused) -> None:
        name, topic, rev = self.config.name, lane.topic, self.revs[lane.topic]
        if isinstance(decision, Acked):
            self.metrics.inc("chainpush_webhook_deliveries_total")
            self.metrics.inc("chainpush_webhook_messages_total", decision.count)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("webhook %s topic %s acknowledged up to %d", name, topic,
                             decision.cursor)
            if not await self.state.save_cursor(name, topic, rev, decision.cursor,
                                                decision.epoch):
                raise Reload(name)
            return
        self.metrics.inc("chainpush_webhook_failures_total")
        error = lane.last_error or decision.error
        if not await self.state.save_error(name, topic, rev, error, lane.failures):
            raise Reload(name)
        if isinstance(decision, Retry):
            logger.warning("webhook %s topic %s: %s; retry %d in %.1f s, tries left before "
                           "pausing: %d", name, topic, error, decision.failures,
                           max(0.0, decision.until - asyncio.get_running_loop().time()),
                           self.config.max_failures - decision.failures)
            return
        self.metrics.inc("chainpush_webhook_pauses_total")
        logger.error("webhook %s paused: %s (nothing skipped; resume with `chainpush webhooks "
                     "resume %s`)", name, decision.reason, name)
        await self.state.pause(name, decision.reason)

    async def _post(self, msg_id: str, body: str) -> Outcome:
        async with self._slots:
            return await self._post_now(msg_id, body)

    async def _post_now(self, msg_id: str, body: str) -> Outcome:
        assert self._session is not None
        # whole seconds (Standard Webhooks): taken at each send, so a retry is signed afresh
        headers = signed_headers(self.config.key, msg_id, int(self.clock()), body)
        try:
            async with self._session.post(self.config.url, data=body.encode(), headers=headers,
                                          allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()  # drain, so the connection is reused
                    return Response(resp.status)
                snippet = (await resp.content.read(ERROR_BODY_BYTES)).decode(errors="replace")
                if snippet:
                    logger.info("webhook %s %s: HTTP %d: %s", self.config.name, msg_id,
                                resp.status, snippet.strip()[:ERROR_BODY_BYTES])
                return Response(resp.status, retry_after_s(resp.headers.get("Retry-After")))
        except TimeoutError:
            return Failure(f"no answer within {self.config.timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Failure(f"{type(exc).__name__}: {exc}"[:300])

    def paused_now(self) -> bool:
        return self.hook.paused is not None

    def lag(self) -> int:
        return sum(max(0, lane.head - lane.cursor) for lane in self.lanes.values())


class Deliverer(AsyncResource):
    """Every ``[[webhooks]]`` entry delivered from one process: ``async with`` then ``run()``."""

    def __init__(self, settings: WebhooksSettings, stores: StoresConfig, *,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self.metrics = metrics or Metrics()
        declare_metrics(self.metrics)
        self.metrics.counter("chainpush_mongo_errors_total", "transient MongoDB errors (retried)")
        self.metrics.gauge("chainpush_webhooks_paused", "webhooks paused (need a resume)",
                           lambda: float(sum(r.paused_now() for r in self.runners)))
        self.metrics.gauge("chainpush_webhook_lag_messages",
                           "messages stored but not yet acknowledged, over all webhooks",
                           lambda: float(sum(r.lag() for r in self.runners)))
        self.runners: list[HookRunner] = []
        self.known_topics: list[str] = []
        self.port: int | None = None
        self._exit = contextlib.AsyncExitStack()
        self._store: MessageStore | None = None
        self._state: WebhookStore | None = None

    async def __aenter__(self) -> Deliverer:
        def count() -> None:
            self.metrics.inc("chainpush_mongo_errors_total")

        try:
            self._store = await self._exit.enter_async_context(MessageStore(
                self.stores.mongo_uri, self.stores.database, on_error=count))
            self._state = await self._exit.enter_async_context(WebhookStore(
                self.stores.mongo_uri, self.stores.database, on_error=count))
            self.runners = [HookRunner(cfg, store=self._store, state=self._state,
                                       metrics=self.metrics) for cfg in self.settings.webhooks]
            server = self.settings.server
            if server.port is not None:
                runner = web.AppRunner(self._app(), access_log=None)
                await runner.setup()
                self._exit.push_async_callback(runner.cleanup)
                # bind ourselves so that port 0 (tests) reports the port it got
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((server.host, server.port))
                except OSError as exc:
                    sock.close()
                    raise ConfigError(f"webhooks_server: cannot listen on {server.host}:"
                                      f"{server.port}: {exc.strerror or exc}") from exc
                self.port = int(sock.getsockname()[1])
                await web.SockSite(runner, sock).start()
                logger.info("webhook deliverer metrics at http://%s:%d/metrics", server.host,
                            self.port)
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def aclose(self) -> None:
        await self._exit.aclose()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"webhooks": {r.config.name: {
            "state": "paused" if r.paused_now() else "active", "paused": r.hook.paused,
            "lag": r.lag()} for r in self.runners}}
        return web.json_response(body)

    async def run(self) -> None:
        assert self._state is not None and self._store is not None
        if not self.runners:
            logger.warning("no [[webhooks]] configured: the deliverer has nothing to do")
        if any(r.config.has_patterns for r in self.runners):
            self.known_topics = await self._state.topics()
        async with asyncio.TaskGroup() as group:
            for runner in self.runners:
                group.create_task(runner.run(lambda: self.known_topics))
            group.create_task(self._poll())
            if any(r.config.has_patterns for r in self.runners):
                group.create_task(self._discover())

    async def _poll(self) -> None:
        """Every ``poll_interval_s``: the heads of every lane's topic in one call, and the hook
        documents (operator actions)."""
        assert self._state is not None and self._store is not None
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self.settings.server.poll_interval_s)
            topics = sorted({t for r in self.runners for t in r.topics()})
            heads = await self._store.heads(topics) if topics else {}
            hooks = await self._state.hooks([r.config.name for r in self.runners])
            for runner in self.runners:
                doc = hooks.get(runner.config.name)
                runner.check_rev(None if doc is None else doc.rev)
                await runner.observe_heads(heads)

    async def _discover(self) -> None:
        assert self._state is not None
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self.settings.server.discover_interval_s)
            self.known_topics = await self._state.topics()
            for runner in self.runners:
                if runner.config.has_patterns:
                    await runner.discovered(self.known_topics)


async def run_webhooks(settings: WebhooksSettings, stores: StoresConfig,
                       metrics: Metrics | None = None) -> None:
    """Run the deliverer until cancelled (what ``chainpush run`` calls when webhooks exist)."""
    async with Deliverer(settings, stores, metrics=metrics) as deliverer:
        await deliverer.run()
