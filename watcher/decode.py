"""Decode raw ``eth_getLogs`` logs into ``EventRecord``s, fast.

For every watched (address, topic0, topic count) a decoder is compiled once from the ABI:

* static scalar arguments (``uintN``, ``intN``, ``address``, ``bool``, ``bytesN``) are read
  straight from the hex of their 32-byte word, with the same strictness as eth_abi's decoder
  (padding and range checks), so no bytes are allocated and no codec registry is consulted;
* anything dynamic or nested (``string``, ``bytes``, arrays, tuples) goes through
  ``eth_abi.decode`` once per log for the data part;
* indexed dynamic arguments are, per the Solidity ABI spec, only the keccak-256 of their
  encoding: their value is the topic itself as hex (what web3.py returns, too).

The key includes the topic count because ERC-20 and ERC-721 share ``Transfer(address,address,
uint256)`` and differ only in how many arguments are indexed.

Values are made JSON-safe on the way (``docs/seams.md`` §1): integers → decimal strings,
addresses → EIP-55, bytes → ``0x`` lower-case hex, tuples → objects keyed by component name.
Each record also carries ``address_paths``: the filter-syntax paths (``to``, ``order.maker``,
``recipients.2``) of its ``address``-typed values, in ABI order, which is what push routes
``user:`` topics by: the decoder knows the types, so nothing downstream guesses from the value.
A log that does not decode raises ``DecodeError`` naming tx hash and log index; the caller counts
it and goes on. Unnamed arguments are keyed ``_<position>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypedDict

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_abi.grammar import BasicType, TupleType
from eth_abi.grammar import parse as parse_type
from eth_utils.address import to_checksum_address

from chainpush.watcher.abi import ContractABI, EventABI, Param
from chainpush.watcher.errors import DecodeError
from chainpush.watcher.record import EventRecord

logger = logging.getLogger(__name__)


class RawLog(TypedDict, total=False):
    """A log as ``eth_getLogs`` returns it (hex strings)."""

    address: str
    topics: list[str]
    data: str
    blockNumber: str
    blockHash: str
    blockTimestamp: str
    transactionHash: str
    transactionIndex: str
    logIndex: str
    removed: bool


checksum = lru_cache(maxsize=1 << 16)(to_checksum_address)
ZERO24 = "0" * 24


# --- JSON-safe conversion of eth_abi values -----------------------------------------------------

Convert = Callable[[Any], Any]


def _to_int_str(v: Any) -> str:
    return str(v)


def _to_hex(v: Any) -> str:
    return "0x" + bytes(v).hex()


def _to_addr(v: Any) -> str:
    return checksum(v)


def _identity(v: Any) -> Any:
    return v


def converter(param: Param) -> Convert:
    """A function turning eth_abi's decoded value of ``param`` into its JSON-safe form."""
    return _converter_for(parse_type(param.type), param.components)


def _converter_for(t: Any, components: tuple[Param, ...] | None) -> Convert:
    if t.arrlist:
        inner = _converter_for(t.item_type, components)
        return lambda seq: [inner(x) for x in seq]
    if isinstance(t, TupleType):
        comps = components or ()
        convs = [_converter_for(ct, comps[i].components if i < len(comps) else None)
                 for i, ct in enumerate(t.components)]
        names = [c.name for c in comps]
        if len(names) == len(convs) and all(names):
            return lambda tup: {n: c(x) for n, c, x in zip(names, convs, tup, strict=True)}
        return lambda tup: [c(x) for c, x in zip(convs, tup, strict=True)]
    assert isinstance(t, BasicType)
    if t.base in ("uint", "int"):
        return _to_int_str
    if t.base == "address":
        return _to_addr
    if t.base == "bytes":
        return _to_hex
    if t.base in ("bool", "string"):
        return _identity
    if t.base in ("fixed", "ufixed"):
        return _to_int_str  # Decimal → its exact decimal string
    raise DecodeError(f"unsupported ABI type {t!r}")


