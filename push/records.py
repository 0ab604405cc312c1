"""The event record seen from the push side: topics and stored messages (message ids are
``watcher.record.message_id``, the seam's one definition).

Pure: takes the watcher's JSON-safe dicts (docs/seams.md §1) and returns values. Never awaits,
never imports a driver.

Topics (docs/seams.md §3):

* ``contract:<Contract>`` — every ``kind: "event"`` record of that contract, all statuses;
* ``state:<Contract>`` — every ``kind: "state"`` record of that contract;
* ``user:<0xChecksummed>`` — event records with an address-typed argument equal to that wallet.

Records carry no ABI types, so an *address-typed argument* is recognised by its encoding: the seam
encodes ``address`` as an EIP-55 checksummed string and ``bytes``/``bytes20`` as lower-case hex.
A ``0x`` + 40 hex digits value is therefore an address unless it is all lower-case with at least
one letter (a ``bytes20``). An EIP-55 address whose letters all come out lower-case has
probability 2^-k for k letters; such an address (and an all-digits one) is still recognised
whenever it has no letters, and is otherwise treated as bytes — a documented, negligible miss.
Arguments are walked recursively (arrays, tuples), so addresses inside structs count too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from push.errors import InvalidRecord

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_STATUSES = frozenset({"pending", "confirmed", "removed"})
_KINDS = frozenset({"event", "state"})

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
    contract = record.get("contract")
    if not isinstance(contract, str) or not contract:
        raise InvalidRecord(f"record {rid}: contract must be a non-empty string, got {contract!r}")
    if not isinstance(record.get("args", {}), Mapping):
        raise InvalidRecord(f"record {rid}: args must be an object, got {record.get('args')!r}")


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


def topics_of(record: Mapping[str, Any]) -> list[str]:
    """The topics a record is stored and delivered under, in a stable order."""
    validate(record)
    contract = record["contract"]
    if record["kind"] == "state":
        return [f"state:{contract}"]
    return [f"contract:{contract}"] + [f"user:{a}" for a in addresses(record.get("args", {}))]
