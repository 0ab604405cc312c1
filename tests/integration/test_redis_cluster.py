"""Dispatch on a real Redis Cluster (3 masters, Debian's redis-server 7): ``redis_url`` with
``?cluster=true`` selects the cluster client and sharded pub/sub for node inboxes.

The push node's reconcile is set to a minute here, so every message that arrives in time came
through the live path (sharded pub/sub), not through the periodic MongoDB catch-up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from chainpush.constants import RedisNames
from chainpush.push.collect import Collector
from chainpush.push.node import PushNode
from tests.integration.cluster_support import Cluster, redis_cluster
from tests.integration.push_support import (
    ResilientClient,
    collector_for,
    make_record,
    push_node,
    stores,
    token,
)

pytestmark = pytest.mark.integration

TOPIC = "contract:DemoToken"
RECONCILE_S = 60.0  # longer than any test: live delivery only


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with redis_cluster(tmp_path / "cluster") as c:
        yield c


def counter(node: PushNode, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", node.metrics.render(), re.M)
    assert found is not None, name
    return float(found.group(1))


async def feed(collector: Collector, start: int, stop: int, pause_s: float = 0.0) -> None:
    for n in range(start, stop):
        await collector.accept([make_record(n)])
        if pause_s:
            await asyncio.sleep(pause_s)


async def eventually(check: Callable[[], bool], timeout_s: float) -> None:
    """Wait until ``check()`` holds (a state with no event of its own to wait on)."""
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - nothing to await: the node exposes a state only
            await asyncio.sleep(0.05)


def inbox_slot(node: PushNode) -> int:
    return int(key_slot(RedisNames(node.stores.namespace).inbox(node.config.node_id).encode()))


async def test_cluster_url_dispatches_over_sharded_pubsub(
    cluster: Cluster, mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, cluster.url, mongo_db_name)
    async with (
        push_node(cfg, "c1", unit, reconcile_s=RECONCILE_S) as node,
        collector_for(cfg) as collector,
        asyncio.timeout(30 * unit),
    ):
        client = ResilientClient([node.url], token(), TOPIC, retry_s=0.1 * unit)
        task = asyncio.create_task(client.run())
        try:
            await asyncio.sleep(0.5 * unit)  # subscribed and registered
            await feed(collector, 0, 30)
            await client.wait_for(30)
        finally:
            task.cancel()
        assert client.offsets == list(range(1, 31))
        inbox = RedisNames(cfg.namespace).inbox("c1")
        owner = cluster.owner(inbox_slot(node))
        # a sharded channel on the one master of its slot; no classic channel anywhere
        assert inbox in cluster.run_cli(owner, "pubsub", "shardchannels").split()
        for n in cluster.nodes:
            assert inbox not in cluster.run_cli(n.port, "pubsub", "channels").split()


async def test_inbox_slot_moved_resubscribes_and_keeps_delivering_live(
    cluster: Cluster, mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, cluster.url, mongo_db_name)
    async with (
        push_node(cfg, "c1", unit, reconcile_s=RECONCILE_S) as node,
        collector_for(cfg) as collector,
        asyncio.timeout(40 * unit),
    ):
        client = ResilientClient([node.url], token(), TOPIC, retry_s=0.1 * unit)
        task = asyncio.create_task(client.run())
        try:
            await asyncio.sleep(0.5 * unit)
            await feed(collector, 0, 10)
            await client.wait_for(10)
            slot = inbox_slot(node)
            before = cluster.owner(slot)
            target = next(n.port for n in cluster.nodes if n.port != before)
            cluster.move_slot(slot, target)
            await feed(collector, 10, 40, pause_s=0.02)
            await client.wait_for(40)
        finally:
            task.cancel()
        assert client.offsets == list(range(1, 41))
        assert len(set(client.ids)) == 40
        assert counter(node, "chainpush_inbox_resubscribes_total") >= 1
        inbox = RedisNames(cfg.namespace).inbox("c1")
        assert inbox in cluster.run_cli(target, "pubsub", "shardchannels").split()
        assert node.health()["redis"] is True


async def test_master_killed_mid_stream_then_back_loses_nothing(
    cluster: Cluster, mongo_uri: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, cluster.url, mongo_db_name)
    async with (
        push_node(cfg, "c1", unit, reconcile_s=RECONCILE_S) as node,
        collector_for(cfg) as collector,
        asyncio.timeout(60 * unit),
    ):
        client = ResilientClient([node.url], token(), TOPIC, retry_s=0.1 * unit)
        task = asyncio.create_task(client.run())
        try:
            await asyncio.sleep(0.5 * unit)
            await feed(collector, 0, 10)
            await client.wait_for(10)
            victim = cluster.node(cluster.owner(inbox_slot(node)))
            victim.kill()  # the inbox's master: its slots are down, the cluster soon fails
            # collect keeps storing while dispatch fails (counted, never raised)
            await feed(collector, 10, 30, pause_s=0.05)
            # /healthz says 503 while the inbox is lost
            await eventually(lambda: not node.health()["redis"], 10 * unit)
            victim.start(cluster.server)  # rejoins with its slots from nodes.conf
            await asyncio.to_thread(cluster.wait_ok)
            await feed(collector, 30, 40, pause_s=0.02)
            await client.wait_for(40)
        finally:
            task.cancel()
        assert client.offsets == list(range(1, 41))
        assert len(set(client.ids)) == 40
        assert counter(node, "chainpush_inbox_resubscribes_total") >= 1
