"""Transaction lifecycles on real parts (issue 13.3): anvil holding transactions in its pool
(automine off), the watcher following the hashes a websocket client subscribed to through a
real push node (the Redis registry tells it which), collect storing, dispatch delivering.

A client subscribes ``tx:<hash>`` and gets ``pending`` → ``mined`` (status, gas, the decoded
events of a watched contract) → ``confirmed``; a reverted transaction is ``mined`` with result
``reverted``; a reorg gives ``removed`` and, re-included, ``mined`` again in the new block; a
replacement by the same nonce gives ``replaced`` with the new hash; a token without a ``tx:``
grant is refused the topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher.config import load_config
from chainpush.watcher.decode import checksum
from chainpush.watcher.service import Watcher
from tests.conftest import Anvil
from tests.integration import watch_support as ws
from tests.integration.push_support import Client, collector_for, push_node, stores, token

pytestmark = pytest.mark.integration

GWEI = 10**9
STRANGER = ws.ACCOUNTS[3]  # not DemoToken's owner: its `mint` reverts


def stages(client: Client, tx_hash: str) -> list[str]:
    return [m["record"]["stage"] for m in client.messages if m["topic"] == f"tx:{tx_hash}"]


def last(client: Client, tx_hash: str) -> dict[str, Any]:
    return [m for m in client.messages if m["topic"] == f"tx:{tx_hash}"][-1]["record"]


async def until(client: Client, what: str, pred: Callable[[], bool], timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not pred():
                await client.next_frame()
    except TimeoutError:
        seen = [(m["topic"][:14], m["record"].get("stage")) for m in client.messages]
        raise AssertionError(f"{what}: not within {timeout_s:.0f} s; got {seen}") from None


def send(url: str, *, sender: str = ws.OWNER, **tx: Any) -> str:
    req = {"from": sender, "gas": hex(300_000), **tx}
    return str(ws.rpc(url, "eth_sendTransaction", [req]))


def setup(anvil: Anvil, mongo_uri: str, redis_url: str, mongo_db_name: str,
                tmp_path: Path) -> tuple[str, Any, Any]:
    """DemoToken deployed; the watcher's config (tx_lifecycle on, finality 2 blocks deep) and
    the stores on one registry namespace; automine off. (DemoToken, stores, watch config)."""
    url = anvil.http_url
    demo, _ = ws.deploy(url, "DemoToken")
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    path = ws.write_config(tmp_path / "w.toml", urls=[url], mongo_uri=mongo_uri,
                           database=mongo_db_name, contracts=[{"name": "DemoToken",
                                                               "address": demo}],
                           name="txs", reorg_window=8, finality_depth=2, tx_lifecycle=True)
    path.write_text(path.read_text().replace(
        "[stores]\n", f'[stores]\nredis_url = "{redis_url}"\nnamespace = "{cfg.namespace}"\n'))
    ws.rpc(url, "evm_setAutomine", [False])
    return demo, cfg, load_config(path)


@contextlib.asynccontextmanager
async def watching(config: Any, collector: Any) -> AsyncIterator[Watcher]:
    """A watcher running into ``collector``; its failure is the test's."""
    async with Watcher(config, collector) as watcher:
        task = asyncio.create_task(watcher.run())
        try:
            yield watcher
        finally:
            if task.done():
                task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def stack(anvil: Anvil, mongo_uri: str, redis_url: str, mongo_db_name: str,
                tmp_path: Path, unit: float) -> AsyncIterator[tuple[str, Any, Any]]:
    """:func:`setup`, then the watcher, collect with dispatch and one push node. Yields
    (DemoToken's address, the push node, the collector)."""
    demo, cfg, config = await asyncio.to_thread(setup, anvil, mongo_uri, redis_url,
                                                mongo_db_name, tmp_path)
    async with collector_for(cfg) as collector, push_node(cfg, "n1", unit) as node, \
            watching(config, collector):
        yield demo, node, collector


