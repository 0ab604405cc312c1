#!/usr/bin/env python3
"""Benchmark: what a push node costs MongoDB and Redis per second with many distinct topics.

    .venv/bin/python bench/bench_topics.py                    # 10,000 user: topics (the record)
    .venv/bin/python bench/bench_topics.py --topics 2000 --seconds 10

One push node runs in this process (so that a pymongo ``CommandListener``, the driver's public
monitoring API, can count every command it sends MongoDB; nx-27017 keeps no server-side
counters); redis-server and nx-27017 are its own, on free ports, and Redis commands are counted
server-side (``INFO stats`` ``total_commands_processed``, minus the bench's own INFO calls).
The websocket clients run in a worker process: ``--topics`` distinct ``user:`` topics, 64 per
connection (the per-connection cap), each token granting its connection's wallets.

Two runs in the same process, same node settings, idle (no messages: what is measured is the
steady cost of heartbeats and reconciles):

* ``one_topic``: the baseline, one connection subscribed to one topic;
* ``many_topics``: ``--topics`` topics.

The ratio many/one is what the topic count costs; O(1) per interval means a ratio near 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import monitoring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-" + "t" * 32
PER_CONN = 64


def wallet(n: int) -> str:
    from web3 import Web3

    return Web3.to_checksum_address(f"0x{n + 1:040x}")


async def client_main(args: argparse.Namespace) -> None:
    """Worker: open connections holding ``--topics`` user: topics; print ready; hold."""
    from websockets.asyncio.client import connect

    from chainpush.push.tokens import Claims, TokenConfig, issue

    tokens = TokenConfig(secret=SECRET)
    sem = asyncio.Semaphore(50)

    async def one(first: int, count: int) -> Any:
        wallets = tuple(wallet(n) for n in range(first, first + count))
        now = time.time()
        tok = issue(Claims(user=f"u{first}", wallets=wallets, topics=(),
                           expires_at=int(now + 3600)), tokens, now=now)
        async with sem:
            ws = await connect(args.url, compression=None, ping_interval=None, open_timeout=60,
                               max_size=None)
            await ws.send(json.dumps({"type": "auth", "token": tok}))
            await ws.recv()
            for w in wallets:
                while True:
                    await ws.send(json.dumps({"type": "subscribe", "topic": f"user:{w}"}))
                    answer = json.loads(await ws.recv())
                    if answer["type"] == "subscribed":
                        break
                    if answer.get("code") != "unavailable":
                        raise RuntimeError(f"subscribe refused: {answer}")
                    await asyncio.sleep(0.1)
        return ws

    conns = await asyncio.gather(*(one(i, min(PER_CONN, args.topics - i))
                                   for i in range(0, args.topics, PER_CONN)))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for ws in conns:
        await ws.close()


class CommandCounter(monitoring.CommandListener):
    """A pymongo CommandListener counting started commands (by name)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def started(self, event: Any) -> None:
        self.counts[event.command_name] = self.counts.get(event.command_name, 0) + 1

    def succeeded(self, event: Any) -> None:
        return None

    def failed(self, event: Any) -> None:
        return None

    def total(self) -> int:
        return sum(n for name, n in self.counts.items()
                   if name not in ("hello", "ismaster", "isMaster", "ping", "endSessions"))


async def measure(args: argparse.Namespace, topics: int, redis_url: str, mongo_uri: str,
                  counter: CommandCounter, log: Path) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from chainpush.push.config import PushConfig, StoresConfig
    from chainpush.push.node import PushNode
    from chainpush.push.tokens import TokenConfig

    stores = StoresConfig(mongo_uri=mongo_uri, redis_url=redis_url,
                          database=f"bench_{uuid.uuid4().hex[:8]}",
                          namespace=f"b{uuid.uuid4().hex[:6]}")
    # a connection subscribes its 64 topics at once: a burst above the default 40 frames
    config = PushConfig(node_id="bench", port=0, max_subscriptions=PER_CONN,
                        rate_burst=2 * PER_CONN,
                        heartbeat_s=args.heartbeat_s, node_ttl_s=3 * args.heartbeat_s,
                        reconcile_s=args.reconcile_s)
    r = aioredis.Redis.from_url(redis_url)
    async with PushNode(config, tokens=TokenConfig(secret=SECRET), stores=stores) as node:
        await node.link.connected.wait()
        with log.open("ab") as err:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--role", "client", "--url", node.url,
                "--topics", str(topics), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=err)
        assert worker.stdout is not None and worker.stdin is not None
        line = (await worker.stdout.readline()).decode()
        if line.strip() != "ready":
            raise RuntimeError(f"client worker failed: {line!r} (see {log})")
        found = re.search(r"^chainpush_subscriptions (\S+)$", node.metrics.render(), re.M)
        subscribed = int(float(found.group(1))) if found else None
        await asyncio.sleep(2 * max(args.heartbeat_s, args.reconcile_s))  # settle
        r0 = int((await r.info("stats"))["total_commands_processed"])
        m0 = counter.total()
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        r1 = int((await r.info("stats"))["total_commands_processed"])
        m1 = counter.total()
        worker.stdin.write(b"stop\n")
        await worker.stdin.drain()
        await asyncio.wait_for(worker.wait(), 30)
    await r.aclose()
    return {"topics": topics, "subscriptions": subscribed, "seconds": round(elapsed, 1),
            "redis_ops_per_s": round((r1 - r0 - 1) / elapsed, 1),
            "mongo_ops_per_s": round((m1 - m0) / elapsed, 1)}


def main(args: argparse.Namespace) -> dict[str, Any]:
    from chainpush import procs

    counter = CommandCounter()
    monitoring.register(counter)  # before any client exists: the node's clients report to it
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-topics-"))
    log = tmp / "bench.log"
    redis = procs.start_redis(port=procs.free_port(), state_dir=tmp)
    mongo = procs.start_mongo(port=procs.free_port(), state_dir=tmp)
    try:
        one = asyncio.run(measure(args, 1, redis.url, mongo.url, counter, log))
        print(f"one_topic: {one}", file=sys.stderr)
        many = asyncio.run(measure(args, args.topics, redis.url, mongo.url, counter, log))
        print(f"many_topics: {many}", file=sys.stderr)
    finally:
        redis.stop()
        mongo.stop()
    out = {
        "heartbeat_s": args.heartbeat_s, "reconcile_s": args.reconcile_s,
        "one_topic": one, "many_topics": many,
        "redis_ratio": round(many["redis_ops_per_s"] / max(one["redis_ops_per_s"], 0.1), 2),
        "mongo_ratio": round(many["mongo_ops_per_s"] / max(one["mongo_ops_per_s"], 0.1), 2),
    }
    print(json.dumps(out, indent=2))
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["main", "client"], default="main")
    p.add_argument("--url", default="")
    p.add_argument("--topics", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=30.0, help="measured idle time")
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument("--reconcile-s", type=float, default=2.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    opts = parse()
    if opts.role == "client":
        asyncio.run(client_main(opts))
    else:
        main(opts)
