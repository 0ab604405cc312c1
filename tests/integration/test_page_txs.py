"""The demo page's "Transactions" card in headless Chromium, end to end (issue 13.3): anvil holds
a transaction in its pool, its hash is announced on ``app:demo-txs`` (as the demo's traffic
generator does through ``POST /v1/publish``), the page follows it on ``tx:<hash>`` and its row
goes pending → mined (result, gas) → confirmed; a pasted hash of a reverted transaction shows
``reverted``; a dev token without ``tx:`` grants says so instead."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chainpush.push.publish import app_record
from tests.conftest import Anvil
from tests.integration import watch_support as ws
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_watch_txs import STRANGER, send, stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires(os.path.exists(CHROMIUM), "Debian chromium is not installed"),
]

DEV_TOPICS = ("contract:*", "state:*", "tx:*", "app:demo-txs")


@contextlib.asynccontextmanager
async def page_on(urls: list[str], dev_topics: tuple[str, ...]) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    from chainpush.push.config import AuthServiceConfig
    from chainpush.push.tokens import TokenConfig
    from chainpush.push.web import AuthService
    from tests.integration.push_support import SECRET

    auth = AuthService(AuthServiceConfig(port=0, dev_topics=dev_topics),
                       tokens=TokenConfig(secret=SECRET), dev_mode=True, push_urls=urls,
                       topics=["contract:DemoToken"])
    async with auth, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            await page.goto(auth.url + "/")
            yield page
        finally:
            await browser.close()


async def test_the_transactions_card_shows_each_lifecycle(
    anvil: Anvil, mongo_uri: str, redis_url: str, mongo_db_name: str, tmp_path: Path,
    unit: float,
) -> None:
    from playwright.async_api import expect

    url = anvil.http_url
    timeout = 20_000 * unit
    async with stack(anvil, mongo_uri, redis_url, mongo_db_name, tmp_path, unit) as (
            demo, node, collector), page_on([node.url], DEV_TOPICS) as page:
        await page.fill("#user", "alice")
        await page.click("#go")
        panel = page.locator("#tx-panel")
        await expect(panel).to_have_attribute("data-announcements", "on", timeout=timeout)
        data = ws.calldata("transfer(address,uint256)", ["address", "uint256"],
                           [ws.ACCOUNTS[1], 10**18])
        good = await asyncio.to_thread(send, url, to=demo, data=data)
        # the announcement the demo's traffic generator publishes (docs/push.md)
        await collector.accept([app_record(topic="app:demo-txs", client_id=f"tx-{good}",
                                           event="tx.sent",
                                           data={"hash": good, "what": "DemoToken.transfer"},
                                           now=time.time())])
        row = page.locator(f'#txs .tx[data-hash="{good}"]')
        await expect(row).to_have_attribute("data-stage", "pending", timeout=timeout)
        await expect(row.locator(".name")).to_have_text(
            f"tx {good[:6]}…{good[-5:]} DemoToken.transfer")
        await row.evaluate("el => { el.mark = 'same'; }")
        await asyncio.to_thread(ws.rpc, url, "evm_mine")
        await expect(row).to_have_attribute("data-stage", "mined", timeout=timeout)
        await expect(row).to_have_attribute("data-result", "success")
        receipt = await asyncio.to_thread(ws.rpc, url, "eth_getTransactionReceipt", [good])
        await expect(row).to_have_attribute("data-gas", str(int(receipt["gasUsed"], 16)))
        await expect(row.locator(".args")).to_contain_text("DemoToken.Transfer")
        await asyncio.to_thread(ws.rpc, url, "anvil_mine", ["0x2"])
        await expect(row).to_have_attribute("data-stage", "confirmed", timeout=timeout)
        await expect(row).to_have_attribute("data-stages", "pending mined confirmed")
        assert await row.evaluate("el => el.mark") == "same"  # one row, changed in place
        await expect(row.locator(".meta")).to_contain_text(
            f"block {int(receipt['blockNumber'], 16)}")

        # pasted, in upper case: a reverted transaction
        bad = await asyncio.to_thread(send, url, to=demo, sender=STRANGER, data=ws.calldata(
            "mint(address,uint256)", ["address", "uint256"], [STRANGER, 1]))
        await page.fill("#tx-hash", "0x" + bad[2:].upper())
        await page.click("#tx-follow")
        pasted = page.locator(f'#txs .tx[data-hash="{bad}"]')
        await expect(pasted).to_have_attribute("data-stage", "pending", timeout=timeout)
        await asyncio.to_thread(ws.rpc, url, "evm_mine")
        await expect(pasted).to_have_attribute("data-result", "reverted", timeout=timeout)
        await expect(pasted.locator(".status")).to_have_text("mined (reverted)")
        await expect(page.locator("#tx-count")).to_have_text("2")
        await page.screenshot(path=str(tmp_path / "page-txs.png"), full_page=True)
        assert await page.locator("#errors").text_content() == ""


async def test_a_token_without_tx_grants_says_so(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    from playwright.async_api import expect

    from tests.integration.push_support import push_node, stores

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with push_node(cfg, "p1", unit) as node, page_on([node.url], ("*",)) as page:
        await page.fill("#user", "alice")
        await page.click("#go")
        await expect(page.locator("#tx-note")).to_have_text(
            "this token does not grant tx: topics ([auth] dev_topics)", timeout=10_000 * unit)
        await expect(page.locator("#tx-panel")).to_have_attribute("data-announcements", "off")
