"""``/metrics`` and ``/healthz`` on a port of their own, for Prometheus to scrape one process.

The watcher serves them only here (``[watch] metrics_port``). A push node answers them on its
websocket port too, but behind ``SO_REUSEPORT`` (``chainpush push --workers N``) that port
reaches whichever worker the kernel picks; ``[push] metrics_port`` gives worker ``i`` the port
``metrics_port + i``, so each worker is scraped on its own (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)


class ScrapePortError(OSError):
    """The metrics port cannot be listened on: ``errno`` is the bind's, ``strerror`` a message
    naming the setting."""


@contextlib.asynccontextmanager
async def serve_scrape(render: Callable[[], str], health: Callable[[], tuple[int, Any]],
                       port: int | None, *, setting: str,
                       host: str = "127.0.0.1") -> AsyncIterator[int | None]:
    """Serve ``render()`` (Prometheus text) at ``/metrics`` and ``health()`` (status, JSON
    value) at ``/healthz`` on ``host:port`` (0: a free port; None: nothing served) while the
    context is open; yields the bound port. :class:`ScrapePortError` names ``setting``."""
    if port is None:
        yield None
        return

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=render(), content_type="text/plain", charset="utf-8")

    async def healthz(_: web.Request) -> web.Response:
        status, body = health()
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ScrapePortError(
                exc.errno, f"{setting} {port}: cannot listen on {host} ({exc})") from exc
        bound = port
        for sock in runner.addresses:
            bound = int(sock[1])
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        yield bound
    finally:
        await runner.cleanup()
