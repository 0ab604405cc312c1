"""Issue 10, tried as an attacker would, on real parts: the `chainpush` CLI as a subprocess, real
HTTP and websocket clients, real redis-server and the MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chainpush.push.dispatch import Dispatcher
from tests.integration.push_support import SECRET

pytestmark = pytest.mark.integration
CHAINPUSH = str(Path(sys.executable).parent / "chainpush")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def cli(args: list[str], env: dict[str, str], cwd: Path, ready: str, unit: float
              ) -> AsyncIterator[tuple[re.Match[str], list[str]]]:
    """Run ``chainpush ARGS`` until a stderr line matches ``ready``; yield the match and the
    stderr lines read so far (more are appended while the body runs). Stopped with SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, *args, env=env, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stderr is not None
    lines: list[str] = []
    pattern = re.compile(ready)
    try:
        async with asyncio.timeout(30 * unit):
            while True:
                raw = await proc.stderr.readline()
                assert raw, f"chainpush {args[0]} exited before {ready!r}: {lines}"
                lines.append(raw.decode())
                found = pattern.search(lines[-1])
                if found:
                    break

        async def drain() -> None:
            assert proc.stderr is not None
            while raw := await proc.stderr.readline():
                lines.append(raw.decode())

        reader = asyncio.ensure_future(drain())
        yield found, lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20 * unit):
            await proc.wait()
        with contextlib.suppress(UnboundLocalError):
            await reader


# --- item 1: CHAINPUSH_DEV=false must not turn dev mode on ------------------------------------


@pytest.mark.parametrize("false_word", ["false", "0", "no", "OFF"])
async def test_dev_false_with_a_production_secret_has_no_dev_login(
    tmp_path: Path, unit: float, false_word: str
) -> None:
    env = _env(tmp_path, CHAINPUSH_DEV=false_word, CHAINPUSH_AUTH_SECRET=SECRET)
    async with (
        cli(["auth", "--port", "0"], env, tmp_path, r"auth service at (http://\S+)", unit)
        as (found, _), aiohttp.ClientSession() as http,
    ):
        url = found.group(1)
        async with http.post(url + "/auth/login",
                             json={"user": "mallory", "wallets": []}) as resp:
            assert resp.status == 404
            assert "token" not in await resp.json()
        async with http.get(url + "/config.json") as resp:
            assert (await resp.json())["dev_login"] is False


async def test_toml_dev_mode_string_false_is_a_startup_error(tmp_path: Path, unit: float) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\nsecret = "{SECRET}"\ndev_mode = "false"\n')
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, "auth", "--config", str(config), "--port", "0", env=_env(tmp_path),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30 * unit):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "[auth] dev_mode must be a TOML boolean" in err.decode()


@pytest.mark.parametrize("command", ["auth", "push", "run"])
async def test_dev_maybe_is_a_startup_error_naming_the_variable(
    tmp_path: Path, unit: float, command: str
) -> None:
    env = _env(tmp_path, CHAINPUSH_DEV="maybe", CHAINPUSH_AUTH_SECRET=SECRET)
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, command, *(["--no-watcher"] if command == "run" else []),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30 * unit):
        _, err = await proc.communicate()
    assert proc.returncode == 2, err.decode()
    assert "CHAINPUSH_DEV" in err.decode() and "'maybe'" in err.decode()


async def test_demo_dev_login_stays_off_beside_a_real_secret_unless_asked(
    tmp_path: Path, unit: float
) -> None:
    """`chainpush auth` with a real secret: dev login only with an explicit CHAINPUSH_DEV=1."""
    env = _env(tmp_path, CHAINPUSH_AUTH_SECRET=SECRET)
    async with (
        cli(["auth", "--port", "0"], env, tmp_path, r"auth service at (http://\S+)", unit)
        as (found, _), aiohttp.ClientSession() as http,
    ):
        async with http.post(found.group(1) + "/auth/login", json={"user": "a"}) as resp:
            assert resp.status == 404
    env["CHAINPUSH_DEV"] = "yes"
    async with (
        cli(["auth", "--port", "0"], env, tmp_path, r"auth service at (http://\S+)", unit)
        as (found, lines), aiohttp.ClientSession() as http,
    ):
        assert any("never expose this auth service" in line for line in lines)
        async with http.post(found.group(1) + "/auth/login", json={"user": "a"}) as resp:
            assert resp.status == 200


