"""The HTTP side: dev login, page and config on the auth service; /healthz and /metrics on push
nodes; the CLI refusing to start on a weak secret outside dev mode."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from chainpush.push.config import AuthServiceConfig
from chainpush.push.tokens import TokenConfig, verify
from chainpush.push.web import AuthService
from tests.integration.push_support import SECRET, Client, push_node, stores, token

pytestmark = pytest.mark.integration
CHAINPUSH = str(Path(sys.executable).parent / "chainpush")
WALLET = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def service(*, dev_mode: bool) -> AuthService:
    return AuthService(AuthServiceConfig(port=0, token_ttl_s=60), tokens=TokenConfig(
        secret=SECRET), dev_mode=dev_mode, push_urls=["ws://n1/ws"], topics=["contract:A"])


async def test_dev_login_issues_a_token_the_nodes_accept(http: aiohttp.ClientSession) -> None:
    async with service(dev_mode=True) as svc:
        async with http.post(svc.url + "/auth/login",
                             json={"user": "alice", "wallets": [WALLET]}) as resp:
            assert resp.status == 200
            body = await resp.json()
        claims = verify(body["token"], TokenConfig(secret=SECRET), now=time.time())
        assert claims.user == "alice" and claims.wallets == (WALLET,)
        assert claims.allows(f"user:{WALLET}") and claims.allows("contract:Anything")
        assert body["push_urls"] == ["ws://n1/ws"]
        assert body["expires_at"] - time.time() <= 60
        for bad in ({"user": ""}, {"user": "a b"}, {"user": "a", "wallets": ["bob"]}, [1]):
            async with http.post(svc.url + "/auth/login", json=bad) as resp:
                assert resp.status == 400
                assert "error" in await resp.json()
        async with http.post(svc.url + "/auth/login", data=b"{nope") as resp:
            assert resp.status == 400
        async with http.get(svc.url + "/config.json") as resp:
            assert await resp.json() == {"push_urls": ["ws://n1/ws"], "topics": ["contract:A"],
                                         "dev_login": True, "ordered": False}
        async with http.get(svc.url + "/") as resp:
            page = await resp.text()
            assert "/static/app.js" in page
        # the JS client package (clients/js), served beside the page
        async with http.get(svc.url + "/static/client/index.js") as resp:
            assert resp.status == 200
            assert "switch (msg.type)" in await resp.text()
        async with http.get(svc.url + "/metrics") as resp:
            assert "chainpush_logins_total 1" in await resp.text()


async def test_no_dev_login_outside_dev_mode(http: aiohttp.ClientSession) -> None:
    async with service(dev_mode=False) as svc:
        async with http.post(svc.url + "/auth/login", json={"user": "alice"}) as resp:
            assert resp.status == 404
            assert "backend" in (await resp.json())["error"]
        async with http.get(svc.url + "/healthz") as resp:
            assert resp.status == 200


async def test_node_healthz_and_metrics(
    http: aiohttp.ClientSession, mongo_uri: str, redis_url: str, mongo_db_name: str,
    unit: float,
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    async with push_node(cfg, "h1", unit) as node:
        base = f"http://127.0.0.1:{node.port}"
        async with Client.connect(node.url, token()) as c:
            await c.subscribe("contract:A")
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200
                assert await resp.json() == {"node": "h1", "redis": True, "connections": 1}
            async with http.get(base + "/metrics") as resp:
                text = await resp.text()
                assert resp.headers["Content-Type"].startswith("text/plain")
        for line in ("chainpush_connections 1", "chainpush_subscriptions 1",
                     "# TYPE chainpush_messages_out_total counter",
                     "chainpush_send_queue_bytes 0"):
            assert line in text
        async with http.get(base + "/nope") as resp:
            assert resp.status == 404
        async with http.get(base + "/ws") as resp:  # not an upgrade
            assert resp.status == 426


def test_cli_refuses_a_weak_secret_outside_dev_mode(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[auth]\nsecret = "tiny-secret-value"\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([CHAINPUSH, "push", "--config", str(config)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "auth.secret" in done.stderr and "tiny-secret-value" not in done.stderr
    config.write_text(f'[auth]\nsecret = "{SECRET}"\n')
    done = subprocess.run([CHAINPUSH, "push", "--config", str(config), "--print-config"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    printed = json.loads(done.stdout)
    assert printed["tokens"]["secret"] == "<redacted>" and SECRET not in done.stdout
    done = subprocess.run([CHAINPUSH, "auth", "--config", str(config), "--issue", "carol"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    assert verify(done.stdout.strip(), TokenConfig(secret=SECRET), now=time.time()).user == "carol"
