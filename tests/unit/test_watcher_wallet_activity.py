"""Wallet activity in the stepper (``[watch] wallet_activity``, docs/watcher.md §Wallet
activity), directed cases in the simulation's model world (the random runs with wallet activity
are part of ``test_watcher_sim.py``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.config import Config
from chainpush.watcher.decode import checksum
from chainpush.watcher.errors import ConfigError, RPCError
from chainpush.watcher.stepper import Action, Call, Interested, Save
from tests.sim.watcher_sim import FAST, OTHER, RECIPIENT, SENDER, SLOW, Sim, directed

TOKEN = {"standard": "erc20", "symbol": "OTH", "decimals": 18}


def wallet_sim(*, wallets: set[str] | None = None, window: int = 4) -> Sim:
    """A quiet world whose watcher has ``wallet_activity = ["erc20"]``; ``wallets`` have a
    subscriber (default: the sender of every transfer)."""
    sim = directed(window=window, k=2, finality_depth=2)
    sim.watch = replace(sim.watch, wallet_activity=("erc20",))
    sim.wallet_activity = True
    sim.interest["user:"] = {checksum(w) for w in (wallets if wallets is not None else {SENDER})}
    sim.stepper = sim._new_stepper()
    return sim


def erc20(sim: Sim, block: int, *, branch: list[str] | None = None) -> list[dict[str, Any]]:
    """The stored ``erc20`` messages of the unwatched contract's first log in ``block``."""
    b = sim.chain.blocks[(branch or sim.chain.canon)[block]]
    lg = next(lg for lg in b.logs if lg["address"] == OTHER)
    rid = f"31337:{b.hash}:{int(lg['logIndex'], 16)}:erc20"
    return [sim.store.docs[m] for m in sim.store.order if sim.store.docs[m]["id"] == rid]


def statuses(messages: list[dict[str, Any]]) -> list[str]:
    return [m["status"] for m in messages]


def test_a_transfer_from_a_subscribed_wallet_is_recorded_with_its_token() -> None:
    sim = wallet_sim()
    sim.chain.mine(6, logs_of=(OTHER,))
    sim.catch_up()
    got = erc20(sim, 6)
    assert statuses(got) == ["pending"]
    assert statuses(erc20(sim, 3)) == ["pending", "confirmed"]
    rec = got[0]
    assert rec["contract"] == "erc20" and rec["address"] == checksum(OTHER)
    assert rec["event"] == "Transfer" and rec["args"]["from"] == checksum(SENDER)
    assert rec["address_paths"] == ["from", "to"]  # routed to user:<from> and user:<to>
    assert rec["token"] == TOKEN
    sim.check()


def test_the_token_metadata_is_read_once() -> None:
    sim = wallet_sim()
    calls: list[str] = []

    def inject(action: Action) -> None:
        if isinstance(action, Call):
            calls.extend(p[0]["data"] for m, p in action.calls if m == "eth_call")

    sim.inject = inject
    sim.chain.mine(5, logs_of=(OTHER, OTHER))
    sim.catch_up()
    sim.stepper = sim._new_stepper()  # a restart: the cache comes back from the checkpoint
    sim.chain.mine(3, logs_of=(OTHER,))
    sim.catch_up()
    assert sorted(calls) == ["0x313ce567", "0x95d89b41"]  # decimals(), symbol(): once each
    assert all(m["token"] == TOKEN for m in sim.store.docs.values())
    assert sim.checkpoints[sim.stepper.key]["tokens"] == [[checksum(OTHER), "erc20", "OTH", 18]]


def test_a_wallet_without_a_subscriber_gets_nothing() -> None:
    sim = wallet_sim(wallets={"0x" + "77" * 20})
    sim.chain.mine(5, logs_of=(OTHER,))
    sim.catch_up()
    assert sim.store.docs == {}


def test_a_block_whose_bloom_has_no_wallet_transfer_is_not_asked() -> None:
    sim = wallet_sim(wallets={"0x" + "77" * 20})
    asked: list[str] = []

    def inject(action: Action) -> None:
        if isinstance(action, Call):
            asked.extend(p[0]["blockHash"] for m, p in action.calls
                         if m == "eth_getLogs" and "address" not in p[0])

    sim.inject = inject
    sim.chain.mine(5, logs_of=(OTHER,))
    sim.catch_up()
    assert asked == []
    sim.interest["user:"] = {checksum(SENDER)}
    sim.chain.mine(1, logs_of=(OTHER,))
    sim.catch_up()
    assert set(asked) == {sim.chain.canon[6]}


