"""ABIs and addresses from where teams have them: chainpush's abi/, Foundry's out/, Hardhat's
artifacts/ and Hardhat Ignition deployments (watcher.artifacts, through bind and load_artifact).

The files here are small hand-made copies of each tool's documented shape, built from our own
abi/ (tests/integration/test_artifacts.py runs the real Hardhat and a real node)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher import compile as wc
from chainpush.watcher.artifacts import ArtifactNotFound, find_artifact, read_artifact
from chainpush.watcher.binding import bind
from chainpush.watcher.config import Config, load_config
from chainpush.watcher.errors import ConfigError, InvalidABI

ROOT = Path(__file__).resolve().parents[2]
OURS = json.loads((ROOT / "abi" / "DemoToken.json").read_text())
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def foundry(source: str = "src/DemoToken.sol", name: str = "DemoToken") -> dict[str, Any]:
    """Foundry's ``out/<File>.sol/<Name>.json``: bytecode objects, metadata naming the source."""
    metadata = {"compiler": {"version": "0.8.37+commit.f401782d"},
                "settings": {"compilationTarget": {source: name}, "evmVersion": "cancun"}}
    return {"abi": OURS["abi"],
            "bytecode": {"object": OURS["bytecode"], "sourceMap": "", "linkReferences": {}},
            "deployedBytecode": {"object": OURS["deployedBytecode"], "sourceMap": "",
                                 "linkReferences": {}, "immutableReferences": {}},
            "methodIdentifiers": {}, "rawMetadata": json.dumps(metadata), "metadata": metadata,
            "id": 3}


def hardhat(source: str = "contracts/DemoToken.sol", name: str = "DemoToken") -> dict[str, Any]:
    """Hardhat's ``artifacts/<source>/<Name>.json``."""
    return {"_format": "hh-sol-artifact-1", "contractName": name, "sourceName": source,
            "abi": OURS["abi"], "bytecode": OURS["bytecode"],
            "deployedBytecode": OURS["deployedBytecode"], "linkReferences": {},
            "deployedLinkReferences": {}}