# --- item 7: a Redis that answers errors must not kill collect, dispatch or a node ------------


@pytest.fixture
def clusterdown_redis(tmp_path: Path) -> Iterator[str]:
    """A real redis-server in cluster mode with no slots assigned: every keyed command answers
    ``CLUSTERDOWN Hash slot not served`` (what a cluster mid-failover or misconfigured says)."""
    from chainpush import procs
    from tests.integration.cluster_support import free_cluster_port

    port = free_cluster_port()  # its cluster bus port (port + 10000) must be free too
    data = tmp_path / "redis-cluster"
    data.mkdir()
    server = procs.spawn(
        "redis", [procs.find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--dir", str(data),
                  "--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf")],
        data / "redis.log", f"redis://127.0.0.1:{port}/0",
        lambda: procs.redis_healthy("127.0.0.1", port))
    yield server.url
    server.stop()


@pytest.mark.parametrize("failure", ["clusterdown", "wrongtype"])
async def test_collect_stores_and_the_node_survives_a_redis_answering_errors(
    failure: str, request: pytest.FixtureRequest, mongo_uri: str, mongo_db_name: str,
    unit: float,
) -> None:
    import redis
    import redis.exceptions

    from tests.integration.push_support import (
        Client,
        collector_for,
        make_record,
        push_node,
        stores,
        token,
    )

    topic = "contract:DemoToken"
    if failure == "clusterdown":
        url = request.getfixturevalue("clusterdown_redis")
        cfg = stores(mongo_uri, url, mongo_db_name)
        expected: type[Exception] = redis.exceptions.ClusterDownError
    else:
        url = request.getfixturevalue("redis_url")
        cfg = stores(mongo_uri, url, mongo_db_name)
        expected = redis.exceptions.ResponseError
        # someone else's string where the registry keeps a hash: WRONGTYPE on every use
        with redis.Redis.from_url(url) as r:
            r.set(f"{cfg.namespace}:topic:{topic}", "not a hash")
    with redis.Redis.from_url(url) as r, pytest.raises(expected):  # the failure is real
        r.hgetall(f"{cfg.namespace}:topic:{topic}")

    async with push_node(cfg, "n1", unit) as node, collector_for(cfg) as collector:
        running = asyncio.ensure_future(node.run())
        async with Client.connect(node.url, token()) as client:
            answer = await client.subscribe(topic, since=0)
            assert answer["type"] == "subscribed", answer
            records = [make_record(n) for n in range(6)]
            async with asyncio.timeout(10 * unit):
                await collector.accept(records)  # never raises because dispatch failed
            assert await collector.store.max_offset(topic) == 6  # stored
            async with asyncio.timeout(20 * unit):  # delivered by the node's reconcile
                got = await client.until(6, topic)
            assert [m["offset"] for m in got] == [1, 2, 3, 4, 5, 6]
        assert not running.done(), running  # the node's loops are alive
        dispatcher = collector.dispatch
        assert isinstance(dispatcher, Dispatcher)
        assert dispatcher.metrics.counters["chainpush_redis_errors_total"] >= 1
        assert node.metrics.counters["chainpush_redis_errors_total"] >= 1
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_collect_never_fails_because_dispatch_did(mongo_uri: str, mongo_db_name: str
                                                        ) -> None:
    """Any dispatch failure, not only Redis's: counted, the record stays stored."""
    from chainpush.push.collect import Collector
    from chainpush.push.records import StoredMessage
    from tests.integration.push_support import FAST, make_record

    class Broken:
        calls = 0

        async def publish(self, messages: Sequence[StoredMessage]) -> None:
            self.calls += 1
            raise RuntimeError("dispatch bug")

    broken = Broken()
    async with Collector(mongo_uri=mongo_uri, database=mongo_db_name, dispatch=broken,
                         retry=FAST) as collector:
        await collector.accept([make_record(n) for n in range(3)])
        await collector.accept([make_record(3)])
        assert await collector.store.max_offset("contract:DemoToken") == 4
        assert broken.calls == 2  # tried again for every batch (one publish per batch)
        assert collector.metrics.counters["chainpush_dispatch_errors_total"] == 2


