"""Wallet activity across every token (issue 13.4, ``[watch] wallet_activity``): the pure core.
``watcher.stepper`` feeds it the wallets with a ``user:`` subscriber (the ``Interested`` action)
and performs the fetches and metadata calls it describes (``docs/watcher.md`` §Wallet activity).

Given the set of wallets with a subscriber, ``WalletActivity`` says which ``eth_getLogs``
filters find the standard transfers of *any* contract from or to them, keeps the logs that
really involve one of them, and decodes them with the standard ABIs:

* ERC-20 ``Transfer(address indexed from, address indexed to, uint256 value)``: 3 topics;
* ERC-721 ``Transfer(address indexed from, address indexed to, uint256 indexed tokenId)``: the
  same topic0 with 4 topics (the topic count tells them apart);
* ERC-1155 ``TransferSingle`` / ``TransferBatch(address indexed operator, address indexed from,
  address indexed to, …)``: from and to are topics 2 and 3.

Topics are ANDed across positions, so "from a wallet" and "to a wallet" are separate filters.
Beyond ``max_addresses`` wallets, the filters carry topic0 only and ``select`` does the
filtering (providers limit the size of topic arrays as of address arrays).

``TokenInfo`` helpers encode the ``symbol()`` / ``decimals()`` calls and decode their answers
(``string``, or the ``bytes32`` of old tokens; ``None`` for a revert or another shape).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError

from chainpush.watcher.abi import ContractABI, parse_abi
from chainpush.watcher.decode import EventDecoder, RawLog, checksum
from chainpush.watcher.errors import ConfigError
from chainpush.watcher.factory import MAX_FILTER_ADDRESSES
from chainpush.watcher.record import EventRecord, TokenDict

STANDARDS = ("erc20", "erc721", "erc1155")


def _ev(name: str, inputs: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {"type": "event", "name": name, "anonymous": False,
            "inputs": [{"name": n, "type": t, "indexed": i} for n, t, i in inputs]}


_ABIS: dict[str, ContractABI] = {
    "erc20": parse_abi([_ev("Transfer", [("from", "address", True), ("to", "address", True),
                                         ("value", "uint256", False)])], "ERC-20 (EIP-20)"),
    "erc721": parse_abi([_ev("Transfer", [("from", "address", True), ("to", "address", True),
                                          ("tokenId", "uint256", True)])], "ERC-721 (EIP-721)"),
    "erc1155": parse_abi([
        _ev("TransferSingle", [("operator", "address", True), ("from", "address", True),
                               ("to", "address", True), ("id", "uint256", False),
                               ("value", "uint256", False)]),
        _ev("TransferBatch", [("operator", "address", True), ("from", "address", True),
                              ("to", "address", True), ("ids", "uint256[]", False),
                              ("values", "uint256[]", False)]),
    ], "ERC-1155 (EIP-1155)"),
}


def standard_abi(standard: str) -> ContractABI:
    return _ABIS[standard]


def check_standards(values: Sequence[str], where: str) -> tuple[str, ...]:
    """``[watch] wallet_activity`` validated: a list of known standards, each once."""
    unknown = [v for v in values if v not in STANDARDS]
    if unknown:
        raise ConfigError(f"{where}: unknown standard(s) {', '.join(map(repr, unknown))} "
                          f"(expected some of: {', '.join(STANDARDS)})")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}: a standard is listed twice: {list(values)}")
    return tuple(values)


_WALLET = re.compile(r"0x[0-9a-fA-F]{40}")


def is_wallet(text: str) -> bool:
    """True for an address (``0x`` + 40 hex digits, any case): a ``user:`` topic's suffix
    that names a wallet."""
    return _WALLET.fullmatch(text) is not None


def pad(wallet: str) -> str:
    """A wallet as a 32-byte topic (left-padded, lower case)."""
    return "0x" + "00" * 12 + wallet.lower()[2:]


@dataclass(frozen=True, slots=True)
class _Shape:
    standard: str
    decoder: EventDecoder
    #: topic positions of (from, to)
    positions: tuple[int, int]


class WalletActivity:
    """Filters, selection and decoding of the standard transfers of ``standards``."""

    def __init__(self, chain_id: int, standards: Iterable[str], *,
                 max_addresses: int = MAX_FILTER_ADDRESSES) -> None:
        self.chain_id = chain_id
        self.standards = tuple(standards)
        self.max_addresses = max_addresses
        self._shapes: dict[tuple[str, int], _Shape] = {}
        for std in self.standards:
            for ev in _ABIS[std].events:
                positions = (2, 3) if std == "erc1155" else (1, 2)
                self._shapes[(ev.topic0, ev.topic_count)] = _Shape(
                    std, EventDecoder.compile(std, ev), positions)

    def topic0s(self) -> list[str]:
        """The topic0s of the enabled standards' transfer events."""
        return sorted({topic0 for topic0, _ in self._shapes})

    def filters(self, wallets: Collection[str]) -> list[dict[str, object]]:
        """The ``eth_getLogs`` filters (no ``address``: any contract) of transfers from or to
        ``wallets`` (topic0 only beyond ``max_addresses`` wallets: ``select`` filters)."""
        if not wallets:
            return []
        padded: list[str] | None = sorted(pad(w) for w in wallets)
        if len(wallets) > self.max_addresses:
            padded = None
        by_positions: dict[tuple[int, int], set[str]] = {}
        for (topic0, _), shape in self._shapes.items():
            by_positions.setdefault(shape.positions, set()).add(topic0)
        out: list[dict[str, object]] = []
        for positions, topic0s in sorted(by_positions.items()):
            t0 = sorted(topic0s)
            if padded is None:
                out.append({"topics": [t0]})
                continue
            for pos in positions:
                topics: list[object] = [t0, *([None] * (pos - 1)), padded]
                out.append({"topics": topics})
        return out

    def select(self, logs: Iterable[RawLog], wallets: Collection[str]) -> list[RawLog]:
        """The logs of an enabled standard's shape with a wallet of ``wallets`` as sender or
        recipient, once each, in (block, log index) order."""
        want = {pad(w) for w in wallets}
        kept: dict[tuple[int, int], RawLog] = {}
        for lg in logs:
            topics = [str(t).lower() for t in lg.get("topics") or []]
            if not topics:
                continue
            shape = self._shapes.get((topics[0], len(topics)))
            if shape is None:
                continue  # another shape under a shared topic0, or a standard not enabled
            if not any(topics[p] in want for p in shape.positions):
                continue
            kept[(int(lg["blockNumber"], 16), int(lg["logIndex"], 16))] = lg
        return [kept[k] for k in sorted(kept)]

    def decode(self, log: RawLog, timestamp: int) -> EventRecord | None:
        """The record of a selected log (``contract`` = the standard, ``address`` = the
        token), or None when its data does not decode as the standard says."""
        topics = log.get("topics") or []
        shape = self._shapes.get((str(topics[0]).lower(), len(topics))) if topics else None
        if shape is None:
            return None
        try:
            args = shape.decoder.args(topics, log.get("data") or "0x")
        except (ValueError, DecodingError, IndexError, TypeError):
            return None
        return EventRecord(
            chain_id=self.chain_id, contract=shape.standard, address=checksum(log["address"]),
            event=shape.decoder.event.name, args=args,
            address_paths=shape.decoder.address_paths(args),
            block_number=int(log["blockNumber"], 16), block_hash=log["blockHash"].lower(),
            block_timestamp=timestamp, tx_hash=log["transactionHash"].lower(),
            log_index=int(log["logIndex"], 16),
        )


