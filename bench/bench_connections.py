#!/usr/bin/env python3
"""Benchmark: many authenticated idle connections on one host, and fan-out with 1 vs 2 workers.

    .venv/bin/python bench/bench_connections.py                         # 50,000 over 3 workers
    .venv/bin/python bench/bench_connections.py --conns 6000 --workers 2 --client-procs 2

Everything is real: ``chainpush push --workers N`` (the deployable: N processes sharing one port
with SO_REUSEPORT), its own redis-server and nx-27017, and websocket clients in
``--client-procs`` processes, each connecting from its own loopback source address
(127.0.0.2, 127.0.0.3, …: one source address has ~28,000 ephemeral ports) and holding at most
19,000 sockets (this machine's hard limit of 20,000 open files per process, which also bounds a
worker: hence 50,000 needs at least 3 workers). Phases:

1. **hold**: ``--conns`` connections authenticate (token in the first frame) and stay idle,
   answering the node's websocket pings (every ``--ping-s``). Reported per worker: connections
   (its open sockets), RSS, and CPU used over ``--idle-s`` idle seconds (heartbeats: pings, the
   Redis heartbeat, the reconcile).
2. **fan-out** (``--fanout-conns`` subscribed connections, ``--messages`` messages published to
   the workers' Redis inboxes, as dispatch does): deliveries/s with ``--workers 1`` against
   ``--workers 2``, same clients, same frames, in the same run; the ratio is what the second
   worker buys on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-" + "c" * 32
MAX_PER_PROC = 19_000
TOPIC = "contract:BenchConns"
CHAINPUSH = str(Path(sys.executable).with_name("chainpush"))


# --- client worker ------------------------------------------------------------------------------


async def client_main(args: argparse.Namespace) -> None:
    """Open ``--conns`` connections from ``--source``; print ready; then either hold them until
    stdin says stop, or (``--expect``) count ``--expect`` frames per connection and report."""
    from websockets.asyncio.client import connect

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sem = asyncio.Semaphore(256)
    got = [0]
    done = asyncio.Event()
    total = args.conns * args.expect

    async def one() -> Any:
        async with sem:
            ws = await connect(args.url, local_addr=(args.source, 0), compression=None,
                               open_timeout=120, max_queue=None, ping_interval=None)
            await ws.send(json.dumps({"type": "auth", "token": args.token}))
            await ws.recv()
            if args.expect:
                await ws.send(json.dumps({"type": "subscribe", "topic": TOPIC}))
                while json.loads(await ws.recv())["type"] != "subscribed":
                    pass
        return ws

    async def drain(ws: Any) -> None:
        async for _ in ws:
            got[0] += 1
            if got[0] >= total:
                done.set()

    conns = await asyncio.gather(*(one() for _ in range(args.conns)))
    print("ready", flush=True)
    if args.expect:
        readers = [asyncio.create_task(drain(ws)) for ws in conns]
        await done.wait()
        print(json.dumps({"t_last_ns": time.time_ns(), "frames": got[0]}), flush=True)
        for r in readers:
            r.cancel()
    else:
        await asyncio.to_thread(sys.stdin.readline)
    for ws in conns:
        if ws.transport is not None:
            ws.transport.abort()


# --- orchestration ------------------------------------------------------------------------------


def spawn(argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log.open("ab"), text=True, start_new_session=True, **kw)


def expect_line(proc: subprocess.Popen[str], what: str, log: Path) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(what):
        raise RuntimeError(f"expected {what!r} from pid {proc.pid}, got {line!r} (see {log})")
    return line


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def workers_of(supervisor: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


def proc_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    sockets = sum(1 for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
    return {"cpu_s": cpu_s, "rss_kb": rss_kb, "sockets": sockets}


def config(tmp: Path, redis_url: str, mongo_uri: str, port: int, ping_s: float) -> Path:
    path = tmp / f"chainpush-{port}.toml"
    path.write_text(f"""
[stores]
redis_url = "{redis_url}"
mongo_uri = "{mongo_uri}"
database = "bench_{uuid.uuid4().hex[:8]}"
namespace = "b{uuid.uuid4().hex[:6]}"

