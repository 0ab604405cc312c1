"""Headless Chromium, real push node, real stores (issue 11, "the browser client as a package" and
"the page as a product"):

* the @chainpush/client module (clients/js, served at /static/client/) imported by a page keeps
  its position in localStorage across a reload, and renews a short-lived token before it expires
  without losing or repeating a message;
* the demo page shows one card per event that changes in place pending → confirmed → removed, in
  the events list and in "your notifications" (the wallet's user: topic), with addresses shortened
  (copy button) and DemoToken amounts in units of 18 decimals; at 1280 px and at 390 px nothing is
  wider than the screen (screenshots saved in the test's tmp dir);
* a refused login shows the server's reason; "waiting" says why and when it retries.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chainpush import procs
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS, call_demo_state

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires(os.path.exists(CHROMIUM), "Debian chromium is not installed"),
]


@contextlib.asynccontextmanager
async def browser_page(urls: list[str], topics: list[str], *,
                       token_ttl_s: int = 3600) -> AsyncIterator[tuple[Any, Any]]:
    """A Chromium page on an auth service (dev login) whose page points at ``urls``."""
    from playwright.async_api import async_playwright

    from chainpush.push.config import AuthServiceConfig
    from chainpush.push.tokens import TokenConfig
    from chainpush.push.web import AuthService
    from tests.integration.push_support import SECRET

    auth = AuthService(AuthServiceConfig(port=0, token_ttl_s=token_ttl_s),
                       tokens=TokenConfig(secret=SECRET), dev_mode=True, push_urls=urls,
                       topics=topics)
    async with auth, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            await context.grant_permissions(["clipboard-read", "clipboard-write"],
                                            origin=auth.url)
            page = await context.new_page()
            await page.goto(auth.url + "/")
            yield page, auth
        finally:
            await browser.close()


# a page script that uses the package as a team would: import it, connect, subscribe
START_CLIENT = """async ([urls]) => {
  const m = await import("/static/client/index.js");
  window.got = []; window.states = [];
  const getToken = async () => {
    const res = await fetch("/auth/login", { method: "POST",
      body: JSON.stringify({ user: "alice" }), headers: { "Content-Type": "application/json" } });
    return (await res.json()).token;
  };
  window.client = m.connect({ urls, getToken, storage: localStorage });
  client.on("state", (s) => states.push(s));
  client.subscribe("contract:DemoToken", { since: 0 }, (msg) => got.push(msg.record.id));
}"""


async def test_client_package_resumes_across_a_reload_and_renews_its_token(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    from tests.integration.push_support import collector_for, make_record, push_node, stores

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    timeout = 15_000 * unit
    async with (
        push_node(cfg, "c1", unit) as node, collector_for(cfg) as collector,
        # tokens of 4 s: the client renews at half their life (the node closes at exp + 5 s)
        browser_page([node.url], ["contract:DemoToken"], token_ttl_s=4) as (page, _),
    ):
        await page.evaluate(START_CLIENT, [[node.url]])
        await collector.accept([make_record(n) for n in range(3)])
        await page.wait_for_function("() => got.length === 3", timeout=timeout)
        # two renewals: a new token, a new connection, resumed with since
        await page.wait_for_function(
            "() => states.filter((s) => s.state === 'open').length >= 3", timeout=timeout)
        await collector.accept([make_record(n) for n in range(3, 5)])
        await page.wait_for_function("() => got.length === 5", timeout=timeout)
        got = await page.evaluate("got")
        assert got == [make_record(n)["id"] for n in range(5)]  # once each, in order
        opens = await page.evaluate("states.filter((s) => s.state === 'open')")
        expiries = [s["expiresAt"] for s in opens]
        assert expiries == sorted(expiries) and expiries[0] < expiries[-1]
        assert not await page.evaluate("states.some((s) => s.state === 'waiting')")
        stored = json.loads(await page.evaluate(
            "localStorage.getItem('chainpush:contract:DemoToken')"))
        assert stored["since"] == 5 and stored["epoch"]

        # a reload: the new page's client resumes after offset 5 instead of replaying 1..5
        await page.reload()
        await page.evaluate(START_CLIENT, [[node.url]])
        await collector.accept([make_record(9)])
        await page.wait_for_function("() => got.length >= 1", timeout=timeout)
        # offsets arrive in order: a replay of 1..5 would have come before offset 6
        assert await page.evaluate("got") == [make_record(9)["id"]]


def overflow(page: Any) -> Any:
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


async def test_page_cards_change_in_place_and_fit_1280_and_390_px(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    from tests.integration.push_support import (
        ALICE,
        BOB,
        collector_for,
        make_record,
        push_node,
        stores,
    )

    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    timeout = 10_000 * unit
    async with (
        push_node(cfg, "v1", unit) as node, collector_for(cfg) as collector,
        browser_page([node.url], ["contract:DemoToken", "state:CallDemo"]) as (page, _),
    ):
        await page.fill("#user", "alice")
        await page.fill("#wallet", BOB.lower())  # as MetaMask gives it: the node says EIP-55
        await page.click("#go")
        await expect(page.locator("#state")).to_have_text("subscribed", timeout=timeout)
        transfer = make_record(1)  # ALICE → BOB, 1000 DEMO + 1 base unit
        await collector.accept([transfer, call_demo_state(10, "pending")])
        card = page.locator(f'#events .event[data-id="{transfer["id"]}"]')
        mine = page.locator(f'#wallet-events .event[data-id="{transfer["id"]}"]')
        await expect(card).to_have_attribute("data-status", "pending", timeout=timeout)
        await expect(mine).to_have_attribute("data-status", "pending", timeout=timeout)
        await expect(page.locator("#wallet-count")).to_have_text("1")
        await expect(page.locator("#calldemo")).to_have_text("10", timeout=timeout)
        # arguments for people
        await expect(card.locator(".name")).to_have_text("DemoToken.Transfer")
        value = card.locator(f'[data-raw="{transfer["args"]["value"]}"]')
        await expect(value).to_have_text("1,000.000000000000000001 DEMO")
        frm = card.locator(f'.addr[data-raw="{ALICE}"]')
        await expect(frm).to_have_text("0x5B38…eddC4")
        await card.locator(f'.addr-wrap:has(.addr[data-raw="{ALICE}"]) button.copy').click()
        assert await page.evaluate("navigator.clipboard.readText()") == ALICE
        # mark the DOM nodes: an update in place keeps them, a new row would not carry the mark
        await card.evaluate("el => { el.mark = 'same'; }")
        await mine.evaluate("el => { el.mark = 'same'; }")
        await page.screenshot(path=str(tmp_path / "page-1280-pending.png"), full_page=True)

        for status in ("confirmed", "removed"):
            await collector.accept([{**transfer, "status": status}])
            await expect(card).to_have_attribute("data-status", status, timeout=timeout)
            await expect(mine).to_have_attribute("data-status", status, timeout=timeout)
            await expect(card.locator(".status")).to_have_text(status)
            await expect(page.locator("#events .event")).to_have_count(2)  # + CallDemo's
            await expect(page.locator("#wallet-events .event")).to_have_count(1)
            assert await card.evaluate("el => el.mark") == "same"
            assert await mine.evaluate("el => el.mark") == "same"
        await page.screenshot(path=str(tmp_path / "page-1280.png"), full_page=True)
        assert await overflow(page) <= 0

        await page.set_viewport_size({"width": 390, "height": 844})
        await collector.accept([make_record(n, to=BOB) for n in range(4, 8)])
        await expect(page.locator("#wallet-events .event")).to_have_count(5, timeout=timeout)
        await page.screenshot(path=str(tmp_path / "page-390.png"), full_page=True)
        assert await overflow(page) <= 0, "wider than a 390 px screen"
        boxes = await page.locator(".event, #login, .status-bar").evaluate_all(
            "els => els.map((e) => { const r = e.getBoundingClientRect();"
            " return [r.left, r.right, r.height]; })")
        assert boxes and all(left >= 0 and right <= 390 and h > 0 for left, right, h in boxes)
        await expect(page.locator("#wallet-events .event").first).to_be_visible()
        await expect(page.locator("#go")).to_be_visible()
        assert (tmp_path / "page-390.png").stat().st_size > 0


async def test_page_shows_a_refused_login_and_why_it_waits(unit: float) -> None:
    from playwright.async_api import expect

    nobody = f"ws://127.0.0.1:{procs.free_port()}/ws"  # no push node listens there
    async with browser_page([nobody], ["contract:DemoToken"]) as (page, _):
        await page.fill("#user", "not a user name!")
        await page.click("#go")
        await expect(page.locator("#errors")).to_have_text(
            "login refused: user must be 1-64 characters of letters, digits, _ . @ -",
            timeout=10_000 * unit)
        await expect(page.locator("#state")).to_have_text("idle")
        await page.fill("#user", "alice")
        await page.click("#go")
        await expect(page.locator("#errors")).to_have_text("")
        await expect(page.locator("#state")).to_have_text("waiting", timeout=10_000 * unit)
        detail = page.locator("#state-detail")
        await expect(detail).to_contain_text(f"1006 connection lost ({nobody} did not let us in)")
        await expect(detail).to_contain_text("retrying in")
