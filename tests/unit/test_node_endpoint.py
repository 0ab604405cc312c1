"""Endpoint parsing: which transport a spec names, and the errors for bad ones."""

from __future__ import annotations

import pytest

from chainpush.watcher.errors import ConfigError
from chainpush.watcher.node import DEFAULT_RPC, Endpoint


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("http://127.0.0.1:8545", "http"),
        ("https://node.example/rpc", "http"),
        ("ws://127.0.0.1:8545", "ws"),
        ("wss://node.example/ws", "ws"),
        ("/tmp/anvil.ipc", "ipc"),
        ("ipc:///tmp/anvil.ipc", "ipc"),
    ],
)
def test_parse_picks_the_transport(spec: str, kind: str) -> None:
    endpoint = Endpoint.parse(spec)
    assert endpoint.kind == kind
    assert endpoint.target == spec.removeprefix("ipc://")


def test_from_args_defaults_to_local_rpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINPUSH_RPC", raising=False)
    assert Endpoint.from_args() == Endpoint("http", DEFAULT_RPC)


def test_from_args_reads_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINPUSH_RPC", "ws://127.0.0.1:9999")
    assert Endpoint.from_args() == Endpoint("ws", "ws://127.0.0.1:9999")


def test_from_args_takes_the_one_given() -> None:
    assert Endpoint.from_args(ipc="/x.ipc") == Endpoint("ipc", "/x.ipc")
    assert Endpoint.from_args(ws="ws://h:1") == Endpoint("ws", "ws://h:1")


def test_from_args_refuses_two() -> None:
    with pytest.raises(ConfigError, match="at most one of --rpc, --ws, --ipc; got --rpc, --ws"):
        Endpoint.from_args(rpc="http://h:1", ws="ws://h:1")


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("http", "ws://h:1", "rpc url must start with http"),
        ("ws", "http://h:1", "ws url must start with ws"),
        ("ipc", "", "ipc path must not be empty"),
    ],
)
def test_bad_endpoint_names_the_setting(kind: str, target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Endpoint(kind, target)  # type: ignore[arg-type]


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="timeout_s must be > 0, got 0"):
        Endpoint("http", "http://h:1", timeout_s=0)
