"""Failures mid-stream lose nothing: a push node SIGKILLed, Redis restarted, MongoDB restarted."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chainpush import procs
from chainpush.push.collect import Collector
from tests.integration.push_support import (
    SECRET,
    ResilientClient,
    collector_for,
    make_record,
    push_node,
    stores,
    token,
)

pytestmark = pytest.mark.integration
TOPIC = "contract:DemoToken"
CHAINPUSH = str(Path(sys.executable).parent / "chainpush")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


@contextlib.contextmanager
def node_process(config: Path, node_id: str, tmp: Path) -> Iterator[tuple[procs.Server, str]]:
    port = procs.free_port()
    argv = [CHAINPUSH, "push", "--config", str(config), "--node-id", node_id, "--port", str(port)]
    server = procs.spawn(f"push-{node_id}", argv, tmp / f"{node_id}.log",
                         f"ws://127.0.0.1:{port}/ws",
                         lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
    try:
        yield server, server.url
    finally:
        server.stop()


async def feed(collector: Collector, start: int, stop: int) -> None:
    for n in range(start, stop, 2):
        await collector.accept([make_record(n), make_record(n + 1)])


def check(client: ResilientClient, total: int) -> None:
    assert client.offsets == list(range(1, total + 1))
    assert len(set(client.ids)) == total


async def test_push_node_sigkilled_clients_move_and_lose_nothing(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, tmp_path: Path
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    config = tmp_path / "chainpush.toml"
    config.write_text(
        f'[stores]\nmongo_uri = "{mongo_uri}"\nredis_url = "{redis_url}"\n'
        f'database = "{mongo_db_name}"\nnamespace = "{cfg.namespace}"\n'
        f'[push]\nheartbeat_s = 1.0\nnode_ttl_s = 3.0\nreconcile_s = {0.5 * unit}\n'
        f'[auth]\nsecret = "{SECRET}"\n'
    )
    total = 120
    with node_process(config, "k1", tmp_path) as (n1, url1), \
            node_process(config, "k2", tmp_path) as (_, url2):
        clients = [ResilientClient(urls, token(), TOPIC, retry_s=0.1 * unit)
                   for urls in ([url1, url2], [url1, url2], [url2, url1])]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        try:
            async with collector_for(cfg) as collector, asyncio.timeout(60 * unit):
                await feed(collector, 0, 40)
                for c in clients:
                    await c.wait_for(40)
                feeding = asyncio.create_task(feed(collector, 40, total))
                await clients[0].wait_for(60)
                n1.kill()  # SIGKILL mid-stream: no goodbye, no unregister
                await feeding
                for c in clients:
                    await c.wait_for(total)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        check(c, total)
    assert clients[0].nodes[-1] == url2 and clients[1].nodes[-1] == url2
    assert clients[2].nodes == [url2]  # the other node's client never noticed


@contextlib.asynccontextmanager
async def clients_on_two_nodes(cfg_stores: object, unit: float
                               ) -> AsyncIterator[list[ResilientClient]]:
    async with (
        push_node(cfg_stores, "r1", unit) as n1,  # type: ignore[arg-type]
        push_node(cfg_stores, "r2", unit) as n2,  # type: ignore[arg-type]
    ):
        clients = [ResilientClient([n.url], token(), TOPIC, retry_s=0.1 * unit)
                   for n in (n1, n2)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        try:
            yield clients
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_redis_restarted_mid_stream_loses_nothing(
    mongo_uri: str, mongo_db_name: str, unit: float, tmp_path: Path
) -> None:
    port = procs.free_port()
    redis = procs.start_redis(port=port, state_dir=tmp_path)
    try:
        cfg = stores(mongo_uri, redis.url, mongo_db_name)
        total = 100
        async with (
            collector_for(cfg) as collector,
            clients_on_two_nodes(cfg, unit) as clients,
            asyncio.timeout(60 * unit),
        ):
            await feed(collector, 0, 20)
            for c in clients:
                await c.wait_for(20)
            feeding = asyncio.create_task(feed(collector, 20, total))
            await clients[0].wait_for(40)
            redis.kill()  # registry and pub/sub gone; collect keeps storing to MongoDB
            await asyncio.sleep(0.5 * unit)  # let the stream run on without Redis for a while
            redis = procs.start_redis(port=port, state_dir=tmp_path)
            await feeding
            for c in clients:
                await c.wait_for(total)
        for c in clients:
            check(c, total)
    finally:
        redis.stop()


async def test_mongo_restarted_mid_stream_loses_nothing(
    redis_url: str, unit: float, tmp_path: Path
) -> None:
    port = procs.free_port()
    mongo = procs.start_mongo(port=port, state_dir=tmp_path)
    try:
        cfg = stores(mongo.url, redis_url, "cp_mongo_restart")
        total = 100
        async with (
            collector_for(cfg) as collector,
            clients_on_two_nodes(cfg, unit) as clients,
            asyncio.timeout(60 * unit),
        ):
            await feed(collector, 0, 20)
            for c in clients:
                await c.wait_for(20)
            feeding = asyncio.create_task(feed(collector, 20, total))
            await clients[0].wait_for(40)
            mongo.kill()  # collect holds (back-pressure); nodes' history reads retry
            await asyncio.sleep(0.5 * unit)  # an outage long enough for retries to happen
            mongo = procs.start_mongo(port=port, state_dir=tmp_path)
            await feeding
            for c in clients:
                await c.wait_for(total)
        for c in clients:
            check(c, total)
    finally:
        mongo.stop()


async def test_frozen_redis_does_not_stall_collect_and_loses_nothing(
    mongo_uri: str, mongo_db_name: str, unit: float, tmp_path: Path
) -> None:
    import os
    import signal
    import time

    redis = procs.start_redis(port=procs.free_port(), state_dir=tmp_path)
    try:
        cfg = stores(mongo_uri, redis.url, mongo_db_name)
        async with (
            collector_for(cfg) as collector,
            clients_on_two_nodes(cfg, unit) as clients,
            asyncio.timeout(60 * unit),
        ):
            await feed(collector, 0, 10)
            for c in clients:
                await c.wait_for(10)
            os.kill(redis.pid, signal.SIGSTOP)  # alive but silent: every call would time out
            try:
                started = time.monotonic()
                await feed(collector, 10, 60)
                stalled_s = time.monotonic() - started
            finally:
                os.kill(redis.pid, signal.SIGCONT)
            # one socket timeout (2 s), then publishing pauses instead of timing out per record
            assert stalled_s < 2.0 + 5 * unit, stalled_s
            assert collector.dispatch.metrics.counters["chainpush_dispatch_skipped_total"] > 0
            for c in clients:
                await c.wait_for(60)
        for c in clients:
            check(c, 60)
    finally:
        redis.stop()
