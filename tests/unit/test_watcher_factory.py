"""Factory-created contracts (issue 13.2): the stepper in the simulation's model world with a
factory (``DemoFactory``) whose ``PairCreated`` announces ``DemoPair`` children; the child set's
checkpoint form; config and binding errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.abi import find_abi, load_abi
from chainpush.watcher.binding import Bound, bind
from chainpush.watcher.config import Config
from chainpush.watcher.decode import ContractSpec, checksum
from chainpush.watcher.errors import ConfigError
from chainpush.watcher.factory import Child, Children, Template
from tests.sim.watcher_sim import CHAIN_ID, FAST, ROOT, Faults, Sim, directed

FACTORY_ABI = load_abi(find_abi(ROOT / "abi", "DemoFactory"))
PAIR_ABI = load_abi(find_abi(ROOT / "abi", "DemoPair"))
TOKEN_ABI = load_abi(find_abi(ROOT / "abi", "DemoToken"))
CREATED = FACTORY_ABI.event("PairCreated").topic0
SYNC = PAIR_ABI.event("Sync").topic0
FACTORY = "0x" + "fa" * 20
PAIR_A = "0x" + "a1" * 20
PAIR_B = "0x" + "b2" * 20


def word(value: int | str) -> str:
    return f"{int(value, 16) if isinstance(value, str) else value:064x}"


def with_factory(window: int = 4, *, max_addresses: int | None = None) -> Sim:
    sim = directed(window=window, k=2, finality_depth=2)
    sim.bound = Bound(
        chain_id=CHAIN_ID,
        specs=(ContractSpec("Fast", checksum(FAST), TOKEN_ABI),
               ContractSpec("Factory", checksum(FACTORY), FACTORY_ABI)),
        confirmations={"Fast": 0, "Factory": 0, "Pair": 0}, calls=(), start_block=0,
        start_blocks={"Fast": 0, "Factory": 0, "Pair": 0},
        templates=(Template(ContractSpec("Pair", "0x" + "00" * 20, PAIR_ABI), "Factory",
                            "PairCreated", "pair"),),
    )
    sim.factory = True  # check() follows the children (the test writes the factory's logs)
    sim.max_addresses = 500 if max_addresses is None else max_addresses
    sim.stepper = sim._new_stepper()
    return sim


def restart(sim: Sim) -> None:
    sim.stepper = sim._new_stepper()


def add_logs(sim: Sim, number: int, logs: list[tuple[str, list[str], str]]) -> None:
    """Append logs (address, topics, data) to canonical block ``number`` (not yet seen)."""
    b = sim.chain.blocks[sim.chain.canon[number]]
    for address, topics, data in logs:
        i = len(b.logs)
        b.logs.append({
            "address": address, "topics": topics, "data": data,
            "blockNumber": hex(number), "blockHash": b.hash,
            "transactionHash": f"0x{int(b.hash, 16) * 16 + i:064x}",
            "transactionIndex": hex(i), "logIndex": hex(i), "removed": False,
        })
    b.bloom = ""


def sync(pair: str, r0: int = 1000) -> tuple[str, list[str], str]:
    return (pair, [SYNC], "0x" + word(r0) + word(1000))


def created(pair: str, index: int = 1) -> tuple[str, list[str], str]:
    return (FACTORY, [CREATED, "0x" + word(FAST), "0x" + word(FAST)],
            "0x" + word(pair) + word(index))


def pair_records(sim: Sim, pair: str) -> list[dict[str, Any]]:
    return [sim.store.docs[m] for m in sim.store.order
            if sim.store.docs[m]["contract"] == "Pair"
            and sim.store.docs[m]["address"] == checksum(pair)]


MODES = [pytest.param(None, id="address-filter"), pytest.param(0, id="topic-only")]


@pytest.mark.parametrize("max_addresses", MODES)
def test_live_child_is_watched_from_its_creation_block(max_addresses: int | None) -> None:
    """The constructor's Sync comes before PairCreated in the creation block: recorded too;
    a Pair-shaped log of an address no factory created is not."""
    sim = with_factory(max_addresses=max_addresses)
    sim.chain.mine(2, logs_of=(FAST,))
    sim.catch_up()
    sim.chain.mine(1, logs_of=())
    add_logs(sim, 3, [sync(PAIR_A, 1), created(PAIR_A), sync(PAIR_B, 9)])
    sim.chain.mine(1, logs_of=())
    add_logs(sim, 4, [sync(PAIR_A, 2)])
    sim.catch_up()
    recs = pair_records(sim, PAIR_A)
    assert [(r["block_number"], r["args"]["reserve0"], r["status"]) for r in recs] == [
        (3, "1", "pending"), (4, "2", "pending")]
    assert recs[0]["event"] == "Sync"
    assert pair_records(sim, PAIR_B) == []
    sim.chain.mine(3, logs_of=())
    sim.catch_up()
    assert sim.messages(3, PAIR_A) == ["pending", "confirmed"]
    assert sim.checkpoints[sim.stepper.key]["children"]["final"] == {"Pair": [checksum(PAIR_A)]}
    sim.check()


@pytest.mark.parametrize("max_addresses", MODES)
def test_backfill_finds_children_created_before_the_start(max_addresses: int | None) -> None:
    sim = with_factory(max_addresses=max_addresses)
    sim.chain.mine(16, logs_of=())  # blocks up to 12 are backfilled (window 4)
    add_logs(sim, 2, [sync(PAIR_A, 1), created(PAIR_A, 1)])
    add_logs(sim, 5, [sync(PAIR_A, 2), created(PAIR_B, 2), sync(PAIR_B, 3)])
    add_logs(sim, 9, [sync(PAIR_B, 4)])
    sim.watch = type(sim.watch)(reorg_window=4, finality_depth=2, max_range=3)
    restart(sim)
    sim.catch_up()
    assert [(r["block_number"], r["status"]) for r in pair_records(sim, PAIR_A)] == [
        (2, "confirmed"), (5, "confirmed")]
    assert [(r["block_number"], r["status"]) for r in pair_records(sim, PAIR_B)] == [
        (5, "confirmed"), (9, "confirmed")]
    sim.check()


@pytest.mark.parametrize("max_addresses", MODES)
def test_orphaned_creation_block_retracts_and_unwatches_the_child(
        max_addresses: int | None) -> None:
    sim = with_factory(window=6, max_addresses=max_addresses)
    sim.chain.mine(4, logs_of=(FAST,))
    sim.catch_up()
    sim.chain.mine(2, logs_of=())
    add_logs(sim, 5, [created(PAIR_A), sync(PAIR_A, 1)])
    add_logs(sim, 6, [sync(PAIR_A, 2)])
    sim.catch_up()
    orphan = list(sim.chain.canon)
    assert sim.messages(5, PAIR_A) == ["pending"]
    assert sim.checkpoints[sim.stepper.key]["children"]["window"][0][1] == checksum(PAIR_A)
    restart(sim)  # and the child set comes back from the checkpoint
    sim.chain.fork(4, logs_of=())  # the new branch does not create PAIR_A ...
    add_logs(sim, 6, [sync(PAIR_A, 7)])  # ... yet a log appears at its address
    sim.chain.mine(1, logs_of=())
    sim.catch_up()
    assert sim.messages(5, PAIR_A, branch=orphan) == ["pending", "removed"]
    assert sim.messages(6, PAIR_A, branch=orphan) == ["pending", "removed"]
    # nothing of the new branch: the log at the un-discovered address is not watched
    assert [r for r in pair_records(sim, PAIR_A) if r["block_hash"] in sim.chain.canon] == []
    doc = sim.checkpoints[sim.stepper.key]["children"]
    assert doc == {"final": {}, "window": []}
    sim.check()


def test_child_recreated_in_the_replacing_block_is_discovered_again() -> None:
    sim = with_factory(window=6)
    sim.chain.mine(4, logs_of=(FAST,))
    sim.catch_up()
    sim.chain.mine(1, logs_of=())
    add_logs(sim, 5, [created(PAIR_A), sync(PAIR_A, 1)])
    sim.catch_up()
    sim.chain.fork(4, logs_of=())
    add_logs(sim, 5, [sync(PAIR_A, 5), created(PAIR_A)])
    sim.chain.mine(1, logs_of=())
    add_logs(sim, 6, [sync(PAIR_A, 6)])
    sim.catch_up()
    live = [(r["block_number"], r["args"]["reserve0"]) for r in pair_records(sim, PAIR_A)
            if r["block_hash"] in sim.chain.canon]
    assert live == [(5, "5"), (6, "6")]
    sim.check()


def test_catch_up_of_a_template_added_later() -> None:
    """The checkpoint covers Fast and Factory; Pair is added: its children are discovered from
    the factory's logs (the factory's records are not emitted again)."""
    sim = with_factory()
    full = sim.bound
    sim.bound = full.only({"Fast", "Factory"})
    restart(sim)
    sim.chain.mine(10, logs_of=())
    add_logs(sim, 3, [created(PAIR_A), sync(PAIR_A, 1)])
    add_logs(sim, 9, [sync(PAIR_A, 2)])
    sim.catch_up()
    factory_before = [m for m in sim.store.order if sim.store.docs[m]["contract"] == "Factory"]
    assert pair_records(sim, PAIR_A) == []
    sim.bound = full
    restart(sim)
    sim.chain.mine(1, logs_of=())
    add_logs(sim, 11, [sync(PAIR_A, 3)])
    sim.catch_up()
    assert [r["block_number"] for r in pair_records(sim, PAIR_A)
            if r["status"] != "removed"][:3] == [3, 9, 11]
    assert [m for m in sim.store.order
            if sim.store.docs[m]["contract"] == "Factory"] == factory_before
    sim.check()


def test_children_round_trip_and_compaction() -> None:
    c = Children()
    assert c.add(Child("Pair", checksum(PAIR_A), 5, "0xaa"))
    assert not c.add(Child("Pair", checksum(PAIR_A), 6, "0xbb"))  # first creation wins
    c.add(Child("Pair", checksum(PAIR_B), 7, "0xcc"))
    c.finalize(5)
    doc = c.to_doc()
    assert doc == {"final": {"Pair": [checksum(PAIR_A)]},
                   "window": [["Pair", checksum(PAIR_B), 7, "0xcc"]]}
    back = Children.from_doc(doc, ["Pair"])
    assert back.to_doc() == doc and back.created_at(PAIR_B) == 7 and back.created_at(PAIR_A) == 0
    assert [x.address for x in back.orphan(["0xcc"])] == [checksum(PAIR_B)]
    assert back.orphan(["0xaa"]) == []  # final: no reorg undoes it
    assert len(Children.from_doc(doc, ["Other"])) == 0


# --- configuration ---------------------------------------------------------------------------

def config(tmp_path: Path, pair: dict[str, Any], factory: dict[str, Any] | None = None) -> Config:
    contracts = [{"name": "Factory", "abi": "DemoFactory", "address": "0x" + "fa" * 20,
                  **(factory or {})}, {"name": "Pair", "abi": "DemoPair", **pair}]
    return Config.from_mapping({"watch": {"abi_dir": str(ROOT / "abi")},
                                "contracts": contracts}, source="t.toml", base=tmp_path)


FACTORY_KEY = {"contract": "Factory", "event": "PairCreated", "arg": "pair"}


def test_bind_a_template(tmp_path: Path) -> None:
    bound = bind(config(tmp_path, {"factory": FACTORY_KEY}), 31337)
    assert [s.name for s in bound.specs] == ["Factory"]
    (t,) = bound.templates
    assert (t.name, t.factory, t.event, t.arg) == ("Pair", "Factory", "PairCreated", "pair")
    assert bound.coverage()[1]["address"] == (
        f"factory:{checksum('0x' + 'fa' * 20)}:PairCreated:pair")
    assert bound.start_blocks["Pair"] == bound.start_blocks["Factory"]


@pytest.mark.parametrize(("pair", "factory", "message"), [
    ({"factory": {**FACTORY_KEY, "contract": "Nope"}}, None,
     "Pair.factory.contract: no [[contracts]] named 'Nope'"),
    ({"factory": {**FACTORY_KEY, "event": "PairMade"}}, None,
     "Pair.factory.event: no event 'PairMade'"),
    ({"factory": {**FACTORY_KEY, "arg": "pairs"}}, None,
     "Pair.factory.arg: event PairCreated(address,address,address,uint256) has no argument"),
    ({"factory": {**FACTORY_KEY, "arg": "index"}}, None,
     "Pair.factory.arg: 'index' of PairCreated(address,address,address,uint256) is a uint256, "
     "not an address"),
    ({"factory": FACTORY_KEY, "address": "0x" + "11" * 20}, None,
     "Pair: address and factory exclude each other"),
    ({"factory": {**FACTORY_KEY, "zz": 1}}, None,
     "unknown key(s) zz in [[contracts]] Pair.factory"),
    ({"factory": "Factory"}, None, "Pair.factory must be a table"),
    ({"factory": {"contract": "Factory", "event": "PairCreated"}}, None,
     "Pair.factory.arg must be a non-empty string"),
    ({"factory": FACTORY_KEY}, {"events": ["Other"]},
     "Pair.factory.event: 'PairCreated' is not selected by [[contracts]] Factory.events"),
    ({"factory": FACTORY_KEY, "state": [{"function": "reserve0"}]}, None,
     "Pair.state: not supported on a factory template"),
])
def test_factory_config_errors(tmp_path: Path, pair: dict[str, Any],
                               factory: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        bind(config(tmp_path, pair, factory), 31337)
    assert message in str(info.value)
    assert str(info.value).startswith("t.toml")


@pytest.mark.parametrize("max_addresses", MODES)
def test_a_provider_answering_empty_logs_for_children_is_caught_by_the_bloom(
        max_addresses: int | None) -> None:
    """Found by the simulation: ``eth_getLogs`` by hash answers ``[]`` (a lie) for the blocks
    holding the factory's event and a child's logs; the blocks' blooms hold their bits, so the
    receipts decide (discovering the child there too)."""
    sim = with_factory(max_addresses=max_addresses)
    sim.chain.mine(2, logs_of=(FAST,))
    sim.catch_up()
    sim.faults = replace(Faults.none(), lie=1.0)  # every non-empty answer by hash is []
    sim.chain.mine(1, logs_of=())
    add_logs(sim, 3, [sync(PAIR_A, 1), created(PAIR_A), sync(PAIR_B, 9)])
    sim.chain.mine(1, logs_of=())
    add_logs(sim, 4, [sync(PAIR_A, 2)])
    sim.catch_up()
    assert [(r["block_number"], r["args"]["reserve0"]) for r in pair_records(sim, PAIR_A)] == [
        (3, "1"), (4, "2")]
    assert pair_records(sim, PAIR_B) == []
    sim.check()


def test_a_configured_contract_announced_as_a_child_stays_that_contract() -> None:
    sim = with_factory()
    sim.chain.mine(2, logs_of=(FAST,))
    sim.catch_up()
    sim.chain.mine(1, logs_of=(FAST,))
    add_logs(sim, 3, [created(FAST)])
    sim.chain.mine(1, logs_of=(FAST,))
    sim.catch_up()
    assert all(d["contract"] != "Pair" for d in sim.store.docs.values())
    assert sim.checkpoints[sim.stepper.key]["children"] == {"final": {}, "window": []}
    assert sim.messages(4, FAST) == ["pending"]
    sim.check()
