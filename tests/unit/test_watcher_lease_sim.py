"""Two watchers sharing one checkpoint key in the deterministic simulation
(``tests/sim/lease_sim.py``): with the lease and its fencing token the stored stream equals the
canonical chain whatever the pauses and takeovers; without it (the code before issue 12) the
simulation finds the issue's bug: `pending` records of orphaned blocks left live."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.sim.lease_sim import run_seed
from tests.sim.watcher_sim import SimFailure

GROUPS = 5
PER_GROUP = 100


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)  # a run logs every fault it meets; the verdict is enough
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("group", range(GROUPS))
def test_two_leased_watchers_store_the_canonical_chain(group: int) -> None:
    failures: list[str] = []
    takeovers = refused = 0
    for seed in range(group * PER_GROUP, (group + 1) * PER_GROUP):
        try:
            sim = run_seed(seed)
        except SimFailure as exc:
            failures.append(str(exc))
            continue
        takeovers += sim.takeovers
        refused += sim.refused
    assert not failures, "\n".join(failures[:3])
    assert takeovers > PER_GROUP and refused > 0  # the runs did exercise takeovers and fences


def test_without_the_lease_the_simulation_finds_the_orphaned_pending() -> None:
    found = []
    for seed in range(100):
        try:
            run_seed(seed, leased=False)
        except SimFailure as exc:
            found.append(str(exc))
    assert found, "two unleased watchers never broke the invariant: the simulation is blind"
    assert any("want removed" in f for f in found), found[:3]
