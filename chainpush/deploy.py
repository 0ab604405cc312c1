"""Deploy the demo contracts, record where they live, call them and send demo transactions.

The geth tutorial's steps in Python (DESIGN-NOTES §1): the compiled ABI + bytecode come from
``abi/<Name>.json`` (``chainpush compile``, read by ``watcher.compile.load_artifact``);
deploying notes the address per chain id in ``deployments/<chain_id>.json``; calling builds
web3 contract objects from the ABI.

A transaction is sent from the node's first unlocked account (anvil, hardhat) or, given a private
key, signed locally, and is final only once mined: every send here waits for its receipt.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.middleware import SignAndSendRawMiddlewareBuilder
from web3.types import TxReceipt

from chainpush.procs import ROOT
from watcher.compile import load_artifact

logger = logging.getLogger(__name__)

DEFAULT_ABI_DIR = ROOT / "abi"
DEFAULT_DEPLOYMENTS_DIR = ROOT / "deployments"
DEMO_CONTRACTS = ("CallDemo", "DemoToken")


class DeployError(RuntimeError):
    """A deployment could not be made, found or used (message names the contract and chain)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    address: ChecksumAddress
    block: int
    tx: str


def deployments_path(chain_id: int, deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR) -> Path:
    return deployments_dir / f"{chain_id}.json"


def read_deployments(
    chain_id: int, deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR
) -> dict[str, Deployment]:
    path = deployments_path(chain_id, deployments_dir)
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {
        name: Deployment(name, Web3.to_checksum_address(d["address"]), int(d["block"]), d["tx"])
        for name, d in raw.get("contracts", {}).items()
    }


def write_deployments(
    chain_id: int, deployments: dict[str, Deployment],
    deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR,
) -> Path:
    path = deployments_path(chain_id, deployments_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "chain_id": chain_id,
        "contracts": {
            d.name: {"address": d.address, "block": d.block, "tx": d.tx}
            for d in sorted(deployments.values(), key=lambda d: d.name)
        },
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def use_sender(w3: Web3, private_key: str | None = None) -> ChecksumAddress:
    """Pick the account transactions come from and make it ``w3.eth.default_account``."""
    key = private_key or os.environ.get("CHAINPUSH_PRIVATE_KEY")
    if key:
        account = w3.eth.account.from_key(key)
        w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)
        sender: ChecksumAddress = account.address
    else:
        accounts = w3.eth.accounts
        if not accounts:
            raise DeployError(
                "the node has no unlocked account: pass --private-key or set CHAINPUSH_PRIVATE_KEY"
            )
        sender = accounts[0]
    w3.eth.default_account = sender
    return sender


def wait(w3: Web3, tx_hash: bytes, what: str) -> TxReceipt:
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)  # type: ignore[arg-type]
    if receipt["status"] != 1:
        raise DeployError(f"{what} reverted in tx {receipt['transactionHash'].hex()}")
    return receipt


def deploy(
    w3: Web3, names: tuple[str, ...] = DEMO_CONTRACTS, *, abi_dir: Path = DEFAULT_ABI_DIR,
    deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR, force: bool = False,
) -> dict[str, Deployment]:
    """Deploy ``names`` unless the recorded address already holds their runtime code.

    Idempotent: running it twice against the same node deploys once. A recorded address with no
    code (the node was restarted from genesis) is deployed again and the record replaced.
    """
    chain_id = int(w3.eth.chain_id)
    known = read_deployments(chain_id, deployments_dir)
    for name in names:
        compiled = load_artifact(abi_dir, name)
        previous = known.get(name)
        if previous is not None and not force:
            code = bytes(w3.eth.get_code(previous.address))
            expected = compiled.deployed_bytecode.removeprefix("0x")
            if code and (not expected or code.hex() == expected):
                logger.info("%s already deployed at %s", name, previous.address)
                continue
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        receipt = wait(w3, factory.constructor().transact(), f"deploy of {name}")
        address = receipt["contractAddress"]
        if address is None:
            raise DeployError(f"deploy of {name} produced no contract address")
        known[name] = Deployment(
            name, address, int(receipt["blockNumber"]), "0x" + receipt["transactionHash"].hex()
        )
        logger.info("deployed %s at %s in block %d", name, address, receipt["blockNumber"])
    write_deployments(chain_id, known, deployments_dir)
    return known


def contract(
    w3: Web3, name: str, *, abi_dir: Path = DEFAULT_ABI_DIR,
    deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR,
) -> Contract:
    """The web3 contract object of a deployed demo contract (ABI from ``abi/``)."""
    chain_id = int(w3.eth.chain_id)
    deployment = read_deployments(chain_id, deployments_dir).get(name)
    if deployment is None:
        raise DeployError(
            f"{name} is not deployed on chain {chain_id} "
            f"({deployments_path(chain_id, deployments_dir)}): run scripts/deploy.py"
        )
    if not w3.eth.get_code(deployment.address):
        raise DeployError(
            f"no code at {deployment.address} for {name} on chain {chain_id}: the node was "
            "probably restarted; run scripts/deploy.py again"
        )
    return w3.eth.contract(address=deployment.address, abi=load_artifact(abi_dir, name).abi)
