"""The watch configuration: parsing, defaults, and errors that name the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainpush.cli import main as chainpush_main
from chainpush.watcher.binding import bind
from chainpush.watcher.cli import apply_env
from chainpush.watcher.config import load_config
from chainpush.watcher.errors import ConfigError, InvalidABI

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CALLDEMO = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

BASE = f"""
[node]
rpc = "http://127.0.0.1:8545"
ws = ["ws://127.0.0.1:8546", "ws://127.0.0.1:8547"]
ipc = "/tmp/anvil.ipc"
poll_interval_s = 0.5

[watch]
name = "demo"
confirmations = 1
abi_dir = "{ROOT / 'abi'}"
deployments = "deployments"

[stores]
mongo_uri = "mongodb://user:secret@127.0.0.1:27018/"
database = "cp"
redis_url = "redis://127.0.0.1:6399/2"

[push]
anything = "belongs to another component"

[[contracts]]
name = "DemoToken"
events = ["Transfer", "Message"]
confirmations = 0
[contracts.filters.Transfer]
to = ["{WALLET.lower()}"]

[[contracts]]
name = "CallDemo"
address = "{CALLDEMO}"
[[contracts.state]]
function = "get"
on = ["ValueChanged"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chainpush.toml"
    path.write_text(text)
    return path


def deployments(tmp_path: Path) -> None:
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "31337.json").write_text(json.dumps({
        "chain_id": 31337,
        "contracts": {"DemoToken": {"address": TOKEN.lower(), "block": 3, "tx": "0x01"}},
    }))


def test_parse_and_bind(tmp_path: Path) -> None:
    deployments(tmp_path)
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.node.urls == ("/tmp/anvil.ipc", "ws://127.0.0.1:8546", "ws://127.0.0.1:8547",
                             "http://127.0.0.1:8545")
    assert cfg.node.poll_interval_s == 0.5
    assert [cfg.confirmations(c) for c in cfg.contracts] == [0, 1]
    bound = bind(cfg, 31337)
    assert bound.addresses == [TOKEN, CALLDEMO]
    assert bound.start_block == 0  # CallDemo has an explicit address: no deployment block known
    # where each would be caught up from, were it added after the checkpoint
    assert bound.start_blocks == {"DemoToken": 3, "CallDemo": 0}
    assert [e["name"] for e in bound.only({"CallDemo"}).coverage()] == ["CallDemo"]
    assert bound.only({"CallDemo"}).log_filter()["address"] == [CALLDEMO]
    assert cfg.watch.finality_depth == 12
    assert bound.specs[0].events == frozenset({"Transfer", "Message"})
    assert bound.specs[0].filters == {"Transfer": {"to": frozenset({WALLET})}}
    assert bound.calls[0].key == "CallDemo.get()" and bound.calls[0].calldata == "0x6d4ce63c"
    described = cfg.describe()
    assert described["stores"]["mongo_uri"] == "mongodb://***@127.0.0.1:27018/"
    json.dumps(described)


def test_start_block_defaults_to_the_deployment_block(tmp_path: Path) -> None:
    deployments(tmp_path)
    text = BASE.split("[[contracts]]\nname = \"CallDemo\"")[0]
    assert bind(load_config(write(tmp_path, text)), 31337).start_block == 3


def test_finality_depth_default_fits_a_small_window(tmp_path: Path) -> None:
    small = BASE.replace("name = \"demo\"", "name = \"demo\"\nreorg_window = 8", 1)
    assert load_config(write(tmp_path, small)).watch.finality_depth == 7
    explicit = small.replace("reorg_window = 8", "reorg_window = 8\nfinality_depth = 3")
    assert load_config(write(tmp_path, explicit)).watch.finality_depth == 3


def test_finality_defaults_to_depth_and_takes_the_tag(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).watch.finality == "depth"
    tag = BASE.replace("name = \"demo\"", "name = \"demo\"\nfinality = \"tag\"", 1)
    config = load_config(write(tmp_path, tag))
    assert config.watch.finality == "tag"
    assert config.describe()["watch"]["finality"] == "tag"


