"""Transaction lifecycles (``tx:<hash>``): which hashes to follow and what to emit for them. Pure.

Theory of operation
-------------------
A client that sent a transaction subscribes to ``tx:<hash>``; the push nodes' registry says so
(``watcher.interest``, docs/seams.md §4), and the stepper hands the answer to
:meth:`TxTracker.interest`. Only those hashes are followed, at most ``max_tracked`` of them.

Each step the stepper asks the node, in one JSON-RPC batch, ``eth_getTransactionByHash`` and
``eth_getTransactionReceipt`` of every followed hash that is not *held* (see below), and feeds
the answers to :meth:`TxTracker.seen`, which says what each one means (:class:`Verdict`):

* a receipt whose block the stepper's cursor holds as canonical → ``mined``: the stepper makes a
  record *of that block* (``watcher.record.TxRecord``, event ``mined``) and gives it to its
  ledger (``Ledger.adopt``). From then on the hash is *held*: the ledger's block machinery emits
  ``confirmed`` at finality and ``removed`` when a reorg orphans the block (with incarnations
  when a block comes back), exactly as for an event record, and the tracker only watches what is
  emitted (:meth:`TxTracker.emitted`). A receipt of a block deeper than the cursor's window is
  final at once (``confirmed`` directly); one of a block the cursor has not reached, or of a
  block that is not the one it holds at that height (a reorg the next live step will see), waits;
* a transaction without a block → ``pending`` (in the node's pool), emitted once per stay in the
  pool (a transaction back in the pool after a reorg gets ``pending`` again, incarnation n);
* neither (the node forgot it): once the sender's nonce at ``latest`` is past the transaction's
  nonce, its nonce was used by another transaction → ``replaced`` (``replaced_by``: the hash
  that used it, found in the held blocks) or ``dropped`` (not found). Both are final. A node
  that forgot a transaction whose nonce is still free says nothing yet: it may be sent again.

A hash is followed until it is final (``confirmed``, ``replaced``, ``dropped``) or nobody is
subscribed any more. Final hashes still subscribed to are remembered (``done``, bounded the
same way) so that they are not followed again.

The tracker's state is part of the watcher's checkpoint (:meth:`to_doc`): a restart neither
loses a transition nor emits one twice, and every record's id and message id are functions of
the chain (block hash, pool stays), so a replay is deduplicated by collect.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eth_utils.address import to_checksum_address

from chainpush.watcher.record import Record, TxRecord

logger = logging.getLogger(__name__)

#: what ``[watch] max_tracked_txs`` defaults to
DEFAULT_MAX_TRACKED = 10_000
TX_HASH = re.compile(r"0x[0-9a-f]{64}")

RpcCall = tuple[str, list[Any]]


def is_tx_hash(text: str) -> bool:
    """``0x`` + 64 lower-case hex digits: the spelling of a ``tx:`` topic."""
    return TX_HASH.fullmatch(text) is not None


@dataclass(slots=True)
class _Tracked:
    sender: str | None = None
    nonce: int | None = None
    to: str | None = None
    #: pool ``pending`` records emitted so far (the next one's incarnation)
    pool: int = 0
    #: the last thing emitted is a pool ``pending`` not superseded since
    in_pool: bool = False
    #: the block hash of the ``mined`` record the ledger holds (None: not held)
    held: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one hash's answers mean. ``what``:

    * ``mined``: make the mined record of block ``block_number`` / ``block_hash`` (``tx`` and
      ``receipt`` are the node's answers); ``final``: the block is below the cursor's window;
    * ``pending``: ``record`` (a pool ``pending``) is to be emitted;
    * ``gone``: the node knows neither: check the sender's nonce (:meth:`TxTracker.nonce_used`);
    * ``wait``: nothing to do this step.
    """

    tx_hash: str
    what: Literal["mined", "pending", "gone", "wait"]
    tx: Mapping[str, Any] | None = None
    receipt: Mapping[str, Any] | None = None
    block_number: int = -1
    block_hash: str = ""
    final: bool = False
    record: TxRecord | None = None


