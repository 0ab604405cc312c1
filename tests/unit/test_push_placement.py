"""Rendezvous placement: a user's tabs on one node; a node's failure moves only its users."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chainpush.push.placement import Node, order_for

NODES = [Node(f"push-{i}", f"ws://10.0.0.{i}:8701/ws") for i in range(1, 6)]
USERS = [f"user{n}" for n in range(2000)]


def test_same_user_same_order_whatever_the_list_order() -> None:
    for user in USERS[:50]:
        assert order_for(user, NODES) == order_for(user, list(reversed(NODES)))


def test_users_spread_over_the_nodes() -> None:
    firsts = [order_for(u, NODES)[0].node_id for u in USERS]
    counts = {n.node_id: firsts.count(n.node_id) for n in NODES}
    assert min(counts.values()) > 0.7 * len(USERS) / len(NODES), counts


def test_a_dead_node_moves_only_its_users_to_their_next_node() -> None:
    dead = NODES[2]
    alive = [n for n in NODES if n != dead]
    for user in USERS:
        before = order_for(user, NODES)
        after = order_for(user, alive)
        if before[0] != dead:
            assert after[0] == before[0]  # unaffected
        else:
            assert after[0] == before[1]  # moves to its second choice
        assert after == [n for n in before if n != dead]


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=8))
def test_order_is_a_permutation(user: str, count: int) -> None:
    nodes = NODES[:count] + [Node(f"extra-{i}", f"ws://x/{i}") for i in range(max(0, count - 5))]
    assert sorted(order_for(user, nodes), key=lambda n: n.node_id) == sorted(
        nodes, key=lambda n: n.node_id)
