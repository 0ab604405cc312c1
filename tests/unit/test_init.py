"""`chainpush init`, project discovery, tool discovery and the CLI's help (no servers)."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from chainpush import init, procs, project
from chainpush.cli import build_parser, main
from chainpush.push.config import load as load_push_settings
from chainpush.watcher.config import Config, load_config
from chainpush.watcher.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def fake_npm(directory: Path, code: int = 0) -> Path:
    """An `npm` that records its arguments and working directory, then exits ``code``."""
    directory.mkdir(parents=True, exist_ok=True)
    npm = directory / "npm"
    npm.write_text(f'#!/bin/sh\necho "$PWD $*" >> "{directory}/calls"\nexit {code}\n')
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    return npm


def test_init_scaffolds_a_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "My App"), "--no-install"]) == 0
    app = tmp_path / "My App"
    assert sorted(p.name for p in app.iterdir()) == [
        ".gitignore", "abi", "chainpush.toml", "contracts", "package.json"]
    assert [p.name for p in (app / "contracts").iterdir()] == ["Counter.sol"]
    assert "DemoToken" not in (app / "contracts" / "Counter.sol").read_text()
    out = capsys.readouterr().out
    assert "next steps:" in out and "npm install" in out and "chainpush deploy Counter" in out
    gitignore = (app / ".gitignore").read_text().splitlines()
    assert {".chainpush/", "node_modules/", "deployments/31337.json"} <= set(gitignore)
    assert json.loads((app / "package.json").read_text())["name"] == "my-app"


def test_package_json_pins_the_tools_we_test_with(tmp_path: Path) -> None:
    init.scaffold(tmp_path / "app")
    theirs = json.loads((tmp_path / "app" / "package.json").read_text())["dependencies"]
    ours = json.loads((ROOT / "package.json").read_text())["dependencies"]
    assert theirs == {name: ours[name] for name in ("@foundry-rs/anvil", "solc")}


def test_the_config_has_no_active_contract_and_the_example_is_valid(tmp_path: Path) -> None:
    init.scaffold(tmp_path / "app")
    config = tmp_path / "app" / "chainpush.toml"
    raw = tomllib.loads(config.read_text())
    assert "contracts" not in raw  # nothing that fails before the user deployed
    assert raw["watch"]["name"] == "app"
    with pytest.raises(ConfigError, match="no \\[\\[contracts\\]\\] to watch"):
        load_config(config)
    # the commented example, uncommented, is a valid watcher config; push reads the file too
    text = config.read_text()
    start = text.index("# [[contracts]]")
    block = text[start:text.index("\n\n", start)]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config.write_text(text.replace(block, uncommented))
    loaded = load_config(config)
    assert isinstance(loaded, Config)
    assert [c.name for c in loaded.contracts] == ["Counter"]
    assert loaded.watch.deployments == (tmp_path / "app" / "deployments").resolve()
    load_push_settings(config, dev_mode=True)


def test_init_keeps_existing_files_and_refuses_a_project(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "contracts").mkdir(parents=True)
    (app / "package.json").write_text("{}")
    done = init.scaffold(app)
    assert "package.json" in done.kept and "chainpush.toml" in done.written
    assert (app / "package.json").read_text() == "{}"
    with pytest.raises(init.InitError, match="already a chainpush project"):
        init.scaffold(app)


def test_init_runs_npm_install_when_npm_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    fake_npm(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["init", str(tmp_path / "app")]) == 0
    (call,) = (bin_dir / "calls").read_text().splitlines()
    assert call == f"{(tmp_path / 'app').resolve()} install --no-audit --no-fund"
    assert "  npm install" not in capsys.readouterr().out  # done: not a next step


def test_init_reports_a_failed_npm_install_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    fake_npm(bin_dir, code=3)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["init", str(tmp_path / "app")]) == 1
    err = capsys.readouterr().err
    assert f"npm install failed in {tmp_path / 'app'} (exit 3)" in err
    assert err.rstrip().endswith(f"cd {tmp_path / 'app'} && npm install")


def test_init_without_npm_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["init", str(tmp_path / "app")]) == 0
    assert "npm is not on PATH: install Node.js 20+" in capsys.readouterr().out


# --- the project directory -------------------------------------------------------------------


def test_find_project_walks_up_to_chainpush_toml(tmp_path: Path) -> None:
    (tmp_path / "app" / "contracts" / "lib").mkdir(parents=True)
    assert project.find_project(tmp_path / "app" / "contracts") == tmp_path / "app" / "contracts"
    (tmp_path / "app" / "chainpush.toml").write_text("")
    assert project.find_project(tmp_path / "app" / "contracts" / "lib") == tmp_path / "app"
    assert project.state_dir(tmp_path / "app") == tmp_path / "app" / ".chainpush" / "dev"


def test_dev_state_defaults_to_the_project_not_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chainpush import devstack

    (tmp_path / "chainpush.toml").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert devstack.DevStackConfig().state_dir == tmp_path / ".chainpush" / "dev"
    args = build_parser().parse_args(["dev", "status"])
    assert devstack._dirs(args) == (tmp_path, tmp_path / ".chainpush" / "dev")


def npm_anvil(root: Path) -> Path:
    binary = root / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return binary


def test_find_anvil_path_first_then_the_projects_node_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHAINPUSH_ANVIL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    app = tmp_path / "app"
    (app / "sub").mkdir(parents=True)
    with pytest.raises(procs.StackError) as info:
        procs.find_anvil(app / "sub")
    message = str(info.value)
    assert "foundryup" in message and "npm install @foundry-rs/anvil@1.7.1" in message
    assert "CHAINPUSH_ANVIL=PATH" in message
    assert message.endswith(f"fix: cd {app / 'sub'} && npm install")
    assert "repository" not in message
    in_node_modules = npm_anvil(app)
    assert procs.find_anvil(app / "sub") == str(in_node_modules)  # require()-style, upwards
    foundry = tmp_path / "bin" / "anvil"
    foundry.parent.mkdir()
    foundry.write_text("#!/bin/sh\n")
    foundry.chmod(0o755)
    assert procs.find_anvil(app) == str(foundry)
    monkeypatch.setenv("CHAINPUSH_ANVIL", "/opt/anvil")
    assert procs.find_anvil(app) == "/opt/anvil"


# --- the CLI teaches -------------------------------------------------------------------------


def help_text(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return capsys.readouterr().out


def test_dev_help_lists_actions_options_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, "dev")
    for action in ("up ", "down ", "status ", "env "):
        assert f"\n  {action}" in text, action
    for option in ("--node-port", "--redis-port", "--mongo-port", "--block-time", "--wipe",
                   "--state-dir", "--project"):
        assert option in text
    assert "default 1 s" in text and "default 8545" in text and "default 6390" in text
    assert "default 27018" in text and "<project>/.chainpush/dev" in text


@pytest.mark.parametrize("command", ["init", "compile", "dev", "deploy", "call"])
def test_each_front_door_command_has_a_description_and_examples(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_text(capsys, command)
    assert "examples:" in text
    assert f"chainpush {command}" in text.split("examples:", 1)[1]


def test_top_level_help_shows_the_sequence(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)
    for step in ("chainpush init app", "chainpush compile", "chainpush dev up",
                 "chainpush deploy", "chainpush call", "chainpush run"):
        assert step in text


def test_layout_follows_the_watch_section(tmp_path: Path) -> None:
    default = project.layout(tmp_path)
    assert (default.abi_dir, default.deployments) == (tmp_path / "abi", tmp_path / "deployments")
    # the watcher's ABI search path: chainpush compile's, Foundry's and Hardhat's outputs
    assert default.abi_dirs == (tmp_path / "abi", tmp_path / "out", tmp_path / "artifacts")
    (tmp_path / "chainpush.toml").write_text(
        '[watch]\nabi_dir = "build/abi"\ndeployments = "chain/31337.json"\n')
    found = project.layout(tmp_path)
    assert found.abi_dir == tmp_path / "build" / "abi"
    assert found.abi_dirs == (tmp_path / "build" / "abi",)
    assert found.deployments_file(31337) == tmp_path / "chain" / "31337.json"
    (tmp_path / "chainpush.toml").write_text("[watch\n")
    with pytest.raises(ValueError, match=r"chainpush\.toml: not valid TOML"):
        project.layout(tmp_path)


def test_compile_writes_where_the_watcher_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """[watch] abi_dir moves compile's default output; contracts/ missing → a clear error."""
    (tmp_path / "chainpush.toml").write_text('[watch]\nabi_dir = "build/abi"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["compile"]) == 1
    assert "chainpush compile: contracts directory contracts does not exist" in \
        capsys.readouterr().err
    args = build_parser().parse_args(["compile"])
    from chainpush.watcher import compile as wc

    monkeypatch.setattr(wc, "write", lambda contracts, out, solc: [])
    assert wc.run(args) == 0
    assert Path(args.out) == Path("build/abi")
