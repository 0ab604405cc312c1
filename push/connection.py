"""One client's TCP connection: bytes in and out, and every deadline. No decisions.

An :class:`asyncio.Protocol` that drives websockets' sans-I/O :class:`ServerProtocol` (public API:
``receive_data`` → ``events_received`` / ``data_to_send``) and hands the meaning of each text frame
to a :class:`push.session.Session`. Owning this layer (rather than using websockets' asyncio
server) is what gives every write and close a deadline:

* writes never wait: a live frame is written to the transport at once (the same serialised
  bytes for every subscriber, RFC 6455 §5.1: a server never masks); when the transport's
  buffer passes ``max_send_buffer_bytes`` the connection is closed with 4008;
* history (a repair) waits for the buffer to drain below a quarter of that, at most
  ``write_timeout_s``, then closes with 4008;
* every close (ours or the client's) arms ``close_timeout_s``; when it expires, the transport
  is aborted (:meth:`asyncio.WriteTransport.abort`: the buffer is dropped, the memory released);
* the opening handshake has ``open_timeout_s``; the ``auth`` frame ``auth_timeout_s``; a ping
  is sent every ``ping_interval_s`` and a missing pong closes with 1011 after ``ping_timeout_s``.

So a client that stops reading costs at most ``max_send_buffer_bytes`` + one frame, for at most
``close_timeout_s`` after the node decided to close it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, cast

from websockets.exceptions import InvalidState
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from chainpush.logs import client_text
from chainpush.push import wire
from chainpush.push.session import Action, Session

if TYPE_CHECKING:
    from chainpush.push.node import PushNode

logger = logging.getLogger(__name__)

#: HTTP answers to a connection the node's caps refuse (docs/protocol.md §1).
REFUSAL_STATUS = {"ip_rate": 429, "ip_full": 429, "node_full": 503}


def encode_text(text: str) -> bytes:
    """A complete unmasked, uncompressed text frame: the same bytes for every connection."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class Connection(asyncio.Protocol):
    """One client. ``session`` decides; this moves bytes and keeps the timers."""

    def __init__(self, node: PushNode, conn_id: int) -> None:
        self.node = node
        self.id = conn_id
        cfg = node.config
        self.protocol = ServerProtocol(
            origins=node.origins,  # type: ignore[arg-type]  # Origin is a NewType of str
            max_size=cfg.max_frame_bytes,
            extensions=enable_server_permessage_deflate(None) if cfg.compression else None,
        )
        self.session = Session(conn_id, node.session_config)
        self.transport: asyncio.Transport | None = None
        self.ip = "?"
        self.counted = False  #: admitted by :class:`push.ratelimit.Admission` (close it once)
        self.joined = False  #: counted as one of its user's connections
        self.refusal: str | None = None
        self.lost = False
        self._paused = False
        self._drained: asyncio.Event | None = None
        self._fragments: list[bytes] = []
        self._binary = False  #: the message being assembled is binary
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.ip} {self.session.state}>"

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (create_server); uvloop's is one without subclassing asyncio's
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        limit = self.node.config.max_send_buffer_bytes
        # pause_writing() past a quarter of the cap: history waits there, live frames do not
        transport.set_write_buffer_limits(high=max(1, limit // 4))
        self.refusal = self.node.admission.open(self.ip, self._loop.time())
        self.counted = self.refusal is None
        self.node.connections.add(self)
        self._arm("open", self.node.config.open_timeout_s, self._open_timeout)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)
            if self.lost:
                return
        self.flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._drained is not None:
            self._drained.set()
        self.node.connection_lost(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None:
            self._drained.set()

    # --- input -------------------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        response = self.node.http_response(request)
        if response is None and self.refusal is not None:
            status = REFUSAL_STATUS[self.refusal]
            self.node.refused(self.refusal)
            response = self.protocol.reject(status, f"connection refused: {self.refusal}\n")
        if response is None:
            response = self.protocol.accept(request)
        self.protocol.send_response(response)
        if self.protocol.state is State.OPEN:
            self._cancel("open")
            self._arm("auth", self.node.config.auth_timeout_s, self._auth_timeout)
            self._arm("ping", self.node.config.ping_interval_s, self._ping)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            self._cancel("pong")
            return
        if opcode is Opcode.CLOSE:
            self.session_actions(self.session.close(wire.CLOSE_GOING_AWAY), quiet=True)
            return
        if opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return  # PING: the protocol answered it
        if opcode is not Opcode.CONT:
            self._binary = opcode is Opcode.BINARY
        self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return  # websockets bounds the whole message by max_size (1009)
        data, self._fragments = b"".join(self._fragments), []
        now = self.node.clock()
        if self._binary:
            self.session_actions(self.session.receive_binary(now))
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.protocol.fail(1007, "invalid utf-8")  # RFC 6455 §8.1
            self.session_actions(self.session.close(1007), quiet=True)
            return
        self.session_actions(self.session.receive_text(text, now))

    # --- output ------------------------------------------------------------------------------

    def session_actions(self, actions: list[Action], *, quiet: bool = False) -> None:
        """Do what the session said (the node does the parts that touch other connections)."""
        self.node.run_actions(self, actions, quiet=quiet)

    @property
    def open(self) -> bool:
        return not self.lost and self.protocol.state is State.OPEN

    def flush(self) -> None:
        """Write what the protocol has to send; close the TCP side when it says so."""
        transport = self.transport
        if transport is None or self.lost:
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            else:  # SEND_EOF: the closing handshake is done, or the handshake was refused
                self._close_transport()
                return
        if self.protocol.close_expected():
            self._arm("close", self.node.config.close_timeout_s, self._close_timeout)
        self._check_buffer()

    def send_text(self, text: str) -> None:
        if not self.open:
            return
        if self.node.config.compression:
            self.protocol.send_text(text.encode())
            self.flush()
        else:
            self.write_frame(encode_text(text))

    def write_frame(self, frame: bytes) -> bool:
        """Write one serialised frame now; False if the connection no longer takes frames."""
        transport = self.transport
        if not self.open or transport is None:
            return False
        # the cap holds before the write: the buffer never grows past max_send_buffer_bytes
        # with message frames (a frame larger than the whole cap still goes to an empty buffer)
        size = transport.get_write_buffer_size()
        if size and size + len(frame) > self.node.config.max_send_buffer_bytes:
            self._slow()
            return False
        transport.write(frame)
        return True

    def _check_buffer(self) -> bool:
        transport = self.transport
        if transport is None or self.lost:
            return False
        if transport.get_write_buffer_size() > self.node.config.max_send_buffer_bytes:
            self._slow()
            return False
        return True

    def _slow(self) -> None:
        if self.protocol.state is State.OPEN:
            self.node.metrics.inc("chainpush_slow_consumers_total")
            self.session_actions(self.session.close(wire.CLOSE_SLOW_CONSUMER))

    async def writable(self) -> bool:
        """Wait (at most ``write_timeout_s``) until the send buffer is below a quarter of its
        cap; False if the connection is closing or the client did not read in time (4008)."""
        if not self.open:
            return False
        if not self._paused:
            return True
        self._drained = self._drained or asyncio.Event()
        self._drained.clear()
        try:
            async with asyncio.timeout(self.node.config.write_timeout_s):
                await self._drained.wait()
        except TimeoutError:
            self._slow()
            return False
        return self.open

    def send_close(self, code: int) -> None:
        """Start the closing handshake with ``code``; ``close_timeout_s`` later, abort."""
        if self.lost:
            return
        if self.protocol.state is State.OPEN:
            try:
                self.protocol.send_close(code, wire.CLOSE_REASONS.get(code, ""))
            except InvalidState:  # pragma: no cover - guarded by the state check
                pass
            self.flush()
        elif self.protocol.state is State.CONNECTING:
            self._close_transport()
        self._arm("close", self.node.config.close_timeout_s, self._close_timeout)

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def _close_transport(self) -> None:
        # close() flushes what is buffered first: a client that does not read keeps it open,
        # so the close deadline aborts it then
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._arm("close", self.node.config.close_timeout_s, self._close_timeout)

    # --- timers ------------------------------------------------------------------------------

    def _arm(self, name: str, delay_s: float, callback: object) -> None:
        if self.lost or name in self._timers:
            return
        self._timers[name] = self._loop.call_later(delay_s, self._fire, name, callback)

    def arm_at(self, name: str, when_s: float, callback: object) -> None:
        """Call ``callback`` at loop time ``when_s`` (the token's expiry)."""
        if not self.lost:
            self._cancel(name)
            self._timers[name] = self._loop.call_at(when_s, self._fire, name, callback)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, name: str, callback: object) -> None:
        self._timers.pop(name, None)
        if not self.lost:
            callback()  # type: ignore[operator]

    def _open_timeout(self) -> None:
        logger.info("conn %d from %s: no websocket handshake in time: aborted", self.id, self.ip)
        self.node.metrics.inc("chainpush_aborts_total")
        self.abort()

    def _auth_timeout(self) -> None:
        if self.session.state == "auth":
            self.session_actions(self.session.close(wire.CLOSE_AUTH_TIMEOUT))

    def _ping(self) -> None:
        if not self.open:
            return
        self.protocol.send_ping(os.urandom(4))
        self.flush()
        self._arm("pong", self.node.config.ping_timeout_s, self._pong_timeout)
        self._arm("ping", self.node.config.ping_interval_s, self._ping)

    def _pong_timeout(self) -> None:
        if self.open:
            logger.info("conn %d: no pong within ping_timeout_s: closing", self.id)
            self.session_actions(self.session.close(wire.CLOSE_INTERNAL))

    def _close_timeout(self) -> None:
        logger.info("conn %d (%s): not closed within close_timeout_s: aborted (%d bytes "
                    "unsent)", self.id, client_text(self.session.user),
                    self.transport.get_write_buffer_size() if self.transport else 0)
        self.node.metrics.inc("chainpush_aborts_total")
        self.abort()
