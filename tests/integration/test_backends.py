"""One test class, two chains: in-process eth-tester and a real anvil (as web3.py runs its own
tests on eth-tester and geth). Deploy → call → 2020, and the watcher's HTTP-polling path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from chainpush.deploy import contract, deploy
from chainpush.testing import LocalChain, Pipeline
from tests.conftest import start_test_anvil

pytestmark = pytest.mark.integration

ABI = Path(__file__).resolve().parents[2] / "abi"


@dataclass
class Chain:
    kind: str
    url: str
    w3: Web3
    mine_fn: Any

    def mine(self, blocks: int) -> None:
        self.mine_fn(blocks)


@pytest.fixture(params=["eth-tester", "anvil"])
async def chain(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Chain]:
    if request.param == "eth-tester":
        async with LocalChain() as local:
            local.w3.eth.default_account = local.accounts[0]
            yield Chain("eth-tester", local.url, local.w3, local.mine)
        return
    node = start_test_anvil(tmp_path / "anvil")
    try:
        w3 = Web3(Web3.HTTPProvider(node.http_url))
        w3.eth.default_account = w3.eth.accounts[0]
        yield Chain("anvil", node.http_url, w3,
                    lambda n: w3.provider.make_request("anvil_mine", [hex(n)]))  # type: ignore[arg-type]
    finally:
        node.server.stop()
        node.ipc_path.unlink(missing_ok=True)


class TestOnBothChains:
    def test_deploy_then_view_call_returns_2020(self, chain: Chain, tmp_path: Path) -> None:
        deployed = deploy(chain.w3, ("CallDemo",), abi_dir=ABI, deployments_dir=tmp_path)
        demo = contract(chain.w3, "CallDemo", abi_dir=ABI, deployments_dir=tmp_path)
        assert demo.address == deployed["CallDemo"].address
        assert demo.functions.get().call() == 2020
        # deploying again is a no-op: the recorded address holds the code
        again = deploy(chain.w3, ("CallDemo",), abi_dir=ABI, deployments_dir=tmp_path)
        assert again["CallDemo"] == deployed["CallDemo"]

    async def test_watcher_polls_http_and_delivers_pending_then_confirmed(
        self, chain: Chain, tmp_path: Path, unit: float
    ) -> None:
        deployed = deploy(chain.w3, ("CallDemo",), abi_dir=ABI, deployments_dir=tmp_path)
        address = deployed["CallDemo"].address
        demo = contract(chain.w3, "CallDemo", abi_dir=ABI, deployments_dir=tmp_path)
        async with Pipeline(chain.url, {"CallDemo": address}, abi_dir=ABI,
                            state_dir=tmp_path / "stores", finality_depth=2) as pipe:
            tx = demo.functions.set(2021).transact()
            chain.w3.eth.wait_for_transaction_receipt(tx)
            [pending] = await pipe.wait_for("contract:CallDemo", 1, timeout_s=20 * unit)
            assert pending.record["event"] == "ValueChanged"
            assert pending.record["args"]["newValue"] == "2021"
            assert pending.record["status"] == "pending"
            chain.mine(2)
            got = await pipe.wait_for("contract:CallDemo", 2, timeout_s=20 * unit)
            assert [m.record["status"] for m in got] == ["pending", "confirmed"]
            assert got[1].record["id"] == pending.record["id"]
