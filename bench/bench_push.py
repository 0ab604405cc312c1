#!/usr/bin/env python3
"""Benchmark of the push side: fan-out rate, latency, memory per connection.

    .venv/bin/python bench/bench_push.py                 # the full run recorded in docs
    .venv/bin/python bench/bench_push.py --conns 500 --messages 10 --latency-clients 100

Everything runs on this machine: a redis-server and nx-27017 of its own (temporary directory), one
push node as a subprocess (``chainpush push``, the deployable), and the websocket clients in
``--client-procs`` other processes (default 2), each holding a share of the connections. The
clients timestamp each frame with ``time.time_ns()`` when its last byte is read off the socket
(one clock: one machine) and parse frames only after the run, so client-side Python cost does not
inflate the measured latency. Phases:

1. **memory**: RSS of the node before and after ``--conns`` authenticated idle connections.
2. **fan-out**: the same connections subscribe to one topic; ``--messages`` messages are published
   to the node's Redis inbox (dispatch's real transport); deliveries/s = conns x messages / time
   from the first publish to the last frame received by the clients. The same clients then
   connect to a raw ``websockets.broadcast`` server (same frames, same harness): the baseline.
3. **latency**: ``--latency-clients`` connections, ``--latency-messages`` records at ``--rate``/s,
   every delivery timed, three runs on the same harness:
   ``raw_broadcast`` (the baseline: a raw websockets server calling ``websockets.broadcast`` with
   the same frames; clock from the broadcast call), ``dispatch`` (record published to the node's
   Redis inbox → client) and ``collect`` (``Collector.accept`` called: MongoDB, Redis, node →
   client); ratios and p99 excess against ``raw_broadcast`` and ``node_ws`` (Node.js ``ws``
   broadcasting the same frames to the same clients, bench/ws_broadcast.mjs) are printed.
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
TOPIC = "contract:Bench"  #: collect → client (stored in MongoDB)
LIVE_TOPIC = "contract:BenchLive"  #: dispatch → client (inbox only, nothing in MongoDB)
FANOUT_TOPIC = "contract:BenchFanout"


def record(n: int, sent_ns: int) -> dict[str, Any]:
    """A realistic record (~450 bytes of JSON); ``sent_ns`` is when its measured trip began."""
    return {
        "kind": "event", "id": f"31337:0x{n:064x}:0", "chain_id": 31337, "contract": "Bench",
        "address": "0x" + "12" * 20, "event": "Transfer",
        "args": {"from": "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4",
                 "to": "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2",
                 "value": str(10**21 + n), "sent_ns": str(sent_ns)},
        "block_number": n, "block_hash": f"0x{n:064x}", "block_timestamp": 1700000000 + n,
        "tx_hash": f"0x{n:064x}", "log_index": 0, "status": "pending",
    }


# --- client worker processes -------------------------------------------------------------------


def _timed_connection_class() -> type[Any]:
    from websockets.asyncio.client import ClientConnection

    class TimedConnection(ClientConnection):
        """A client connection that, once ``capture`` is set, only timestamps what arrives.

        The bytes are kept and the frames delimited with a header walk (RFC 6455 §5.2; a server
        never masks) as they come off the socket, the timestamp being the read that completed
        each frame; websockets' parser, UTF-8 and JSON decoding run after the run. The client
        process's per-frame work is then a few µs, so what is measured is what the server
        delivers rather than how fast a Python client parses 1,000 frames.
        """

        capture: Any = None
        buf: bytearray
        pos = 0
        frames: list[tuple[int, int, int]]  # receive time (ns), payload start, end (text only)

        def data_received(self, data: bytes) -> None:
            if self.capture is None:
                super().data_received(data)
                return
            now = time.time_ns()
            buf = self.buf
            buf += data
            pos, size = self.pos, len(buf)
            while size - pos >= 2:
                length, head = buf[pos + 1] & 0x7F, 2
                if length == 126:
                    length, head = int.from_bytes(buf[pos + 2:pos + 4]), 4
                elif length == 127:
                    length, head = int.from_bytes(buf[pos + 2:pos + 10]), 10
                end = pos + head + length
                if end > size:
                    break
                if buf[pos] & 0x0F == 1:  # text (the node's pings are skipped, unanswered)
                    self.frames.append((now, pos + head, end))
                    self.capture()
                pos = end
            self.pos = pos

        def start_capture(self, on_frame: Any) -> None:
            self.buf, self.frames, self.capture = bytearray(), [], on_frame

        def captured(self) -> list[tuple[int, bytes]]:
            return [(t, bytes(self.buf[a:b])) for t, a, b in self.frames]

    return TimedConnection


async def client_main(args: argparse.Namespace) -> None:
    """One worker: ``--conns`` connections; prints ``ready``, then one JSON line of results."""
    from websockets.asyncio.client import connect

    timed = _timed_connection_class()
    sem = asyncio.Semaphore(200)

    async def open_one() -> Any:
        async with sem:
            ws = await connect(args.url, compression=None, ping_interval=None, open_timeout=60,
                               max_queue=None, create_connection=timed)
            await ws.send(json.dumps({"type": "auth", "token": args.token}))
            await ws.recv()
            if args.subscribe:
                frame: dict[str, Any] = {"type": "subscribe", "topic": args.topic}
                if args.filter:
                    frame["filter"] = json.loads(args.filter)
                while True:
                    await ws.send(json.dumps(frame))
                    answer = json.loads(await ws.recv())
                    if answer["type"] == "subscribed":
                        break
                    # ``unavailable``: the node's head read timed out under the connection burst;
                    # the protocol says subscribe again later
                    assert answer.get("code") == "unavailable", answer
                    await asyncio.sleep(0.1)
            return ws

    conns = await asyncio.gather(*(open_one() for _ in range(args.conns)))
    if not args.expect:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # hold the connections until told
    else:
        total = args.conns * args.expect
        count = [0]
        done = asyncio.Event()

        def on_frame() -> None:
            count[0] += 1
            if count[0] >= total:
                done.set()

        for ws in conns:
            ws.start_capture(on_frame)
        print("ready", flush=True)
        await done.wait()
        # decoding happens after the run, off the measured path
        sink = [item for ws in conns for item in ws.captured()]
        out: dict[str, Any] = {"t_last_ns": max(t for t, _ in sink)}
        if args.e2e:
            out["samples"] = [[json.loads(data)["record"]["tx_hash"], t] for t, data in sink]
        elif args.latency:
            samples = []
            for t, data in sink:
                msg = json.loads(data)
                samples.append([msg["offset"], t - int(msg["record"]["args"]["sent_ns"])])
            out["samples"] = samples
        print(json.dumps(out), flush=True)
    for ws in conns:
        if ws.transport is not None:
            ws.transport.abort()


class Clients:
    """``procs`` worker processes holding ``conns`` connections between them."""

    def __init__(self, url: str, token: str, conns: int, procs: int, *, subscribe: bool,
                 expect: int, latency: bool, log: Path, extra: tuple[str, ...] = ()) -> None:
        shares = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
        self.workers = []
        for share in shares:
            argv = [sys.executable, __file__, "--role", "client", "--url", url, "--token", token,
                    "--conns", str(share), "--expect", str(expect), *extra]
            argv += ["--subscribe"] if subscribe else []
            argv += ["--latency"] if latency else []
            self.workers.append(spawn(argv, log))
        for worker in self.workers:
            expect_line(worker, "ready")

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(expect_line(worker, "{")) for worker in self.workers]

    def stop(self) -> None:
        for worker in self.workers:
            stop(worker)


# --- raw baseline server process ---------------------------------------------------------------


async def raw_server_main(args: argparse.Namespace) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    from chainpush.push import wire
    from chainpush.push.records import StoredMessage

    subscribed: list[ServerConnection] = []
    all_in = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # auth: accepted unchecked, this is the baseline
        await ws.send(wire.welcome(user="u", node="raw", topics=[], wallets=[], expires_at=0,
                                   heartbeat_s=20))
        await ws.recv()
        await ws.send(wire.subscribed(topic=args.topic, since=0, head=0, ref=None))
        subscribed.append(ws)
        if len(subscribed) == args.conns:
            all_in.set()
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", args.port, compression=None, ping_interval=None,
                     max_queue=None):
        print("listening", flush=True)
        await all_in.wait()
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        t0 = time.time_ns()
        if args.latency:
            # paced like the chainpush runs; the clock starts just before the frame is built
            for n in range(1, args.messages + 1):
                frame = wire.message(StoredMessage(args.topic, n, f"m{n}",
                                                   record(n, time.time_ns())))
                websockets.broadcast(subscribed, frame)
                await asyncio.sleep(max(0.0, t0 / 1e9 + n / args.rate - time.time()))
        else:
            frames = [wire.message(StoredMessage(args.topic, n, f"m{n}", record(n, 0)))
                      for n in range(1, args.messages + 1)]
            t0 = time.time_ns()
            for frame in frames:
                websockets.broadcast(subscribed, frame)
                await asyncio.sleep(0)
        print(json.dumps({"t0_ns": t0}), flush=True)
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


async def publish_all(redis_url: str, namespace: str, topic: str, messages: int,
                      rate: float | None = None) -> int:
    """Publish straight to the node's inbox (dispatch's transport, no MongoDB); return t0 (ns).

    With ``rate``, one message every ``1/rate`` s (latency), else as fast as possible (fan-out).
    The node's subscriptions start at offset 1 because MongoDB has no row for ``topic``.
    """
    from chainpush.constants import RedisNames
    from chainpush.push.dispatch import Dispatcher
    from chainpush.push.records import StoredMessage

    async with Dispatcher(redis_url, names=RedisNames(namespace)) as dispatch:
        t0 = time.time_ns()
        for n in range(1, messages + 1):
            await dispatch.publish([StoredMessage(topic, n, f"m{n}", record(n, time.time_ns()))])
            if rate is not None:
                await asyncio.sleep(max(0.0, t0 / 1e9 + n / rate - time.time()))
        return t0


async def paced_collect(mongo_uri: str, redis_url: str, namespace: str, db: str, count: int,
                        rate: float) -> None:
    from chainpush.constants import RedisNames
    from chainpush.push.collect import Collector
    from chainpush.push.dispatch import Dispatcher

    async with (
        Dispatcher(redis_url, names=RedisNames(namespace)) as dispatch,
        Collector(mongo_uri=mongo_uri, database=db, dispatch=dispatch) as collector,
    ):
        start = time.monotonic()
        for n in range(1, count + 1):
            await collector.accept([record(n, time.time_ns())])
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


def main(args: argparse.Namespace) -> dict[str, Any]:
    from chainpush import procs
    from chainpush.push.tokens import Claims, TokenConfig, issue

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
            f'database = "{db}"\nnamespace = "{namespace}"\n'
            # one user and one address for every bench client: the per-user / per-address
            # caps (docs/protocol.md §1) are lifted, the node-wide one sized to the run
            '[push]\nmax_connections_per_user = 1000000\nmax_connections_per_ip = 1000000\n'
            'connect_rate_per_ip_s = 1000000.0\nconnect_burst_per_ip = 1000000\n'
            f'max_connections = {max(10_000, 2 * args.conns)}\n'
            f'[auth]\nsecret = "{SECRET}"\n'
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
            measure_fanout(args, url, token, log, results, redis.url, namespace)
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


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1e6, 2)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1] / 1e6, 2),
            "mean_ms": round(statistics.fmean(ordered) / 1e6, 2), "deliveries": len(ordered)}


def latency_summary(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every delivery's latency, and the first client's per message (the pipeline alone)."""
    every: list[int] = []
    first: dict[int, int] = {}
    for out in outs:
        for offset, latency in out["samples"]:
            every.append(latency)
            first[offset] = min(latency, first.get(offset, latency))
    summary = percentiles(every)
    firsts = percentiles(list(first.values()))
    summary.update(first_client_p50_ms=firsts["p50_ms"], first_client_p99_ms=firsts["p99_ms"])
    return summary


