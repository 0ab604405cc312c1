"""A team's own build outputs as ABI and address sources, on a real anvil: the watcher decodes
every event identically whether the ABI comes from our abi/, a Foundry out/, a Hardhat
artifacts/ or a Hardhat Ignition deployment.

* Hardhat: the real ``npx hardhat compile`` (offline through hardhat.config.js, as
  test_hardhat.py runs it) writes ``artifacts/contracts/<File>.sol/<Name>.json``.
* Foundry: no ``forge`` is installable here (ENVIRONMENT.md: foundryup downloads a binary), so
  ``out/`` is built from our own compiler (the npm solc, the settings of ``chainpush compile``)
  in Foundry's documented layout: ``out/<File>.sol/<Name>.json`` holding ``abi``,
  ``bytecode``/``deployedBytecode`` as ``{object, sourceMap, linkReferences}``,
  ``methodIdentifiers``, ``rawMetadata``/``metadata`` (whose ``compilationTarget`` names
  ``src/<File>.sol``) and ``id``, next to ``out/build-info/``. ``chainpush deploy`` deploys from
  it.
* Ignition: not installed here either; the deployment is real (the contracts ``chainpush
  deploy`` put on anvil) and written in Ignition's documented shape:
  ``ignition/deployments/chain-31337/deployed_addresses.json`` (``{"<Module>#<Future>":
  address}``) and ``artifacts/<Module>#<Future>.json`` (Hardhat artifacts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher import compile as wc
from chainpush.watcher.config import Config, load_config
from chainpush.watcher.service import Watcher
from tests.conftest import ROOT, Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

HARDHAT = ROOT / "node_modules" / ".bin" / "hardhat"
CHAINPUSH = ROOT / ".venv" / "bin" / "chainpush"
NAMES = ("CallDemo", "DemoToken")
#: solc's standard JSON on stdin → its output on stdout, with the project's npm solc
SOLC_JS = ("const solc = require('solc'); let input = '';"
           "process.stdin.on('data', d => input += d);"
           "process.stdin.on('end', () => process.stdout.write(solc.compile(input)));")


def hardhat_artifacts(work: Path, unit: float) -> Path:
    """``npx hardhat compile`` of contracts/ in ``work``: its ``artifacts/``."""
    shutil.copytree(ROOT / "contracts", work / "contracts")
    shutil.copy(ROOT / "hardhat.config.js", work / "hardhat.config.js")
    (work / "node_modules").symlink_to(ROOT / "node_modules")
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "CI": "true"}
    done = subprocess.run([str(HARDHAT), "compile"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120 * unit)
    assert done.returncode == 0, done.stdout + done.stderr
    return work / "artifacts"


def foundry_out(work: Path, unit: float) -> Path:
    """contracts/ compiled as Foundry's ``src/`` into Foundry's ``out/`` layout."""
    sources = {f"src/{p.name}": {"content": p.read_text()}
               for p in sorted((ROOT / "contracts").glob("*.sol"))}
    request = {"language": "Solidity", "sources": sources, "settings": {
        **wc.COMPILER_SETTINGS,
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode", "evm.deployedBytecode",
                                        "evm.methodIdentifiers", "metadata"]}}}}
    done = subprocess.run(["node", "-e", SOLC_JS], input=json.dumps(request), cwd=ROOT,
                          capture_output=True, text=True, timeout=120 * unit, check=True)
    output = json.loads(done.stdout)
    assert not [e for e in output.get("errors", []) if e["severity"] == "error"], output
    out = work / "out"
    for i, (unit_name, contracts) in enumerate(sorted(output["contracts"].items())):
        for name, c in contracts.items():
            evm = c["evm"]
            artifact = {
                "abi": c["abi"],
                "bytecode": {"object": "0x" + evm["bytecode"]["object"],
                             "sourceMap": evm["bytecode"]["sourceMap"],
                             "linkReferences": evm["bytecode"]["linkReferences"]},
                "deployedBytecode": {
                    "object": "0x" + evm["deployedBytecode"]["object"],
                    "sourceMap": evm["deployedBytecode"]["sourceMap"],
                    "linkReferences": evm["deployedBytecode"]["linkReferences"],
                    "immutableReferences": evm["deployedBytecode"].get("immutableReferences",
                                                                       {})},
                "methodIdentifiers": evm["methodIdentifiers"],
                "rawMetadata": c["metadata"],
                "metadata": json.loads(c["metadata"]),
                "id": i,
            }
            path = out / Path(unit_name).name / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(artifact))
    (out / "build-info").mkdir()
    (out / "build-info" / "0a1b2c.json").write_text(json.dumps(
        {"id": "0a1b2c", "source_id_to_path": {str(i): s for i, s in enumerate(sources)},
         "language": "Solidity"}))
    return out


def chainpush(cwd: Path, *args: str, unit: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHAINPUSH), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60 * unit, stdin=subprocess.DEVNULL)


def write_project(path: Path, *, url: str, mongo_uri: str, database: str, start_block: int,
                  watch: Sequence[str] = ()) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "chainpush.toml").write_text("\n".join([
        "[node]", f'rpc = "{url}"', "chain_id = 31337", "poll_interval_s = 0.1", "",
        "[watch]", 'name = "artifacts"', f"start_block = {start_block}", *watch, "",
        "[stores]", f'mongo_uri = "{mongo_uri}"', f'database = "{database}"', "",
        "[[contracts]]", 'name = "DemoToken"', "",
        "[[contracts]]", 'name = "CallDemo"', "[[contracts.state]]", 'function = "get"',
        'on = ["ValueChanged"]', ""]))
    return path


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    async def accept(self, batch: Sequence[dict[str, object]]) -> None:
        self.records.extend(batch)


async def watch_until_caught_up(config: Config, url: str, unit: float) -> list[dict[str, Any]]:
    sink = ListSink()
    async with Watcher(config, sink) as w:
        task = asyncio.create_task(w.run())
        await ws.until_caught_up(lambda: w.tip_hash, url, 30 * unit, task.done)
        if task.done():
            task.result()
        await w.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return sorted(sink.records, key=lambda r: (str(r["id"]), str(r["status"])))


async def test_foundry_hardhat_and_ignition_decode_like_our_abi(
    anvil: Anvil, tmp_path: Path, mongo_uri: str, mongo_db_name: str, unit: float,
) -> None:
    if not HARDHAT.exists():
        pytest.fail("hardhat not installed: run `npm install`")
    url = anvil.http_url
    artifacts = await asyncio.to_thread(hardhat_artifacts, tmp_path / "hardhat-build", unit)
    first_block = ws.head(url) + 1

    def project(kind: str, *watch: str) -> Path:
        return write_project(tmp_path / kind, url=url, mongo_uri=mongo_uri,
                             database=f"{mongo_db_name}_{kind}", start_block=first_block,
                             watch=watch)

    ours = project("ours", f'abi_dir = "{ROOT / "abi"}"')
    foundry = project("foundry", 'abi_dir = "out"')
    await asyncio.to_thread(foundry_out, foundry, unit)
    hardhat = project("hardhat")  # the default abi_dir list finds artifacts/
    shutil.copytree(artifacts, hardhat / "artifacts")
    ignition = project("ignition")  # nothing in abi/, out/, artifacts/: all from Ignition

    # the team deploys from its Foundry build (chainpush deploy reads out/)
    for name in NAMES:
        done = chainpush(foundry, "deploy", name, "--rpc", url, unit=unit)
        assert done.returncode == 0, done.stderr
    record = json.loads((foundry / "deployments" / "31337.json").read_text())
    addresses = {n: record["contracts"][n]["address"] for n in NAMES}
    for where in (ours, hardhat):
        (where / "deployments").mkdir()
        shutil.copy(foundry / "deployments" / "31337.json", where / "deployments")
    deployment = ignition / "ignition" / "deployments" / "chain-31337"
    (deployment / "artifacts").mkdir(parents=True)
    (deployment / "deployed_addresses.json").write_text(json.dumps(
        {f"DemoModule#{n}": a for n, a in addresses.items()}, indent=2))
    for n in NAMES:
        shutil.copy(artifacts / "contracts" / f"{n}.sol" / f"{n}.json",
                    deployment / "artifacts" / f"DemoModule#{n}.json")

    # every DemoToken event shape, and CallDemo's ValueChanged + state read
    await asyncio.to_thread(ws.mine_traffic, url, addresses["DemoToken"], blocks=3,
                            txs_per_block=6)
    set_tx = {"from": ws.OWNER, "to": addresses["CallDemo"], "gas": hex(100_000),
              "data": ws.calldata("set(uint256)", ["uint256"], [2021])}
    await asyncio.to_thread(ws.rpc, url, "eth_sendTransaction", [set_tx])

    results: dict[str, list[dict[str, Any]]] = {}
    for where in (ours, foundry, hardhat, ignition):
        checked = await asyncio.to_thread(chainpush, where, "watch", "--check-config",
                                          unit=unit)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "config ok" in checked.stdout
        for name in NAMES:
            assert f"{name} at {addresses[name]} on chain 31337: code present" in checked.stdout
        results[where.name] = await watch_until_caught_up(
            load_config(where / "chainpush.toml"), url, unit)

    assert results["foundry"] == results["ours"]
    assert results["hardhat"] == results["ours"]
    assert results["ignition"] == results["ours"]
    events = {r["event"] for r in results["ours"] if r["kind"] == "event"}
    assert {"Transfer", "Message", "Batch", "Tagged", "Order", "ValueChanged"} <= events
    assert any(r["kind"] == "state" for r in results["ours"])