async def test_pending_mined_confirmed_reverted_and_refused(
    anvil: Anvil, mongo_uri: str, redis_url: str, mongo_db_name: str, tmp_path: Path,
    unit: float,
) -> None:
    url = anvil.http_url
    async with stack(anvil, mongo_uri, redis_url, mongo_db_name, tmp_path, unit) as (
            demo, node, _collector), Client.connect(node.url, token(topics=("tx:*",))) as client:
        data = ws.calldata("transfer(address,uint256)", ["address", "uint256"],
                           [ws.ACCOUNTS[1], 5 * 10**18])
        good = await asyncio.to_thread(send, url, to=demo, data=data)
        bad = await asyncio.to_thread(send, url, to=demo, sender=STRANGER, data=ws.calldata(
            "mint(address,uint256)", ["address", "uint256"], [STRANGER, 1]))
        for h in (good, bad):
            # any case on the wire: the topic is the lower-case hash records go to
            answer = await client.subscribe("tx:0x" + h[2:].upper(), since=0)
            assert answer["type"] == "subscribed" and answer["topic"] == f"tx:{h}", answer
        await until(client, "both pending", lambda: stages(client, good) == ["pending"]
                    and stages(client, bad) == ["pending"], 20 * unit)
        assert (last(client, good)["from"], last(client, good)["to"]) == (checksum(ws.OWNER),
                                                                          checksum(demo))
        await asyncio.to_thread(ws.rpc, url, "evm_mine")
        await until(client, "both mined", lambda: stages(client, good)[-1:] == ["mined"]
                    and stages(client, bad)[-1:] == ["mined"], 20 * unit)
        mined = last(client, good)
        receipt = await asyncio.to_thread(ws.rpc, url, "eth_getTransactionReceipt", [good])
        assert mined["result"] == "success"
        assert mined["gas_used"] == str(int(receipt["gasUsed"], 16))
        assert (mined["block_number"], mined["block_hash"]) == (
            int(receipt["blockNumber"], 16), receipt["blockHash"])
        assert [(e["contract"], e["event"], e["args"]["value"]) for e in mined["events"]] == [
            ("DemoToken", "Transfer", str(5 * 10**18))]
        assert last(client, bad)["result"] == "reverted" and last(client, bad)["events"] == []
        await asyncio.to_thread(ws.rpc, url, "anvil_mine", ["0x2"])
        await until(client, "confirmed", lambda: stages(client, good) == [
            "pending", "mined", "confirmed"] and stages(client, bad)[-1:] == ["confirmed"],
            20 * unit)
        # offsets 1, 2, 3 on the topic, message ids of the seam
        msgs = [m for m in client.messages if m["topic"] == f"tx:{good}"]
        assert [m["offset"] for m in msgs] == [1, 2, 3]
        block = receipt["blockHash"]
        assert [m["id"] for m in msgs] == [f"31337:tx:{good}/pending",
                                           f"31337:{block}:tx:{good}/pending",
                                           f"31337:{block}:tx:{good}/confirmed"]

        # a token without a tx: grant (even `*`) is refused the topic
        async with Client.connect(node.url, token("bob", topics=("*",))) as bob:
            refused = await bob.subscribe(f"tx:{good}")
            assert (refused["type"], refused["code"]) == ("error", "forbidden_topic"), refused
        malformed = await client.subscribe("tx:0x1234")
        assert (malformed["type"], malformed["code"]) == ("error", "unknown_topic")


async def test_a_reorg_removes_and_a_same_nonce_replacement_replaces(
    anvil: Anvil, mongo_uri: str, redis_url: str, mongo_db_name: str, tmp_path: Path,
    unit: float,
) -> None:
    url = anvil.http_url
    async with stack(anvil, mongo_uri, redis_url, mongo_db_name, tmp_path, unit) as (
            _demo, node, _collector), Client.connect(node.url, token(topics=("tx:*",))) as client:
        sender = ws.ACCOUNTS[1]
        nonce = int(await asyncio.to_thread(ws.rpc, url, "eth_getTransactionCount",
                                            [sender, "latest"]), 16)
        # the same request signs to the same hash: anvil_reorg can include it again
        req = {"from": sender, "to": ws.ACCOUNTS[2], "value": "0x1", "nonce": hex(nonce),
               "gas": hex(21_000), "maxFeePerGas": hex(5 * GWEI),
               "maxPriorityFeePerGas": hex(GWEI)}
        moved = str(await asyncio.to_thread(ws.rpc, url, "eth_sendTransaction", [req]))
        assert (await client.subscribe(f"tx:{moved}", since=0))["type"] == "subscribed"
        await until(client, "pending", lambda: stages(client, moved) == ["pending"], 20 * unit)
        await asyncio.to_thread(ws.rpc, url, "evm_mine")
        await until(client, "mined", lambda: stages(client, moved)[-1:] == ["mined"], 20 * unit)
        first = last(client, moved)["block_hash"]
        await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [1, [[req, 0]]])
        await until(client, "removed, then mined in the new block",
                    lambda: stages(client, moved)[-2:] == ["removed", "mined"], 20 * unit)
        again = last(client, moved)
        assert again["block_hash"] != first
        assert again["block_hash"] == (await asyncio.to_thread(
            ws.rpc, url, "eth_getTransactionReceipt", [moved]))["blockHash"]
        await asyncio.to_thread(ws.rpc, url, "anvil_mine", ["0x2"])
        await until(client, "confirmed", lambda: stages(client, moved) == [
            "pending", "mined", "removed", "mined", "confirmed"], 20 * unit)

        # the same nonce, higher fees: the pool takes the new one, whose mining uses the nonce
        low = {"from": sender, "to": ws.ACCOUNTS[2], "value": "0x2", "nonce": hex(nonce + 1),
               "gas": hex(21_000), "maxFeePerGas": hex(3 * GWEI),
               "maxPriorityFeePerGas": hex(GWEI)}
        old = str(await asyncio.to_thread(ws.rpc, url, "eth_sendTransaction", [low]))
        assert (await client.subscribe(f"tx:{old}", since=0))["type"] == "subscribed"
        await until(client, "pending", lambda: stages(client, old) == ["pending"], 20 * unit)
        new = str(await asyncio.to_thread(ws.rpc, url, "eth_sendTransaction", [{
            **low, "value": "0x3", "maxFeePerGas": hex(30 * GWEI),
            "maxPriorityFeePerGas": hex(10 * GWEI)}]))
        assert new != old
        await asyncio.to_thread(ws.rpc, url, "evm_mine")
        await until(client, "replaced", lambda: stages(client, old) == ["pending", "replaced"],
                    20 * unit)
        gone = last(client, old)
        assert (gone["replaced_by"], gone["status"], gone["nonce"]) == (new, "confirmed",
                                                                        nonce + 1)


