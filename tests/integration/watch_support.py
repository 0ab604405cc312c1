"""Helpers for the watcher's integration tests: deploy, make traffic, compare stored vs chain.

Also two fault injectors: ``RefusingProxy`` (aiohttp, HTTP JSON-RPC) refuses ``eth_getLogs``
ranges wider than a limit and answers every n-th request with HTTP 429; ``DroppingProxy`` is a
byte-level TCP / unix-socket proxy whose ``drop()`` cuts every connection (a websocket or IPC
subscription dying mid-stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from chainpush import procs
from tests.conftest import UNIT_S

ROOT = Path(__file__).resolve().parents[2]
ABI_DIR = ROOT / "abi"
ACCOUNTS = [
    "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc", "0x90f79bf6eb2c4f870365e785982e1f101e93b906",
]
OWNER = ACCOUNTS[0]


def rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    return procs.rpc_call(url, method, params or [], timeout_s=30 * UNIT_S)


def rpc_batch(url: str, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
            for i, (m, p) in enumerate(calls)]
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30 * UNIT_S) as resp:
        replies = sorted(json.loads(resp.read()), key=lambda r: r["id"])
    for r in replies:
        if "error" in r:
            raise RuntimeError(f"{calls[r['id']][0]} failed: {r['error']}")
    return [r["result"] for r in replies]


def selector(sig: str) -> str:
    return "0x" + keccak(text=sig)[:4].hex()


def calldata(sig: str, types: list[str], values: list[Any]) -> str:
    return selector(sig) + encode(types, values).hex()


def deploy(url: str, name: str) -> tuple[str, int]:
    """Deploy ``abi/<name>.json``'s bytecode from the first account: (address, block)."""
    bytecode = json.loads((ABI_DIR / f"{name}.json").read_text())["bytecode"]
    if not bytecode.startswith("0x"):
        bytecode = "0x" + bytecode
    tx = rpc(url, "eth_sendTransaction", [{"from": OWNER, "data": bytecode, "gas": hex(5_000_000)}])
    rpc(url, "evm_mine")
    receipt = rpc(url, "eth_getTransactionReceipt", [tx])
    return receipt["contractAddress"], int(receipt["blockNumber"], 16)


def receipt(url: str, tx: str) -> dict[str, Any]:
    """The receipt of ``tx`` once the node (automine) has it; it must have succeeded."""
    got: list[dict[str, Any]] = []

    def mined() -> bool:
        r = rpc(url, "eth_getTransactionReceipt", [tx])
        if r is not None:
            got.append(r)
        return r is not None

    wait_for(mined, 10.0, f"the receipt of {tx}")
    assert got[0]["status"] == "0x1", got[0]
    return got[0]


def token_tx(token: str, i: int) -> dict[str, Any]:
    """The ``i``-th demo transaction: a mix of every DemoToken event shape (one log each)."""
    to = ACCOUNTS[1 + i % 3]
    kind = i % 6
    if kind == 0 or kind == 1:
        data = calldata("transfer(address,uint256)", ["address", "uint256"], [to, 10**18 + i])
    elif kind == 2:
        data = calldata("sendMessage(address,string,bytes)", ["address", "string", "bytes"],
                        [to, f"hello #{i} ✓", bytes([i % 256]) * (i % 7)])
    elif kind == 3:
        data = calldata("batch(uint256[],address[],string)", ["uint256[]", "address[]", "string"],
                        [[i, i + 1], [to, OWNER], f"batch {i}"])
    elif kind == 5:
        data = calldata("placeOrder(uint256,string)", ["uint256", "string"],
                        [2**200 + i, f"order {i}"])
    else:
        data = calldata("emitTagged(bytes32,string,int256,bool)",
                        ["bytes32", "string", "int256", "bool"],
                        [i.to_bytes(32, "big"), f"label-{i}", -i * 10**20, i % 2 == 0])
    return {"from": OWNER, "to": token, "data": data, "gas": hex(300_000)}


def mine_traffic(
    url: str, token: str | Sequence[str], *, blocks: int, txs_per_block: int, first: int = 0
) -> int:
    """Mine ``blocks`` blocks of ``txs_per_block`` demo txs each (automine off meanwhile),
    spread round-robin over ``token`` (one address or several); returns the next tx index."""
    tokens = [token] if isinstance(token, str) else list(token)
    rpc(url, "evm_setAutomine", [False])
    i = first
    try:
        for _ in range(blocks):
            calls = [("eth_sendTransaction", [token_tx(tokens[(i + k) % len(tokens)], i + k)])
                     for k in range(txs_per_block)]
            i += txs_per_block
            if calls:
                rpc_batch(url, calls)
            rpc(url, "evm_mine")
    finally:
        rpc(url, "evm_setAutomine", [True])
    return i


