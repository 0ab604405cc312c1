"""Connecting to a real anvil over HTTP, websocket and IPC, sync and async; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainpush import procs
from chainpush.watcher.errors import ChainMismatch, NodeUnreachable
from chainpush.watcher.node import Endpoint, connect, connect_async, disconnect
from tests.conftest import Anvil

pytestmark = pytest.mark.integration


def endpoints(node: Anvil) -> list[Endpoint]:
    return [
        Endpoint("http", node.http_url),
        Endpoint("ws", node.ws_url),
        Endpoint("ipc", str(node.ipc_path)),
    ]


def test_sync_connect_every_transport(anvil: Anvil) -> None:
    for endpoint in endpoints(anvil):
        w3 = connect(endpoint, expected_chain_id=31337)
        try:
            assert w3.eth.chain_id == 31337
            assert len(w3.eth.accounts) == 10
        finally:
            disconnect(w3)  # nothing left open: a leaked socket is a ResourceWarning later


def test_sync_ipc_reads_large_replies_and_reconnects(anvil: Anvil) -> None:
    w3 = connect(Endpoint("ipc", str(anvil.ipc_path)))
    try:
        code = "0x" + "5b" * 150_000  # 300 KB of hex: the reply spans many socket reads
        target = "0x" + "42" * 20
        w3.provider.make_request("anvil_setCode", [target, code])  # type: ignore[arg-type]
        assert w3.eth.get_code(target).to_0x_hex() == code  # type: ignore[arg-type]
        disconnect(w3)  # the next call opens a new connection
        assert w3.eth.chain_id == 31337
    finally:
        disconnect(w3)


def test_wrong_chain_is_refused(anvil: Anvil) -> None:
    with pytest.raises(ChainMismatch, match="serves chain id 31337, expected 1"):
        connect(Endpoint("http", anvil.http_url), expected_chain_id=1)


def unreachable(tmp_path: Path) -> list[Endpoint]:
    port = procs.free_port()
    return [
        Endpoint("http", f"http://127.0.0.1:{port}", timeout_s=2),
        Endpoint("ws", f"ws://127.0.0.1:{port}", timeout_s=2),
        Endpoint("ipc", str(tmp_path / "missing.ipc"), timeout_s=2),
    ]


def test_unreachable_node_says_how_to_start_one(tmp_path: Path) -> None:
    for endpoint in unreachable(tmp_path):
        with pytest.raises(NodeUnreachable) as info:
            connect(endpoint)
        message = str(info.value)
        assert message.startswith(f"cannot reach node at {endpoint.kind} {endpoint.target}")
        assert "chainpush dev up" in message


async def test_unreachable_node_async(tmp_path: Path) -> None:
    for endpoint in unreachable(tmp_path):
        with pytest.raises(NodeUnreachable, match="cannot reach node at"):
            await connect_async(endpoint)
