// A peer baseline for bench/bench_push.py: Node.js `ws` broadcasting the same frames to the same
// clients as the raw websockets baseline (same handshake: auth → welcome, subscribe → subscribed).
//
//   node bench/ws_broadcast.mjs PORT CONNS FRAMES_FILE RATE LATENCY(0|1)
//
// FRAMES_FILE holds one `message` frame per line, as chainpush's node would send it; in latency
// mode each frame's `"sent_ns": "SENT_NS"` placeholder gets the epoch-nanosecond time taken just
// before it is sent (performance.timeOrigin + now(): CLOCK_REALTIME, like Python's time_ns()).
// Protocol on stdio, as the Python baseline: prints "listening", waits for every client to
// subscribe and a "go" line on stdin, broadcasts, prints {"t0_ns": …}, exits on the next line.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { WebSocketServer } from "ws"; // ws 8, a devDependency of package.json

const [port, conns, framesFile, rate, latency] = process.argv.slice(2);
const want = Number(conns);
const frames = readFileSync(framesFile, "utf8").split("\n").filter((l) => l.length > 0);
const nowNs = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
const subscribed = [];
let allIn;
const allInP = new Promise((resolve) => { allIn = resolve; });

const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(port), perMessageDeflate: false });
wss.on("connection", (client) => {
  let step = 0;
  client.on("message", (data) => {
    step += 1;
    if (step === 1) {
      client.send(JSON.stringify({ type: "welcome", user: "u", node: "ws-node", topics: [], wallets: [],
                               expires_at: 0, heartbeat_s: 20 }));
    } else if (step === 2) {
      const topic = JSON.parse(data.toString()).topic;
      client.send(JSON.stringify({ type: "subscribed", topic, since: 0, head: 0, ref: null }));
      subscribed.push(client);
      if (subscribed.length === want) allIn();
    }
  });
});

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

wss.on("listening", async () => {
  console.log("listening");
  await allInP;
  await nextLine(); // "go"
  let t0 = nowNs();
  if (latency === "1") {
    const start = Date.now();
    for (let n = 0; n < frames.length; n++) {
      const frame = frames[n].replace("SENT_NS", nowNs().toString());
      for (const peer of subscribed) peer.send(frame);
      await sleep(start + ((n + 1) * 1000) / Number(rate) - Date.now());
    }
  } else {
    t0 = nowNs();
    for (const frame of frames) {
      for (const peer of subscribed) peer.send(frame);
      await new Promise((resolve) => setImmediate(resolve)); // yield, as asyncio.sleep(0)
    }
  }
  console.log(JSON.stringify({ t0_ns: Number(t0) }));
  await nextLine();
  process.exit(0);
});
