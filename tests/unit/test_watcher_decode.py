"""The log decoder against web3.py's own ``process_log``, on generated and recorded logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_abi.tools import get_abi_strategy
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3

from chainpush.watcher.abi import EventABI, Param, find_abi, load_abi, parse_abi
from chainpush.watcher.decode import ContractSpec, LogDecoder, RawLog
from chainpush.watcher.errors import DecodeError, InvalidABI

DATA = Path(__file__).resolve().parent.parent / "data" / "watcher"
ADDR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def inp(name: str, typ: str, indexed: bool = False, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": typ, "indexed": indexed, **kw}


TEST_ABI: list[dict[str, Any]] = [
    {"type": "event", "name": "Transfer", "anonymous": False, "inputs": [
        inp("from", "address", True), inp("to", "address", True), inp("value", "uint256")]},
    {"type": "event", "name": "Approval", "anonymous": False, "inputs": [
        inp("owner", "address", True), inp("spender", "address", True), inp("value", "uint256")]},
    {"type": "event", "name": "Message", "anonymous": False, "inputs": [
        inp("from", "address", True), inp("to", "address", True), inp("text", "string"),
        inp("data", "bytes")]},
    {"type": "event", "name": "Batch", "anonymous": False, "inputs": [
        inp("operator", "address", True), inp("ids", "uint256[]"),
        inp("recipients", "address[]"), inp("note", "string")]},
    {"type": "event", "name": "Tagged", "anonymous": False, "inputs": [
        inp("tag", "bytes32", True), inp("label", "string", True), inp("delta", "int256"),
        inp("flag", "bool"), inp("sig", "bytes4")]},
    {"type": "event", "name": "Scalars", "anonymous": False, "inputs": [
        inp("a", "uint8", True), inp("b", "int16", True), inp("c", "bytes1"),
        inp("d", "int64"), inp("e", "uint128"), inp("f", "bool", True)]},
    {"type": "event", "name": "Nested", "anonymous": False, "inputs": [
        inp("id", "uint256", True),
        inp("order", "tuple", components=[inp("maker", "address"), inp("amount", "uint256"),
                                          inp("memo", "string")]),
        inp("legs", "tuple[]", components=[inp("qty", "int32"), inp("ok", "bool")]),
        inp("grid", "uint16[2][]"), inp("pair", "address[2]")]},
]
ERC721_TRANSFER = {"type": "event", "name": "Transfer", "anonymous": False, "inputs": [
    inp("from", "address", True), inp("to", "address", True), inp("tokenId", "uint256", True)]}

W3 = Web3()
CONTRACT = W3.eth.contract(abi=TEST_ABI)
PARSED = parse_abi(TEST_ABI, "test-abi")


def decoder(
    events: frozenset[str] | None = None, **filters: dict[str, frozenset[Any]]
) -> LogDecoder:
    return LogDecoder(31337, [ContractSpec("Demo", ADDR, PARSED, events, filters)])


def normalize(value: Any, param: Param) -> Any:
    """web3's decoded value of ``param`` in the JSON-safe form of docs/seams.md §1."""
    from eth_abi.grammar import parse

    t = parse(param.type)
    return _norm(value, t, param.components)


def _norm(value: Any, t: Any, comps: tuple[Param, ...] | None) -> Any:
    if t.arrlist:
        return [_norm(v, t.item_type, comps) for v in value]
    if t.is_dynamic is not None and hasattr(t, "components"):
        assert comps is not None
        return {c.name: _norm(value[c.name], ct, c.components)
                for c, ct in zip(comps, t.components, strict=True)}
    if t.base in ("uint", "int"):
        return str(value)
    if t.base == "bytes":
        return "0x" + bytes(value).hex()
    return value


def web3_args(ev: EventABI, raw: RawLog) -> dict[str, Any]:
    log = {
        "address": raw["address"], "topics": [HexBytes(t) for t in raw["topics"]],
        "data": HexBytes(raw["data"]), "blockNumber": int(raw["blockNumber"], 16),
        "blockHash": HexBytes(raw["blockHash"]),
        "transactionHash": HexBytes(raw["transactionHash"]),
        "logIndex": int(raw["logIndex"], 16), "transactionIndex": 0,
    }
    got = CONTRACT.events[ev.name]().process_log(log)["args"]
    out: dict[str, Any] = {}
    for p in ev.inputs:
        if p.indexed and (p.type in ("string", "bytes") or "[" in p.type or "(" in p.type):
            out[p.name] = "0x" + bytes(got[p.name]).hex()
        else:
            out[p.name] = normalize(got[p.name], p)
    return out


