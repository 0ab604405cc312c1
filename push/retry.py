"""Retry with exponential backoff and full jitter, for the adapters only.

Collect must never drop a record: by default an operation is retried until it succeeds
(``max_tries=None``), and each retry is logged with what is retried and how many tries remain.
The caller is blocked meanwhile, which is the back-pressure the watcher sees.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from chainpush.push.errors import ConfigError, StoreUnavailable

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """``max_tries=None`` retries forever; delays grow from ``first_delay_s`` to ``max_delay_s``."""

    first_delay_s: float = 0.1
    max_delay_s: float = 5.0
    max_tries: int | None = None

    def __post_init__(self) -> None:
        if self.first_delay_s <= 0:
            raise ConfigError(f"first_delay_s must be > 0, got {self.first_delay_s}")
        if self.max_delay_s < self.first_delay_s:
            raise ConfigError(
                f"max_delay_s must be >= first_delay_s, got {self.max_delay_s} "
                f"< {self.first_delay_s}"
            )
        if self.max_tries is not None and self.max_tries < 1:
            raise ConfigError(f"max_tries must be >= 1 or None, got {self.max_tries}")

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay before retry number ``attempt`` (1-based)."""
        cap = min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1))
        return (rng or random).uniform(cap / 2, cap)


async def retrying(
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...],
    logger: logging.Logger,
    on_error: Callable[[], None] | None = None,
) -> T:
    """Run ``op`` until it succeeds; raise :class:`StoreUnavailable` once tries run out."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except retry_on as exc:
            if on_error is not None:
                on_error()
            if policy.max_tries is not None and attempt >= policy.max_tries:
                raise StoreUnavailable(f"{what} failed after {attempt} tries: {exc}") from exc
            left = "unlimited" if policy.max_tries is None else str(policy.max_tries - attempt)
            delay = policy.delay_s(attempt)
            logger.warning(
                "%s failed (%s: %s); retry %d in %.2f s, tries left: %s",
                what, type(exc).__name__, exc, attempt, delay, left,
            )
            await asyncio.sleep(delay)
