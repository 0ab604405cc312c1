"""`chainpush compile` with the real compiler (tools/solc over npm solc, or a native solc 0.8.37).

The committed ``abi/`` must be exactly what compiling ``contracts/`` produces, anywhere on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import solcx.wrapper
from packaging.version import Version

from chainpush.cli import main
from chainpush.watcher import compile as wc
from chainpush.watcher.errors import CompileError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
CHAINPUSH = ROOT / ".venv" / "bin" / "chainpush"

BAD_SOURCE = """\
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

contract Bad {
    function f() public pure returns (uint256) { return 1 }
}
"""


@pytest.fixture(scope="session")
def compiled() -> dict[str, str]:
    """What compiling the repository's contracts/ produces (file name → text), once."""
    return wc.render(wc.compile_contracts(ROOT / "contracts"))


def with_node_modules(project: Path) -> Path:
    """``project`` with our node_modules (npm solc) linked in, as `npm install` would leave it."""
    (project / "node_modules").symlink_to(ROOT / "node_modules")
    return project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of contracts/ and abi/ elsewhere on disk, with node_modules/solc."""
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    shutil.copytree(ROOT / "abi", tmp_path / "abi")
    return with_node_modules(tmp_path)


def cli(project: Path, *extra: str) -> int:
    return main(["compile", "--contracts", str(project / "contracts"),
                 "--out", str(project / "abi"), *extra])


def test_committed_abi_is_what_compiling_produces(compiled: dict[str, str]) -> None:
    assert wc.read_outputs(ROOT / "abi") == compiled
    assert {"CallDemo.abi", "CallDemo.json", "DemoToken.abi", "DemoToken.json"} <= set(compiled)


def test_calldemo_is_the_tutorial_contract(compiled: dict[str, str]) -> None:
    abi = json.loads(compiled["CallDemo.abi"])
    get = next(e for e in abi if e.get("name") == "get")
    assert get["stateMutability"] == "view" and get["outputs"][0]["type"] == "uint256"
    # the stored 2020 (0x07e4) is set by the constructor code
    assert "6107e4" in json.loads(compiled["CallDemo.json"])["bytecode"]


def test_check_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(ROOT, "--check") == 0
    assert "up to date" in capsys.readouterr().out


def test_compile_in_a_copy_is_byte_identical(project: Path, compiled: dict[str, str]) -> None:
    shutil.rmtree(project / "abi")
    assert cli(project) == 0
    first = {p.name: p.read_bytes() for p in (project / "abi").iterdir()}
    assert {name: text.encode() for name, text in compiled.items()} == first
    assert cli(project) == 0  # a second run changes nothing
    assert {p.name: p.read_bytes() for p in (project / "abi").iterdir()} == first


def test_check_names_each_missing_stale_and_extra_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    abi = project / "abi"
    (abi / "DemoToken.json").unlink()
    tampered = json.loads((abi / "CallDemo.abi").read_text())[1:]
    (abi / "CallDemo.abi").write_text(wc.dumps(tampered))
    (abi / "Gone.abi").write_text("[]\n")
    assert cli(project, "--check") == 1
    err = capsys.readouterr().err
    assert "is out of date with" in err and "run `chainpush compile`" in err
    assert f"{abi / 'CallDemo.abi'}: stale (ABI differs)" in err
    assert f"{abi / 'DemoToken.json'}: missing" in err
    assert f"{abi / 'Gone.abi'}: extra" in err
    assert "DemoToken.abi" not in err
    # compile repairs all three
    assert cli(project) == 0
    assert cli(project, "--check") == 0


def test_a_source_edit_makes_the_artifact_stale(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = project / "contracts" / "CallDemo.sol"
    source.write_text(source.read_text() + "\n// a comment\n")
    assert cli(project, "--check") == 1
    err = capsys.readouterr().err
    # bytecodeHash "none": a comment changes the source hash and nothing else
    assert f"{project / 'abi' / 'CallDemo.json'}: stale (sourceHash differs)" in err
    assert "CallDemo.abi" not in err


def test_syntax_error_raises_compile_error_with_file_and_line(tmp_path: Path) -> None:
    with_node_modules(tmp_path)
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "Bad.sol").write_text(BAD_SOURCE)
    with pytest.raises(CompileError) as info:
        wc.compile_contracts(tmp_path / "contracts")
    assert "ParserError: Expected ';' but got '}'" in str(info.value)
    assert "contracts/Bad.sol:5:" in str(info.value)


def test_syntax_error_exits_1_from_the_command(tmp_path: Path, unit: float) -> None:
    with_node_modules(tmp_path)
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "Bad.sol").write_text(BAD_SOURCE)
    done = subprocess.run(
        [str(CHAINPUSH), "compile"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60 * unit,
    )
    assert done.returncode == 1
    assert "chainpush compile: solc rejected the sources:" in done.stderr
    assert "--> contracts/Bad.sol:5:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "abi").exists()


def test_imports_between_contract_files(tmp_path: Path) -> None:
    with_node_modules(tmp_path)
    (tmp_path / "src" / "lib").mkdir(parents=True)
    (tmp_path / "src" / "lib" / "Base.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\n"
        "abstract contract Base { event Hello(uint256 n); }\n"
    )
    (tmp_path / "src" / "Child.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\nimport './lib/Base.sol';\n"
        "contract Child is Base { function hi() external { emit Hello(1); } }\n"
    )
    arts = wc.compile_contracts(tmp_path / "src")
    assert sorted(arts) == ["Base", "Child"]
    assert arts["Child"].source_name == "src/Child.sol"
    assert arts["Base"].bytecode == "0x"  # abstract: ABI only
    assert any(e.get("name") == "Hello" for e in arts["Child"].abi)


# --- the shim ---


def test_shim_version_parses_like_solcx(unit: float) -> None:
    out = subprocess.run([str(wc.SHIM), "--version"], capture_output=True, text=True,
                         check=True, timeout=30 * unit).stdout
    assert re.search(solcx.wrapper.VERSION_REGEX, out)
    assert solcx.wrapper.get_solc_version(wc.SHIM) == Version(wc.SOLC_VERSION)
    assert str(solcx.wrapper.get_solc_version(wc.SHIM, with_commit_hash=True)).startswith(
        f"{wc.SOLC_VERSION}+commit."
    )


def test_shim_reads_imports_from_the_base_path_from_any_cwd(tmp_path: Path, unit: float) -> None:
    (tmp_path / "Lib.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\nlibrary Lib {}\n"
    )
    main_sol = (
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\n"
        "import 'Lib.sol';\ncontract Main {}\n"
    )
    request = {
        "language": "Solidity",
        "sources": {"Main.sol": {"content": main_sol}},
        "settings": {"outputSelection": {"*": {"*": ["abi"]}}},
    }
    done = subprocess.run(
        [str(wc.SHIM), "--standard-json", "--base-path", str(tmp_path),
         "--allow-paths", str(tmp_path), "--output-dir", str(tmp_path), "--overwrite", "-"],
        input=json.dumps(request), capture_output=True, text=True, timeout=60 * unit, cwd="/",
        env={**os.environ, "CHAINPUSH_SOLC_JS": str(ROOT / "node_modules" / "solc")},
    )
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)  # pure JSON: no SMT-solver line
    assert not [e for e in output.get("errors", []) if e["severity"] == "error"], output
    assert set(output["contracts"]) == {"Main.sol", "Lib.sol"}


def test_shim_rejects_unknown_options_like_solc(unit: float) -> None:
    done = subprocess.run([str(wc.SHIM), "--bin"], capture_output=True, text=True,
                          timeout=30 * unit)
    assert done.returncode == 1
    assert done.stderr.startswith("unrecognised option '--bin'")


# --- a team's project, outside this repository ---

SIMPLE = """\
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

