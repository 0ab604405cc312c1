"""The JS client package (clients/js, @chainpush/client) run under Node with a fake WebSocket, a
fake clock and fixed randomness: auth in the first frame, resubscribe with since after a drop,
same node then the next, dedup by message id, a new token after 4003, full-jitter backoff and the
`waiting` state that says why and when, unknown frame types reported; stream epochs (reset, a new
epoch mid-stream); positions kept in storage across a reload; token renewal before expires_at;
unsubscribe; the record book (incarnation order, state values that never go back)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "js"

pytestmark = pytest.mark.requires(shutil.which("node") is not None, "node is not installed")

# A fake world: sockets opened, timers pending (run by hand), a clock that moves only when told.
PRELUDE = r"""
const { pathToFileURL } = await import("node:url");
const m = await import(pathToFileURL(process.argv[2] + "/index.js").href);
const sockets = [], timers = [];
let clock = 1_000_000;
class FakeWS {
  constructor(url) { this.url = url; this.sent = []; this.closedWith = null; sockets.push(this); }
  send(d) { this.sent.push(JSON.parse(d)); }
  close(code, reason) { this.closedWith = [code, reason]; }
  open() { this.onopen(); }
  recv(o) { this.onmessage({ data: typeof o === "string" ? o : JSON.stringify(o) }); }
  drop(code, reason = "") { this.onclose({ code, reason }); }
}
let nextTimer = 1;
const fake = {
  WebSocket: FakeWS, now: () => clock, random: () => 0.5,
  setTimeout: (f, ms) => { const id = nextTimer++; timers.push({ id, f, ms }); return id; },
  clearTimeout: (id) => {
    const i = timers.findIndex((t) => t.id === id);
    if (i >= 0) timers.splice(i, 1);
  },
};
const tick = async () => { for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r)); };
// run the next timer, the clock moved to its time
const fire = async () => {
  const t = timers.shift(); clock += t.ms; t.f(); await tick(); return t.ms;
};
const msg = (topic, offset, id, epoch) => ({ type: "message", topic, offset, epoch,
  id: id + "/pending", record: {} });
const out = {};
"""


def run(tmp_path: Path, body: str) -> dict[str, Any]:
    harness = tmp_path / "harness.mjs"
    harness.write_text(PRELUDE + body + "\nconsole.log(JSON.stringify(out));\n")
    done = subprocess.run(["node", str(harness), str(PACKAGE)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_resumes_dedups_reconnects_with_jittered_backoff(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
let tokens = 0;
const got = [], errors = [], states = [];
const c = m.connect({ urls: ["ws://a", "ws://b"], getToken: async () => "t" + (++tokens),
  ...fake });
c.on("state", (s) => states.push(s));
c.on("error", (e) => errors.push(e.code));
c.subscribe("contract:A", { since: 0 }, (mm) => got.push(mm.offset));
c.subscribe("state:A", {}, () => {});
await tick();
let ws = sockets[0];
ws.open();
ws.recv({ type: "welcome", user: "alice" });
ws.recv({ type: "subscribed", topic: "state:A", since: 7, head: 7 });
ws.recv(msg("contract:A", 1, "e1")); ws.recv(msg("contract:A", 2, "e2"));
ws.recv(msg("contract:A", 2, "e2"));  // a repeat
ws.recv({ type: "shout" }); ws.recv("{not json");
ws.drop(1006);
out.waiting = states[states.length - 1];
const delays = [await fire()];
ws = sockets[1];
ws.open();
ws.recv({ type: "welcome", user: "alice" });
ws.recv(msg("contract:A", 3, "e3"));
ws.drop(4003, "token expired");
delays.push(await fire());
sockets[2].open();
sockets[2].drop(1006);  // before any welcome: the backoff grows
delays.push(await fire());
sockets[3].drop(1006);
delays.push(await fire());
Object.assign(out, { urls: sockets.map((s) => s.url), sent: sockets.map((s) => s.sent), got,
  errors, delays, states: states.map((s) => s.state) });
""")
    # back to the node that served us; to the next one when it did not let us in
    assert r["urls"] == ["ws://b", "ws://b", "ws://b", "ws://a", "ws://b"]
    first, second, third = r["sent"][:3]
    assert first[0] == {"type": "auth", "token": "t1"}  # the token in the first frame only
    assert first[1:] == [{"type": "subscribe", "topic": "contract:A", "since": 0},
                         {"type": "subscribe", "topic": "state:A"}]
    assert second == [{"type": "auth", "token": "t1"},
                      {"type": "subscribe", "topic": "contract:A", "since": 2},
                      {"type": "subscribe", "topic": "state:A", "since": 7}]
    assert third == [{"type": "auth", "token": "t2"}]  # 4003: a new token
    assert r["got"] == [1, 2, 3]  # the repeat of 2 was dropped
    assert r["errors"] == ["unknown_type", "bad_json"]
    # full jitter, random fixed at 0.5: 0.5 x min(15 s, 250 ms x 2^attempt), reset by a welcome
    assert r["delays"] == [125, 125, 250, 500]
    # waiting says why and when it retries
    assert r["waiting"] == {"state": "waiting", "reason": "1006 connection lost", "code": 1006,
                            "delayMs": 125, "retryAt": 1_000_000 + 125}
    assert r["states"][:4] == ["connecting", "open", "waiting", "connecting"]


