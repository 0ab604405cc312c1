"""Hostile or heavy clients cannot hurt anyone else (issue 10, items 2 to 5), on real parts:
a PushNode on a real port, real websocket clients, real Redis and the MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import monitoring
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chainpush.push import wire
from chainpush.push.collect import Collector
from chainpush.push.node import PushNode
from tests.integration.push_support import (
    Client,
    collector_for,
    make_record,
    push_node,
    stores,
    token,
)

pytestmark = pytest.mark.integration
TOPIC = "contract:DemoToken"


async def closed_with(client: Client) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await client.next_frame()
    return client.ws.close_code


def with_ids(n: int) -> dict[str, Any]:
    record = make_record(n)
    record["args"]["ids"] = ["1", "2", "3"]
    return record


@pytest.fixture
async def stack(mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
                ) -> AsyncIterator[tuple[PushNode, Collector]]:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with collector_for(cfg) as collector, push_node(cfg, "n1", unit) as node:
        yield node, collector


# --- item 3: one subscriber's bad filter never costs another a message ----------------------


async def test_bad_filter_values_are_refused_and_others_keep_every_message(
    stack: tuple[PushNode, Collector], unit: float
) -> None:
    node, collector = stack
    async with asyncio.timeout(20 * unit), \
            Client.connect(node.url, token()) as attacker, \
            Client.connect(node.url, token()) as healthy:
        # '²'.isdigit() is true but int('²') raises; int() refuses more than 4,300 digits
        for key in ("args.ids.²", "args.ids." + "9" * 5000):
            reply = await attacker.subscribe(TOPIC, since=0, filter={key: "1"})
            assert (reply["type"], reply.get("code")) == ("error", "bad_message"), key
        assert (await attacker.subscribe(TOPIC, filter={"args.ids.1": "2"}))["type"] \
            == "subscribed"
        assert (await healthy.subscribe(TOPIC, since=0))["type"] == "subscribed"
        await collector.accept([with_ids(n) for n in range(20)])
        assert [m["offset"] for m in await healthy.until(20)] == list(range(1, 21))
        assert [m["offset"] for m in await attacker.until(20)] == list(range(1, 21))
        assert not node.metrics.counters["chainpush_subscription_failures_total"]


# --- item 2: filters are bounded, and a big subscribe does not hold the event loop ----------


async def ping_rtts(url: str, seconds: float, every_s: float = 0.02) -> list[float]:
    """Round trips of application pings, one every ``every_s``, for ``seconds``."""
    rtts: list[float] = []
    async with Client.connect(url, token()) as probe:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            start = time.monotonic()
            await probe.ws.send(json.dumps({"type": "ping", "ref": str(n)}))
            while (await probe.next_frame()).get("ref") != str(n):
                pass
            rtts.append(time.monotonic() - start)
            await asyncio.sleep(every_s)
    return rtts


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


#: the largest filter the limits admit: 16 keys, 8 KiB of values
MAX_FILTER = {f"args.k{i}": [f"v{i}-{j:03d}" for j in range(48)] for i in range(15)} \
    | {"event": ["Transfer"]}

#: the issue's ~64 KB filter (under max_frame_bytes), with since: 0
BIG = json.dumps({"type": "subscribe", "topic": TOPIC, "since": 0,
                  "filter": {"event": ["0x"] * 12900}}, separators=(",", ":"))


async def test_huge_filters_are_refused_and_big_subscribes_do_not_freeze_the_node(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit, rate_per_s=50, rate_burst=50) as node,
        asyncio.timeout(60 * unit),
    ):
        await collector.accept([make_record(n) for n in range(600)])
        async with Client.connect(node.url, token()) as c:
            await c.ws.send(BIG)
            reply = await c.next_frame()
            assert (reply["type"], reply.get("code")) == ("error", "filter_too_large")
            assert (await c.subscribe(TOPIC, since=0, filter=MAX_FILTER))["type"] \
                == "subscribed"

        async def attack() -> None:
            # four connections, each re-subscribing from 0 with the largest legal filter:
            # every subscribe replays 600 messages through it
            # it never reads: its own closing handshake would wait out close_timeout
            async with Client.connect(node.url, token(), close_timeout=0.2) as a:
                while True:
                    await a.ws.send(json.dumps({"type": "subscribe", "topic": TOPIC,
                                                "since": 0, "filter": MAX_FILTER}))
                    await a.ws.send(BIG)
                    await asyncio.sleep(0.25)

        attackers = [asyncio.create_task(attack()) for _ in range(4)]
        try:
            await asyncio.sleep(0.5 * unit)
            rtts = await ping_rtts(node.url, 4 * unit)
        finally:
            for task in attackers:
                task.cancel()
            await asyncio.gather(*attackers, return_exceptions=True)
        assert p99(rtts) < 0.15, f"ping p99 {p99(rtts) * 1000:.0f} ms under the filter attack"


# --- item 4: clients that stop reading are closed within a bound, and their memory freed ----


def server_sockets(port: int) -> int:
    """Open TCP connections whose local port is ``port`` (the node's side), from the kernel."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.split(":")[1], 16) == port and state in ("01", "08"):  # ESTABLISHED,
                count += 1  # CLOSE_WAIT: both still hold the connection's buffers
    return count


def stuck_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_clients_that_stop_reading_are_always_closed_and_released(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    buffer_cap = 512 * 1024
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit, max_send_buffer_bytes=buffer_cap,
                  close_timeout_s=1.0 * unit, ping_interval_s=1.0 * unit,
                  ping_timeout_s=1.0 * unit) as node,
        asyncio.timeout(60 * unit),
        Client.connect(node.url, token()) as healthy,
    ):
        topic = "state:DemoToken"
        stuck: list[Client] = []
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(4):
                client = await stack.enter_async_context(Client.connect(
                    node.url, token(), sock=stuck_socket(node.port), max_queue=1,
                    compression=None, close_timeout=0.2))
                await client.subscribe(topic)
                stuck.append(client)
            await healthy.subscribe(topic)
            queued = node.metrics.gauges["chainpush_send_queue_bytes"]
            high = 0.0
            sent = 0
            # 152 KB messages: the stuck clients never read, so their buffers fill; the node
            # must close each, and abort it when the close frame cannot get through either
            while server_sockets(node.port) > 1 and sent < 200:
                record = make_record(sent, kind="state")
                record["args"]["blob"] = secrets.token_hex(76_000)
                await collector.accept([record])
                sent += 1
                await healthy.until(sent)
                high = max(high, queued())
            deadline = time.monotonic() + 5 * unit  # close_timeout_s, with room
            # the kernel's socket table is the witness (no event to wait on: the stuck clients
            # do not read, so they never notice the reset)
            while server_sockets(node.port) > 1 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert server_sockets(node.port) == 1, "a stuck client was never closed"
            assert len(node.connections) == 1
            assert node.metrics.counters["chainpush_slow_consumers_total"] == 4
            assert node.metrics.counters["chainpush_aborts_total"] >= 1
            # memory: each stuck connection held at most its cap (plus one frame), then none
            assert high <= 4 * (buffer_cap + 160_000) + 400_000
            assert queued() < 200_000
            assert "chainpush_aborts_total" in node.metrics.render()
        assert healthy.offsets(topic) == list(range(1, sent + 1))


