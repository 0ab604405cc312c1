// Compiled (not run) by tests/unit/test_js_client.py::test_declarations_type_check when
// TypeScript is installed: the README's usage against clients/js/index.d.ts.
import {
  connect, RecordBook, stateKey, backoffDelay, renewAt, type ConnectionState, type Message,
} from "../../clients/js/index.js";

const client = connect({
  urls: ["ws://127.0.0.1:8701/ws"],
  getToken: async () => "token",
  storage: localStorage,
  WebSocket,
});
const states: ConnectionState[] = [];
const offState: () => void = client.on("state", (s) => {
  states.push(s);
  if (s.state === "waiting") console.log(s.reason, new Date(s.retryAt), s.delayMs);
});
client.on("error", (e) => console.warn(e.code, e.message));
client.on("subscribed", (f) => console.log(f.topic, f.since, f.reset));
const book = new RecordBook({ maxRecords: 100 });
const off = client.subscribe("contract:DemoToken", { since: 0, filter: { event: ["Transfer"] } },
  (msg: Message) => {
    const got = book.apply(msg.record);
    if (got.changed) console.log(got.record.status, msg.offset, msg.epoch);
    if (got.key !== undefined) console.log(stateKey(msg.record), got.current?.args.value);
  });
const position = client.position("contract:DemoToken");
console.log(position?.since, backoffDelay(3, Math.random), renewAt(1, 2, 60), client.state.state);
off();
offState();
client.close();