def test_coverage_changes_with_the_event_selection(tmp_path: Path) -> None:
    deployments(tmp_path)
    before = bind(load_config(write(tmp_path, BASE)), 31337).coverage()
    wider = BASE.replace("events = [\"Transfer\", \"Message\"]", "events = [\"Transfer\"]")
    after = bind(load_config(write(tmp_path, wider)), 31337).coverage()
    assert before[1] == after[1] and before[0] != after[0]
    assert before[0]["name"] == "DemoToken" and before[0]["address"] == TOKEN


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("confirmations = 1", "confirmations = -1"),
         r"\[watch\] confirmations must be >= 0, got -1"),
        (("name = \"demo\"", "name = \"demo\"\nmax_rnage = 5"),
         r"unknown key\(s\) max_rnage in \[watch\]"),
        (("confirmations = 0", "confirmations = 64"),
         r"DemoToken.confirmations \(64\) must be below"),
        (("events = [\"Transfer\", \"Message\"]", "events = \"some\""),
         r"DemoToken.events must be"),
        (("rpc = \"http://127.0.0.1:8545\"", "rpc = 5"), r"\[node\] rpc must be a string"),
        (("database = \"cp\"", "database = \"\""), r"\[stores\] database must not be empty"),
        (("address = \"0xe7f1", "address = \"0xZZf1"), r"CallDemo.address must be 0x \+ 40 hex"),
        (("name = \"demo\"", "name = \"demo\"\nfinality_depth = 64"),
         r"\[watch\] finality_depth must be >= 1 and below \[watch\] reorg_window \(64\), got 64"),
        (("name = \"demo\"", "name = \"demo\"\nfinality_depth = 0"),
         r"\[watch\] finality_depth must be >= 1 .* got 0"),
        (("name = \"demo\"", "name = \"demo\"\nfinality = \"safe\""),
         r"\[watch\] finality must be \"depth\" or \"tag\", got 'safe'"),
    ],
)
def test_config_errors_name_file_and_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, BASE.replace(*edit, 1))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("\"Transfer\", \"Message\"", "\"Transfer\", \"Mesage\""),
         r"DemoToken.events: no event 'Mesage' in .*DemoToken.abi \(events: Approval, Batch"),
        (("to = [", "too = ["), r"DemoToken.filters.Transfer.too: event Transfer\(address,address,"
                                r"uint256\) has no argument 'too'"),
        (("function = \"get\"", "function = \"gte\""),
         r"CallDemo.state\[0\].function: no function"),
        (("on = [\"ValueChanged\"]", "on = [\"Changed\"]"), r"CallDemo.state\[0\].on: no event"),
    ],
)
def test_binding_errors_name_file_and_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    deployments(tmp_path)
    path = write(tmp_path, BASE.replace(*edit, 1))
    with pytest.raises(ConfigError, match=message) as info:
        bind(load_config(path), 31337)
    assert str(info.value).startswith(str(path))


def test_missing_deployment_and_broken_abi(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match=r"DemoToken has no address and .*31337.json has no entry "
                                          r"'DemoToken' for chain 31337"):
        bind(load_config(path), 31337)
    (tmp_path / "abi").mkdir()
    (tmp_path / "abi" / "DemoToken.abi").write_text('[{"type": "event", "name": 5}]')
    broken = BASE.replace(f'abi_dir = "{ROOT / "abi"}"', 'abi_dir = "abi"')
    deployments(tmp_path)
    with pytest.raises(InvalidABI, match=r"abi/DemoToken.abi: entry 0: event needs a non-empty"):
        bind(load_config(write(tmp_path, broken)), 31337)


def test_env_overrides_apply_at_the_entry_point(tmp_path: Path) -> None:
    cfg = apply_env(load_config(write(tmp_path, BASE)), {
        "CHAINPUSH_MONGO_URI": "mongodb://127.0.0.1:1/", "CHAINPUSH_WS": "ws://10.0.0.1:8545"})
    assert cfg.stores.mongo_uri == "mongodb://127.0.0.1:1/"
    assert cfg.node.urls == ("ws://10.0.0.1:8545",)


def test_cli_print_and_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("CHAINPUSH_MONGO_URI", "CHAINPUSH_RPC", "CHAINPUSH_WS", "CHAINPUSH_IPC"):
        monkeypatch.delenv(var, raising=False)
    path = write(tmp_path, BASE)
    assert chainpush_main(["watch", "--config", str(path), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["watch"]["name"] == "demo"
    state = printed["contracts"][1]["state"]
    assert state == [{"function": "get", "args": [], "on": ["ValueChanged"]}]
    bad = write(tmp_path, BASE.replace("confirmations = 1", "confirmations = -1"))
    assert chainpush_main(["watch", "--config", str(bad), "--check-config"]) == 2
    assert "confirmations must be >= 0" in capsys.readouterr().err


def test_node_section_is_optional_and_env_still_wins(tmp_path: Path) -> None:
    text = BASE.replace(BASE[BASE.index("[node]"):BASE.index("[watch]")], "")
    cfg = load_config(write(tmp_path, text))
    assert cfg.node.urls == ("http://127.0.0.1:8545",)
    assert cfg.stores.redis_url == "redis://127.0.0.1:6399/2"  # collect's dispatch uses it
    moved = apply_env(cfg, {"CHAINPUSH_IPC": "/tmp/x.ipc", "CHAINPUSH_REDIS_URL": "redis://h:1/0"})
    assert moved.node.urls == ("/tmp/x.ipc",)
    assert moved.stores.redis_url == "redis://h:1/0"
