"""``chainpush watch --check-config`` against a real anvil: ``[node] chain_id`` is compared with
what the node serves, and a node that does not answer is said to be so (with what was and was
not checked), never a traceback or a silent "config ok"."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, Anvil
from tests.integration import watch_support as ws

pytestmark = pytest.mark.integration

CHAINPUSH = ROOT / ".venv" / "bin" / "chainpush"


def project(tmp_path: Path, *, urls: list[str], chain_id: int | None, address: str) -> Path:
    lines = ["[node]", f"urls = {json.dumps(urls)}", "timeout_s = 2"]
    if chain_id is not None:
        lines.append(f"chain_id = {chain_id}")
    lines += ["", "[watch]", f'abi_dir = "{ROOT / "abi"}"', "",
              "[[contracts]]", 'name = "DemoToken"', f'address = "{address}"', ""]
    (tmp_path / "chainpush.toml").write_text("\n".join(lines))
    return tmp_path


def check(cwd: Path, unit: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHAINPUSH), "watch", "--check-config"], cwd=cwd,
                          capture_output=True, text=True, timeout=60 * unit,
                          stdin=subprocess.DEVNULL)


def test_chain_id_is_checked_against_the_node(anvil: Anvil, tmp_path: Path, unit: float) -> None:
    token, _ = ws.deploy(anvil.http_url, "DemoToken")
    ok = check(project(tmp_path, urls=[anvil.http_url], chain_id=31337, address=token), unit)
    assert ok.returncode == 0, ok.stderr
    assert f"[node] chain_id 31337: http http://127.0.0.1:{anvil.port} serves it" in ok.stdout
    assert "config ok" in ok.stdout

    wrong = check(project(tmp_path, urls=[anvil.http_url], chain_id=1, address=token), unit)
    assert wrong.returncode == 2
    assert "config ok" not in wrong.stdout
    assert ("chainpush.toml: [node] chain_id is 1, but http "
            f"http://127.0.0.1:{anvil.port} serves chain 31337") in wrong.stderr

    # from a subdirectory of the project: the same chainpush.toml (found above)
    (tmp_path / "src").mkdir()
    below = check(tmp_path / "src", unit)
    assert below.returncode == 2 and "[node] chain_id is 1" in below.stderr

    # unset: whatever the node serves is reported, not compared
    unset = check(project(tmp_path, urls=[anvil.http_url], chain_id=None, address=token), unit)
    assert unset.returncode == 0, unset.stderr
    assert f"http http://127.0.0.1:{anvil.port} serves chain 31337 ([node] chain_id unset)" in \
        unset.stdout


def test_an_unreachable_node_is_said_so(anvil: Anvil, tmp_path: Path, unit: float) -> None:
    token, _ = ws.deploy(anvil.http_url, "DemoToken")
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    # failover: the dead endpoint is reported, the live one checked
    both = check(project(tmp_path, urls=[dead, anvil.ws_url], chain_id=31337, address=token),
                 unit)
    assert both.returncode == 0, both.stderr
    assert "http http://127.0.0.1:9: unreachable" in both.stdout
    assert f"[node] chain_id 31337: ws ws://127.0.0.1:{anvil.port} serves it" in both.stdout

    none = check(project(tmp_path, urls=[dead], chain_id=31337, address=token), unit)
    assert none.returncode == 1
    assert "ABIs and names ok" in none.stdout  # what could be checked without the node was
    assert ("no node answered (http http://127.0.0.1:9): [node] chain_id 31337 and the "
            "contracts' code not checked") in none.stderr
    assert "Traceback" not in none.stderr
