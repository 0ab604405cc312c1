"""Demo transactions: one per demo event, and a steady random mix for the live demo.

Every function sends a real transaction from ``w3.eth.default_account`` (see
``chainpush.deploy.use_sender``) and waits for its receipt, so when it returns the event is in a
mined block. Recipients are the node's other dev accounts: the demo's users log in with those
wallets and see messages addressed to them.

With an :class:`Announcer`, each transaction's hash is published (``POST /v1/publish``) to the
app topic ``app:demo-txs`` as soon as the node has it and before it is mined, so the page can
subscribe to ``tx:<hash>`` and show the transaction's lifecycle (docs/push.md §The demo's
transactions). The factory part creates ``DemoPair`` children through ``DemoFactory`` and
swaps on them (the watcher follows every child: ``contract:DemoPair``).
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from chainpush import deploy
from chainpush.watcher.compile import load_artifact

logger = logging.getLogger(__name__)


#: where the demo announces the hashes of its transactions (``POST /v1/publish``)
ANNOUNCE_TOPIC = "app:demo-txs"


@dataclass(frozen=True, slots=True)
class Announcer:
    """Publishes ``{"event": "tx.sent", "data": {"hash", "what"}}`` to :data:`ANNOUNCE_TOPIC`.

    ``url`` is the auth service (``http://127.0.0.1:8700``), ``key`` one of its ``[publish]
    keys``. A failed announcement is logged and the transaction goes on: the demo's traffic
    never waits on the page."""

    url: str
    key: str
    timeout_s: float = 2.0

    def __call__(self, tx_hash: str, what: str) -> None:
        body = json.dumps({"topic": ANNOUNCE_TOPIC, "id": f"tx-{tx_hash}", "event": "tx.sent",
                           "data": {"hash": tx_hash, "what": what}}).encode()
        request = urllib.request.Request(
            self.url.rstrip("/") + "/v1/publish", data=body, method="POST",
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
        except (urllib.error.URLError, OSError) as exc:
            logger.warning("announcing %s to %s failed: %s", tx_hash, self.url, exc)


@dataclass(frozen=True, slots=True)
class Demo:
    """The deployed demo contracts and who trades with whom."""

    w3: Web3
    call_demo: Contract
    token: Contract
    sender: ChecksumAddress
    recipients: tuple[ChecksumAddress, ...]
    factory: Contract | None = None
    announce: Callable[[str, str], None] | None = None
    #: the DemoPair children created so far (read from the factory at attach)
    pairs: list[ChecksumAddress] = field(default_factory=list)
    #: DemoPair's ABI, read once (every child shares it)
    pair_abi: list[Any] = field(default_factory=list)

    @classmethod
    def attach(cls, w3: Web3, deployments_dir: Path = deploy.DEFAULT_DEPLOYMENTS_DIR, *,
               announce: Callable[[str, str], None] | None = None) -> Demo:
        """The demo contracts of ``deployments_dir``; DemoFactory only if it is deployed
        there (deployments made before it existed have none: no pairs then)."""
        sender = w3.eth.default_account
        if not sender:
            raise deploy.DeployError("no sender: call chainpush.deploy.use_sender(w3) first")
        others = tuple(a for a in w3.eth.accounts if a != sender)[:4]
        if not others:
            raise deploy.DeployError("the demo needs at least one other account on the node")
        factory = None
        if "DemoFactory" in deploy.read_deployments(int(w3.eth.chain_id), deployments_dir):
            factory = deploy.contract(w3, "DemoFactory", deployments_dir=deployments_dir)
        pairs = [] if factory is None else [
            factory.functions.allPairs(i).call()
            for i in range(factory.functions.allPairsLength().call())]
        return cls(
            w3=w3, call_demo=deploy.contract(w3, "CallDemo", deployments_dir=deployments_dir),
            token=deploy.contract(w3, "DemoToken", deployments_dir=deployments_dir),
            sender=sender,
            recipients=others,
            factory=factory, announce=announce, pairs=pairs,
            pair_abi=[] if factory is None else load_artifact(
                deploy.DEFAULT_ABI_DIR, "DemoPair").abi,
        )

    def send(self, what: str, fn: object) -> TxReceipt:
        tx_hash = fn.transact()  # type: ignore[attr-defined]
        if self.announce is not None:
            self.announce("0x" + bytes(tx_hash).hex(), what)
        return deploy.wait(self.w3, tx_hash, what)

    # one transaction per demo event ------------------------------------------------------

    def value_changed(self, value: int) -> TxReceipt:
        return self.send("CallDemo.set", self.call_demo.functions.set(value))

    def transfer(self, to: ChecksumAddress, amount: int) -> TxReceipt:
        return self.send("DemoToken.transfer", self.token.functions.transfer(to, amount))

    def approve(self, spender: ChecksumAddress, amount: int) -> TxReceipt:
        return self.send("DemoToken.approve", self.token.functions.approve(spender, amount))

    def mint(self, to: ChecksumAddress, amount: int) -> TxReceipt:
        return self.send("DemoToken.mint", self.token.functions.mint(to, amount))

    def message(self, to: ChecksumAddress, text: str, data: bytes = b"") -> TxReceipt:
        return self.send(
            "DemoToken.sendMessage", self.token.functions.sendMessage(to, text, data)
        )

    def batch(self, ids: list[int], recipients: list[ChecksumAddress], note: str) -> TxReceipt:
        return self.send("DemoToken.batch", self.token.functions.batch(ids, recipients, note))

    def tag(self, tag: bytes, label: str, delta: int, flag: bool) -> TxReceipt:
        fn = self.token.functions.emitTagged(tag.ljust(32, b"\0"), label, delta, flag)
        return self.send("DemoToken.emitTagged", fn)

    def order(self, amount: int, memo: str) -> TxReceipt:
        return self.send("DemoToken.placeOrder", self.token.functions.placeOrder(amount, memo))

    def create_pair(self, other: ChecksumAddress) -> TxReceipt:
        """A new DemoPair of the token and ``other`` (its constructor emits ``Sync``)."""
        assert self.factory is not None
        receipt = self.send("DemoFactory.createPair",
                            self.factory.functions.createPair(self.token.address, other))
        index = self.factory.functions.allPairsLength().call()
        self.pairs.append(self.factory.functions.allPairs(index - 1).call())
        return receipt

    def swap(self, pair: ChecksumAddress, amount: int, to: ChecksumAddress) -> TxReceipt:
        contract_ = self.w3.eth.contract(address=pair, abi=self.pair_abi)
        return self.send("DemoPair.swap", contract_.functions.swap(amount, to))

    def emitters(self, rng: random.Random) -> dict[str, Callable[[], TxReceipt]]:
        """Each demo event name → a thunk that emits one, with random but valid arguments.

        With DemoFactory deployed: ``PairCreated`` (a new child; at most 5 in all) and ``Swap``
        on a random child (creating the first one if there is none)."""

        def pick() -> ChecksumAddress:
            return rng.choice(self.recipients)

        def swap() -> TxReceipt:
            if not self.pairs:
                return self.create_pair(pick())
            return self.swap(rng.choice(self.pairs), rng.randrange(1, 500), pick())

        def pair_created() -> TxReceipt:
            return self.create_pair(pick()) if len(self.pairs) < 5 else swap()

        factory_part: dict[str, Callable[[], TxReceipt]] = {} if self.factory is None else {
            "PairCreated": pair_created, "Swap": swap}
        return {
            "ValueChanged": lambda: self.value_changed(rng.randrange(2**64)),
            "Transfer": lambda: self.transfer(pick(), rng.randrange(1, 10**21)),
            "Approval": lambda: self.approve(pick(), 2**256 - 1 - rng.randrange(10)),
            "Message": lambda: self.message(
                pick(), f"hello #{rng.randrange(1000)} ✓", rng.randbytes(rng.randrange(0, 40))
            ),
            "Batch": lambda: self.batch([1, 2, 3], [pick(), pick(), pick()], "airdrop"),
            "Tagged": lambda: self.tag(b"demo", "label", -rng.randrange(10**6), rng.random() < 0.5),
            "Order": lambda: self.order(rng.randrange(10**20), "limit buy"),
        } | factory_part


def run(demo: Demo, *, count: int | None, interval_s: float, seed: int | None = None) -> int:
    """Send ``count`` random demo transactions (``None``: until interrupted); return how many."""
    rng = random.Random(seed)
    emitters = demo.emitters(rng)
    names = list(emitters)
    sent = 0
    while count is None or sent < count:
        name = rng.choice(names)
        receipt = emitters[name]()
        sent += 1
        logger.info("sent %s in block %d", name, receipt["blockNumber"])
        if interval_s > 0:
            time.sleep(interval_s)
    return sent
