"""The records the watcher hands to collect (``docs/seams.md`` §1), as frozen dataclasses.

``EventRecord`` is one decoded log in one status; ``StateRecord`` is one observed value of a view
function. ``to_dict()`` gives the JSON-safe ``RecordDict`` that crosses the seam; ``from_dict()``
reads it back (the watcher keeps unconfirmed records in its checkpoint to retract them after a
restart). A record's *message id* is ``id + "/" + status`` (incarnation 0) or ``id + "/" + status +
"/" + incarnation`` (a block that came back after a reorg, ``docs/seams.md`` §1): each status
transition of each incarnation of one event is stored and delivered exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, NotRequired, TypedDict, cast

Status = Literal["pending", "confirmed", "removed"]
Kind = Literal["event", "state", "tx"]
#: what a tx record says happened (docs/seams.md §1 *Transaction records*)
TxEvent = Literal["pending", "mined", "replaced", "dropped"]
STATUSES: tuple[Status, ...] = ("pending", "confirmed", "removed")


class TokenDict(TypedDict):
    """A wallet-activity record's token (docs/seams.md §1): read once per token."""

    standard: str
    symbol: str | None
    decimals: int | None


class RecordDict(TypedDict):
    """The JSON-safe record of ``docs/seams.md`` §1."""

    kind: Kind
    id: str
    chain_id: int
    contract: str
    address: str
    event: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    block_timestamp: int
    tx_hash: str | None
    log_index: int
    status: Status
    #: times the block was orphaned before this emission (docs/seams.md §1); absent: 0
    incarnation: NotRequired[int]
    #: paths of the address-typed args (docs/seams.md §1); absent on records made before it
    address_paths: NotRequired[list[str]]
    #: wallet activity only (``[watch] wallet_activity``, docs/seams.md §1)
    token: NotRequired[TokenDict]


def event_id(chain_id: int, block_hash: str, log_index: int) -> str:
    """Stable id of a log: ``<chain id>:<block hash>:<log index>``."""
    return f"{chain_id}:{block_hash}:{log_index}"


def state_key(contract: str, function: str, inputs: list[Any]) -> str:
    """``<Contract>.<fn>(<args>)`` with the inputs as compact JSON (``CallDemo.get()``)."""
    rendered = ",".join(json.dumps(i, separators=(",", ":"), sort_keys=True) for i in inputs)
    return f"{contract}.{function}({rendered})"