# --- item 5: caps, each with its documented answer --------------------------------------------


async def test_connection_and_topic_caps(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        push_node(cfg, "n1", unit, max_connections_per_user=3, max_connections_per_ip=6,
                  connect_rate_per_ip_s=1.0, connect_burst_per_ip=8, max_topics=3,
                  contracts=("DemoToken", "Other", "Third", "Fourth")) as node,
        asyncio.timeout(30 * unit),
    ):
        # per user: the fourth connection of one user is closed with 4004
        async with Client.connect(node.url, token("u1")) as c1, \
                Client.connect(node.url, token("u1")), Client.connect(node.url, token("u1")):
            async with Client.connect(node.url) as c4:
                await c4.ws.send(json.dumps({"type": "auth", "token": token("u1")}))
                assert await closed_with(c4) == wire.CLOSE_TOO_MANY_CONNECTIONS
            # a contract nobody configured: unknown_topic, not a silent subscription
            reply = await c1.subscribe("contract:Auktion")
            assert (reply["type"], reply.get("code")) == ("error", "unknown_topic")
            # distinct topics per node
            for topic in ("contract:DemoToken", "contract:Other", "state:DemoToken"):
                assert (await c1.subscribe(topic))["type"] == "subscribed"
            reply = await c1.subscribe("contract:Third")
            assert (reply["type"], reply.get("code")) == ("error", "too_many_topics")
        # per IP: open TCP connections from one address (authenticated or not) are capped: 429
        held = []
        for _ in range(6):
            ws = await connect(node.url, local_addr=("127.0.0.2", 0))
            held.append(ws)
        with pytest.raises(InvalidStatus) as info:
            await connect(node.url, local_addr=("127.0.0.2", 0))
        assert info.value.response.status_code == 429
        async with Client.connect(node.url, token("u2")):  # other addresses are served
            pass
        for ws in held:
            await ws.close()
        # per IP: the connection rate (burst 8, then 1 a second): 429
        statuses = []
        for _ in range(10):
            try:
                ws = await connect(node.url, local_addr=("127.0.0.3", 0))
                await ws.close()
                statuses.append(101)
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)
        assert statuses.count(101) <= 9 and 429 in statuses
        assert node.metrics.counters["chainpush_refused_total"] >= 2


async def test_node_connection_cap(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with push_node(cfg, "n1", unit, max_connections=3) as node, \
            asyncio.timeout(20 * unit):
        held = [await connect(node.url) for _ in range(3)]
        with pytest.raises(InvalidStatus) as info:
            await connect(node.url)
        assert info.value.response.status_code == 503
        for ws in held:
            await ws.close()
        async with Client.connect(node.url, token()):  # room again once they left
            pass


class FindCounter(monitoring.CommandListener):
    """Counts ``find`` commands per collection of one database (pymongo's public monitoring)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.finds: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.database_name == self.database:
            name = str(event.command["find"])
            self.finds[name] = self.finds.get(name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_reconcile_reads_every_head_in_one_query(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    counter = FindCounter(cfg.database)
    monitoring.register(counter)  # for the clients created from now on: the node's store
    topics = [f"contract:C{i}" for i in range(20)]
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit, reconcile_s=0.2 * unit) as node,
        asyncio.timeout(30 * unit),
        Client.connect(node.url, token()) as c,
    ):
        await collector.accept([make_record(i, contract=f"C{i}") for i in range(20)])
        for topic in topics:
            assert (await c.subscribe(topic))["type"] == "subscribed"
        before = dict(counter.finds)
        rounds = 0
        while rounds < 5:  # five reconcile intervals, each a full pass over the 20 topics
            await node.reconcile()
            rounds += 1
        streams = counter.finds.get("streams", 0) - before.get("streams", 0)
        messages = counter.finds.get("messages", 0) - before.get("messages", 0)
        # one query per pass (the loop's own passes may add a few), none per topic
        assert rounds <= streams <= rounds + 10, counter.finds
        assert messages < 20, f"{messages} per-topic head reads in {rounds} passes"
