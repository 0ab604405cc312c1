"""The shape every adapter shares: an async context manager whose exit is ``aclose()``.

Adapters (node, MongoDB, Redis, websocket and HTTP servers) subclass :class:`AsyncResource`,
implement ``aclose()`` (idempotent) and, when entering must do I/O, override ``__aenter__``.
"""

from __future__ import annotations

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
