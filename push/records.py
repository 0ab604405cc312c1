"""The event record seen from the push side: topics and stored messages (message ids are
``watcher.record.message_id``, the seam's one definition).

Pure: takes the watcher's JSON-safe dicts (docs/seams.md §1) and returns values. Never awaits,
never imports a driver.

Topics (docs/seams.md §3):

* ``contract:<Contract>`` — every ``kind: "event"`` record of that contract, all statuses;
* ``state:<Contract>`` — every ``kind: "state"`` record of that contract;
* ``user:<0xChecksummed>`` — event records with an address-typed argument equal to that wallet;
* ``tx:<0x + 64 lower-case hex>`` — the ``kind: "tx"`` records of that transaction (its
  lifecycle, docs/seams.md §1 *Transaction records*).

Which arguments are addresses comes from the ABI: the watcher's decoder puts the paths of the
``address``-typed values in ``address_paths`` (docs/seams.md §1), and only those route to
``user:`` topics. A ``string`` (or ``bytes20``) argument that happens to look like an address
routes nowhere, so nobody can push text into a stranger's ``user:`` topic by emitting it, and
arbitrary strings cannot create topics.

Records stored before the field existed have no ``address_paths``; for those only, an address is
recognised by its encoding (:func:`is_address`, the old heuristic): the seam encodes ``address``
as an EIP-55 checksummed string and ``bytes``/``bytes20`` as lower-case hex, so a ``0x`` + 40 hex
digits value counts unless it is all lower-case with at least one letter.

:func:`normalise_topic` gives a topic its canonical spelling (``user:`` + EIP-55): clients,
MetaMask among them, often give addresses in lower case, and a subscription must be to the topic
that records are routed to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_utils.address import to_checksum_address

from chainpush.push.errors import InvalidRecord

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_STATUSES = frozenset({"pending", "confirmed", "removed"})
_KINDS = frozenset({"event", "state", "app", "tx"})
#: the topics an app record (``kind: "app"``, published by a backend) may go to
APP_TOPIC_PREFIXES = ("app:", "inbox:")

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One record as stored under one topic: what a push node delivers.

    ``epoch``: the topic stream's epoch when the row was written (docs/seams.md §2); offsets are
    comparable only within one epoch. None for rows stored before epochs existed.
    """

    topic: str
    offset: int
    msg_id: str
    record: Mapping[str, Any]
    epoch: str | None = None