# --- item 6: routing by ABI types, end to end (anvil → watcher → collect → node → client) -----

STRANGER = "0xdD2FD4581271e230360230F9337D5c0430Bf44C0"  # anvil account 18, checksummed


async def test_a_string_that_looks_like_an_address_reaches_no_stranger(
    anvil: Any, mongo_uri: str, redis_url: str, mongo_db_name: str, tmp_path: Path,
    unit: float,
) -> None:
    """DemoToken's `Message(from, to, string text, bytes data)` and `Batch(..., string note)`
    with the stranger's checksummed address as text: the stranger's `user:` topic gets only
    the Transfer that really names them; the real recipient, subscribed in lower case (as
    MetaMask gives addresses), gets the Message."""
    from eth_utils.address import to_checksum_address as checksum

    from chainpush.watcher.config import load_config
    from chainpush.watcher.service import Watcher
    from tests.integration import watch_support as ws
    from tests.integration.push_support import Client, collector_for, push_node, stores, token

    url = anvil.http_url
    demo, _ = ws.deploy(url, "DemoToken")
    recipient = checksum(ws.ACCOUNTS[1])
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[anvil.ws_url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": demo}]))

    def send(data: str) -> None:
        ws.rpc(url, "eth_sendTransaction", [{"from": ws.OWNER, "to": demo, "data": data,
                                             "gas": hex(300_000)}])

    async with (
        push_node(cfg, "n1", unit) as node, collector_for(cfg) as collector,
        Watcher(config, collector) as watcher,
        Client.connect(node.url, token("stranger", topics=(), wallets=(STRANGER,))) as stranger,
        Client.connect(node.url, token("recipient", topics=(), wallets=(recipient,))) as mine,
    ):
        for client, wallet in ((stranger, STRANGER), (mine, recipient)):
            answer = await client.subscribe(f"user:{wallet.lower()}", since=0)
            assert answer["type"] == "subscribed", answer
            assert answer["topic"] == f"user:{wallet}"  # normalised to EIP-55
        task = asyncio.create_task(watcher.run())
        try:
            await asyncio.to_thread(send, ws.calldata(
                "sendMessage(address,string,bytes)", ["address", "string", "bytes"],
                [recipient, STRANGER, b"\x01"]))
            await asyncio.to_thread(send, ws.calldata(
                "batch(uint256[],address[],string)", ["uint256[]", "address[]", "string"],
                [[1], [recipient], STRANGER]))
            await asyncio.to_thread(send, ws.calldata(
                "emitTagged(bytes32,string,int256,bool)", ["bytes32", "string", "int256", "bool"],
                [b"\x02" * 32, STRANGER, -1, True]))
            # the last one really names the stranger: everything before it is in its topic
            # before it, if it was routed there at all
            await asyncio.to_thread(send, ws.calldata(
                "transfer(address,uint256)", ["address", "uint256"], [STRANGER, 5]))
            async with asyncio.timeout(30 * unit):
                got = await stranger.until(1)
                mine_got = await mine.until(2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    first = got[0]
    assert first["offset"] == 1 and first["record"]["event"] == "Transfer", first
    assert first["record"]["address_paths"] == ["from", "to"]
    assert [m["record"]["event"] for m in mine_got] == ["Message", "Batch"]
    assert all(m["topic"] == f"user:{recipient}" for m in mine_got)
    message = mine_got[0]["record"]
    assert message["args"]["text"] == STRANGER and message["address_paths"] == ["from", "to"]
    assert mine_got[1]["record"]["address_paths"] == ["operator", "recipients.0"]
    # and in MongoDB: the stranger's topic holds only the Transfer
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        rows = list(client[mongo_db_name]["messages"].find({"topic": f"user:{STRANGER}"}))
    finally:
        client.close()
    assert [r["record"]["event"] for r in rows] == ["Transfer"]


# --- item 8: secrets and client text stay out of logs and printed configs ----------------------


async def test_rpc_api_keys_never_reach_the_logs(
    anvil: Any, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Provider URLs carry API keys in the path or query. The watcher fails over from a dead
    endpoint (a WARNING naming it) to anvil (an INFO naming it): neither key is logged."""
    import logging

    from chainpush import procs
    from chainpush.watcher.config import load_config
    from chainpush.watcher.service import Watcher
    from chainpush.watcher.sink import MongoSink
    from tests.integration import watch_support as ws

    dead = f"http://127.0.0.1:{procs.free_port()}/?apikey=DEADKEY123"
    live = f"{anvil.http_url}/?apikey=LIVEKEY456"
    demo, _ = ws.deploy(anvil.http_url, "DemoToken")
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[dead, live], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": demo}]))
    assert "DEADKEY123" not in json.dumps(config.describe())  # --print-config
    caplog.set_level(logging.INFO)
    async with MongoSink(mongo_uri, mongo_db_name) as sink, Watcher(config, sink) as watcher:
        task = asyncio.create_task(watcher.run())
        try:
            await ws.until_caught_up(lambda: watcher.tip_hash, anvil.http_url, 30 * unit,
                                     task.done)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "node connected: http http://127.0.0.1:" in text and "/***" in text
    assert any(r.levelno == logging.WARNING and "127.0.0.1" in r.getMessage()
               for r in caplog.records)  # the dead endpoint was named, redacted
    assert "DEADKEY123" not in text and "LIVEKEY456" not in text


def test_print_config_redacts_store_passwords(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "c.toml"
    config.write_text(
        f'[auth]\nsecret = "{SECRET}"\n[stores]\n'
        'mongo_uri = "mongodb://app:m0ngoPass@db.example.com:27017/?authSource=admin"\n'
        'redis_url = "redis://default:r3disPass@cache.example.com:6379/0"\n')
    for command in ("push", "auth"):
        done = subprocess.run([CHAINPUSH, command, "--config", str(config), "--print-config"],
                              capture_output=True, text=True, env=_env(tmp_path), timeout=60,
                              check=True)
        printed = json.loads(done.stdout)
        assert "m0ngoPass" not in done.stdout and "r3disPass" not in done.stdout
        assert printed["stores"]["mongo_uri"] == (
            "mongodb://app:***@db.example.com:27017/?authSource=admin")
        assert printed["stores"]["redis_url"] == "redis://default:***@cache.example.com:6379/0"


async def test_bad_frames_are_not_info_lines_and_cannot_forge_any(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from tests.integration.push_support import Client, push_node, stores, token

    forged = "contract:A\n2026-12-01 12:00:00,000 INFO push.node: conn 9: user admin connected"
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    caplog.set_level(logging.DEBUG, logger="chainpush.push")
    async with push_node(cfg, "n1", unit) as node, Client.connect(node.url, token()) as client:
        caplog.clear()
        bad = ["not json", '{"type": "nope"}', "[1]", '{"type": "subscribe"}',
               json.dumps({"type": "unsubscribe", "topic": forged}),
               json.dumps({"type": "subscribe", "topic": forged}),
               json.dumps({"type": "unsubscribe", "topic": "contract:Never"})] * 4
        for frame in bad:
            await client.ws.send(frame)
        await client.ws.send(json.dumps({"type": "ping", "ref": "sync"}))
        while True:  # every error frame comes before the pong
            got = await client.next_frame()
            if got["type"] == "pong":
                break
        errors = [f for f in client.frames if f["type"] == "error"]
        assert len(errors) == len(bad)
        codes = [f["code"] for f in errors[:7]]
        assert codes == ["bad_json", "unknown_type", "bad_message", "bad_message",
                         "unknown_topic", "unknown_topic", "not_subscribed"]
    mine = [r for r in caplog.records if r.name.startswith("chainpush.push")]
    assert not [r.getMessage() for r in mine
                if r.levelno >= logging.INFO and "conn" in r.getMessage()
                and "connected" not in r.getMessage() and "disconnected" not in r.getMessage()]
    assert len([r for r in mine if r.levelno == logging.DEBUG]) >= len(bad)
    for record in mine:
        assert "\n" not in record.getMessage() and "\r" not in record.getMessage()


@pytest.mark.parametrize("exp", ["Infinity", "NaN", "-Infinity", "1e400"])
async def test_a_non_finite_exp_closes_4001_not_1011(
    exp: str, mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
) -> None:
    import base64
    import hashlib
    import hmac

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from tests.integration.push_support import push_node, stores

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    # written by hand: JSON with a bare Infinity / NaN, as an attacker's encoder would
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(f'{{"sub":"mallory","iss":"chainpush","exp":{exp}}}'.encode())
    sig = b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with push_node(cfg, "n1", unit) as node, connect(node.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": f"{head}.{body}.{sig}"}))
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10 * unit):
                await ws.recv()
        assert ws.close_code == 4001, (ws.close_code, ws.close_reason)


async def test_user_foo_is_unknown_topic_as_documented(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
) -> None:
    from tests.integration.push_support import Client, push_node, stores, token

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with push_node(cfg, "n1", unit) as node, Client.connect(node.url, token()) as client:
        for topic in ("user:foo", "user:0x1234"):
            answer = await client.subscribe(topic)
            assert answer["type"] == "error" and answer["code"] == "unknown_topic", answer


async def test_4003_comes_at_expiry_plus_leeway_as_documented(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
) -> None:
    """docs/protocol.md §2: the node closes with 4003 at ``exp + leeway_s`` (its clock), the
    moment after which it would refuse the same token at auth: never earlier (a token it just
    accepted is not closed at once), never much later."""
    import time

    from websockets.exceptions import ConnectionClosed

    from chainpush.push.tokens import Claims, TokenConfig, issue
    from tests.integration.push_support import Client, push_node, stores

    leeway = 1.0
    tokens = TokenConfig(secret=SECRET, leeway_s=leeway)
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    now = time.time()
    exp = int(now) + 2
    tok = issue(Claims(user="alice", wallets=(), topics=("contract:*",), expires_at=exp),
                tokens, now=now)
    async with push_node(cfg, "n1", unit, tokens=tokens) as node:
        async with Client.connect(node.url, tok) as client:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(exp + leeway - time.time() + 5 * unit):
                    while True:
                        await client.next_frame()
            closed_at = time.time()
            assert client.ws.close_code == 4003
        assert exp + leeway - 0.05 <= closed_at <= exp + leeway + 2 * unit


async def test_the_watcher_survives_a_redis_answering_errors(
    anvil: Any, clusterdown_redis: str, mongo_uri: str, mongo_db_name: str, tmp_path: Path,
    unit: float,
) -> None:
    """`chainpush watch` with its own Collector → Redis answering CLUSTERDOWN (once: MovedError
    at every restart): the watcher keeps following the chain and every record is stored."""
    from chainpush.push.collect import Collector
    from chainpush.watcher.config import load_config
    from chainpush.watcher.service import Watcher
    from tests.integration import watch_support as ws

    url = anvil.http_url
    demo, _ = ws.deploy(url, "DemoToken")
    config = load_config(ws.write_config(
        tmp_path / "w.toml", urls=[anvil.ws_url], mongo_uri=mongo_uri, database=mongo_db_name,
        contracts=[{"name": "DemoToken", "address": demo}]))
    n = await asyncio.to_thread(ws.mine_traffic, url, demo, blocks=3, txs_per_block=2)
    async with (
        Collector(mongo_uri=mongo_uri, database=mongo_db_name, redis_url=clusterdown_redis)
        as collector, Watcher(config, collector) as watcher,
    ):
        task = asyncio.create_task(watcher.run())
        try:
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 30 * unit, task.done)
            await asyncio.to_thread(ws.mine_traffic, url, demo, blocks=2, txs_per_block=2,
                                    first=n)
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 30 * unit, task.done)
            assert not task.done(), task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stored = await collector.store.max_offset("contract:DemoToken")
        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        assert stored == len([d for d in docs if d["contract"] == "DemoToken"])
        assert stored >= n + 4  # every tx's log (and the constructor's mint) is stored
        dispatcher = collector.dispatch
        assert isinstance(dispatcher, Dispatcher)
        assert dispatcher.metrics.counters["chainpush_redis_errors_total"] >= 1
