"""Test your own contract's notifications in-process: chain → watcher → collect → subscriber.

No Node.js and no running services: the chain is eth-tester (py-evm) behind real HTTP JSON-RPC
(:class:`chainpush.ethtester.EthTesterNode`), the store is the MongoDB-protocol server nx-27017
started on a free port, and the subscriber reads each topic's stored stream in offset order —
the very messages a push node would deliver over websocket::

    from chainpush.testing import LocalChain, Pipeline

    async def test_deposit_notifies(tmp_path):
        async with LocalChain() as chain:
            vault = chain.deploy("Vault", abi_dir="abi")   # abi/Vault.json: chainpush compile
            async with Pipeline(chain, {"Vault": vault.address}, abi_dir="abi",
                                state_dir=tmp_path) as pipe:
                vault.functions.deposit().transact({"value": 1000})
                [msg] = await pipe.wait_for("contract:Vault", 1)
                assert msg.record["event"] == "Deposited"

``Pipeline`` runs the real ``Watcher`` (HTTP polling, reorg detection, checkpoints) and the real
``Collector`` (topics, offsets), with ``confirmations = 0`` by default: records arrive ``pending``
in the block they were mined, then ``confirmed`` ``finality_depth`` blocks later
(``chain.mine(n)``); ``chain.fork(depth)`` makes a reorg and the orphaned records come back
``removed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from web3.contract import Contract

from chainpush import procs
from chainpush.ethtester import EthTesterNode
from chainpush.push.collect import Collector
from chainpush.push.records import StoredMessage
from chainpush.push.store import MessageStore
from chainpush.resource import AsyncResource
from chainpush.watcher.compile import load_artifact
from chainpush.watcher.config import Config
from chainpush.watcher.service import Watcher

__all__ = ["LocalChain", "Pipeline"]


class LocalChain(EthTesterNode):
    """An eth-tester chain on a free port, with ``deploy`` for compiled artifacts."""

    def deploy(self, name: str, *args: Any, abi_dir: str | Path = "abi",
               value: int = 0) -> Contract:
        """Deploy ``abi_dir/<name>.json`` (``chainpush compile``) from the first account with
        constructor ``args``; returns the web3 contract object at its address."""
        artifact = load_artifact(Path(abi_dir), name)
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx = factory.constructor(*args).transact({"from": self.accounts[0], "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        address = receipt["contractAddress"]
        if address is None or receipt["status"] != 1:
            raise RuntimeError(f"deploy of {name} failed in tx 0x{bytes(tx).hex()}")
        self.w3.eth.default_account = self.w3.eth.accounts[0]
        return self.w3.eth.contract(address=address, abi=artifact.abi)


class Pipeline(AsyncResource):
    """The watcher and collect on ``chain`` for ``contracts`` (name → address), into a store of
    their own; read what subscribers would get with :meth:`messages` / :meth:`wait_for`."""

    def __init__(
        self, chain: EthTesterNode | str, contracts: Mapping[str, str], *,
        abi_dir: str | Path = "abi", state_dir: str | Path | None = None,
        confirmations: int = 0, finality_depth: int = 3, reorg_window: int = 16,
        poll_interval_s: float = 0.05, extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = chain if isinstance(chain, str) else chain.url
        self._contracts = dict(contracts)
        self._abi_dir = Path(abi_dir).resolve()
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._settings = {"confirmations": confirmations, "finality_depth": finality_depth,
                          "reorg_window": reorg_window, "poll_interval_s": poll_interval_s}
        self._extra = dict(extra or {})
        self.database = f"cp_testing_{uuid.uuid4().hex[:10]}"
        self._mongo: procs.Server | None = None
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self.store: MessageStore | None = None
        self.watcher: Watcher | None = None

    def config(self, mongo_uri: str) -> Config:
        s = self._settings
        data: dict[str, Any] = {
            "node": {"rpc": self.url, "poll_interval_s": s["poll_interval_s"]},
            "watch": {"name": "testing", "confirmations": s["confirmations"],
                      "finality_depth": s["finality_depth"], "reorg_window": s["reorg_window"],
                      "abi_dir": str(self._abi_dir), "start_block": 0},
            "contracts": [{"name": n, "address": a} for n, a in self._contracts.items()],
            "stores": {"mongo_uri": mongo_uri, "database": self.database},
        }
        for key, value in self._extra.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        return Config.from_mapping(data, source="chainpush.testing", base=self._abi_dir.parent)

    async def __aenter__(self) -> Pipeline:
        if self._state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="chainpush-testing-")
            self._state_dir = Path(self._tmp.name)
        state_dir = self._state_dir
        self._mongo = await asyncio.to_thread(
            lambda: procs.start_mongo(port=procs.free_port(), state_dir=state_dir))
        try:
            config = self.config(self._mongo.url)
            self.store = await self._stack.enter_async_context(
                MessageStore(self._mongo.url, self.database))
            collector = await self._stack.enter_async_context(Collector(store=self.store))
            self.watcher = await self._stack.enter_async_context(Watcher(config, collector))
            self._task = asyncio.create_task(self.watcher.run(), name="chainpush-testing-watch")
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stack.aclose()
        if self._mongo is not None:
            self._mongo.stop()
            self._mongo = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _check(self) -> MessageStore:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()  # the watcher died: raise its error here
        assert self.store is not None, "use `async with Pipeline(...)` first"
        return self.store

    async def messages(self, topic: str, *, since: int = 0) -> list[StoredMessage]:
        """Every message of ``topic`` stored so far with an offset above ``since``, in order."""
        store = self._check()
        out: list[StoredMessage] = []
        while True:
            # from the last row read: a lost offset (docs/seams.md §2) is passed over, so the
            # rows are not always len(out) after since
            page = await store.read_range(topic, (out[-1].offset if out else since) + 1,
                                          limit=500)
            out += page
            if len(page) < 500:
                return out

    async def wait_for(
        self, topic: str, count: int, *, timeout_s: float = 10.0, since: int = 0,
    ) -> Sequence[StoredMessage]:
        """The first ``count`` messages of ``topic`` above ``since``, waiting up to
        ``timeout_s`` for them (``TimeoutError`` says what did arrive)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = await self.messages(topic, since=since)
            if len(got) >= count:
                return got[:count]
            if time.monotonic() > deadline:
                ids = [m.msg_id for m in got]
                raise TimeoutError(f"{topic}: {len(got)} of {count} messages after "
                                   f"{timeout_s} s: {ids}")
            await asyncio.sleep(0.02)
