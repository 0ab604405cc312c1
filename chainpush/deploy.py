"""Deploy any compiled contract, record where it lives, call it: ``chainpush deploy`` / ``call``.

The geth tutorial's steps in Python (DESIGN-NOTES §1): the compiled ABI + bytecode come from
``abi/<Name>.json`` (``chainpush compile``, read by ``watcher.compile.load_artifact``);
deploying notes the address per chain id in ``deployments/<chain_id>.json`` (the format is in
``docs/configuration.md``, "Deployments"), which is where ``chainpush watch`` looks up a
``[[contracts]]`` entry without ``address``; calling builds web3 contract objects from the ABI.
Arguments on the command line are parsed by ABI type (``chainpush.abiargs``).

A transaction is sent from the node's first unlocked account (anvil, hardhat) or, given a private
key, signed locally, and is final only once mined: every send here waits for its receipt.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.middleware import SignAndSendRawMiddlewareBuilder
from web3.types import TxParams, TxReceipt

from chainpush import abiargs, devstack, project
from chainpush.watcher.compile import load_artifact
from chainpush.watcher.errors import NodeUnreachable, WatcherError
from chainpush.watcher.node import (
    Endpoint,
    add_endpoint_arguments,
    connect,
    endpoint_from_arguments,
)

logger = logging.getLogger(__name__)

#: the demo scripts' defaults, relative to the current directory (they run from the checkout);
#: ``chainpush deploy`` / ``call`` use the project's directories (:func:`layout`) instead
DEFAULT_ABI_DIR = Path("abi")
DEFAULT_DEPLOYMENTS_DIR = Path("deployments")
DEMO_CONTRACTS = ("CallDemo", "DemoToken", "DemoFactory")


class DeployError(RuntimeError):
    """A deployment could not be made, found or used (message names the contract and chain)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    address: ChecksumAddress
    block: int
    tx: str


def deployments_path(chain_id: int, deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR) -> Path:
    """``<dir>/<chain_id>.json``, or ``deployments_dir`` itself when it names a ``.json`` file."""
    return project.Layout(Path(), deployments_dir).deployments_file(chain_id)


def read_deployments(
    chain_id: int, deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR
) -> dict[str, Deployment]:
    path = deployments_path(chain_id, deployments_dir)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DeployError(f"{path} is not valid JSON ({exc}): fix or delete it") from exc
    if raw.get("chain_id") not in (None, chain_id):
        raise DeployError(f"{path} records chain {raw.get('chain_id')}, the node serves {chain_id}")
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
    deployments_dir: Path = DEFAULT_DEPLOYMENTS_DIR, fix: str = "python scripts/deploy.py",
) -> Contract:
    """The web3 contract object of a deployed contract (ABI from ``abi_dir``); errors end with
    ``fix``, the command that deploys it."""
    chain_id = int(w3.eth.chain_id)
    deployment = read_deployments(chain_id, deployments_dir).get(name)
    if deployment is None:
        raise DeployError(
            f"{name} is not deployed on chain {chain_id} "
            f"({deployments_path(chain_id, deployments_dir)}): run {fix}"
        )
    if not w3.eth.get_code(deployment.address):
        raise DeployError(
            f"no code at {deployment.address} for {name} on chain {chain_id}: the node was "
            f"probably restarted from genesis; deploy it again: {fix}"
        )
    return w3.eth.contract(address=deployment.address, abi=load_artifact(abi_dir, name).abi)


def deploy_one(
    w3: Web3, name: str, texts: Sequence[str] = (), *, paths: project.Layout, value_wei: int = 0,
) -> Deployment:
    """Deploy ``abi/<name>.json`` with constructor arguments parsed from ``texts`` by ABI type;
    record it (replacing an earlier record of ``name``) and return it."""
    artifact = load_artifact(paths.abi_dir, name)
    if artifact.bytecode in ("", "0x"):
        raise DeployError(f"{name} has no bytecode (abstract contract or interface): "
                          "deploy a concrete contract")
    args = abiargs.parse_args(abiargs.constructor(artifact.abi), texts,
                              what=f"{name} constructor")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx: TxParams = {"value": w3.to_wei(value_wei, "wei")} if value_wei else {}
    receipt = wait(w3, factory.constructor(*args).transact(tx), f"deploy of {name}")
    address = receipt["contractAddress"]
    if address is None:
        raise DeployError(f"deploy of {name} produced no contract address")
    chain_id = int(w3.eth.chain_id)
    known = read_deployments(chain_id, paths.deployments)
    if name in known:
        logger.info("replacing the record of %s at %s", name, known[name].address)
    known[name] = Deployment(
        name, address, int(receipt["blockNumber"]), "0x" + receipt["transactionHash"].hex()
    )
    write_deployments(chain_id, known, paths.deployments)
    return known[name]