def topic_of(typ: str, value: Any) -> str:
    if typ == "string":
        return "0x" + keccak(text=value).hex()
    return "0x" + encode([typ], [value]).hex()


def raw_log(ev: EventABI, values: list[Any]) -> RawLog:
    topics = [ev.topic0]
    data_types, data_values = [], []
    for p, v in zip(ev.inputs, values, strict=True):
        if p.indexed:
            topics.append(topic_of(p.type, v))
        else:
            data_types.append(p.type)
            data_values.append(v)
    return {
        "address": ADDR.lower(), "topics": topics,
        "data": "0x" + encode(data_types, data_values).hex(),
        "blockNumber": "0x7b", "blockHash": "0x" + "ab" * 32, "blockTimestamp": "0x6553f100",
        "transactionHash": "0x" + "cd" * 32, "logIndex": "0x7", "transactionIndex": "0x0",
        "removed": False,
    }


@st.composite
def event_logs(draw: st.DrawFn) -> tuple[EventABI, RawLog]:
    ev = draw(st.sampled_from(PARSED.events))
    values = [draw(get_abi_strategy(p.type)) for p in ev.inputs]
    return ev, raw_log(ev, values)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(event_logs())
def test_decoded_args_equal_web3_process_log(case: tuple[EventABI, RawLog]) -> None:
    ev, log = case
    rec = decoder().decode(log)
    assert rec is not None
    assert rec.event == ev.name
    assert rec.args == web3_args(ev, log)
    json.dumps(rec.to_dict())  # JSON-safe


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(PARSED.events), st.binary(max_size=300),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
)
def test_any_bytes_decode_to_a_value_or_decode_error(
    ev: EventABI, data: bytes, topics: list[bytes]
) -> None:
    raw: RawLog = {
        "address": ADDR, "topics": [ev.topic0] + ["0x" + t.hex() for t in topics],
        "data": "0x" + data.hex(),
        "blockNumber": "0x1", "blockHash": "0x" + "00" * 32, "blockTimestamp": "0x1",
        "transactionHash": "0x" + "11" * 32, "logIndex": "0x0",
    }
    try:
        rec = decoder().decode(raw)
    except DecodeError as exc:
        assert "log index 0" in str(exc)
        return
    assert rec is not None
    json.dumps(rec.to_dict())


def test_record_fields_follow_the_seam() -> None:
    ev = PARSED.event("Transfer")
    log = raw_log(ev, ["0x" + "11" * 20, "0x" + "22" * 20, 2**200])
    rec = decoder().decode(log)
    assert rec is not None
    assert rec.to_dict() == {
        "kind": "event", "id": f"31337:0x{'ab' * 32}:7", "chain_id": 31337, "contract": "Demo",
        "address": ADDR, "event": "Transfer",
        "args": {"from": "0x" + "11" * 20, "to": "0x" + "22" * 20, "value": str(2**200)},
        "block_number": 123, "block_hash": "0x" + "ab" * 32, "block_timestamp": 0x6553F100,
        "tx_hash": "0x" + "cd" * 32, "log_index": 7, "status": "pending",
        "incarnation": 0,
        "address_paths": ["from", "to"],
    }
    assert rec.message_id == f"31337:0x{'ab' * 32}:7/pending"


def test_erc721_and_erc20_transfer_share_topic0_but_decode_apart() -> None:
    abi = parse_abi([TEST_ABI[0], ERC721_TRANSFER], "mixed")
    dec = LogDecoder(1, [ContractSpec("T", ADDR, abi)])
    erc20 = raw_log(abi.events[0], ["0x" + "11" * 20, "0x" + "22" * 20, 5])
    erc721 = raw_log(abi.events[1], ["0x" + "11" * 20, "0x" + "22" * 20, 9])
    assert erc20["topics"][0] == erc721["topics"][0]
    r20, r721 = dec.decode(erc20), dec.decode(erc721)
    assert r20 is not None and r20.args["value"] == "5"
    assert r721 is not None and r721.args["tokenId"] == "9"


