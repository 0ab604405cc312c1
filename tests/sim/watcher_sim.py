"""Deterministic simulation of the watcher's stepper (in the style of FoundationDB's simulator and
TigerBeetle's VOPR).

One seed = one run, reproducible: ``scripts/simulate.sh --seed S``. A run drives
``watcher.stepper.Stepper`` — the very decisions ``watcher.service.Watcher`` performs — against
a model world, all in one thread with no clock:

* a chain in memory that mines blocks of ``Transfer`` logs of two watched contracts (K = 0 and
  K > 0) and an unwatched one, forks at depth 1 … 2 x ``reorg_window`` (never below what the
  watcher may already take for final: the anchor of any state it proposed, and any head it saw
  minus the window), and sometimes switches back to a branch it left (a flip-flop);
* a node that times out, answers ``null`` for a block it has, lags a block behind its head,
  refuses wide ``eth_getLogs`` ranges, rate-limits, and lies with ``[]`` for a block's logs;
* in a third of the seeds, a factory (``DemoFactory``'s ``PairCreated``) whose children (watched
  as template ``Pair``, K = 0) log ``Sync`` — also in their creation block, before the factory's
  event — at addresses that, as with ``CREATE``, depend on the factory's nonce alone (a fork
  re-creates them), beside an address no factory created; children are fetched by address or,
  in some seeds, by topic only;
* in a quarter of the seeds, wallet activity (``[watch] wallet_activity = ["erc20"]``) for the
  wallet every ``Transfer`` is sent from (and one it may go to), read from a registry that is
  sometimes away (``Interested`` answers None): the unwatched contract's transfers are recorded
  as ``erc20`` (configured contracts' are not, twice), with its ``symbol``/``decimals``;
* a sink that fails before writing or after writing part of a batch, and a checkpoint store
  whose writes fail before or after taking effect;
* crashes at every action boundary (before or after performing it: the result is lost), then
  downtime during which more than ``reorg_window`` blocks may be mined and forks happen.

At the end the faults stop, the chain grows past every confirmation depth and the watcher runs
until it is caught up; then the invariant: the stored stream equals the canonical chain.

* every canonical log of a watched contract (a factory child: from its creation block on, in the
  canonical chain) has a final message (the last one stored for its id,
  which is also the greatest by (incarnation, status rank)) that is ``confirmed`` once it is deep
  enough for its contract, ``pending`` (K = 0) before;
* every id of a block that is not canonical has ``removed`` as its final message;
* a message id is never stored with two different contents;
* wallet activity: every canonical transfer of the unwatched contract has an ``erc20`` record
  whose final message is as above (K = 0), with the token's metadata (where the config never
  changes; otherwise: each ``erc20`` record there is).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chainpush.watcher.abi import find_abi, load_abi
from chainpush.watcher.binding import Bound
from chainpush.watcher.bloom import bloom_mask
from chainpush.watcher.calls import ViewCall
from chainpush.watcher.checkpoint import CheckpointError
from chainpush.watcher.config import WatchConfig
from chainpush.watcher.decode import ContractSpec, checksum
from chainpush.watcher.errors import (
    NodeUnreachable,
    RangeTooLarge,
    RateLimited,
    ReorgTooDeep,
    RPCError,
    WatcherError,
)
from chainpush.watcher.factory import Template
from chainpush.watcher.record import message_id
from chainpush.watcher.sink import SinkError
from chainpush.watcher.stepper import (
    Accept,
    Action,
    Backfilling,
    Call,
    FetchRange,
    Interested,
    Load,
    Prefetch,
    Propose,
    Save,
    Sleep,
    Stepper,
    Subscribe,
    WaitHead,
)

ROOT = Path(__file__).resolve().parents[2]
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
CHAIN_ID = 31337
FAST = "0x" + "aa" * 20  # K = 0
SLOW = "0x" + "bb" * 20  # K > 0
OTHER = "0x" + "cc" * 20  # not watched
FACT = "0x" + "fa" * 20  # a factory (some seeds): PairCreated announces children (K = 0)
GHOST = "0x" + "ee" * 20  # a Pair-shaped contract no factory created: never watched
RANK = {"pending": 0, "confirmed": 1, "removed": 2}
_ABI = load_abi(find_abi(ROOT / "abi", "DemoToken"))
_FACTORY_ABI = load_abi(find_abi(ROOT / "abi", "DemoFactory"))
_PAIR_ABI = load_abi(find_abi(ROOT / "abi", "DemoPair"))
CREATED = _FACTORY_ABI.event("PairCreated").topic0
SYNC = _PAIR_ABI.event("Sync").topic0
SENDER = "0x" + "11" * 20  # every Transfer's `from`: the wallet of wallet-activity seeds
RECIPIENT = "0x" + "05" * 20  # a `to` some transfers have (also a subscribed wallet)
#: what the model token answers to symbol() and decimals() (an ABI string "OTH", and 18)
SYMBOL_ANSWER = "0x" + f"{32:064x}" + f"{3:064x}" + b"OTH".hex().ljust(64, "0")


def child_address(nonce: int) -> str:
    """The factory's ``nonce``-th child: like ``CREATE``, the address depends on the nonce
    alone, so a fork that creates again re-creates the same address."""
    return f"0x{'dd' * 18}{nonce:04x}"


class SimFailure(AssertionError):
    """The invariant (or a rule of the model) broke; the message names the seed."""


class Crash(Exception):
    """The watcher process died."""


# --- the chain -------------------------------------------------------------------------------

@dataclass(slots=True)
class Block:
    number: int
    hash: str
    parent: str
    logs: list[dict[str, Any]]

    bloom: str = ""

    def header(self) -> dict[str, Any]:
        if not self.bloom:
            self.bloom = _bloom(tuple((lg["address"], tuple(lg["topics"])) for lg in self.logs))
        return {"number": hex(self.number), "hash": self.hash, "parentHash": self.parent,
                "timestamp": hex(1_700_000_000 + 12 * self.number), "logsBloom": self.bloom}


def _copy(log: dict[str, Any]) -> dict[str, Any]:
    """A log as a node sends it: a fresh dict the watcher may keep."""
    return {**log, "topics": list(log["topics"])}


_mask = functools.lru_cache(maxsize=4096)(bloom_mask)


def _bloom(logs: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """``bloom_of(logs)``, with the masks of the few values the model uses cached."""
    bloom = 0
    for address, topics in logs:
        bloom |= _mask(bytes.fromhex(address[2:]))
        for t in topics:
            bloom |= _mask(bytes.fromhex(t[2:]))
    return f"0x{bloom:0512x}"


class Chain:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._n = 0
        genesis = Block(0, self._hash(), "0x" + "00" * 32, [])
        self.blocks: dict[str, Block] = {genesis.hash: genesis}
        self.txs: dict[str, dict[str, Any]] = {}  # tx hash -> its one log
        self._supply: dict[str, int] = {}
        #: seeds with a factory: blocks may create children and carry their Sync logs
        self.factory = False
        self._children: dict[str, tuple[str, ...]] = {}
        self.canon: list[str] = [genesis.hash]
        self.branches: list[list[str]] = []  # canonical chains we left (for flip-flops)
        self.reorgs = 0
        self.flipflops = 0

    def supply(self, block_hash: str) -> int:
        """The model's ``Fast.totalSupply()`` at a block: its ancestry's Fast logs, mod 3 (so
        that it often does not change)."""
        if block_hash not in self._supply:
            b = self.blocks[block_hash]
            below = self.supply(b.parent) if b.number > 0 else 0
            self._supply[block_hash] = below + sum(lg["address"] == FAST for lg in b.logs)
        return self._supply[block_hash] % 3

    def children(self, block_hash: str) -> tuple[str, ...]:
        """The factory's children created in this block's ancestry, itself included."""
        if block_hash not in self._children:
            b = self.blocks[block_hash]
            below = self.children(b.parent) if b.number > 0 else ()
            self._children[block_hash] = below + tuple(
                "0x" + lg["data"][2 + 24:2 + 64] for lg in b.logs
                if lg["address"] == FACT and lg["topics"][0] == CREATED)
        return self._children[block_hash]

    def _factory_logs(self, parent: Block) -> list[tuple[str, list[str], str]]:
        """Logs (address, topics, data) of a factory seed's new block: maybe a PairCreated,
        Syncs of children (also of the one created here, before or after its PairCreated) and
        of an address no factory created."""
        rng = self.rng
        known = list(self.children(parent.hash)) if parent.number > 0 else []
        out: list[tuple[str, list[str], str]] = []
        new = None
        if rng.random() < 0.3:
            new = child_address(len(known))
            pad = "0x" + "00" * 12 + "11" * 20
            out.append((FACT, [CREATED, pad, pad], f"0x{'0' * 24}{new[2:]}{len(known) + 1:064x}"))
        for _ in range(rng.choice((0, 1, 2))):
            pool = known + ([new] if new else []) + [GHOST]
            addr = rng.choice(pool)
            out.insert(rng.randint(0, len(out)), (addr, [SYNC], f"0x{rng.randrange(99):064x}"
                                                                f"{1000:064x}"))
        return out

    def _hash(self) -> str:
        self._n += 1
        return f"0x{self._n:064x}"

    @property
    def head(self) -> int:
        return len(self.canon) - 1

    def at(self, number: int) -> Block | None:
        return self.blocks[self.canon[number]] if 0 <= number < len(self.canon) else None

    def _new_block(self, parent: Block, logs_of: tuple[str, ...] | None = None) -> Block:
        h = self._hash()
        logs: list[dict[str, Any]] = []
        if logs_of is None:
            n = self.rng.choice((0, 0, 1, 1, 2, 3))
            logs_of = tuple(self.rng.choice((FAST, FAST, SLOW, SLOW, OTHER)) for _ in range(n))
        shaped: list[tuple[str, list[str], str]] = []
        for addr in logs_of:
            to = "0x" + "00" * 12 + f"{self.rng.randrange(256):02x}" * 20
            shaped.append((addr, [TRANSFER, "0x" + "00" * 12 + "11" * 20, to],
                           f"0x{self.rng.randrange(10**6):064x}"))
        if self.factory:
            shaped += self._factory_logs(parent)
        for i, (addr, topics, data) in enumerate(shaped):
            logs.append({
                "address": addr, "topics": topics, "data": data,
                "blockNumber": hex(parent.number + 1),
                "blockHash": h, "transactionHash": f"0x{int(h, 16) * 16 + i:064x}",
                "transactionIndex": hex(i), "logIndex": hex(i), "removed": False,
            })
        for lg in logs:
            self.txs[lg["transactionHash"]] = lg
        block = Block(parent.number + 1, h, parent.hash, logs)
        self.blocks[h] = block
        return block

    def mine(self, n: int = 1, logs_of: tuple[str, ...] | None = None) -> None:
        """Mine ``n`` blocks (with logs of ``logs_of``, one per address, else random ones)."""
        for _ in range(n):
            self.canon.append(self._new_block(self.blocks[self.canon[-1]], logs_of).hash)

    def fork(self, base: int, logs_of: tuple[str, ...] | None = None) -> None:
        """Replace every block above ``base`` by new ones (as many, or one more)."""
        old = list(self.canon)
        self.branches.append(old)
        length = len(old) + (self.rng.choice((0, 0, 1)) if logs_of is None else 0)
        self.canon = old[: base + 1]
        while len(self.canon) < length:
            self.canon.append(self._new_block(self.blocks[self.canon[-1]], logs_of).hash)
        self.reorgs += 1

    def switch_to(self, branch: list[str]) -> None:
        """Make ``branch`` (a chain left earlier) canonical again."""
        self.branches.append(list(self.canon))
        self.canon = list(branch)
        self.flipflops += 1

    def flip_back(self, floor: int) -> bool:
        """Switch back to a branch left earlier that shares every block up to ``floor``."""
        for old in reversed(self.branches):
            if len(old) >= len(self.canon) and old[: floor + 1] == self.canon[: floor + 1] \
                    and old != self.canon[: len(old)]:
                self.branches.append(list(self.canon))
                self.canon = list(old)
                self.flipflops += 1
                return True
        return False


# --- the run ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Faults:
    """Per-action probabilities, drawn per seed (zero in the final phase)."""

    crash: float
    node: float
    lie: float
    null_block: float
    lag: float
    rate_limit: float
    sink: float
    checkpoint: float
    max_span: int | None
    receipts: bool = True  # the node has eth_getBlockReceipts

    @classmethod
    def draw(cls, rng: random.Random) -> Faults:
        def p(hi: float) -> float:
            return rng.choice((0.0, rng.uniform(0, hi)))
        return cls(crash=p(0.05), node=p(0.05), lie=p(0.1), null_block=p(0.05), lag=p(0.1),
                   rate_limit=p(0.1), sink=p(0.08), checkpoint=p(0.08),
                   max_span=rng.choice((None, None, 1, 2, 5)), receipts=rng.random() < 0.7)

    @classmethod
    def none(cls) -> Faults:
        return cls(0, 0, 0, 0, 0, 0, 0, 0, None)


@dataclass(slots=True)
class Store:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def put(self, record: dict[str, Any]) -> None:
        mid = message_id(record)
        if mid in self.docs:
            if self.docs[mid] != record:
                self.conflicts.append(f"{mid}: stored {self.docs[mid]} then {record}")
            return
        self.docs[mid] = record
        self.order.append(mid)


class Sim:
    def __init__(self, seed: int, *, lie: bool = True) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.window = w = rng.randint(3, 8)
        self.k = rng.randint(1, w - 1)
        self.watch = WatchConfig(
            reorg_window=w, finality_depth=rng.randint(1, w - 1),
            max_range=rng.choice((1, 3, 10, 100)), live_batch_blocks=rng.choice((1, 2, 5, 100)),
            finality=rng.choice(("depth", "tag")),
        )
        #: the node's `finalized` tag: how far below the head (None: the node has no tag)
        self.finality_lag = rng.choice((None, rng.randint(1, w - 1)))
        #: "Late" (the third address, K = 0) is in the config: added and removed at restarts
        self.late = False
        self.config_changes = rng.random() < 0.3
        self.late_k = rng.choice((0, self.k))
        #: Fast.totalSupply() read at blocks with a Fast Transfer (a state record on change)
        self.state_reads = rng.random() < 0.5
        self.early: list[str] = []  # confirmed before K (checked as they are accepted)
        # drawn apart, so that the runs of seeds without a factory stay what they were
        side = random.Random(seed * 7919 + 13)
        self.factory = side.random() < 0.3
        #: children beyond this many are fetched by topic only (0: always)
        self.max_addresses = side.choice((500, 2, 0))
        #: transaction lifecycles: clients subscribe to tx:<hash> of mined transactions (the
        #: model has no pool: a transaction is in one block, gone when that block is orphaned)
        self.txs = random.Random(seed * 104729 + 7).random() < 0.3
        if self.txs:
            self.watch = replace(self.watch, tx_lifecycle=True)
        self.bound = self._bound()
        #: what the registry would answer per topic prefix (Interested): none by default
        self.interest: dict[str, set[str]] = {}
        #: wallet activity (erc20) for SENDER and RECIPIENT, the registry sometimes away
        self.wallet_activity = side.random() < 0.25
        self.redis_away = side.choice((0.0, 0.3)) if self.wallet_activity else 0.0
        if self.wallet_activity:
            self.watch = replace(self.watch, wallet_activity=("erc20",))
            self.interest["user:"] = {checksum(SENDER), checksum(RECIPIENT)}
        self.chain = Chain(rng)
        self.chain.factory = self.factory
        self.chain.mine(rng.choice((0, 1, w, 3 * w)))
        self.faults = Faults.draw(rng)
        if not lie:
            self.faults.lie = 0.0
        self.store = Store()
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.floor = 0  # no fork reaches at or below this height
        #: directed tests: the chain grows on ``WaitHead`` (random runs: yes)
        self.grow_on_wait = True
        #: directed tests: called with each action before it is performed; may raise
        self.inject: Callable[[Action], None] | None = None
        #: crash before performing the action with this index (after, if negative: ~index)
        self.crash_at: int | None = None
        self.actions = 0
        self.crashes = 0
        self.failures = 0
        self.stepper = self._new_stepper()

    def _bound(self) -> Bound:
        specs = [ContractSpec("Fast", checksum(FAST), _ABI),
                 ContractSpec("Slow", checksum(SLOW), _ABI)]
        confirmations = {"Fast": 0, "Slow": self.k}
        if self.late:
            specs.append(ContractSpec("Late", checksum(OTHER), _ABI))
            confirmations["Late"] = self.late_k
        calls = (ViewCall.bind("Fast", checksum(FAST), _ABI.function("totalSupply", 0), [],
                               ("Transfer",), "sim"),) if self.state_reads else ()
        templates: tuple[Template, ...] = ()
        if self.factory:
            specs.append(ContractSpec("Factory", checksum(FACT), _FACTORY_ABI))
            templates = (Template(ContractSpec("Pair", "0x" + "00" * 20, _PAIR_ABI), "Factory",
                                  "PairCreated", "pair"),)
            confirmations.update(Factory=0, Pair=0)
        return Bound(chain_id=CHAIN_ID, specs=tuple(specs), confirmations=confirmations,
                     calls=calls, start_block=0, start_blocks=dict.fromkeys(confirmations, 0),
                     templates=templates)

    def _new_stepper(self) -> Stepper:
        stepper = Stepper(self.bound, self.watch, poll_interval_s=1.0)
        stepper.max_filter_addresses = self.max_addresses
        return stepper

    # --- the world between and during actions ------------------------------------------------

    def finalized(self) -> int | None:
        """The node's ``finalized`` block (never forked below: part of ``floor``)."""
        if self.finality_lag is None or self.chain.head - self.finality_lag < 1:
            return None
        return self.chain.head - self.finality_lag

    def _fork(self, max_depth: int) -> None:
        c = self.chain
        lo = max(self.floor, c.head - max_depth, self.finalized() or 0)
        if lo >= c.head:
            return
        if self.rng.random() < 0.3 and c.flip_back(lo):
            return
        c.fork(self.rng.randint(lo, c.head - 1))

    def _world_moves(self, chaos: bool) -> None:
        if self.txs:
            self._subscribers()
        r = self.rng.random()
        if r < 0.15:
            self.chain.mine()
        elif chaos and r < 0.18:
            self._fork(2 * self.window)

    def _subscribers(self) -> None:
        """Clients come and go on tx:<hash> of transactions in recent blocks (canonical now)."""
        rng, c = self.rng, self.chain
        wanted = self.interest.setdefault("tx:", set())
        if rng.random() < 0.05 and c.head > 0:
            block = c.blocks[c.canon[rng.randint(max(1, c.head - 2 * self.window), c.head)]]
            if block.logs:
                wanted.add(rng.choice(block.logs)["transactionHash"])
        if wanted and rng.random() < 0.01:
            wanted.discard(rng.choice(sorted(wanted)))

    def _downtime(self) -> None:
        for _ in range(self.rng.choice((0, 1, 2, self.window, self.window + 1, 3 * self.window))):
            self.chain.mine()
            if self.rng.random() < 0.1:
                self._fork(2 * self.window)

    def _note_state(self, state: dict[str, Any]) -> None:
        chain = state["cursor"]["chain"]
        self.floor = max(self.floor, int(chain[0]["number"]))

    # --- the node ------------------------------------------------------------------------------

    def _answer(self, method: str, params: list[Any], f: Faults) -> Any:
        c = self.chain
        if method == "eth_blockNumber":
            head = c.head - (1 if c.head > 0 and self.rng.random() < f.lag else 0)
            self.floor = max(self.floor, head - self.window + 1)
            return hex(head)
        if method == "eth_getBlockByNumber" and params[0] == "finalized":
            if self.finality_lag is None:
                raise RPCError("unknown block tag 'finalized'", method=method)
            f_n = self.finalized()
            self.floor = max(self.floor, f_n or 0)
            b = c.at(f_n) if f_n is not None else None
            return b.header() if b is not None else None
        if method == "eth_getBlockByNumber":
            block = c.at(int(params[0], 16))
            if block is None or self.rng.random() < f.null_block:
                return None
            return block.header()
        if method == "eth_call":
            b = c.blocks.get(params[1]["blockHash"])
            if b is None:
                raise RPCError(f"unknown block {params[1]['blockHash']}", method=method)
            if params[0]["data"] == "0x95d89b41":  # symbol()
                return SYMBOL_ANSWER
            if params[0]["data"] == "0x313ce567":  # decimals()
                return f"0x{18:064x}"
            return f"0x{c.supply(b.hash):064x}"
        if method == "eth_getBlockReceipts":
            b = c.blocks.get(params[0])
            if b is None or not f.receipts:
                raise RPCError("the method eth_getBlockReceipts does not exist", method=method)
            return [{"transactionHash": lg["transactionHash"], "logs": [_copy(lg)]}
                    for lg in b.logs]
        if method == "eth_getBlockByHash":
            b = c.blocks.get(params[0])
            if b is None:
                return None
            return {**b.header(), "transactions": [lg["transactionHash"] for lg in b.logs]}
        if method == "eth_getTransactionReceipt":
            lg = c.txs.get(params[0])
            # (also for a transaction of an orphaned block: a provider behind a balancer may)
            return {"transactionHash": params[0], "logs": [_copy(lg)],
                    "blockHash": lg["blockHash"], "blockNumber": lg["blockNumber"],
                    "status": "0x1", "gasUsed": "0x5208", "from": SENDER} if lg else None
        if method == "eth_getTransactionByHash":
            lg = c.txs.get(params[0])
            if lg is None or c.at(int(lg["blockNumber"], 16)) is not c.blocks[lg["blockHash"]]:
                return None  # its block was orphaned: gone (the model has no pool)
            return {"hash": params[0], "from": SENDER, "to": lg["address"], "nonce": "0x1",
                    "blockHash": lg["blockHash"], "blockNumber": lg["blockNumber"]}
        if method == "eth_getTransactionCount":
            return "0x0"  # the model's senders never use a nonce again: nothing is replaced
        if method == "eth_getLogs":
            flt = params[0]
            addresses = {a.lower() for a in flt.get("address", [])}
            # per position: the values allowed (None: any), ANDed across positions
            positions = [None if t is None else {x.lower() for x in t}
                         for t in flt.get("topics") or []]

            def selected(lg: dict[str, Any]) -> bool:
                # no "address": every contract (a topic-only filter for many factory children)
                return ("address" not in flt or lg["address"] in addresses) and all(
                    want is None or (i < len(lg["topics"]) and lg["topics"][i] in want)
                    for i, want in enumerate(positions))

            if "blockHash" in flt:
                b = c.blocks.get(flt["blockHash"])
                if b is None:
                    raise RPCError(f"unknown block {flt['blockHash']}", method=method)
                got = [lg for lg in b.logs if selected(lg)]
                # (only for the configured contracts' filters: wallet activity's answers are
                # not checked against the bloom, docs/watcher.md §Wallet activity)
                if got and "address" in flt and self.rng.random() < f.lie:
                    return []  # a provider that lies
                return [_copy(lg) for lg in got]
            lo, hi = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            out = []
            for n in range(lo, min(hi, c.head) + 1):
                out += [lg for lg in c.blocks[c.canon[n]].logs if selected(lg)]
            return [_copy(lg) for lg in out]
        raise AssertionError(f"the model node has no {method}")

    def _rpc(self, calls: tuple[tuple[str, list[Any]], ...], f: Faults) -> list[Any]:
        if self.rng.random() < f.node:
            raise NodeUnreachable("simulated timeout")
        return [self._answer(m, p, f) for m, p in calls]

    # --- performing an action ------------------------------------------------------------------

    def _perform(self, action: Action, f: Faults) -> Any:
        rng = self.rng
        if isinstance(action, Call):
            try:
                return self._rpc(action.calls, f)
            except RPCError:
                if action.optional:
                    return None
                raise
        if isinstance(action, FetchRange):
            if f.max_span is not None and action.hi - action.lo + 1 > f.max_span:
                raise RangeTooLarge(f"range of {action.hi - action.lo + 1} blocks refused",
                                    method="eth_getLogs")
            if rng.random() < f.rate_limit:
                raise RateLimited("simulated 429", method="eth_getLogs")
            flt = {"fromBlock": hex(action.lo), "toBlock": hex(action.hi), **action.log_filter}
            logs, end = self._rpc((("eth_getLogs", [flt]),
                                   ("eth_getBlockByNumber", [hex(action.hi), False])), f)
            return logs, end
        if isinstance(action, Load):
            if rng.random() < f.checkpoint:
                raise CheckpointError("simulated read failure")
            doc = self.checkpoints.get(action.key)
            # stored as JSON went in (below); the stepper only reads what it loads
            return doc
        if isinstance(action, Propose | Save):
            if rng.random() < f.checkpoint / 2:
                raise CheckpointError("simulated write failure (not written)")
            self._note_state(action.state)
            doc = json.loads(json.dumps(action.state))
            if isinstance(action, Propose):
                batch = json.loads(json.dumps(action.batch))
                cur = self.checkpoints.setdefault(action.key, {})
                cur["proposed"] = {**doc, "batch": batch}
            else:
                self.checkpoints[action.key] = {**doc, "proposed": None}
            if rng.random() < f.checkpoint / 2:
                raise CheckpointError("simulated write failure (written)")
            return None
        if isinstance(action, Accept):
            batch = action.batch  # fresh dicts of frozen records: stored as they are
            self._check_depths(batch)
            if rng.random() < f.sink:
                for rec in batch[: rng.randint(0, len(batch))]:
                    self.store.put(rec)
                raise SinkError("simulated sink failure after a partial write")
            for rec in batch:
                self.store.put(rec)
            return None
        if isinstance(action, WaitHead):
            return None
        if isinstance(action, Interested):
            saved = self.checkpoints.get(self.stepper.key) or {}
            if saved.get("wallets") and rng.random() < self.redis_away:
                return None  # Redis away (after the set reached the checkpoint once)
            return set(self.interest.get(action.prefix, ()))
        if isinstance(action, Prefetch | Subscribe | Sleep | Backfilling):
            return None
        raise AssertionError(f"unknown action {action!r}")

    def _check_wallets(self, final: dict[str, dict[str, Any]]) -> list[str]:
        return _wallet_check(self, final)

    def _check_depths(self, batch: list[dict[str, Any]]) -> None:
        """No K > 0 record confirmed before it is K deep (or finalized by the node's tag)."""
        ks = {"Slow": self.k, "Late": self.late_k}
        lag = self.finality_lag if self.watch.finality == "tag" else None
        for rec in batch:
            k = ks.get(rec.get("contract", ""), 0)
            if rec["status"] != "confirmed" or not k:
                continue
            need = min(k, lag) if lag is not None else k
            if self.chain.head - rec["block_number"] < need:
                self.early.append(f"{message_id(rec)} ({rec['contract']}, block "
                                  f"{rec['block_number']}) confirmed at head {self.chain.head}, "
                                  f"before {k} confirmations")

    def drive(self, f: Faults, *, chaos: bool, budget: int, until_caught_up: bool) -> bool:
        """Run sessions for ``budget`` actions at most; with ``until_caught_up``, stop (and
        return True) once the watcher waits for a new head with its tip at the chain's head."""
        gen = None
        for _ in range(budget):
            if gen is None:
                gen = self.stepper.session(subscriptions=self.rng.random() < 0.5)
                result: Any = None
                error: BaseException | None = None
            try:
                action = gen.send(result) if error is None else gen.throw(error)
            except ReorgTooDeep as exc:
                raise SimFailure(f"the model forked below what the watcher took as final: "
                                 f"{exc}") from exc
            except WatcherError:  # e.g. a block the node did not return: a new session
                self.failures += 1
                gen.close()
                gen = None
                continue
            result, error = None, None
            self.actions += 1
            if chaos:
                self._world_moves(chaos)
            if until_caught_up and isinstance(action, WaitHead):
                tip = self.stepper.committed
                if tip is not None and tip["block_number"] == self.chain.head:
                    gen.close()
                    return True
            if isinstance(action, WaitHead) and self.grow_on_wait and (
                    chaos or self.rng.random() < 0.5):
                self.chain.mine()
            try:
                if self.inject is not None:
                    self.inject(action)
                if self.rng.random() < f.crash / 2 or self.crash_at == self.actions:
                    raise Crash("before the action")
                result = self._perform(action, f)
                if self.rng.random() < f.crash / 2 or self.crash_at == ~self.actions:
                    raise Crash("after the action")
            except Crash:
                self.crashes += 1
                gen.close()
                gen = None
                if chaos and self.config_changes and self.rng.random() < 0.3:
                    self.late = not self.late  # the restarted watcher has another config
                    self.bound = self._bound()
                self.stepper = self._new_stepper()
                if chaos:
                    self._downtime()
            except (RangeTooLarge, RateLimited) as exc:
                if isinstance(action, FetchRange):
                    error = exc
                else:
                    self.failures += 1
                    gen.close()
                    gen = None
            except (WatcherError, SinkError, CheckpointError):
                self.failures += 1
                gen.close()
                gen = None
        if gen is not None:
            gen.close()
        return False

    def catch_up(self) -> None:
        """Directed tests: run with ``self.faults`` (none unless the test sets some) until the
        watcher is caught up."""
        if not self.drive(self.faults, chaos=False, budget=5_000, until_caught_up=True):
            raise SimFailure(f"the watcher did not catch up to head {self.chain.head}")

    def messages(self, block: int, address: str, *, branch: list[str] | None = None
                 ) -> list[str]:
        """Message ids stored for the first log of ``address`` in block ``block`` (of the
        canonical chain, or of ``branch``), in the order stored, without the id."""
        b = self.chain.blocks[(branch or self.chain.canon)[block]]
        lg = next(lg for lg in b.logs if lg["address"] == address)
        rid = f"{CHAIN_ID}:{b.hash}:{int(lg['logIndex'], 16)}"
        return [mid[len(rid) + 1:] for mid in self.store.order
                if self.store.docs[mid]["id"] == rid]

    def run(self) -> None:
        f = self.faults
        self.drive(f, chaos=True, budget=self.rng.randint(50, 400), until_caught_up=False)
        # the end: no more faults nor forks; the chain grows past every depth that matters
        self.chain.mine(self.window + 2)
        self.redis_away = 0.0  # a fault too: the registry answers (tx: hashes added late)
        if not self.drive(Faults.none(), chaos=False, budget=20_000, until_caught_up=True):
            got = self.stepper.committed
            raise SimFailure(f"the watcher did not catch up to head {self.chain.head} "
                             f"(committed {got['block_number'] if got else None})")
        self.check()

    # --- the invariant -------------------------------------------------------------------------

    def check(self) -> None:
        c, store = self.chain, self.store
        problems: list[str] = list(store.conflicts) + self.early
        by_id: dict[str, list[dict[str, Any]]] = {}
        for mid in store.order:
            rec = store.docs[mid]
            by_id.setdefault(rec["id"], []).append(rec)
        final: dict[str, dict[str, Any]] = {}
        for rid, recs in by_id.items():
            last = recs[-1]
            greatest = max(recs, key=lambda r: (r.get("incarnation", 0), RANK[r["status"]]))
            if last is not greatest:
                problems.append(f"{rid}: last stored {message_id(last)} but the greatest is "
                                f"{message_id(greatest)}")
            final[rid] = last
        canonical = set(c.canon)
        problems += self._check_wallets(final)
        watched = {FAST: ("Fast", 0), SLOW: ("Slow", self.k)}
        if self.late:
            watched[OTHER] = ("Late", self.late_k)
        if self.factory:
            watched[FACT] = ("Factory", 0)
        for n in range(1, c.head + 1):
            b = c.blocks[c.canon[n]]
            depth = c.head - n
            # children watched from their creation block on (in the canonical chain)
            children = set(c.children(b.hash)) if self.factory else set()
            for lg in b.logs:
                if lg["address"] in children:
                    name, k = "Pair", 0
                elif lg["address"] not in watched:
                    continue
                else:
                    name, k = watched[lg["address"]]
                rid = f"{CHAIN_ID}:{b.hash}:{int(lg['logIndex'], 16)}"
                due = k if k else self.watch.finality_depth
                want = "confirmed" if depth >= due else ("pending" if k == 0 else None)
                got = final[rid]["status"] if rid in final else None
                if self.watch.finality == "tag" and self.finality_lag is not None and (
                        depth < self.window):
                    # final by the node's tag: confirmed some time between the tag and the
                    # window's end (K > 0: at K deep or by the tag, whichever first)
                    if k:
                        want = "confirmed" if depth >= k else got
                    else:
                        want = got if got in ("pending", "confirmed") else "pending"
                if want is None:
                    if got == "confirmed":
                        problems.append(f"{rid} ({name}, block {n}, depth {depth}): confirmed "
                                        f"before {k} confirmations")
                elif got != want:
                    problems.append(f"{rid} ({name}, canonical block {n}, depth {depth}): final "
                                    f"message {got}, want {want}")
        for rid, last in final.items():
            if last["kind"] == "state" and last["status"] != "removed" and (
                    int(last["args"]["value"]) != c.supply(last["block_hash"])):
                problems.append(f"{rid}: value {last['args']['value']}, the block's is "
                                f"{c.supply(last['block_hash'])}")
            if last.get("block_hash") is not None and last["block_hash"] not in canonical and (
                    last["status"] != "removed"):
                problems.append(f"{rid} (orphaned block {last['block_number']}): final message "
                                f"{message_id(last)}, want removed")
        problems += self._check_txs(final)
        if problems:
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise SimFailure("; ".join(problems[:5]) + more)

    def _check_txs(self, final: dict[str, dict[str, Any]]) -> list[str]:
        """Each followed transaction of a canonical (final) block ends ``confirmed`` in that
        block; one of an orphaned block ends with nothing live (the generic check: its mined
        records are ``removed``)."""
        c, problems = self.chain, []
        for h in sorted(self.interest.get("tx:", ())):
            lg = c.txs[h]
            mine = [self.store.docs[m] for m in self.store.order
                    if self.store.docs[m].get("kind") == "tx"
                    and self.store.docs[m]["tx_hash"] == h]
            canonical = c.at(int(lg["blockNumber"], 16)) is c.blocks[lg["blockHash"]]
            if not canonical:
                continue
            last = final.get(f"{CHAIN_ID}:{lg['blockHash']}:tx:{h}")
            if last is None or last["status"] != "confirmed" or (
                    mine and mine[-1] is not last):
                problems.append(f"tx {h} (canonical block {int(lg['blockNumber'], 16)}): last "
                                f"stored {[message_id(r) for r in mine[-2:]]}, want its mined "
                                "record confirmed")
        return problems

    def summary(self) -> str:
        return (f"window {self.window} K {self.k} late {self.late} finality {self.watch.finality} "
                f"{self.watch.finality_depth} lag {self.finality_lag} "
                f"head {self.chain.head} reorgs {self.chain.reorgs} flip-flops "
                f"{self.chain.flipflops} crashes {self.crashes} failures {self.failures} "
                f"actions {self.actions} messages {len(self.store.order)}"
                f"{' txs ' + str(len(self.interest.get('tx:', ()))) if self.txs else ''}")


