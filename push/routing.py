"""Routing decisions of dispatch: which push nodes get which message. Pure.

The Redis registry (names in :mod:`chainpush.constants`) maps each topic to the nodes that have
subscribers for it, as a hash ``node_id → expiry`` (unix seconds). Nodes refresh their entries
every heartbeat; an entry whose expiry has passed belongs to a node that died or stopped caring,
and is ignored (and pruned by dispatch). Dispatch sends one copy of a record per node that has a
subscriber to any of its topics, never one per user or per connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from push.records import StoredMessage


def live_nodes(entries: Mapping[str, str], now: float) -> tuple[list[str], list[str]]:
    """Split a topic's ``node_id → expiry`` hash into (live, expired) node ids, each sorted."""
    live: list[str] = []
    expired: list[str] = []
    for node_id, expiry in entries.items():
        try:
            alive = float(expiry) > now
        except ValueError:
            alive = False
        (live if alive else expired).append(node_id)
    return sorted(live), sorted(expired)


def plan(
    messages: Sequence[StoredMessage], routes: Mapping[str, Iterable[str]]
) -> dict[str, list[StoredMessage]]:
    """Group the stored messages of one record by node: one publish per node.

    ``routes`` maps each topic to its live nodes; a node gets only the topics it asked for.
    """
    out: dict[str, list[StoredMessage]] = {}
    for message in messages:
        for node_id in routes.get(message.topic, ()):
            out.setdefault(node_id, []).append(message)
    return out


def registrations(
    topics: Iterable[str], users: Iterable[str], now: float, ttl_s: float
) -> tuple[dict[str, float], dict[str, float]]:
    """What a node's heartbeat writes: ``topic → expiry`` and ``user → expiry``."""
    expiry = now + ttl_s
    return ({t: expiry for t in topics}, {u: expiry for u in users})
