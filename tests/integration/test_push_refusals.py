"""Every refusal gets its documented answer (docs/protocol.md), and other clients carry on."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chainpush.push import wire
from chainpush.push.collect import Collector
from chainpush.push.node import PushNode
from chainpush.push.tokens import TokenConfig
from tests.integration.push_support import (
    SECRET,
    Client,
    collector_for,
    make_record,
    push_node,
    stores,
    token,
)

pytestmark = pytest.mark.integration
TOPIC = "contract:DemoToken"


@pytest.fixture
async def stack(mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
                ) -> AsyncIterator[tuple[PushNode, Collector]]:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit, auth_timeout_s=0.5 * unit, max_frame_bytes=4096,
                  rate_per_s=5, rate_burst=10, max_send_buffer_bytes=128 * 1024,
                  allowed_origins=("http://good.example",)) as n,
    ):
        yield n, collector


@pytest.fixture
def node(stack: tuple[PushNode, Collector]) -> PushNode:
    return stack[0]


async def closed_with(client: Client) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await client.next_frame()
    return client.ws.close_code


async def test_auth_refusals(node: PushNode, unit: float) -> None:
    async with asyncio.timeout(10 * unit):
        async with Client.connect(node.url) as c:
            await c.ws.send(json.dumps({"type": "auth", "token": "not.a.jwt"}))
            assert await closed_with(c) == wire.CLOSE_AUTH_FAILED
        forged = token().rsplit(".", 1)[0] + ".AAAA"
        async with Client.connect(node.url) as c:
            await c.ws.send(json.dumps({"type": "auth", "token": forged}))
            assert await closed_with(c) == wire.CLOSE_AUTH_FAILED
        async with Client.connect(node.url) as c:
            await c.ws.send(json.dumps({"type": "auth", "token": token(ttl_s=-60)}))
            assert await closed_with(c) == wire.CLOSE_TOKEN_EXPIRED
        async with Client.connect(node.url) as c:
            await c.ws.send(json.dumps({"type": "subscribe", "topic": TOPIC}))
            assert await closed_with(c) == wire.CLOSE_BAD_FIRST_FRAME
        async with Client.connect(node.url) as c:
            await c.ws.send("{nope")
            assert await closed_with(c) == wire.CLOSE_BAD_FIRST_FRAME
        async with Client.connect(node.url) as c:  # says nothing
            assert await closed_with(c) == wire.CLOSE_AUTH_TIMEOUT
        assert c.ws.close_reason == "authentication timeout"


async def test_origin_allowlist(node: PushNode, unit: float) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(node.url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    async with Client.connect(node.url, token(), origin="http://good.example"):  # type: ignore[arg-type]
        pass


async def test_bad_frames_get_error_frames_and_the_connection_stays(
    node: PushNode, unit: float
) -> None:
    async with asyncio.timeout(10 * unit), Client.connect(node.url, token()) as c:
        for frame, code in [
            ("{bad json", "bad_json"),
            ("[" * 4000, "bad_json"),  # deep nesting: refused before the C parser recurses
            (b"\x00\x01", "bad_frame"),
            ('{"type": "shout"}', "unknown_type"),
            ('{"type": "subscribe", "topic": "contract:X", "since": "x"}', "bad_message"),
            ('{"type": "subscribe", "topic": "user:0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"}',
             "forbidden_topic"),
            ('{"type": "unsubscribe", "topic": "contract:X"}', "not_subscribed"),
        ]:
            await c.ws.send(frame)
            reply = await c.next_frame()
            assert (reply["type"], reply["code"]) == ("error", code), frame
        await c.ws.send('{"type": "ping", "ref": "p1"}')
        assert await c.next_frame() == {"type": "pong", "ref": "p1"}
        assert (await c.subscribe(TOPIC))["type"] == "subscribed"
        await c.ws.send(json.dumps({"type": "unsubscribe", "topic": TOPIC, "ref": "u"}))
        assert (await c.next_frame())["type"] == "unsubscribed"


async def test_oversized_frame_and_flood_close_only_the_offender(
    stack: tuple[PushNode, Collector], unit: float
) -> None:
    node, collector = stack
    async with asyncio.timeout(10 * unit), Client.connect(node.url, token()) as healthy:
        await healthy.subscribe(TOPIC)
        async with Client.connect(node.url, token()) as big:
            await big.ws.send(json.dumps({"type": "ping", "ref": "x" * 5000}))
            assert await closed_with(big) == wire.CLOSE_TOO_BIG
        async with Client.connect(node.url, token()) as flood:
            for _ in range(40):
                await flood.ws.send('{"type": "ping"}')
            assert await closed_with(flood) == wire.CLOSE_RATE_LIMITED
        pongs = [f for f in flood.frames if f["type"] == "pong"]
        assert 9 <= len(pongs) < 40  # the burst was served, then the connection closed
        await collector.accept([make_record(1)])
        assert (await healthy.until(1))[0]["offset"] == 1


async def test_a_client_that_never_reads_is_closed_as_slow_consumer(
    stack: tuple[PushNode, Collector], unit: float
) -> None:
    node, collector = stack
    topic = "state:DemoToken"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    async with asyncio.timeout(60 * unit), Client.connect(node.url, token()) as healthy:
        async with Client.connect(node.url, token(), sock=sock, max_queue=1,
                                  compression=None) as stuck:
            await stuck.subscribe(topic)
            await healthy.subscribe(topic)
            # one message at a time through collect: the healthy client reads each one; the
            # stuck one never reads, so its send buffer only grows until the node gives up
            sent = 0
            while len(node.users["alice"]) == 2 and sent < 1000:
                record = make_record(sent, kind="state")
                record["args"]["blob"] = secrets.token_hex(16_000)  # 32 KB a message
                await collector.accept([record])
                sent += 1
                await healthy.until(sent)
            assert len(node.users["alice"]) == 1, "the stuck client was never closed"
            assert await closed_with(stuck) == wire.CLOSE_SLOW_CONSUMER
            assert stuck.ws.close_reason == "slow consumer"
            assert len(stuck.messages) < sent
        assert healthy.offsets(topic) == list(range(1, sent + 1))
        assert node.metrics.counters["chainpush_closes_total"] == 1


async def test_token_expiry_while_connected(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    strict = TokenConfig(secret=SECRET, leeway_s=0)
    async with push_node(cfg, "n1", unit, tokens=strict) as n, \
            asyncio.timeout(10 * unit), Client.connect(n.url, token(ttl_s=1.5)) as c:
        assert await closed_with(c) == wire.CLOSE_TOKEN_EXPIRED
