"""Configuration of webhook delivery: ``[[webhooks]]`` entries and ``[webhooks_server]``.

Pure: :func:`parse` takes the TOML document as a dict (and the environment as a mapping, for
``secret_env``) and returns frozen dataclasses, or raises :class:`~push.errors.ConfigError`
naming the webhook and the setting. docs/webhooks.md §Configuration is the prose version.

::

    [[webhooks]]
    name = "backend"                           # [A-Za-z0-9_.-], unique
    url = "https://api.example.com/hooks/chainpush"
    secret = "whsec_…"                         # Standard Webhooks secret: base64 after whsec_
    topics = ["contract:DemoToken", "user:*"]  # exact topics, or prefixes ending in *
    start = "first"                            # or "head": skip what is stored when first run
    timeout_s = 10.0                           # per request (at most 10 s by default policy)
    first_backoff_s = 0.5                      # retry delays grow from here ...
    max_backoff_s = 30.0                       # ... up to here (full jitter in [cap/2, cap])
    max_failures = 30                          # consecutive failures of one topic → paused
    max_client_errors = 3                      # consecutive 4xx (not 408/429) → paused
    batch_size = 1                             # > 1: {"type": "batch", "messages": [...]}
    max_concurrency = 8                        # requests in flight at once, over all topics

    [webhooks_server]                          # optional
    port = 8702                                # /metrics and /healthz; absent = no HTTP port
    poll_interval_s = 0.5                      # how often stream heads are read
    discover_interval_s = 5.0                  # how often topics matching a * are listed
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from chainpush.push.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SECRET_PREFIX = "whsec_"
#: Standard Webhooks recommends secrets of 24 to 64 bytes; shorter ones are refused.
MIN_SECRET_BYTES = 16
MAX_BATCH = 500
#: the issue's policy: a request never waits more than 10 s, a retry never more than 30 s,
#: unless an operator raises these bounds knowingly (the defaults stay at them).
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BACKOFF_S = 30.0

Start = Literal["first", "head"]


def secret_bytes(secret: str) -> bytes:
    """The key inside a ``whsec_<base64>`` secret; :class:`ConfigError` if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError(f"secret must start with {SECRET_PREFIX!r} (Standard Webhooks format)")
    body = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"secret after {SECRET_PREFIX!r} must be base64: {exc}") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"secret must hold at least {MIN_SECRET_BYTES} bytes, got {len(key)}")
    return key


