"""Hardhat 2 compiles contracts/ offline (hardhat.config.js hands it the npm solc) to exactly
the ABI and bytecode ``chainpush compile`` committed in abi/: both use the same settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from chainpush.watcher import compile as wc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
HARDHAT = ROOT / "node_modules" / ".bin" / "hardhat"


@pytest.mark.requires(HARDHAT.exists(), "hardhat is not installed (npm install)")
def test_hardhat_compiles_offline_to_our_abi_and_bytecode(tmp_path: Path, unit: float) -> None:
    # A copy, so artifacts/ and cache/ never land in the shared work tree.
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    shutil.copy(ROOT / "hardhat.config.js", tmp_path / "hardhat.config.js")
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "CI": "true"}
    done = subprocess.run(
        [str(HARDHAT), "compile"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120 * unit,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "successfully" in done.stdout, done.stdout

    names = sorted(p.stem for p in (ROOT / "abi").glob("*.json"))
    assert {"CallDemo", "DemoToken"} <= set(names)
    for name in names:
        ours = wc.load_artifact(ROOT / "abi", name)
        # under the source file that defines it (DemoPair lives in DemoFactory.sol)
        built = tmp_path / "artifacts" / ours.source_name / f"{name}.json"
        theirs = json.loads(built.read_text())
        assert theirs["sourceName"] == ours.source_name
        assert theirs["abi"] == ours.abi, name
        assert theirs["bytecode"] == ours.bytecode, name
        assert theirs["deployedBytecode"] == ours.deployed_bytecode, name