class TxTracker:
    """The followed hashes of one watcher (see the module docstring)."""

    def __init__(self, chain_id: int, *, max_tracked: int = DEFAULT_MAX_TRACKED) -> None:
        if max_tracked < 1:
            raise ValueError(f"max_tracked_txs must be >= 1, got {max_tracked}")
        self.chain_id = chain_id
        self.max_tracked = max_tracked
        self._tracked: dict[str, _Tracked] = {}
        #: final hashes (in the order they became final) still subscribed to
        self._done: dict[str, None] = {}
        self._warned_full = False

    # --- which hashes ------------------------------------------------------------------------

    def interest(self, suffixes: Iterable[str] | None) -> None:
        """The registry's answer for ``tx:`` (None: unknown now, keep following what we
        follow). Hashes nobody listens to any more are forgotten; new ones followed, at most
        ``max_tracked`` (the rest waits until a place frees, in hash order)."""
        if suffixes is None:
            return
        wanted = {s for s in suffixes if is_tx_hash(s)}
        for h in [h for h in self._tracked if h not in wanted]:
            del self._tracked[h]
        for h in [h for h in self._done if h not in wanted]:
            del self._done[h]
        new = sorted(wanted - self._tracked.keys() - self._done.keys())
        room = self.max_tracked - len(self._tracked)
        if len(new) > room:
            if not self._warned_full:
                logger.warning("%d transactions subscribed to, [watch] max_tracked_txs is %d: "
                               "%d wait for a place", len(self._tracked) + len(new),
                               self.max_tracked, len(new) - max(room, 0))
                self._warned_full = True
            new = new[:max(room, 0)]
        else:
            self._warned_full = False
        for h in new:
            self._tracked[h] = _Tracked()

    @property
    def tracked(self) -> list[str]:
        return sorted(self._tracked)

    def to_poll(self) -> list[str]:
        """Followed hashes whose fate the ledger does not hold: ask the node about these."""
        return sorted(h for h, t in self._tracked.items() if t.held is None)

    @staticmethod
    def calls(hashes: Sequence[str]) -> tuple[RpcCall, ...]:
        """The batch for ``hashes``: transaction, then receipt, per hash."""
        return tuple(call for h in hashes for call in (
            ("eth_getTransactionByHash", [h]), ("eth_getTransactionReceipt", [h])))

    # --- what the node said ------------------------------------------------------------------

    def seen(self, tx_hash: str, tx: Mapping[str, Any] | None,
             receipt: Mapping[str, Any] | None, *, anchor: int, tip: int,
             canonical: Mapping[int, str]) -> Verdict:
        """The node's answers for ``tx_hash``; ``canonical`` maps the cursor's held heights
        (``anchor`` … ``tip``) to their block hashes."""
        t = self._tracked.get(tx_hash)
        if t is None:
            return Verdict(tx_hash, "wait")
        if tx is not None:
            t.sender = _address(tx.get("from")) or t.sender
            t.to = _address(tx.get("to"))
            if tx.get("nonce") is not None:
                t.nonce = int(str(tx["nonce"]), 16)
        if receipt is not None and receipt.get("blockHash"):
            number = int(str(receipt["blockNumber"]), 16)
            block = str(receipt["blockHash"]).lower()
            if number <= anchor:
                return Verdict(tx_hash, "mined", tx, receipt, number, block, final=True)
            if canonical.get(number) == block:
                return Verdict(tx_hash, "mined", tx, receipt, number, block)
            return Verdict(tx_hash, "wait")  # a block the cursor has not reached (or replaced)
        if tx is not None:
            if tx.get("blockHash"):
                return Verdict(tx_hash, "wait")  # mined, its receipt not served yet
            if t.in_pool:
                return Verdict(tx_hash, "wait")
            rec = TxRecord(chain_id=self.chain_id, tx_hash=tx_hash, event="pending",
                           status="pending", incarnation=t.pool, sender=t.sender, to=t.to,
                           nonce=t.nonce)
            return Verdict(tx_hash, "pending", tx, record=rec)
        if t.sender is None or t.nonce is None:
            return Verdict(tx_hash, "wait")  # never seen: maybe not sent yet
        return Verdict(tx_hash, "gone")

    def sender_nonce(self, tx_hash: str) -> tuple[str, int]:
        """The sender and nonce of a ``gone`` hash (known: ``seen`` said ``gone``)."""
        t = self._tracked[tx_hash]
        assert t.sender is not None and t.nonce is not None
        return t.sender, t.nonce

    def nonce_used(self, tx_hash: str, count_at_latest: int) -> bool:
        """True if the sender's transaction count at ``latest`` is past this one's nonce."""
        t = self._tracked.get(tx_hash)
        return t is not None and t.nonce is not None and count_at_latest > t.nonce

    def gone_record(self, tx_hash: str, replaced_by: str | None) -> TxRecord:
        """The final record of a hash whose nonce another transaction used."""
        t = self._tracked[tx_hash]
        return TxRecord(chain_id=self.chain_id, tx_hash=tx_hash,
                        event="replaced" if replaced_by else "dropped", status="confirmed",
                        # above every pool `pending` of this id (docs/seams.md §1 ordering)
                        incarnation=max(0, t.pool - 1), sender=t.sender, to=t.to,
                        nonce=t.nonce, replaced_by=replaced_by)

    def mined_record(self, verdict: Verdict, *, timestamp: int | None,
                     events: Sequence[dict[str, Any]]) -> TxRecord:
        """The ``mined`` record of a ``mined`` verdict (status ``pending``; the caller gives it
        to the ledger, or emits it ``confirmed`` when ``verdict.final``)."""
        t = self._tracked.get(verdict.tx_hash) or _Tracked()
        receipt = verdict.receipt or {}
        status = receipt.get("status")
        return TxRecord(
            chain_id=self.chain_id, tx_hash=verdict.tx_hash, event="mined", status="pending",
            sender=_address(receipt.get("from")) or t.sender,
            to=_address(receipt.get("to")) or t.to,
            nonce=t.nonce, block_number=verdict.block_number, block_hash=verdict.block_hash,
            block_timestamp=timestamp,
            result=None if status is None else (
                "success" if int(str(status), 16) == 1 else "reverted"),
            gas_used=_decimal(receipt.get("gasUsed")),
            effective_gas_price=_decimal(receipt.get("effectiveGasPrice")),
            events=tuple(events),
        )

    # --- what was emitted --------------------------------------------------------------------

    def emitted(self, records: Iterable[Record]) -> None:
        """Every record handed to the sink (the stepper's commit): the tracker follows its own
        records' fates, whoever emitted them (itself, or the ledger's confirm / orphan)."""
        for rec in records:
            if not isinstance(rec, TxRecord):
                continue
            t = self._tracked.get(rec.tx_hash)
            if rec.event == "pending":
                if t is not None:
                    t.pool = max(t.pool, rec.incarnation + 1)
                    t.in_pool = True
                continue
            if rec.status == "confirmed":  # mined and final, replaced or dropped
                if t is not None:
                    del self._tracked[rec.tx_hash]
                    self._finish(rec.tx_hash)
                continue
            if t is None and rec.status == "removed" and rec.tx_hash in self._done:
                # its confirmed block was orphaned after all (a reorg deeper than finality,
                # within the window): follow it again, so that the block it lands in next (the
                # same one back, as a new incarnation, or another) is recorded
                del self._done[rec.tx_hash]
                t = self._tracked[rec.tx_hash] = _Tracked(rec.sender, rec.nonce, rec.to)
            if t is None:
                continue
            if rec.status == "removed":
                if t.held == rec.block_hash:
                    t.held = None
                t.in_pool = False
            else:  # mined, pending
                t.held = rec.block_hash
                t.in_pool = False

    def _finish(self, tx_hash: str) -> None:
        self._done[tx_hash] = None
        while len(self._done) > self.max_tracked:
            del self._done[next(iter(self._done))]

    # --- checkpoint --------------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        return {
            "tracked": [[h, t.sender, t.nonce, t.to, t.pool, t.in_pool, t.held]
                        for h, t in sorted(self._tracked.items())],
            "done": list(self._done),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None, chain_id: int, *,
                 max_tracked: int = DEFAULT_MAX_TRACKED) -> TxTracker:
        tracker = cls(chain_id, max_tracked=max_tracked)
        for h, sender, nonce, to, pool, in_pool, held in (doc or {}).get("tracked") or []:
            tracker._tracked[str(h)] = _Tracked(sender, nonce, to, int(pool), bool(in_pool),
                                                held)
        for h in (doc or {}).get("done") or []:
            tracker._done[str(h)] = None
        return tracker


def _address(value: object) -> str | None:
    """EIP-55, as the seam writes addresses (None for a contract creation's ``to``)."""
    return to_checksum_address(value) if isinstance(value, str) and value else None


def _decimal(value: object) -> str | None:
    return str(int(str(value), 16)) if isinstance(value, str) and value else None