def message_id(record: Mapping[str, Any]) -> str:
    """The key collect stores one message under: ``id/status`` for incarnation 0 (and for a
    record without the field), ``id/status/n`` for incarnation n > 0 (``docs/seams.md`` §1)."""
    n = int(record.get("incarnation") or 0)
    base = f"{record['id']}/{record['status']}"
    return base if n == 0 else f"{base}/{n}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """One decoded log of a watched contract, in one status."""

    chain_id: int
    contract: str
    address: str
    event: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    block_timestamp: int
    tx_hash: str
    log_index: int
    status: Status = "pending"
    #: how many times this block was orphaned before this emission (``docs/seams.md`` §1)
    incarnation: int = 0
    #: paths (filter syntax) of the ``address``-typed args, from the ABI; ``None``: not known
    #: (a record restored from a checkpoint written before the field existed)
    address_paths: tuple[str, ...] | None = None
    #: wallet activity (``watcher.wallets``): the token's standard, symbol and decimals; its id
    #: then ends with ``:<standard>`` (a log of a token later added to ``[[contracts]]`` gets
    #: a record of that contract too, under the plain id: never taken for a duplicate)
    token: TokenDict | None = None

    @property
    def id(self) -> str:
        base = event_id(self.chain_id, self.block_hash, self.log_index)
        return base if self.token is None else f"{base}:{self.token['standard']}"

    @property
    def message_id(self) -> str:
        return message_id({"id": self.id, "status": self.status,
                           "incarnation": self.incarnation})

    def with_status(self, status: Status) -> EventRecord:
        return replace(self, status=status)

    def with_incarnation(self, incarnation: int) -> EventRecord:
        return replace(self, incarnation=incarnation)

    def to_dict(self) -> RecordDict:
        out: RecordDict = {
            "kind": "event", "id": self.id, "chain_id": self.chain_id, "contract": self.contract,
            "address": self.address, "event": self.event, "args": self.args,
            "block_number": self.block_number, "block_hash": self.block_hash,
            "block_timestamp": self.block_timestamp, "tx_hash": self.tx_hash,
            "log_index": self.log_index, "status": self.status,
            "incarnation": self.incarnation,
        }
        if self.address_paths is not None:
            out["address_paths"] = list(self.address_paths)
        if self.token is not None:
            out["token"] = {"standard": self.token["standard"], "symbol": self.token["symbol"],
                            "decimals": self.token["decimals"]}
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class StateRecord:
    """The value a view function returned at one block (emitted when it changed)."""

    chain_id: int
    contract: str
    address: str
    function: str
    inputs: list[Any]
    value: Any
    block_number: int
    block_hash: str
    block_timestamp: int
    status: Status = "pending"
    #: how many times this block was orphaned before this emission (``docs/seams.md`` §1)
    incarnation: int = 0

    @property
    def key(self) -> str:
        return state_key(self.contract, self.function, self.inputs)

    @property
    def id(self) -> str:
        return f"{self.chain_id}:{self.block_hash}:state:{self.key}"

    @property
    def message_id(self) -> str:
        return message_id({"id": self.id, "status": self.status,
                           "incarnation": self.incarnation})

    def with_status(self, status: Status) -> StateRecord:
        return replace(self, status=status)

    def with_incarnation(self, incarnation: int) -> StateRecord:
        return replace(self, incarnation=incarnation)

    def to_dict(self) -> RecordDict:
        return {
            "kind": "state", "id": self.id, "chain_id": self.chain_id, "contract": self.contract,
            "address": self.address, "event": self.function,
            "args": {"inputs": self.inputs, "value": self.value},
            "block_number": self.block_number, "block_hash": self.block_hash,
            "block_timestamp": self.block_timestamp, "tx_hash": None, "log_index": -1,
            "status": self.status, "incarnation": self.incarnation, "address_paths": [],
        }


def tx_stage(event: str, status: str) -> str:
    """The lifecycle word of a tx record (docs/seams.md §1): ``pending`` (in the node's pool),
    ``mined``, ``confirmed``, ``removed`` (its block was orphaned), ``replaced``, ``dropped``."""
    if event == "mined":
        return {"pending": "mined"}.get(status, status)
    return event


@dataclass(frozen=True, slots=True, kw_only=True)
class TxRecord:
    """One transaction's lifecycle step (``tx:<hash>``, docs/seams.md §1 *Transaction records*).

    ``event = "mined"``: a record *of its block* (``block_*`` set, id ``<chain>:<block
    hash>:tx:<hash>``): the ledger emits it ``pending`` (just mined), ``confirmed`` when the
    block is final, ``removed`` when a reorg orphans it, with incarnations like any record of a
    block. ``pending`` (in the pool), ``replaced`` and ``dropped`` have no block (id
    ``<chain>:tx:<hash>``): ``pending`` status ``pending`` (incarnation n: the n-th time it was
    seen back in the pool), the final two status ``confirmed``.
    """

    chain_id: int
    tx_hash: str
    event: TxEvent
    status: Status = "pending"
    incarnation: int = 0
    sender: str | None = None
    to: str | None = None
    nonce: int | None = None
    block_number: int | None = None
    block_hash: str | None = None
    block_timestamp: int | None = None
    #: mined: "success" or "reverted" (the receipt's status)
    result: str | None = None
    gas_used: str | None = None
    effective_gas_price: str | None = None
    #: mined: the decoded events of watched contracts in its receipt
    events: tuple[dict[str, Any], ...] = ()
    #: replaced: the hash of the transaction that took its nonce
    replaced_by: str | None = None

    #: the ledger asks every record for its contract's K: a tx follows K = 0 (``confirmed``
    #: at finality), and no ``[[contracts]]`` name is empty
    contract = ""

    @property
    def id(self) -> str:
        return tx_record_id(self.chain_id, self.tx_hash, self.block_hash)

    @property
    def message_id(self) -> str:
        return message_id({"id": self.id, "status": self.status,
                           "incarnation": self.incarnation})

    @property
    def stage(self) -> str:
        return tx_stage(self.event, self.status)

    def with_status(self, status: Status) -> TxRecord:
        return replace(self, status=status)

    def with_incarnation(self, incarnation: int) -> TxRecord:
        return replace(self, incarnation=incarnation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "tx", "id": self.id, "chain_id": self.chain_id, "tx_hash": self.tx_hash,
            "event": self.event, "stage": self.stage, "status": self.status,
            "incarnation": self.incarnation, "from": self.sender, "to": self.to,
            "nonce": self.nonce, "block_number": self.block_number,
            "block_hash": self.block_hash, "block_timestamp": self.block_timestamp,
            "result": self.result, "gas_used": self.gas_used,
            "effective_gas_price": self.effective_gas_price, "events": list(self.events),
            "replaced_by": self.replaced_by, "address_paths": [],
        }


def tx_record_id(chain_id: int, tx_hash: str, block_hash: str | None = None) -> str:
    """``<chain>:<block hash>:tx:<hash>`` (mined) or ``<chain>:tx:<hash>`` (no block)."""
    if block_hash is None:
        return f"{chain_id}:tx:{tx_hash}"
    return f"{chain_id}:{block_hash}:tx:{tx_hash}"


Record = EventRecord | StateRecord | TxRecord


def record_from_dict(data: RecordDict | dict[str, Any]) -> Record:
    """Inverse of ``to_dict()`` (used to restore records kept in a checkpoint)."""
    d = cast(dict[str, Any], data)
    status = d["status"]
    if status not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {status!r} ({d.get('id')})")
    if d["kind"] == "state":
        return StateRecord(
            chain_id=d["chain_id"], contract=d["contract"], address=d["address"],
            function=d["event"], inputs=list(d["args"]["inputs"]), value=d["args"]["value"],
            block_number=d["block_number"], block_hash=d["block_hash"],
            block_timestamp=d["block_timestamp"], status=status,
            incarnation=int(d.get("incarnation") or 0),
        )
    if d["kind"] == "tx":
        return TxRecord(
            chain_id=d["chain_id"], tx_hash=d["tx_hash"], event=d["event"], status=status,
            incarnation=int(d.get("incarnation") or 0), sender=d.get("from"), to=d.get("to"),
            nonce=d.get("nonce"), block_number=d.get("block_number"),
            block_hash=d.get("block_hash"), block_timestamp=d.get("block_timestamp"),
            result=d.get("result"), gas_used=d.get("gas_used"),
            effective_gas_price=d.get("effective_gas_price"),
            events=tuple(d.get("events") or ()), replaced_by=d.get("replaced_by"),
        )
    if d["kind"] != "event":
        raise ValueError(f"record kind must be 'event', 'state' or 'tx', got {d['kind']!r}")
    return EventRecord(
        chain_id=d["chain_id"], contract=d["contract"], address=d["address"], event=d["event"],
        args=dict(d["args"]), block_number=d["block_number"], block_hash=d["block_hash"],
        block_timestamp=d["block_timestamp"], tx_hash=d["tx_hash"], log_index=d["log_index"],
        status=status, incarnation=int(d.get("incarnation") or 0),
        address_paths=tuple(d["address_paths"]) if d.get("address_paths") is not None else None,
        token=cast(TokenDict, dict(d["token"])) if d.get("token") is not None else None,
    )