def test_unknown_and_malformed_logs_are_counted_not_raised() -> None:
    ev = PARSED.event("Transfer")
    good = raw_log(ev, ["0x" + "11" * 20, "0x" + "22" * 20, 1])
    unknown = dict(good, topics=["0x" + "ee" * 32, *good["topics"][1:]])
    short = dict(good, data="0x00")
    dec = decoder()
    out = dec.decode_many([good, unknown, short, good])  # type: ignore[list-item]
    assert len(out) == 2
    assert (dec.stats.decoded, dec.stats.unknown, dec.stats.undecodable) == (2, 1, 1)


def test_strict_padding_like_eth_abi() -> None:
    ev = PARSED.event("Scalars")
    log = raw_log(ev, [1, -2, b"\x01", -5, 7, True])
    bad = dict(log, data="0x" + "01" * 32 + log["data"][66:])  # bytes1 with dirty padding
    with pytest.raises(DecodeError, match=r"Demo\.Scalars"):
        decoder().decode(bad)  # type: ignore[arg-type]


def test_event_selection_and_filters() -> None:
    ev = PARSED.event("Transfer")
    to_a = raw_log(ev, ["0x" + "11" * 20, "0x" + "aa" * 20, 1])
    to_b = raw_log(ev, ["0x" + "11" * 20, "0x" + "bb" * 20, 1])
    dec = decoder(None, Transfer={"to": frozenset({Web3.to_checksum_address("0x" + "aa" * 20)})})
    assert [r.args["to"].lower() for r in dec.decode_many([to_a, to_b])] == ["0x" + "aa" * 20]
    only_approval = decoder(frozenset({"Approval"}))
    assert only_approval.decode(to_a) is None


def test_unnamed_args_and_tuple_components_are_positional() -> None:
    abi = parse_abi([{"type": "event", "name": "U", "inputs": [
        inp("", "uint256"),
        inp("", "tuple", components=[inp("", "bool"), inp("", "uint8")]),
    ]}], "u")
    log = raw_log(abi.events[0], [3, (True, 4)])
    rec = LogDecoder(1, [ContractSpec("U", ADDR, abi)]).decode(log)
    assert rec is not None and rec.args == {"_0": "3", "_1": [True, "4"]}


def test_invalid_abi_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "Bad.abi"
    bad.write_text('[{"type": "event", "name": "X", "inputs": [{"name": "a", "type": "uint7"}]}]')
    with pytest.raises(InvalidABI, match=r"Bad.abi: entry 0 \(X\).inputs\[0\]: 'uint7'"):
        load_abi(bad)
    (tmp_path / "Nope.abi").write_text("{not json")
    with pytest.raises(InvalidABI, match=r"Nope\.abi: not JSON"):
        load_abi(tmp_path / "Nope.abi")
    with pytest.raises(InvalidABI, match=r"Missing\.abi: no such ABI file"):
        find_abi(tmp_path, "Missing")
    assert issubclass(InvalidABI, ValueError)


def test_recorded_real_logs_equal_web3() -> None:
    recorded = json.loads((DATA / "demo_logs.json").read_text())
    abi = parse_abi(recorded["abi"], "DemoToken.abi")
    contract = W3.eth.contract(abi=recorded["abi"])
    dec = LogDecoder(31337, [ContractSpec("DemoToken", recorded["address"], abi)])
    by_topic = {(e.topic0, e.topic_count): e for e in abi.events}
    assert len(recorded["logs"]) >= 10
    for raw in recorded["logs"]:
        rec = dec.decode(raw)
        assert rec is not None
        ev = by_topic[(raw["topics"][0], len(raw["topics"]))]
        log = {
            "address": raw["address"], "topics": [HexBytes(t) for t in raw["topics"]],
            "data": HexBytes(raw["data"]), "blockNumber": int(raw["blockNumber"], 16),
            "blockHash": HexBytes(raw["blockHash"]),
            "transactionHash": HexBytes(raw["transactionHash"]),
            "logIndex": int(raw["logIndex"], 16), "transactionIndex": 0,
        }
        got = contract.events[ev.name]().process_log(log)["args"]
        want = {}
        for p in ev.inputs:
            hashed = p.indexed and (p.type in ("string", "bytes") or "[" in p.type or "(" in p.type)
            want[p.name] = "0x" + bytes(got[p.name]).hex() if hashed else normalize(got[p.name], p)
        assert rec.args == want