def topic_matches(pattern: str, topic: str) -> bool:
    """``pattern`` is an exact topic or a prefix ending in ``*`` (``*`` alone matches all)."""
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return topic == pattern


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookConfig:
    """One ``[[webhooks]]`` entry; errors name the webhook and the setting."""

    name: str
    url: str
    secret: str = field(repr=False)
    topics: tuple[str, ...]
    start: Start = "first"
    timeout_s: float = DEFAULT_TIMEOUT_S
    first_backoff_s: float = 0.5
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    max_failures: int = 30
    max_client_errors: int = 3
    batch_size: int = 1
    #: requests in flight at once to this endpoint, over all its topics (one per topic at most)
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        where = f"webhooks.{self.name}" if isinstance(self.name, str) else "webhooks"
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise ConfigError(
                f"webhooks: name must be 1-64 characters of A-Z a-z 0-9 _ . -, got {self.name!r}")
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url must be an http:// or https:// URL, got {self.url!r}")
        if not isinstance(self.secret, str):
            raise ConfigError(f"{where}.secret must be a string")
        try:
            secret_bytes(self.secret)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None
        if not self.topics or not all(isinstance(t, str) and t for t in self.topics):
            raise ConfigError(
                f"{where}.topics must be a non-empty list of topics or patterns ending in *, "
                f"got {list(self.topics)!r}")
        for topic in self.topics:
            if "*" in topic[:-1]:
                raise ConfigError(
                    f"{where}.topics: {topic!r} may hold * only at its end (a prefix pattern)")
        if self.start not in ("first", "head"):
            raise ConfigError(f"{where}.start must be 'first' or 'head', got {self.start!r}")
        for name in ("timeout_s", "first_backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}.{name} must be a number > 0, got {value!r}")
        if self.max_backoff_s < self.first_backoff_s:
            raise ConfigError(
                f"{where}.max_backoff_s must be >= first_backoff_s, got {self.max_backoff_s} "
                f"< {self.first_backoff_s}")
        for name in ("max_failures", "max_client_errors", "max_concurrency"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}.{name} must be an integer >= 1, got {value!r}")
        if (not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool)
                or not 1 <= self.batch_size <= MAX_BATCH):
            raise ConfigError(
                f"{where}.batch_size must be an integer in 1..{MAX_BATCH}, got {self.batch_size!r}")

    @property
    def key(self) -> bytes:
        return secret_bytes(self.secret)

    def wants(self, topic: str) -> bool:
        return any(topic_matches(p, topic) for p in self.topics)

    @property
    def exact_topics(self) -> tuple[str, ...]:
        return tuple(t for t in self.topics if not t.endswith("*"))

    @property
    def has_patterns(self) -> bool:
        return any(t.endswith("*") for t in self.topics)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhooksServerConfig:
    """``[webhooks_server]``: the deliverer process. ``port=None``: no HTTP port."""

    host: str = "127.0.0.1"
    port: int | None = None
    poll_interval_s: float = 0.5
    discover_interval_s: float = 5.0

    def __post_init__(self) -> None:
        if self.port is not None and (
                not isinstance(self.port, int) or not 0 <= self.port < 65536):
            raise ConfigError(f"webhooks_server.port must be in 0..65535, got {self.port!r}")
        for name in ("poll_interval_s", "discover_interval_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"webhooks_server.{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class WebhooksSettings:
    webhooks: tuple[WebhookConfig, ...] = ()
    server: WebhooksServerConfig = field(default_factory=WebhooksServerConfig)

    def get(self, name: str) -> WebhookConfig:
        for hook in self.webhooks:
            if hook.name == name:
                return hook
        known = ", ".join(h.name for h in self.webhooks) or "none configured"
        raise ConfigError(f"no webhook named {name!r} in [[webhooks]] ({known})")


def _entry(raw: Any, index: int, environ: Mapping[str, str]) -> WebhookConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[[webhooks]] entry {index} must be a table, got {type(raw).__name__}")
    label = raw.get("name", f"#{index}")
    values = dict(raw)
    env_name = values.pop("secret_env", None)
    if env_name is not None:
        if "secret" in values:
            raise ConfigError(f"webhooks.{label}: give secret or secret_env, not both")
        if not isinstance(env_name, str) or env_name not in environ:
            raise ConfigError(
                f"webhooks.{label}.secret_env: environment variable {env_name!r} is not set")
        values["secret"] = environ[env_name]
    names = {f.name for f in fields(WebhookConfig)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown setting(s) in webhooks.{label}: {', '.join(sorted(unknown))}")
    missing = {"name", "url", "secret", "topics"} - set(values)
    if missing:
        raise ConfigError(f"webhooks.{label}: missing {', '.join(sorted(missing))}")
    if not isinstance(values["topics"], list | tuple):
        raise ConfigError(f"webhooks.{label}.topics must be a list, got {values['topics']!r}")
    values["topics"] = tuple(values["topics"])
    return WebhookConfig(**values)


def parse(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> WebhooksSettings:
    """The ``[[webhooks]]`` and ``[webhooks_server]`` parts of a parsed ``chainpush.toml``."""
    entries = raw.get("webhooks", [])
    if not isinstance(entries, list):
        raise ConfigError("webhooks must be an array of tables: write [[webhooks]]")
    hooks = tuple(_entry(e, i, environ or {}) for i, e in enumerate(entries))
    seen: set[str] = set()
    for hook in hooks:
        if hook.name in seen:
            raise ConfigError(f"webhooks: name {hook.name!r} is used twice")
        seen.add(hook.name)
    server_raw = raw.get("webhooks_server", {})
    if not isinstance(server_raw, Mapping):
        raise ConfigError("webhooks_server must be a table")
    unknown = set(server_raw) - {f.name for f in fields(WebhooksServerConfig)}
    if unknown:
        raise ConfigError(f"unknown setting(s) in [webhooks_server]: {', '.join(sorted(unknown))}")
    return WebhooksSettings(webhooks=hooks, server=WebhooksServerConfig(**server_raw))
