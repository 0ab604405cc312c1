"""Command-line text → ABI values and back (chainpush.abiargs): pure, no node."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainpush import abiargs
from chainpush.abiargs import ArgumentError

CHECKSUMMED = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def p(kind: str, name: str = "x", **extra: object) -> dict[str, object]:
    return {"type": kind, "name": name, **extra}


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("uint256", "2020", 2020),
    ("uint256", "0x7e4", 2020),
    ("uint256", "1_000_000", 1_000_000),
    ("uint256", "007", 7),
    ("uint8", "255", 255),
    ("int8", "-128", -128),
    ("int256", "-0x10", -16),
    ("address", CHECKSUMMED.lower(), CHECKSUMMED),
    ("address", CHECKSUMMED, CHECKSUMMED),
    ("bool", "true", True),
    ("bool", "0", False),
    ("string", "team vault", "team vault"),
    ("string", "", ""),
    ("bytes", "0x", b""),
    ("bytes", "0xdeadbeef", bytes.fromhex("deadbeef")),
    ("bytes4", "0xdeadbeef", bytes.fromhex("deadbeef")),
    ("uint256[]", "[1, \"2\", \"0x3\"]", [1, 2, 3]),
    ("uint256[2]", "[1, 2]", [1, 2]),
    ("address[]", f'["{CHECKSUMMED.lower()}"]', [CHECKSUMMED]),
    ("bool[][]", "[[true], [false, true]]", [[True], [False, True]]),
    ("uint256", str(2**256 - 1), 2**256 - 1),
])
def test_parse_param(kind: str, text: str, value: object) -> None:
    assert abiargs.parse_param(p(kind), text) == value


def test_tuples_take_a_json_array_or_object() -> None:
    param = p("tuple", components=[p("address", "to"), p("uint256", "amount")])
    expected = (CHECKSUMMED, 5)
    assert abiargs.parse_param(param, f'["{CHECKSUMMED}", 5]') == expected
    assert abiargs.parse_param(param, f'{{"amount": "5", "to": "{CHECKSUMMED}"}}') == expected
    with pytest.raises(ArgumentError, match="lacks amount"):
        abiargs.parse_param(param, f'{{"to": "{CHECKSUMMED}"}}')


@pytest.mark.parametrize(("kind", "text", "message"), [
    ("uint256", "-1", "out of range 0.."),
    ("uint8", "256", "out of range 0..255"),
    ("uint256", "1.5", "must be an integer"),
    ("uint256", "", "must be an integer"),
    ("address", "0x1234", "must be 0x \\+ 40 hex digits"),
    ("address", CHECKSUMMED[:-1] + "c", "wrong EIP-55 checksum"),
    ("bool", "yes", "must be true or false"),
    ("bytes", "deadbeef", "must be 0x"),
    ("bytes", "0xabc", "even number of hex digits"),
    ("bytes4", "0xdead", "exactly 4 byte"),
    ("uint256[]", "1,2", "must be JSON"),
    ("uint256[]", "{}", "must be a JSON array"),
    ("uint256[2]", "[1]", "exactly 2 element"),
    ("uint256[]", "[1.5]", "expected a uint256"),
    ("bool[]", "[1]", "expected a bool"),
    ("fixed128x18", "1", "not supported"),
])
def test_bad_arguments_name_parameter_type_and_text(kind: str, text: str, message: str) -> None:
    with pytest.raises(ArgumentError, match=message) as info:
        abiargs.parse_param(p(kind, "amount"), text, what="deposit(uint256)")
    assert str(info.value).startswith(f"deposit(uint256): amount ({kind})")


@given(st.text(max_size=80))
def test_any_text_is_a_value_or_an_argument_error(text: str) -> None:
    for kind in ("uint256", "int16", "address", "bool", "bytes", "bytes32", "uint8[]",
                 "string"):
        try:
            abiargs.parse_param(p(kind), text)
        except ArgumentError:
            pass


ABI = [
    {"type": "constructor", "inputs": [p("string", "label"), p("address", "owner")]},
    {"type": "function", "name": "total", "inputs": [], "outputs": [p("uint256", "")],
     "stateMutability": "view"},
    {"type": "function", "name": "deposit", "inputs": [], "outputs": [],
     "stateMutability": "payable"},
    {"type": "function", "name": "f", "inputs": [p("uint256")], "outputs": [],
     "stateMutability": "nonpayable"},
    {"type": "function", "name": "f", "inputs": [p("address")], "outputs": [],
     "stateMutability": "nonpayable"},
    {"type": "event", "name": "Deposited", "inputs": [p("address", "from")]},
]


def test_select_function_by_name_count_or_signature() -> None:
    assert abiargs.select_function(ABI, "total", 0)["name"] == "total"
    assert abiargs.signature(abiargs.select_function(ABI, "f(address)", 1)) == "f(address)"
    with pytest.raises(ArgumentError, match=r"overloaded \(f\(uint256\), f\(address\)\): name "
                       r"one by signature, e.g. 'f\(uint256\)'"):
        abiargs.select_function(ABI, "f", 1)
    with pytest.raises(ArgumentError, match=r"no function 'nope' in the ABI \(functions: "
                       r"deposit\(\), f\(address\), f\(uint256\), total\(\)\)"):
        abiargs.select_function(ABI, "nope", 0)
    with pytest.raises(ArgumentError, match="total takes 0 argument"):
        abiargs.select_function(ABI, "total", 2)


def test_constructor_arguments_are_counted() -> None:
    ctor = abiargs.constructor(ABI)
    assert abiargs.parse_args(ctor, ["v", CHECKSUMMED], what="Vault constructor") == [
        "v", CHECKSUMMED]
    with pytest.raises(ArgumentError, match=r"Vault constructor takes 2 argument\(s\) "
                       r"\(string label, address owner\), got 0"):
        abiargs.parse_args(ctor, [], what="Vault constructor")
    assert abiargs.constructor([])["inputs"] == []  # no constructor: takes nothing


@pytest.mark.parametrize(("outputs", "value", "text"), [
    ([p("uint256")], 2020, "2020"),
    ([p("bool")], True, "true"),
    ([p("address")], CHECKSUMMED, CHECKSUMMED),
    ([p("bytes")], b"\x01\x02", "0x0102"),
    ([p("string")], "hello world", "hello world"),
    ([p("uint256[]")], [1, 2], "[1, 2]"),
    ([p("uint256"), p("bytes32")], (7, b"\x00" * 32), '[7, "0x' + "00" * 32 + '"]'),
    ([], None, "(no return value)"),
])
def test_render_result_is_one_line(outputs: list[dict[str, object]], value: object,
                                   text: str) -> None:
    assert abiargs.render_result(outputs, value) == text
