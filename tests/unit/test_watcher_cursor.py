"""The block cursor against a model chain that grows and reorganises at random (hypothesis)."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainpush.watcher.cursor import BlockCursor, Finalized, Header, NewBlock, Reorg
from chainpush.watcher.errors import ReorgTooDeep

_salt = itertools.count()


def make_block(parent: Header | None) -> Header:
    number = parent.number + 1 if parent else 0
    digest = hashlib.sha256(f"{number}:{next(_salt)}".encode()).hexdigest()
    return Header(number, "0x" + digest, parent.hash if parent else "0x" + "00" * 32, number * 2)


class ModelChain:
    def __init__(self) -> None:
        self.blocks = [make_block(None)]

    def mine(self, n: int) -> None:
        for _ in range(n):
            self.blocks.append(make_block(self.blocks[-1]))

    def reorg(self, depth: int, new_len: int) -> list[Header]:
        depth = min(depth, len(self.blocks) - 1)
        orphaned = self.blocks[len(self.blocks) - depth:]
        del self.blocks[len(self.blocks) - depth:]
        self.mine(new_len)
        return orphaned

    def at(self, number: int) -> Header:
        return self.blocks[number]

    @property
    def head(self) -> Header:
        return self.blocks[-1]


def follow(cursor: BlockCursor, chain: ModelChain) -> list[object]:
    """What the watcher's driver does: check the head, then fetch by ``next_number``."""
    events: list[object] = []
    cursor.receive_head(chain.head)
    events += cursor.events_received()
    steps = 0
    while cursor.next_number <= chain.head.number:
        cursor.receive_block(chain.at(cursor.next_number))
        events += cursor.events_received()
        steps += 1
        assert steps < 10_000
    return events


ops = st.lists(
    st.one_of(
        st.tuples(st.just("mine"), st.integers(1, 8)),
        st.tuples(st.just("reorg"), st.integers(1, 6), st.integers(0, 8)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(7, 12))
def test_cursor_tracks_the_canonical_chain_through_reorgs(
    operations: list[tuple[int, ...]], window: int
) -> None:
    chain = ModelChain()
    chain.mine(3)
    cursor = BlockCursor([chain.at(3)], window=window)
    live: dict[str, Header] = {chain.at(3).hash: chain.at(3)}
    finalized: set[str] = set()
    for op in operations:
        if op[0] == "mine":
            chain.mine(op[1])
        else:
            # reorgs stay inside the window, as the watcher's configuration requires
            depth = min(op[1], window - 2, len(cursor.chain) - 1)
            if depth < 1:
                continue
            # fork choice picks a chain at least as long as the one it replaces
            chain.reorg(depth, depth + op[2])
        for ev in follow(cursor, chain):
            if isinstance(ev, NewBlock):
                assert ev.header.hash not in live
                live[ev.header.hash] = ev.header
            elif isinstance(ev, Reorg):
                assert ev.depth == len(ev.orphaned) >= 1
                for h in ev.orphaned:
                    assert live.pop(h.hash) == h
                assert ev.ancestor == chain.at(ev.ancestor.number)
                assert ev.orphaned[0].number == ev.ancestor.number + 1
            elif isinstance(ev, Finalized):
                assert live.pop(ev.header.hash) == ev.header
                finalized.add(ev.header.hash)
        # the cursor holds exactly the last `window` canonical blocks (or all since the anchor)
        expect = chain.blocks[max(3, chain.head.number - window + 1):]
        assert list(cursor.chain) == expect
        assert set(live) == {h.hash for h in expect}
        canonical = {h.hash for h in chain.blocks}
        assert finalized <= canonical
        restored = BlockCursor.from_doc(cursor.to_doc())
        assert restored.chain == cursor.chain


def test_reorg_event_names_depth_orphans_and_ancestor() -> None:
    chain = ModelChain()
    chain.mine(10)
    cursor = BlockCursor(chain.blocks[:6], window=20)
    follow(cursor, chain)
    orphaned = chain.reorg(3, 4)
    events = follow(cursor, chain)
    reorgs = [e for e in events if isinstance(e, Reorg)]
    assert reorgs == [Reorg(3, tuple(orphaned), chain.at(7))]
    assert [e.header for e in events if isinstance(e, NewBlock)] == chain.blocks[8:]


def test_same_height_replacement_is_seen_from_the_head() -> None:
    chain = ModelChain()
    chain.mine(5)
    cursor = BlockCursor(chain.blocks, window=10)
    orphaned = chain.reorg(1, 1)  # anvil_reorg [1, []]: same height, new hash
    events = follow(cursor, chain)
    assert events[0] == Reorg(1, tuple(orphaned), chain.at(4))
    assert events[1] == NewBlock(chain.at(5))


def test_reorg_below_the_window_is_fatal() -> None:
    chain = ModelChain()
    chain.mine(5)
    cursor = BlockCursor(chain.blocks[3:], window=3)
    chain.reorg(3, 3)
    with pytest.raises(ReorgTooDeep, match="deeper than the window of 3 blocks"):
        follow(cursor, chain)


def test_wrong_number_is_a_caller_error() -> None:
    chain = ModelChain()
    chain.mine(3)
    cursor = BlockCursor([chain.at(1)], window=5)
    with pytest.raises(ValueError, match="expected header 2, got 3"):
        cursor.receive_block(chain.at(3))
