"""Connect to an Ethereum node over HTTP JSON-RPC, websocket or IPC: the one way to do it.

A backend reaches a node's EVM over IPC when both share a host, over JSON-RPC (port 8545 by
default) otherwise (see the geth tutorial in DESIGN-NOTES §1). ``Endpoint`` names one of the three;
``connect`` gives a synchronous ``Web3`` (scripts, state reads), ``connect_async`` an ``AsyncWeb3``
(the watcher: websocket and IPC support ``eth_subscribe``).

web3 8 has no synchronous websocket provider; ``SyncWebSocketProvider`` below fills that gap with
``websockets.sync`` so every script works over every transport.

Errors are translated here: a node that is not there raises ``NodeUnreachable`` with a hint on how
to start one, a node on another chain raises ``ChainMismatch``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import requests
import websockets.exceptions
from web3 import AsyncWeb3, Web3
from web3.providers import (
    AsyncHTTPProvider,
    AsyncIPCProvider,
    HTTPProvider,
    JSONBaseProvider,
    WebSocketProvider,
)
from web3.types import RPCEndpoint, RPCResponse
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from chainpush.logs import redact_url
from chainpush.watcher.errors import ChainMismatch, ConfigError, NodeUnreachable

logger = logging.getLogger(__name__)

DEFAULT_RPC = "http://127.0.0.1:8545"
START_HINT = "start one with `chainpush dev up` (anvil on 127.0.0.1:8545) or `npx hardhat node`"

Kind = Literal["http", "ws", "ipc"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the node is: ``kind`` is ``http``, ``ws`` or ``ipc``; ``target`` a URL or a path."""

    kind: Kind
    target: str
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.kind == "http" and not self.target.startswith(("http://", "https://")):
            raise ConfigError(f"rpc url must start with http:// or https://, got {self.target!r}")
        if self.kind == "ws" and not self.target.startswith(("ws://", "wss://")):
            raise ConfigError(f"ws url must start with ws:// or wss://, got {self.target!r}")
        if self.kind == "ipc" and not self.target:
            raise ConfigError("ipc path must not be empty")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")

    @classmethod
    def parse(cls, spec: str, *, timeout_s: float = 10.0) -> Endpoint:
        """``http(s)://…`` → HTTP, ``ws(s)://…`` → websocket, anything else → an IPC path."""
        if spec.startswith(("http://", "https://")):
            return cls("http", spec, timeout_s)
        if spec.startswith(("ws://", "wss://")):
            return cls("ws", spec, timeout_s)
        if spec.startswith("ipc://"):
            spec = spec.removeprefix("ipc://")
        return cls("ipc", spec, timeout_s)

    @classmethod
    def from_args(
        cls, *, rpc: str | None = None, ws: str | None = None, ipc: str | None = None,
        timeout_s: float = 10.0,
    ) -> Endpoint:
        """The endpoint named by the ``--rpc`` / ``--ws`` / ``--ipc`` options (at most one).

        None given → ``$CHAINPUSH_RPC`` if set, else ``http://127.0.0.1:8545``.
        """
        given = [(k, v) for k, v in (("http", rpc), ("ws", ws), ("ipc", ipc)) if v]
        if len(given) > 1:
            names = ", ".join(f"--{'rpc' if k == 'http' else k}" for k, _ in given)
            raise ConfigError(f"give at most one of --rpc, --ws, --ipc; got {names}")
        if not given:
            return cls.parse(os.environ.get("CHAINPUSH_RPC", DEFAULT_RPC), timeout_s=timeout_s)
        kind, target = given[0]
        return cls(kind, target, timeout_s)  # type: ignore[arg-type]

    def describe(self) -> str:
        """For logs and error messages: the URL without password, path and query, where
        providers put API keys (``https://eth-mainnet.g.alchemy.com/v2/<key>``)."""
        return f"{self.kind} {redact_url(self.target)}"

    def scrub(self, text: str) -> str:
        """``text`` (a library's error message) with this endpoint's URL redacted in it."""
        return text.replace(self.target, redact_url(self.target)) if self.kind != "ipc" else text


