"""Wallet activity's pure core (``watcher/wallets.py``, issue 13.4; not wired yet): filters,
selection by sender/recipient, the ERC-20 / ERC-721 split by topic count, decoding with the
standard ABIs, token metadata answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode

from chainpush.watcher.abi import load_abi
from chainpush.watcher.decode import ContractSpec, LogDecoder, checksum
from chainpush.watcher.errors import ConfigError
from chainpush.watcher.wallets import (
    DECIMALS,
    SYMBOL,
    WalletActivity,
    check_standards,
    decode_decimals,
    decode_symbol,
    pad,
    standard_abi,
    token_info,
)

ROOT = Path(__file__).resolve().parents[2]
ALICE = checksum("0x" + "a1" * 20)
BOB = checksum("0x" + "b0" * 20)
CAROL = checksum("0x" + "c4" * 20)
TOKEN = "0x" + "70" * 20
TRANSFER = standard_abi("erc20").event("Transfer").topic0
SINGLE = standard_abi("erc1155").event("TransferSingle").topic0
BATCH = standard_abi("erc1155").event("TransferBatch").topic0


def log(topics: list[str], data: str = "0x", *, block: int = 5, index: int = 0,
        address: str = TOKEN) -> dict[str, Any]:
    return {"address": address, "topics": topics, "data": data, "blockNumber": hex(block),
            "blockHash": "0x" + f"{block:064x}", "transactionHash": "0x" + "ab" * 32,
            "logIndex": hex(index)}


def word(n: int) -> str:
    return f"{n:064x}"


def test_filters_from_and_to_each_standard() -> None:
    w = WalletActivity(1, ["erc20", "erc721", "erc1155"])
    flts = w.filters([BOB, ALICE])
    wallets = sorted([pad(ALICE), pad(BOB)])
    assert flts == [
        {"topics": [[TRANSFER], wallets]},                      # from (ERC-20 and ERC-721)
        {"topics": [[TRANSFER], None, wallets]},                # to
        {"topics": [sorted([SINGLE, BATCH]), None, wallets]},   # ERC-1155 from (topic 2)
        {"topics": [sorted([SINGLE, BATCH]), None, None, wallets]},  # ERC-1155 to (topic 3)
    ]
    assert w.filters([]) == []
    many = WalletActivity(1, ["erc20"], max_addresses=1).filters([ALICE, BOB])
    assert many == [{"topics": [[TRANSFER]]}]  # beyond the limit: topic0 only, select filters


def test_select_by_wallet_and_shape() -> None:
    w = WalletActivity(1, ["erc20", "erc1155"])
    to_alice = log([TRANSFER, pad(BOB), pad(ALICE)], "0x" + word(7), index=1)
    between_others = log([TRANSFER, pad(BOB), pad(CAROL)], "0x" + word(7), index=2)
    nft_to_alice = log([TRANSFER, pad(BOB), pad(ALICE), "0x" + word(9)], index=3)  # erc721 off
    operator_only = log([SINGLE, pad(ALICE), pad(BOB), pad(CAROL)],
                        "0x" + word(1) + word(2), index=4)
    single_from = log([SINGLE, pad(CAROL), pad(ALICE), pad(BOB)], "0x" + word(1) + word(2),
                      index=0, block=6)
    got = w.select([single_from, to_alice, between_others, nft_to_alice, operator_only,
                    to_alice], [ALICE])
    assert got == [to_alice, single_from]  # ordered, deduplicated (two filters answer it)


def test_erc20_and_erc721_share_topic0_and_differ_by_topic_count() -> None:
    w = WalletActivity(1, ["erc20", "erc721"])
    erc20 = w.decode(log([TRANSFER, pad(BOB), pad(ALICE)], "0x" + word(10**21)), 1700)
    erc721 = w.decode(log([TRANSFER, pad(BOB), pad(ALICE), "0x" + word(42)]), 1700)
    assert erc20 is not None and erc721 is not None
    assert (erc20.contract, erc20.args) == ("erc20", {"from": BOB, "to": ALICE,
                                                      "value": str(10**21)})
    assert (erc721.contract, erc721.args) == ("erc721", {"from": BOB, "to": ALICE,
                                                         "tokenId": "42"})
    assert erc20.address == checksum(TOKEN) and erc20.address_paths == ("from", "to")
    assert w.decode(log([TRANSFER, pad(BOB), pad(ALICE)], "0x12"), 0) is None  # short data


def test_erc1155_batch_decodes_arrays() -> None:
    w = WalletActivity(1, ["erc1155"])
    data = "0x" + encode(["uint256[]", "uint256[]"], [[1, 2], [10, 20]]).hex()
    rec = w.decode(log([BATCH, pad(CAROL), pad(BOB), pad(ALICE)], data), 0)
    assert rec is not None and rec.event == "TransferBatch"
    assert rec.args == {"operator": CAROL, "from": BOB, "to": ALICE, "ids": ["1", "2"],
                        "values": ["10", "20"]}
    assert rec.address_paths == ("operator", "from", "to")


def test_recorded_demo_token_transfers_decode_as_with_its_own_abi() -> None:
    """The 121 recorded DemoToken logs: every Transfer decodes with the standard ERC-20 ABI to
    the args DemoToken's own ABI gives."""
    doc = json.loads((ROOT / "tests" / "data" / "watcher" / "demo_logs.json").read_text())
    own = LogDecoder(31337, [ContractSpec("DemoToken", doc["address"],
                                          load_abi(ROOT / "abi" / "DemoToken.abi"))])
    w = WalletActivity(31337, ["erc20"])
    transfers = [lg for lg in doc["logs"] if lg["topics"][0] == TRANSFER]
    assert transfers
    for lg in transfers:
        mine, theirs = w.decode(lg, 0), own.decode(lg, 0)
        assert mine is not None and theirs is not None
        assert mine.args == theirs.args and mine.id == theirs.id


def test_token_metadata_answers() -> None:
    as_string = "0x" + encode(["string"], ["DEMO"]).hex()
    assert decode_symbol(as_string) == "DEMO"
    assert decode_symbol("0x" + b"MKR".ljust(32, b"\0").hex()) == "MKR"  # bytes32 (old tokens)
    assert decode_symbol("0x") is None and decode_symbol(None) is None
    assert decode_decimals("0x" + word(18)) == 18
    assert decode_decimals("0x" + word(300)) is None and decode_decimals("0x") is None
    info = token_info("erc20", {SYMBOL: as_string, DECIMALS: "0x" + word(6)})
    assert info.to_dict() == {"standard": "erc20", "symbol": "DEMO", "decimals": 6}
    assert token_info("erc721", {SYMBOL: as_string}).decimals is None


def test_standards_are_checked() -> None:
    assert check_standards(["erc20", "erc1155"], "w") == ("erc20", "erc1155")
    with pytest.raises(ConfigError, match=r"unknown standard.*'erc777'"):
        check_standards(["erc777"], "t.toml: [watch] wallet_activity")
    with pytest.raises(ConfigError, match="listed twice"):
        check_standards(["erc20", "erc20"], "w")
