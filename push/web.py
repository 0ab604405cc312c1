"""The auth service over HTTP (aiohttp): dev login, the demo page, health and metrics.

Routes:

* ``POST /auth/login`` ``{"user": "alice", "wallets": ["0x…"]}`` → ``{"token", "expires_at",
  "user", "push_urls"}``. **Dev mode only**: outside dev mode it answers 404, and tokens are minted
  by the application's own backend with the shared secret or private key (docs/push.md §Tokens).
  The CLI turns it on only when :attr:`push.config.Settings.dev_login` holds: dev mode, and either
  the well-known dev secret or dev mode asked for explicitly (never ``CHAINPUSH_DEV=false``).
* ``GET /config.json`` → push node URLs, suggested topics, whether dev login is on.
* ``GET /`` → the demo page; ``GET /static/<file>`` → its JS and CSS (``push/static``).
* ``GET /healthz``, ``GET /metrics`` (Prometheus text).

Tokens are never logged. The push nodes check tokens themselves (shared key), so this service is
not on the path of a websocket connection.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from chainpush.resource import AsyncResource
from push.config import AuthServiceConfig
from push.metrics import Metrics
from push.tokens import Claims, TokenConfig, issue

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.dev_mode = dev_mode
        self.push_urls = push_urls
        self.topics = topics
        self.metrics = metrics or Metrics()
        self.metrics.counter("chainpush_logins_total", "tokens issued by the dev login")
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/auth/login", self._login)
        app.router.add_get("/config.json", self._config)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
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
                                  "push_urls": self.push_urls})

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response({"push_urls": self.push_urls, "topics": self.topics,
                                  "dev_login": self.dev_mode})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain")

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")
