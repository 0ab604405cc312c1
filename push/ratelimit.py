"""A token bucket for client frames. Pure: the caller passes the clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` frames per second on average, bursts up to ``burst`` frames."""

    rate_per_s: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def allow(self, now: float) -> bool:
        """Take one token at time ``now``; False when the bucket is empty."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionLimits:
    """Connection caps of one node (docs/protocol.md §1, §7). None disables a cap."""

    max_connections: int | None = 10_000  #: open TCP connections on the node
    max_connections_per_ip: int | None = 200  #: open TCP connections from one address
    max_connections_per_user: int | None = 20  #: authenticated connections of one user
    connect_rate_per_ip_s: float | None = 20.0  #: new connections per second from one address
    connect_burst_per_ip: int = 40


Refusal = Literal["node_full", "ip_full", "ip_rate"]


class Admission:
    """Counts open connections per address and per user; decides who may connect. Pure.

    Call :meth:`open` when a TCP connection arrives (``None`` → accepted and counted; a
    :data:`Refusal` → refuse it, nothing counted), :meth:`close` exactly once for every accepted
    one, :meth:`join` / :meth:`leave` around the authenticated part of a connection.
    """

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.per_user: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def open(self, ip: str, now: float) -> Refusal | None:
        lim = self.limits
        if lim.connect_rate_per_ip_s is not None:
            bucket = self._buckets.get(ip)
            if bucket is None:
                if len(self._buckets) >= 100_000:  # bounded: forget full buckets first
                    self._prune(now)
                bucket = self._buckets[ip] = TokenBucket(lim.connect_rate_per_ip_s,
                                                         lim.connect_burst_per_ip)
            if not bucket.allow(now):
                return "ip_rate"
        if lim.max_connections is not None and self.total >= lim.max_connections:
            return "node_full"
        count = self.per_ip.get(ip, 0)
        if lim.max_connections_per_ip is not None and count >= lim.max_connections_per_ip:
            return "ip_full"
        self.total += 1
        self.per_ip[ip] = count + 1
        return None

    def close(self, ip: str) -> None:
        self.total -= 1
        count = self.per_ip.get(ip, 0) - 1
        if count > 0:
            self.per_ip[ip] = count
        else:
            self.per_ip.pop(ip, None)

    def join(self, user: str) -> bool:
        """An authenticated connection of ``user``: False → refuse it (4004), not counted."""
        count = self.per_user.get(user, 0)
        cap = self.limits.max_connections_per_user
        if cap is not None and count >= cap:
            return False
        self.per_user[user] = count + 1
        return True

    def leave(self, user: str) -> None:
        count = self.per_user.get(user, 0) - 1
        if count > 0:
            self.per_user[user] = count
        else:
            self.per_user.pop(user, None)

    def _prune(self, now: float) -> None:
        for ip, bucket in list(self._buckets.items()):
            bucket.allow(now)  # refill to now (takes one token: harmless for a full bucket)
            if bucket.tokens >= bucket.burst - 1:
                del self._buckets[ip]
        if len(self._buckets) >= 100_000:
            self._buckets.clear()
