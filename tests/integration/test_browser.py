"""Headless Chromium opens the demo page of `chainpush run`, logs in, subscribes, and sees an
event emitted on anvil appear (and the CallDemo value change); the page survives its push node
being killed; its state values never go backwards and a stale message never overwrites a row;
it resumes into a new stream after the store was wiped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chainpush import deploy, procs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHAINPUSH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def write_config(path: Path, *, rpc: str, deployments: Path, mongo_uri: str, redis_url: str,
                 database: str) -> None:
    v = json.dumps
    path.write_text("\n".join([
        "[node]", f"urls = {v([rpc])}", "poll_interval_s = 0.1", "",
        "[watch]", 'name = "browser"', f"abi_dir = {v(str(ROOT / 'abi'))}",
        f"deployments = {v(str(deployments))}", "",
        "[stores]", f"mongo_uri = {v(mongo_uri)}", f"redis_url = {v(redis_url)}",
        f"database = {v(database)}", 'namespace = "browser"', "",
        "[push]", "port = 0", "heartbeat_s = 1.0", "node_ttl_s = 3.0", "reconcile_s = 0.5", "",
        "[auth]", "port = 0", "",
        "[[contracts]]", 'name = "DemoToken"', "",
        "[[contracts]]", 'name = "CallDemo"',
        "[[contracts.state]]", 'function = "get"', 'on = ["ValueChanged"]', "",
    ]))


def node_urls(log: Path) -> list[str]:
    found = re.search(r"\(push nodes: (\S+), (\S+)\)", log.read_text(errors="replace"))
    assert found is not None
    return [found.group(1), found.group(2)]


def dev_login(url: str, user: str) -> str:
    req = urllib.request.Request(url + "/auth/login", data=json.dumps({"user": user}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(json.loads(resp.read())["token"])


def health(ws_url: str) -> dict[str, object]:
    url = ws_url.replace("ws://", "http://").replace("/ws", "/healthz")
    with urllib.request.urlopen(url, timeout=5) as resp:
        answer: dict[str, object] = json.loads(resp.read())
    return answer


def page_url(log: Path) -> str | None:
    found = re.search(r"chainpush demo page: (\S+)/", log.read_text(errors="replace"))
    return found.group(1) if found else None


@pytest.mark.requires(os.path.exists(CHROMIUM), "Debian chromium is not installed")
def test_page_shows_an_event_emitted_on_anvil(
    anvil: object, mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright
    from web3 import HTTPProvider, Web3
    from websockets.sync.client import connect

    rpc = anvil.http_url  # type: ignore[attr-defined]
    w3 = Web3(HTTPProvider(rpc))
    deploy.use_sender(w3)
    deploy.deploy(w3, deployments_dir=tmp_path / "deployments")
    token = deploy.contract(w3, "DemoToken", deployments_dir=tmp_path / "deployments")
    call_demo = deploy.contract(w3, "CallDemo", deployments_dir=tmp_path / "deployments")
    config = tmp_path / "chainpush.toml"
    write_config(config, rpc=rpc, deployments=tmp_path / "deployments", mongo_uri=mongo_uri,
                 redis_url=redis_url, database=mongo_db_name)
    log = tmp_path / "run.log"
    argv = [str(Path(sys.executable).parent / "chainpush"), "run", "--config", str(config)]
    server = procs.spawn("chainpush-run", argv, log, "", lambda: page_url(log) is not None,
                         timeout_s=30 * unit)
    try:
        url = page_url(log)
        assert url is not None
        # beside the browser, a plain client on each of the two push nodes
        clients = []
        stack = contextlib.ExitStack()
        for ws_url in node_urls(log):
            ws = stack.enter_context(connect(ws_url, open_timeout=5 * unit))
            clients.append(ws)
            ws.send(json.dumps({"type": "auth", "token": dev_login(url, "bob")}))
            assert json.loads(ws.recv(timeout=5 * unit))["type"] == "welcome"
            ws.send(json.dumps({"type": "subscribe", "topic": "contract:DemoToken"}))
            assert json.loads(ws.recv(timeout=5 * unit))["type"] == "subscribed"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(url + "/")
                page.fill("#user", "alice")
                page.click("#go")
                expect(page.locator("#state")).to_have_text(
                    re.compile("subscribed|connected"), timeout=10_000 * unit)
                expect(page.locator("#who")).to_have_text("alice")
                to = w3.eth.accounts[1]
                deploy.wait(w3, token.functions.transfer(to, 12345).transact(), "transfer")
                row = page.locator("#events .event", has_text="DemoToken.Transfer")
                expect(row.first).to_be_visible(timeout=15_000 * unit)
                # 12345 base units of an 18-decimals token, shown for people
                expect(row.first.locator('[data-raw="12345"]')).to_have_text(
                    "0.000000000000012345 DEMO")
                expect(row.first).to_contain_text("pending")
                deploy.wait(w3, call_demo.functions.set(2021).transact(), "CallDemo.set")
                expect(page.locator("#calldemo")).to_contain_text("2021",
                                                                  timeout=15_000 * unit)
                expect(page.locator("#errors")).to_have_text("")
            finally:
                browser.close()
        for ws in clients:  # the watcher may have backfilled the mint first: read until 12345
            offsets: list[int] = []
            value = None
            while value != "12345":
                got = json.loads(ws.recv(timeout=5 * unit))
                assert got["type"] == "message"
                offsets.append(got["offset"])
                value = got["record"]["args"].get("value")
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        stack.close()
    finally:
        server.stop()
        if server.proc is not None and server.proc.returncode not in (0, -15, None):
            print(log.read_text()[-3000:], file=sys.stderr)


@pytest.mark.requires(os.path.exists(CHROMIUM), "Debian chromium is not installed")
async def test_page_survives_its_push_node_being_killed(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, tmp_path: Path,
) -> None:
    """Two push nodes as processes; the page's node is SIGKILLed mid-stream: the JS client
    reconnects to the other node, resumes with `since`, and shows every event exactly once."""
    from playwright.async_api import async_playwright, expect

    from chainpush.push.config import AuthServiceConfig
    from chainpush.push.tokens import TokenConfig
    from chainpush.push.web import AuthService
    from tests.integration.push_support import SECRET, collector_for, make_record, stores
    from tests.integration.test_push_failover import node_process

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    config = tmp_path / "chainpush.toml"
    config.write_text(
        f'[stores]\nmongo_uri = "{mongo_uri}"\nredis_url = "{redis_url}"\n'
        f'database = "{mongo_db_name}"\nnamespace = "{cfg.namespace}"\n'
        f'[push]\nheartbeat_s = 1.0\nnode_ttl_s = 3.0\nreconcile_s = {0.5 * unit}\n'
        f'[auth]\nsecret = "{SECRET}"\n'
    )
    with node_process(config, "b1", tmp_path) as (n1, url1), \
            node_process(config, "b2", tmp_path) as (n2, url2):
        auth = AuthService(AuthServiceConfig(port=0), tokens=TokenConfig(secret=SECRET),
                           dev_mode=True, push_urls=[url1, url2], topics=["contract:DemoToken"])
        async with auth, collector_for(cfg) as collector, async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(auth.url + "/")
                await page.fill("#user", "alice")
                await page.click("#go")
                state = page.locator("#state")
                await expect(state).to_have_text("subscribed", timeout=10_000 * unit)
                await collector.accept([make_record(n) for n in range(5)])
                rows = page.locator("#events .event")
                await expect(rows).to_have_count(5, timeout=10_000 * unit)
                # which node serves the page? the one counting a connection
                serving = [n for n, u in ((n1, url1), (n2, url2))
                           if (await asyncio.to_thread(health, u))["connections"] == 1]
                assert len(serving) == 1
                serving[0].kill()
                await collector.accept([make_record(n) for n in range(5, 10)])
                await expect(rows).to_have_count(10, timeout=15_000 * unit)
                await expect(state).to_have_text("subscribed", timeout=10_000 * unit)
                ids = await rows.evaluate_all("rs => rs.map(r => r.dataset.msg)")
                assert sorted(ids) == sorted(f"{make_record(n)['id']}/pending"
                                             for n in range(10))
                offsets = await rows.evaluate_all("rs => rs.map(r => r.dataset.offset)")
                assert sorted(int(o) for o in offsets) == list(range(1, 11))
            finally:
                await browser.close()


def call_demo_state(block: int, status: str, *, fork: str = "a") -> dict[str, object]:
    """A state record of ``CallDemo.get()`` read at ``block`` (its value: the block number)."""
    block_hash = "0x" + f"{block:062x}" + fork * 2
    return {
        "kind": "state", "id": f"31337:{block_hash}:state:CallDemo.get()", "chain_id": 31337,
        "contract": "CallDemo", "address": "0x" + "34" * 20, "event": "get",
        "args": {"inputs": [], "value": str(block)}, "block_number": block,
        "block_hash": block_hash, "block_timestamp": 1700000000 + block, "tx_hash": None,
        "log_index": -1, "status": status, "address_paths": [],
    }


@contextlib.asynccontextmanager
async def page_on(urls: list[str], unit: float,
                  topics: list[str]) -> AsyncIterator[tuple[Any, Any]]:
    """The demo page (served by an auth service in dev mode) logged in as alice and subscribed
    to ``topics``; yields (page, collector-less auth service)."""
    from playwright.async_api import async_playwright, expect

    from chainpush.push.config import AuthServiceConfig
    from chainpush.push.tokens import TokenConfig
    from chainpush.push.web import AuthService
    from tests.integration.push_support import SECRET

    auth = AuthService(AuthServiceConfig(port=0), tokens=TokenConfig(secret=SECRET),
                       dev_mode=True, push_urls=urls, topics=topics)
    async with auth, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(auth.url + "/")
            await page.fill("#user", "alice")
            await page.click("#go")
            await expect(page.locator("#state")).to_have_text("subscribed",
                                                              timeout=10_000 * unit)
            yield page, auth
        finally:
            await browser.close()


@pytest.mark.requires(os.path.exists(CHROMIUM), "Debian chromium is not installed")
async def test_page_state_value_and_rows_never_go_backwards(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    """docs/protocol.md §5: a state key shows its live record of the highest block, whatever
    the arrival order; a record's row shows its greatest (incarnation, status) message. Before:
    the page showed whatever came last (the demo's stale CallDemo values)."""
    from playwright.async_api import expect

    from tests.integration.push_support import collector_for, make_record, push_node, stores

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with (
        push_node(cfg, "p1", unit) as node, collector_for(cfg) as collector,
        page_on([node.url], unit, ["contract:DemoToken", "state:CallDemo"]) as (page, _),
    ):
        value = page.locator("#calldemo")

        def row(status: str, value: str) -> Any:
            # by what a card shows (not by its data-id): the same locator found the old page's
            # row-per-message, which is how this test failed before the fix
            return page.locator(f'#events .event[data-status="{status}"]').filter(
                has=page.locator(f'[data-raw="{value}"]'))

        await collector.accept([call_demo_state(10, "pending")])
        await expect(value).to_have_text("10", timeout=10_000 * unit)
        await collector.accept([call_demo_state(20, "pending")])
        await expect(value).to_have_text("20", timeout=10_000 * unit)
        # the watcher confirms block 10 (12 deep) while block 20 is pending: a later message
        # of an older block; the value must stay at block 20's
        await collector.accept([call_demo_state(10, "confirmed")])
        await expect(row("confirmed", "10")).to_have_count(1, timeout=10_000 * unit)
        await expect(value).to_have_text("20")
        await expect(value).to_have_attribute("data-block", "20")
        # block 20 orphaned: the next highest live record is current again
        await collector.accept([call_demo_state(20, "removed")])
        await expect(row("removed", "20")).to_have_count(1, timeout=10_000 * unit)
        await expect(value).to_have_text("10")
        await expect(page.locator("#values li")).to_have_text(
            ["CallDemo.get() = 10 (block 10, confirmed)"])

        # one row per record; a stale message (a pending after its confirmed, as a second
        # topic or a replay can deliver it) changes nothing
        x, marker = make_record(1), make_record(2)
        x_value, marker_value = x["args"]["value"], marker["args"]["value"]
        await collector.accept([{**x, "status": "confirmed"}])
        await expect(row("confirmed", x_value)).to_have_count(1, timeout=10_000 * unit)
        await collector.accept([x, marker])  # in one topic: the marker arrives after x
        await expect(row("pending", marker_value)).to_have_count(1, timeout=10_000 * unit)
        x_rows = page.locator("#events .event").filter(
            has=page.locator(f'[data-raw="{x_value}"]'))
        await expect(x_rows).to_have_count(1)
        await expect(x_rows.locator(".status")).to_have_text("confirmed")
        await expect(x_rows).to_have_class(re.compile("status-confirmed"))
        # the stale pending really reached the page (live, or from history when the node
        # repaired a gap under load): it was the page that ignored it
        sent = (node.metrics.counters["chainpush_messages_out_total"]
                + node.metrics.counters.get("chainpush_history_out_total", 0))
        assert sent >= 7, node.metrics.counters


@pytest.mark.requires(os.path.exists(CHROMIUM), "Debian chromium is not installed")
async def test_page_resumes_into_a_new_stream_after_a_wipe(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    """The page's node goes away; meanwhile the store is wiped and refilled with more messages
    than the page had seen. The page reconnects with its old since and epoch, is reset, and
    shows every new record (before: clamped to since=5 of the new stream, 1..5 never shown)."""
    from playwright.async_api import expect
    from pymongo import AsyncMongoClient

    from tests.integration.push_support import collector_for, make_record, push_node, stores

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    port = procs.free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    node_up = contextlib.AsyncExitStack()
    await node_up.enter_async_context(push_node(cfg, "w1", unit, port=port))
    try:
        async with page_on([url], unit, ["contract:DemoToken"]) as (page, _):
            rows = page.locator("#events .event")
            async with collector_for(cfg) as collector:
                await collector.accept([make_record(n) for n in range(5)])
            await expect(rows).to_have_count(5, timeout=10_000 * unit)
            await node_up.aclose()  # 1001: the page waits and retries the same URL
            await expect(page.locator("#state")).not_to_have_text("subscribed",
                                                                  timeout=10_000 * unit)
            mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(cfg.mongo_uri)
            await mongo.drop_database(cfg.database)
            await mongo.close()
            async with collector_for(cfg) as collector:  # the watcher refills the store
                await collector.accept([make_record(n) for n in range(100, 108)])
            await node_up.enter_async_context(push_node(cfg, "w1", unit, port=port))
            await expect(rows).to_have_count(13, timeout=20_000 * unit)
            ids = await rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
            assert sorted(ids) == sorted(make_record(n)["id"]
                                         for n in [*range(5), *range(100, 108)])
    finally:
        await node_up.aclose()


@pytest.mark.requires(os.path.exists(CHROMIUM), "Debian chromium is not installed")
def test_page_calldemo_value_never_goes_back_under_demo_traffic(
    anvil: object, mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float,
    tmp_path: Path,
) -> None:
    """Real parts (`chainpush run`, anvil, the demo traffic): the page's CallDemo value, sampled
    while traffic flows, is always a value the chain had, never older than one shown before (the
    `confirmed` of an older block arrives 12 blocks after its `pending`: the page used to show
    it), and ends equal to `eth_call` at latest."""
    import threading

    from playwright.sync_api import expect, sync_playwright
    from web3 import HTTPProvider, Web3

    from chainpush import traffic

    rpc = anvil.http_url  # type: ignore[attr-defined]
    w3 = Web3(HTTPProvider(rpc))
    deploy.use_sender(w3)
    deploy.deploy(w3, deployments_dir=tmp_path / "deployments")
    demo = traffic.Demo.attach(w3, tmp_path / "deployments")
    config = tmp_path / "chainpush.toml"
    write_config(config, rpc=rpc, deployments=tmp_path / "deployments", mongo_uri=mongo_uri,
                 redis_url=redis_url, database=mongo_db_name)
    log = tmp_path / "run.log"
    argv = [str(Path(sys.executable).parent / "chainpush"), "run", "--config", str(config)]
    server = procs.spawn("chainpush-run", argv, log, "", lambda: page_url(log) is not None,
                         timeout_s=30 * unit)
    samples: list[str] = []
    try:
        url = page_url(log)
        assert url is not None
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(url + "/")
                page.fill("#user", "alice")
                page.click("#go")
                expect(page.locator("#state")).to_have_text("subscribed", timeout=10_000 * unit)
                value = page.locator("#calldemo")  # "?" until the first ValueChanged
                # the demo's mix, with a CallDemo.set every other transaction so that sets are
                # closer together than the 12 blocks after which their confirmations come
                rng = random.Random(9)
                emit = demo.emitters(rng)
                others = [name for name in emit if name != "ValueChanged"]
                done = threading.Event()

                def send() -> None:
                    try:
                        for n in range(60):
                            emit["ValueChanged" if n % 2 else rng.choice(others)]()
                    finally:
                        done.set()

                sender = threading.Thread(target=send)
                sender.start()
                while not done.is_set():
                    samples.append(value.inner_text())
                sender.join()
                latest = str(demo.call_demo.functions.get().call())
                expect(value).to_have_text(latest, timeout=15_000 * unit)
                samples.append(value.inner_text())
            finally:
                browser.close()
    finally:
        server.stop()
    # the chain's value at every block: when did each value appear?
    head = w3.eth.block_number
    first_block: dict[str, int] = {}
    for block in range(head + 1):
        if w3.eth.get_code(demo.call_demo.address, block_identifier=block):  # deployed yet?
            v = str(demo.call_demo.functions.get().call(block_identifier=block))
            first_block.setdefault(v, block)
    blocks = [first_block[v] for v in samples if v != "?"]  # every sample is a chain value
    regressions = [(a, b) for a, b in itertools.pairwise(blocks) if b < a]
    assert len(set(blocks)) > 10, samples  # the sampling saw the value move
    assert regressions == [], f"{len(regressions)} of {len(blocks)} samples went back"
