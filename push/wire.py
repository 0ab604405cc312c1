"""The wire protocol between a push node and a browser: frames, error codes, close codes.

Pure: parses client frames into values and renders server frames as JSON text. Every input to
:func:`parse_client_frame` yields a :data:`ClientFrame` or raises :class:`ProtocolError` whose
``code`` is one of :data:`ERROR_CODES`; nothing else escapes. docs/protocol.md is the prose
version of this module and must change with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chainpush.push.errors import ProtocolError
from chainpush.push.records import (
    StoredMessage,
    is_tx_topic_name,
    is_user_topic_name,
    normalise_topic,
)
from chainpush.push.subscription import compile_path

# --- close codes (RFC 6455 §7.4: 4000-4999 are for applications) -----------------------------

CLOSE_GOING_AWAY = 1001  #: the node is shutting down: reconnect (to any node) and resume
CLOSE_TOO_BIG = 1009  #: a client frame exceeded ``max_frame_bytes`` (sent by websockets itself)
CLOSE_INTERNAL = 1011  #: unexpected server error: reconnect and resume
CLOSE_BAD_FIRST_FRAME = 4000  #: the first frame was not a valid ``auth`` frame
CLOSE_AUTH_FAILED = 4001  #: the token is invalid (bad signature, malformed, wrong issuer)
CLOSE_AUTH_TIMEOUT = 4002  #: no ``auth`` frame within ``auth_timeout_s``
CLOSE_TOKEN_EXPIRED = 4003  #: the token expired (at auth, or later while connected)
CLOSE_TOO_MANY_CONNECTIONS = 4004  #: the user already has ``max_connections_per_user`` open
CLOSE_SLOW_CONSUMER = 4008  #: the send queue exceeded its bound: reconnect and resume
CLOSE_IDLE = 4009  #: no frame and no pong within ``idle_timeout_s``
CLOSE_RATE_LIMITED = 4029  #: client frames above the per-connection rate

CLOSE_REASONS: dict[int, str] = {
    CLOSE_GOING_AWAY: "node shutting down",
    CLOSE_TOO_BIG: "frame too big",
    CLOSE_INTERNAL: "internal error",
    CLOSE_BAD_FIRST_FRAME: "first frame must be auth",
    CLOSE_AUTH_FAILED: "authentication failed",
    CLOSE_AUTH_TIMEOUT: "authentication timeout",
    CLOSE_TOKEN_EXPIRED: "token expired",
    CLOSE_TOO_MANY_CONNECTIONS: "too many connections for this user",
    CLOSE_SLOW_CONSUMER: "slow consumer",
    CLOSE_IDLE: "idle timeout",
    CLOSE_RATE_LIMITED: "too many frames",
}

#: error frame codes: the connection stays open after each of these.
ERROR_CODES = frozenset({
    "bad_frame",  # binary frame, or not UTF-8
    "bad_json",  # not parseable JSON
    "bad_message",  # JSON, but not an object of a known shape (the message says which field)
    "unknown_type",  # an object whose ``type`` is not a client frame type
    "forbidden_topic",  # the token does not grant that topic
    "unknown_topic",  # not contract:X, state:X, app:X, inbox:<user>, user:0x + 40 or tx:0x + 64 hex
    "not_subscribed",  # unsubscribe from a topic that was not subscribed
    "too_many_subscriptions",  # above ``max_subscriptions`` per connection
    "too_many_topics",  # the node already serves ``max_topics`` distinct topics
    "filter_too_large",  # a filter above the MAX_FILTER_* limits
    "subscription_failed",  # the node dropped this subscription after an internal error
    "unavailable",  # history could not be read right now; retry the subscribe
})

TOPIC_KINDS = ("contract", "state", "user", "app", "inbox", "tx")
#: deepest JSON nesting accepted from a client. The C JSON parser recurses once per level and
#: trusts ``sys.getrecursionlimit()``, which a dependency may raise (py_ecc, imported by web3, sets
#: it to 100000): then a 64 KiB frame of ``[`` overflows the C stack and kills the process. So the
#: depth is checked before parsing.
MAX_DEPTH = 32
MAX_TOPIC_CHARS = 200
#: an ``inbox:`` topic names a token's ``sub`` exactly, and a ``sub`` may have 256 characters
#: (push.tokens.MAX_SUB_CHARS, which imports this module)
MAX_INBOX_USER_CHARS = 256
MAX_REF_CHARS = 100
MAX_EPOCH_CHARS = 64
#: filter bounds (docs/protocol.md §3): keys, values per key, path parts per key, and the total
#: size (characters of keys and values). Above them: error ``filter_too_large``.
MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 256
MAX_FILTER_PATH_PARTS = 8
MAX_FILTER_CHARS = 8192

# --- client frames ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    type: Literal["auth"] = "auth"


@dataclass(frozen=True, slots=True)
class Subscribe:
    topic: str
    since: int | None = None  #: last offset the client has; None = live only
    #: the stream epoch ``since`` belongs to (docs/protocol.md §5); None = not known
    epoch: str | None = None
    filter: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    ref: str | None = None
    type: Literal["subscribe"] = "subscribe"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topic: str
    ref: str | None = None
    type: Literal["unsubscribe"] = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Ping:
    ref: str | None = None
    type: Literal["ping"] = "ping"


ClientFrame = Auth | Subscribe | Unsubscribe | Ping


def valid_topic(topic: str) -> bool:
    """``contract:X`` / ``state:X`` / ``app:X`` with a printable X (topic at most
    :data:`MAX_TOPIC_CHARS`), ``inbox:<user id>`` (a token ``sub``: printable, at most
    :data:`MAX_INBOX_USER_CHARS`), ``user:0x`` + 40 hex digits, or ``tx:0x`` + 64 hex digits
    (a transaction hash, any case: :func:`normalise_topic` lowers it)."""
    kind, sep, name = topic.partition(":")
    if kind == "user":
        return bool(sep) and is_user_topic_name(name)
    if kind == "tx":
        return bool(sep) and is_tx_topic_name(name)
    if kind == "inbox":
        return bool(sep) and 0 < len(name) <= MAX_INBOX_USER_CHARS and name.isprintable()
    return (bool(sep) and kind in TOPIC_KINDS and 0 < len(name)
            and len(topic) <= MAX_TOPIC_CHARS and name.isprintable())


def _ref(obj: Mapping[str, Any]) -> str | None:
    ref = obj.get("ref")
    if ref is None:
        return None
    if not isinstance(ref, str) or len(ref) > MAX_REF_CHARS:
        raise ProtocolError("bad_message", f"ref must be a string of at most {MAX_REF_CHARS} "
                            f"characters, got {type(ref).__name__}")
    return ref


def _topic(obj: Mapping[str, Any], ref: str | None) -> str:
    topic = obj.get("topic")
    if not isinstance(topic, str):
        raise ProtocolError("bad_message", f"topic must be a string, got {type(topic).__name__}",
                            ref)
    if topic.startswith("tx:") and not valid_topic(topic):
        raise ProtocolError("unknown_topic", "a tx topic must be tx:<transaction hash>, 0x + 64 "
                            f"hex digits, got {topic[:80]!r}", ref)
    if not valid_topic(topic):
        raise ProtocolError(
            "unknown_topic", "topic must be contract:<Name>, state:<Name>, app:<Name>, "
            f"inbox:<user id>, user:<0xaddress> or tx:<0xhash> (at most {MAX_TOPIC_CHARS} "
            "characters)", ref,
        )
    # user:0xab84… (MetaMask's lower case) is the topic user:0xAb84… that records are routed to;
    # tx:0xAB… is tx:0xab…
    return normalise_topic(topic)


def _filter(raw: object, ref: str | None) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError("bad_message", f"filter must be an object, got {type(raw).__name__}",
                            ref)
    if len(raw) > MAX_FILTER_KEYS:
        raise ProtocolError("filter_too_large", f"filter has {len(raw)} keys; at most "
                            f"{MAX_FILTER_KEYS}", ref)
    out: dict[str, tuple[Any, ...]] = {}
    chars = 0
    for key, value in raw.items():
        if not (key in ("event", "status", "kind") or key.startswith("args.")):
            raise ProtocolError(
                "bad_message", f"filter key must be event, status, kind or args.<path>, "
                f"got {key[:50]!r}", ref,
            )
        if key.count(".") >= MAX_FILTER_PATH_PARTS:
            raise ProtocolError("filter_too_large", f"filter key {key[:50]!r} is deeper than "
                                f"{MAX_FILTER_PATH_PARTS} parts", ref)
        try:
            compile_path(key)
        except ValueError as exc:
            raise ProtocolError("bad_message", str(exc), ref) from exc
        values = value if isinstance(value, list) else [value]
        if len(values) > MAX_FILTER_VALUES:
            raise ProtocolError("filter_too_large", f"filter {key[:50]!r} has {len(values)} "
                                f"values; at most {MAX_FILTER_VALUES}", ref)
        if not values or not all(isinstance(v, str | bool | int) for v in values):
            raise ProtocolError(
                "bad_message", f"filter {key[:50]!r} must be a string, number, boolean or a "
                "non-empty list of them", ref,
            )
        chars += len(key) + sum(len(v) if isinstance(v, str) else 1 + int(v).bit_length() // 3
                             for v in values)
        if chars > MAX_FILTER_CHARS:
            raise ProtocolError("filter_too_large", f"filter is larger than {MAX_FILTER_CHARS} "
                                "characters", ref)
        out[key] = tuple(values)
    return out


def nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of ``text`` outside JSON strings (linear, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Parse one websocket frame from a client; raise :class:`ProtocolError` if it is invalid."""
    if isinstance(data, bytes):
        raise ProtocolError("bad_frame", "binary frames are not accepted: send JSON text")
    # the scan runs only when there are enough brackets to matter: frames are small and flat
    if data.count("[") + data.count("{") > MAX_DEPTH and nesting_depth(data) > MAX_DEPTH:
        raise ProtocolError("bad_json", f"frame is nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"frame is not valid JSON: {str(exc)[:80]}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", f"frame must be a JSON object, got {type(obj).__name__}")
    ref = _ref(obj)
    kind = obj.get("type")
    if kind == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("bad_message", "auth.token must be a non-empty string", ref)
        return Auth(token=token)
    if kind == "subscribe":
        topic = _topic(obj, ref)
        since = obj.get("since")
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or since < 0
        ):
            shown = repr(since)[:50]
            raise ProtocolError("bad_message", f"since must be an integer >= 0, got {shown}", ref)
        epoch = obj.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_CHARS):
            raise ProtocolError("bad_message", f"epoch must be a string of at most "
                                f"{MAX_EPOCH_CHARS} characters, got {type(epoch).__name__}", ref)
        return Subscribe(topic=topic, since=since, epoch=epoch,
                         filter=_filter(obj.get("filter"), ref), ref=ref)
    if kind == "unsubscribe":
        return Unsubscribe(topic=_topic(obj, ref), ref=ref)
    if kind == "ping":
        return Ping(ref=ref)
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "frame needs a string field type", ref)
    raise ProtocolError("unknown_type", f"unknown frame type {kind[:50]!r}", ref)