# --- address paths: where the address-typed values are ----------------------------------------

#: yields the paths of the address values inside one decoded (JSON-safe) value at ``prefix``
AddressWalk = Callable[[Any, str], Iterable[str]]


def _address_walk(t: Any, components: tuple[Param, ...] | None) -> AddressWalk | None:
    """A walker over the JSON-safe value of type ``t``, or None when ``t`` holds no address."""
    if t.arrlist:
        inner = _address_walk(t.item_type, components)
        if inner is None:
            return None
        walk_item = inner

        def walk_array(seq: Any, prefix: str) -> Iterable[str]:
            for i, item in enumerate(seq):
                yield from walk_item(item, f"{prefix}.{i}")

        return walk_array
    if isinstance(t, TupleType):
        comps = components or ()
        names = [c.name for c in comps]
        # keys as the converter makes them: component names, or positions when unnamed
        named = len(names) == len(t.components) and all(names)
        parts: list[tuple[str | int, AddressWalk]] = []
        for i, ct in enumerate(t.components):
            walk = _address_walk(ct, comps[i].components if i < len(comps) else None)
            if walk is not None:
                parts.append((names[i] if named else i, walk))
        if not parts:
            return None

        def walk_tuple(value: Any, prefix: str) -> Iterable[str]:
            for key, walk in parts:
                yield from walk(value[key], f"{prefix}.{key}")

        return walk_tuple
    if isinstance(t, BasicType) and t.base == "address":
        return lambda _value, prefix: (prefix,)
    return None


def address_walk(param: Param) -> AddressWalk | None:
    """Where ``param``'s address-typed values are, or None when it holds none. An indexed
    argument of a dynamic type is only a hash (the topic), never an address."""
    t = parse_type(param.type)
    if param.indexed and (t.arrlist or isinstance(t, TupleType)):
        return None
    return _address_walk(t, param.components)


# --- fast word decoders (hex of one 32-byte word → JSON-safe value) -----------------------------

WordDecoder = Callable[[str], Any]


def word_decoder(type_str: str) -> WordDecoder | None:
    """A strict decoder of one 64-hex-digit word for a static scalar type, else ``None``."""
    t = parse_type(type_str)
    if t.arrlist or isinstance(t, TupleType):
        return None
    assert isinstance(t, BasicType)
    if t.base == "uint":
        bits = int(t.sub)
        limit = 1 << bits

        def dec_uint(w: str) -> str:
            v = int(w, 16)
            if v >= limit:
                raise ValueError(f"value out of range for uint{bits}")
            return str(v)

        return dec_uint
    if t.base == "int":
        bits = int(t.sub)
        lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)

        def dec_int(w: str) -> str:
            v = int(w, 16)
            if v >= 1 << 255:
                v -= 1 << 256
            if not lo <= v < hi:
                raise ValueError(f"value out of range for int{bits}")
            return str(v)

        return dec_int
    if t.base == "address":

        def dec_addr(w: str) -> str:
            if w[:24] != ZERO24:
                raise ValueError("address word with non-zero padding")
            return checksum("0x" + w[24:])

        return dec_addr
    if t.base == "bool":

        def dec_bool(w: str) -> bool:
            v = int(w, 16)
            if v > 1:
                raise ValueError(f"bool word with value {v}")
            return v == 1

        return dec_bool
    if t.base == "bytes" and t.sub is not None:
        n = 2 * int(t.sub)
        pad = "0" * (64 - n)

        def dec_bytes(w: str) -> str:
            if w[n:] != pad:
                raise ValueError("bytesN word with non-zero padding")
            return "0x" + w[:n].lower()

        return dec_bytes
    return None


def _topic_hash(w: str) -> str:
    return "0x" + w.lower()


