"""The auth service over HTTP (aiohttp): dev login, the demo page, health and metrics.

Routes:

* ``POST /auth/login`` ``{"user": "alice", "wallets": ["0x…"]}`` → ``{"token", "expires_at",
  "user", "push_urls"}``. **Dev mode only**: outside dev mode it answers 404, and tokens are minted
  by the application's own backend with the shared secret or private key (docs/push.md §Tokens).
  The CLI turns it on only when :attr:`push.config.Settings.dev_login` holds: dev mode, and either
  the well-known dev secret or dev mode asked for explicitly (never ``CHAINPUSH_DEV=false``).
* ``GET /config.json`` → push node URLs, suggested topics, whether dev login is on.
* ``GET /`` → the demo page; ``GET /static/<file>`` → its JS and CSS (``push/static``);
  ``GET /static/client/<file>`` → the JS client package (``clients/js``, package data).
* ``GET /healthz``, ``GET /metrics`` (Prometheus text).
* ``POST /v1/publish`` with ``Authorization: Bearer <server key>`` ``{"topic": "app:orders",
  "id": "ord-1", "event": "order.shipped", "data": {...}}`` → 201 ``{"topic", "id", "msg_id",
  "offset", "epoch", "duplicate": false}`` (200 and ``duplicate: true`` for a retry of a
  stored id): an app message stored through collect and delivered like any record
  (:mod:`push.publish`; off, 404, without ``[publish] keys``). Errors are JSON
  ``{"error": <code>, "message": <text>}``: 400, 401, 404, 413, 503.

Tokens are never logged. The push nodes check tokens themselves (shared key), so this service is
not on the path of a websocket connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from chainpush.logs import client_text
from chainpush.push.config import AuthServiceConfig, PublishConfig
from chainpush.push.metrics import Metrics
from chainpush.push.placement import Node, order_for
from chainpush.push.publish import PublishRefused, answer, key_matches, parse_request
from chainpush.push.tokens import Claims, TokenConfig, issue
from chainpush.resource import AsyncResource

if TYPE_CHECKING:
    from chainpush.push.collect import Collector
    from chainpush.push.directory import NodeDirectory

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_WALLET = re.compile(r"0x[0-9a-fA-F]{40}")
MAX_BODY_BYTES = 4096


class AuthService(AsyncResource):
    """``async with AuthService(...) as svc`` listens; ``svc.url`` is where."""

    def __init__(
        self, config: AuthServiceConfig, *, tokens: TokenConfig, dev_mode: bool,
        push_urls: list[str], topics: list[str], metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time, publish: PublishConfig | None = None,
        collector: Collector | None = None, directory: NodeDirectory | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.dev_mode = dev_mode
        self.push_urls = push_urls
        self.topics = topics
        self.metrics = metrics or Metrics()
        self.metrics.counter("chainpush_logins_total", "tokens issued by the dev login")
        self.metrics.counter("chainpush_published_total", "app messages stored by /v1/publish")
        self.metrics.counter("chainpush_publish_refused_total",
                             "/v1/publish requests answered 4xx or 503")
        self.publish = publish or PublishConfig()
        #: where /v1/publish stores app messages; set it before the first request (chainpush run
        #: opens its Collector after the page)
        self.collector = collector
        #: the live nodes from the Redis registry, for placement (None: ``push_urls`` as given)
        self.directory = directory
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/auth/login", self._login)
        app.router.add_post("/v1/publish", self._publish)
        app.router.add_get("/config.json", self._config)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        # the JS client package (clients/js, linked as static/client): its own route, since the
        # link leads out of STATIC in a checkout and aiohttp serves no file outside its root
        app.router.add_static("/static/client/", STATIC / "client", show_index=False)
        app.router.add_static("/static/", STATIC, show_index=False)
        return app

    async def __aenter__(self) -> AuthService:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        # bind the socket ourselves so that port 0 (tests) reports the port it got
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        logger.info("auth service at %s (dev login %s)", self.url,
                    "on" if self.dev_mode else "off")
        return self


    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self) -> None:
        import asyncio

        await asyncio.Event().wait()

    async def _login(self, request: web.Request) -> web.Response:
        if not self.dev_mode:
            return web.json_response(
                {"error": "dev login is disabled outside dev mode: tokens are minted by your "
                          "backend (see docs/push.md)"}, status=404)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        user = body.get("user")
        if not isinstance(user, str) or _USER.fullmatch(user) is None:
            return web.json_response(
                {"error": "user must be 1-64 characters of letters, digits, _ . @ -"}, status=400)
        wallets = body.get("wallets", [])
        if not isinstance(wallets, list) or not all(
            isinstance(w, str) and _WALLET.fullmatch(w) for w in wallets
        ):
            return web.json_response({"error": "wallets must be a list of 0x addresses"},
                                     status=400)
        now = self._clock()
        claims = Claims(user=user, wallets=tuple(wallets), topics=self.config.dev_topics,
                        expires_at=int(now + self.config.token_ttl_s))
        token = issue(claims, self.tokens, now=now)
        self.metrics.inc("chainpush_logins_total")
        logger.info("dev login: issued a token for user %s (%d wallets)", user, len(wallets))
        return web.json_response({"token": token, "expires_at": claims.expires_at, "user": user,
                                  "push_urls": await self.urls_for(user)})

    def _refuse(self, status: int, code: str, message: str, **headers: str) -> web.Response:
        self.metrics.inc("chainpush_publish_refused_total")
        return web.json_response({"error": code, "message": message}, status=status,
                                 headers=headers or None)

    async def _read_bounded(self, request: web.Request) -> bytes | None:
        """The body, or None once it exceeds ``max_body_bytes`` (read no further)."""
        limit = self.publish.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    async def _publish(self, request: web.Request) -> web.Response:
        """``POST /v1/publish``: authenticate, bound, parse, store through collect, answer."""
        collector = self.collector
        if not self.publish.keys or collector is None:
            return self._refuse(404, "publish_disabled", "POST /v1/publish is off: set [publish] "
                                "keys (or CHAINPUSH_PUBLISH_KEYS) and restart (docs/push.md)")
        if not key_matches(request.headers.get("Authorization"), self.publish.keys):
            return self._refuse(401, "unauthorized", "send Authorization: Bearer <a [publish] "
                                "keys entry>", **{"WWW-Authenticate": "Bearer"})
        body = await self._read_bounded(request)
        if body is None:
            return self._refuse(413, "too_large", f"body above {self.publish.max_body_bytes} "
                                "bytes ([publish] max_body_bytes)")
        try:
            record = parse_request(body, now=self._clock())
        except PublishRefused as exc:
            return self._refuse(exc.status, exc.code, str(exc))
        topic, msg_id = record["topic"], f"{record['id']}/confirmed"
        try:
            async with asyncio.timeout(self.publish.timeout_s):
                before = await collector.store.position_of(topic, msg_id)
                # a retry goes through accept too: it completes a first attempt that stopped
                # between its steps, and re-dispatches the same offset (collect's replay path)
                await collector.accept([record])
                position = await collector.store.position_of(topic, msg_id)
        except TimeoutError:
            logger.warning("publish of %s to %s: the store did not answer within %.0f s",
                           client_text(msg_id), client_text(topic), self.publish.timeout_s)
            return self._refuse(503, "unavailable", f"the store did not answer within "
                                f"{self.publish.timeout_s:g} s; retry with the same id (a retry "
                                "is stored once)")
        if position is None:  # accept returned, so the row exists; only a wiped store loses it
            return self._refuse(503, "unavailable", "the message was not found after storing "
                                "it; retry with the same id")
        duplicate = before is not None
        if not duplicate:
            self.metrics.inc("chainpush_published_total")
            logger.debug("published %s to %s at offset %d", client_text(msg_id),
                         client_text(topic), position[0])
        return web.json_response(answer(record, msg_id=msg_id, offset=position[0],
                                        epoch=position[1], duplicate=duplicate),
                                 status=200 if duplicate else 201)

    async def urls_for(self, user: str | None) -> list[str]:
        """The push node URLs a client should try, in order: the live nodes of the registry
        (the configured ``push_urls`` before the first read, or without a directory), ordered
        for ``user`` by rendezvous hashing (:mod:`push.placement`) so that all of a user's tabs
        land on one node and a node's failure moves only its own users."""
        nodes = await self.directory.live() if self.directory is not None else None
        if not nodes:
            nodes = [Node(url, url) for url in self.push_urls]
        if user is None:
            return [n.url for n in nodes]
        return [n.url for n in order_for(user, nodes)]

    async def _config(self, request: web.Request) -> web.Response:
        # ``?user=<id>``: the URLs ordered for that user (a backend that mints its own tokens
        # hands these to its page); without it, the live nodes in no particular order
        user = request.query.get("user")
        if user is not None and _USER.fullmatch(user) is None:
            return web.json_response(
                {"error": "user must be 1-64 characters of letters, digits, _ . @ -"}, status=400)
        return web.json_response({"push_urls": await self.urls_for(user), "topics": self.topics,
                                  "dev_login": self.dev_mode, "ordered": user is not None})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain")

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")