[push]
node_id = "bench"
port = {port}
ping_interval_s = {ping_s}
ping_timeout_s = {ping_s}
max_connections = 100000
max_connections_per_user = 100000
max_connections_per_ip = 100000
connect_rate_per_ip_s = 100000.0
connect_burst_per_ip = 100000
""")
    return path


def start_node(cfg: Path, workers: int, log: Path) -> subprocess.Popen[str]:
    node = spawn([CHAINPUSH, "push", "--config", str(cfg), "--workers", str(workers)], log,
                 env={**os.environ, "CHAINPUSH_AUTH_SECRET": SECRET, "CHAINPUSH_DEV": "0"})
    return node


def wait_healthy(port: int, workers: int, timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"push node on {port} not healthy after {timeout_s} s")


def token() -> str:
    from chainpush.push.tokens import mint

    return mint("bench", topics=["contract:*"], ttl_s=7200, secret=SECRET)


def clients(url: str, conns: int, procs: int, log: Path, *, expect: int = 0
            ) -> list[subprocess.Popen[str]]:
    procs = max(procs, -(-conns // MAX_PER_PROC))
    shares = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    tok = token()
    workers = []
    for i, share in enumerate(shares):
        argv = [sys.executable, __file__, "--role", "client", "--url", url, "--conns",
                str(share), "--source", f"127.0.0.{i + 2}", "--token", tok,
                "--expect", str(expect)]
        workers.append(spawn(argv, log))
    for w in workers:
        expect_line(w, "ready", log)
    return workers


def hold(args: argparse.Namespace, tmp: Path, redis_url: str, mongo_uri: str,
         log: Path) -> dict[str, Any]:
    from chainpush import procs

    port = procs.free_port()
    node = start_node(config(tmp, redis_url, mongo_uri, port, args.ping_s), args.workers, log)
    try:
        wait_healthy(port, args.workers)
        pids = workers_of(node.pid)
        time.sleep(1.0)
        empty = {p: proc_stats(p) for p in pids}
        t0 = time.monotonic()
        held = clients(f"ws://127.0.0.1:{port}/ws", args.conns, args.client_procs, log)
        connect_s = time.monotonic() - t0
        time.sleep(2.0)
        before = {p: proc_stats(p) for p in pids}
        time.sleep(args.idle_s)
        after = {p: proc_stats(p) for p in pids}
        per_worker = [{
            "pid": p, "connections": after[p]["sockets"],
            "rss_mb": round(after[p]["rss_kb"] / 1024, 1),
            "rss_added_mb": round((after[p]["rss_kb"] - empty[p]["rss_kb"]) / 1024, 1),
            "idle_cpu_percent": round(100 * (after[p]["cpu_s"] - before[p]["cpu_s"])
                                      / args.idle_s, 2),
        } for p in pids]
        for c in held:
            assert c.stdin is not None
            c.stdin.write("stop\n")
            c.stdin.flush()
        for c in held:
            stop(c)
        conns = sum(w["connections"] for w in per_worker)
        return {"workers": args.workers, "connections": conns, "connect_s": round(connect_s, 1),
                "per_worker": per_worker,
                "kb_per_connection": round(sum(w["rss_added_mb"] for w in per_worker) * 1024
                                           / max(conns, 1), 1),
                "idle_s": args.idle_s, "ping_s": args.ping_s}
    finally:
        stop(node)


async def publish(redis_url: str, namespace: str, workers: list[str], count: int) -> int:
    """Publish ``count`` messages to every worker's inbox; return the first publish's time."""
    import redis.asyncio as aioredis

    from chainpush.constants import RedisNames
    from chainpush.push.dispatch import encode_inbox
    from chainpush.push.records import StoredMessage

    names = RedisNames(namespace)
    r = aioredis.Redis.from_url(redis_url)
    t0 = time.time_ns()
    for n in range(1, count + 1):
        msg = StoredMessage(TOPIC, n, f"m{n}/pending", {"kind": "event", "n": n, "pad": "x" * 400})
        payload = encode_inbox([msg], sent_at=time.time())
        for w in workers:
            await r.publish(names.inbox(w), payload)
        await asyncio.sleep(0)
    await r.aclose()
    return t0


def fanout(args: argparse.Namespace, workers: int, tmp: Path, redis_url: str, mongo_uri: str,
           log: Path) -> dict[str, Any]:
    import tomllib

    from chainpush import procs

    port = procs.free_port()
    cfg = config(tmp, redis_url, mongo_uri, port, 20.0)
    namespace = tomllib.loads(cfg.read_text())["stores"]["namespace"]
    node = start_node(cfg, workers, log)
    try:
        wait_healthy(port, workers)
        subs = clients(f"ws://127.0.0.1:{port}/ws", args.fanout_conns, 2, log,
                       expect=args.messages)
        time.sleep(1.0)
        ids = ["bench"] if workers == 1 else [f"bench-{i}" for i in range(workers)]
        t0 = asyncio.run(publish(redis_url, namespace, ids, args.messages))
        outs = [json.loads(expect_line(c, "{", log)) for c in subs]
        for c in subs:
            stop(c)
        elapsed = (max(o["t_last_ns"] for o in outs) - t0) / 1e9
        deliveries = args.fanout_conns * args.messages
        return {"workers": workers, "deliveries": deliveries,
                "deliveries_per_s": round(deliveries / elapsed)}
    finally:
        stop(node)


def main(args: argparse.Namespace) -> dict[str, Any]:
    from chainpush import procs

    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-conns-"))
    log = tmp / "bench.log"
    redis = procs.start_redis(port=procs.free_port(), state_dir=tmp)
    mongo = procs.start_mongo(port=procs.free_port(), state_dir=tmp)
    out: dict[str, Any] = {}
    try:
        if "hold" in args.phases:
            out["hold"] = hold(args, tmp, redis.url, mongo.url, log)
            print(f"hold: {out['hold']}", file=sys.stderr)
        if "fanout" in args.phases:
            one = fanout(args, 1, tmp, redis.url, mongo.url, log)
            two = fanout(args, 2, tmp, redis.url, mongo.url, log)
            out["fanout"] = {"one_worker": one, "two_workers": two,
                             "ratio": round(two["deliveries_per_s"] / one["deliveries_per_s"],
                                            2)}
            print(f"fanout: {out['fanout']}", file=sys.stderr)
    finally:
        redis.stop()
        mongo.stop()
    print(json.dumps(out, indent=2))
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["main", "client"], default="main")
    p.add_argument("--conns", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--client-procs", type=int, default=3)
    p.add_argument("--idle-s", type=float, default=30.0)
    p.add_argument("--ping-s", type=float, default=20.0)
    p.add_argument("--fanout-conns", type=int, default=5000)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--phases", default="hold,fanout")
    p.add_argument("--url", default="")
    p.add_argument("--source", default="127.0.0.2")
    p.add_argument("--token", default="")
    p.add_argument("--expect", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    opts = parse()
    if opts.role == "client":
        asyncio.run(client_main(opts))
    else:
        main(opts)
