"""What may go into a log line: client text escaped, URLs without secrets, repeats throttled.

* :func:`client_text` — any text a client chose (a topic, a user name, a filter key, a parser's
  complaint quoting the frame) is logged through this: control characters, quotes and backslashes
  are escaped as in a Python literal and the length is capped, so a topic holding ``\\n`` cannot
  forge a log line, and a 64 KiB frame cannot flood the log.
* :func:`redact_credentials` — ``scheme://user:password@host/…`` → ``scheme://user:***@host/…``,
  the rest kept (``mongo_uri`` / ``redis_url`` in ``--print-config`` and in logs).
* :func:`redact_url` — also hides the path and query, where providers put API keys
  (``https://eth-mainnet.g.alchemy.com/v2/<key>`` → ``https://eth-mainnet.g.alchemy.com/***``).
  Used for node RPC URLs, which are logged at INFO and WARNING.
* :class:`Throttle` — at most one line per key per interval, counting the lines it held back:
  for errors that repeat at the rate of the traffic (a Redis that answers errors, bad frames).

Pure: no logging configuration here (only the entry point configures logging).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

#: longest client text that reaches a log line (after escaping)
MAX_CLIENT_TEXT = 200


def client_text(text: object, limit: int = MAX_CLIENT_TEXT) -> str:
    """``text`` safe for one log line: escaped like a Python literal (without the quotes) and
    cut to ``limit`` characters with ``…`` marking the cut."""
    escaped = repr(str(text))[1:-1]
    if len(escaped) > limit:
        return escaped[:limit] + "…"
    return escaped


def _netloc(host: str | None, port: int | None, user: str | None, password: str | None) -> str:
    where = host or ""
    if ":" in where:  # an IPv6 literal
        where = f"[{where}]"
    if port is not None:
        where = f"{where}:{port}"
    if password is not None:
        return f"{user or ''}:***@{where}"
    if user is not None:
        return f"{user}@{where}"
    return where


def redact_credentials(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***``; anything that does not
    parse as a URL with a host is returned with everything after ``://`` hidden."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    if parts.password is None:
        return url
    netloc = _netloc(parts.hostname, port, parts.username, parts.password)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_url(url: str) -> str:
    """``url`` with its password, path and query hidden (``scheme://host:port/***``); a path
    without a scheme (an IPC socket) is returned unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    netloc = _netloc(parts.hostname, port, parts.username, parts.password)
    hidden = parts.path not in ("", "/") or bool(parts.query) or bool(parts.fragment)
    return urlunsplit((parts.scheme, netloc, "/***" if hidden else parts.path, "", ""))


class Throttle:
    """At most one log line per key per ``interval_s``.

    ``ready(key)`` returns ``None`` when the line should be held back, else how many lines of
    that key were held back since the last one that went out (0 the first time)::

        held = throttle.ready("dispatch")
        if held is not None:
            logger.warning("dispatch failed (%s); %d similar lines held back", exc, held)
    """

    def __init__(self, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def ready(self, key: str) -> int | None:
        now = self._clock()
        if now < self._next.get(key, float("-inf")):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval_s
        return self._held.pop(key, 0)
