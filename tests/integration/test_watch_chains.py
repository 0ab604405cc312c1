"""Several chains in one deployment (issue 13.5, docs/watcher.md §Several chains), on real parts:
two anvils with different chain ids, one MongoDB and one Redis, one ``chainpush watch`` process
per chain (each with its own lease), a real push node and websocket client, and headless
Chromium for the page.

* a wallet's ``user:`` topic carries its records of both chains, each with its ``chain_id``;
  ``contract:`` topics of both chains are served by a push node configured with one chain's
  file (it learns the other's names from the watchers' claims);
* a contract name already claimed by another chain stops the second watcher at startup with
  the error naming the name, both chains and the fix; two files of one ``chainpush run`` naming
  the same contract are refused before anything starts;
* the page shows each card's chain.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from eth_utils import to_checksum_address

from chainpush import procs
from tests.conftest import ROOT, Anvil, start_test_anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

BASE = 8453
DEV = 31337
WALLET = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # ws.ACCOUNTS[2], EIP-55


@pytest.fixture
def two_anvils(tmp_path: Path) -> Iterator[tuple[Anvil, Anvil]]:
    dev = start_test_anvil(tmp_path / "anvil-dev")
    try:
        port = procs.free_port()
        state = tmp_path / "anvil-base"
        state.mkdir()
        base = Anvil(server=procs.start_anvil(port=port, state_dir=state, chain_id=BASE),
                     port=port, ipc_path=state / "none.ipc")
        try:
            yield dev, base
        finally:
            base.server.stop()
    finally:
        dev.server.stop()
        dev.ipc_path.unlink(missing_ok=True)


def chain_config(path: Path, node: Anvil, chain_id: int, contracts: list[dict[str, Any]], *,
                 mongo_uri: str, database: str, redis_url: str, namespace: str) -> Path:
    """A per-chain file sharing ``[stores]`` (and ``[watch] name``: the lease keys differ by
    chain id)."""
    ws.write_config(path, urls=[node.http_url], mongo_uri=mongo_uri, database=database,
                    contracts=contracts, name="shop")
    text = path.read_text().replace(
        "[stores]\n", f"[stores]\nredis_url = {json.dumps(redis_url)}\n"
                      f"namespace = {json.dumps(namespace)}\n", 1)
    text = text.replace("[node]\n", f"[node]\nchain_id = {chain_id}\n", 1)
    path.write_text(text)
    return path


class Watch:
    """One ``chainpush watch --sink collect`` process and its log."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.proc = ws.start_watch_process(config, log, "--sink", "collect")

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_leading(self, unit: float) -> None:
        ws.wait_for(lambda: "leader: holding lease" in self.text() or self.proc.poll() is not None,
                    30 * unit, f"{self.log.name} to lead")
        assert self.proc.poll() is None, self.text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def transfer(url: str, token: str, value: int) -> None:
    """``DemoToken.transfer(WALLET, value)`` from the first account, mined (automine)."""
    data = ws.calldata("transfer(address,uint256)", ["address", "uint256"], [WALLET, value])
    tx = ws.rpc(url, "eth_sendTransaction",
                [{"from": ws.OWNER, "to": token, "data": data, "gas": hex(300_000)}])
    # anvil's automine answers before the receipt exists: wait for it (bounded)
    ws.wait_for(lambda: ws.rpc(url, "eth_getTransactionReceipt", [tx]) is not None, 10,
                f"the receipt of {tx}")
    assert ws.rpc(url, "eth_getTransactionReceipt", [tx])["status"] == "0x1"


