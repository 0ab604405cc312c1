"""The geth tutorial, end to end on a real anvil: deploy, call (2020), transact, decode the
receipt — over HTTP, websocket and IPC, through the scripts a user runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from chainpush import deploy, traffic
from tests.conftest import ROOT, Anvil
from watcher.node import Endpoint, connect

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
    assert set(record["contracts"]) == {"CallDemo", "DemoToken"}
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
