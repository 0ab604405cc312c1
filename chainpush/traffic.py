"""Demo transactions: one per demo event, and a steady random mix for the live demo.

Every function sends a real transaction from ``w3.eth.default_account`` (see
``chainpush.deploy.use_sender``) and waits for its receipt, so when it returns the event is in a
mined block. Recipients are the node's other dev accounts: the demo's users log in with those
wallets and see messages addressed to them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from chainpush import deploy

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Demo:
    """The deployed demo contracts and who trades with whom."""

    w3: Web3
    call_demo: Contract
    token: Contract
    sender: ChecksumAddress
    recipients: tuple[ChecksumAddress, ...]

    @classmethod
    def attach(cls, w3: Web3, deployments_dir: Path = deploy.DEFAULT_DEPLOYMENTS_DIR) -> Demo:
        sender = w3.eth.default_account
        if not sender:
            raise deploy.DeployError("no sender: call chainpush.deploy.use_sender(w3) first")
        others = tuple(a for a in w3.eth.accounts if a != sender)[:4]
        if not others:
            raise deploy.DeployError("the demo needs at least one other account on the node")
        return cls(
            w3=w3, call_demo=deploy.contract(w3, "CallDemo", deployments_dir=deployments_dir),
            token=deploy.contract(w3, "DemoToken", deployments_dir=deployments_dir),
            sender=sender,
            recipients=others,
        )

    def send(self, what: str, fn: object) -> TxReceipt:
        tx_hash = fn.transact()  # type: ignore[attr-defined]
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

    def emitters(self, rng: random.Random) -> dict[str, Callable[[], TxReceipt]]:
        """Each demo event name → a thunk that emits one, with random but valid arguments."""

        def pick() -> ChecksumAddress:
            return rng.choice(self.recipients)

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
        }


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
