"""The demo page's rules for showing arguments (push/static/format.js), under Node: token amounts
with their decimals by contract and argument name, exact (BigInt); addresses shortened; struct
fields flattened to paths."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

FORMAT = Path(__file__).resolve().parents[2] / "push" / "static" / "format.js"

pytestmark = pytest.mark.requires(shutil.which("node") is not None, "node is not installed")

HARNESS = r"""
const { pathToFileURL } = await import("node:url");
const f = await import(pathToFileURL(process.argv[2]).href);
console.log(JSON.stringify({
  units: ["1234500000000000000000", "0", "12345", "1000000000000000000000001",
          "115792089237316195423570985008687907853269984665640564039457584007913129639935"]
    .map((v) => f.formatUnits(v, 18)),
  six: f.formatUnits("1500000", 6),
  amount: [["DemoToken", "value"], ["DemoToken", "order.amount"], ["DemoToken", "id"],
           ["CallDemo", "value"], ["DemoToken", "inputs"]]
    .map(([c, p]) => (f.amountToken(c, p) || {}).symbol || null),
  short: f.shortAddress("0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"),
  isAddress: ["0x5B38Da6a701c568545dCfcB03FcB875f56beddC4", "0x1234", "0x" + "ab".repeat(32)]
    .map(f.isAddress),
  leaves: f.leaves({ id: "7", order: { maker: "0xab", amount: "5" }, ids: ["1", "2"] }),
}));
"""


def test_arguments_for_people(tmp_path: Path) -> None:
    harness = tmp_path / "harness.mjs"
    harness.write_text(HARNESS)
    done = subprocess.run(["node", str(harness), str(FORMAT)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["units"] == [
        "1,234.5", "0", "0.000000000000012345", "1,000,000.000000000000000001",
        # uint256 max: exact, no float rounding
        "115,792,089,237,316,195,423,570,985,008,687,907,853,269,984,665,640,564,039,457"
        ".584007913129639935",
    ]
    assert r["six"] == "1.5"
    # DemoToken's value/amount are amounts (18 decimals, DEMO); an id or CallDemo's value is not
    assert r["amount"] == ["DEMO", "DEMO", None, None, None]
    assert r["short"] == "0x5B38…eddC4"
    assert r["isAddress"] == [True, False, False]
    assert r["leaves"] == [["id", "7"], ["order.maker", "0xab"], ["order.amount", "5"],
                           ["ids", ["1", "2"]]]


CHAIN_HARNESS = r"""
const { pathToFileURL } = await import("node:url");
const f = await import(pathToFileURL(process.argv[2]).href);
console.log(JSON.stringify([8453, 1, 31337, 777, undefined, null].map(f.chainLabel)));
"""


def test_a_records_chain_is_labelled_by_name_or_id(tmp_path: Path) -> None:
    harness = tmp_path / "chain.mjs"
    harness.write_text(CHAIN_HARNESS)
    done = subprocess.run(["node", str(harness), str(FORMAT)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    # an app record (no chain_id) has no label
    assert json.loads(done.stdout) == ["Base · 8453", "Ethereum · 1", "dev · 31337",
                                       "chain 777", "", ""]