def _wallet_check(sim: Sim, final: dict[str, dict[str, Any]]) -> list[str]:
    """Wallet activity (see the module docstring): the unwatched contract's canonical transfers
    have ``erc20`` records (when the config never changed), final as for K = 0, with the
    token's metadata; nothing else is an ``erc20`` record."""
    if not sim.wallet_activity:
        return []
    c, problems = sim.chain, []
    token = {"standard": "erc20", "symbol": "OTH", "decimals": 18}
    for rid, last in final.items():
        if last.get("contract") != "erc20":
            continue
        if last["address"].lower() != OTHER or last.get("token") != token:
            problems.append(f"{rid}: an erc20 record of {last['address']} with token "
                            f"{last.get('token')}")
    for n in range(1, c.head + 1):
        b = c.blocks[c.canon[n]]
        depth = c.head - n
        for lg in b.logs:
            if lg["address"] != OTHER or lg["topics"][0] != TRANSFER:
                continue
            rid = f"{CHAIN_ID}:{b.hash}:{int(lg['logIndex'], 16)}:erc20"
            got = final[rid]["status"] if rid in final else None
            if got is None and sim.config_changes:
                continue  # read while "Late" (this address) was configured: its records
            want = "confirmed" if depth >= sim.watch.finality_depth else "pending"
            if sim.watch.finality == "tag" and sim.finality_lag is not None and (
                    depth < sim.window):
                want = got if got in ("pending", "confirmed") else "pending"
            if got != want:
                problems.append(f"{rid} (erc20, canonical block {n}, depth {depth}): final "
                                f"message {got}, want {want}")
    return problems


