"""The lease decisions (``watcher.lease.LeaseTimer``) with a fake clock, and the fencing of
checkpoint writes (``MemoryCheckpoints``, the same rules as ``MongoCheckpoints``)."""

from __future__ import annotations

import pytest

from chainpush.watcher.checkpoint import LeaseLost, MemoryCheckpoints
from chainpush.watcher.config import WatchConfig
from chainpush.watcher.errors import ConfigError
from chainpush.watcher.lease import LeaseDoc, LeaseTimer, Take, Wait

LEASE_S, RENEW_S = 3.0, 1.0


def timer(holder: str = "b") -> LeaseTimer:
    return LeaseTimer(holder, lease_s=LEASE_S, renew_s=RENEW_S)


def test_no_document_is_taken_as_generation_1() -> None:
    assert timer().observe(None, 0.0) == Take(None, 1)


def test_a_renewed_lease_is_never_taken_over() -> None:
    t = timer()
    now = 0.0
    for beat in range(20):  # the leader renews every second for 20 s
        decision = t.observe(LeaseDoc("a", 1, beat), now)
        assert isinstance(decision, Wait) and decision.delay_s <= RENEW_S / 2
        now += RENEW_S
    assert t.generation is None


def test_an_unrenewed_lease_is_taken_after_lease_s_on_the_standbys_clock() -> None:
    t = timer()
    doc = LeaseDoc("a", 4, 17)
    assert isinstance(t.observe(doc, 100.0), Wait)  # first seen at 100: the clock starts
    assert isinstance(t.observe(doc, 102.9), Wait)
    last = t.observe(doc, 102.9)
    assert isinstance(last, Wait) and last.delay_s == pytest.approx(0.1)  # wakes at expiry
    assert t.observe(doc, 103.0) == Take(doc, 5)


def test_a_renewal_seen_restarts_the_standbys_clock() -> None:
    t = timer()
    t.observe(LeaseDoc("a", 1, 0), 0.0)
    t.observe(LeaseDoc("a", 1, 1), 2.9)  # renewed just before expiry
    assert isinstance(t.observe(LeaseDoc("a", 1, 1), 5.8), Wait)
    assert t.observe(LeaseDoc("a", 1, 1), 5.9) == Take(LeaseDoc("a", 1, 1), 2)


def test_a_new_holder_restarts_the_clock_too() -> None:
    t = timer("c")
    t.observe(LeaseDoc("a", 1, 5), 0.0)
    assert isinstance(t.observe(LeaseDoc("b", 2, 0), 2.5), Wait)  # b took over meanwhile
    assert isinstance(t.observe(LeaseDoc("b", 2, 0), 5.0), Wait)
    assert t.observe(LeaseDoc("b", 2, 0), 5.5) == Take(LeaseDoc("b", 2, 0), 3)


def test_a_released_lease_or_our_own_old_one_is_taken_at_once() -> None:
    t = timer("b")
    assert t.observe(LeaseDoc(None, 7, 3), 0.0) == Take(LeaseDoc(None, 7, 3), 8)
    assert t.observe(LeaseDoc("b", 7, 3), 0.0) == Take(LeaseDoc("b", 7, 3), 8)


def test_the_leader_holds_until_lease_s_after_it_sent_its_last_renewal() -> None:
    t = timer("a")
    t.acquired(1, sent_at=10.0)
    assert t.valid(12.9) and not t.valid(13.0)
    t.renewed(sent_at=12.0)
    assert t.valid(14.9) and not t.valid(15.0)
    t.renewed(sent_at=11.0)  # a late answer to an older renewal does not shorten it
    assert t.valid(14.9)
    t.lost()
    assert t.generation is None and not t.valid(12.0)


def test_a_leader_believes_it_leads_only_while_no_standby_may_take_over() -> None:
    """Same clock rate, any schedule: the standby starts counting no earlier than the leader
    sent the renewal it saw, so the leader's validity ends before the takeover."""
    leader, standby = timer("a"), timer("b")
    leader.acquired(1, sent_at=0.0)
    beat, takeover = 0, None
    seen_at_sent: dict[int, float] = {0: 0.0}
    now = 0.25
    while takeover is None and now < 30:
        if now < 7.0 and now % RENEW_S < 0.25:  # the leader renews until it dies at 7 s
            beat += 1
            seen_at_sent[beat] = now
            leader.renewed(sent_at=now)
        decision = standby.observe(LeaseDoc("a", 1, beat), now + 0.1)  # seen a bit later
        if isinstance(decision, Take):
            takeover = now + 0.1
        now += 0.25
    assert takeover is not None and not leader.valid(takeover)
    assert takeover - 7.0 <= LEASE_S + RENEW_S  # within lease_s + renew_s of the death