def test_backoff_delay_is_full_jitter_capped(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
out.top = [0, 1, 2, 6, 7, 20, 1000].map((a) => m.backoffDelay(a, () => 0.999999));
out.low = m.backoffDelay(5, () => 0);
out.custom = m.backoffDelay(3, () => 0.5, { baseMs: 100, capMs: 1000 });
""")
    assert [round(d) for d in r["top"]] == [250, 500, 1000, 15000, 15000, 15000, 15000]
    assert r["low"] == 0
    assert r["custom"] == 400


def test_waiting_names_the_unreachable_node_and_a_refused_token(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
const states = [];
let calls = 0;
const c = m.connect({ urls: ["ws://down"], getToken: async () => {
  calls += 1; if (calls === 1) throw new Error("user must be 1-64 characters"); return "t"; },
  ...fake });
c.on("state", (s) => states.push(s));
await tick();
await fire();
sockets[0].drop(1006);  // never opened
const stat = m.connect({ urls: ["ws://a"], token: "fixed", ...fake });
const statStates = [];
stat.on("state", (s) => statStates.push(s));
await tick();
sockets[1].open(); sockets[1].drop(4001, "authentication failed");
out.reasons = states.filter((s) => s.state === "waiting").map((s) => s.reason);
out.stat = statStates[statStates.length - 1];
""")
    assert r["reasons"] == ["getToken failed: user must be 1-64 characters",
                            "1006 connection lost (ws://down did not let us in)"]
    # a fixed token that is refused: retrying is pointless
    assert r["stat"]["state"] == "closed"
    assert r["stat"]["reason"].startswith("4001 authentication failed")
    assert "no getToken" in r["stat"]["reason"]


