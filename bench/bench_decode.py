#!/usr/bin/env python3
"""Decoding speed: chainpush's LogDecoder vs web3.py's ``process_log``, on the same real logs.

    .venv/bin/python bench/bench_decode.py            # uses tests/data/watcher/demo_logs.json
    .venv/bin/python bench/bench_decode.py --record   # re-record those logs from a fresh anvil

The recorded logs are every DemoToken event shape (ERC-20 Transfer, Message with string+bytes,
Batch with arrays, Tagged with hashed indexed string, Order with a tuple). web3 gets its logs
pre-formatted (as ``eth.get_logs`` returns them) and only ``process_log`` is timed; ours is timed
from the raw JSON-RPC dicts to finished JSON-safe records, i.e. it does strictly more.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "watcher" / "demo_logs.json"


def record(path: Path, txs: int = 120) -> None:
    from chainpush import procs
    from tests.integration import watch_support as ws

    with tempfile.TemporaryDirectory() as tmp:
        anvil = procs.start_anvil(port=procs.free_port(), state_dir=Path(tmp))
        try:
            token, _ = ws.deploy(anvil.url, "DemoToken")
            ws.mine_traffic(anvil.url, token, blocks=txs // 6, txs_per_block=6)
            logs = ws.rpc(anvil.url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest",
                                                      "address": token}])
        finally:
            anvil.stop()
    abi = json.loads((ROOT / "abi" / "DemoToken.json").read_text())["abi"]
    path.write_text(json.dumps({"address": token, "abi": abi, "logs": logs}, indent=1) + "\n")
    print(f"recorded {len(logs)} logs into {path}")


def web3_log(raw: dict[str, Any]) -> dict[str, Any]:
    from hexbytes import HexBytes

    return {
        "address": raw["address"], "topics": [HexBytes(t) for t in raw["topics"]],
        "data": HexBytes(raw["data"]), "blockNumber": int(raw["blockNumber"], 16),
        "blockHash": HexBytes(raw["blockHash"]),
        "transactionHash": HexBytes(raw["transactionHash"]),
        "logIndex": int(raw["logIndex"], 16), "transactionIndex": int(raw["transactionIndex"], 16),
    }


def bench(n: int, rounds: int) -> dict[str, float]:
    from web3 import Web3

    from chainpush.watcher.abi import parse_abi
    from chainpush.watcher.decode import ContractSpec, LogDecoder

    rec = json.loads(DATA.read_text())
    base = rec["logs"]
    logs = [base[i % len(base)] for i in range(n)]
    abi = parse_abi(rec["abi"], "DemoToken")
    contract = Web3().eth.contract(abi=rec["abi"])
    events = {(e.topic0, e.topic_count): contract.events[e.name]() for e in abi.events}
    w3_logs = [(events[(lg["topics"][0], len(lg["topics"]))], web3_log(lg)) for lg in logs]

    def ours() -> None:
        LogDecoder(31337, [ContractSpec("DemoToken", rec["address"], abi)]).decode_many(logs)

    def theirs() -> None:
        for ev, lg in w3_logs:
            ev.process_log(lg)

    best: dict[str, float] = {}
    for name, fn in (("chainpush", ours), ("web3 process_log", theirs)):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = n / min(times)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="re-record the logs first")
    parser.add_argument("-n", type=int, default=20_000, help="logs per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.record or not DATA.exists():
        record(DATA)
    rates = bench(args.n, args.rounds)
    for name, rate in rates.items():
        print(f"{name:>18}: {rate:>10,.0f} logs/s")
    ratio = rates["chainpush"] / rates["web3 process_log"]
    print(f"{'ratio':>18}: {ratio:>10.1f}x  ({args.n} logs, best of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
