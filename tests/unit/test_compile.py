"""watcher.compile without a compiler: input building, serialization, stale detection, errors.

Compiler output comes from ``tests/data/compile/`` (recorded from solc 0.8.37 through tools/solc).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from chainpush.watcher import compile as wc
from chainpush.watcher.errors import CompileError, ConfigError, InvalidABI

DATA = Path(__file__).resolve().parent.parent / "data" / "compile"
VERSION = "0.8.37+commit.f401782d"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def recorded_sources(name: str) -> list[wc.Source]:
    inp = load(f"{name}.input.json")
    return [wc.Source(unit, body["content"]) for unit, body in inp["sources"].items()]


@pytest.fixture
def calldemo() -> wc.Artifact:
    sources = recorded_sources("calldemo")
    return wc.artifacts_from_output(load("calldemo.output.json"), sources, VERSION)["CallDemo"]


# --- standard JSON input ---


def test_input_is_what_was_recorded() -> None:
    assert wc.standard_json_input(recorded_sources("calldemo")) == load("calldemo.input.json")


def test_input_sorts_sources_and_fixes_settings() -> None:
    sources = [wc.Source("contracts/B.sol", "b"), wc.Source("contracts/A.sol", "a")]
    inp = wc.standard_json_input(sources)
    assert list(inp["sources"]) == ["contracts/A.sol", "contracts/B.sol"]
    assert inp["sources"]["contracts/A.sol"] == {"content": "a"}
    settings = inp["settings"]
    assert settings["optimizer"] == {"enabled": True, "runs": 200}
    assert settings["metadata"] == {"bytecodeHash": "none"}
    assert settings["evmVersion"] == "cancun"
    assert "evm.deployedBytecode.object" in settings["outputSelection"]["*"]["*"]
    # the same JSON text whatever order the files were found in
    assert json.dumps(inp) == json.dumps(wc.standard_json_input(sources[::-1]))


def test_input_is_a_copy_of_the_settings() -> None:
    inp = wc.standard_json_input([wc.Source("contracts/A.sol", "a")])
    inp["settings"]["optimizer"]["runs"] = 1
    assert wc.COMPILER_SETTINGS["optimizer"]["runs"] == 200


def test_source_hash_is_sha256_of_the_text() -> None:
    assert wc.Source("x.sol", "abc").sha256 == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- output → artifacts ---


def test_artifact_from_recorded_output(calldemo: wc.Artifact) -> None:
    assert calldemo.contract_name == "CallDemo"
    assert calldemo.source_name == "contracts/CallDemo.sol"
    assert calldemo.bytecode.startswith("0x6080")
    assert calldemo.deployed_bytecode.startswith("0x6080")
    # bytecodeHash "none": the CBOR tail holds only {"solc": 0.8.37} (0x000825)
    assert calldemo.deployed_bytecode.endswith("a164736f6c6343000825000a")
    assert calldemo.compiler_version == VERSION
    assert calldemo.settings == dict(wc.COMPILER_SETTINGS)
    assert calldemo.source_hash == recorded_sources("calldemo")[0].sha256
    names = {(e["type"], e.get("name")) for e in calldemo.abi}
    assert {("function", "get"), ("function", "set"), ("event", "ValueChanged")} <= names


def test_artifacts_skip_sources_outside_the_directory() -> None:
    output = load("calldemo.output.json")
    output["contracts"]["node_modules/lib/Lib.sol"] = {"Lib": {"abi": []}}
    arts = wc.artifacts_from_output(output, recorded_sources("calldemo"), VERSION)
    assert list(arts) == ["CallDemo"]


def test_interface_gets_empty_bytecode() -> None:
    output = {"contracts": {"contracts/I.sol": {"I": {"abi": [], "evm": {
        "bytecode": {"object": ""}, "deployedBytecode": {"object": ""}}}}}}
    art = wc.artifacts_from_output(output, [wc.Source("contracts/I.sol", "")], VERSION)["I"]
    assert art.bytecode == "0x" and art.deployed_bytecode == "0x"


def test_duplicate_contract_names_are_rejected() -> None:
    compiled = {"abi": [], "evm": {"bytecode": {"object": "00"},
                                   "deployedBytecode": {"object": "00"}}}
    output = {"contracts": {"contracts/a/X.sol": {"X": compiled},
                            "contracts/b/X.sol": {"X": compiled}}}
    sources = [wc.Source("contracts/a/X.sol", ""), wc.Source("contracts/b/X.sol", "")]
    with pytest.raises(CompileError, match=r"X is defined in both contracts/a/X\.sol and "
                                           r"contracts/b/X\.sol"):
        wc.artifacts_from_output(output, sources, VERSION)


def test_errors_in_output_raise_with_file_and_line() -> None:
    with pytest.raises(CompileError) as info:
        wc.artifacts_from_output(
            load("syntax_error.output.json"), recorded_sources("syntax_error"), VERSION
        )
    message = str(info.value)
    assert "ParserError: Expected ';' but got '}'" in message
    assert "--> contracts/Bad.sol:5:59:" in message


def test_format_errors_picks_the_severity_and_falls_back() -> None:
    errors = [
        {"severity": "warning", "formattedMessage": "Warning: unused\n --> a.sol:1:1:\n\n"},
        {"severity": "error", "formattedMessage": "TypeError: bad\n --> a.sol:2:3:\n\n"},
        {"severity": "error", "type": "DocstringParsingError", "message": "no text"},
    ]
    assert wc.format_errors(errors) == (
        "TypeError: bad\n --> a.sol:2:3:\n\nDocstringParsingError: no text"
    )
    assert wc.format_errors(errors, severity="warning") == "Warning: unused\n --> a.sol:1:1:"
    # warnings alone are not an error
    output = {"errors": errors[:1], "contracts": {}}
    assert wc.artifacts_from_output(output, [], VERSION) == {}


# --- serialization ---


def test_dumps_is_sorted_indented_and_ends_with_newline() -> None:
    assert wc.dumps({"b": 1, "a": ["é"]}) == '{\n  "a": [\n    "é"\n  ],\n  "b": 1\n}\n'


def test_render_names_and_contents(calldemo: wc.Artifact) -> None:
    files = wc.render({"CallDemo": calldemo})
    assert list(files) == ["CallDemo.abi", "CallDemo.json"]
    assert json.loads(files["CallDemo.abi"]) == calldemo.abi
    doc = json.loads(files["CallDemo.json"])
    assert sorted(doc) == ["abi", "bytecode", "compiler", "contractName", "deployedBytecode",
                           "sourceHash", "sourceName"]
    assert doc["compiler"] == {"version": VERSION, "settings": dict(wc.COMPILER_SETTINGS)}
    assert "/work" not in files["CallDemo.json"] and "/tmp" not in files["CallDemo.json"]


def test_render_does_not_depend_on_insertion_order(calldemo: wc.Artifact) -> None:
    other = wc.Artifact(**{**_fields(calldemo), "contract_name": "Aaa"})
    a = wc.render({"CallDemo": calldemo, "Aaa": other})
    b = wc.render({"Aaa": other, "CallDemo": calldemo})
    assert list(a.items()) == list(b.items())


def _fields(art: wc.Artifact) -> dict[str, Any]:
    return {name: getattr(art, name) for name in wc.Artifact.__slots__}


def test_artifact_json_round_trip(calldemo: wc.Artifact) -> None:
    assert wc.Artifact.from_json(calldemo.to_json(), where="x") == calldemo


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("bytecode"), "missing or bad 'bytecode'"),
        (lambda d: d.update(abi={"not": "a list"}), "'abi' must be a list"),
        (lambda d: d.update(bytecode="6080"), "bytecode must be a 0x-prefixed"),
        (lambda d: d.update(compiler=None), "not a chainpush artifact"),
    ],
)
def test_artifact_from_bad_json(calldemo: wc.Artifact, mutate: Any, match: str) -> None:
    doc = calldemo.to_json()
    mutate(doc)
    with pytest.raises(InvalidABI, match=match):
        wc.Artifact.from_json(doc, where="abi/X.json")


def test_load_artifact(tmp_path: Path, calldemo: wc.Artifact) -> None:
    wc.write_outputs(tmp_path, wc.render({"CallDemo": calldemo}))
    assert wc.load_artifact(tmp_path, "CallDemo") == calldemo
    with pytest.raises(ConfigError, match=r"Nope\.json .*: run `chainpush compile`"):
        wc.load_artifact(tmp_path, "Nope")
    (tmp_path / "Broken.json").write_text("{")
    with pytest.raises(InvalidABI, match=r"Broken\.json is not valid JSON"):
        wc.load_artifact(tmp_path, "Broken")
    (tmp_path / "List.json").write_text("[]")
    with pytest.raises(InvalidABI, match="expected a JSON object, got list"):
        wc.load_artifact(tmp_path, "List")


# --- stale detection ---


def test_diff_up_to_date() -> None:
    files = {"A.abi": "[]\n", "A.json": '{"a": 1}\n'}
    assert wc.diff_outputs(files, dict(files)) == []


def test_diff_missing_stale_extra(calldemo: wc.Artifact) -> None:
    expected = wc.render({"CallDemo": calldemo})
    changed = calldemo.to_json()
    changed["bytecode"] = "0x00"
    changed["sourceHash"] = "0" * 64
    actual = {"CallDemo.json": wc.dumps(changed), "Old.abi": "[]\n"}
    diffs = wc.diff_outputs(expected, actual)
    assert diffs == [
        wc.Difference("CallDemo.abi", "missing", "compiling produces it"),
        wc.Difference("CallDemo.json", "stale", "bytecode, sourceHash differ"),
        wc.Difference("Old.abi", "extra", "no contract in the sources produces it"),
    ]
    assert diffs[1].describe("abi") == "abi/CallDemo.json: stale (bytecode, sourceHash differ)"


@pytest.mark.parametrize(
    ("actual", "detail"),
    [
        ('{"a":1}', "formatting differs"),
        ('{"a": 2}\n', "a differs"),
        ("{", "not valid JSON"),
        ("[1]\n", "ABI differs"),
    ],
)
def test_diff_details(actual: str, detail: str) -> None:
    [diff] = wc.diff_outputs({"X.json": '{\n  "a": 1\n}\n'}, {"X.json": actual})
    assert diff.problem == "stale" and diff.detail.startswith(detail)


# --- files ---


def test_read_sources_names_units_after_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "lib").mkdir(parents=True)
    (root / "B.sol").write_text("b")
    (root / "lib" / "A.sol").write_text("a")
    (root / "notes.txt").write_text("x")
    assert wc.read_sources(root) == [wc.Source("src/B.sol", "b"), wc.Source("src/lib/A.sol", "a")]


def test_read_sources_errors(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="does not exist"):
        wc.read_sources(tmp_path / "missing")
    with pytest.raises(CompileError, match=r"no \.sol files in"):
        wc.read_sources(tmp_path)


def test_write_outputs_rewrites_only_changes_and_removes_ours(tmp_path: Path) -> None:
    out = tmp_path / "abi"
    assert wc.write_outputs(out, {"A.abi": "[]\n", "B.abi": "[]\n"}) == [out / "A.abi",
                                                                         out / "B.abi"]
    (out / "README.md").write_text("kept")
    before = (out / "A.abi").stat().st_mtime_ns
    changed = wc.write_outputs(out, {"A.abi": "[]\n", "C.abi": "[1]\n"})
    assert changed == [out / "C.abi", out / "B.abi"]
    assert (out / "A.abi").stat().st_mtime_ns == before
    assert sorted(p.name for p in out.iterdir()) == ["A.abi", "C.abi", "README.md"]
    assert wc.read_outputs(out) == {"A.abi": "[]\n", "C.abi": "[1]\n"}
    assert wc.read_outputs(tmp_path / "none") == {}


# --- compiler choice and version ---


@pytest.mark.parametrize(
    ("banner", "version"),
    [
        ("solc, the solidity compiler commandline interface\n"
         "Version: 0.8.37+commit.f401782d.Linux.g++\n", "0.8.37+commit.f401782d"),
        ("Version: 0.8.37+commit.f401782d.Emscripten.clang\n", "0.8.37+commit.f401782d"),
        ("Version: 0.8.38-nightly.2026.1.2+commit.abcdef12.Linux\n",
         "0.8.38-nightly.2026.1.2+commit.abcdef12"),
    ],
)
def test_parse_version(banner: str, version: str) -> None:
    assert wc.parse_version(banner, where="solc") == version


def test_parse_version_rejects_other_output() -> None:
    with pytest.raises(CompileError, match="solc --version printed no solc version"):
        wc.parse_version("hello\n", where="solc")


def fake_solc(directory: Path, banner: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "solc"
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{banner}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_solcx_installs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "solcx").mkdir()
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(tmp_path / "solcx"))


def path_with(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.usefixtures("no_solcx_installs")
def test_find_solc_prefers_a_native_solc_of_the_pinned_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = fake_solc(tmp_path / "bin", "Version: 0.8.37+commit.f401782d.Linux.g++")
    path_with(monkeypatch, native.parent)
    assert wc.find_solc() == native


@pytest.mark.usefixtures("no_solcx_installs")
@pytest.mark.parametrize(
    "banner",
    ["Version: 0.8.20+commit.a1b79de6.Linux.g++",  # another version: bytecode would differ
     "Version: 0.8.37+commit.f401782d.Emscripten.clang",  # a wasm wrapper, maybe not pure JSON
     "no version here"],
)
def test_find_solc_falls_back_to_the_shim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, banner: str
) -> None:
    path_with(monkeypatch, fake_solc(tmp_path / "bin", banner).parent)
    assert wc.find_solc() == wc.SHIM


def test_find_solc_uses_a_solcx_install_of_the_pinned_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installs = tmp_path / "solcx"
    fake_solc(installs / "other", "Version: 0.8.20+commit.a1b79de6.Linux.g++").rename(
        installs / "solc-v0.8.20"
    )
    pinned = fake_solc(installs / "pinned", "Version: 0.8.37+commit.f401782d.Linux.g++")
    pinned = pinned.rename(installs / f"solc-v{wc.SOLC_VERSION}")
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(installs))
    assert wc.find_solc() == pinned


def test_find_solc_leaves_home_alone_without_solcx_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SOLCX_BINARY_PATH", raising=False)
    wc.find_solc()
    assert not (tmp_path / ".solcx").exists()


def test_find_solc_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native = fake_solc(tmp_path, "Version: 0.8.1+commit.df193b15.Linux.g++")
    assert wc.find_solc(native) == native  # explicit wins, whatever its version
    path_with(monkeypatch, tmp_path)
    assert wc.find_solc("solc") == native  # a bare name is looked up on PATH
    (tmp_path / "plain").write_text("")
    with pytest.raises(CompileError, match="not an executable file"):
        wc.find_solc(tmp_path / "plain")


def test_solc_version_of_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="cannot run solc at"):
        wc.solc_version(tmp_path / "nope")


# --- command line ---


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    wc.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_register_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINPUSH_SOLC", raising=False)
    args = parse(["compile"])
    # None: <project>/contracts and <project>/abi, resolved when the command runs
    assert (args.contracts, args.out, args.check, args.solc) == (None, None, False, None)
    assert args.func is wc.run
    monkeypatch.setenv("CHAINPUSH_SOLC", "/opt/solc")
    args = parse(["compile", "--check", "--contracts", "c", "--out", "o"])
    assert (args.contracts, args.out, args.check, args.solc) == ("c", "o", True, "/opt/solc")


def test_run_reports_compile_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["compile", "--contracts", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert wc.run(args) == 1
    assert "chainpush compile: contracts directory" in capsys.readouterr().err


@pytest.mark.usefixtures("no_solcx_installs")
def test_find_solc_without_any_compiler_names_every_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No native solc, no node_modules/solc in the project (or above): one message, every
    option, ending with the command that fixes it; nothing about a repository root."""
    project = tmp_path / "app"
    project.mkdir()
    path_with(monkeypatch, fake_solc(tmp_path / "bin", "Version: 0.8.20+commit.a1.Linux").parent)
    with pytest.raises(CompileError) as info:
        wc.find_solc(project=project)
    message = str(info.value)
    assert message.startswith(f"no Solidity compiler for {project}")
    assert "solcx.install_solc('0.8.37')" in message
    assert "npm install solc@0.8.37" in message
    assert "--solc PATH" in message
    assert "solc 0.8.20 at" in message  # what was passed over, and why
    assert message.endswith(f"fix: cd {project} && npm install")


@pytest.mark.usefixtures("no_solcx_installs")
def test_find_solc_uses_node_modules_of_the_project_or_above(tmp_path: Path) -> None:
    package = tmp_path / "node_modules" / "solc"
    package.mkdir(parents=True)
    (package / "package.json").write_text("{}")
    (tmp_path / "app" / "contracts").mkdir(parents=True)
    assert wc.find_solc(project=tmp_path / "app") == wc.SHIM


def test_missing_compiler_message_without_node() -> None:
    message = wc.missing_compiler_message(Path("/p"), have_node=False, rejected=())
    assert "needs Node.js 20+ on PATH, which is missing" in message
    assert message.endswith("fix: install Node.js 20+, then `npm install` in the project")