def test_the_timer_refuses_a_renewal_interval_without_margin() -> None:
    with pytest.raises(ValueError, match="renew_s must be > 0 and at most lease_s / 2"):
        LeaseTimer("a", lease_s=3.0, renew_s=2.0)


@pytest.mark.parametrize(("lease_s", "renew_s", "message"), [
    (0.0, 1.0, "lease_s must be > 0, got 0.0"),
    (3.0, 1.6, r"lease_renew_s must be > 0 and at most \[watch\] lease_s / 2 \(1.5\), got 1.6"),
    (3.0, 0.0, "lease_renew_s must be > 0"),
])
def test_config_names_the_lease_setting(lease_s: float, renew_s: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WatchConfig(lease_s=lease_s, lease_renew_s=renew_s)


def test_config_lease_defaults_hold_the_five_second_takeover() -> None:
    watch = WatchConfig()
    assert watch.lease_s + watch.lease_renew_s < 5.0
    with pytest.raises(ConfigError, match="metrics_port must be 0 … 65535"):
        WatchConfig(metrics_port=70000)


STATE = {"block_number": 5, "cursor": {"chain": []}}


async def test_a_superseded_leaders_writes_match_nothing() -> None:
    store = MemoryCheckpoints()
    assert await store.load("1:w", fence=1) is None  # a first run: fenced, nothing yet
    await store.propose("1:w", STATE, [{"id": "r"}], fence=1)
    await store.save("1:w", STATE, fence=1)
    # generation 2 takes over: its load fences the checkpoint and reads what 1 wrote
    doc = await store.load("1:w", fence=2)
    assert doc is not None and doc["block_number"] == 5 and doc["fence"] == 2
    with pytest.raises(LeaseLost, match=r"proposal of checkpoint 1:w refused \(fencing\): "
                                        "lease generation 1 superseded by 2") as info:
        await store.propose("1:w", {**STATE, "block_number": 6}, [{"id": "s"}], fence=1)
    assert info.value.fenced
    with pytest.raises(LeaseLost, match="writing of checkpoint 1:w refused"):
        await store.save("1:w", {**STATE, "block_number": 6}, fence=1)
    with pytest.raises(LeaseLost, match="handing a batch of checkpoint 1:w refused"):
        await store.check("1:w", fence=1)
    with pytest.raises(LeaseLost, match="reading of checkpoint 1:w refused"):
        await store.load("1:w", fence=1)
    await store.check("1:w", fence=2)
    assert store.docs["1:w"]["block_number"] == 5 and store.docs["1:w"]["proposed"] is None


async def test_a_proposal_written_before_the_takeover_is_what_the_new_leader_completes(
) -> None:
    store = MemoryCheckpoints()
    await store.load("1:w", fence=1)
    await store.save("1:w", STATE, fence=1)
    await store.propose("1:w", {**STATE, "block_number": 6}, [{"id": "r"}], fence=1)
    doc = await store.load("1:w", fence=2)  # generation 1 paused between propose and save
    assert doc is not None and doc["proposed"]["block_number"] == 6
    with pytest.raises(LeaseLost):
        await store.save("1:w", {**STATE, "block_number": 6}, fence=1)


def test_a_lease_taken_after_a_refusal_goes_above_the_checkpoints_fence() -> None:
    """The lease document was deleted (or restored) while the checkpoint kept fence 7: the
    next generation must be 8, not 1, or every write would be refused forever."""
    t = timer("b")
    t.floor = 7
    assert t.observe(None, 0.0) == Take(None, 8)
    assert t.observe(LeaseDoc("b", 2, 0), 0.0) == Take(LeaseDoc("b", 2, 0), 8)
    assert t.observe(LeaseDoc("b", 9, 0), 0.0) == Take(LeaseDoc("b", 9, 0), 10)


async def test_a_refused_write_names_the_checkpoints_fence() -> None:
    store = MemoryCheckpoints()
    await store.load("1:w", fence=7)
    with pytest.raises(LeaseLost) as info:
        await store.load("1:w", fence=1)
    assert info.value.fence_seen == 7


def test_a_taken_watch_metrics_port_is_a_config_error_naming_the_key() -> None:
    import asyncio
    import socket

    from chainpush.watcher.cli import serve_metrics

    class Quiet:
        def render_metrics(self) -> str:
            return ""

        def health(self) -> dict[str, object]:
            return {}

    async def main(port: int) -> None:
        async with serve_metrics(Quiet(), port):
            raise AssertionError("served on a taken port")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^\[watch\] metrics_port {busy}: cannot listen"):
            asyncio.run(main(busy))
