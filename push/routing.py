"""Routing decisions of dispatch: which push nodes get which message. Pure.

The Redis registry (names and TTLs in :mod:`chainpush.constants`, the shapes in
``docs/seams.md`` §4) maps each topic to the nodes that have subscribers for it (a hash
``node_id → registration time``), and keeps the live nodes in a sorted set ``node_id → expiry``
that each node's heartbeat refreshes. Topic entries are not refreshed (a heartbeat costs O(1) in
topics), so an entry can belong to a node that died: dispatch sends only to nodes it knows as
live, one copy of a record per node with a subscriber to any of its topics, never one per user
or per connection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from chainpush.push.records import StoredMessage

#: how long dispatch trusts its view of the live nodes before reading it again (a node that
#: died less than this ago may still get a copy nobody reads; a new node is seen at once)
LIVE_VIEW_S = 1.0


class LiveNodes:
    """Dispatch's cached view of the live nodes (the ``nodes`` sorted set).

    ``stale(candidates, now)`` says whether to read the set again before routing to
    ``candidates`` (the nodes found in a record's topic entries): when the view is older than
    ``LIVE_VIEW_S``, or a candidate is neither known live nor already known dead — a node that
    just registered must get its first messages, not wait a second. Entries of dead nodes thus
    cost at most one read per ``LIVE_VIEW_S``, not one per record.
    """

    def __init__(self) -> None:
        self.live: frozenset[str] = frozenset()
        self._dead: frozenset[str] = frozenset()
        self._until = float("-inf")

    def stale(self, candidates: Iterable[str], now: float) -> bool:
        if now >= self._until:
            return True
        return any(c not in self.live and c not in self._dead for c in candidates)

    def update(self, live: Iterable[str], candidates: Iterable[str], now: float) -> None:
        self.live = frozenset(live)
        self._dead = frozenset(c for c in candidates if c not in self.live)
        self._until = now + LIVE_VIEW_S


def routes(
    tables: Mapping[str, Mapping[str, str]], live: Collection[str]
) -> dict[str, list[str]]:
    """``topic → sorted live node ids`` from each topic's registry hash."""
    return {topic: sorted(n for n in table if n in live) for topic, table in tables.items()}


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


def registry_changes(
    wanted: Collection[str], registered: Collection[str], *, rejoined: bool
) -> tuple[set[str], set[str]]:
    """(topics to write, topics to remove) for a node's heartbeat.

    ``rejoined``: the node was not a member of the live set (first heartbeat, or Redis lost its
    data): every wanted topic is written again.
    """
    add = set(wanted) if rejoined else set(wanted) - set(registered)
    return add, set(registered) - set(wanted)
