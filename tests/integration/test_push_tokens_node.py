"""Tokens minted the three documented ways (docs/push.md §Tokens) are accepted by a real push
node: ``push.tokens.mint``, ``chainpush auth --issue``, and the Node.js ``jsonwebtoken`` snippet
of docs/push.md run with ``node``; one signed with another secret is refused with 4001."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from chainpush.push import wire
from chainpush.push.node import PushNode
from chainpush.push.tokens import mint
from tests.conftest import ROOT
from tests.integration.push_support import SECRET, Client, push_node, stores

pytestmark = pytest.mark.integration
CHAINPUSH = str(Path(sys.executable).parent / "chainpush")
WALLET = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
SNIPPET = re.compile(r"<!-- node-token-snippet -->\n```js\n(.*?)```\n<!-- /node-token-snippet -->",
                     re.DOTALL)


@pytest.fixture
async def node(mongo_uri: str, redis_url: str, mongo_db_name: str,
               unit: float) -> AsyncIterator[PushNode]:
    async with push_node(stores(mongo_uri, redis_url, mongo_db_name), "tok-1", unit) as n:
        yield n


async def welcome_for(node: PushNode, token: str, unit: float) -> dict[str, object]:
    """The node's answer to ``auth`` with ``token``: the welcome frame, or the close code."""
    async with asyncio.timeout(10 * unit), Client.connect(node.url) as c:
        await c.ws.send(json.dumps({"type": "auth", "token": token}))
        try:
            frame = await c.next_frame()
        except ConnectionClosed:
            return {"closed": c.ws.close_code}
        if frame["type"] == "welcome":
            sub = await c.subscribe(f"user:{WALLET.lower()}")
            frame["user_topic"] = sub["type"]
            sub = await c.subscribe("contract:DemoToken")
            frame["contract_topic"] = sub["type"]
        return frame


def node_env() -> dict[str, str]:
    """``node`` finds ``jsonwebtoken`` in the repository's node_modules (or NODE_PATH)."""
    paths = [str(ROOT / "node_modules"), *filter(None, os.environ.get("NODE_PATH", "").split(":"))]
    return {**os.environ, "NODE_PATH": ":".join(paths)}


def run_snippet(tmp_path: Path, secret: str) -> str:
    node_bin = shutil.which("node")
    if node_bin is None:
        pytest.fail("node is not on PATH")
    probe = subprocess.run([node_bin, "-e", "require.resolve('jsonwebtoken')"], env=node_env(),
                           cwd=tmp_path, capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.fail("npm jsonwebtoken is not installed: package.json devDependencies need "
                    "jsonwebtoken (then npm ci)")
    found = SNIPPET.search((ROOT / "docs" / "push.md").read_text())
    assert found is not None, "docs/push.md lost its node-token-snippet"
    script = tmp_path / "mint-token.js"
    script.write_text(found.group(1))
    done = subprocess.run([node_bin, str(script)], env={**node_env(),
                          "CHAINPUSH_AUTH_SECRET": secret}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout.strip().splitlines()[-1]


async def test_node_jsonwebtoken_snippet_is_accepted(node: PushNode, tmp_path: Path,
                                                     unit: float) -> None:
    token = run_snippet(tmp_path, SECRET)
    welcome = await welcome_for(node, token, unit)
    assert welcome["type"] == "welcome" and welcome["user"] == "user-42", welcome
    assert welcome["wallets"] == [WALLET]
    assert welcome["user_topic"] == "subscribed" and welcome["contract_topic"] == "subscribed"
    wrong = run_snippet(tmp_path, "another-secret-" + "y" * 32)
    assert await welcome_for(node, wrong, unit) == {"closed": wire.CLOSE_AUTH_FAILED}


async def test_python_mint_is_accepted_and_a_wrong_secret_refused(node: PushNode,
                                                                  unit: float) -> None:
    token = mint("user-7", wallets=[WALLET], topics=["contract:DemoToken"], ttl_s=60,
                 secret=SECRET)
    welcome = await welcome_for(node, token, unit)
    assert welcome["user"] == "user-7" and welcome["topics"] == ["contract:DemoToken"], welcome
    assert welcome["user_topic"] == "subscribed" and welcome["contract_topic"] == "subscribed"
    wrong = mint("user-7", topics=["*"], secret="z" * 40)
    assert await welcome_for(node, wrong, unit) == {"closed": wire.CLOSE_AUTH_FAILED}


async def test_cli_issue_is_accepted(node: PushNode, tmp_path: Path, unit: float) -> None:
    env = {**os.environ, "CHAINPUSH_AUTH_SECRET": SECRET}
    env.pop("CHAINPUSH_DEV", None)
    proc = await asyncio.create_subprocess_exec(
        CHAINPUSH, "auth", "--issue", "carol", "--wallet", WALLET.lower(), "--topic",
        "contract:DemoToken", "--topic", "state:*", "--ttl-s", "120", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60 * unit)
    assert proc.returncode == 0, err.decode()
    token = out.decode().strip().splitlines()[-1]
    welcome = await welcome_for(node, token, unit)
    assert welcome["user"] == "carol" and welcome["wallets"] == [WALLET], welcome
    assert welcome["topics"] == ["contract:DemoToken", "state:*"]
    assert welcome["user_topic"] == "subscribed"
    expires_in = int(str(welcome["expires_at"])) - time.time()
    assert 100 < expires_in <= 120