# --- per-event decoder ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventDecoder:
    """Decodes the logs of one event of one contract (compiled once from the ABI)."""

    contract: str
    event: EventABI
    topic_fields: tuple[tuple[str, int, WordDecoder], ...]  # name, topic index, decoder
    word_fields: tuple[tuple[str, int, WordDecoder], ...] | None  # all-static data fast path
    data_types: tuple[str, ...]
    data_fields: tuple[tuple[str, Convert], ...]
    data_words: int
    #: (arg name, walker) for the arguments holding addresses, in ABI order
    address_fields: tuple[tuple[str, AddressWalk], ...] = ()
    #: the paths when none of them depends on the value (no address array): computed once
    static_paths: tuple[str, ...] | None = ()

    @classmethod
    def compile(cls, contract: str, event: EventABI) -> EventDecoder:
        names = [p.name or f"_{i}" for i, p in enumerate(event.inputs)]
        topic_fields: list[tuple[str, int, WordDecoder]] = []
        data_params: list[tuple[str, Param]] = []
        topic_index = 0 if event.anonymous else 1
        for name, p in zip(names, event.inputs, strict=True):
            if p.indexed:
                dec = word_decoder(p.type)
                topic_fields.append((name, topic_index, dec or _topic_hash))
                topic_index += 1
            else:
                data_params.append((name, p))
        word_decs = [word_decoder(p.type) for _, p in data_params]
        fast: tuple[tuple[str, int, WordDecoder], ...] | None = None
        if all(d is not None for d in word_decs):
            fast = tuple(
                (name, 2 + 64 * i, d)
                for i, ((name, _), d) in enumerate(zip(data_params, word_decs, strict=True))
                if d is not None
            )
        address_fields = tuple(
            (name, walk) for name, p in zip(names, event.inputs, strict=True)
            if (walk := address_walk(p)) is not None
        )
        static: tuple[str, ...] | None = None
        if not any(_has_array(p) for p in event.inputs if address_walk(p) is not None):
            static = tuple(path for name, walk in address_fields for path in walk(_NO_VALUE, name))
        return cls(
            contract=contract, event=event, topic_fields=tuple(topic_fields), word_fields=fast,
            data_types=tuple(p.type for _, p in data_params),
            data_fields=tuple((name, converter(p)) for name, p in data_params),
            data_words=len(data_params), address_fields=address_fields, static_paths=static,
        )

    def address_paths(self, args: Mapping[str, Any]) -> tuple[str, ...]:
        """The paths of the address-typed values in ``args`` (as :meth:`args` returned it)."""
        if self.static_paths is not None:
            return self.static_paths
        return tuple(path for name, walk in self.address_fields for path in walk(args[name], name))

    def args(self, topics: Sequence[str], data: str) -> dict[str, Any]:
        """Decode one log's arguments; raises ``ValueError``/``DecodingError`` on bad input."""
        out: dict[str, Any] = {}
        for name, idx, dec in self.topic_fields:
            t = topics[idx]
            if len(t) != 66:
                raise ValueError(f"topic {idx} is not 32 bytes")
            out[name] = dec(t[2:])
        if self.word_fields is not None:
            if len(data) < 2 + 64 * self.data_words:
                raise ValueError(
                    f"data has {(len(data) - 2) // 2} bytes, expected {32 * self.data_words}"
                )
            for name, off, dec in self.word_fields:
                out[name] = dec(data[off:off + 64])
            return out
        values = abi_decode(self.data_types, bytes.fromhex(data[2:]))
        for (name, conv), v in zip(self.data_fields, values, strict=True):
            out[name] = conv(v)
        return out


class _NoValue(dict[Any, Any]):
    """Stands in for a tuple value when computing paths that do not depend on values."""

    def __missing__(self, key: Any) -> _NoValue:
        return self


_NO_VALUE = _NoValue()


def _has_array(param: Param) -> bool:
    """True if ``param``'s type has an array anywhere (its address paths depend on lengths)."""
    if "[" in param.type:
        return True
    return any(_has_array(c) for c in param.components or ())


# --- the log decoder for a set of contracts ---------------------------------------------------