def test_a_transfer_of_a_configured_contract_is_recorded_once() -> None:
    sim = wallet_sim()
    sim.chain.mine(5, logs_of=(FAST, OTHER))
    sim.catch_up()
    contracts = sorted({d["contract"] for d in sim.store.docs.values()})
    assert contracts == ["Fast", "erc20"]
    assert all(d["address"] == checksum(OTHER) for d in sim.store.docs.values()
               if d["contract"] == "erc20")
    assert sim.messages(5, FAST) == ["pending"]
    sim.check()


def test_a_reorg_retracts_a_wallet_activity_record() -> None:
    sim = wallet_sim()
    sim.chain.mine(6, logs_of=(OTHER,))
    sim.catch_up()
    orphan = list(sim.chain.canon)
    sim.chain.fork(5, logs_of=(OTHER,))
    sim.catch_up()
    assert statuses(erc20(sim, 6, branch=orphan)) == ["pending", "removed"]
    assert statuses(erc20(sim, 6)) == ["pending"]
    sim.check()


def test_activity_is_recorded_from_the_first_subscription_on() -> None:
    sim = wallet_sim(wallets=set())
    sim.chain.mine(3, logs_of=(OTHER,))
    sim.catch_up()
    sim.interest["user:"] = {checksum(SENDER)}
    sim.chain.mine(2, logs_of=(OTHER,))
    sim.catch_up()
    assert [statuses(erc20(sim, n)) for n in range(1, 6)] == [[], [], [], ["pending"],
                                                               ["pending"]]


def test_redis_away_keeps_the_last_set_across_a_restart() -> None:
    sim = wallet_sim()
    sim.chain.mine(2, logs_of=(OTHER,))
    sim.catch_up()
    assert sim.checkpoints[sim.stepper.key]["wallets"] == [checksum(SENDER)]
    sim.interest = {}  # (unused below: Redis is away)
    original = sim._perform

    def perform(action: Action, f: Any) -> Any:
        return None if isinstance(action, Interested) else original(action, f)

    sim._perform = perform  # type: ignore[method-assign]
    sim.stepper = sim._new_stepper()  # restarted while Redis is away
    sim.chain.mine(2, logs_of=(OTHER,))
    sim.catch_up()
    assert statuses(erc20(sim, 4)) == ["pending"]


def test_backfill_records_wallet_activity_confirmed() -> None:
    """Down while more than the window was mined: the blocks are read by ranges."""
    sim = wallet_sim()
    sim.chain.mine(1, logs_of=(OTHER,))
    sim.catch_up()
    sim.stepper = sim._new_stepper()
    sim.chain.mine(12, logs_of=(OTHER,))
    ranges: list[dict[str, object]] = []

    def inject(action: Action) -> None:
        flt = getattr(action, "log_filter", None)
        if flt is not None and "address" not in flt:
            ranges.append(flt)

    sim.inject = inject
    sim.catch_up()
    assert ranges  # the wallet filters, by ranges
    assert statuses(erc20(sim, 5)) == ["confirmed"]
    assert statuses(erc20(sim, 13)) == ["pending"]
    sim.check()


def test_many_wallets_are_fetched_by_topic_and_selected_here() -> None:
    sim = wallet_sim(wallets={SENDER, RECIPIENT, "0x" + "77" * 20})
    sim.stepper.max_filter_addresses = 2
    seen: list[Any] = []

    def inject(action: Action) -> None:
        if isinstance(action, Call):
            seen.extend(p[0]["topics"] for m, p in action.calls
                        if m == "eth_getLogs" and "address" not in p[0])

    sim.inject = inject
    sim.chain.mine(4, logs_of=(FAST, OTHER))
    sim.catch_up()
    assert seen and all(len(t) == 1 for t in seen)  # topic0 only
    assert statuses(erc20(sim, 4)) == ["pending"]
    assert {d["contract"] for d in sim.store.docs.values()} == {"Fast", "erc20"}
    sim.check()


def test_a_reverting_metadata_call_gives_null_fields() -> None:
    sim = wallet_sim()
    original = sim._answer

    def answer(method: str, params: list[Any], f: Any) -> Any:
        if method == "eth_call":
            raise RPCError("execution reverted", method=method)
        return original(method, params, f)

    sim._answer = answer  # type: ignore[method-assign]
    sim.chain.mine(2, logs_of=(OTHER,))
    sim.catch_up()
    assert erc20(sim, 2)[0]["token"] == {"standard": "erc20", "symbol": None,
                                         "decimals": None}


