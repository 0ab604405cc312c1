#!/usr/bin/env python3
"""Benchmark of the push side: fan-out rate, latency, memory per connection.

    .venv/bin/python bench/bench_push.py                 # the full run recorded in docs
    .venv/bin/python bench/bench_push.py --conns 500 --messages 10 --latency-clients 100

Everything runs on this machine: a redis-server and nx-27017 of its own (temporary directory), one
push node as a subprocess (``chainpush push``, the deployable), and the websocket clients in a
second subprocess (one asyncio process holding every connection). Phases:

1. **memory**: RSS of the node before and after ``--conns`` authenticated idle connections.
2. **fan-out**: the same connections subscribe to one topic; ``--messages`` messages are published
   to the node's Redis inbox (dispatch's real transport); deliveries/s = conns x messages / time
   from the first publish to the last frame received by the clients. The same clients then
   connect to a raw ``websockets.broadcast`` server (same frames, same harness): the baseline.
3. **latency**: ``--latency-clients`` connections; records go through the real ``Collector``
   (MongoDB, then Redis, then the node) at ``--rate`` records/s; latency = client receive time -
   time ``accept`` was called, over every delivery.
4. **e2e** (``--phases e2e``): a fresh anvil (automine) and the real ``Watcher`` over IPC feeding
   the ``Collector``; ``--latency-messages`` DemoToken transfers at ``--rate``/s; latency =
   client receive time - time the transaction was sent (block → client, mining included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-" + "b" * 32
TOPIC = "contract:Bench"


def record(n: int, sent_at: float) -> dict[str, Any]:
    """A realistic record (~450 bytes of JSON)."""
    return {
        "kind": "event", "id": f"31337:0x{n:064x}:0", "chain_id": 31337, "contract": "Bench",
        "address": "0x" + "12" * 20, "event": "Transfer",
        "args": {"from": "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4",
                 "to": "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2",
                 "value": str(10**21 + n), "sent_at": sent_at},
        "block_number": n, "block_hash": f"0x{n:064x}", "block_timestamp": 1700000000 + n,
        "tx_hash": f"0x{n:064x}", "log_index": 0, "status": "pending",
    }


# --- client process ------------------------------------------------------------------------------


async def client_main(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    sem = asyncio.Semaphore(200)

    async def open_one() -> ClientConnection:
        async with sem:
            ws = await connect(args.url, compression=None, ping_interval=None, open_timeout=60,
                               max_queue=None)
            await ws.send(json.dumps({"type": "auth", "token": args.token}))
            await ws.recv()
            if args.subscribe:
                frame: dict[str, Any] = {"type": "subscribe", "topic": args.topic}
                if args.filter:
                    frame["filter"] = json.loads(args.filter)
                await ws.send(json.dumps(frame))
                await ws.recv()
            return ws

    conns = await asyncio.gather(*(open_one() for _ in range(args.conns)))
    print("ready", flush=True)
    latencies: list[float] = []
    first: dict[int, float] = {}  # offset -> latency of the first client to get it
    arrivals: dict[str, list[float]] = {}  # e2e: tx hash -> receive times
    last = [0.0]

    async def reader(ws: ClientConnection) -> None:
        for _ in range(args.expect):
            data = await ws.recv()
            now = time.time()
            if args.e2e:
                arrivals.setdefault(json.loads(data)["record"]["tx_hash"], []).append(now)
            elif args.latency:
                msg = json.loads(data)
                latency = now - msg["record"]["args"]["sent_at"]
                latencies.append(latency)
                first.setdefault(msg["offset"], latency)
        last[0] = max(last[0], time.time())

    if args.expect:
        await asyncio.gather(*(reader(ws) for ws in conns))
        out: dict[str, Any] = {"t_last": last[0]}
        if args.e2e:
            out["arrivals"] = arrivals
        if latencies:
            latencies.sort()
            out.update(p50_ms=1000 * latencies[len(latencies) // 2],
                       p99_ms=1000 * latencies[int(len(latencies) * 0.99)],
                       max_ms=1000 * latencies[-1], mean_ms=1000 * statistics.fmean(latencies),
                       deliveries=len(latencies))
            firsts = sorted(first.values())
            out.update(first_client_p50_ms=1000 * firsts[len(firsts) // 2],
                       first_client_p99_ms=1000 * firsts[int(len(firsts) * 0.99)])
        print(json.dumps(out), flush=True)
    else:
        await asyncio.to_thread(sys.stdin.readline)  # hold the connections until told
    for ws in conns:
        if ws.transport is not None:
            ws.transport.abort()


# --- raw baseline server process ---------------------------------------------------------------


async def raw_server_main(args: argparse.Namespace) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    from push import wire
    from push.records import StoredMessage

    subscribed: list[ServerConnection] = []
    all_in = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # auth: accepted unchecked, this is the baseline
        await ws.send(wire.welcome(user="u", node="raw", topics=[], wallets=[], expires_at=0,
                                   heartbeat_s=20))
        await ws.recv()
        await ws.send(wire.subscribed(topic=TOPIC, since=0, head=0, ref=None))
        subscribed.append(ws)
        if len(subscribed) == args.conns:
            all_in.set()
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", args.port, compression=None, ping_interval=None,
                     max_queue=None):
        print("listening", flush=True)
        await all_in.wait()
        frames = [wire.message(StoredMessage(TOPIC, n, f"m{n}", record(n, 0.0)))
                  for n in range(1, args.messages + 1)]
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        t0 = time.time()
        for frame in frames:
            websockets.broadcast(subscribed, frame)
            await asyncio.sleep(0)
        print(json.dumps({"t0": t0}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)


# --- orchestration -----------------------------------------------------------------------------


def spawn(argv: list[str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log.open("ab"), text=True, start_new_session=True)


def expect_line(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(what) and not line.startswith("{"):
        raise RuntimeError(f"expected {what!r} from pid {proc.pid}, got {line!r}")
    return line


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def client(url: str, token: str, conns: int, *, subscribe: bool, expect: int, latency: bool,
           log: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "--role", "client", "--url", url, "--token", token,
            "--conns", str(conns), "--expect", str(expect), *extra]
    argv += ["--subscribe"] if subscribe else []
    argv += ["--latency"] if latency else []
    return spawn(argv, log)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


async def publish_all(redis_url: str, namespace: str, node_id: str, messages: int) -> float:
    from chainpush.constants import RedisNames
    from push.dispatch import Dispatcher
    from push.records import StoredMessage

    async with Dispatcher(redis_url, names=RedisNames(namespace)) as dispatch:
        t0 = time.time()
        for n in range(1, messages + 1):
            await dispatch.publish([StoredMessage(TOPIC, n, f"m{n}", record(n, time.time()))])
        return t0


async def paced_collect(mongo_uri: str, redis_url: str, namespace: str, db: str, count: int,
                        rate: float) -> None:
    from chainpush.constants import RedisNames
    from push.collect import Collector
    from push.dispatch import Dispatcher

    async with (
        Dispatcher(redis_url, names=RedisNames(namespace)) as dispatch,
        Collector(mongo_uri=mongo_uri, database=db, dispatch=dispatch) as collector,
    ):
        start = time.monotonic()
        for n in range(1, count + 1):
            await collector.accept([record(n, time.time())])
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


def main(args: argparse.Namespace) -> dict[str, Any]:
    from chainpush import procs
    from push.tokens import Claims, TokenConfig, issue

    results: dict[str, Any] = {"conns": args.conns, "messages": args.messages,
                               "latency_clients": args.latency_clients, "cores": os.cpu_count()}
    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    log = tmp / "bench.log"
    redis = procs.start_redis(port=procs.free_port(), state_dir=tmp)
    mongo = procs.start_mongo(port=procs.free_port(), state_dir=tmp)
    node = None
    try:
        namespace, db, node_id = "bench", "bench", "bench-1"
        config = tmp / "chainpush.toml"
        config.write_text(
            f'[stores]\nmongo_uri = "{mongo.url}"\nredis_url = "{redis.url}"\n'
            f'database = "{db}"\nnamespace = "{namespace}"\n[auth]\nsecret = "{SECRET}"\n'
        )
        port = procs.free_port()
        url = f"ws://127.0.0.1:{port}/ws"
        node = procs.spawn(
            "push-node", [str(Path(sys.executable).parent / "chainpush"), "--log-level",
                          "WARNING", "push", "--config", str(config), "--node-id", node_id,
                          "--port", str(port)],
            tmp / "node.log", url, lambda: procs.port_open("127.0.0.1", port))
        now = time.time()
        token = issue(Claims("bench", (), ("*",), int(now + 3600)),
                      TokenConfig(secret=SECRET), now=now)

        phases = set(args.phases.split(","))
        if "memory" in phases:
            measure_memory(args, node, url, token, log, results)
        if "fanout" in phases:
            measure_fanout(args, url, token, log, results, redis.url, namespace, node_id)
        if "latency" in phases:
            measure_latency(args, url, token, log, results, mongo.url, redis.url, namespace, db)
        if "e2e" in phases:
            measure_e2e(args, url, token, log, results, mongo.url, redis.url, namespace, tmp)
    finally:
        if node is not None:
            node.stop()
        redis.stop()
        mongo.stop()
    return results


def measure_memory(args: argparse.Namespace, node: Any, url: str, token: str, log: Path,
                   results: dict[str, Any]) -> None:
    """RSS of the node before and after ``conns`` authenticated idle connections."""
    time.sleep(1.0)  # let the node finish starting (Redis, Mongo clients) before sampling
    before = rss_kb(node.pid)
    idle = client(url, token, args.conns, subscribe=False, expect=0, latency=False, log=log)
    expect_line(idle, "ready")
    time.sleep(1.0)
    after = rss_kb(node.pid)
    stop(idle)
    results["memory"] = {"rss_before_kb": before, "rss_after_kb": after,
                         "per_connection_kb": round((after - before) / args.conns, 2)}
    print(f"memory: {results['memory']}", file=sys.stderr)


def measure_fanout(args: argparse.Namespace, url: str, token: str, log: Path,
                   results: dict[str, Any], redis_url: str, namespace: str, node_id: str) -> None:
    from chainpush import procs

    # 2a. fan-out through the push node
    subs = client(url, token, args.conns, subscribe=True, expect=args.messages,
                  latency=False, log=log)
    expect_line(subs, "ready")
    t0 = asyncio.run(publish_all(redis_url, namespace, node_id, args.messages))
    done = json.loads(expect_line(subs, "{"))
    stop(subs)
    deliveries = args.conns * args.messages
    node_rate = deliveries / (done["t_last"] - t0)
    # 2b. the raw websockets.broadcast baseline, same clients, same frames
    raw_port = procs.free_port()
    raw = spawn([sys.executable, __file__, "--role", "raw-server", "--port", str(raw_port),
                 "--conns", str(args.conns), "--messages", str(args.messages)], log)
    expect_line(raw, "listening")
    subs = client(f"ws://127.0.0.1:{raw_port}/", token, args.conns, subscribe=True,
                  expect=args.messages, latency=False, log=log)
    expect_line(subs, "ready")
    assert raw.stdin is not None
    raw.stdin.write("go\n")
    raw.stdin.flush()
    raw_t0 = json.loads(expect_line(raw, "{"))["t0"]
    raw_done = json.loads(expect_line(subs, "{"))
    stop(subs)
    stop(raw)
    raw_rate = deliveries / (raw_done["t_last"] - raw_t0)
    results["fanout"] = {"deliveries": deliveries,
                         "chainpush_per_s": round(node_rate),
                         "raw_broadcast_per_s": round(raw_rate),
                         "ratio": round(node_rate / raw_rate, 3)}
    print(f"fan-out: {results['fanout']}", file=sys.stderr)


def measure_latency(args: argparse.Namespace, url: str, token: str, log: Path,
                    results: dict[str, Any], mongo_url: str, redis_url: str, namespace: str,
                    db: str) -> None:
    """Latency collect → client, through MongoDB, Redis and the node."""
    lat = client(url, token, args.latency_clients, subscribe=True,
                 expect=args.latency_messages, latency=True, log=log)
    expect_line(lat, "ready")
    asyncio.run(paced_collect(mongo_url, redis_url, namespace, db, args.latency_messages,
                              args.rate))
    latency = json.loads(expect_line(lat, "{"))
    stop(lat)
    latency.pop("t_last", None)
    results["latency"] = {k: round(v, 2) if isinstance(v, float) else v
                          for k, v in latency.items()}
    print(f"latency: {results['latency']}", file=sys.stderr)


def measure_e2e(args: argparse.Namespace, url: str, token: str, log: Path,
                results: dict[str, Any], mongo_url: str, redis_url: str, namespace: str,
                tmp: Path) -> None:
    """Latency transaction sent → block (anvil automine) → watcher over IPC → collect → client."""
    from web3 import IPCProvider, Web3

    from chainpush import deploy, procs
    from watcher.config import load_config
    from watcher.service import Watcher

    ipc = tmp / "anvil.ipc"
    anvil = procs.start_anvil(port=procs.free_port(), state_dir=tmp, ipc_path=ipc)
    try:
        w3 = Web3(IPCProvider(str(ipc)))
        sender = deploy.use_sender(w3)
        deploy.deploy(w3, ("DemoToken",), deployments_dir=tmp / "deployments")
        contract = deploy.contract(w3, "DemoToken", deployments_dir=tmp / "deployments")
        config = tmp / "watch.toml"
        config.write_text("\n".join([
            "[node]", f"urls = [{json.dumps(str(ipc))}]", "poll_interval_s = 0.1", "",
            "[watch]", 'name = "bench"', f"abi_dir = {json.dumps(str(ROOT / 'abi'))}",
            f"deployments = {json.dumps(str(tmp / 'deployments'))}", "",
            "[stores]", f"mongo_uri = {json.dumps(mongo_url)}", 'database = "e2e"', "",
            "[[contracts]]", 'name = "DemoToken"', "",
        ]))
        lat = client(url, token, args.latency_clients, subscribe=True,
                     expect=args.latency_messages, latency=False, log=log,
                     extra=("--e2e", "--topic", "contract:DemoToken", "--filter",
                            json.dumps({"status": "pending", "args.from": sender})))
        expect_line(lat, "ready")
        sent: dict[str, float] = {}

        async def drive() -> None:
            from push.collect import Collector

            async with (
                Collector(mongo_uri=mongo_url, database="e2e", redis_url=redis_url,
                          namespace=namespace) as collector,
                Watcher(load_config(config), collector) as watcher,
            ):
                task = asyncio.create_task(watcher.run())
                await asyncio.sleep(2.0)  # backfill of the deployment block, then live
                for n in range(args.latency_messages):
                    t = time.time()
                    tx = await asyncio.to_thread(
                        contract.functions.transfer(w3.eth.accounts[1], n + 1).transact)
                    sent["0x" + bytes(tx).hex()] = t
                    await asyncio.sleep(1 / args.rate)
                done = asyncio.create_task(asyncio.to_thread(expect_line, lat, "{"))
                await asyncio.wait([done, task], return_when="FIRST_COMPLETED")
                if not done.done():
                    task.result()  # the watcher stopped first: raise its error
                task.cancel()
                results["_e2e_raw"] = json.loads(done.result())

        asyncio.run(drive())
        stop(lat)
        raw = results.pop("_e2e_raw")
        latencies = sorted(t - sent[tx] for tx, times in raw["arrivals"].items() for t in times)
        firsts = sorted(min(times) - sent[tx] for tx, times in raw["arrivals"].items())
        results["e2e"] = {
            "deliveries": len(latencies),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
            "first_client_p50_ms": round(1000 * firsts[len(firsts) // 2], 2),
            "first_client_p99_ms": round(1000 * firsts[int(len(firsts) * 0.99)], 2),
        }
        print(f"e2e: {results['e2e']}", file=sys.stderr)
    finally:
        anvil.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["main", "client", "raw-server"], default="main")
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--latency-clients", type=int, default=1000)
    parser.add_argument("--latency-messages", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="records/s in the latency phase")
    parser.add_argument("--phases", default="memory,fanout,latency",
                        help="comma-separated subset of memory,fanout,latency")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    # internal (subprocess roles)
    parser.add_argument("--url", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--subscribe", action="store_true")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--e2e", action="store_true")
    parser.add_argument("--topic", default=TOPIC)
    parser.add_argument("--filter", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    opts = parse()
    if opts.role == "client":
        asyncio.run(client_main(opts))
    elif opts.role == "raw-server":
        asyncio.run(raw_server_main(opts))
    else:
        out = main(opts)
        print(json.dumps(out, indent=2))
        if opts.json is not None:
            opts.json.write_text(json.dumps(out, indent=2) + "\n")
