"""A collector in its own process, for the several-writers tests and bench/bench_collect.py.

    python -m tests.integration.collect_worker --mongo URI --db NAME --first 0 --records 400

Writes ``--records`` records (``make_record(first + i)``, each to ``contract:DemoToken`` and to
one of ``--wallets`` shared ``user:`` topics) in batches of ``--batch``, waits for ``go`` on
stdin first when ``--wait`` is given (so that several workers start together), prints one JSON
line ``{"records": n, "seconds": s}`` and exits. ``--kill-before-rows K``: SIGKILL itself in
batch K (1-based), after its offsets are reserved and before its rows are written — the crash
the repair and the replay must recover from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence

from chainpush.push.collect import Collector
from chainpush.push.records import StoredMessage
from chainpush.push.retry import RetryPolicy
from chainpush.push.store import RowResult
from tests.integration.push_support import make_record


def wallet(n: int) -> str:
    """A checksummed-looking address (mixed case: routed as an address, docs/seams.md §1)."""
    return "0xB" + f"{n:039x}"


def records(first: int, count: int, wallets: int) -> list[dict[str, object]]:
    return [make_record(n, to=wallet(1 + n % wallets)) for n in range(first, first + count)]


async def main(args: argparse.Namespace) -> None:
    batches = 0
    async with Collector(mongo_uri=args.mongo, database=args.db,
                         retry=RetryPolicy(first_delay_s=0.05, max_delay_s=0.5),
                         repair_interval_s=None) as collector:
        if args.kill_before_rows:
            write = collector.store.insert_rows

            async def killing(rows: Sequence[StoredMessage]) -> list[RowResult]:
                if batches == args.kill_before_rows:
                    os.kill(os.getpid(), signal.SIGKILL)
                return await write(rows)

            collector.store.insert_rows = killing  # type: ignore[method-assign]
        todo = records(args.first, args.records, args.wallets)
        print("ready", flush=True)
        if args.wait:
            await asyncio.to_thread(sys.stdin.readline)
        t0 = time.perf_counter()
        for k in range(0, len(todo), args.batch):
            batches += 1
            await collector.accept(todo[k:k + args.batch])
        elapsed = time.perf_counter() - t0
    print(json.dumps({"records": len(todo), "seconds": elapsed}), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mongo", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--records", type=int, default=400)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--wallets", type=int, default=4)
    p.add_argument("--wait", action="store_true")
    p.add_argument("--kill-before-rows", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