def decoded_events(contract_: Contract, receipt: TxReceipt) -> list[tuple[str, dict[str, Any]]]:
    """(event name, JSON-safe args) of each log ``contract_`` emitted in ``receipt``."""
    by_topic: dict[str, Mapping[str, Any]] = {}
    abi: list[Mapping[str, Any]] = list(contract_.abi)
    for entry in abi:
        if entry.get("type") == "event" and not entry.get("anonymous"):
            by_topic[Web3.keccak(text=abiargs.signature(entry)).hex().removeprefix("0x")] = entry
    out = []
    for log in receipt["logs"]:
        if log["address"] != contract_.address or not log["topics"]:
            continue
        emitted = by_topic.get(bytes(log["topics"][0]).hex().removeprefix("0x"))
        if emitted is None:
            continue
        event = contract_.events[str(emitted["name"])]().process_log(log)
        out.append((event["event"], abiargs.to_json(dict(event["args"]))))
    return out


# --- command line: chainpush deploy / chainpush call ------------------------------------------


def _endpoint(args: argparse.Namespace, where: Path) -> Endpoint:
    """--rpc/--ws/--ipc, else $CHAINPUSH_RPC, else the project's dev chain, else :8545."""
    if not (args.rpc or args.ws or args.ipc or os.environ.get("CHAINPUSH_RPC")):
        state = devstack.load_state(project.state_dir(where))
        if state is not None:
            return Endpoint.parse(state.node.url)
    return endpoint_from_arguments(args)


def _layout(where: Path) -> project.Layout:
    try:
        return project.layout(where)
    except ValueError as exc:
        raise DeployError(str(exc)) from exc


def _connect(args: argparse.Namespace, where: Path) -> Web3:
    endpoint = _endpoint(args, where)
    try:
        w3 = connect(endpoint)
    except NodeUnreachable as exc:
        raise DeployError(f"{exc}; is the dev chain up? start it: chainpush dev up") from exc
    use_sender(w3, args.private_key)
    return w3


def _common(parser: argparse.ArgumentParser) -> None:
    add_endpoint_arguments(parser)
    parser.add_argument("--private-key", metavar="HEX", default=None,
                        help="sign locally with this key (env CHAINPUSH_PRIVATE_KEY; default: the "
                        "node's first unlocked account, on the dev chain its first dev account)")
    parser.add_argument("--project", metavar="DIR", default=None,
                        help="the project (default: the directory of the nearest chainpush.toml, "
                        "else cwd); abi/ and deployments/ come from its [watch] section")


def _report(command: str, exc: Exception) -> int:
    print(f"chainpush {command}: {exc}", file=sys.stderr)
    return 1


