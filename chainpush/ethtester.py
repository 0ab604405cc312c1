"""An in-process Ethereum chain (eth-tester + py-evm) served over real HTTP JSON-RPC.

Why: a team testing its own contract's notifications should not need Node.js or a running node.
``EthTesterNode`` runs an ``eth_tester.EthereumTester`` chain and answers the JSON-RPC methods the
watcher uses (``eth_chainId``, ``eth_blockNumber``, ``eth_getBlockByNumber``/``ByHash``,
``eth_getLogs`` by range or by ``blockHash`` (EIP-234), ``eth_call`` at a number, tag or
``{"blockHash"}`` (EIP-1898), ``eth_getCode``), single or batched, on ``http://127.0.0.1:<port>``:
the watcher talks to it exactly as to anvil or geth, through its HTTP polling path. Transactions
go through web3's ``EthereumTesterProvider`` on the same chain (``node.w3``), the way web3.py runs
its own tests on eth-tester.

Why not web3's ``EthereumTesterProvider`` for the JSON-RPC side: it takes and returns Python
values (ints, snake_case keys), not JSON-RPC wire values, so the translation is done here, for
the handful of methods above; anything else answers JSON-RPC error -32601.

Reorgs: ``fork(depth)`` reverts the chain ``depth`` blocks (eth-tester snapshots) and mines others
in their place, so a test can see ``removed`` records without anvil.

All eth-tester calls happen on the event loop's thread (eth-tester is not thread-safe); its blocks
are small, so each answer takes milliseconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import BlockNotFound, TransactionFailed, ValidationError
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from chainpush.resource import AsyncResource

logger = logging.getLogger(__name__)

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
EXECUTION_ERROR = 3
ZERO_ADDRESS = "0x" + "00" * 20
TAGS = frozenset({"latest", "earliest", "pending", "safe", "finalized"})


class RpcFault(Exception):
    """A JSON-RPC error answer (``code``, message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hex(value: int) -> str:
    return hex(value)


def _bloom(value: Any) -> str:
    if isinstance(value, int):
        return "0x" + value.to_bytes(256, "big").hex()
    return str(value)


def _block_number_param(value: Any) -> int | str:
    if isinstance(value, str) and value in TAGS:
        # eth-tester has no finality: "safe"/"finalized" mean the latest block there
        return "latest" if value in ("safe", "finalized") else value
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    raise RpcFault(INVALID_PARAMS, f"block number must be a hex quantity or a tag, got {value!r}")


def _header(block: Mapping[str, Any]) -> dict[str, Any]:
    """An ``eth_getBlockBy*`` result (without transactions' bodies) in wire form."""
    return {
        "number": _hex(block["number"]), "hash": block["hash"],
        "parentHash": block["parent_hash"], "timestamp": _hex(block["timestamp"]),
        "logsBloom": _bloom(block["logs_bloom"]), "gasLimit": _hex(block["gas_limit"]),
        "gasUsed": _hex(block["gas_used"]), "miner": block["coinbase"],
        "transactions": [t if isinstance(t, str) else t["hash"] for t in block["transactions"]],
    }


def _log(log: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "address": Web3.to_checksum_address(log["address"]), "topics": list(log["topics"]),
        "data": log["data"], "blockNumber": _hex(log["block_number"]),
        "blockHash": log["block_hash"], "transactionHash": log["transaction_hash"],
        "transactionIndex": _hex(log["transaction_index"]), "logIndex": _hex(log["log_index"]),
        "removed": False,
    }


class EthTesterNode(AsyncResource):
    """``async with EthTesterNode() as node``: ``node.url`` is its JSON-RPC endpoint."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tester = EthereumTester(PyEVMBackend())
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.requests = 0

    async def __aenter__(self) -> EthTesterNode:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self._host, self._port)
        await self._site.start()
        logger.info("eth-tester chain %d serving %s", self.chain_id, self.url)
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        assert self._runner is not None, "use `async with EthTesterNode()` first"
        for address in self._runner.addresses:
            return int(address[1])
        raise RuntimeError("the eth-tester node is not listening")

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @property
    def accounts(self) -> list[str]:
        return list(self.tester.get_accounts())

    def mine(self, blocks: int = 1) -> None:
        self.tester.mine_blocks(blocks)

    def fork(self, depth: int, *, mine: int | None = None) -> None:
        """Replace the last ``depth`` blocks by ``mine`` (default ``depth + 1``) empty ones: a
        reorg of depth ``depth`` (what they held is orphaned; transactions are not replayed)."""
        head = int(self.tester.get_block_by_number("latest")["number"])
        if not 1 <= depth <= head:
            raise ValueError(f"fork depth must be in 1..{head}, got {depth}")
        ancestor = self.tester.get_block_by_number(head - depth)
        # PyEVMBackend's snapshots are block hashes: reverting to one makes that block the head
        self.tester.backend.revert_to_snapshot(bytes.fromhex(ancestor["hash"][2:]))
        # a later timestamp makes the new blocks' hashes differ from the orphaned ones
        self.tester.time_travel(int(ancestor["timestamp"]) + 1000)
        self.tester.mine_blocks(depth + 1 if mine is None else mine)

    # --- JSON-RPC -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            )
        if isinstance(body, list):
            return web.json_response([self._answer(item) for item in body])
        return web.json_response(self._answer(body))

    def _answer(self, item: Any) -> dict[str, Any]:
        rid = item.get("id") if isinstance(item, dict) else None
        self.requests += 1
        try:
            if not isinstance(item, dict) or not isinstance(item.get("method"), str):
                raise RpcFault(-32600, "invalid request")
            params = item.get("params") or []
            result = self._call(item["method"], list(params))
        except RpcFault as exc:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": exc.code, "message": str(exc)}}
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    def _call(self, method: str, params: list[Any]) -> Any:
        t = self.tester
        try:
            if method == "eth_chainId":
                return _hex(self.chain_id)
            if method == "eth_blockNumber":
                return _hex(int(t.get_block_by_number("latest")["number"]))
            if method == "eth_getBlockByNumber":
                return self._block(lambda: t.get_block_by_number(_block_number_param(params[0])))
            if method == "eth_getBlockByHash":
                return self._block(lambda: t.get_block_by_hash(params[0]))
            if method == "eth_getLogs":
                return self._logs(params[0] if params else {})
            if method == "eth_call":
                return t.call(_transaction(params[0]), self._at(params[1] if len(params) > 1
                                                                  else "latest"))
            if method == "eth_getCode":
                return t.get_code(params[0], self._at(params[1] if len(params) > 1
                                                      else "latest"))
        except (IndexError, KeyError, TypeError) as exc:
            raise RpcFault(INVALID_PARAMS, f"{method}: bad params {params!r} ({exc})") from exc
        except TransactionFailed as exc:
            raise RpcFault(EXECUTION_ERROR, f"execution reverted: {exc}") from exc
        except ValidationError as exc:
            raise RpcFault(INVALID_PARAMS, f"{method}: {exc}") from exc
        raise RpcFault(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available "
                       "on the eth-tester node")

    @staticmethod
    def _block(read: Any) -> dict[str, Any] | None:
        try:
            return _header(read())
        except BlockNotFound:
            return None

    def _at(self, where: Any) -> int | str:
        if isinstance(where, dict):
            if "blockHash" in where:
                try:
                    return int(self.tester.get_block_by_hash(where["blockHash"])["number"])
                except BlockNotFound as exc:
                    raise RpcFault(-32000, f"header not found: {where['blockHash']}") from exc
            where = where.get("blockNumber", "latest")
        return _block_number_param(where)

    def _logs(self, flt: Mapping[str, Any]) -> list[dict[str, Any]]:
        address = flt.get("address")
        topics = flt.get("topics")
        if "blockHash" in flt:
            try:
                n = int(self.tester.get_block_by_hash(flt["blockHash"])["number"])
            except BlockNotFound as exc:
                raise RpcFault(-32000, f"unknown block {flt['blockHash']}") from exc
            lo: int | str = n
            hi: int | str = n
        else:
            lo = _block_number_param(flt.get("fromBlock", "latest"))
            hi = _block_number_param(flt.get("toBlock", "latest"))
        latest = int(self.tester.get_block_by_number("latest")["number"])
        lo_n = latest if lo == "latest" else 0 if lo == "earliest" else int(lo)
        hi_n = latest if hi in ("latest", "pending") else 0 if hi == "earliest" else int(hi)
        if isinstance(address, str):
            address = [address]
        logs = self.tester.get_logs(from_block=lo_n, to_block=hi_n, address=address,
                                    topics=topics)
        out = [_log(lg) for lg in logs]
        if "blockHash" in flt:
            out = [lg for lg in out if lg["blockHash"] == flt["blockHash"]]
        return out


def _transaction(raw: Mapping[str, Any]) -> dict[str, Any]:
    tx: dict[str, Any] = {"to": raw["to"], "data": raw.get("data") or raw.get("input") or "0x",
                          "from": raw.get("from") or ZERO_ADDRESS}
    for key in ("gas", "value"):
        if raw.get(key):
            tx[key] = int(raw[key], 16)
    return tx
