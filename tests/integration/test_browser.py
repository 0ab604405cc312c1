"""Headless Chromium opens the demo page of `chainpush run`, logs in, subscribes, and sees an
event emitted on anvil appear (and the CallDemo value change)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import urllib.request
from pathlib import Path

import pytest

from chainpush import deploy, procs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
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


def page_url(log: Path) -> str | None:
    found = re.search(r"chainpush demo page: (\S+)/", log.read_text(errors="replace"))
    return found.group(1) if found else None


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")
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
                row = page.locator("tr.event", has_text="DemoToken.Transfer")
                expect(row.first).to_be_visible(timeout=15_000 * unit)
                expect(row.first).to_contain_text("12345")
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