def measure_memory(args: argparse.Namespace, node: Any, url: str, token: str, log: Path,
                   results: dict[str, Any]) -> None:
    """RSS of the node before and after ``conns`` authenticated idle connections."""
    time.sleep(1.0)  # let the node finish starting (Redis, Mongo clients) before sampling
    before = rss_kb(node.pid)
    idle = Clients(url, token, args.conns, args.client_procs, subscribe=False, expect=0,
                   latency=False, log=log)
    time.sleep(1.0)
    after = rss_kb(node.pid)
    idle.stop()
    results["memory"] = {"rss_before_kb": before, "rss_after_kb": after,
                         "per_connection_kb": round((after - before) / args.conns, 2)}
    print(f"memory: {results['memory']}", file=sys.stderr)


BASELINES = ("raw_broadcast", "node_ws")  #: peers measured in the same run, same clients


def raw_server(args: argparse.Namespace, conns: int, messages: int, topic: str, log: Path, *,
               latency: bool, kind: str = "raw_broadcast") -> tuple[subprocess.Popen[str], str]:
    """Start a baseline server: ``raw_broadcast`` (websockets.broadcast, Python) or ``node_ws``
    (Node.js ``ws``, bench/ws_broadcast.mjs), serving the same frames to the same clients."""
    from chainpush import procs

    raw_port = procs.free_port()
    if kind == "node_ws":
        frames = log.parent / f"frames-{raw_port}.txt"
        frames.write_text("".join(baseline_frame(topic, n, latency) + "\n"
                                  for n in range(1, messages + 1)))
        argv = ["node", str(ROOT / "bench" / "ws_broadcast.mjs"), str(raw_port), str(conns),
                str(frames), str(args.rate), "1" if latency else "0"]
        raw = spawn(argv, log)
    else:
        argv = [sys.executable, __file__, "--role", "raw-server", "--port", str(raw_port),
                "--conns", str(conns), "--messages", str(messages), "--topic", topic,
                "--rate", str(args.rate)]
        raw = spawn(argv + (["--latency"] if latency else []), log)
    expect_line(raw, "listening")
    return raw, f"ws://127.0.0.1:{raw_port}/"