def directed(*, window: int, k: int, finality_depth: int) -> Sim:
    """A quiet world for a directed test: no faults, no random forks or blocks (the test mines
    and forks with ``sim.chain``), the chain at genesis."""
    sim = Sim(0)
    sim.window, sim.k = window, k
    sim.watch = WatchConfig(reorg_window=window, finality_depth=finality_depth)
    sim.bound = Bound(
        chain_id=CHAIN_ID,
        specs=(ContractSpec("Fast", checksum(FAST), _ABI),
               ContractSpec("Slow", checksum(SLOW), _ABI)),
        confirmations={"Fast": 0, "Slow": k}, calls=(), start_block=0,
        start_blocks={"Fast": 0, "Slow": 0},
    )
    sim.chain = Chain(sim.rng)
    sim.factory = False
    sim.max_addresses = 500
    sim.wallet_activity, sim.redis_away, sim.interest = False, 0.0, {}
    sim.faults = Faults.none()
    sim.grow_on_wait = False
    sim.stepper = sim._new_stepper()
    return sim


def crash_everywhere(seed: int, *, actions: int) -> list[str]:
    """Seed ``seed`` without random faults, crashed once: before, then after, each of its
    first ``actions`` actions in turn (each crash followed by downtime). The failures."""
    failures = []
    for at in range(actions):
        for where in (at, ~at):
            sim = Sim(seed)
            sim.faults = Faults.none()
            sim.crash_at = where
            try:
                sim.run()
            except SimFailure as exc:
                failures.append(f"seed {seed} crashed {'before' if where >= 0 else 'after'} "
                                f"action {at}: {exc}")
    return failures