def test_epoch_reset_and_new_epoch(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
const got = [];
const c = m.connect({ urls: ["ws://a"], token: "t", getToken: async () => "t", ...fake });
c.subscribe("contract:A", { since: 0 }, (mm) => got.push(mm.id));
await tick();
const reconnect = async () => {
  sockets[sockets.length - 1].drop(1006);
  await fire();
  const ws = sockets[sockets.length - 1];
  ws.open(); ws.recv({ type: "welcome" });
  return ws;
};
let ws = sockets[0];
ws.open(); ws.recv({ type: "welcome" });
ws.recv({ type: "subscribed", topic: "contract:A", since: 0, head: 2, epoch: "E1", reset: false });
ws.recv(msg("contract:A", 1, "a1", "E1")); ws.recv(msg("contract:A", 2, "a2", "E1"));
ws = await reconnect();  // the store is wiped meanwhile: the node resets us
ws.recv({ type: "subscribed", topic: "contract:A", since: 0, head: 3, epoch: "E2", reset: true });
ws.recv(msg("contract:A", 1, "a1", "E2"));  // replayed: already shown, dropped by id
ws.recv(msg("contract:A", 2, "b2", "E2")); ws.recv(msg("contract:A", 3, "b3", "E2"));
out.afterReset = c.position("contract:A");
ws = await reconnect();
ws.recv({ type: "subscribed", topic: "contract:A", since: 3, head: 3, epoch: "E2", reset: false });
ws.recv(msg("contract:A", 1, "c1", "E3"));  // a live message of a new stream: offsets start again
ws = await reconnect();
out.sent = sockets.map((s) => s.sent.slice(1));
out.got = got;
""")
    sub = {"type": "subscribe", "topic": "contract:A"}
    assert r["sent"] == [
        [{**sub, "since": 0}],  # nothing known yet: no epoch
        [{**sub, "since": 2, "epoch": "E1"}],
        [{**sub, "since": 3, "epoch": "E2"}],  # the offset of the new stream, with its epoch
        [{**sub, "since": 1, "epoch": "E3"}],
    ]
    assert r["afterReset"] == {"since": 3, "epoch": "E2"}
    assert r["got"] == ["a1/pending", "a2/pending", "b2/pending", "b3/pending", "c1/pending"]


def test_positions_survive_a_reload_through_storage(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
const data = new Map();
const storage = { getItem: (k) => data.has(k) ? data.get(k) : null,
                  setItem: (k, v) => data.set(k, String(v)) };
let c = m.connect({ urls: ["ws://a"], token: "t", storage, ...fake });
c.subscribe("contract:A", { since: 0 }, () => {});
c.subscribe("user:0xAB00000000000000000000000000000000000001", { since: 0,
  filter: { event: ["Transfer"] } }, () => { throw new Error("handler bug"); });
const errors = [];
c.on("error", (e) => errors.push(e.code));
await tick();
sockets[0].open(); sockets[0].recv({ type: "welcome" });
sockets[0].recv(msg("contract:A", 4, "x4", "E1"));
sockets[0].recv(msg("user:0xab00000000000000000000000000000000000001", 9, "u9", "E7"));
c.close();
out.closed = c.state;
out.stored = Object.fromEntries(data);
// the page reloads: a new client on the same storage resumes where the last one left off
c = m.connect({ urls: ["ws://a"], token: "t", storage, ...fake });
c.subscribe("contract:A", { since: 0 }, () => {});
c.subscribe("user:0xab00000000000000000000000000000000000001", { since: 0,
  filter: { event: ["Transfer"] } }, () => {});
c.subscribe("contract:B", { since: 0 }, () => {});
await tick();
sockets[1].open(); sockets[1].recv({ type: "welcome" });
out.resent = sockets[1].sent.slice(1);
out.errors = errors;
out.closedSocket = sockets[0].closedWith;
""")
    assert r["stored"] == {
        "chainpush:contract:A": '{"since":4,"epoch":"E1"}',
        'chainpush:user:0xab00000000000000000000000000000000000001 {"event":["Transfer"]}':
            '{"since":9,"epoch":"E7"}',
    }
    assert r["errors"] == ["handler_failed"]  # reported; the client goes on
    assert r["closed"] == {"state": "closed", "reason": "closed by the application"}
    assert r["closedSocket"] == [1000, "bye"]
    assert r["resent"] == [
        {"type": "subscribe", "topic": "contract:A", "since": 4, "epoch": "E1"},
        {"type": "subscribe", "topic": "user:0xab00000000000000000000000000000000000001",
         "since": 9, "epoch": "E7", "filter": {"event": ["Transfer"]}},
        {"type": "subscribe", "topic": "contract:B", "since": 0},  # nothing stored: its own
    ]


