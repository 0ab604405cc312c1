"""Exceptions of the push half of chainpush.

::

    PushError
    ├── ConfigError (ValueError)         a setting is missing or out of range: fatal at start
    ├── InvalidRecord (ValueError)       a record from the watcher does not have the seam's shape
    ├── ProtocolError (ValueError)       a client frame that cannot be parsed (→ error frame)
    ├── TokenError (ValueError)          a token is missing, malformed, badly signed or expired
    │   └── TopicNotAllowed              the token is valid but does not grant that topic
    ├── MintError (ValueError)           :func:`push.tokens.mint` was given claims or a key that
    │                                    no push node would accept (the message names the argument)
    └── StoreUnavailable                 MongoDB or Redis could not be reached (retryable)
"""

from __future__ import annotations


class PushError(Exception):
    """Root of every exception raised by the ``push`` package."""


class ConfigError(PushError, ValueError):
    """A configuration value is missing or invalid; the message names the setting."""


class InvalidRecord(PushError, ValueError):
    """A record handed to collect does not follow docs/seams.md §1."""


class ProtocolError(PushError, ValueError):
    """A client frame is not valid JSON or not a valid message; ``code`` is the error frame code."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ref = ref


class TokenError(PushError, ValueError):
    """A token is missing, malformed, badly signed or expired."""


class TopicNotAllowed(TokenError):
    """The token is valid but does not grant the requested topic."""


class MintError(PushError, ValueError):
    """A token cannot be minted from these arguments; the message names the argument."""


class StoreUnavailable(PushError):
    """MongoDB or Redis did not answer after the allowed tries (retryable by the caller)."""