def baseline_frame(topic: str, n: int, latency: bool) -> str:
    """The ``message`` frame the baselines send; in latency mode with a ``SENT_NS`` placeholder
    that the Node baseline replaces by its send time."""
    from chainpush.push import wire
    from chainpush.push.records import StoredMessage

    rec = record(n, 0)
    if latency:
        rec["args"]["sent_ns"] = "SENT_NS"
    return wire.message(StoredMessage(topic, n, f"m{n}", rec))


def go(raw: subprocess.Popen[str]) -> None:
    assert raw.stdin is not None
    raw.stdin.write("go\n")
    raw.stdin.flush()


def measure_fanout(args: argparse.Namespace, url: str, token: str, log: Path,
                   results: dict[str, Any], redis_url: str, namespace: str) -> None:
    deliveries = args.conns * args.messages
    # 2a. fan-out through the push node
    subs = Clients(url, token, args.conns, args.client_procs, subscribe=True,
                   expect=args.messages, latency=False, log=log, extra=("--topic", FANOUT_TOPIC))
    t0 = asyncio.run(publish_all(redis_url, namespace, FANOUT_TOPIC, args.messages))
    t_last = max(out["t_last_ns"] for out in subs.results())
    subs.stop()
    node_rate = deliveries / ((t_last - t0) / 1e9)
    results["fanout"] = {"deliveries": deliveries, "chainpush_per_s": round(node_rate)}
    # 2b. the baselines, same clients, same frames
    for kind in BASELINES:
        raw, raw_url = raw_server(args, args.conns, args.messages, FANOUT_TOPIC, log,
                                  latency=False, kind=kind)
        subs = Clients(raw_url, token, args.conns, args.client_procs, subscribe=True,
                       expect=args.messages, latency=False, log=log)
        go(raw)
        raw_t0 = json.loads(expect_line(raw, "{"))["t0_ns"]
        raw_last = max(out["t_last_ns"] for out in subs.results())
        subs.stop()
        stop(raw)
        raw_rate = deliveries / ((raw_last - raw_t0) / 1e9)
        results["fanout"][f"{kind}_per_s"] = round(raw_rate)
        results["fanout"][f"ratio_vs_{kind}"] = round(node_rate / raw_rate, 3)
    print(f"fan-out: {results['fanout']}", file=sys.stderr)