async def test_a_restart_loses_no_transition_and_repeats_none(
    anvil: Anvil, mongo_uri: str, redis_url: str, mongo_db_name: str, tmp_path: Path,
    unit: float,
) -> None:
    """The tracker's state is in the checkpoint: with the watcher stopped while two followed
    transactions are pending, one is mined and the other replaced (same nonce, higher fees);
    after the restart the first is `mined` then `confirmed`, the second `replaced` — which
    only the sender and nonce remembered from before can tell, since the node no longer knows
    it — and no `pending` is stored twice."""
    import pymongo

    url = anvil.http_url
    _demo, cfg, config = await asyncio.to_thread(setup, anvil, mongo_uri, redis_url,
                                                 mongo_db_name, tmp_path)
    async with collector_for(cfg) as collector, push_node(cfg, "n1", unit) as node, \
            Client.connect(node.url, token(topics=("tx:*",))) as client:
        h = await asyncio.to_thread(send, url, to=ws.ACCOUNTS[2], value="0x5", gas=hex(21_000))
        low = {"to": ws.ACCOUNTS[2], "value": "0x6", "gas": hex(21_000), "nonce": "0x0",
               "maxFeePerGas": hex(3 * GWEI), "maxPriorityFeePerGas": hex(GWEI)}
        old = await asyncio.to_thread(send, url, sender=STRANGER, **low)
        for tx_hash in (h, old):
            assert (await client.subscribe(f"tx:{tx_hash}", since=0))["type"] == "subscribed"
        async with watching(config, collector) as watcher:
            await until(client, "pending", lambda: stages(client, h) == ["pending"]
                        and stages(client, old) == ["pending"], 20 * unit)
            assert "chainpush_watch_tracked_txs 2" in watcher.render_metrics().splitlines()
        # while no watcher runs: the replacement takes the nonce, both are mined
        new = await asyncio.to_thread(send, url, sender=STRANGER, **{
            **low, "maxFeePerGas": hex(30 * GWEI), "maxPriorityFeePerGas": hex(10 * GWEI)})
        await asyncio.to_thread(ws.rpc, url, "evm_mine")
        async with watching(config, collector) as watcher:
            await until(client, "mined and replaced", lambda: stages(client, h) == [
                "pending", "mined"] and stages(client, old) == ["pending", "replaced"],
                20 * unit)
            assert last(client, old)["replaced_by"] == new
            # h is still followed (the ledger holds its mined record), old is final
            assert "chainpush_watch_tracked_txs 1" in watcher.render_metrics().splitlines()
            await asyncio.to_thread(ws.rpc, url, "anvil_mine", ["0x2"])
            await until(client, "confirmed", lambda: stages(client, h) == [
                "pending", "mined", "confirmed"], 20 * unit)
        msgs = [m for m in client.messages if m["topic"] == f"tx:{h}"]
        assert [m["offset"] for m in msgs] == [1, 2, 3]
    db: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        ids = sorted(d["_id"] for d in db[mongo_db_name]["events"].find({"tx_hash": h,
                                                                         "kind": "tx"}))
    finally:
        db.close()
    block = msgs[1]["record"]["block_hash"]
    assert ids == sorted([f"31337:tx:{h}/pending", f"31337:{block}:tx:{h}/pending",
                          f"31337:{block}:tx:{h}/confirmed"])