def replay_command(seed: int) -> str:
    return f"scripts/simulate.sh --seed {seed}"


def run_seed(seed: int, *, lie: bool = True) -> Sim:
    """One run; raises ``SimFailure`` naming the command that replays it."""
    sim = Sim(seed, lie=lie)
    try:
        sim.run()
    except SimFailure as exc:
        raise SimFailure(f"seed {seed} ({sim.summary()}): {exc}\n  replay: "
                         f"{replay_command(seed)}") from exc
    return sim


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="deterministic simulation of the watcher")
    ap.add_argument("--seeds", type=int, default=2000, help="how many seeds (from --first)")
    ap.add_argument("--first", type=int, default=0, help="first seed of the range")
    ap.add_argument("--seed", type=int, default=None, help="replay this one seed, verbosely")
    ap.add_argument("--no-lie", action="store_true", help="no provider answering [] wrongly")
    ap.add_argument("-v", "--verbose", action="store_true", help="the watcher's logs (INFO)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL,
                        format="%(name)s: %(message)s")
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    began = time.monotonic()
    failed = 0
    for seed in seeds:
        try:
            sim = run_seed(seed, lie=not args.no_lie)
        except SimFailure as exc:
            failed += 1
            print(f"FAIL {exc}", file=sys.stderr)
            continue
        if args.seed is not None:
            print(f"seed {seed} ok: {sim.summary()}")
    n = len(seeds)
    print(f"{n - failed}/{n} seeds ok in {time.monotonic() - began:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