Filters = Mapping[str, Mapping[str, frozenset[Any]]]  # event → arg → allowed JSON-safe values


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One watched contract: which events to decode and which argument values to keep."""

    name: str
    address: str
    abi: ContractABI
    events: frozenset[str] | None = None  # None: every event of the ABI
    filters: Filters = field(default_factory=dict)


@dataclass(slots=True)
class DecodeStats:
    decoded: int = 0
    filtered: int = 0
    unknown: int = 0
    undecodable: int = 0


def _hex_int(v: str | int) -> int:
    return v if isinstance(v, int) else int(v, 16)


#: one event of a template: (topic0, topic count, event name, decoder or None if not selected)
_TemplateEvent = tuple[str, int, str, "EventDecoder | None"]


class LogDecoder:
    """Turns raw logs of the watched contracts into ``EventRecord``s (status ``pending``).

    ``templates`` (factory templates, ``watcher.factory``): specs whose address is unused;
    ``add_child(template, address)`` decodes that address's logs with the template's events
    and filters from then on, ``remove_child`` stops it (an un-discovered child)."""

    def __init__(self, chain_id: int, contracts: Iterable[ContractSpec],
                 templates: Iterable[ContractSpec] = ()) -> None:
        self.chain_id = chain_id
        self.stats = DecodeStats()
        self._decoders: dict[tuple[str, str, int], EventDecoder | None] = {}
        self._filters: dict[tuple[str, str], Mapping[str, frozenset[Any]]] = {}
        self._names: dict[str, str] = {}
        self._checksummed: dict[str, str] = {}
        self._all_events = False
        for spec in contracts:
            self._all_events |= spec.events is None
            addr = spec.address.lower()
            self._names[addr] = spec.name
            self._checksummed[addr] = checksum(spec.address)
            for ev in spec.abi.events:
                if ev.anonymous:
                    continue  # no topic0 to recognise it by
                wanted = spec.events is None or ev.name in spec.events
                key = (addr, ev.topic0, ev.topic_count)
                self._decoders[key] = EventDecoder.compile(spec.name, ev) if wanted else None
                if ev.name in spec.filters:
                    self._filters[(addr, ev.name)] = spec.filters[ev.name]
        self._static = frozenset(self._names)
        self._templates: dict[str, tuple[list[_TemplateEvent], Filters]] = {}
        for spec in templates:
            self._all_events |= spec.events is None
            compiled: list[_TemplateEvent] = []
            for ev in spec.abi.events:
                if ev.anonymous:
                    continue
                wanted = spec.events is None or ev.name in spec.events
                compiled.append((ev.topic0, ev.topic_count, ev.name,
                                 EventDecoder.compile(spec.name, ev) if wanted else None))
            self._templates[spec.name] = (compiled, spec.filters)

    @property
    def addresses(self) -> list[str]:
        return [self._checksummed[a] for a in self._names]

    def add_child(self, template: str, address: str) -> None:
        """Decode ``address``'s logs as ``template``'s (a static contract there wins)."""
        addr = address.lower()
        if addr in self._static:
            return
        compiled, filters = self._templates[template]
        self._names[addr] = template
        self._checksummed[addr] = checksum(address)
        for topic0, count, name, dec in compiled:
            self._decoders[(addr, topic0, count)] = dec
            if name in filters:
                self._filters[(addr, name)] = filters[name]

    def remove_child(self, address: str) -> None:
        """Stop decoding the child ``address`` (its creation block was orphaned)."""
        addr = address.lower()
        if addr in self._static or addr not in self._names:
            return
        template = self._names.pop(addr)
        del self._checksummed[addr]
        compiled, _ = self._templates[template]
        for topic0, count, name, _dec in compiled:
            self._decoders.pop((addr, topic0, count), None)
            self._filters.pop((addr, name), None)

    def template_topic0s(self, template: str) -> list[str]:
        """The topic0s of ``template``'s selected events (a topic-only ``eth_getLogs``)."""
        compiled, _ = self._templates[template]
        return sorted({topic0 for topic0, _, _, dec in compiled if dec is not None})

    def topic0s(self) -> list[str]:
        """Every topic0 that is decoded (for the ``topics`` filter of ``eth_getLogs``),
        templates' included."""
        found = {k[1] for k, d in self._decoders.items() if d is not None}
        for name in self._templates:
            found.update(self.template_topic0s(name))
        return sorted(found)

    def topics_filter(self) -> list[list[str]] | None:
        """``eth_getLogs`` ``topics`` when every contract selects its events, else None.

        One filter covers all addresses, so it can only narrow when no contract wants "all"
        (which is also what lets unknown events be counted)."""
        if self._all_events:
            return None
        return [self.topic0s()]

    def decode(self, log: RawLog, timestamp: int | None = None) -> EventRecord | None:
        """The record of ``log``, or ``None`` when its event is not selected or filtered out.

        Raises ``DecodeError`` (with tx hash and log index) for an unknown or malformed log.
        ``timestamp`` is needed when the node's logs carry no ``blockTimestamp``.
        """
        addr = log["address"].lower()
        topics = log.get("topics") or []
        where = f"tx {log.get('transactionHash')} log index {_hex_int(log.get('logIndex', '0x0'))}"
        if not topics:
            raise DecodeError(f"log without topics from {addr} ({where})")
        key = (addr, topics[0].lower(), len(topics))
        if key not in self._decoders:
            raise DecodeError(
                f"unknown event topic0 {topics[0]} with {len(topics)} topics from "
                f"{self._names.get(addr, addr)} ({where})"
            )
        dec = self._decoders[key]
        if dec is None:
            return None
        try:
            args = dec.args(topics, log.get("data") or "0x")
        except (ValueError, DecodingError, IndexError, TypeError) as exc:
            raise DecodeError(
                f"cannot decode {dec.contract}.{dec.event.name} ({where}): {exc}"
            ) from exc
        flt = self._filters.get((addr, dec.event.name))
        if flt and not all(args.get(a) in allowed for a, allowed in flt.items()):
            return None
        if timestamp is None:
            raw_ts = log.get("blockTimestamp")
            if raw_ts is None:
                raise DecodeError(f"no block timestamp for {where}")
            timestamp = int(raw_ts, 16)
        return EventRecord(
            chain_id=self.chain_id, contract=dec.contract, address=self._checksummed[addr],
            event=dec.event.name, args=args, address_paths=dec.address_paths(args),
            block_number=int(log["blockNumber"], 16),
            block_hash=log["blockHash"].lower(), block_timestamp=timestamp,
            tx_hash=log["transactionHash"].lower(), log_index=int(log["logIndex"], 16),
        )

    def decode_many(
        self, logs: Iterable[RawLog], timestamps: Mapping[str, int] | None = None
    ) -> list[EventRecord]:
        """Decode ``logs`` in order; bad or unknown logs are counted, logged and skipped."""
        out: list[EventRecord] = []
        stats = self.stats
        for log in logs:
            try:
                ts = timestamps.get(log["blockHash"].lower()) if timestamps else None
                rec = self.decode(log, ts)
            except DecodeError as exc:
                if str(exc).startswith("unknown"):
                    stats.unknown += 1
                else:
                    stats.undecodable += 1
                logger.warning("skipped log: %s", exc)
                continue
            if rec is None:
                stats.filtered += 1
            else:
                stats.decoded += 1
                out.append(rec)
        return out


def normalize_filter_value(type_str: str, value: Any) -> Any:
    """A config filter value in the JSON-safe form decoded args have (for comparison)."""
    t = parse_type(type_str)
    if isinstance(t, BasicType) and not t.arrlist:
        if t.base in ("uint", "int"):
            return str(int(value, 0) if isinstance(value, str) else int(value))
        if t.base == "address":
            return checksum(str(value))
        if t.base == "bytes":
            return str(value).lower()
    return value
