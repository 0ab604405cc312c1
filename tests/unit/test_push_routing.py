"""Routing decisions, topics of records, and the pure-core import rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chainpush.push.errors import InvalidRecord
from chainpush.push.records import StoredMessage, addresses, is_address, topics_of
from chainpush.push.routing import LIVE_VIEW_S, LiveNodes, plan, registry_changes, routes
from chainpush.watcher.record import message_id

A = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"


def test_live_view_is_read_again_when_old_or_when_an_unknown_node_appears() -> None:
    view = LiveNodes()
    assert view.stale(["n1"], now=100)  # never read
    view.update(["n1", "n2"], ["n1", "n2", "dead"], now=100)
    assert view.live == {"n1", "n2"}
    assert not view.stale(["n1", "dead"], now=100.5)  # a known-dead entry costs no read
    assert view.stale(["n3"], now=100.5)  # a node that just registered is looked up at once
    assert view.stale(["n1"], now=100 + LIVE_VIEW_S)
    assert routes({"t": {"n2": "1", "dead": "1", "n1": "1"}}, view.live) == {"t": ["n1", "n2"]}


def test_plan_one_copy_per_node() -> None:
    m = [StoredMessage("contract:A", 1, "x/pending", {}),
         StoredMessage(f"user:{A}", 4, "x/pending", {})]
    routes = {"contract:A": ["n1", "n2"], f"user:{A}": ["n2"]}
    assert plan(m, routes) == {"n1": [m[0]], "n2": [m[0], m[1]]}
    assert plan(m, {}) == {}


def test_registry_changes() -> None:
    assert registry_changes({"a", "b"}, {"b", "c"}, rejoined=False) == ({"a"}, {"c"})
    assert registry_changes({"a", "b"}, {"b", "c"}, rejoined=True) == ({"a", "b"}, {"c"})


def test_topics_of_records() -> None:
    event = {"kind": "event", "id": "1:0xh:0", "contract": "Tok", "status": "pending",
             "args": {"from": A, "to": A, "data": "0x" + "ab" * 20, "n": "5",
                      "list": [{"who": "0x0000000000000000000000000000000000000001"}]}}
    assert message_id(event) == "1:0xh:0/pending"
    assert topics_of(event) == ["contract:Tok", f"user:{A}",
                                "user:0x0000000000000000000000000000000000000001"]
    assert topics_of({**event, "kind": "state"}) == ["state:Tok"]
    assert addresses({}) == []
    assert not is_address("0x" + "ab" * 20) and not is_address(5) and is_address(A)
    for bad in ({**event, "id": ""}, {**event, "status": "gone"}, {**event, "contract": None},
                {**event, "args": []}, {**event, "kind": "x"}):
        with pytest.raises(InvalidRecord):
            topics_of(bad)


def test_pure_core_imports_without_drivers() -> None:
    code = (
        "import sys\n"
        "for m in ('pymongo', 'redis', 'websockets', 'aiohttp', 'web3'): sys.modules[m] = None\n"
        "import chainpush.push.wire, chainpush.push.tokens, chainpush.push.subscription\n"
        "import chainpush.push.routing, chainpush.push.records, chainpush.push.metrics\n"
        "import chainpush.push.session, chainpush.push.placement, chainpush.push.resume\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- routing by ABI types, canonical user topics (issue 10 item 6) ---------------------------

B = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"


def test_user_topics_come_only_from_address_paths() -> None:
    # a Message whose `text` (a string) is a checksummed address: no user: topic for it
    message = {"kind": "event", "id": "1:0xh:0", "contract": "DemoToken", "status": "pending",
               "event": "Message", "args": {"from": A, "to": A, "text": B, "data": "0x"},
               "address_paths": ["from", "to"]}
    assert topics_of(message) == ["contract:DemoToken", f"user:{A}"]
    # without the field (stored before it existed) the old heuristic still applies
    old = {k: v for k, v in message.items() if k != "address_paths"}
    assert topics_of(old) == ["contract:DemoToken", f"user:{A}", f"user:{B}"]
    # nested and array paths; a lower-case value at an address path is still an address
    nested = {**message, "args": {"order": {"maker": B.lower(), "memo": A},
                                  "pair": [A, B], "note": B},
              "address_paths": ["order.maker", "pair.0", "pair.1"]}
    assert topics_of(nested) == ["contract:DemoToken", f"user:{B}", f"user:{A}"]
    # paths that lead nowhere or to a non-address route nowhere
    odd = {**message, "address_paths": ["missing", "text.x", "data", "pair.99",
                                        "pair." + "9" * 5000]}
    assert topics_of(odd) == ["contract:DemoToken"]
    assert topics_of({**message, "address_paths": []}) == ["contract:DemoToken"]
    for bad in ("from", [1], {"a": 1}):
        with pytest.raises(InvalidRecord, match="address_paths"):
            topics_of({**message, "address_paths": bad})


def test_normalise_topic_gives_user_topics_their_eip55_spelling() -> None:
    from chainpush.push.records import normalise_topic

    assert normalise_topic(f"user:{B.lower()}") == f"user:{B}"
    assert normalise_topic(f"user:{B.upper().replace('0X', '0x')}") == f"user:{B}"
    assert normalise_topic(f"user:{B}") == f"user:{B}"
    assert normalise_topic("contract:DemoToken") == "contract:DemoToken"
    assert normalise_topic("user:foo") == "user:foo"


def test_subscribe_normalises_user_topics_and_refuses_non_addresses() -> None:
    from chainpush.push import wire
    from chainpush.push.errors import ProtocolError

    frame = wire.parse_client_frame(f'{{"type": "subscribe", "topic": "user:{B.lower()}"}}')
    assert isinstance(frame, wire.Subscribe) and frame.topic == f"user:{B}"
    frame = wire.parse_client_frame(f'{{"type": "unsubscribe", "topic": "user:{B.lower()}"}}')
    assert isinstance(frame, wire.Unsubscribe) and frame.topic == f"user:{B}"
    # docs/protocol.md: unknown_topic for anything not user:0x + 40 hex digits
    for topic in ("user:foo", "user:0x1234", f"user:{B}0", "user:", "contract:A\nforged",
                  "state:\x1b[2J"):
        with pytest.raises(ProtocolError) as info:
            wire.parse_client_frame(wire.client_frame(wire.Subscribe(topic=topic)))
        assert info.value.code == "unknown_topic", topic
