"""App messages (issue 13 item 6), the pure parts: the server key check, the request parser,
app records in records/wire/tokens, and the [publish] configuration."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainpush.push import wire
from chainpush.push.config import PublishConfig, load
from chainpush.push.errors import ConfigError, InvalidRecord
from chainpush.push.publish import PublishRefused, app_record, key_matches, parse_request
from chainpush.push.records import topics_of, validate
from chainpush.push.tokens import Claims

KEY = "k" * 40
NOW = 1_800_000_000.5


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"topic": "app:orders", "id": "ord-1", "event": "order.shipped",
                               "data": {"order": 1}}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_key_matches_only_a_bearer_of_a_configured_key() -> None:
    keys = ("a" * 40, KEY)
    assert key_matches(f"Bearer {KEY}", keys)
    assert key_matches(f"bearer {KEY}", keys)
    for header in (None, "", KEY, f"Basic {KEY}", "Bearer ", f"Bearer {KEY}x",
                   f"Bearer {KEY[:-1]}"):
        assert not key_matches(header, keys), header
    assert not key_matches(f"Bearer {KEY}", ())


def test_request_becomes_an_app_record() -> None:
    record = parse_request(body(), now=NOW)
    assert record == {"kind": "app", "id": "app:orders/ord-1", "topic": "app:orders",
                      "event": "order.shipped", "data": {"order": 1},
                      "published_at": 1_800_000_000, "status": "confirmed", "address_paths": []}
    validate(record)
    assert topics_of(record) == ["app:orders"]
    record = parse_request(body(topic="inbox:user-42", event=None, data=None), now=NOW)
    assert record["event"] == "message" and record["data"] == {}
    assert topics_of(record) == ["inbox:user-42"]


@pytest.mark.parametrize(("raw", "code", "match"), [
    (b"\xff", "bad_json", "UTF-8"),
    (b"{nope", "bad_json", "not JSON"),
    (b"[" * 40 + b"]" * 40, "bad_json", "nested deeper"),
    (b'{"topic": "app:x", "id": "a", "data": NaN}', "bad_json", "NaN"),
    (b"[1]", "bad_request", "JSON object"),
    (body(extra=1), "bad_request", "unknown field"),
    (body(topic="contract:DemoToken"), "bad_topic", "app:<name>"),
    (body(topic="user:0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"), "bad_topic", "app:<name>"),
    (body(topic="app:"), "bad_topic", "app:<name>"),
    (body(topic="app:a\nb"), "bad_topic", "app:<name>"),
    (body(topic="app:" + "x" * 200), "bad_topic", "app:<name>"),
    (body(topic=7), "bad_topic", "app:<name>"),
    (body(id=None), "bad_request", "id must be"),
    (body(id="a/b"), "bad_request", "id must be"),
    (body(id="x" * 129), "bad_request", "id must be"),
    (body(event=""), "bad_request", "event must be"),
    (body(event=3), "bad_request", "event must be"),
    (body(data={"n": 2**60}), "bad_request", "data.n: integers beyond 2"),
    (body(data={"a": [{"$set": 1}]}), "bad_request", "data.a.0: object keys"),
])
def test_bad_requests_are_400_naming_the_field(raw: bytes, code: str, match: str) -> None:
    with pytest.raises(PublishRefused, match=match) as info:
        parse_request(raw, now=NOW)
    assert (info.value.status, info.value.code) == (400, code)


@given(st.binary(max_size=300))
def test_any_body_is_a_record_or_a_refusal(raw: bytes) -> None:
    try:
        record = parse_request(raw, now=NOW)
    except PublishRefused as exc:
        assert exc.status == 400
    else:
        validate(record)


def test_app_and_inbox_topics_on_the_wire() -> None:
    for topic in ("app:orders", "app:a b", "inbox:user-42", "inbox:" + "u" * 256, "inbox:a:b"):
        assert wire.valid_topic(topic), topic
    for topic in ("app:", "inbox:", "inbox:" + "u" * 257, "inbox:a\tb", "apps:x"):
        assert not wire.valid_topic(topic), topic
    frame = wire.parse_client_frame('{"type": "subscribe", "topic": "inbox:Alice", "since": 0}')
    assert isinstance(frame, wire.Subscribe) and frame.topic == "inbox:Alice"  # case kept


def test_every_token_grants_its_own_inbox_only() -> None:
    claims = Claims(user="alice", wallets=(), topics=("app:orders",), expires_at=0)
    assert claims.allows("inbox:alice") and claims.allows("app:orders")
    assert not claims.allows("inbox:Alice") and not claims.allows("inbox:bob")
    assert not claims.allows("app:other")
    operator = Claims(user="ops", wallets=(), topics=("inbox:*",), expires_at=0)
    assert operator.allows("inbox:bob")


def test_app_records_are_validated() -> None:
    good = app_record(topic="app:x", client_id="1", event="e", data=None, now=NOW)
    validate(good)
    for bad, match in (({"topic": "contract:X"}, "topic must be"), ({"status": "pending"},
                       "status must be 'confirmed'"), ({"event": None}, "event must be")):
        with pytest.raises(InvalidRecord, match=match):
            validate({**good, **bad})
    no_data = dict(good)
    del no_data["data"]
    with pytest.raises(InvalidRecord, match="needs data"):
        validate(no_data)


def test_publish_config_refuses_weak_keys_outside_dev_mode() -> None:
    PublishConfig(keys=(KEY,))
    with pytest.raises(ConfigError, match=r"\[publish\] keys\[1\] is 3 characters"):
        PublishConfig(keys=(KEY, "dev"))
    PublishConfig(keys=("dev",), dev_mode=True)
    with pytest.raises(ConfigError, match="without surrounding spaces"):
        PublishConfig(keys=(" " + KEY,))
    with pytest.raises(ConfigError, match="max_body_bytes"):
        PublishConfig(max_body_bytes=0)
    assert KEY not in repr(PublishConfig(keys=(KEY,)))


def test_publish_keys_from_toml_and_environment(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "chainpush.toml"
    path.write_text(f'[auth]\nsecret = "{"s" * 40}"\n[publish]\nkeys = ["{KEY}"]\n')
    assert load(path, dev_mode=False).publish.keys == (KEY,)
    other = "o" * 40
    settings = load(path, dev_mode=False, publish_keys_from_env=f"{other}, {KEY}")
    assert settings.publish.keys == (other, KEY)
    with pytest.raises(ConfigError, match=r"\[publish\] keys\[0\] is 5 characters"):
        load(path, dev_mode=False, publish_keys_from_env="short")
    path.write_text(f'[auth]\nsecret = "{"s" * 40}"\n[publish]\nkeys = "{KEY}"\n')
    with pytest.raises(ConfigError, match="must be a list of strings"):
        load(path, dev_mode=False)
