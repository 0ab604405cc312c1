"""Placement on real parts: the auth service orders the live nodes of the Redis registry for
each user (rendezvous hashing); a node that leaves drops out, and only its users move."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from chainpush.constants import RedisNames
from chainpush.push.config import AuthServiceConfig
from chainpush.push.directory import NodeDirectory
from chainpush.push.placement import Node, order_for
from chainpush.push.web import AuthService
from tests.integration.push_support import TOKENS, push_node, stores

pytestmark = pytest.mark.integration

USERS = [f"user{n}" for n in range(40)]


def get_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        result: dict[str, object] = json.loads(answer.read())
        return result


async def test_users_are_placed_on_live_nodes_and_only_a_dead_nodes_users_move(
    mongo_uri: str, redis_url: str, mongo_db_name: str, unit: float
) -> None:
    cfg = stores(mongo_uri, redis_url, mongo_db_name)
    directory = NodeDirectory(redis_url, names=RedisNames(cfg.namespace), refresh_s=0.0)
    async with (
        push_node(cfg, "p1", unit) as n1, push_node(cfg, "p2", unit) as n2,
        push_node(cfg, "p3", unit) as n3, directory,
        AuthService(AuthServiceConfig(port=0), tokens=TOKENS, dev_mode=True,
                    push_urls=["ws://configured.example/ws"], topics=[],
                    directory=directory) as svc,
        asyncio.timeout(30 * unit),
    ):
        nodes = [Node(n.config.node_id, n.url) for n in (n1, n2, n3)]
        placed = {}
        for user in USERS:
            login = await asyncio.to_thread(get_json, f"{svc.url}/auth/login", {"user": user})
            expected = [n.url for n in order_for(user, nodes)]
            assert login["push_urls"] == expected  # the live nodes, in this user's order
            config = await asyncio.to_thread(get_json, f"{svc.url}/config.json?user={user}")
            assert config["push_urls"] == expected and config["ordered"] is True
            placed[user] = expected[0]
        assert len(set(placed.values())) == 3  # users spread over the nodes
        gone = n2.url
        await n2.aclose()  # leaves the registry (a SIGKILLed one drops out after node_ttl_s)
        for user in USERS:
            login = await asyncio.to_thread(get_json, f"{svc.url}/auth/login", {"user": user})
            urls = login["push_urls"]
            assert isinstance(urls, list) and gone not in urls and len(urls) == 2
            if placed[user] != gone:
                assert urls[0] == placed[user]  # unaffected users stay where they were


async def test_without_a_registry_the_configured_urls_apply(unit: float) -> None:
    async with AuthService(AuthServiceConfig(port=0), tokens=TOKENS, dev_mode=True,
                           push_urls=["ws://a.example/ws", "ws://b.example/ws"],
                           topics=[]) as svc:
        config = await asyncio.to_thread(get_json, f"{svc.url}/config.json")
        assert config["push_urls"] == ["ws://a.example/ws", "ws://b.example/ws"]
        assert config["ordered"] is False