def test_the_checkpoint_holds_the_wallets_in_force_with_each_step() -> None:
    sim = wallet_sim()
    saved: list[list[str]] = []

    def inject(action: Action) -> None:
        if isinstance(action, Save):
            saved.append(action.state["wallets"])

    sim.inject = inject
    sim.chain.mine(1, logs_of=(OTHER,))
    sim.catch_up()
    sim.interest["user:"] = {checksum(SENDER), checksum(RECIPIENT)}
    sim.chain.mine(1, logs_of=(OTHER,))
    sim.catch_up()
    assert saved[0] == [checksum(SENDER)]
    assert saved[-1] == sorted([checksum(SENDER), checksum(RECIPIENT)])


def test_metadata_missing_at_the_block_is_read_at_latest() -> None:
    """A node without the state of the record's block (non-archive, old backfill): the call is
    asked again at ``latest``."""
    sim = wallet_sim()
    original = sim._answer
    asked: list[object] = []

    def answer(method: str, params: list[Any], f: Any) -> Any:
        if method == "eth_call":
            asked.append(params[1])
            if params[1] != "latest":
                raise RPCError("missing trie node", method=method)
            return original(method, [params[0], {"blockHash": sim.chain.canon[-1]}], f)
        return original(method, params, f)

    sim._answer = answer  # type: ignore[method-assign]
    sim.chain.mine(2, logs_of=(OTHER,))
    sim.catch_up()
    assert erc20(sim, 2)[0]["token"] == TOKEN
    assert asked.count("latest") == 2  # symbol() and decimals(), once each


# --- [watch] wallet_activity -------------------------------------------------------------------

def _config(watch: dict[str, Any], name: str = "Token") -> Config:
    return Config.from_mapping(
        {"watch": watch, "contracts": [{"name": name, "address": "0x" + "12" * 20}]},
        source="t.toml", base=Path("/"))


def test_the_key_takes_a_list_of_the_standards() -> None:
    assert _config({"wallet_activity": ["erc721", "erc20"]}).watch.wallet_activity == (
        "erc721", "erc20")
    assert _config({}).watch.wallet_activity == ()


@pytest.mark.parametrize(("value", "message"), [
    (["erc20", "erc777"], "t.toml: [watch] wallet_activity: unknown standard(s) 'erc777' "
                          "(expected some of: erc20, erc721, erc1155)"),
    ("erc20", "t.toml: [watch] wallet_activity must be a list of some of 'erc20', 'erc721', "
              "'erc1155', got 'erc20'"),
    (["erc20", "erc20"], "t.toml: [watch] wallet_activity: a standard is listed twice"),
])
def test_a_bad_value_is_refused_naming_the_key_and_the_choices(value: object,
                                                               message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config({"wallet_activity": value})
    assert str(info.value).startswith(message)


def test_a_contract_named_like_a_standard_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[\[contracts\]\] name 'erc20' is taken by "
                                          r"\[watch\] wallet_activity"):
        _config({"wallet_activity": ["erc20"]}, name="erc20")
    # reserved even where this file does not turn it on: another chain's watcher may
    with pytest.raises(ConfigError, match="on every chain of the deployment"):
        _config({"wallet_activity": ["erc721"]}, name="erc20")
    with pytest.raises(ConfigError, match="name 'erc1155' is taken"):
        _config({}, name="erc1155")


def test_the_token_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airdropped spam tokens must not grow the checkpoint for ever: the oldest leave."""
    monkeypatch.setattr("chainpush.watcher.stepper.MAX_TOKENS", 1)
    sim = wallet_sim()
    sim.bound = replace(sim.bound.only({"Fast"}), confirmations={"Fast": 0})  # Slow: any token
    sim.stepper = sim._new_stepper()
    sim.chain.mine(1, logs_of=(OTHER,))
    sim.chain.mine(1, logs_of=(SLOW,))
    sim.catch_up()
    assert sim.checkpoints[sim.stepper.key]["tokens"] == [[checksum(SLOW), "erc20", "OTH", 18]]
    assert {d["address"] for d in sim.store.docs.values()} == {checksum(OTHER), checksum(SLOW)}
