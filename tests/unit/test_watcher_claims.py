"""Several chains in one deployment (docs/watcher.md, Several chains): contract names are
unique per deployment. The claim decision (``watcher.claims.conflict``) and the checks of
several configs in one process (``watcher.config.check_several``), pure."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from chainpush.watcher.claims import Claim, conflict
from chainpush.watcher.config import Config, check_several
from chainpush.watcher.errors import ConfigError

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def claim(chain_id: int = 31337, name: str = "DemoToken") -> Claim:
    return Claim(name=name, chain_id=chain_id, watch=f"{chain_id}:demo", addresses=(TOKEN,),
                 source="base.toml")


def test_the_same_chain_claiming_again_is_idempotent() -> None:
    held = claim().doc(0.0)
    assert conflict(claim(), held, database="cp") is None
    # another [watch] name on the same chain: the same chain's records, no clash
    other_watch = {**held, "watch": "31337:other"}
    assert conflict(claim(), other_watch, database="cp") is None


def test_a_name_held_by_another_chain_is_refused_naming_both_and_the_fix() -> None:
    held = {"_id": "DemoToken", "chain_id": 1, "watch": "1:shop", "source": "mainnet.toml",
            "addresses": ["0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"]}
    message = conflict(claim(8453), held, database="shop")
    assert message is not None
    for part in ("base.toml: [[contracts]] DemoToken", "already used on chain 1",
                 "watcher 1:shop", "mainnet.toml", "0xA0b86991", "shop.contracts",
                 "(8453:demo) is on chain 8453", "unique per deployment",
                 'name = "DemoToken_8453", abi = "DemoToken"',
                 "chainpush watch --config base.toml --release-claim DemoToken"):
        assert part in message, (part, message)


def config(tmp_path: Path, file: str, body: str) -> Config:
    path = tmp_path / file
    path.write_text(body)
    return Config.from_mapping(tomllib.loads(body), source=str(path), base=tmp_path)


def chain(chain_id: int | None, *names: str, watch: str = "shop") -> str:
    node = f"chain_id = {chain_id}\n" if chain_id is not None else ""
    contracts = "".join(f'[[contracts]]\nname = "{n}"\naddress = "{TOKEN}"\n' for n in names)
    return f'[node]\n{node}[watch]\nname = "{watch}"\n{contracts}'


def test_several_configs_of_one_run_must_not_share_a_contract_name(tmp_path: Path) -> None:
    a = config(tmp_path, "mainnet.toml", chain(1, "USDC", "Vault"))
    b = config(tmp_path, "base.toml", chain(8453, "USDC_base", "Vault"))
    with pytest.raises(ConfigError) as info:
        check_several([a, b])
    text = str(info.value)
    assert "base.toml: [[contracts]] Vault is also in" in text and "mainnet.toml" in text
    assert "unique per deployment" in text
    check_several([a, config(tmp_path, "base2.toml", chain(8453, "USDC_base", "Vault_base"))])


def test_several_configs_of_one_chain_must_not_share_a_watch_name(tmp_path: Path) -> None:
    a = config(tmp_path, "a.toml", chain(1, "A"))
    b = config(tmp_path, "b.toml", chain(1, "B"))
    with pytest.raises(ConfigError, match=r"b\.toml: \[watch\] name 'shop' on chain 1 is also"):
        check_several([a, b])
    # another chain (its own lease key), or another name, or no chain_id to compare: fine
    check_several([a, config(tmp_path, "c.toml", chain(8453, "B"))])
    check_several([a, config(tmp_path, "d.toml", chain(1, "B", watch="other"))])
    check_several([a, config(tmp_path, "e.toml", chain(None, "B"))])


def test_push_nodes_serve_the_wallet_activity_topics_of_every_standard() -> None:
    from chainpush.push.node import WALLET_STANDARDS
    from chainpush.watcher.wallets import STANDARDS

    assert frozenset(STANDARDS) == WALLET_STANDARDS
