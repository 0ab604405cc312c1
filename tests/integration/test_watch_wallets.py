"""Wallet activity on real parts (issue 13.4, ``[watch] wallet_activity``): anvil, nx-27017,
Redis, collect, a push node and a websocket client. Tokens that are *not* in ``[[contracts]]``
(``PlainToken`` ERC-20, ``PlainNFT`` ERC-721, ``PlainMulti`` ERC-1155, contracts/WalletTokens.sol)
reach ``user:<wallet>`` of a subscribed wallet with their token metadata; a wallet nobody
listens to gets nothing; a configured token's transfer is recorded once; a reorg retracts; Redis
going away keeps the last set of wallets, also across a restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chainpush import procs
from chainpush.constants import RedisNames
from chainpush.push.config import StoresConfig
from chainpush.watcher.config import Config, load_config
from chainpush.watcher.decode import checksum
from chainpush.watcher.interest import Interest
from chainpush.watcher.service import Watcher
from chainpush.watcher.sink import MongoSink, Sink
from tests.conftest import Anvil
from tests.integration import watch_support as ws
from tests.integration.push_support import Client, collector_for, push_node, stores, token

pytestmark = pytest.mark.integration

WINDOW = 8
WALLET = checksum(ws.ACCOUNTS[1])  # has a subscriber
NOBODY = checksum(ws.ACCOUNTS[2])  # has none
TOPIC = f"user:{WALLET}"


def send(url: str, to: str, sig: str, types: list[str], values: list[Any]) -> int:
    """A transaction from the first account, mined (automine): its block number."""
    tx = ws.rpc(url, "eth_sendTransaction", [{"from": ws.OWNER, "to": to, "gas": hex(300_000),
                                              "data": ws.calldata(sig, types, values)}])
    return int(ws.receipt(url, tx)["blockNumber"], 16)


def transfer(url: str, token_address: str, to: str, value: int) -> int:
    return send(url, token_address, "transfer(address,uint256)", ["address", "uint256"],
                [to, value])


def config_for(tmp_path: Path, url: str, cfg: StoresConfig, demo: str) -> Config:
    path = ws.write_config(
        tmp_path / "watch.toml", urls=[url], mongo_uri=cfg.mongo_uri, database=cfg.database,
        contracts=[{"name": "DemoToken", "abi": "DemoToken", "address": demo}],
        name="wallets", reorg_window=WINDOW, finality_depth=4,
        wallet_activity=["erc20", "erc721", "erc1155"],
    )
    path.write_text(path.read_text().replace(
        "[stores]\n", f'[stores]\nredis_url = "{cfg.redis_url}"\nnamespace = "{cfg.namespace}"\n'))
    return load_config(path)


@contextlib.asynccontextmanager
async def running(config: Config, sink: Sink, url: str, unit: float
                  ) -> AsyncIterator[tuple[Watcher, Any]]:
    """A watcher running on ``sink``; yields it and ``caught_up()``."""
    async with Watcher(config, sink) as watcher:
        task = asyncio.create_task(watcher.run())

        async def caught_up() -> None:
            await ws.until_caught_up(lambda: watcher.tip_hash, url, 20 * unit, task.done)
            if task.done():
                task.result()

        try:
            yield watcher, caught_up
        finally:
            await watcher.aclose()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def of_block(client: Client, block: int, want: list[str]) -> list[dict[str, Any]]:
    """Read until the statuses of ``TOPIC``'s messages of ``block`` are ``want``."""
    def mine() -> list[dict[str, Any]]:
        return [m["record"] for m in client.messages
                if m["topic"] == TOPIC and m["record"]["block_number"] == block]
    while [r["status"] for r in mine()] != want:
        assert len(mine()) < len(want), [r["status"] for r in mine()]
        await client.next_frame()
    return mine()


async def wallets_in_force(url: str, caught_up: Any, mongo_uri: str, db: str,
                           want: list[str], unit: float) -> None:
    """Mine empty blocks until the watcher's checkpoint holds ``want`` as the wallets in force
    (it reads the registry every step; the set is stored with the step)."""
    def holds() -> bool:
        cp = ws.checkpoint(mongo_uri, db)
        return cp is not None and cp.get("wallets") == want

    async with asyncio.timeout(20 * unit):
        while not await asyncio.to_thread(holds):
            await asyncio.to_thread(ws.rpc, url, "evm_mine")
            await caught_up()


