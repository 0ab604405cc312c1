"""chainpush.testing: a team's in-process test of its contract's notifications, no Node.js.

eth-tester (py-evm) behind real HTTP JSON-RPC, the real watcher (HTTP polling), the real collect
into nx-27017, and the stored topic streams a push node would deliver.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chainpush.testing import LocalChain, Pipeline

pytestmark = pytest.mark.integration

ABI = Path(__file__).resolve().parents[2] / "abi"


async def test_transfer_reaches_contract_and_wallet_topics_then_confirms(
    tmp_path: Path, unit: float
) -> None:
    async with LocalChain() as chain:
        token = chain.deploy("DemoToken", abi_dir=ABI)
        alice = chain.accounts[1]
        async with Pipeline(chain, {"DemoToken": token.address}, abi_dir=ABI,
                            state_dir=tmp_path, finality_depth=2) as pipe:
            tx = token.functions.transfer(alice, 12345).transact()
            receipt = chain.w3.eth.wait_for_transaction_receipt(tx)
            pending = [m for m in await pipe.wait_for(f"user:{alice}", 1, timeout_s=20 * unit)]
            assert [m.record["status"] for m in pending] == ["pending"]
            rec = pending[0].record
            assert (rec["event"], rec["args"]["to"], rec["args"]["value"]) == (
                "Transfer", alice, "12345")
            assert rec["block_number"] == receipt["blockNumber"]
            assert rec["tx_hash"] == "0x" + bytes(tx).hex()

            chain.mine(2)  # finality_depth = 2: the block is final now
            both = await pipe.wait_for(f"user:{alice}", 2, timeout_s=20 * unit)
            assert [m.record["status"] for m in both] == ["pending", "confirmed"]
            assert [m.offset for m in both] == [1, 2]
            # the contract topic carries the mint of the deploy as well (backfilled: confirmed)
            events = [(m.record["event"], m.record["status"])
                      for m in await pipe.messages("contract:DemoToken")]
            assert ("Transfer", "confirmed") in events


async def test_fork_on_eth_tester_retracts_the_orphaned_record(
    tmp_path: Path, unit: float
) -> None:
    async with LocalChain() as chain:
        token = chain.deploy("DemoToken", abi_dir=ABI)
        bob = chain.accounts[2]
        async with Pipeline(chain, {"DemoToken": token.address}, abi_dir=ABI,
                            state_dir=tmp_path, finality_depth=5) as pipe:
            token.functions.transfer(bob, 7).transact()
            [first] = await pipe.wait_for(f"user:{bob}", 1, timeout_s=20 * unit)
            assert first.record["status"] == "pending"
            chain.fork(1)  # the transfer's block is replaced by two empty ones
            got = await pipe.wait_for(f"user:{bob}", 2, timeout_s=20 * unit)
            assert [m.record["status"] for m in got] == ["pending", "removed"]
            assert got[1].record["id"] == first.record["id"]
