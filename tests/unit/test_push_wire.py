"""The wire protocol: every input yields a frame or a documented ProtocolError."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainpush.push import wire
from chainpush.push.errors import ProtocolError
from chainpush.push.records import StoredMessage, checksum

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "ack", ""])},
    optional={
        "token": json_values,
        "topic": st.sampled_from(["contract:A", "user:0x1", "x", ""]) | json_values,
        "since": json_values, "filter": json_values, "ref": json_values,
    },
)


def check(data: str | bytes) -> None:
    try:
        frame = wire.parse_client_frame(data)
    except ProtocolError as exc:
        assert exc.code in wire.ERROR_CODES
        assert str(exc)
    else:
        assert isinstance(frame, wire.Auth | wire.Subscribe | wire.Unsubscribe | wire.Ping)


@given(st.text() | st.binary())
def test_any_text_or_bytes_is_a_frame_or_a_documented_error(data: str | bytes) -> None:
    check(data)


@given(json_values)
def test_any_json_is_a_frame_or_a_documented_error(value: object) -> None:
    check(json.dumps(value))


@given(frame_like)
def test_frame_shaped_objects(value: dict[str, object]) -> None:
    check(json.dumps(value))


# valid topics in their canonical spelling (user: addresses in EIP-55, names printable)
topics = st.builds(
    lambda k, n: f"{k}:{n}", st.sampled_from(("contract", "state")),
    st.text(min_size=1, max_size=40).filter(str.isprintable),
) | st.binary(min_size=20, max_size=20).map(lambda b: f"user:{checksum('0x' + b.hex())}")
refs = st.none() | st.text(max_size=wire.MAX_REF_CHARS)
filters = st.dictionaries(
    st.sampled_from(["event", "status", "kind", "args.to", "args.a.b"]),
    st.lists(st.text() | st.integers() | st.booleans(), min_size=1, max_size=3).map(tuple),
    max_size=3,
)
client_frames = st.one_of(
    st.builds(wire.Auth, token=st.text(min_size=1)),
    st.builds(wire.Subscribe, topic=topics, since=st.none() | st.integers(min_value=0),
              filter=filters, ref=refs),
    st.builds(wire.Unsubscribe, topic=topics, ref=refs),
    st.builds(wire.Ping, ref=refs),
)


@given(client_frames)
def test_client_frames_round_trip(frame: wire.ClientFrame) -> None:
    assert wire.parse_client_frame(wire.client_frame(frame)) == frame


@pytest.mark.parametrize(("data", "code"), [
    (b"{}", "bad_frame"),
    ("{not json", "bad_json"),
    ("[1]", "bad_message"),
    ('{"type": 3}', "bad_message"),
    ('{"type": "hello"}', "unknown_type"),
    ('{"type": "auth"}', "bad_message"),
    ('{"type": "subscribe", "topic": "weather:today"}', "unknown_topic"),
    ('{"type": "subscribe", "topic": "contract:A", "since": -1}', "bad_message"),
    ('{"type": "subscribe", "topic": "contract:A", "since": true}', "bad_message"),
    ('{"type": "subscribe", "topic": "contract:A", "filter": {"block_hash": "x"}}', "bad_message"),
    ('{"type": "subscribe", "topic": "contract:A", "filter": {"event": []}}', "bad_message"),
    ('{"type": "ping", "ref": 5}', "bad_message"),
    ("[" * 100000, "bad_json"),
])
def test_documented_errors(data: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.parse_client_frame(data)
    assert info.value.code == code


def test_deep_nesting_is_refused_even_with_a_raised_recursion_limit() -> None:
    # web3 (py_ecc) raises the limit to 100000; the C JSON parser would then overflow the stack
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        for deep in ("[" * 60_000, '{"a":' * 20_000, '{"type": "ping", "x": ' + "[" * 40 + "]" * 40
                     + "}"):
            with pytest.raises(ProtocolError) as info:
                wire.parse_client_frame(deep)
            assert info.value.code == "bad_json"
    finally:
        sys.setrecursionlimit(old)
    # brackets inside strings do not count
    assert wire.parse_client_frame('{"type": "ping", "ref": "' + "[" * 60 + '"}') == wire.Ping(
        ref="[" * 60)
    assert wire.nesting_depth('{"a": [1, {"b": "]]]"}]}') == 3


def test_subscribe_keeps_ref_in_errors() -> None:
    with pytest.raises(ProtocolError) as info:
        wire.parse_client_frame('{"type": "subscribe", "topic": "nope", "ref": "r1"}')
    assert info.value.ref == "r1"


def test_server_frames_are_json_with_a_type() -> None:
    msg = StoredMessage(topic="contract:A", offset=3, msg_id="1:0x:2/pending",
                        record={"args": {"value": "10"}})
    frames = [
        wire.welcome(user="u", node="n", topics=["*"], wallets=[], expires_at=1, heartbeat_s=5),
        wire.subscribed(topic="contract:A", since=0, head=3, ref=None),
        wire.unsubscribed(topic="contract:A", ref="x"),
        wire.message(msg), wire.error("bad_json", "nope"), wire.pong("r"),
    ]
    for frame in frames:
        assert wire.parse_server_frame(frame)["type"]
    assert wire.parse_server_frame(wire.message(msg)) == {
        "type": "message", "topic": "contract:A", "offset": 3, "epoch": None,
        "id": "1:0x:2/pending", "record": {"args": {"value": "10"}},
    }


def test_close_codes_have_reasons() -> None:
    codes = [v for k, v in vars(wire).items() if k.startswith("CLOSE_") and isinstance(v, int)]
    assert sorted(codes) == sorted(wire.CLOSE_REASONS)


def test_filter_limits() -> None:
    def code(flt: object) -> str | None:
        try:
            wire.parse_client_frame(json.dumps({"type": "subscribe", "topic": "contract:A",
                                                "filter": flt}))
        except ProtocolError as exc:
            return exc.code
        return None

    assert code({"event": ["x"] * wire.MAX_FILTER_VALUES}) is None
    assert code({"event": ["x"] * (wire.MAX_FILTER_VALUES + 1)}) == "filter_too_large"
    assert code({"event": ["0x"] * 12900}) == "filter_too_large"
    assert code({f"args.k{i}": "x" for i in range(wire.MAX_FILTER_KEYS + 1)}) \
        == "filter_too_large"
    assert code({"args." + ".".join(["a"] * wire.MAX_FILTER_PATH_PARTS): "x"}) \
        == "filter_too_large"
    assert code({"args.a": ["y" * 200] * 50}) == "filter_too_large"  # 10,000 characters
    assert code({"args.ids.²": "1"}) == "bad_message"
    assert code({"args.ids." + "9" * 5000: "1"}) == "bad_message"