def test_topics_filter_only_when_every_contract_names_its_events() -> None:
    assert decoder().topics_filter() is None
    narrowed = decoder(frozenset({"Transfer", "Approval"})).topics_filter()
    assert narrowed == [sorted([PARSED.event("Transfer").topic0, PARSED.event("Approval").topic0])]


# --- address_paths: the ABI says which args are addresses (issue 10 item 6) -------------------

LOOKS_LIKE_AN_ADDRESS = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"


def test_address_paths_come_from_the_abi_types() -> None:
    message = decoder().decode(raw_log(PARSED.event("Message"), [
        "0x" + "11" * 20, "0x" + "22" * 20, LOOKS_LIKE_AN_ADDRESS, b"\x01" * 20]))
    assert message is not None and message.args["text"] == LOOKS_LIKE_AN_ADDRESS
    assert message.address_paths == ("from", "to")  # the string is not an address
    tagged = decoder().decode(raw_log(PARSED.event("Tagged"), [
        b"\x01" * 32, LOOKS_LIKE_AN_ADDRESS, -1, True, b"\x01\x02\x03\x04"]))
    assert tagged is not None and tagged.address_paths == ()
    batch = decoder().decode(raw_log(PARSED.event("Batch"), [
        "0x" + "11" * 20, [1, 2, 3], ["0x" + "33" * 20, "0x" + "44" * 20], LOOKS_LIKE_AN_ADDRESS]))
    assert batch is not None
    assert batch.address_paths == ("operator", "recipients.0", "recipients.1")
    nested = decoder().decode(raw_log(PARSED.event("Nested"), [
        7, ("0x" + "55" * 20, 1, LOOKS_LIKE_AN_ADDRESS), [(1, True)], [[1, 2]],
        ["0x" + "66" * 20, "0x" + "77" * 20]]))
    assert nested is not None
    assert nested.address_paths == ("order.maker", "pair.0", "pair.1")
    assert nested.to_dict()["address_paths"] == ["order.maker", "pair.0", "pair.1"]


def test_address_paths_of_positional_tuples_and_indexed_dynamic_args() -> None:
    abi = parse_abi([{"type": "event", "name": "P", "inputs": [
        inp("", "tuple", components=[inp("", "uint8"), inp("", "address")]),
        inp("who", "address[]", True),  # indexed: only the hash of the array is in the topic
        inp("grid", "tuple[][]", components=[inp("a", "address")]),
    ]}], "p")
    log = raw_log(abi.events[0], [(1, "0x" + "88" * 20), ["0x" + "99" * 20],
                                  [[("0x" + "aa" * 20,)], [], [("0x" + "bb" * 20,)]]])
    log["topics"][1] = "0x" + keccak(encode(["address[]"], [["0x" + "99" * 20]])).hex()
    rec = LogDecoder(1, [ContractSpec("P", ADDR, abi)]).decode(log)
    assert rec is not None
    assert rec.address_paths == ("_0.1", "grid.0.0.a", "grid.2.0.a")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(event_logs())
def test_every_address_path_leads_to_a_checksummed_address(case: tuple[EventABI, RawLog]
                                                           ) -> None:
    from chainpush.push.records import _at

    rec = decoder().decode(case[1])
    assert rec is not None and rec.address_paths is not None
    for path in rec.address_paths:
        value = _at(rec.args, path)
        assert isinstance(value, str) and Web3.to_checksum_address(value) == value


def test_records_round_trip_with_and_without_address_paths() -> None:
    from chainpush.watcher.record import record_from_dict

    rec = decoder().decode(raw_log(PARSED.event("Transfer"), ["0x" + "11" * 20, "0x" + "22" * 20,
                                                              1]))
    assert rec is not None
    assert record_from_dict(rec.to_dict()) == rec
    old = rec.to_dict()
    del old["address_paths"]  # a checkpoint written before the field existed
    restored = record_from_dict(old)
    assert restored.address_paths is None  # type: ignore[union-attr]
    assert "address_paths" not in restored.to_dict()  # routed by the old heuristic downstream