def client_frame(frame: ClientFrame) -> str:
    """Render a client frame (for clients written in Python: tests, the benchmark)."""
    obj: dict[str, Any] = {"type": frame.type}
    if isinstance(frame, Auth):
        obj["token"] = frame.token
    elif isinstance(frame, Subscribe):
        obj["topic"] = frame.topic
        if frame.since is not None:
            obj["since"] = frame.since
        if frame.epoch is not None:
            obj["epoch"] = frame.epoch
        if frame.filter:
            obj["filter"] = {k: list(v) for k, v in frame.filter.items()}
    elif isinstance(frame, Unsubscribe):
        obj["topic"] = frame.topic
    if frame.type != "auth" and frame.ref is not None:
        obj["ref"] = frame.ref
    return json.dumps(obj, separators=(",", ":"))


# --- server frames ---------------------------------------------------------------------------

ServerType = Literal["welcome", "subscribed", "unsubscribed", "message", "error", "pong"]


def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def welcome(*, user: str, node: str, topics: list[str], wallets: list[str], expires_at: int,
            heartbeat_s: float) -> str:
    return _dump({"type": "welcome", "user": user, "node": node, "topics": topics,
                  "wallets": wallets, "expires_at": expires_at, "heartbeat_s": heartbeat_s})


def subscribed(*, topic: str, since: int, head: int, ref: str | None, epoch: str | None = None,
               reset: bool = False) -> str:
    """``since``: offsets above it follow; ``head``: the topic's last offset at subscribe time;
    ``epoch``: the stream's epoch (None before its first message); ``reset``: the client's
    position belonged to another stream and the topic is replayed from offset 1."""
    return _dump({"type": "subscribed", "topic": topic, "since": since, "head": head,
                  "epoch": epoch, "reset": reset, "ref": ref})


def unsubscribed(*, topic: str, ref: str | None) -> str:
    return _dump({"type": "unsubscribed", "topic": topic, "ref": ref})


def message(msg: StoredMessage) -> str:
    """The frame carrying one stored message; the same text goes to every subscriber."""
    return _dump({"type": "message", "topic": msg.topic, "offset": msg.offset,
                  "epoch": msg.epoch, "id": msg.msg_id, "record": msg.record})


def error(code: str, text: str, ref: str | None = None) -> str:
    assert code in ERROR_CODES, code
    return _dump({"type": "error", "code": code, "message": text, "ref": ref})


def pong(ref: str | None = None) -> str:
    return _dump({"type": "pong", "ref": ref})


def parse_server_frame(data: str | bytes) -> dict[str, Any]:
    """Parse a server frame (client side); raise :class:`ProtocolError` if it is not one."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"server frame is not JSON: {str(exc)[:80]}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_message", "server frame must be an object with a string type")
    return obj
