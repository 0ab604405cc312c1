"""The geth tutorial, end to end on a real anvil: deploy, call (2020), transact, decode the
receipt — over HTTP, websocket and IPC, through the scripts a user runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from chainpush import deploy, traffic
from chainpush.watcher.node import Endpoint, connect
from tests.conftest import ROOT, Anvil, start_test_anvil

pytestmark = pytest.mark.integration


def transports(node: Anvil) -> dict[str, list[str]]:
    return {
        "http": ["--rpc", node.http_url],
        "ws": ["--ws", node.ws_url],
        "ipc": ["--ipc", str(node.ipc_path)],
    }


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
        timeout=60, cwd=ROOT,
    )


@pytest.mark.parametrize("transport", ["http", "ws", "ipc"])
def test_deploy_then_call_returns_2020(anvil: Anvil, tmp_path: Path, transport: str) -> None:
    flags = [*transports(anvil)[transport], "--deployments-dir", str(tmp_path)]
    deployed = script("deploy.py", *flags)
    assert deployed.returncode == 0, deployed.stderr
    record = json.loads((tmp_path / "31337.json").read_text())
    assert set(record["contracts"]) == {"CallDemo", "DemoToken", "DemoFactory"}
    assert record["chain_id"] == 31337

    called = script("call.py", *flags)
    assert called.returncode == 0, called.stderr
    assert called.stdout.strip() == "2020"

    # deploying again is a no-op: same addresses, no new blocks
    w3 = connect(Endpoint("http", anvil.http_url))
    height = w3.eth.block_number
    again = script("deploy.py", *flags)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "31337.json").read_text()) == record
    assert w3.eth.block_number == height


@pytest.mark.parametrize("transport", ["http", "ws", "ipc"])
def test_every_demo_event_is_emitted_and_decodes(
    anvil: Anvil, tmp_path: Path, transport: str
) -> None:
    flags = [*transports(anvil)[transport], "--deployments-dir", str(tmp_path)]
    assert script("deploy.py", *flags).returncode == 0
    out = script("call.py", *flags, "--set", "2021", "--emit", "all", "--seed", "7")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    sent = [json.loads(line) for line in lines[:-1]]
    assert [s["event"] for s in sent] == [
        "ValueChanged", "Transfer", "Approval", "Message", "Batch", "Tagged", "Order"
    ]

    w3 = connect(Endpoint("http", anvil.http_url))
    token = deploy.contract(w3, "DemoToken", deployments_dir=tmp_path)
    call_demo = deploy.contract(w3, "CallDemo", deployments_dir=tmp_path)
    for item in sent:
        receipt = w3.eth.get_transaction_receipt(item["tx"])
        source = call_demo if item["event"] == "ValueChanged" else token
        (decoded,) = source.events[item["event"]]().process_receipt(receipt)
        assert decoded["event"] == item["event"]
        assert decoded["blockNumber"] == item["block"]
    changes = [
        call_demo.events.ValueChanged().process_receipt(w3.eth.get_transaction_receipt(s["tx"]))
        for s in sent if s["event"] == "ValueChanged"
    ]
    # --set 2021 ran first, so the emitted change starts from 2021 and the call reads its result
    assert changes[0][0]["args"]["oldValue"] == 2021
    assert lines[-1] == str(changes[0][0]["args"]["newValue"])
    message_tx = next(s["tx"] for s in sent if s["event"] == "Message")
    (message,) = token.events.Message().process_receipt(w3.eth.get_transaction_receipt(message_tx))
    assert message["args"]["to"] in w3.eth.accounts[1:]
    assert message["args"]["text"].startswith("hello #")


def test_value_changed_carries_old_and_new(anvil: Anvil, tmp_path: Path) -> None:
    w3 = connect(Endpoint("http", anvil.http_url))
    deploy.use_sender(w3)
    deploy.deploy(w3, deployments_dir=tmp_path)
    demo = traffic.Demo.attach(w3, tmp_path)
    receipt = demo.value_changed(7)
    (event,) = demo.call_demo.events.ValueChanged().process_receipt(receipt)
    assert dict(event["args"]) == {"by": demo.sender, "oldValue": 2020, "newValue": 7}
    assert demo.call_demo.functions.get().call() == 7


def test_call_without_deployment_says_what_to_do(anvil: Anvil, tmp_path: Path) -> None:
    out = script("call.py", "--rpc", anvil.http_url, "--deployments-dir", str(tmp_path))
    assert out.returncode == 1
    assert "CallDemo is not deployed on chain 31337" in out.stderr
    assert "scripts/deploy.py" in out.stderr


def test_stale_deployment_is_redeployed(anvil: Anvil, tmp_path: Path) -> None:
    fake = deploy.Deployment(
        "CallDemo", Web3.to_checksum_address("0x" + "11" * 20), 1, "0x" + "00" * 32
    )
    deploy.write_deployments(31337, {"CallDemo": fake}, tmp_path)
    out = script("call.py", "--rpc", anvil.http_url, "--deployments-dir", str(tmp_path))
    assert out.returncode == 1
    assert "no code at" in out.stderr
    flags = ["--rpc", anvil.http_url, "--deployments-dir", str(tmp_path)]
    assert script("deploy.py", *flags).returncode == 0
    assert script("call.py", *flags).stdout.strip() == "2020"


def test_unreachable_node_is_a_clear_error(tmp_path: Path) -> None:
    from chainpush import procs

    out = script("call.py", "--rpc", f"http://127.0.0.1:{procs.free_port()}")
    assert out.returncode == 1
    assert "cannot reach node at http" in out.stderr
    assert "Traceback" not in out.stderr


# --- chainpush deploy / call: any compiled contract of a project -------------------------------


def chainpush(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINPUSH_")}
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "chainpush"), *args], capture_output=True, text=True,
        timeout=60, cwd=project, env=env,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with CallDemo compiled (our abi/), nothing deployed."""
    (tmp_path / "chainpush.toml").write_text('[watch]\nname = "p"\n')
    (tmp_path / "abi").mkdir()
    for suffix in (".abi", ".json"):
        shutil.copy(ROOT / "abi" / f"CallDemo{suffix}", tmp_path / "abi")
    return tmp_path


