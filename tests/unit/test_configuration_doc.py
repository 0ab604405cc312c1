"""docs/configuration.md stays true: every key the code accepts is documented, and the complete
production example is accepted by both the watcher's and the push side's loaders."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from chainpush.push import config as push_config
from chainpush.push.tokens import TokenConfig
from chainpush.watcher.config import Config
from chainpush.watcher.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented(section: str) -> set[str]:
    """The keys in the first column of the table under ``## `<section>` ``."""
    text = DOC.read_text()
    start = text.index(f"## `{section}`")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end > 0 else None]
    return {m.group(1).split(".")[0] for m in re.finditer(r"^\| `([a-z_.<>A-Z]+)` \|", body,
                                                          re.MULTILINE)}


def watcher_keys(section: str, data: dict[str, object]) -> set[str]:
    """What ``watcher.config`` allows in ``section``, from its unknown-key message."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(data, source="t.toml", base=Path("/"))
    found = re.search(r"\(expected: ([^)]*)\)", str(info.value))
    assert found is not None, info.value
    return set(found.group(1).split(", "))


def test_every_watcher_key_is_documented() -> None:
    assert watcher_keys("node", {"node": {"zz": 1}}) <= documented("[node]")
    assert watcher_keys("watch", {"watch": {"zz": 1}}) <= documented("[watch]")
    contract = {"contracts": [{"name": "A", "zz": 1}]}
    assert watcher_keys("contracts", contract) <= documented("[[contracts]]")
    state = {"contracts": [{"name": "A", "state": [{"function": "f", "zz": 1}]}]}
    assert watcher_keys("state", state) <= documented("[[contracts]]")


def test_every_push_key_is_documented() -> None:
    assert {f.name for f in fields(push_config.StoresConfig)} <= documented("[stores]")
    assert {f.name for f in fields(push_config.PushConfig)} <= documented("[push]")
    auth = ({f.name for f in fields(TokenConfig)} | {f.name for f in fields(
        push_config.AuthServiceConfig)})
    assert auth <= documented("[auth]")
    publish = {f.name for f in fields(push_config.PublishConfig)} - {"dev_mode"}
    assert publish <= documented("[publish]")


def test_the_production_example_loads(tmp_path: Path) -> None:
    text = DOC.read_text()
    example = text[text.index("## A complete production example"):]
    body = example.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "chainpush.toml"
    path.write_text(body)
    watch = Config.from_mapping(tomllib.loads(body), source=str(path), base=tmp_path)
    assert watch.node.chain_id == 1 and [c.name for c in watch.contracts] == ["Vault", "USDC"]
    assert watch.watch.abi_dir == tmp_path / "abi"  # relative to the file's directory
    settings = push_config.load(path, dev_mode=False)
    assert settings.push.allowed_origins == ("https://shop.example.org",)
    assert settings.tokens.algorithm == "ES256"
