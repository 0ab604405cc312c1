"""@chainpush/client's transaction helpers (clients/js): TxBook, txStage, grants, and tx: topics
keyed case-insensitively (the node lowers a tx: topic's hash)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_js_client import run

H = "0x" + "ab" * 32


def test_tx_book_follows_a_lifecycle_and_ignores_replays(tmp_path: Path) -> None:
    r = run(tmp_path, f"const H = \"{H}\";\n" + r"""
const pool = (n) => ({ kind: "tx", id: "1:tx:" + H, tx_hash: H, event: "pending",
                       status: "pending", incarnation: n });
const mined = (b, status) => ({ kind: "tx", id: "1:" + b + ":tx:" + H, tx_hash: H,
                                event: "mined", status, block_hash: b });
const book = new m.TxBook({ maxTxs: 2 });
out.steps = [pool(0), mined("0xb1", "pending"), mined("0xb1", "removed"), pool(1),
             pool(1), mined("0xb2", "pending"), mined("0xb2", "confirmed")]
  .map((r) => { const got = book.apply(r); return [got.stage, got.changed]; });
out.stages = book.get(H).stages;
out.final = m.FINAL_TX_STAGES;
out.words = [m.txStage({ event: "replaced", status: "confirmed" }),
             m.txStage({ event: "mined", status: "removed" }),
             m.txStage({ event: "dropped", status: "confirmed", stage: "dropped" })];
for (const h of ["0x1", "0x2"]) book.apply({ ...pool(0), tx_hash: h, id: "1:tx:" + h });
out.evicted = book.get(H) === undefined;
""")
    assert r["steps"] == [["pending", True], ["mined", True], ["removed", True],
                          ["pending", True], ["pending", False], ["mined", True],
                          ["confirmed", True]]
    assert r["stages"] == ["pending", "mined", "removed", "pending", "mined", "confirmed"]
    assert r["final"] == ["confirmed", "replaced", "dropped"]
    assert r["words"] == ["replaced", "removed", "dropped"]
    assert r["evicted"]


def test_grants_and_tx_topic_keys(tmp_path: Path) -> None:
    r = run(tmp_path, f"const H = \"{H}\";\n" + r"""
out.grants = [[["*"], "tx:" + H], [["tx:*"], "tx:" + H], [["t*"], "tx:" + H],
              [["tx:" + H], "tx:" + H], [["*"], "app:demo-txs"], [["app:*"], "app:demo-txs"],
              [[], "app:demo-txs"], [undefined, "contract:A"]]
  .map(([p, t]) => m.grants(p, t));
out.key = m.topicKey("tx:0x" + "AB".repeat(32));
const got = [], states = [];
const c = m.connect({ urls: ["ws://a"], token: "t", ...fake });
c.on("state", (s) => states.push(s));
c.subscribe("tx:0x" + "AB".repeat(32), { since: 0 }, (mm) => got.push(mm.offset));
await tick();
const ws = sockets[0];
ws.open();
ws.recv({ type: "welcome", user: "alice", topics: ["tx:*"] });
ws.recv({ type: "subscribed", topic: "tx:" + H, since: 0, head: 1 });
ws.recv(msg("tx:" + H, 1, "p"));
out.got = got;
out.topics = states.filter((s) => s.state === "open").map((s) => s.topics);
""")
    assert r["grants"] == [False, True, False, True, True, True, False, False]
    assert r["key"] == "tx:" + H
    assert r["got"] == [1]  # the node's lower-case topic reaches the upper-case subscription
    assert r["topics"] == [["tx:*"]]
