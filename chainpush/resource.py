"""The shape every adapter shares: an async context manager whose exit is ``aclose()``.

Adapters (node, MongoDB, Redis, websocket and HTTP servers) subclass :class:`AsyncResource`,
implement ``aclose()`` (idempotent) and, when entering must do I/O, override ``__aenter__``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self


class AsyncResource:
    """``async with resource:`` enters (a no-op unless overridden) and always ``aclose()``s."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release what the resource holds; safe to call more than once."""
        raise NotImplementedError


def raise_if_cancelling() -> None:
    """Raise the cancellation of the current task that a library call swallowed.

    On Python 3.11 two library patterns lose a ``task.cancel()``: ``asyncio.timeout`` turns a
    cancel that lands while it is expiring into its ``TimeoutError`` (redis-py's
    ``get_message(timeout=…)`` then returns None, our ``next_head`` returned None), and
    ``asyncio.wait_for`` drops a cancel that arrives as the inner future completes (CPython
    gh-86296; pymongo's async network layer awaits through it). A ``while True`` loop around
    such a call then never ends and shutdown hangs. ``Task.cancelling()`` still counts the
    request: every such loop calls this after the call (3.12 fixed both).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