async def test_any_token_reaches_the_wallets_user_topic_with_its_metadata(
    anvil: Anvil, mongo_uri: str, redis_url: str, mongo_db_name: str, tmp_path: Path,
    unit: float,
) -> None:
    url = anvil.http_url
    demo, _ = ws.deploy(url, "DemoToken")
    plain, _ = ws.deploy(url, "PlainToken")
    nft, _ = ws.deploy(url, "PlainNFT")
    multi, _ = ws.deploy(url, "PlainMulti")
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    config = config_for(tmp_path, url, cfg, demo)
    async with (
        collector_for(cfg) as collector,
        push_node(cfg, "n1", unit) as node,
        Client.connect(node.url, token("alice", wallets=(WALLET,))) as client,
        running(config, collector, url, unit) as (_, caught_up),
    ):
        assert (await client.subscribe(TOPIC, since=0))["type"] == "subscribed"
        await caught_up()
        await wallets_in_force(url, caught_up, mongo_uri, mongo_db_name, [WALLET], unit)

        b_plain = await asyncio.to_thread(transfer, url, plain, WALLET, 5 * 10**6)
        await asyncio.to_thread(transfer, url, plain, NOBODY, 7 * 10**6)  # nobody listens
        b_demo = await asyncio.to_thread(transfer, url, demo, WALLET, 10**18)  # configured
        b_nft = await asyncio.to_thread(send, url, nft, "mint(address,uint256)",
                                        ["address", "uint256"], [WALLET, 42])
        b_multi = await asyncio.to_thread(send, url, multi, "mint(address,uint256,uint256)",
                                          ["address", "uint256", "uint256"], [WALLET, 7, 3])
        await caught_up()
        async with asyncio.timeout(10 * unit):
            got = await client.until(4, TOPIC)
        by = {(m["record"]["contract"], m["record"]["block_number"]): m["record"] for m in got}
        assert sorted(by) == sorted([("erc20", b_plain), ("DemoToken", b_demo),
                                     ("erc721", b_nft), ("erc1155", b_multi)])
        assert all(m["record"]["status"] == "pending" for m in got)
        erc20 = by[("erc20", b_plain)]
        assert erc20["address"] == checksum(plain) and erc20["event"] == "Transfer"
        assert erc20["args"] == {"from": checksum(ws.OWNER), "to": WALLET,
                                 "value": str(5 * 10**6)}
        assert erc20["token"] == {"standard": "erc20", "symbol": "PLN", "decimals": 6}
        assert by[("erc721", b_nft)]["args"]["tokenId"] == "42"
        assert by[("erc721", b_nft)]["token"] == {"standard": "erc721", "symbol": "PNFT",
                                                  "decimals": None}
        assert by[("erc1155", b_multi)]["event"] == "TransferSingle"
        # no symbol() in PlainMulti (ERC-1155 has no metadata calls): null fields
        assert by[("erc1155", b_multi)]["token"] == {"standard": "erc1155", "symbol": None,
                                                     "decimals": None}
        assert "token" not in by[("DemoToken", b_demo)]

        docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
        assert not [d for d in docs if d["args"].get("to") == NOBODY]
        # the configured token's transfer: its own record only, never an erc20 one too
        assert not [d for d in docs if d["contract"] == "erc20"
                    and d["address"] == checksum(demo)]

        # a reorg retracts a wallet-activity record like any other
        doomed = await asyncio.to_thread(transfer, url, plain, WALLET, 11)
        await caught_up()
        async with asyncio.timeout(10 * unit):
            await of_block(client, doomed, ["pending"])
        await asyncio.to_thread(ws.rpc, url, "anvil_reorg", [1, []])
        await caught_up()
        async with asyncio.timeout(10 * unit):
            retracted = await of_block(client, doomed, ["pending", "removed"])
        assert retracted[-1]["token"]["symbol"] == "PLN"
        # the symbol and decimals were read once per token
        cp = await asyncio.to_thread(ws.checkpoint, mongo_uri, mongo_db_name)
        assert cp is not None
        assert sorted(cp["tokens"]) == sorted([[checksum(plain), "erc20", "PLN", 6],
                                               [checksum(nft), "erc721", "PNFT", None],
                                               [checksum(multi), "erc1155", None, None]])


async def test_redis_away_keeps_the_last_set_of_wallets_across_a_restart(
    anvil: Anvil, mongo_uri: str, mongo_db_name: str, tmp_path: Path, unit: float,
) -> None:
    url = anvil.http_url
    demo, _ = ws.deploy(url, "DemoToken")
    plain, _ = ws.deploy(url, "PlainToken")
    server = procs.start_redis(port=procs.free_port(), state_dir=tmp_path / "redis")
    try:
        cfg = StoresConfig(mongo_uri=mongo_uri, redis_url=server.url, database=mongo_db_name,
                           namespace="wallets")
        config = config_for(tmp_path, url, cfg, demo)
        names = RedisNames(cfg.namespace)
        # a live push node's registry entry for user:<WALLET> (docs/seams.md §4: what a
        # subscriber to that topic makes its node write)
        client = redis.Redis.from_url(server.url)
        client.zadd(names.nodes(), {"n1": time.time() + 3600})
        client.hset(names.topic(TOPIC), "n1", str(time.time()))
        client.close()
        async with Interest(server.url, names) as interest:
            assert await interest.topics("user:") == {WALLET}
        async with MongoSink(mongo_uri, mongo_db_name) as sink, \
                running(config, sink, url, unit) as (_, caught_up):
            await caught_up()
            await wallets_in_force(url, caught_up, mongo_uri, mongo_db_name, [WALLET],
                                   unit)
            before = await asyncio.to_thread(transfer, url, plain, WALLET, 1)
            await caught_up()
            server.stop()  # Redis goes away: the watcher goes on with the last set
            during = await asyncio.to_thread(transfer, url, plain, WALLET, 2)
            await caught_up()
        # restarted while Redis is still away: the set comes back from the checkpoint
        async with MongoSink(mongo_uri, mongo_db_name) as sink, \
                running(config, sink, url, unit) as (watcher, caught_up):
            await caught_up()
            after = await asyncio.to_thread(transfer, url, plain, WALLET, 3)
            await caught_up()
            assert watcher.metrics.counters["chainpush_watch_redis_errors_total"] >= 1
            assert "chainpush_watch_wallets 1\n" in watcher.render_metrics()
    finally:
        server.stop()
    docs = await asyncio.to_thread(ws.stored_docs, mongo_uri, mongo_db_name)
    got = sorted((d["block_number"], d["args"]["value"]) for d in docs
                 if d["contract"] == "erc20" and d["status"] == "pending")
    assert got == [(before, "1"), (during, "2"), (after, "3")]