def test_token_renewed_before_expiry_and_resumed_with_since(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
let tokens = 0;
const c = m.connect({ urls: ["ws://a"], getToken: async () => "t" + (++tokens),
  renewBeforeS: 30, ...fake });
const got = [];
c.subscribe("contract:A", { since: 0 }, (mm) => got.push(mm.offset));
await tick();
const now_s = clock / 1000;
sockets[0].open();
sockets[0].recv({ type: "welcome", expires_at: now_s + 600 });
sockets[0].recv(msg("contract:A", 1, "a1", "E"));
out.renewIn = timers.map((t) => t.ms);
await fire();  // the renewal timer: a new token, a new socket, the old one closed
out.oldClosed = sockets[0].closedWith;
sockets[0].recv(msg("contract:A", 2, "a2", "E"));  // late on the old socket: ignored
sockets[0].drop(1000, "token renewal");              // and its close changes nothing
sockets[1].open();
sockets[1].recv({ type: "welcome", expires_at: clock / 1000 + 40 });  // a short token
out.shortRenewIn = timers.map((t) => t.ms);
out.sent = sockets[1].sent;
out.sockets = sockets.length;
out.got = got;
out.at = m.renewAt(1000, 990_000, 60);
// a token already expired by this clock (skew): renewals back off instead of looping
out.skewed = [];
for (let i = 0; i < 4; i++) {
  await fire();
  const ws = sockets[sockets.length - 1];
  ws.open(); ws.recv({ type: "welcome", expires_at: clock / 1000 - 10 });
  out.skewed.push(timers.map((t) => t.ms));
}
sockets[sockets.length - 1].recv({ type: "welcome", expires_at: clock / 1000 + 600 });
out.healthy = timers.map((t) => t.ms);
""")
    assert r["renewIn"] == [570_000]  # 30 s before expires_at
    assert r["oldClosed"] == [1000, "token renewal"]
    assert r["sent"] == [{"type": "auth", "token": "t2"},
                         {"type": "subscribe", "topic": "contract:A", "since": 1, "epoch": "E"}]
    assert r["sockets"] == 2
    assert r["got"] == [1]  # a2 comes again from the new socket, after since=1
    assert r["shortRenewIn"] == [20_000]  # shorter than twice renewBeforeS: halfway
    assert r["at"] == 995_000
    assert r["skewed"] == [[1000], [2000], [4000], [8000]]
    assert r["healthy"] == [570_000]  # a sound token again: back to 30 s before expiry


def test_unsubscribe_and_replace(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
const got = [];
const c = m.connect({ urls: ["ws://a"], token: "t", ...fake });
const off = c.subscribe("contract:A", { since: 0 }, (mm) => got.push("A" + mm.offset));
const offB = c.subscribe("contract:B", {}, () => got.push("old B"));
c.subscribe("contract:B", { since: 5 }, (mm) => got.push("B" + mm.offset));  // replaces
await tick();
const ws = sockets[0];
ws.open(); ws.recv({ type: "welcome" });
ws.recv(msg("contract:A", 1, "a1")); ws.recv(msg("contract:B", 6, "b6"));
off();
offB();  // the replaced subscription's function: does nothing
ws.recv(msg("contract:A", 2, "a2"));  // in flight when unsubscribing: not delivered
ws.drop(1006); await fire(); sockets[1].open(); sockets[1].recv({ type: "welcome" });
out.got = got;
out.sent = ws.sent.slice(1);
out.resent = sockets[1].sent.slice(1);
try { m.connect({ urls: [], token: "t", ...fake }); } catch (e) { out.bad = e.message; }
""")
    assert r["got"] == ["A1", "B6"]
    assert r["sent"] == [{"type": "subscribe", "topic": "contract:A", "since": 0},
                         {"type": "subscribe", "topic": "contract:B", "since": 5},
                         {"type": "unsubscribe", "topic": "contract:A"}]
    assert r["resent"] == [{"type": "subscribe", "topic": "contract:B", "since": 6}]
    assert "urls must be a non-empty array" in r["bad"]


