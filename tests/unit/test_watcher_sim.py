"""The deterministic simulation of the watcher (``tests/sim/watcher_sim.py``) in CI: 2,000 seeds,
in 20 groups of 100. A failing seed is reported with the command that replays it
(``scripts/simulate.sh --seed S``); ``scripts/simulate.sh --seeds N`` runs more."""

from __future__ import annotations

import logging

import pytest

from tests.sim.watcher_sim import SimFailure, crash_everywhere, run_seed

GROUPS = 20
PER_GROUP = 100


@pytest.mark.parametrize("group", range(GROUPS))
def test_stored_stream_equals_the_canonical_chain(group: int) -> None:
    failures: list[str] = []
    logging.disable(logging.CRITICAL)  # a run logs every fault it meets; the verdict is enough
    try:
        for seed in range(group * PER_GROUP, (group + 1) * PER_GROUP):
            try:
                run_seed(seed)
            except SimFailure as exc:
                failures.append(str(exc))
    finally:
        logging.disable(logging.NOTSET)
    assert not failures, "\n".join(failures[:3])


@pytest.mark.parametrize("seed", [7, 8, 9])  # 9: a factory seed
def test_a_crash_before_or_after_any_action(seed: int) -> None:
    """The same run crashed once at each action boundary in turn, each crash followed by
    downtime (blocks, forks): the stored stream still equals the canonical chain."""
    logging.disable(logging.CRITICAL)
    try:
        failures = crash_everywhere(seed, actions=150)
    finally:
        logging.disable(logging.NOTSET)
    assert not failures, "\n".join(failures[:3])
