#!/usr/bin/env python3
"""Benchmark: collect throughput with one and with two writers on shared topics (nx-27017).

    .venv/bin/python bench/bench_collect.py                       # the record (docs/benchmarks.md)
    .venv/bin/python bench/bench_collect.py --records 500 --batch 10
    .venv/bin/python bench/bench_collect.py --rtt-ms 1      # the store one network hop away

Every record goes to ``contract:DemoToken``, to ``user:<from>`` (one wallet for all) and to one of
``--wallets`` ``user:<to>`` topics: every topic is shared by every writer. Each writer is its own
process (``--role worker``) with its own client, started together on a ``go`` line; records/s is
all records over the wall time from ``go`` to the last writer done. Offsets are checked gap-free
(1..n per topic, each message once) after every run.

Two algorithms, same records, same nx-27017, fresh database per run:

* ``reserve``: today's collect (:class:`push.collect.Collector`: one offset reservation per batch
  and topic in ``streams``, events and rows in one ``insert_many`` each);
* ``max_plus_one``: the collector before it, kept here as the baseline: per record one event
  insert and per topic a row at ``max(offset) + 1``, the unique index as arbiter (re-read the
  maximum on a collision).

``--rtt-ms R`` puts the writers one network hop from the store: they reach nx-27017 through
``bench/delay_proxy.py``, which delays every chunk R/2 ms each way (the offsets check reads
directly). On loopback a writer waits microseconds per round trip and nx-27017 (SQLite: one
writer at a time) is the limit; a collector and a store on two machines wait a round trip per
step, which is what a second writer can overlap — and what the offset algorithm must not
serialise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ALICE = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"


def record(n: int, wallets: int, disjoint: bool = False) -> dict[str, Any]:
    """A Transfer record as docs/seams.md §1 describes it; ``n`` makes the id unique.
    ``disjoint``: the writer of ``n`` (n // 10,000,000) gets topics of its own (a ceiling)."""
    block_hash = "0x" + f"{n // 4:064x}"
    w = n // 10_000_000 if disjoint else 0
    return {
        "kind": "event", "id": f"31337:{block_hash}:{n % 4}", "chain_id": 31337,
        "contract": f"DemoToken{w or ''}", "address": "0x" + "12" * 20, "event": "Transfer",
        "args": {"from": "0xC" + f"{w:039x}" if w else ALICE,
                 "to": "0xB" + f"{1 + n % wallets + 1000 * w:039x}",
                 "value": str(10**21 + n)},
        "address_paths": ["from", "to"],
        "block_number": n // 4, "block_hash": block_hash, "block_timestamp": 1700000000 + n,
        "tx_hash": "0x" + f"{n:064x}", "log_index": n % 4, "status": "pending",
    }


# --- the baseline: max(offset) + 1 under the unique index ---------------------------------------

async def max_plus_one(uri: str, db: str, batches: list[list[dict[str, Any]]]) -> int:
    """The collector before reservations, per record: returns the collisions it met."""
    import pymongo
    from pymongo import AsyncMongoClient

    from chainpush.push.records import topics_of
    from chainpush.watcher.record import message_id

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    events, messages = client[db]["events"], client[db]["messages"]
    nxt: dict[str, int] = {}
    collisions = 0

    async def top(topic: str) -> int:
        row = await messages.find_one({"topic": topic}, {"offset": 1},
                                      sort=[("offset", pymongo.DESCENDING)])
        return 0 if row is None else int(row["offset"])

    for batch in batches:
        for rec in batch:
            msg_id = message_id(rec)
            topics = topics_of(rec)
            await events.insert_one({"_id": msg_id, **rec, "topics": topics})
            for topic in topics:
                offset = nxt.get(topic) or await top(topic) + 1
                while True:
                    try:
                        await messages.insert_one({"topic": topic, "offset": offset,
                                                   "msg_id": msg_id, "record": rec})
                        nxt[topic] = offset + 1
                        break
                    except pymongo.errors.DuplicateKeyError:
                        collisions += 1
                        offset = await top(topic) + 1
    await client.close()
    return collisions


async def worker_main(args: argparse.Namespace) -> None:
    from chainpush.push.collect import Collector

    todo = [record(n, args.wallets, args.disjoint)
            for n in range(args.first, args.first + args.records)]
    batches = [todo[k:k + args.batch] for k in range(0, len(todo), args.batch)]
    conflicts = 0
    cpu0 = 0.0
    if args.algorithm == "reserve":
        async with Collector(mongo_uri=args.mongo, database=args.db,
                             repair_interval_s=None) as collector:
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            t0, cpu0 = time.perf_counter(), time.process_time()
            for batch in batches:
                await collector.accept(batch)
            elapsed = time.perf_counter() - t0
            conflicts = int(collector.metrics.counters["chainpush_collect_conflicts_total"])
    else:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        t0, cpu0 = time.perf_counter(), time.process_time()
        conflicts = await max_plus_one(args.mongo, args.db, batches)
        elapsed = time.perf_counter() - t0
    print(json.dumps({"seconds": elapsed, "conflicts": conflicts,
                      "cpu_s": time.process_time() - cpu0}), flush=True)


# --- the driver ------------------------------------------------------------------------------

def ensure_indexes(uri: str, db: str) -> None:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(uri) as client:
        for fields in (["topic", "offset"], ["topic", "msg_id"]):
            client[db]["messages"].create_index([(f, 1) for f in fields], unique=True)


def verify(uri: str, db: str, expected_rows: dict[str, int]) -> None:
    """Gap-free: every topic's offsets are 1..n, each message once, n as expected."""
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(uri) as client:
        got: dict[str, list[tuple[int, str]]] = {}
        for row in client[db]["messages"].find({}, {"topic": 1, "offset": 1, "msg_id": 1}):
            got.setdefault(row["topic"], []).append((int(row["offset"]), str(row["msg_id"])))
    if set(got) != set(expected_rows):
        raise AssertionError(f"topics differ: {sorted(got)} vs {sorted(expected_rows)}")
    for topic, rows in got.items():
        rows.sort()
        offsets = [o for o, _ in rows]
        if offsets != list(range(1, expected_rows[topic] + 1)):
            raise AssertionError(f"{topic}: offsets not 1..{expected_rows[topic]}")
        if len({m for _, m in rows}) != len(rows):
            raise AssertionError(f"{topic}: a message stored twice")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, uri: str, algorithm: str, writers: int, server_pid: int,
        writers_uri: str) -> dict[str, Any]:
    """One run; the writers reach the store at ``writers_uri`` (``uri`` or the delay proxy)."""
    from chainpush.push.records import topics_of

    db = f"bench_{uuid.uuid4().hex[:8]}"
    ensure_indexes(uri, db)
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--role", "worker", "--algorithm", algorithm,
         "--mongo", writers_uri,
         "--db", db, "--first", str(w * 10_000_000), "--records", str(args.records),
         "--batch", str(args.batch), "--wallets", str(args.wallets),
         *(["--disjoint"] if args.disjoint else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for w in range(writers)]
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{algorithm} worker failed to start")
    t0 = time.perf_counter()
    c0 = cpu_s(server_pid)
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [json.loads(p.communicate(timeout=1800)[0]) for p in procs]
    wall = time.perf_counter() - t0
    server = cpu_s(server_pid) - c0
    expected: dict[str, int] = {}
    for w in range(writers):
        for n in range(w * 10_000_000, w * 10_000_000 + args.records):
            for topic in topics_of(record(n, args.wallets, args.disjoint)):
                expected[topic] = expected.get(topic, 0) + 1
    verify(uri, db, expected)
    total = writers * args.records
    return {"algorithm": algorithm, "writers": writers, "records": total,
            "seconds": round(wall, 2), "records_per_s": round(total / wall, 1),
            "conflicts": sum(o["conflicts"] for o in outs), "gap_free": True,
            # how busy nx-27017 and the writers were (CPU seconds per second of wall time):
            # their sum near the free cores (2 here, minus other load) means CPU sets the pace
            "server_cpu_share": round(server / wall, 2),
            "writers_cpu_share": round(sum(o["cpu_s"] for o in outs) / wall, 2),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main(args: argparse.Namespace) -> dict[str, Any]:
    from chainpush import procs

    tmp = Path(tempfile.mkdtemp(prefix="cp-bench-collect-"))
    mongo = procs.start_mongo(port=procs.free_port(), state_dir=tmp)
    results: dict[str, Any] = {"records_per_writer": args.records, "batch": args.batch,
                               "topics_per_record": 3, "user_topics": args.wallets + 1,
                               "rtt_ms": args.rtt_ms}
    proxy = None
    try:
        writers_uri = mongo.url
        if args.rtt_ms:
            port = procs.free_port()
            target = mongo.url.split("//", 1)[1].split("/", 1)[0]
            proxy = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "delay_proxy.py"), "--listen", str(port),
                 "--target", target, "--delay-ms", str(args.rtt_ms / 2)],
                stdout=subprocess.PIPE, text=True)
            assert proxy.stdout is not None
            if proxy.stdout.readline().strip() != "ready":
                raise RuntimeError("the delay proxy did not start")
            writers_uri = mongo.url.replace(target, f"127.0.0.1:{port}", 1)
        for algorithm in args.algorithms:
            one = run(args, mongo.url, algorithm, 1, mongo.pid, writers_uri)
            print(f"{algorithm} one: {one}", file=sys.stderr)
            two = run(args, mongo.url, algorithm, 2, mongo.pid, writers_uri)
            print(f"{algorithm} two: {two}", file=sys.stderr)
            results[algorithm] = {"one": one, "two": two, "ratio_two_vs_one": round(
                two["records_per_s"] / one["records_per_s"], 2)}
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        mongo.stop()
    if "reserve" in results and "max_plus_one" in results:
        results["reserve_vs_max_plus_one_two_writers"] = round(
            results["reserve"]["two"]["records_per_s"]
            / results["max_plus_one"]["two"]["records_per_s"], 2)
    print(json.dumps(results, indent=2))
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["main", "worker"], default="main")
    p.add_argument("--algorithm", choices=["reserve", "max_plus_one"], default="reserve")
    p.add_argument("--algorithms", nargs="+", default=["reserve", "max_plus_one"])
    p.add_argument("--mongo", default="")
    p.add_argument("--db", default="")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--records", type=int, default=2000, help="records per writer")
    p.add_argument("--batch", type=int, default=20, help="records per accept (a block's worth)")
    p.add_argument("--wallets", type=int, default=4, help="distinct user:<to> topics")
    p.add_argument("--rtt-ms", type=float, default=0.0,
                   help="writers reach the store through a proxy adding this round trip")
    p.add_argument("--disjoint", action="store_true",
                   help="each writer its own topics: the ceiling without any sharing")
    return p.parse_args(argv)


if __name__ == "__main__":
    opts = parse()
    if opts.role == "worker":
        asyncio.run(worker_main(opts))
    else:
        main(opts)