# --- token metadata ------------------------------------------------------------------------

SYMBOL = "0x95d89b41"  # symbol()
DECIMALS = "0x313ce567"  # decimals()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    standard: str
    symbol: str | None
    decimals: int | None

    def to_dict(self) -> TokenDict:
        """The record's ``token`` field (docs/seams.md §1)."""
        return {"standard": self.standard, "symbol": self.symbol, "decimals": self.decimals}


def metadata_calls(standard: str) -> tuple[str, ...]:
    """The selectors to ``eth_call`` once per token: ``symbol()`` (+ ``decimals()`` for
    ERC-20); none for ERC-1155 (no standard metadata calls)."""
    if standard == "erc20":
        return (SYMBOL, DECIMALS)
    if standard == "erc721":
        return (SYMBOL,)
    return ()


def decode_symbol(result: str | None) -> str | None:
    """A ``string`` answer, or the NUL-padded ``bytes32`` of old tokens (MKR, SAI); None for a
    revert (``0x``) or anything else."""
    if not result or result == "0x":
        return None
    try:
        raw = bytes.fromhex(result[2:])
    except ValueError:
        return None
    if len(raw) == 32:
        text = raw.rstrip(b"\0")
        try:
            return text.decode() if text and b"\0" not in text else None
        except UnicodeDecodeError:
            return None
    try:
        (value,) = abi_decode(["string"], raw)
    except (DecodingError, UnicodeDecodeError, ValueError, OverflowError):
        return None
    return str(value)


def decode_decimals(result: str | None) -> int | None:
    """A ``uint8`` answer (as one word); None for a revert or a value above 255."""
    if not result or len(result) != 66:
        return None
    try:
        value = int(result, 16)
    except ValueError:
        return None
    return value if value <= 255 else None


def token_info(standard: str, answers: Mapping[str, str | None]) -> TokenInfo:
    """``TokenInfo`` from the answers to ``metadata_calls`` (selector → result or None)."""
    return TokenInfo(standard, decode_symbol(answers.get(SYMBOL)),
                     decode_decimals(answers.get(DECIMALS)) if standard == "erc20" else None)