def validate(record: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidRecord` naming the field if ``record`` lacks what collect needs."""
    rid = record.get("id")
    if not isinstance(rid, str) or not rid:
        raise InvalidRecord(f"record id must be a non-empty string, got {rid!r}")
    for key, allowed in (("kind", _KINDS), ("status", _STATUSES)):
        if record.get(key) not in allowed:
            raise InvalidRecord(
                f"record {rid}: {key} must be one of {sorted(allowed)}, got {record.get(key)!r}"
            )
    if record.get("kind") == "app":
        _validate_app(rid, record)
        return
    if record.get("kind") == "tx":
        tx_hash = record.get("tx_hash")
        if not isinstance(tx_hash, str) or not is_tx_topic_name(tx_hash) or (
                tx_hash != tx_hash.lower()):
            raise InvalidRecord(f"record {rid}: a tx record's tx_hash must be 0x + 64 lower-case "
                                f"hex digits, got {tx_hash!r:.80}")
        return
    contract = record.get("contract")
    if not isinstance(contract, str) or not contract:
        raise InvalidRecord(f"record {rid}: contract must be a non-empty string, got {contract!r}")
    if not isinstance(record.get("args", {}), Mapping):
        raise InvalidRecord(f"record {rid}: args must be an object, got {record.get('args')!r}")
    paths = record.get("address_paths")
    if paths is not None and (
        not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)
    ):
        raise InvalidRecord(f"record {rid}: address_paths must be a list of strings, got "
                            f"{paths!r:.80}")


def _validate_app(rid: str, record: Mapping[str, Any]) -> None:
    """An app record (docs/seams.md §1): one ``app:`` / ``inbox:`` topic, always confirmed."""
    topic = record.get("topic")
    if not isinstance(topic, str) or not topic.startswith(APP_TOPIC_PREFIXES) or not (
            topic.isprintable() and topic.partition(":")[2]):
        raise InvalidRecord(f"record {rid}: an app record's topic must be app:<name> or "
                            f"inbox:<user id>, got {topic!r:.80}")
    if record.get("status") != "confirmed":
        raise InvalidRecord(f"record {rid}: an app record's status must be 'confirmed', got "
                            f"{record.get('status')!r}")
    if not isinstance(record.get("event"), str):
        raise InvalidRecord(f"record {rid}: event must be a string, got {record.get('event')!r}")
    if "data" not in record:
        raise InvalidRecord(f"record {rid}: an app record needs data")


def is_address(value: object) -> bool:
    """True if ``value`` is an address as the seam encodes it (see the module docstring)."""
    if not isinstance(value, str) or _ADDRESS.fullmatch(value) is None:
        return False
    hexpart = value[2:]
    return not (hexpart == hexpart.lower() and any(c.isalpha() for c in hexpart))


def _walk(value: object) -> Iterator[object]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def addresses(args: Mapping[str, Any]) -> list[str]:
    """Distinct address-typed values in ``args`` (nested included), in first-seen order."""
    seen: dict[str, None] = {}
    for value in _walk(args):
        if is_address(value):
            seen.setdefault(str(value), None)
    return list(seen)


checksum = lru_cache(maxsize=1 << 16)(to_checksum_address)


def _at(args: Mapping[str, Any], path: str) -> object:
    """The value at a filter-syntax ``path`` (``order.maker``, ``recipients.2``), or None."""
    value: object = args
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isascii() and part.isdigit() and len(part) < 10:
            index = int(part)
            value = value[index] if index < len(value) else None
        else:
            return None
    return value


def typed_addresses(args: Mapping[str, Any], paths: Sequence[str]) -> list[str]:
    """Distinct EIP-55 addresses at ``paths`` (the record's ``address_paths``), in path order.
    A path that does not lead to a ``0x`` + 40 hex digits string is ignored."""
    seen: dict[str, None] = {}
    for path in paths:
        value = _at(args, path)
        if isinstance(value, str) and _ADDRESS.fullmatch(value):
            seen.setdefault(checksum(value), None)
    return list(seen)


def topics_of(record: Mapping[str, Any]) -> list[str]:
    """The topics a record is stored and delivered under, in a stable order."""
    validate(record)
    if record["kind"] == "app":
        return [record["topic"]]
    if record["kind"] == "tx":
        return [f"tx:{record['tx_hash']}"]
    contract = record["contract"]
    if record["kind"] == "state":
        return [f"state:{contract}"]
    args = record.get("args", {})
    paths = record.get("address_paths")
    wallets = addresses(args) if paths is None else typed_addresses(args, paths)
    return [f"contract:{contract}"] + [f"user:{a}" for a in wallets]


def is_user_topic_name(name: str) -> bool:
    """True if ``name`` (after ``user:``) is an address: ``0x`` + 40 hex digits, any case."""
    return _ADDRESS.fullmatch(name) is not None


def is_tx_topic_name(name: str) -> bool:
    """True if ``name`` (after ``tx:``) is a transaction hash: ``0x`` + 64 hex digits, any case."""
    return _TX_HASH.fullmatch(name) is not None


def normalise_topic(topic: str) -> str:
    """The canonical spelling of ``topic``: ``user:<address>`` in EIP-55 whatever the case it
    came in (``user:0xab84…`` → ``user:0xAb84…``), ``tx:<hash>`` in lower case (``tx:0xAB…`` →
    ``tx:0xab…``, the topic tx records go to); any other topic unchanged.

    Case is not checked against the checksum: addresses compare case-insensitively (as the
    token's ``wallets`` claim does), and a subscription must name the topic records go to."""
    kind, sep, name = topic.partition(":")
    if kind == "user" and sep and is_user_topic_name(name):
        return f"user:{checksum(name)}"
    if kind == "tx" and sep and is_tx_topic_name(name):
        return f"tx:{name.lower()}"
    return topic
