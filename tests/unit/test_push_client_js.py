"""The browser client (push/static/client.js) run under Node with a fake WebSocket and clock:
auth first, resubscribe with since after a drop, same node then the next, dedup, a new token
after 4003, backoff with jitter, unknown frame types reported; stream epochs (reset, a new
epoch mid-stream); the record book (incarnation order, state values that never go back)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "push" / "static" / "client.js"

HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const sockets = [], timers = [];
class FakeWS {
  constructor(url) { this.url = url; this.sent = []; this.readyState = 0; sockets.push(this); }
  send(d) { this.sent.push(JSON.parse(d)); }
  close() {}
  open() { this.readyState = 1; this.onopen(); }
  recv(o) { this.onmessage({ data: typeof o === "string" ? o : JSON.stringify(o) }); }
  drop(code) { this.readyState = 3; this.onclose({ code, reason: "" }); }
}
FakeWS.OPEN = 1;
const math = Object.create(Math); math.random = () => 0.5;
const ctx = { window: {}, WebSocket: FakeWS, setTimeout: (f, d) => timers.push([f, d]),
              console, Math: math, JSON, Set, Map, Promise, String };
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), ctx);
const tick = () => new Promise((r) => setImmediate(r));
(async () => {
  const got = [], errors = [], states = [];
  let tokens = 0;
  const c = new ctx.window.ChainpushClient({
    urls: ["ws://a", "ws://b"], getToken: async () => "t" + (++tokens),
    onMessage: (m) => got.push(m.offset), onError: (e) => errors.push(e.code),
    onState: (s) => states.push(s),
  });
  c.subscribe("contract:A", { since: 0 });
  c.subscribe("state:A");
  await c.start();
  const msg = (t, o) => ({ type: "message", topic: t, offset: o, id: "e" + o + "/pending",
                           record: {} });
  let ws = sockets[0];
  ws.open();
  ws.recv({ type: "welcome" });
  ws.recv({ type: "subscribed", topic: "state:A", since: 7, head: 7 });
  ws.recv(msg("contract:A", 1)); ws.recv(msg("contract:A", 2)); ws.recv(msg("contract:A", 2));
  ws.recv({ type: "shout" }); ws.recv("{not json");
  ws.drop(1006);
  const delays = [timers[0][1]];
  timers.shift()[0]();
  await tick();
  ws = sockets[1];
  ws.open();
  ws.recv({ type: "welcome" });
  ws.recv(msg("contract:A", 3));
  ws.drop(4003);
  delays.push(timers[0][1]);
  timers.shift()[0]();
  await tick(); await tick();
  sockets[2].open();
  sockets[2].drop(1006);  // before any welcome: the backoff grows
  delays.push(timers[0][1]);
  timers.shift()[0]();
  await tick(); await tick();
  console.log(JSON.stringify({
    urls: sockets.map((s) => s.url), sent: sockets.map((s) => s.sent), got, errors, delays,
    states,
  }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_client_js_resumes_dedups_and_reconnects(tmp_path: Path) -> None:
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    out = subprocess.run(["node", str(harness), str(CLIENT)], capture_output=True, text=True,
                         check=True, timeout=30)
    r = json.loads(out.stdout)
    # back to the node that served us; to the next one when it did not answer
    assert r["urls"] == ["ws://b", "ws://b", "ws://b", "ws://a"]
    first, second, third, fourth = r["sent"]
    assert fourth == []  # not opened in this script
    assert first[0] == {"type": "auth", "token": "t1"}  # the token in the first frame only
    assert first[1:] == [{"type": "subscribe", "topic": "contract:A", "since": 0},
                         {"type": "subscribe", "topic": "state:A"}]
    assert second == [{"type": "auth", "token": "t1"},
                      {"type": "subscribe", "topic": "contract:A", "since": 2},
                      {"type": "subscribe", "topic": "state:A", "since": 7}]
    assert third == [{"type": "auth", "token": "t2"}]  # 4003: a new token
    assert r["got"] == [1, 2, 3]  # the duplicate of 2 was dropped
    assert r["errors"] == ["unknown_type", "bad_json"]
    # full jitter (random fixed at 0.5 here); reset by each welcome, growing without one
    assert r["delays"] == [125, 125, 250]
    assert r["states"][:3] == ["connecting", "connected", "subscribed"]


EPOCH_HARNESS = HARNESS.split("(async () => {")[0] + r"""
(async () => {
  const got = [];
  const c = new ctx.window.ChainpushClient({
    urls: ["ws://a"], getToken: async () => "t", onMessage: (m) => got.push(m.id),
    onError: () => {},
  });
  c.subscribe("contract:A", { since: 0 });
  await c.start();
  const msg = (o, epoch, id) => ({ type: "message", topic: "contract:A", offset: o, epoch,
                                   id: id + "/pending", record: {} });
  const reconnect = async () => {
    sockets[sockets.length - 1].drop(1006);
    timers.shift()[0]();
    await tick();
    const ws = sockets[sockets.length - 1];
    ws.open();
    ws.recv({ type: "welcome" });
    return ws;
  };
  let ws = sockets[0];
  ws.open();
  ws.recv({ type: "welcome" });
  ws.recv({ type: "subscribed", topic: "contract:A", since: 0, head: 2, epoch: "E1",
            reset: false });
  ws.recv(msg(1, "E1", "a1")); ws.recv(msg(2, "E1", "a2"));
  ws = await reconnect();  // the store is wiped meanwhile: the node resets us
  ws.recv({ type: "subscribed", topic: "contract:A", since: 0, head: 3, epoch: "E2",
            reset: true });
  ws.recv(msg(1, "E2", "a1"));  // replayed: already shown, dropped by id
  ws.recv(msg(2, "E2", "b2")); ws.recv(msg(3, "E2", "b3"));
  const afterReset = c.position("contract:A");
  ws = await reconnect();
  ws.recv({ type: "subscribed", topic: "contract:A", since: 3, head: 3, epoch: "E2",
            reset: false });
  ws.recv(msg(1, "E3", "c1"));  // a live message of a new stream: its offsets start again
  ws = await reconnect();
  console.log(JSON.stringify({ sent: sockets.map((s) => s.sent.slice(1)), got, afterReset }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_client_js_keeps_the_epoch_and_resets_its_offset(tmp_path: Path) -> None:
    harness = tmp_path / "harness.js"
    harness.write_text(EPOCH_HARNESS)
    out = subprocess.run(["node", str(harness), str(CLIENT)], capture_output=True, text=True,
                         check=True, timeout=30)
    r = json.loads(out.stdout)
    sub = {"type": "subscribe", "topic": "contract:A"}
    assert r["sent"] == [
        [{**sub, "since": 0}],  # nothing known yet: no epoch
        [{**sub, "since": 2, "epoch": "E1"}],
        [{**sub, "since": 3, "epoch": "E2"}],  # the offset of the new stream, with its epoch
        [{**sub, "since": 1, "epoch": "E3"}],
    ]
    assert r["afterReset"] == {"since": 3, "epoch": "E2"}
    assert r["got"] == ["a1/pending", "a2/pending", "b2/pending", "b3/pending", "c1/pending"]


BOOK_HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const ctx = { window: {}, console, Math, JSON, Set, Map };
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), ctx);
const out = {};
const ev = (status, incarnation) => ({ kind: "event", id: "X", status, incarnation,
                                       block_number: 5 });
let book = new ctx.window.ChainpushRecordBook();
out.events = [ev("pending"), ev("removed", 0), ev("pending", 1), ev("confirmed", 0),
              ev("removed"), ev("pending", 1), ev("confirmed", 1)].map((r) => {
  const got = book.apply(r);
  return [got.changed, got.record.status, got.record.incarnation || 0];
});
const st = (block, fork, status, value) => ({
  kind: "state", id: "31337:0x" + block + fork + ":state:C.get()", contract: "C", event: "get",
  args: { inputs: [], value: String(value) }, block_number: block, status });
const other = { ...st(30, "a", "pending", 99), args: { inputs: ["0xab"], value: "99" } };
book = new ctx.window.ChainpushRecordBook();
const key = (got) => got.current ? got.current.args.value : null;
out.state = [
  st(10, "a", "pending", 10), st(20, "a", "pending", 20),
  st(10, "a", "confirmed", 10),  // late, older block: must not win
  other,                         // another key: does not touch C.get()
  st(20, "a", "removed", 20),    // the newer block orphaned: back to block 10
  st(20, "b", "pending", 21),    // its replacement
  st(20, "a", "pending", 20),    // stale: 20a was removed
  st(25, "a", "pending", 25), st(25, "b", "pending", 26),  // two forks, removed not yet seen
  st(25, "a", "removed", 25), st(25, "b", "removed", 26), st(20, "b", "removed", 21),
  st(10, "a", "removed", 10),
].map((r) => { const got = book.apply(r); return [got.key, key(got)]; });
const small = new ctx.window.ChainpushRecordBook({ maxPerKey: 2 });
for (const b of [3, 1, 4, 2]) small.apply(st(b, "a", "pending", b));
out.pruned = [...small.keys.get("C.get()").values()].map((e) => e.record.block_number).sort();
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_record_book_never_goes_backwards(tmp_path: Path) -> None:
    harness = tmp_path / "harness.js"
    harness.write_text(BOOK_HARNESS)
    out = subprocess.run(["node", str(harness), str(CLIENT)], capture_output=True, text=True,
                         check=True, timeout=30)
    r = json.loads(out.stdout)
    # one record id: the greatest (incarnation, pending < confirmed < removed) is shown
    assert r["events"] == [[True, "pending", 0], [True, "removed", 0], [True, "pending", 1],
                           [False, "pending", 1], [False, "pending", 1], [False, "pending", 1],
                           [True, "confirmed", 1]]
    # one state key: the live record with the highest block, whatever the arrival order
    assert r["state"] == [
        ["C.get()", "10"], ["C.get()", "20"], ["C.get()", "20"], ['C.get("0xab")', "99"],
        ["C.get()", "10"], ["C.get()", "21"], ["C.get()", "21"], ["C.get()", "25"],
        ["C.get()", "26"],  # same height: the later fork
        ["C.get()", "26"], ["C.get()", "21"], ["C.get()", "10"], ["C.get()", None],
    ]
    assert r["pruned"] == [3, 4]