def head(url: str) -> int:
    return int(rpc(url, "eth_blockNumber"), 16)


@dataclass(frozen=True)
class Canonical:
    """The message ids a store must hold (``required``) and may hold (``optional``)."""

    required: frozenset[str]
    optional: frozenset[str]

    def check(self, got: set[str], note: str = "") -> None:
        missing = self.required - got
        extra = got - self.required - self.optional
        assert not missing and not extra, (
            f"{len(missing)} missing {sorted(missing)[:5]}, {len(extra)} extra "
            f"{sorted(extra)[:5]} {note}")


def canonical_ids(url: str, contracts: dict[str, tuple[str, int]], upto: int | None = None,
                  events: Sequence[str] | None = None, *, finality_depth: int,
                  live_from: int | None = None) -> Canonical:
    """Message ids for every log of each (address, confirmations) contract in the final chain,
    its tip at ``upto`` (default: the head); only the DemoToken ``events`` named, if given.

    * K > 0: ``confirmed`` once K deep, nothing before (required).
    * K = 0, less than ``finality_depth`` deep: ``pending`` (required).
    * K = 0, ``finality_depth`` deep or more: ``confirmed`` (required); its ``pending`` came
      first if the watcher followed that block live, not if it backfilled it (then it was final
      already, and `confirmed` is emitted at once). So that ``pending`` is optional, unless the
      block is at or above ``live_from``, the first block the test knows was followed live:
      then it is required too.
    """
    topics = None
    if events is not None:
        abi = json.loads((ABI_DIR / "DemoToken.json").read_text())["abi"]
        sigs = {e["name"]: f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"
                for e in abi if e["type"] == "event"}
        topics = [["0x" + keccak(text=sigs[e]).hex() for e in events]]
    top = head(url) if upto is None else upto
    chain_id = int(rpc(url, "eth_chainId"), 16)
    required: set[str] = set()
    optional: set[str] = set()
    for address, k in contracts.values():
        flt: dict[str, Any] = {"fromBlock": "0x0", "toBlock": hex(top), "address": address}
        if topics is not None:
            flt["topics"] = topics
        for lg in rpc(url, "eth_getLogs", [flt]):
            rid = f"{chain_id}:{lg['blockHash']}:{int(lg['logIndex'], 16)}"
            number = int(lg["blockNumber"], 16)
            depth = top - number
            if k:
                if depth >= k:
                    required.add(f"{rid}/confirmed")
            elif depth < finality_depth:
                required.add(f"{rid}/pending")
            else:
                required.add(f"{rid}/confirmed")
                live = live_from is not None and number >= live_from
                (required if live else optional).add(f"{rid}/pending")
    return Canonical(frozenset(required), frozenset(optional))


RANK = {"pending": 0, "confirmed": 1, "removed": 2}


def live_ids(docs: Iterable[dict[str, Any]], kind: str = "event") -> set[str]:
    """Stored message ids of records not retracted: per id, the messages of its latest
    incarnation (``docs/seams.md`` §1), unless that incarnation has a ``removed`` message."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        if d["kind"] == kind:
            by_id.setdefault(d["id"], []).append(d)
    out: set[str] = set()
    for msgs in by_id.values():
        last = max(int(d.get("incarnation") or 0) for d in msgs)
        current = [d for d in msgs if int(d.get("incarnation") or 0) == last]
        if all(d["status"] != "removed" for d in current):
            out |= {d["_id"] for d in current}
    return out


def stored_docs(mongo_uri: str, db: str) -> list[dict[str, Any]]:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        return list(client[db]["events"].find({}))
    finally:
        client.close()


def checkpoint(mongo_uri: str, db: str) -> dict[str, Any] | None:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        return client[db]["checkpoints"].find_one({})
    finally:
        client.close()


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.05) -> None:
    """Poll ``pred`` until true (a condition, not a sleep to hide a race); fail after timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


async def await_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


async def until_caught_up(tip_hash: Callable[[], str | None], url: str, timeout_s: float,
                          failed: Callable[[], bool] = lambda: False) -> None:
    """Wait until the watcher's committed tip is the node's latest block, re-reading the latest
    block on every poll (a tx sent with automine may land after we first looked)."""

    def done() -> bool:
        latest = rpc(url, "eth_getBlockByNumber", ["latest", False])
        return failed() or tip_hash() == latest["hash"]

    await await_for(done, timeout_s, "the watcher to reach the node's latest block")