def test_chainpush_deploy_and_call_calldemo(anvil: Anvil, project: Path) -> None:
    rpc = ["--rpc", anvil.http_url]
    before = chainpush(project, "call", "CallDemo", "get", *rpc)
    assert before.returncode == 1
    assert before.stderr.rstrip().endswith("run chainpush deploy CallDemo")

    deployed = chainpush(project, "deploy", "CallDemo", *rpc)
    assert deployed.returncode == 0, deployed.stderr
    address = deployed.stdout.splitlines()[-1]
    record = json.loads((project / "deployments" / "31337.json").read_text())
    assert record["contracts"]["CallDemo"]["address"] == address

    got = chainpush(project, "call", "CallDemo", "get", *rpc)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1] == "2020"

    unsent = chainpush(project, "call", "CallDemo", "set", "7", *rpc)
    assert unsent.returncode == 1
    assert unsent.stderr.rstrip().endswith("chainpush call CallDemo set 7 --send")

    sent = chainpush(project, "call", "CallDemo", "set", "7", "--send", *rpc)
    assert sent.returncode == 0, sent.stderr
    lines = sent.stdout.splitlines()
    assert lines[0].startswith("tx 0x") and lines[1].startswith("block ")
    (event,) = [line for line in lines if line.startswith("event ValueChanged ")]
    assert json.loads(event.removeprefix("event ValueChanged ")) == {
        "by": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "oldValue": 2020, "newValue": 7}
    assert chainpush(project, "call", "CallDemo", "get", *rpc).stdout.splitlines()[-1] == "7"

    not_payable = chainpush(project, "call", "CallDemo", "set", "8", "--send", "--value", "1",
                            *rpc)
    assert not_payable.returncode == 1 and "is not payable: drop --value" in not_payable.stderr
    bad = chainpush(project, "deploy", "CallDemo", "extra", *rpc)
    assert bad.returncode == 1
    assert "CallDemo constructor takes 0 argument(s) (no arguments), got 1" in bad.stderr


def test_chainpush_deploy_uses_the_projects_dev_chain_and_names_the_fix(project: Path) -> None:
    """No --rpc: the dev chain of the project's stack.json; none running → `chainpush dev up`."""
    missing = chainpush(project, "deploy", "CallDemo")
    assert missing.returncode == 1
    assert missing.stderr.rstrip().endswith("is the dev chain up? start it: chainpush dev up")
    uncompiled = chainpush(project, "deploy", "Vault", "--rpc", "http://127.0.0.1:1")
    assert uncompiled.returncode == 1
    assert uncompiled.stderr.rstrip().endswith(
        f"no compiled artifact {project / 'abi' / 'Vault.json'} (nor a Foundry or Hardhat "
        f"**/<File>.sol/Vault.json in {project / 'abi'}): run `chainpush compile`")


def test_chainpush_deploy_over_ipc_and_call_over_websocket(anvil: Anvil, project: Path) -> None:
    deployed = chainpush(project, "deploy", "CallDemo", "--ipc", str(anvil.ipc_path))
    assert deployed.returncode == 0, deployed.stderr
    got = chainpush(project, "call", "CallDemo", "get", "--ws", anvil.ws_url)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1] == "2020"
    # another chain with the same id, from genesis: the recorded address has no code there
    fresh = start_test_anvil(project / "fresh")
    try:
        stale = chainpush(project, "call", "CallDemo", "get", "--rpc", fresh.http_url)
    finally:
        fresh.server.stop()
        fresh.ipc_path.unlink(missing_ok=True)
    assert stale.returncode == 1
    assert stale.stderr.rstrip().endswith("deploy it again: chainpush deploy CallDemo")
