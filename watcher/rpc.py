"""A thin JSON-RPC client for the watcher: HTTP, websocket and IPC, with batches and newHeads.

Why not web3's providers here: the watcher moves raw logs straight into its own decoder (web3's
result formatters cost more than the decoding, see ``bench/``), needs JSON-RPC batches on every
transport (headers, logs by block hash, state calls per step) and must see a dropped
subscription as an error, not a silent stall. Endpoints are parsed by ``watcher.node.Endpoint``.

Errors are translated at this boundary: refused/reset/timed-out connections → ``NodeUnreachable``;
JSON-RPC errors → ``RPCError``, or ``RangeTooLarge`` / ``RateLimited`` when the provider says so
(``watcher.ranges.classify``); HTTP 429 → ``RateLimited``. Retrying is the caller's business.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import json
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
import websockets.asyncio.client
import websockets.exceptions

from chainpush.resource import raise_if_cancelling
from chainpush.watcher.errors import NodeUnreachable, RangeTooLarge, RateLimited, RPCError
from chainpush.watcher.node import Endpoint
from chainpush.watcher.ranges import classify

logger = logging.getLogger(__name__)

Call = tuple[str, list[Any]]


def rpc_error(method: str, error: Any, where: str) -> RPCError:
    """The exception for a JSON-RPC ``error`` member (or an HTTP status)."""
    code = error.get("code") if isinstance(error, dict) else None
    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    kind = classify(code if isinstance(code, int) else None, message)
    cls = RangeTooLarge if kind == "range" else RateLimited if kind == "rate" else RPCError
    return cls(f"{method} at {where} failed: {message} (code {code})", code=code, method=method)


class Rpc:
    """One connection to one endpoint. Use ``await open_rpc(endpoint)``; ``aclose()`` after."""

    endpoint: Endpoint
    subscriptions = False

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._ids = itertools.count(1)

    async def call(self, method: str, params: list[Any]) -> Any:
        return (await self.batch([(method, params)]))[0]

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Results of ``calls`` in order; the first error among them is raised."""
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                for i, (m, p) in zip(ids, calls, strict=True)]
        replies = await self._exchange(body if len(body) > 1 else body[0], ids)
        out: list[Any] = []
        for i, (method, _) in zip(ids, calls, strict=True):
            reply = replies.get(i)
            if reply is None:
                raise RPCError(f"{method} at {self.endpoint.describe()}: no reply in batch",
                               method=method)
            if "error" in reply:
                raise rpc_error(method, reply["error"], self.endpoint.describe())
            out.append(reply.get("result"))
        return out

    async def _exchange(self, body: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
        raise NotImplementedError

    async def subscribe_heads(self) -> None:
        raise NotImplementedError("subscriptions need a websocket or IPC endpoint")

    async def next_head(self, timeout_s: float) -> dict[str, Any] | None:
        """The next ``newHeads`` notification, or None after ``timeout_s`` without one."""
        await asyncio.sleep(timeout_s)
        return None

    async def aclose(self) -> None:
        return None

    def _unreachable(self, exc: BaseException) -> NodeUnreachable:
        return NodeUnreachable(
            f"cannot reach node at {self.endpoint.describe()} "
            f"({type(exc).__name__}: {self.endpoint.scrub(str(exc))})"
        )


class HttpRpc(Rpc):
    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=endpoint.timeout_s),
            headers={"Content-Type": "application/json"},
        )

    async def _exchange(self, body: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
        try:
            async with self._session.post(self.endpoint.target, data=json.dumps(body)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from exc
        method = body["method"] if isinstance(body, dict) else "batch"
        if status == 429:
            raise RateLimited(f"{method} at {self.endpoint.describe()}: HTTP 429 too many requests",
                              code=429, method=method)
        try:
            reply = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise rpc_error(method, {"code": status, "message": raw[:200].decode(errors="replace")},
                            self.endpoint.describe()) from exc
        if isinstance(reply, dict) and "id" not in reply and "error" in reply:
            raise rpc_error(method, reply["error"], self.endpoint.describe())
        items = reply if isinstance(reply, list) else [reply]
        return {int(r["id"]): r for r in items if isinstance(r, dict) and r.get("id") is not None}

    async def aclose(self) -> None:
        await self._session.close()


class StreamRpc(Rpc):
    """JSON-RPC over a message stream (websocket, IPC): replies matched by id, notifications
    queued. A lost connection fails every waiting call and the head stream with
    ``NodeUnreachable``."""

    subscriptions = True

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._heads: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._lost: NodeUnreachable | None = None
        self._subscription: str | None = None

    async def _send(self, text: str) -> None:
        raise NotImplementedError

    async def _receive_loop(self) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        self._reader = asyncio.create_task(self._run_reader())

    async def _run_reader(self) -> None:
        try:
            await self._receive_loop()
            exc: BaseException = ConnectionResetError("connection closed by the node")
        except asyncio.CancelledError:
            exc = ConnectionResetError("connection closed")
        except Exception as e:  # every transport failure ends the connection the same way
            exc = e
        self._lost = self._unreachable(exc)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(self._lost)
        self._waiting.clear()
        self._heads.put_nowait(self._lost)

    def _dispatch(self, msg: Any) -> None:
        for item in msg if isinstance(msg, list) else [msg]:
            if not isinstance(item, dict):
                continue
            if item.get("method") == "eth_subscription":
                params = item.get("params") or {}
                result = params.get("result")
                if params.get("subscription") == self._subscription and isinstance(result, dict):
                    self._heads.put_nowait(result)
                continue
            fut = self._waiting.pop(item.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(item)

    async def _exchange(self, body: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
        if self._lost is not None:
            raise self._lost
        loop = asyncio.get_running_loop()
        futs = {i: loop.create_future() for i in ids}
        self._waiting.update(futs)
        try:
            await self._send(json.dumps(body))
            async with asyncio.timeout(self.endpoint.timeout_s):
                return {i: await f for i, f in futs.items()}
        except TimeoutError as exc:
            raise self._unreachable(exc) from exc
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            raise self._unreachable(exc) from exc
        finally:
            for i, f in futs.items():
                self._waiting.pop(i, None)
                # the first failed reply raised: mark the others' errors as seen (asyncio would
                # log "Future exception was never retrieved" for each) and stop waiting on them
                if f.done() and not f.cancelled():
                    f.exception()
                else:
                    f.cancel()

    async def subscribe_heads(self) -> None:
        self._subscription = str(await self.call("eth_subscribe", ["newHeads"]))

    async def next_head(self, timeout_s: float) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(timeout_s):
                item = await self._heads.get()
        except TimeoutError:
            # a cancel that landed as the timeout expired arrives as this TimeoutError: the
            # watcher's loop would go on waiting for heads forever (a shutdown that hung)
            raise_if_cancelling()
            return None
        if isinstance(item, BaseException):
            self._heads.put_nowait(item)  # stays lost
            raise item
        return item

    async def _close_transport(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._close_transport()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class WsRpc(StreamRpc):
    _conn: websockets.asyncio.client.ClientConnection

    async def connect(self) -> None:
        try:
            self._conn = await websockets.asyncio.client.connect(
                self.endpoint.target, open_timeout=self.endpoint.timeout_s, max_size=None,
                compression=None,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise self._unreachable(exc) from exc
        self._start()

    async def _send(self, text: str) -> None:
        await self._conn.send(text)

    async def _receive_loop(self) -> None:
        async for raw in self._conn:
            self._dispatch(json.loads(raw))

    async def _close_transport(self) -> None:
        await self._conn.close()


class IpcRpc(StreamRpc):
    """IPC: JSON values back to back on a unix socket (geth/anvil add no framing)."""

    _writer: asyncio.StreamWriter
    _stream: asyncio.StreamReader

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(self.endpoint.timeout_s):
                self._stream, self._writer = await asyncio.open_unix_connection(
                    self.endpoint.target, limit=1 << 24
                )
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        self._start()

    async def _send(self, text: str) -> None:
        self._writer.write(text.encode())
        await self._writer.drain()

    async def _receive_loop(self) -> None:
        decoder = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8")()  # a chunk may end inside a character
        buf = ""
        while True:
            chunk = await self._stream.read(1 << 20)
            if not chunk:
                return
            buf += utf8.decode(chunk)
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    msg, end = decoder.raw_decode(buf)
                except json.JSONDecodeError:
                    break  # incomplete: wait for more bytes
                buf = buf[end:]
                self._dispatch(msg)

    async def _close_transport(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def open_rpc(endpoint: Endpoint) -> Rpc:
    """A connected client for ``endpoint`` (``NodeUnreachable`` if it cannot connect)."""
    if endpoint.kind == "http":
        return HttpRpc(endpoint)
    stream: WsRpc | IpcRpc = WsRpc(endpoint) if endpoint.kind == "ws" else IpcRpc(endpoint)
    await stream.connect()
    return stream
