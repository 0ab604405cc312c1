"""The browser client (push/static/client.js) run under Node with a fake WebSocket and clock:
auth first, resubscribe with since after a drop, same node then the next, dedup, a new token
after 4003, backoff with jitter, unknown frame types reported."""

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