def measure_latency(args: argparse.Namespace, url: str, token: str, log: Path,
                    results: dict[str, Any], mongo_url: str, redis_url: str, namespace: str,
                    db: str) -> None:
    """Three runs on the same client harness, paced at ``--rate``:

    * ``raw_broadcast``: the baseline, a raw websockets server; clock from the broadcast call;
    * ``dispatch``: a record published to the node's Redis inbox (dispatch's transport) → client;
    * ``collect``: ``Collector.accept`` called (MongoDB writes, Redis, node) → client.
    """
    n, count = args.latency_clients, args.latency_messages
    out: dict[str, Any] = {"client_procs": args.client_procs}
    for kind in BASELINES:
        raw, raw_url = raw_server(args, n, count, TOPIC, log, latency=True, kind=kind)
        clients = Clients(raw_url, token, n, args.client_procs, subscribe=True, expect=count,
                          latency=True, log=log)
        go(raw)
        expect_line(raw, "{")
        out[kind] = latency_summary(clients.results())
        clients.stop()
        stop(raw)
        print(f"latency {kind}: {out[kind]}", file=sys.stderr)

    clients = Clients(url, token, n, args.client_procs, subscribe=True, expect=count,
                      latency=True, log=log, extra=("--topic", LIVE_TOPIC))
    asyncio.run(publish_all(redis_url, namespace, LIVE_TOPIC, count, rate=args.rate))
    out["dispatch"] = latency_summary(clients.results())
    clients.stop()
    print(f"latency dispatch: {out['dispatch']}", file=sys.stderr)

    clients = Clients(url, token, n, args.client_procs, subscribe=True, expect=count,
                      latency=True, log=log)
    asyncio.run(paced_collect(mongo_url, redis_url, namespace, db, count, args.rate))
    out["collect"] = latency_summary(clients.results())
    clients.stop()
    print(f"latency collect: {out['collect']}", file=sys.stderr)

    for kind in BASELINES:
        base = out[kind]
        for name in ("dispatch", "collect"):
            run = out[name]
            out[f"{name}_vs_{kind}"] = {
                "p50_ratio": round(run["p50_ms"] / base["p50_ms"], 2),
                "p99_ratio": round(run["p99_ms"] / base["p99_ms"], 2),
                "p99_excess_ms": round(run["p99_ms"] - base["p99_ms"], 2),
            }
        print(f"latency ratios against {kind}: dispatch {out[f'dispatch_vs_{kind}']}, "
              f"collect {out[f'collect_vs_{kind}']}", file=sys.stderr)
    results["latency"] = out


