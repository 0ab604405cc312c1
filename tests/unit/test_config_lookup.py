"""Every command finds the project's ``chainpush.toml`` the same way: in the current directory
or the nearest one above (as ``compile``/``deploy``/``call`` do, ``chainpush.project``), with
relative paths resolved against the file's directory, not the current one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainpush import project
from chainpush.cli import main as chainpush_main
from chainpush.watcher.cli import resolve_config

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.fixture
def deep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose chainpush.toml is two directories above the current one."""
    (tmp_path / "chainpush.toml").write_text("\n".join([
        "[node]", 'ipc = ".chainpush/dev/anvil.ipc"', "",
        "[watch]", 'abi_dir = "build/abi"', 'deployments = "chain"', "",
        "[push]", "port = 8777", "",
        "[auth]", "port = 8778", "",
        "[[contracts]]", 'name = "Vault"', f'address = "{TOKEN}"', ""]))
    here = tmp_path / "src" / "deeper"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    monkeypatch.delenv("CHAINPUSH_WATCH_CONFIG", raising=False)
    return tmp_path


def test_watch_finds_the_project_config_above(deep: Path) -> None:
    config = resolve_config(None, {})
    assert config.source == str(deep / "chainpush.toml")
    assert [c.name for c in config.contracts] == ["Vault"]
    # relative to the file, not to the current directory
    assert config.watch.abi_dirs == (deep / "build" / "abi",)
    assert config.watch.deployments == deep / "chain"
    assert config.node.urls == (str(deep / ".chainpush" / "dev" / "anvil.ipc"),)
    # --config and CHAINPUSH_WATCH_CONFIG still win
    other = deep / "other.toml"
    other.write_text(f'[[contracts]]\nname = "Other"\naddress = "{TOKEN}"\n')
    assert resolve_config(None, {"CHAINPUSH_WATCH_CONFIG": str(other)}).contracts[0].name == \
        "Other"


def test_without_a_project_watch_uses_the_demo_config(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHAINPUSH_WATCH_CONFIG", raising=False)
    config = resolve_config(None, {})
    assert config.source == "(built-in demo config)"
    assert config.watch.abi_dir == tmp_path.resolve() / "abi"


def test_find_config(deep: Path) -> None:
    assert project.find_config() == deep / "chainpush.toml"
    assert project.find_config(Path("x.toml")) == Path("x.toml")
    assert project.find_config(start=deep.parent) is None


@pytest.mark.parametrize(("command", "section", "port"), [("push", "push", 8777),
                                                           ("auth", "auth", 8778)])
def test_push_and_auth_find_the_project_config_above(
    deep: Path, capsys: pytest.CaptureFixture[str], command: str, section: str, port: int,
) -> None:
    assert chainpush_main([command, "--print-config", "--dev"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[section]["port"] == port


def test_the_demo_config_file_is_the_built_in_one_plus_a_webhook(tmp_path: Path) -> None:
    """scripts/demo_config.py writes what scripts/demo.sh runs: valid for the watcher (the
    same contracts as the built-in demo config, from anywhere) and for the webhook deliverer."""
    import importlib.util

    from chainpush.push.webhook_cli import load_webhooks
    from chainpush.watcher.config import demo_config, load_config

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("demo_config", root / "scripts/demo_config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "elsewhere" / "demo.toml"
    assert module.main([str(path), "--webhook-url", "http://127.0.0.1:8790/hooks"]) == 0
    config = load_config(path)
    assert [c.name for c in config.contracts] == [c.name for c in demo_config(root).contracts]
    assert "DemoPair" in [c.name for c in config.contracts]
    (hook,) = load_webhooks(path).webhooks
    assert hook.name == "demo-receiver" and hook.url == "http://127.0.0.1:8790/hooks"
    assert hook.secret.startswith("whsec_")
    from chainpush.push.config import load as load_push

    # the page's dev token follows transactions and their announcements (issue 13.3)
    dev_topics = load_push(path, dev_mode=True).auth.dev_topics
    assert "tx:*" in dev_topics and "app:demo-txs" in dev_topics