contract Simple { uint256 public n; }
"""


def test_compile_in_a_project_uses_the_projects_node_modules(tmp_path: Path, unit: float) -> None:
    """From a subdirectory of a project (chainpush.toml), without arguments, cwd elsewhere from
    the repository: contracts/ → abi/ of the project, through the project's node_modules/solc."""
    app = tmp_path / "app"
    app.mkdir()
    with_node_modules(app)
    (app / "chainpush.toml").write_text("")
    (app / "contracts").mkdir()
    (app / "contracts" / "Simple.sol").write_text(SIMPLE)
    env = {k: v for k, v in os.environ.items() if k not in ("CHAINPUSH_SOLC", "CHAINPUSH_SOLC_JS")}
    done = subprocess.run([str(CHAINPUSH), "compile"], cwd=app / "contracts", capture_output=True,
                          text=True, timeout=60 * unit, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (app / "abi").iterdir()) == ["Simple.abi", "Simple.json"]
    assert not (app / "contracts" / "abi").exists()


def test_compile_without_a_compiler_names_every_option(tmp_path: Path, unit: float) -> None:
    """The wheel's first-run failure (issue 11): no node_modules/solc in the project and no
    native solc → one message naming each way to get a compiler, ending with the fix."""
    (tmp_path / "solcx").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "Simple.sol").write_text(SIMPLE)
    env = {k: v for k, v in os.environ.items() if k not in ("CHAINPUSH_SOLC", "CHAINPUSH_SOLC_JS")}
    env["SOLCX_BINARY_PATH"] = str(tmp_path / "solcx")
    done = subprocess.run([str(CHAINPUSH), "compile"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60 * unit, env=env)
    assert done.returncode == 1
    err = done.stderr
    assert "Traceback" not in err
    assert f"no Solidity compiler for {tmp_path.resolve()}" in err
    assert "native solc 0.8.37 on PATH" in err and "solcx.install_solc('0.8.37')" in err
    assert "npm install solc@0.8.37" in err and "--solc PATH" in err
    assert err.rstrip().endswith(f"fix: cd {tmp_path.resolve()} && npm install")
    assert "repository" not in err