def put(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def config(tmp_path: Path, watch: str = "", contract: str = 'name = "DemoToken"') -> Config:
    path = tmp_path / "chainpush.toml"
    path.write_text(f"[watch]\n{watch}\n[[contracts]]\n{contract}\n")
    return load_config(path)


def test_foundry_and_hardhat_trees_are_found_and_read(tmp_path: Path) -> None:
    out = put(tmp_path / "out" / "DemoToken.sol" / "DemoToken.json", foundry())
    put(tmp_path / "out" / "build-info" / "DemoToken.sol" / "DemoToken.json", {"not": "one"})
    art = put(tmp_path / "artifacts" / "contracts" / "DemoToken.sol" / "DemoToken.json",
              hardhat())
    put(art.with_name("DemoToken.dbg.json"), {"_format": "hh-sol-dbg-1"})
    assert find_artifact([tmp_path / "abi", tmp_path / "out"], "DemoToken") == out
    assert find_artifact([tmp_path / "artifacts"], "DemoToken") == art
    f, h = read_artifact(out), read_artifact(art)
    assert (f.layout, f.source_name, f.contract_name) == ("foundry", "src/DemoToken.sol",
                                                          "DemoToken")
    assert (h.layout, h.source_name) == ("hardhat", "contracts/DemoToken.sol")
    assert f.abi == h.abi == OURS["abi"]
    assert f.bytecode == h.bytecode == OURS["bytecode"]
    assert f.compiler_version == "0.8.37+commit.f401782d"


def test_flat_chainpush_files_come_first(tmp_path: Path) -> None:
    put(tmp_path / "abi" / "DemoToken.abi", OURS["abi"])
    put(tmp_path / "abi" / "Lib.sol" / "DemoToken.json", foundry())
    assert find_artifact([tmp_path / "abi"], "DemoToken") == tmp_path / "abi" / "DemoToken.abi"


def test_same_name_in_two_files_needs_a_qualified_name(tmp_path: Path) -> None:
    a = put(tmp_path / "out" / "A.sol" / "DemoToken.json", foundry("src/A.sol"))
    b = put(tmp_path / "out" / "B.sol" / "DemoToken.json", foundry("src/b/B.sol"))
    with pytest.raises(InvalidABI, match=r'2 artifacts of DemoToken in .*out: A\.sol/DemoToken'
                       r'\.json, B\.sol/DemoToken\.json; say which with \[\[contracts\]\] abi = '
                       r'one of "src/A\.sol:DemoToken", "src/b/B\.sol:DemoToken"'):
        find_artifact([tmp_path / "out"], "DemoToken")
    assert find_artifact([tmp_path / "out"], "src/A.sol:DemoToken") == a
    assert find_artifact([tmp_path / "out"], "B.sol:DemoToken") == b


def test_nothing_found_names_every_place_looked(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(ArtifactNotFound) as info:
        find_artifact([tmp_path / "abi", tmp_path / "out"], "Vault")
    text = str(info.value)
    assert f"{tmp_path}/abi/ (no such directory)" in text
    assert f"{tmp_path}/out/ (Vault.abi, Vault.json, **/<File>.sol/Vault.json)" in text
    assert "forge build" in text and "[watch] abi_dir" in text


def test_bind_reads_foundry_with_the_default_abi_dirs(tmp_path: Path) -> None:
    put(tmp_path / "out" / "DemoToken.sol" / "DemoToken.json", foundry())
    bound = bind(config(tmp_path, contract=f'name = "DemoToken"\naddress = "{TOKEN}"'), 31337)
    assert bound.specs[0].abi.source == str(tmp_path / "out" / "DemoToken.sol" /
                                            "DemoToken.json")
    assert {e.name for e in bound.specs[0].abi.events} >= {"Transfer", "Message"}


def test_abi_dir_as_a_list_and_a_clear_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, 'abi_dir = ["build", "artifacts"]', f'name = "X"\naddress = "{TOKEN}"')
    assert cfg.watch.abi_dirs == (tmp_path / "build", tmp_path / "artifacts")
    with pytest.raises(InvalidABI, match=r"chainpush\.toml: \[\[contracts\]\] X\.abi: no ABI for "
                       r"X: looked in .*build/ \(no such directory\); .*artifacts/ \(no such"):
        bind(cfg, 31337)
    with pytest.raises(ConfigError, match=r"\[watch\] abi_dir must be a string or a list"):
        config(tmp_path, "abi_dir = 3")


def ignition(tmp_path: Path, addresses: dict[str, str], chain: str = "chain-31337") -> Path:
    directory = tmp_path / "ignition" / "deployments" / chain
    put(directory / "deployed_addresses.json", addresses)
    return directory


def test_address_and_abi_from_an_ignition_deployment(tmp_path: Path) -> None:
    directory = ignition(tmp_path, {"TokenModule#DemoToken": TOKEN})
    put(directory / "artifacts" / "TokenModule#DemoToken.json", hardhat())
    bound = bind(config(tmp_path), 31337)
    assert bound.specs[0].address == TOKEN
    assert bound.specs[0].abi.source == str(directory / "artifacts" /
                                            "TokenModule#DemoToken.json")
    assert bound.start_block == 0  # Ignition records no deployment block
    bind(config(tmp_path), None)  # no node yet: the ABI is still found and checked
    # another chain's deployment is not this one's
    with pytest.raises(ConfigError, match=r"no entry 'DemoToken' for chain 1, nor a future "
                       r"'DemoToken' in .*chain-1/deployed_addresses\.json"):
        ignition(tmp_path, {"Other#Thing": OTHER}, chain="chain-1")
        bind(config(tmp_path), 1)


def test_deployments_file_wins_and_futures_are_disambiguated(tmp_path: Path) -> None:
    put(tmp_path / "abi" / "DemoToken.abi", OURS["abi"])
    ignition(tmp_path, {"A#DemoToken": TOKEN, "B#DemoToken": OTHER})
    with pytest.raises(ConfigError, match=r"has 2 futures named DemoToken \(A#DemoToken, "
                       r"B#DemoToken\): set deployment = one of them"):
        bind(config(tmp_path), 31337)
    assert bind(config(tmp_path, contract='name = "DemoToken"\ndeployment = "B#DemoToken"'),
                31337).specs[0].address == OTHER
    put(tmp_path / "deployments" / "31337.json",
        {"chain_id": 31337, "contracts": {"DemoToken": {"address": TOKEN, "block": 7}}})
    bound = bind(config(tmp_path), 31337)
    assert (bound.specs[0].address, bound.start_block) == (TOKEN, 7)


def test_an_ignition_setting_must_exist_and_one_deployment_dir_works(tmp_path: Path) -> None:
    put(tmp_path / "abi" / "DemoToken.abi", OURS["abi"])
    with pytest.raises(ConfigError, match=r"\[watch\] ignition .*nope: no such directory"):
        bind(config(tmp_path, 'ignition = "nope"'), 31337)
    one = tmp_path / "ignition" / "deployments" / "mainnet-v2"
    put(one / "deployed_addresses.json", {"TokenModule#DemoToken": OTHER})
    cfg = config(tmp_path, 'ignition = "ignition/deployments/mainnet-v2"')
    assert bind(cfg, 5).specs[0].address == OTHER


def test_load_artifact_deploys_from_foundry_and_hardhat_files(tmp_path: Path) -> None:
    put(tmp_path / "out" / "DemoToken.sol" / "DemoToken.json", foundry())
    put(tmp_path / "artifacts" / "contracts" / "DemoToken.sol" / "DemoToken.json", hardhat())
    f = wc.load_artifact(tmp_path / "out", "DemoToken")
    h = wc.load_artifact(tmp_path / "artifacts", "contracts/DemoToken.sol:DemoToken")
    assert f.bytecode == h.bytecode == OURS["bytecode"]
    assert f.deployed_bytecode == OURS["deployedBytecode"]
    assert (f.source_name, h.source_name) == ("src/DemoToken.sol", "contracts/DemoToken.sol")
    assert f.settings["evmVersion"] == "cancun" and h.settings == {}
    put(tmp_path / "abi" / "DemoToken.abi", OURS["abi"])
    with pytest.raises(ConfigError, match=r"DemoToken\.abi has the ABI but no bytecode"):
        wc.load_artifact(tmp_path / "abi", "DemoToken")