def test_record_book_never_goes_backwards(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
const ev = (status, incarnation) => ({ kind: "event", id: "X", status, incarnation,
                                       block_number: 5 });
let book = new m.RecordBook();
out.events = [ev("pending"), ev("removed", 0), ev("pending", 1), ev("confirmed", 0),
              ev("removed"), ev("pending", 1), ev("confirmed", 1)].map((r) => {
  const got = book.apply(r);
  return [got.changed, got.record.status, got.record.incarnation || 0];
});
const st = (block, fork, status, value) => ({
  kind: "state", id: "31337:0x" + block + fork + ":state:C.get()", contract: "C", event: "get",
  args: { inputs: [], value: String(value) }, block_number: block, status });
const other = { ...st(30, "a", "pending", 99), args: { inputs: ["0xab"], value: "99" } };
book = new m.RecordBook();
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
const small = new m.RecordBook({ maxPerKey: 2 });
for (const b of [3, 1, 4, 2]) small.apply(st(b, "a", "pending", b));
out.pruned = [...small.keys.get("C.get()").values()].map((e) => e.record.block_number).sort();
""")
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


def test_package_is_packable_with_its_types(tmp_path: Path) -> None:
    """`npm pack` ships the module, its record book and its declarations, and `exports` points
    at files that exist (npm pack --dry-run: nothing is written)."""
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed")
    done = subprocess.run(["npm", "pack", "--dry-run", "--json"], cwd=PACKAGE,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (pack,) = json.loads(done.stdout)
    files = {f["path"] for f in pack["files"]}
    assert {"index.js", "index.d.ts", "recordbook.js", "package.json", "README.md"} <= files
    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert manifest["type"] == "module"
    assert manifest["exports"]["."] == {"types": "./index.d.ts", "default": "./index.js"}
    assert manifest["types"] == "./index.d.ts"


def test_declarations_type_check() -> None:
    """index.d.ts against the README's usage (tests/data/js_client_usage.mts), with tsc --strict.
    TypeScript is not among the repository's npm packages yet: skipped until it is."""
    root = PACKAGE.parents[1]
    tsc = root / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.fail("typescript is not in node_modules (npm install -D typescript to check)")
    done = subprocess.run(
        [str(tsc), "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext",
         "--moduleResolution", "nodenext", "--lib", "es2022,dom",
         str(root / "tests" / "data" / "js_client_usage.mts")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_failed_renewal_keeps_the_connection_until_4003(tmp_path: Path) -> None:
    r = run(tmp_path, r"""
let calls = 0;
const errors = [];
const c = m.connect({ urls: ["ws://a"], ...fake, getToken: async () => {
  calls += 1; if (calls === 2) throw new Error("backend down"); return "t" + calls; } });
c.on("error", (e) => errors.push([e.code, e.message]));
c.subscribe("contract:A", { since: 0 }, () => {});
await tick();
sockets[0].open();
sockets[0].recv({ type: "welcome", expires_at: clock / 1000 + 600 });
await fire();  // renewal: getToken fails
out.afterFailure = { sockets: sockets.length, closed: sockets[0].closedWith, state: c.state.state };
sockets[0].drop(4003, "token expired");  // the node, at expiry
await fire();
sockets[1].open();
out.sent = sockets[1].sent[0];
out.errors = errors;
""")
    assert r["afterFailure"] == {"sockets": 1, "closed": None, "state": "open"}
    assert r["errors"] == [["renew_failed", "backend down"]]
    assert r["sent"] == {"type": "auth", "token": "t3"}


def test_ordered_urls_start_with_the_users_node(tmp_path: Path) -> None:
    out = run(tmp_path, r"""
const urls = ["ws://a/ws", "ws://b/ws", "ws://c/ws", "ws://d/ws"];
const placed = m.connect({ urls, ordered: true, token: "t", ...fake });
await tick();
out.ordered = sockets[0].url;
sockets[0].drop(1006);  // never let us in: the next in the user's order
await fire();
out.next = sockets[1].url;
placed.close();
const spread = m.connect({ urls, token: "t", ...fake });  // random 0.5 of 4: index 2
await tick();
out.unordered = sockets[2].url;
spread.close();
""")
    assert out == {"ordered": "ws://a/ws", "next": "ws://b/ws", "unordered": "ws://c/ws"}