class _PersistentProvider(JSONBaseProvider):
    """What the sync websocket and IPC providers share: one connection, ``close()``."""

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            self.make_request(RPCEndpoint("web3_clientVersion"), [])
        except NodeUnreachable:
            if show_traceback:
                raise
            return False
        return True

    def close(self) -> None:
        raise NotImplementedError


class SyncWebSocketProvider(_PersistentProvider):
    """A synchronous JSON-RPC provider over one websocket (web3 8 ships only an async one).

    Thread-safe: one request at a time on the connection; reconnects on the next call after the
    connection dropped.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.url = url
        self.timeout_s = timeout_s
        self._conn: ClientConnection | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def __str__(self) -> str:
        return f"WS connection {self.url}"

    def _connection(self) -> ClientConnection:
        if self._conn is None:
            conn = ws_connect(
                self.url, open_timeout=self.timeout_s, max_size=None, compression=None
            )
            # websockets 17 wants the connection entered; close() below is the matching exit
            self._conn = conn.__enter__()
        return self._conn

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        with self._lock:
            try:
                conn = self._connection()
                conn.send(body)
                while True:
                    raw = conn.recv(timeout=self.timeout_s)
                    reply = json.loads(raw)
                    # skip subscription notifications (they carry no id)
                    if isinstance(reply, dict) and reply.get("id") == request_id:
                        return reply  # type: ignore[return-value]
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                self.close()
                raise NodeUnreachable(
                    f"cannot reach node at ws {self.url} ({type(exc).__name__}: {exc}); "
                    f"{START_HINT}"
                ) from exc

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


class SyncIPCProvider(_PersistentProvider):
    """A synchronous JSON-RPC provider over one unix socket that can be closed.

    web3's ``IPCProvider`` keeps its socket open with no public way to close it; a process that
    connects more than once (tests, ``chainpush call`` in a loop) then leaks one socket each.
    One request at a time on the connection; reconnects on the next call after it dropped.
    """

    def __init__(self, path: str, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.path = path
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._decoder = json.JSONDecoder()

    def __str__(self) -> str:
        return f"IPC connection {self.path}"

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout_s)
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        with self._lock:
            try:
                sock = self._socket()
                sock.sendall(body.encode())
                buf = ""
                while True:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        raise ConnectionResetError("the node closed the IPC connection")
                    buf += chunk.decode()
                    # the node writes one JSON document per reply, possibly across reads;
                    # notifications (no id) may come first
                    while buf.strip():
                        try:
                            reply, end = self._decoder.raw_decode(buf.lstrip())
                        except ValueError:
                            break  # incomplete: read more
                        buf = buf.lstrip()[end:]
                        if isinstance(reply, dict) and reply.get("id") == request_id:
                            return reply  # type: ignore[return-value]
            except (OSError, TimeoutError, UnicodeDecodeError) as exc:
                self.close()
                raise NodeUnreachable(
                    f"cannot reach node at ipc {self.path} ({type(exc).__name__}: {exc}); "
                    f"{START_HINT}"
                ) from exc

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()


def disconnect(w3: Web3) -> None:
    """Close what ``connect`` opened (the websocket or IPC connection; HTTP has none to keep)."""
    close = getattr(w3.provider, "close", None)
    if callable(close):
        close()


def _unreachable(endpoint: Endpoint, exc: BaseException | None = None) -> NodeUnreachable:
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return NodeUnreachable(f"cannot reach node at {endpoint.describe()}{why}; {START_HINT}")


def _probe_ipc(endpoint: Endpoint) -> None:
    # web3's IPCProvider leaks its socket when the connect fails: probe with one we close
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(endpoint.timeout_s)
            sock.connect(endpoint.target)
    except OSError as exc:
        raise _unreachable(endpoint, exc) from exc


def _check_chain(endpoint: Endpoint, chain_id: int, expected: int | None) -> None:
    if expected is not None and chain_id != expected:
        raise ChainMismatch(
            f"node at {endpoint.describe()} serves chain id {chain_id}, expected {expected}"
        )
    logger.info("node connected: %s (chain id %d)", endpoint.describe(), chain_id)


def connect(endpoint: Endpoint, *, expected_chain_id: int | None = None) -> Web3:
    """A synchronous ``Web3`` on ``endpoint``, checked to answer (and to serve the chain)."""
    provider: JSONBaseProvider
    if endpoint.kind == "http":
        provider = HTTPProvider(endpoint.target, request_kwargs={"timeout": endpoint.timeout_s})
    elif endpoint.kind == "ws":
        provider = SyncWebSocketProvider(endpoint.target, timeout_s=endpoint.timeout_s)
    else:
        provider = SyncIPCProvider(endpoint.target, timeout_s=endpoint.timeout_s)
    w3 = Web3(provider)
    try:
        try:
            chain_id = int(w3.eth.chain_id)
        except NodeUnreachable:
            raise
        except (OSError, requests.RequestException) as exc:
            raise _unreachable(endpoint, exc) from exc
        _check_chain(endpoint, chain_id, expected_chain_id)
    except BaseException:
        disconnect(w3)
        raise
    return w3


async def connect_async(
    endpoint: Endpoint, *, expected_chain_id: int | None = None
) -> AsyncWeb3[Any]:
    """An ``AsyncWeb3`` on ``endpoint``; websocket and IPC are persistent and support
    ``eth_subscribe``. The caller must ``await disconnect_async(w3)`` when done."""
    w3: AsyncWeb3[Any]
    try:
        if endpoint.kind == "http":
            w3 = AsyncWeb3(AsyncHTTPProvider(endpoint.target))
        elif endpoint.kind == "ws":
            w3 = await AsyncWeb3(
                WebSocketProvider(
                    endpoint.target, request_timeout=endpoint.timeout_s, max_connection_retries=1,
                    websocket_kwargs={"max_size": None},
                )
            )
        else:
            _probe_ipc(endpoint)
            w3 = await AsyncWeb3(
                AsyncIPCProvider(
                    endpoint.target, request_timeout=endpoint.timeout_s, max_connection_retries=1
                )
            )
        chain_id = int(await w3.eth.chain_id)
    except NodeUnreachable:
        raise
    except Exception as exc:  # web3 raises a zoo of types across transports; translate them all
        if isinstance(exc, ChainMismatch | ConfigError):
            raise
        raise _unreachable(endpoint, exc) from exc
    _check_chain(endpoint, chain_id, expected_chain_id)
    return w3


async def disconnect_async(w3: AsyncWeb3[Any]) -> None:
    """Close a connection made by ``connect_async`` (a no-op for HTTP sessions it cannot own)."""
    provider = w3.provider
    if hasattr(provider, "disconnect"):
        await provider.disconnect()


def endpoints_from_specs(specs: Sequence[str], *, timeout_s: float = 10.0) -> list[Endpoint]:
    """Parse several endpoint specs (URLs or IPC paths), e.g. for failover lists."""
    if not specs:
        raise ConfigError("at least one node endpoint is required")
    return [Endpoint.parse(s, timeout_s=timeout_s) for s in specs]


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--rpc`` / ``--ws`` / ``--ipc`` options every node-facing command takes."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--rpc", metavar="URL",
        help=f"HTTP JSON-RPC endpoint (default $CHAINPUSH_RPC or {DEFAULT_RPC})",
    )
    group.add_argument("--ws", metavar="URL", help="websocket endpoint, e.g. ws://127.0.0.1:8545")
    group.add_argument("--ipc", metavar="PATH", help="IPC socket path, e.g. /tmp/anvil.ipc")


def endpoint_from_arguments(args: argparse.Namespace) -> Endpoint:
    return Endpoint.from_args(rpc=args.rpc, ws=args.ws, ipc=args.ipc)