def cmd_deploy(args: argparse.Namespace) -> int:
    where = Path(args.project).resolve() if args.project else project.find_project()
    try:
        paths = _layout(where)
        load_artifact(paths.abi_dir, args.name)  # compiled? say so before reaching the node
        w3 = _connect(args, where)
        done = deploy_one(w3, args.name, args.args, paths=paths, value_wei=args.value)
    except (WatcherError, DeployError, abiargs.ArgumentError) as exc:
        return _report("deploy", exc)
    chain_id = int(w3.eth.chain_id)
    print(f"{done.name} deployed at {done.address} in block {done.block} (tx {done.tx})")
    print(f"recorded in {paths.deployments_file(chain_id)}; to watch it, chainpush.toml needs:\n"
          f"  [[contracts]]\n  name = \"{done.name}\"")
    print(done.address)
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    where = Path(args.project).resolve() if args.project else project.find_project()
    try:
        paths = _layout(where)
        w3 = _connect(args, where)
        target = contract(w3, args.name, abi_dir=paths.abi_dir,
                          deployments_dir=paths.deployments, fix=f"chainpush deploy {args.name}")
        entry = abiargs.select_function(target.abi, args.function, len(args.args))
        values = abiargs.parse_args(entry, args.args, what=abiargs.signature(entry))
        function = target.get_function_by_signature(abiargs.signature(entry))(*values)
        if abiargs.is_view(entry) and not args.send:
            result = function.call()
            print(abiargs.render_result(entry.get("outputs", []), result))
            return 0
        if not args.send:
            command = " ".join(["chainpush call", args.name, args.function, *args.args, "--send"])
            raise DeployError(
                f"{abiargs.signature(entry)} changes state ({entry.get('stateMutability')}): "
                f"send it as a transaction: {command}"
            )
        if args.value and entry.get("stateMutability") != "payable":
            raise DeployError(f"{abiargs.signature(entry)} is not payable: drop --value")
        tx: TxParams = {"value": w3.to_wei(args.value, "wei")} if args.value else {}
        receipt = wait(w3, function.transact(tx), f"{args.name}.{abiargs.signature(entry)}")
    except (WatcherError, DeployError, abiargs.ArgumentError) as exc:
        return _report("call", exc)
    print(f"tx 0x{receipt['transactionHash'].hex()}")
    print(f"block {receipt['blockNumber']}")
    print(f"gas used {receipt['gasUsed']}")
    for name, event_args in decoded_events(target, receipt):
        print(f"event {name} {json.dumps(event_args)}")
    return 0


def _wei(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--value is in wei, an integer; got {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"--value must be >= 0 wei, got {value}")
    return value


ARGS_HELP = ("arguments by ABI type: uint/int decimal or 0x hex, address 0x…, bool true/false, "
             "bytes 0x hex, string as is, arrays and tuples as JSON ('[1,2]')")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chainpush deploy`` and ``chainpush call``."""
    deploy_p = sub.add_parser(
        "deploy", help="deploy a compiled contract and record its address",
        description="Deploy abi/<NAME>.json (from `chainpush compile`) with constructor "
        "arguments parsed by their ABI types, wait until it is mined and record it in "
        "deployments/<chain id>.json (replacing an earlier record of NAME). A [[contracts]] "
        "entry in chainpush.toml with just `name = NAME` then watches it. The node: --rpc/--ws/"
        "--ipc, else $CHAINPUSH_RPC, else the project's dev chain (chainpush dev up), else "
        "http://127.0.0.1:8545.",
        epilog="examples:\n  chainpush deploy Vault\n  chainpush deploy Token \"My Token\" "
        "MTK 1000000\n  chainpush deploy Registry "
        "'[\"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"]'\n"
        "  chainpush deploy Vault --rpc https://rpc.example.org --private-key $KEY",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deploy_p.add_argument("name", metavar="NAME", help="contract name (abi/<NAME>.json)")
    deploy_p.add_argument("args", nargs="*", metavar="ARG", help="constructor " + ARGS_HELP)
    deploy_p.add_argument("--value", type=_wei, default=0, metavar="WEI",
                          help="wei sent with a payable constructor (default 0)")
    _common(deploy_p)
    deploy_p.set_defaults(func=cmd_deploy)

    call_p = sub.add_parser(
        "call", help="call a deployed contract (view) or send a transaction (--send)",
        description="Call function FN of the deployed contract NAME (address from "
        "deployments/<chain id>.json, ABI from abi/). A view call prints the decoded result alone "
        "on the last line (a number in decimal, true/false, 0x… for addresses and bytes, JSON for "
        "several values, arrays and tuples). With --send, FN is sent as a transaction: prints the "
        "tx hash, its block and the events the contract emitted, decoded.",
        epilog="examples:\n  chainpush call CallDemo get                       # 2020\n"
        "  chainpush call Vault total\n  chainpush call Vault deposit --value 1000 --send\n"
        "  chainpush call Vault 'transfer(address,uint256)' 0x7099…79C8 5 --send",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call_p.add_argument("name", metavar="NAME", help="deployed contract name")
    call_p.add_argument("function", metavar="FN",
                        help="function name, or its signature when overloaded: 'f(uint256)'")
    call_p.add_argument("args", nargs="*", metavar="ARG", help=ARGS_HELP)
    call_p.add_argument("--send", action="store_true",
                        help="send a transaction (required for functions that change state)")
    call_p.add_argument("--value", type=_wei, default=0, metavar="WEI",
                        help="with --send: wei sent to a payable function (default 0)")
    _common(call_p)
    call_p.set_defaults(func=cmd_call)
