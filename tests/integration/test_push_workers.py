"""``chainpush push --workers N`` on real parts: N processes share one port (SO_REUSEPORT), each
is a push node of its own in the registry; dispatch reaches every worker's subscribers; a
worker that dies is restarted; SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest
import redis

from chainpush import procs
from tests.integration.push_support import (
    SECRET,
    Client,
    collector_for,
    make_record,
    stores,
    token,
)

pytestmark = pytest.mark.integration
CHAINPUSH = str(Path(sys.executable).parent / "chainpush")
TOPIC = "contract:DemoToken"


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    while True:
        first = procs.free_port()
        if first + count > 65536:
            continue
        with contextlib.ExitStack() as held:
            try:
                for p in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", p))
            except OSError:
                continue
            return first


def scraped(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        body = resp.read().decode()
    return json.loads(body) if path == "/healthz" else body


def start(args: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([CHAINPUSH, *args], stdout=log, stderr=log, start_new_session=True)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


async def eventually(check: object, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110 - other processes
            await asyncio.sleep(0.05)


async def test_workers_share_a_port_and_every_subscriber_gets_every_message(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, tmp_path: Path
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    port = procs.free_port()
    scrape = free_ports(2)
    config = tmp_path / "chainpush.toml"
    config.write_text(
        f'[stores]\nmongo_uri = "{mongo_uri}"\nredis_url = "{redis_url}"\n'
        f'database = "{mongo_db_name}"\nnamespace = "{cfg.namespace}"\n'
        f'[push]\nnode_id = "w"\nport = {port}\nheartbeat_s = 1.0\nnode_ttl_s = 3.0\n'
        f'metrics_port = {scrape}\n'
        f'[auth]\nsecret = "{SECRET}"\n')
    log = (tmp_path / "push.log").open("wb")
    sup = start(["push", "--config", str(config), "--workers", "2"], log)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        names = f"{cfg.namespace}:nodes"
        await eventually(lambda: sorted(r.zrange(names, 0, -1)) == ["w-0", "w-1"], 30 * unit)
        workers = children(sup.pid)
        assert len(workers) == 2
        assert healthy(port)
        url = f"ws://127.0.0.1:{port}/ws"
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client.connect(url, token(f"u{i}")))
                       for i in range(16)]
            for client in clients:
                assert (await client.subscribe(TOPIC))["type"] == "subscribed"
            served = [c.frames[0]["node"] for c in clients]  # welcome frames name the worker
            assert set(served) == {"w-0", "w-1"}, served  # the kernel spread them
            # each worker is scraped on its own port: metrics_port + i
            for i in (0, 1):
                assert scraped(scrape + i, "/healthz")["node"] == f"w-{i}"
                assert f"chainpush_connections {served.count(f'w-{i}')}" in scraped(
                    scrape + i, "/metrics")
            async with collector_for(cfg) as collector, asyncio.timeout(20 * unit):
                await collector.accept([make_record(n) for n in range(5)])
                for client in clients:
                    got = await client.until(5, TOPIC)
                    assert [m["offset"] for m in got] == [1, 2, 3, 4, 5]
        # a worker that dies is started again; the supervisor outlives it
        os.kill(workers[1], signal.SIGKILL)
        await eventually(lambda: len(children(sup.pid)) == 2
                         and children(sup.pid) != workers, 20 * unit)
        assert sup.poll() is None
        await eventually(lambda: healthy(port), 20 * unit)
        sup.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(sup.wait, 30) == 0
        assert children(sup.pid) == []
        # a clean stop leaves no live node (the SIGKILLed run's entry only ages out)
        await eventually(lambda: r.zrangebyscore(names, time.time(), "+inf") == [], 10 * unit)
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
        r.close()
        log.close()


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    done = subprocess.run([CHAINPUSH, "push", "--workers", "2", "--port", "0", "--dev"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "push.workers > 1 share one port" in done.stderr


def test_a_taken_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = tmp_path / "chainpush.toml"
        config.write_text(f"[push]\nport = 0\nmetrics_port = {busy}\n")
        done = subprocess.run([CHAINPUSH, "push", "--config", str(config), "--dev"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"port {busy} on 127.0.0.1 is already in use" in done.stderr
    assert "[push] metrics_port = " in done.stderr
    assert "Traceback" not in done.stderr
