"""Configuration of the push side: one frozen dataclass per component, read from TOML here only.

``chainpush.toml`` sections used here: ``[stores]`` (shared with the watcher), ``[push]``,
``[auth]``, ``[publish]``. Other sections belong to the watcher and are ignored.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from chainpush.flags import InvalidBoolean, toml_bool
from chainpush.push.errors import ConfigError
from chainpush.push.redisio import RedisTarget
from chainpush.push.tokens import DEV_SECRET, TokenConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class StoresConfig:
    # the dev stack's ports (chainpush dev up), as the watcher's defaults
    mongo_uri: str = "mongodb://127.0.0.1:27018/?directConnection=true"
    redis_url: str = "redis://127.0.0.1:6390/0"
    database: str = "chainpush"
    namespace: str = "cp"

    def __post_init__(self) -> None:
        if not self.mongo_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError(f"stores.mongo_uri must be a mongodb:// URI, got {self.mongo_uri!r}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"stores.redis_url must be a redis:// URL, got {self.redis_url!r}")
        try:
            RedisTarget.parse(self.redis_url)
        except ValueError as exc:
            raise ConfigError(f"stores.redis_url: {exc}") from None
        if not self.database or not self.namespace:
            raise ConfigError("stores.database and stores.namespace must be non-empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class PushConfig:
    """One push node. ``allowed_origins=None`` accepts any Origin (dev only)."""

    node_id: str = "push-1"
    host: str = "127.0.0.1"
    port: int = 8701
    public_url: str | None = None
    allowed_origins: tuple[str, ...] | None = None
    auth_timeout_s: float = 5.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    max_frame_bytes: int = 64 * 1024
    rate_per_s: float = 20.0
    rate_burst: int = 40
    max_send_buffer_bytes: int = 1024 * 1024
    max_subscriptions: int = 64
    heartbeat_s: float = 5.0
    node_ttl_s: float = 15.0
    reconcile_s: float = 2.0
    history_page: int = 500
    #: permessage-deflate costs one compression per connection per message on a fan-out
    #: (websockets compresses each connection's copy): off by default, on for thin clients
    compression: bool = False
    # --- limits (docs/protocol.md §1, §3, §7; docs/push.md "Running it in production") -------
    #: contract names this deployment serves: a ``contract:``/``state:`` topic of another name
    #: is refused with ``unknown_topic``. Unset: ``chainpush push`` takes the names of the
    #: config's ``[[contracts]]``; with neither, any name is accepted.
    contracts: tuple[str, ...] | None = None
    max_topics: int = 10_000  #: distinct topics on the node (``too_many_topics``)
    max_connections: int = 10_000  #: TCP connections on the node (HTTP 503 beyond)
    max_connections_per_ip: int = 500  #: TCP connections from one address (HTTP 429 beyond)
    max_connections_per_user: int = 20  #: authenticated connections of one user (4004)
    connect_rate_per_ip_s: float = 50.0  #: new connections per second from one address (429)
    connect_burst_per_ip: int = 100
    open_timeout_s: float = 10.0  #: the websocket handshake must be done within this
    write_timeout_s: float = 10.0  #: history waits this long for a client to read (then 4008)
    close_timeout_s: float = 5.0  #: a closing connection is aborted after this
    #: push node processes sharing ``port`` (SO_REUSEPORT), one per core (push/workers.py);
    #: each registers as ``<node_id>-<i>``
    workers: int = 1
    #: ``/metrics`` + ``/healthz`` of this node alone on 127.0.0.1:``metrics_port`` (worker
    #: ``i`` of ``--workers``: ``metrics_port + i``); None: only on the websocket port
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        for name in ("auth_timeout_s", "ping_interval_s", "ping_timeout_s", "rate_per_s",
                     "heartbeat_s", "reconcile_s", "connect_rate_per_ip_s", "open_timeout_s",
                     "write_timeout_s", "close_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"push.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_frame_bytes", "rate_burst", "max_send_buffer_bytes",
                     "max_subscriptions", "history_page", "max_topics", "max_connections",
                     "max_connections_per_ip", "max_connections_per_user",
                     "connect_burst_per_ip", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"push.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"push.port must be in 0..65535, got {self.port}")
        if self.workers > 1 and self.port == 0:
            raise ConfigError("push.workers > 1 share one port: set push.port (0 would give "
                              "each worker a port of its own)")
        if self.metrics_port is not None:
            if isinstance(self.metrics_port, bool) or not isinstance(self.metrics_port, int) \
                    or not 0 <= self.metrics_port <= 65536 - self.workers:
                raise ConfigError(f"push.metrics_port must be in 0..{65536 - self.workers} "
                                  f"(worker i listens on metrics_port + i), got "
                                  f"{self.metrics_port!r}")
            if self.metrics_port == 0 and self.workers > 1:
                raise ConfigError("push.metrics_port = 0 with push.workers > 1: give a fixed "
                                  "port (worker i listens on metrics_port + i)")
        if self.node_ttl_s <= self.heartbeat_s:
            raise ConfigError(
                f"push.node_ttl_s must exceed push.heartbeat_s, got {self.node_ttl_s} <= "
                f"{self.heartbeat_s}"
            )

    @property
    def url(self) -> str:
        return self.public_url or f"ws://{self.host}:{self.port}/ws"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthServiceConfig:
    """The auth HTTP service (token issue for the demo, and the page)."""

    host: str = "127.0.0.1"
    port: int = 8700
    token_ttl_s: int = 3600
    #: a tx: topic is granted only by a ``tx:`` pattern (push.tokens): none by default
    dev_topics: tuple[str, ...] = ("contract:*", "state:*")
    push_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.token_ttl_s < 1:
            raise ConfigError(f"auth.token_ttl_s must be >= 1, got {self.token_ttl_s}")


#: the shortest server key accepted outside dev mode (as for [auth] secret)
MIN_PUBLISH_KEY_CHARS = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishConfig:
    """``POST /v1/publish`` on the auth service: app messages from a backend with a server key.

    ``keys`` empty = the endpoint is off (404). Several keys let one be rotated: add the new
    one, move the backends, remove the old one.
    """

    #: never in a repr (a config in a traceback or a debug log must not leak them)
    keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 64 * 1024
    #: how long a request may wait for MongoDB before it is answered 503 (retry with the same id)
    timeout_s: float = 10.0
    dev_mode: bool = False

    def __post_init__(self) -> None:
        for i, key in enumerate(self.keys):
            if not isinstance(key, str) or not key or key != key.strip() or not key.isprintable():
                raise ConfigError(f"[publish] keys[{i}] must be a non-empty printable string "
                                  "without surrounding spaces")
            if len(key) < MIN_PUBLISH_KEY_CHARS and not self.dev_mode:
                raise ConfigError(
                    f"[publish] keys[{i}] is {len(key)} characters: outside dev mode a server "
                    f"key must be a random string of at least {MIN_PUBLISH_KEY_CHARS}")
        if not 1 <= self.max_body_bytes <= 1024 * 1024:
            raise ConfigError(f"publish.max_body_bytes must be in 1..1048576, got "
                              f"{self.max_body_bytes}")
        if self.timeout_s <= 0:
            raise ConfigError(f"publish.timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True, slots=True)
class Settings:
    """``dev_mode``: the dev secret is allowed. ``dev_login``: ``POST /auth/login`` mints tokens.

    ``dev_explicit`` says dev mode was asked for (``--dev``, ``CHAINPUSH_DEV``, ``[auth]
    dev_mode``) rather than defaulted (``chainpush run``). The dev login signs with whatever key
    is configured, so beside a real key it runs only when dev mode was explicit.
    """

    stores: StoresConfig = field(default_factory=StoresConfig)
    push: PushConfig = field(default_factory=PushConfig)
    tokens: TokenConfig = field(default_factory=lambda: TokenConfig(dev_mode=True))
    auth: AuthServiceConfig = field(default_factory=AuthServiceConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    dev_mode: bool = True
    dev_explicit: bool = False

    @property
    def real_key(self) -> bool:
        """True unless tokens are signed with the well-known dev secret."""
        return self.tokens.algorithm != "HS256" or self.tokens.secret != DEV_SECRET

    @property
    def dev_login(self) -> bool:
        return self.dev_mode and (self.dev_explicit or not self.real_key)


def _section(cls: type[Any], raw: dict[str, Any], section: str, **extra: Any) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{section}]: {', '.join(sorted(unknown))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    for f in fields(cls):
        # annotations are strings here (``from __future__ import annotations``)
        if f.type == "bool" and f.name in values:
            values[f.name] = _bool(values[f.name], f"[{section}] {f.name}")
    values.update(extra)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from exc


_TOKEN_KEYS = {"algorithm", "secret", "public_key", "private_key", "issuer", "audience",
               "leeway_s"}
_AUTH_KEYS = {"host", "port", "token_ttl_s", "dev_topics", "push_urls"}
#: what the dev login grants with no config file (the built-in demo, as the watcher's
#: DEMO_CONFIG): the transaction card's hashes and their announcements too (docs/push.md)
DEMO_DEV_TOPICS = ("contract:*", "state:*", "tx:*", "app:demo-txs")


def _with_contracts(raw: dict[str, Any]) -> dict[str, Any]:
    """``[push]``, with ``contracts`` taken from the watcher's ``[[contracts]]`` names when
    ``[push] contracts`` is not set (one config file serves both: the node then refuses topics
    of contracts nobody watches with ``unknown_topic``)."""
    push = dict(raw.get("push", {}))
    watched = raw.get("contracts")
    if "contracts" not in push and isinstance(watched, list) and watched:
        names = [c.get("name") for c in watched if isinstance(c, dict)]
        if names and all(isinstance(n, str) for n in names):
            push["contracts"] = names
    return push


def _bool(value: object, key: str) -> bool:
    try:
        return toml_bool(value, key=key)
    except InvalidBoolean as exc:
        raise ConfigError(str(exc)) from exc


def load(path: Path | None, *, dev_mode: bool | None, dev_default: bool = False,
         overrides: dict[str, Any] | None = None,
         secret_from_env: str | None = None,
         publish_keys_from_env: str | None = None) -> Settings:
    """Read ``path`` (TOML); ``overrides`` is ``{"push": {...}}`` etc. from the command line.

    ``dev_mode`` is what the flags / ``CHAINPUSH_DEV`` said (``None``: nothing), and wins over
    ``[auth] dev_mode`` (a TOML boolean); ``dev_default`` applies when neither says anything.
    ``publish_keys_from_env`` (``CHAINPUSH_PUBLISH_KEYS``, comma-separated) replaces
    ``[publish] keys``.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    auth_raw = dict(raw.get("auth", {}))
    if secret_from_env:
        auth_raw["secret"] = secret_from_env
    from_file = auth_raw.pop("dev_mode", None)
    explicit = dev_mode
    if from_file is not None:
        file_value = _bool(from_file, "[auth] dev_mode")
        explicit = file_value if explicit is None else explicit
    dev = explicit if explicit is not None else dev_default
    token_raw = {k: v for k, v in auth_raw.items() if k in _TOKEN_KEYS}
    service_raw = {k: v for k, v in auth_raw.items() if k in _AUTH_KEYS}
    if path is None:
        service_raw.setdefault("dev_topics", DEMO_DEV_TOPICS)
    unknown = set(auth_raw) - _TOKEN_KEYS - _AUTH_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) in [auth]: {', '.join(sorted(unknown))}")
    publish_raw = dict(raw.get("publish", {}))
    if "dev_mode" in publish_raw:
        raise ConfigError("unknown setting(s) in [publish]: dev_mode (dev mode is [auth] "
                          "dev_mode, --dev or CHAINPUSH_DEV)")
    if publish_keys_from_env:
        publish_raw["keys"] = [k.strip() for k in publish_keys_from_env.split(",") if k.strip()]
    keys = publish_raw.get("keys", [])
    if not isinstance(keys, list | tuple) or not all(isinstance(k, str) for k in keys):
        raise ConfigError("[publish] keys must be a list of strings, e.g. keys = "
                          "[\"<32+ random characters>\"]")
    return Settings(
        stores=_section(StoresConfig, raw.get("stores", {}), "stores"),
        push=_section(PushConfig, _with_contracts(raw), "push"),
        tokens=_section(TokenConfig, token_raw, "auth", dev_mode=dev),
        auth=_section(AuthServiceConfig, service_raw, "auth"),
        publish=_section(PublishConfig, publish_raw, "publish", dev_mode=dev),
        dev_mode=dev, dev_explicit=explicit is True,
    )
