"""Exceptions of the watcher package.

Tree::

    WatcherError
    ├── ConfigError (ValueError)          bad watch config: names the file and key
    │   └── InvalidABI                     an ABI file that is not a valid ABI
    ├── CompileError                        solc rejected a source: carries file:line messages
    ├── NodeError                           talking to the node failed (``retryable`` says if a
    │   │                                   retry with backoff may help)
    │   ├── NodeUnreachable (retryable)     nothing answers at the endpoint, or it timed out
    │   ├── RPCError (retryable)            the node answered a JSON-RPC error
    │   │   ├── RangeTooLarge               eth_getLogs range/result limit: shrink and retry
    │   │   └── RateLimited                 HTTP 429 / rate-limit error: back off, shrink
    │   └── ChainMismatch (fatal)           the node serves another chain id than expected
    ├── ReorgTooDeep (fatal)                a reorg reached below the tracked block window
    └── DecodeError (ValueError)            a log that does not match its ABI
"""

from __future__ import annotations


class WatcherError(Exception):
    """Root of every exception the watcher raises on purpose."""


class ConfigError(WatcherError, ValueError):
    """The watch configuration is wrong; the message names the file and key."""


class InvalidABI(ConfigError):
    """An ABI file or document is not a valid contract ABI."""


class CompileError(WatcherError):
    """The Solidity compiler rejected a source (message carries file:line:col)."""


class NodeError(WatcherError):
    """Talking to the Ethereum node failed."""

    retryable: bool = True


class NodeUnreachable(NodeError):
    """Nothing answers at the node endpoint (refused, reset, timed out)."""


class RPCError(NodeError):
    """The node answered a JSON-RPC error."""

    def __init__(self, message: str, *, code: int | None = None, method: str | None = None):
        super().__init__(message)
        self.code = code
        self.method = method


class RangeTooLarge(RPCError):
    """eth_getLogs refused the block range or returned too many results: shrink the range."""


class RateLimited(RPCError):
    """The provider rate-limited us (HTTP 429 or a rate-limit JSON-RPC error): back off."""


class ChainMismatch(NodeError):
    """The node serves a different chain id than the configuration expects."""

    retryable = False


class ReorgTooDeep(WatcherError):
    """A reorganisation reached below the oldest block the cursor tracks (its window).

    Fatal: the events of blocks below the window were treated as final. Raise ``reorg_window``.
    """


class DecodeError(WatcherError, ValueError):
    """A log does not decode with the ABI it was matched to."""
