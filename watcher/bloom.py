"""A block header's ``logsBloom`` against the watcher's log filter: may the block hold our logs?

The bloom (Ethereum yellow paper §4.3.1, "M3:2048") is 2048 bits; each log sets, for its address
and for each of its topics, three bits: for ``h = keccak256(value)`` the low 11 bits of the byte
pairs ``h[0:2]``, ``h[2:4]``, ``h[4:6]``. A block *may* hold a log matching our filter only if
the bits of one of our addresses are all set and — when the filter names topic0s — the bits of
one of those too. No false negatives, some false positives: a block whose bloom says "maybe"
while ``eth_getLogs`` by its hash answered ``[]`` is cross-checked with its receipts
(``watcher.stepper``): a provider that wrongly answers ``[]`` cannot lose a block for good.

The bit positions of every address and topic0 are computed once (``LogBloom``); a check is a
handful of integer ``&`` operations. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_utils.crypto import keccak

BLOOM_BITS = 2048


def bloom_mask(value: bytes) -> int:
    """The three bits ``value`` sets in a bloom, as an integer mask (bit i = 2^i)."""
    h = keccak(value)
    mask = 0
    for i in (0, 2, 4):
        mask |= 1 << (((h[i] << 8) | h[i + 1]) & (BLOOM_BITS - 1))
    return mask


def bloom_of(logs: Iterable[tuple[str, Iterable[str]]]) -> str:
    """The ``logsBloom`` (hex) of logs given as (address, topics) (the simulation's chain)."""
    bloom = 0
    for address, topics in logs:
        bloom |= bloom_mask(bytes.fromhex(address[2:]))
        for t in topics:
            bloom |= bloom_mask(bytes.fromhex(t[2:]))
    return f"0x{bloom:0512x}"


class LogBloom:
    """Precomputed masks of the filter's addresses and topic0s (None: any topic)."""

    def __init__(self, addresses: Iterable[str], topic0s: Iterable[str] | None) -> None:
        self._addresses = [bloom_mask(bytes.fromhex(a[2:])) for a in addresses]
        self._topics = (None if topic0s is None
                        else [bloom_mask(bytes.fromhex(t[2:])) for t in topic0s])

    def may_match(self, logs_bloom: str | None) -> bool:
        """False only when the bloom proves the block holds no log our filter selects; True
        for a missing or malformed bloom (no proof)."""
        if not logs_bloom:
            return True
        try:
            bloom = int(logs_bloom, 16)
        except ValueError:
            return True
        if not any(bloom & m == m for m in self._addresses):
            return False
        return self._topics is None or any(bloom & m == m for m in self._topics)