def measure_e2e(args: argparse.Namespace, url: str, token: str, log: Path,
                results: dict[str, Any], mongo_url: str, redis_url: str, namespace: str,
                tmp: Path) -> None:
    """Latency transaction sent → block (anvil automine) → watcher over IPC → collect → client."""
    from web3 import IPCProvider, Web3

    from chainpush import deploy, procs
    from chainpush.watcher.config import load_config
    from chainpush.watcher.service import Watcher

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
        lat = Clients(url, token, args.latency_clients, args.client_procs, subscribe=True,
                      expect=args.latency_messages, latency=False, log=log,
                      extra=("--e2e", "--topic", "contract:DemoToken", "--filter",
                             json.dumps({"status": "pending", "args.from": sender})))
        sent: dict[str, int] = {}

        async def drive() -> None:
            from chainpush.push.collect import Collector

            async with (
                Collector(mongo_uri=mongo_url, database="e2e", redis_url=redis_url,
                          namespace=namespace) as collector,
                Watcher(load_config(config), collector) as watcher,
            ):
                task = asyncio.create_task(watcher.run())
                await asyncio.sleep(2.0)  # backfill of the deployment block, then live
                for n in range(args.latency_messages):
                    t = time.time_ns()
                    tx = await asyncio.to_thread(
                        contract.functions.transfer(w3.eth.accounts[1], n + 1).transact)
                    sent["0x" + bytes(tx).hex()] = t
                    await asyncio.sleep(1 / args.rate)
                done = asyncio.create_task(asyncio.to_thread(lat.results))
                await asyncio.wait([done, task], return_when="FIRST_COMPLETED")
                if not done.done():
                    task.result()  # the watcher stopped first: raise its error
                task.cancel()
                results["_e2e_raw"] = done.result()

        asyncio.run(drive())
        lat.stop()
        outs = results.pop("_e2e_raw")
        results["e2e"] = latency_summary([
            {"samples": [[tx, t - sent[tx]] for tx, t in out["samples"]]} for out in outs])
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
    parser.add_argument("--client-procs", type=int, default=2,
                        help="client worker processes sharing the connections")
    parser.add_argument("--phases", default="memory,fanout,latency",
                        help="comma-separated subset of memory,fanout,latency,e2e")
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