def docs(mongo_uri: str, db: str, collection: str) -> list[dict[str, Any]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    try:
        return list(client[db][collection].find({}))
    finally:
        client.close()


async def test_one_watcher_per_chain_and_a_wallets_topic_carries_both_chains(
    two_anvils: tuple[Anvil, Anvil], mongo_uri: str, redis_url: str, mongo_db_name: str,
    unit: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.integration.push_support import Client, push_node, stores, token

    dev, base = two_anvils
    assert int(ws.rpc(base.http_url, "eth_chainId"), 16) == BASE
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    dev_token, _ = ws.deploy(dev.http_url, "DemoToken")
    base_token, _ = ws.deploy(base.http_url, "DemoToken")
    common = {"mongo_uri": mongo_uri, "database": mongo_db_name, "redis_url": redis_url,
              "namespace": cfg.namespace}
    dev_file = chain_config(tmp_path / "dev.toml", dev, DEV,
                            [{"name": "DemoToken", "address": dev_token}], **common)
    base_file = chain_config(tmp_path / "base.toml", base, BASE,
                             [{"name": "DemoToken_base", "abi": "DemoToken",
                               "address": base_token}], **common)
    for i in range(2):
        transfer(dev.http_url, dev_token, 10**18 + i)
        transfer(base.http_url, base_token, 2 * 10**18 + i)
    watchers = [Watch(dev_file, tmp_path / "dev.log"), Watch(base_file, tmp_path / "base.log")]
    try:
        for w in watchers:
            w.wait_leading(unit)
        # one lease and one checkpoint per chain, under the same [watch] name
        leases = {d["_id"] for d in docs(mongo_uri, mongo_db_name, "leases")}
        assert leases == {f"{DEV}:shop", f"{BASE}:shop"}
        claims = {d["_id"]: (d["chain_id"], d["watch"])
                  for d in docs(mongo_uri, mongo_db_name, "contracts")}
        assert claims == {"DemoToken": (DEV, f"{DEV}:shop"),
                          "DemoToken_base": (BASE, f"{BASE}:shop")}

        # a push node started with the dev chain's names only: it learns Base's from the claims
        tok = token("alice", wallets=(WALLET,))
        async with push_node(cfg, "chains-1", unit, contracts=("DemoToken",)) as node, \
                Client.connect(node.url, tok) as client:
            assert node.contract_names == {"DemoToken", "DemoToken_base", "erc20", "erc721",
                                           "erc1155"}
            for topic in (f"user:{WALLET}", "contract:DemoToken", "contract:DemoToken_base"):
                answer = await client.subscribe(topic, since=0)
                assert answer["type"] == "subscribed", answer
            unknown = await client.subscribe("contract:Nowhere", since=0)
            assert unknown["type"] == "error" and unknown["code"] == "unknown_topic", unknown
            # 2 transfers per chain (pending: within the reorg window)
            async with asyncio.timeout(30 * unit):
                got = await client.until(4, f"user:{WALLET}")
                await client.until(2, "contract:DemoToken")
                await client.until(2, "contract:DemoToken_base")
            assert sorted((m["record"]["chain_id"], m["record"]["contract"],
                           m["record"]["args"]["value"]) for m in got) == sorted([
                (DEV, "DemoToken", str(10**18)), (DEV, "DemoToken", str(10**18 + 1)),
                (BASE, "DemoToken_base", str(2 * 10**18)),
                (BASE, "DemoToken_base", str(2 * 10**18 + 1))])
            by_topic = {m["topic"]: m["record"]["chain_id"] for m in client.messages}
            assert by_topic["contract:DemoToken"] == DEV
            assert by_topic["contract:DemoToken_base"] == BASE
            # live: one more transfer on Base reaches the wallet's topic with its chain id
            transfer(base.http_url, base_token, 7)
            async with asyncio.timeout(30 * unit):
                live = (await client.until(5, f"user:{WALLET}"))[-1]["record"]
            assert (live["chain_id"], live["args"]["value"]) == (BASE, "7")
    except BaseException:
        for w in watchers:
            print(w.log.name, w.text()[-4000:])
        raise
    finally:
        for w in watchers:
            w.stop()
    for w in watchers:
        assert "Traceback" not in w.text(), w.text()[-3000:]


def test_a_name_claimed_by_another_chain_is_refused_at_startup(
    two_anvils: tuple[Anvil, Anvil], mongo_uri: str, redis_url: str, mongo_db_name: str,
    unit: float, tmp_path: Path,
) -> None:
    dev, base = two_anvils
    dev_token, _ = ws.deploy(dev.http_url, "DemoToken")
    base_token, _ = ws.deploy(base.http_url, "DemoToken")
    common = {"mongo_uri": mongo_uri, "database": mongo_db_name, "redis_url": redis_url,
              "namespace": "clash"}
    dev_file = chain_config(tmp_path / "dev.toml", dev, DEV,
                            [{"name": "DemoToken", "address": dev_token}], **common)
    clash = chain_config(tmp_path / "base.toml", base, BASE,
                         [{"name": "DemoToken", "address": base_token}], **common)
    first = Watch(dev_file, tmp_path / "dev.log")
    try:
        first.wait_leading(unit)
        exe = ROOT / ".venv" / "bin" / "chainpush"
        checked = subprocess.run([str(exe), "watch", "--config", str(clash), "--check-config"],
                                 capture_output=True, text=True, timeout=60 * unit)
        assert checked.returncode == 2, (checked.stdout, checked.stderr)
        assert f"already used on chain {DEV}" in checked.stderr, checked.stderr
        second = subprocess.run([str(exe), "watch", "--config", str(clash), "--sink", "mongo"],
                                capture_output=True, text=True, timeout=60 * unit)
        assert second.returncode == 2, second.stderr[-3000:]
        err = second.stderr
        for part in (f"{clash}: [[contracts]] DemoToken: the name is already used on chain "
                     f"{DEV} (watcher {DEV}:shop, {dev_file}, {to_checksum_address(dev_token)})",
                     f"{mongo_db_name}.contracts", f"({BASE}:shop) is on chain {BASE}",
                     f'rename it here (name = "DemoToken_{BASE}"',
                     f"chainpush watch --config {clash} --release-claim DemoToken"):
            assert part in err, (part, err)
        assert "Traceback" not in err
        # the refused watcher took no lease and wrote nothing
        assert {d["_id"] for d in docs(mongo_uri, mongo_db_name, "leases")} == {f"{DEV}:shop"}
        assert {(d["_id"], d["chain_id"]) for d in docs(mongo_uri, mongo_db_name,
                                                        "contracts")} == {("DemoToken", DEV)}

        # the fix it names: release the name (chain 31337 stopped watching it), then it starts
        first.stop()
        released = subprocess.run([str(exe), "watch", "--config", str(clash),
                                   "--release-claim", "DemoToken"],
                                  capture_output=True, text=True, timeout=60 * unit)
        assert released.returncode == 0, released.stderr
        listed = subprocess.run([str(exe), "watch", "--config", str(clash), "--claims"],
                                capture_output=True, text=True, timeout=60 * unit)
        assert listed.returncode == 0 and listed.stdout == "", (listed.stdout, listed.stderr)
        moved = Watch(clash, tmp_path / "base.log")
        try:
            moved.wait_leading(unit)
        finally:
            moved.stop()
        assert {(d["_id"], d["chain_id"]) for d in docs(mongo_uri, mongo_db_name,
                                                        "contracts")} == {("DemoToken", BASE)}
    finally:
        first.stop()


def test_run_refuses_two_files_naming_one_contract(tmp_path: Path, mongo_uri: str) -> None:
    token = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    files = []
    for name, chain_id in (("mainnet.toml", 1), ("base.toml", BASE)):
        path = tmp_path / name
        path.write_text(f'[node]\nchain_id = {chain_id}\n[watch]\nname = "shop"\n'
                        f'[[contracts]]\nname = "USDC"\nabi = "DemoToken"\n'
                        f'address = "{token}"\n')
        files += ["--config", str(path)]
    exe = ROOT / ".venv" / "bin" / "chainpush"
    done = subprocess.run([str(exe), "run", *files, "--mongo-uri", mongo_uri],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"{tmp_path / 'base.toml'}: [[contracts]] USDC is also in " \
           f"{tmp_path / 'mainnet.toml'}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_page_shows_each_records_chain(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    from tests.integration.push_support import BOB, collector_for, make_record, push_node, stores
    from tests.integration.test_page_product import browser_page

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    timeout = 10_000 * unit
    dev_record = make_record(1)
    base_record = {**make_record(2, contract="DemoToken_base"), "chain_id": BASE,
                   "id": f"{BASE}:0x{0:064x}:2"}
    async with (
        push_node(cfg, "chains-page", unit) as node, collector_for(cfg) as collector,
        browser_page([node.url], ["contract:DemoToken", "contract:DemoToken_base"]) as (page, _),
    ):
        await page.fill("#user", "alice")
        await page.fill("#wallet", BOB)
        await page.click("#go")
        await expect(page.locator("#state")).to_have_text("subscribed", timeout=timeout)
        await collector.accept([dev_record, base_record])
        for record, label in ((dev_record, f"dev · {DEV}"), (base_record, f"Base · {BASE}")):
            for panel in ("#events", "#wallet-events"):
                card = page.locator(f'{panel} .event[data-id="{record["id"]}"]')
                await expect(card).to_have_attribute("data-chain", str(record["chain_id"]),
                                                     timeout=timeout)
                await expect(card.locator(".chain")).to_have_text(label)
                await expect(card.locator(".chain")).to_be_visible()
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(tmp_path / "chains-390.png"), full_page=True)
        assert await page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth") <= 0


async def test_a_push_node_serves_a_name_claimed_after_it_started(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
) -> None:
    """A watcher of another chain started after the push node: its names are served within one
    refresh of the claims (``claims_refresh_s``), without restarting the node."""
    from chainpush.push.node import PushNode
    from chainpush.watcher.claims import Claim, MongoClaims
    from tests.integration.push_support import TOKENS, Client, node_config, stores, token

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    config = node_config("chains-late", unit, contracts=("DemoToken",))

    async with PushNode(config, tokens=TOKENS, stores=cfg, claims_refresh_s=0.2 * unit) as node, \
            Client.connect(node.url, token("alice")) as client:
        refused = await client.subscribe("contract:DemoToken_base", since=0)
        assert refused["type"] == "error" and refused["code"] == "unknown_topic", refused
        # wallet activity's topics are every chain's: served without a claim
        assert (await client.subscribe("contract:erc20", since=0))["type"] == "subscribed"
        async with MongoClaims(mongo_uri, mongo_db_name) as claims:
            await claims.claim([Claim(name="DemoToken_base", chain_id=BASE,
                                      watch=f"{BASE}:shop")])
        await ws.await_for(lambda: "DemoToken_base" in (node.contract_names or set()),
                           10 * unit, "the node to read the new claim")
        answer = await client.subscribe("contract:DemoToken_base", since=0)
        assert answer["type"] == "subscribed", answer


def test_run_with_two_configs_runs_a_watcher_per_chain(
    two_anvils: tuple[Anvil, Anvil], mongo_uri: str, redis_url: str, mongo_db_name: str,
    unit: float, tmp_path: Path,
) -> None:
    """``chainpush run --config dev.toml --config base.toml``: one watcher (and lease) per
    file in one process; its push nodes serve both chains' topics."""
    import urllib.request

    from websockets.sync.client import connect

    from tests.integration.test_browser import node_urls, page_url

    dev, base = two_anvils
    dev_token, _ = ws.deploy(dev.http_url, "DemoToken")
    base_token, _ = ws.deploy(base.http_url, "DemoToken")
    transfer(dev.http_url, dev_token, 11)
    transfer(base.http_url, base_token, 22)
    common = {"mongo_uri": mongo_uri, "database": mongo_db_name, "redis_url": redis_url,
              "namespace": "run2"}
    dev_file = chain_config(tmp_path / "dev.toml", dev, DEV,
                            [{"name": "DemoToken", "address": dev_token}], **common)
    dev_file.write_text(dev_file.read_text() + "\n[push]\nport = 0\nheartbeat_s = 1.0\n"
                        "node_ttl_s = 3.0\nreconcile_s = 0.5\n\n[auth]\nport = 0\n")
    base_file = chain_config(tmp_path / "base.toml", base, BASE,
                             [{"name": "DemoToken_base", "abi": "DemoToken",
                               "address": base_token}], **common)
    log = tmp_path / "run.log"
    argv = [str(ROOT / ".venv" / "bin" / "chainpush"), "run", "--config", str(dev_file),
            "--config", str(base_file)]
    server = procs.spawn("chainpush-run", argv, log, "", lambda: page_url(log) is not None,
                         timeout_s=30 * unit)
    try:
        url = page_url(log)
        assert url is not None
        ws.wait_for(lambda: {d["_id"] for d in docs(mongo_uri, mongo_db_name, "leases")}
                    == {f"{DEV}:shop", f"{BASE}:shop"}, 30 * unit, "a lease per chain")
        body = json.dumps({"user": "alice", "wallets": [WALLET]}).encode()
        req = urllib.request.Request(url + "/auth/login", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5 * unit) as resp:
            tok = json.loads(resp.read())["token"]
        with connect(node_urls(log)[0], open_timeout=5 * unit) as client:
            client.send(json.dumps({"type": "auth", "token": tok}))
            assert json.loads(client.recv(timeout=5 * unit))["type"] == "welcome"
            seen: set[tuple[str, int, str]] = set()

            def frame(timeout_s: float) -> dict[str, Any]:
                got: dict[str, Any] = json.loads(client.recv(timeout=timeout_s))
                if got["type"] == "message":
                    seen.add((got["topic"], got["record"]["chain_id"],
                              got["record"]["args"]["value"]))
                return got

            for topic in (f"user:{WALLET}", "contract:DemoToken_base"):
                client.send(json.dumps({"type": "subscribe", "topic": topic, "since": 0}))
                answer = frame(5 * unit)
                while answer["type"] == "message":  # the first topic's history may come first
                    answer = frame(5 * unit)
                assert answer["type"] == "subscribed", answer
            want = {(f"user:{WALLET}", DEV, "11"), (f"user:{WALLET}", BASE, "22"),
                    ("contract:DemoToken_base", BASE, "22")}
            while not want <= seen:
                frame(15 * unit)
    except BaseException:
        print(log.read_text()[-4000:])
        raise
    finally:
        server.stop()


async def test_claims_are_idempotent_per_chain_and_follow_the_config(
    mongo_uri: str, mongo_db_name: str,
) -> None:
    """On the real store: a restart (the same claims) and another ``[watch] name`` of the same
    chain claim again without error; a name dropped from a watcher's config is released at its
    next start; another chain is refused and nothing of its claim is written."""
    from chainpush.watcher.claims import Claim, MongoClaims
    from chainpush.watcher.errors import ConfigError

    def claim(name: str, chain_id: int = DEV, watch: str = "shop") -> Claim:
        return Claim(name=name, chain_id=chain_id, watch=f"{chain_id}:{watch}",
                     source=f"{watch}.toml")

    async with MongoClaims(mongo_uri, mongo_db_name) as claims:
        await claims.claim([claim("A"), claim("B")])
        await claims.claim([claim("A"), claim("B")])  # a restart, or a standby
        await claims.claim([claim("B", watch="other")])  # same chain, another watcher
        assert await claims.names() == {"A", "B"}
        await claims.claim([claim("A")])  # "shop" no longer watches B ("other" wrote it last)
        assert await claims.names() == {"A", "B"}
        await claims.claim([claim("C", watch="other")])  # "other" dropped B: released
        assert await claims.names() == {"A", "C"}
        with pytest.raises(ConfigError, match=r"base\.toml: \[\[contracts\]\] A: the name is "
                                              r"already used on chain 31337"):
            await claims.claim([claim("A", chain_id=BASE, watch="base")])
        held = {d["_id"]: d["chain_id"] for d in await claims.list()}
        assert held == {"A": DEV, "C": DEV}
        assert await claims.release("A") and not await claims.release("A")
        await claims.claim([claim("A", chain_id=BASE, watch="base")])
        assert {d["_id"]: d["chain_id"] for d in await claims.list()} == {"A": BASE, "C": DEV}