def write_config(
    path: Path, *, urls: Sequence[str], mongo_uri: str, database: str,
    contracts: Sequence[dict[str, Any]], **watch: Any,
) -> Path:
    def val(v: Any) -> str:
        if isinstance(v, dict):  # a TOML inline table (e.g. [[contracts]] factory)
            return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    lines = ["[node]", f"urls = {val(list(urls))}", "poll_interval_s = 0.1", "timeout_s = 5", "",
             "[watch]", f"abi_dir = {val(str(ABI_DIR))}"]
    lines += [f"{k} = {val(v)}" for k, v in watch.items()]
    lines += ["", "[stores]", f"mongo_uri = {val(mongo_uri)}", f"database = {val(database)}", ""]
    for c in contracts:
        lines.append("[[contracts]]")
        for k, v in c.items():
            if k != "state":
                lines.append(f"{k} = {val(v)}")
        for s in c.get("state", []):
            lines += ["[[contracts.state]]"] + [f"{k} = {val(v)}" for k, v in s.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def start_watch_process(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    exe = ROOT / ".venv" / "bin" / "chainpush"
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(exe), "--log-level", "INFO", "watch", "--config", str(config), "--sink", "mongo",
             *extra],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


# --- fault injectors -------------------------------------------------------------------------


class RefusingProxy:
    """HTTP JSON-RPC proxy: ``eth_getLogs`` spanning more than ``max_span`` blocks gets a
    provider-style range error; every ``rate_every``-th request gets HTTP 429. With
    ``strip_timestamps`` its logs lose ``blockTimestamp`` (as geth before 1.14 sends them)."""

    def __init__(self, upstream: str, *, max_span: int, rate_every: int,
                 strip_timestamps: bool = False) -> None:
        self.upstream = upstream
        self.strip_timestamps = strip_timestamps
        self.max_span = max_span
        self.rate_every = rate_every
        self.requests = 0
        self.refused_ranges = 0
        self.rate_limited = 0
        self.served_spans: list[int] = []
        self._runner: web.AppRunner | None = None
        self.port = procs.free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RefusingProxy:
        import aiohttp

        self._client = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        await self._client.close()

    def _refusal(self, item: dict[str, Any]) -> dict[str, Any] | None:
        if item.get("method") != "eth_getLogs":
            return None
        flt = item["params"][0]
        if "fromBlock" not in flt:
            return None
        span = int(flt["toBlock"], 16) - int(flt["fromBlock"], 16) + 1
        if span > self.max_span:
            self.refused_ranges += 1
            return {"jsonrpc": "2.0", "id": item["id"], "error": {
                "code": -32005, "message": f"query exceeds max block range {self.max_span}"}}
        self.served_spans.append(span)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.requests % self.rate_every == 0:
            self.rate_limited += 1
            return web.Response(status=429, text="Too Many Requests")
        body = await request.json()
        items = body if isinstance(body, list) else [body]
        refusals = {i["id"]: r for i in items if (r := self._refusal(i)) is not None}
        forward = [i for i in items if i["id"] not in refusals]
        replies: list[dict[str, Any]] = []
        if forward:
            async with self._client.post(self.upstream, json=forward) as resp:
                replies = await resp.json()
        if self.strip_timestamps:
            methods = {i["id"]: i.get("method") for i in items}
            for r in replies:
                if methods.get(r.get("id")) == "eth_getLogs" and isinstance(r.get("result"), list):
                    for lg in r["result"]:
                        lg.pop("blockTimestamp", None)
        replies += list(refusals.values())
        if not isinstance(body, list):
            return web.json_response(replies[0])
        return web.json_response(sorted(replies, key=lambda r: r["id"]))


class DroppingProxy:
    """Byte-level proxy (TCP port or unix socket) whose ``drop()`` closes every connection."""

    def __init__(self, *, upstream_port: int | None = None, upstream_path: str | None = None,
                 listen_path: str | None = None) -> None:
        self.upstream_port = upstream_port
        self.upstream_path = upstream_path
        self.listen_path = listen_path
        self.port = procs.free_port()
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> DroppingProxy:
        if self.listen_path:
            self._server = await asyncio.start_unix_server(self._serve, self.listen_path)
        else:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def drop(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.upstream_path:
            up_r, up_w = await asyncio.open_unix_connection(self.upstream_path)
        else:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_w]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
