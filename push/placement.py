"""Placement: which push node a user should connect to. Pure.

Rendezvous (highest-random-weight) hashing, a form of consistent hashing: for a user, every live
node gets the score ``sha256(user \\0 node_id)`` and the nodes are tried in descending score.
So all the tabs of one user land on one node (a ``user:`` topic then lives on one node, and its
state is warm there), a node that dies moves only its own users — to each user's next node in
that same order — and a node that joins takes only the users for which it scores highest. No
ring to maintain: the order is a function of the user and the set of live nodes alone.

``docs/scaling.md`` §Placement says how the auth service uses it; a plain load balancer in front
of the nodes still works (the clients then reach whichever node it picks, and any node serves any
user).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    url: str


def _score(user: str, node_id: str) -> bytes:
    return hashlib.sha256(f"{user}\0{node_id}".encode()).digest()


def order_for(user: str, nodes: Iterable[Node]) -> list[Node]:
    """``nodes`` in the order ``user`` should try them (its own node first)."""
    return sorted(nodes, key=lambda n: (_score(user, n.node_id), n.node_id), reverse=True)
