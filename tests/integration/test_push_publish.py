"""``POST /v1/publish`` on real parts: the auth service (aiohttp) storing through a Collector into
nx-27017, dispatch through redis-server, a push node, real websocket clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pymongo
import pytest

from chainpush.constants import MESSAGES
from chainpush.push.config import AuthServiceConfig, PublishConfig, StoresConfig
from chainpush.push.node import PushNode
from chainpush.push.web import AuthService
from tests.integration.push_support import (
    SECRET,
    TOKENS,
    Client,
    collector_for,
    push_node,
    stores,
    token,
)
from tests.integration.test_push_security import _env, cli

pytestmark = pytest.mark.integration
KEY = "publish-key-" + "p" * 32


@dataclass
class Stack:
    svc: AuthService
    node: PushNode
    cfg: StoresConfig
    http: aiohttp.ClientSession

    async def post(self, body: object, *, key: str | None = KEY,
                   raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.http.post(self.svc.url + "/v1/publish", data=data,
                                  headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def stack(mongo_uri: str, redis_url: str, mongo_db_name: str,
                unit: float) -> AsyncIterator[Stack]:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        collector_for(cfg) as collector,
        AuthService(AuthServiceConfig(port=0), tokens=TOKENS, dev_mode=False, push_urls=[],
                    topics=[], publish=PublishConfig(keys=(KEY,), max_body_bytes=2048),
                    collector=collector) as svc,
        push_node(cfg, "pub-1", unit) as node,
        aiohttp.ClientSession() as http,
    ):
        yield Stack(svc, node, cfg, http)


def order(n: int, **kw: object) -> dict[str, object]:
    return {"topic": "app:orders", "id": f"ord-{n}", "event": "order.shipped",
            "data": {"order": n, "items": ["a", "b"]}, **kw}


def stored_rows(cfg: StoresConfig, topic: str) -> list[dict[str, Any]]:
    with pymongo.MongoClient(cfg.mongo_uri) as client:
        return list(client[cfg.database][MESSAGES].find({"topic": topic}).sort("offset", 1))


async def test_published_message_reaches_a_subscriber_once(stack: Stack, unit: float) -> None:
    async with asyncio.timeout(20 * unit), Client.connect(
            stack.node.url, token(topics=("app:orders",))) as client:
        sub = await client.subscribe("app:orders", since=0)
        assert sub["type"] == "subscribed", sub
        status, first = await stack.post(order(1))
        assert status == 201, first
        epoch = first.pop("epoch")
        assert isinstance(epoch, str) and len(epoch) == 16
        assert first == {"topic": "app:orders", "id": "ord-1",
                         "msg_id": "app:orders/ord-1/confirmed", "offset": 1, "duplicate": False}
        (msg,) = await client.until(1, "app:orders")
        assert msg["offset"] == 1 and msg["id"] == "app:orders/ord-1/confirmed"
        assert msg["epoch"] == epoch  # the stream's epoch, as for chain topics
        record = msg["record"]
        assert record["kind"] == "app" and record["event"] == "order.shipped"
        assert record["data"] == {"order": 1, "items": ["a", "b"]}
        # a retry (the backend timed out and sent it again) is stored once
        status, again = await stack.post(order(1))
        assert status == 200 and again == {**first, "epoch": epoch, "duplicate": True}
        status, second = await stack.post(order(2))
        assert status == 201 and second["offset"] == 2
        got = await client.until(2, "app:orders")
        assert [m["id"] for m in got] == ["app:orders/ord-1/confirmed",
                                          "app:orders/ord-2/confirmed"]
    assert [r["offset"] for r in stored_rows(stack.cfg, "app:orders")] == [1, 2]


async def test_history_with_since_and_the_users_own_inbox(stack: Stack, unit: float) -> None:
    async with asyncio.timeout(20 * unit):
        for n in (1, 2, 3):
            status, answer = await stack.post(order(n))
            assert status == 201
        epoch = answer["epoch"]
        status, _ = await stack.post({"topic": "inbox:alice", "id": "welcome", "data": "hi"})
        assert status == 201
        async with Client.connect(stack.node.url, token("alice", topics=("app:*",))) as client:
            sub = await client.subscribe("app:orders", since=1, epoch=epoch)
            assert sub["type"] == "subscribed" and sub["since"] == 1 and sub["head"] == 3
            assert sub["epoch"] == epoch and sub["reset"] is False
            got = await client.until(2, "app:orders")
            assert [m["offset"] for m in got] == [2, 3]
            assert [m["record"]["data"]["order"] for m in got] == [2, 3]
            # the token's sub grants inbox:alice without a pattern; not anybody else's
            sub = await client.subscribe("inbox:alice", since=0)
            assert sub["type"] == "subscribed", sub
            (msg,) = await client.until(1, "inbox:alice")
            assert msg["record"]["data"] == "hi" and msg["offset"] == 1
            refused = await client.subscribe("inbox:bob", since=0)
            assert refused["type"] == "error" and refused["code"] == "forbidden_topic"
        # a position from another stream (a wiped store) is reset: the topic from offset 1
        async with Client.connect(stack.node.url, token("alice", topics=("app:*",))) as client:
            sub = await client.subscribe("app:orders", since=3, epoch="0" * 16)
            assert sub["reset"] is True and sub["since"] == 0 and sub["epoch"] == epoch
            got = await client.until(3, "app:orders")
            assert [m["offset"] for m in got] == [1, 2, 3]


async def test_refusals_are_json(stack: Stack, unit: float) -> None:
    async with asyncio.timeout(20 * unit):
        for key in (None, "publish-key-" + "q" * 32, KEY[:-1]):
            status, answer = await stack.post(order(1), key=key)
            assert status == 401 and answer["error"] == "unauthorized", answer
        status, answer = await stack.post(order(1, topic="contract:DemoToken"))
        assert status == 400 and answer["error"] == "bad_topic"
        assert "app:<name>" in answer["message"]
        status, answer = await stack.post(None, raw=b"{nope")
        assert status == 400 and answer["error"] == "bad_json"
        status, answer = await stack.post(order(1, data="x" * 4096))
        assert status == 413 and answer["error"] == "too_large"
        assert "max_body_bytes" in answer["message"]
    # nothing of the above was stored
    assert stored_rows(stack.cfg, "app:orders") == []
    assert stored_rows(stack.cfg, "contract:DemoToken") == []
    async with stack.http.get(stack.svc.url + "/metrics") as resp:
        text = await resp.text()
    assert "chainpush_publish_refused_total 6" in text


async def test_publish_is_off_without_keys(unit: float) -> None:
    async with (
        AuthService(AuthServiceConfig(port=0), tokens=TOKENS, dev_mode=False, push_urls=[],
                    topics=[]) as svc,
        aiohttp.ClientSession() as http,
        http.post(svc.url + "/v1/publish", json=order(1),
                  headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        assert resp.status == 404
        answer = await resp.json()
        assert answer["error"] == "publish_disabled" and "[publish] keys" in answer["message"]


async def test_chainpush_run_publishes_through_its_collector(
    tmp_path: Path, mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
) -> None:
    """The wiring of the real command: `chainpush run` opens its Collector after the page and
    hands it to POST /v1/publish; a client of one of its push nodes gets the message."""
    env = _env(tmp_path, CHAINPUSH_AUTH_SECRET=SECRET, CHAINPUSH_PUBLISH_KEYS=KEY,
               CHAINPUSH_MONGO_URI=mongo_uri, CHAINPUSH_REDIS_URL=redis_url)
    args = ["run", "--no-watcher", "--auth-port", "0", "--push-port", "0", "--database",
            mongo_db_name]
    async with (
        cli(args, env, tmp_path, r"demo page: (http://\S+)/\s+\(push nodes: (ws://\S+),", unit)
        as (found, _), aiohttp.ClientSession() as http,
    ):
        page, push_url = found.group(1), found.group(2)
        async with asyncio.timeout(20 * unit), Client.connect(
                push_url, token("alice", topics=())) as client:
            assert (await client.subscribe("inbox:alice", since=0))["type"] == "subscribed"
            async with http.post(page + "/v1/publish", headers={"Authorization": f"Bearer {KEY}"},
                                 json={"topic": "inbox:alice", "id": "w-1",
                                       "data": {"text": "hello"}}) as resp:
                assert resp.status == 201, await resp.text()
            (msg,) = await client.until(1, "inbox:alice")
            assert msg["record"]["data"] == {"text": "hello"} and msg["offset"] == 1


async def test_demo_traffic_announces_each_transaction_and_grows_pairs(
        stack: Stack, anvil: Any, tmp_path: Path) -> None:
    """The demo's generator (chainpush/traffic.py): every transaction's hash reaches
    ``app:demo-txs`` through the real publish API, and the factory part creates DemoPair
    children and swaps on them."""
    from chainpush import deploy, traffic
    from chainpush.watcher.node import Endpoint, connect

    w3 = connect(Endpoint("http", anvil.http_url))
    deploy.use_sender(w3)
    await asyncio.to_thread(deploy.deploy, w3, deployments_dir=tmp_path)
    demo = traffic.Demo.attach(w3, tmp_path,
                               announce=traffic.Announcer(stack.svc.url, KEY))
    assert demo.factory is not None and demo.pairs == []
    emit = demo.emitters(__import__("random").Random(3))
    receipts = [await asyncio.to_thread(emit[name])
                for name in ("Swap", "PairCreated", "Swap", "Transfer")]
    assert len(demo.pairs) == 2  # the first Swap had no pair to swap on: it created one
    assert demo.pairs == [demo.factory.functions.allPairs(i).call() for i in range(2)]
    swap = receipts[2]
    assert swap["to"] in demo.pairs and swap["status"] == 1
    rows = stored_rows(stack.cfg, traffic.ANNOUNCE_TOPIC)
    assert [r["record"]["data"]["hash"] for r in rows] == [
        "0x" + bytes(r["transactionHash"]).hex() for r in receipts]
    assert [r["record"]["data"]["what"] for r in rows] == [
        "DemoFactory.createPair", "DemoFactory.createPair", "DemoPair.swap", "DemoToken.transfer"]
    assert {r["record"]["event"] for r in rows} == {"tx.sent"}


async def test_demo_announcer_failure_never_stops_the_traffic(anvil: Any, tmp_path: Path,
                                                              caplog: Any) -> None:
    from chainpush import deploy, traffic
    from chainpush.procs import free_port
    from chainpush.watcher.node import Endpoint, connect

    w3 = connect(Endpoint("http", anvil.http_url))
    deploy.use_sender(w3)
    await asyncio.to_thread(deploy.deploy, w3, deployments_dir=tmp_path)
    nobody = traffic.Announcer(f"http://127.0.0.1:{free_port()}", KEY, timeout_s=1.0)
    demo = traffic.Demo.attach(w3, tmp_path, announce=nobody)
    receipt = await asyncio.to_thread(demo.value_changed, 7)
    assert receipt["status"] == 1
    assert "announcing 0x" in caplog.text and "failed" in caplog.text
