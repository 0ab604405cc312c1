"""Routing decisions, topics of records, and the pure-core import rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from push.errors import InvalidRecord
from push.records import StoredMessage, addresses, is_address, topics_of
from push.routing import live_nodes, plan, registrations
from watcher.record import message_id

A = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"


def test_live_nodes_split_by_expiry() -> None:
    live, expired = live_nodes({"n2": "110", "n1": "105.5", "n3": "99", "bad": "x"}, now=100)
    assert live == ["n1", "n2"]
    assert expired == ["bad", "n3"]


def test_plan_one_copy_per_node() -> None:
    m = [StoredMessage("contract:A", 1, "x/pending", {}),
         StoredMessage(f"user:{A}", 4, "x/pending", {})]
    routes = {"contract:A": ["n1", "n2"], f"user:{A}": ["n2"]}
    assert plan(m, routes) == {"n1": [m[0]], "n2": [m[0], m[1]]}
    assert plan(m, {}) == {}


def test_registrations() -> None:
    assert registrations(["t"], ["u"], 100, 15) == ({"t": 115}, {"u": 115})


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
        "import push.wire, push.tokens, push.subscription, push.routing, push.records\n"
        "import push.metrics\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
