// The "Transactions" card: follows transactions by hash (tx:<hash>, docs/watcher.md
// §Transactions) and shows each one's lifecycle: pending → mined (result, gas) → confirmed, or
// removed / replaced / dropped. Hashes come from the text box, and from the announcements on
// app:demo-txs (docs/push.md §Announcing transactions: {"event": "tx.sent", "data": {"hash"}},
// published by the demo's traffic generator before each transaction is mined).
import { grants, TxBook, FINAL_TX_STAGES } from "./client/index.js";
import { shortAddress } from "./format.js";

export const ANNOUNCE_TOPIC = "app:demo-txs";
const MAX_TXS = 8; // rows shown (and subscriptions held): the oldest goes first
const HASH = /^0x[0-9a-fA-F]{64}$/;

const $ = (id) => document.getElementById(id);

export class TxCard {
  constructor() {
    this.client = null;
    this.book = new TxBook();
    this.follows = new Map(); // hash -> unsubscribe function
    $("tx-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("tx-hash").value.trim();
      if (!HASH.test(text)) {
        $("tx-note").textContent = "a transaction hash is 0x + 64 hex digits";
        return;
      }
      $("tx-hash").value = "";
      this.follow(text.toLowerCase());
    });
  }

  /** A new connection (a login): forget the rows, announcements once the token allows. */
  start(client) {
    this.client = client;
    this.book = new TxBook();
    this.follows.clear();
    $("txs").replaceChildren();
    $("tx-count").textContent = "0";
    $("tx-panel").dataset.announcements = "off";
    let asked = false;
    client.on("state", (s) => {
      if (s.state !== "open" || asked) return;
      asked = true;
      const canTx = grants(s.topics, "tx:0x" + "0".repeat(64));
      if (!canTx) {
        $("tx-note").textContent = "this token does not grant tx: topics ([auth] dev_topics)";
        return;
      }
      if (grants(s.topics, ANNOUNCE_TOPIC)) {
        // live only: a transaction announced before this page opened is not followed
        client.subscribe(ANNOUNCE_TOPIC, {}, (msg) => this.announced(msg.record));
        $("tx-note").textContent = "paste a hash, or send one through " + ANNOUNCE_TOPIC;
      } else {
        $("tx-note").textContent = "paste a transaction hash to follow it";
      }
    });
    client.on("subscribed", (msg) => {
      if (msg.topic === ANNOUNCE_TOPIC) $("tx-panel").dataset.announcements = "on";
    });
  }

  announced(record) {
    const hash = record && record.event === "tx.sent" && record.data && record.data.hash;
    const what = typeof record.data.what === "string" ? record.data.what.slice(0, 80) : "";
    if (typeof hash === "string" && HASH.test(hash)) this.follow(hash.toLowerCase(), what);
  }

  /** Follow ``hash`` (lower case); ``what``: a label for its row (the announcement's). */
  follow(hash, what = "") {
    if (!this.client || this.follows.has(hash)) return;
    row(hash, what);
    this.follows.set(hash, this.client.subscribe("tx:" + hash, { since: 0 },
      (msg) => this.show(msg)));
    while (this.follows.size > MAX_TXS) {
      const [oldest, off] = this.follows.entries().next().value;
      off();
      this.follows.delete(oldest);
      const el = findRow(oldest);
      if (el) el.remove();
    }
    $("tx-count").textContent = String(this.follows.size);
  }

  show(msg) {
    const got = this.book.apply(msg.record);
    if (!got.changed) return;
    fill(findRow(got.hash) || row(got.hash), got, msg);
    if (FINAL_TX_STAGES.includes(got.stage) && this.follows.has(got.hash)) {
      // final: nothing more will come; keep the row, free the subscription
      this.follows.get(got.hash)();
      this.follows.set(got.hash, () => {});
    }
  }
}

function findRow(hash) {
  return $("txs").querySelector('.tx[data-hash="' + CSS.escape(hash) + '"]');
}

function row(hash, what = "") {
  const li = document.createElement("li");
  li.className = "event tx stage-waiting";
  li.dataset.hash = hash;
  li.dataset.stage = "waiting";
  li.innerHTML = '<div class="card-head"><span class="name"></span>' +
    '<span class="status"></span></div><div class="args"></div><div class="meta"></div>';
  li.querySelector(".name").textContent = "tx " + shortAddress(hash) + (what ? " " + what : "");
  li.querySelector(".name").title = hash;
  li.querySelector(".status").textContent = "waiting for the node";
  $("txs").prepend(li);
  return li;
}

function fill(li, got, msg) {
  const r = got.record;
  li.className = "event tx stage-" + got.stage;
  li.dataset.stage = got.stage;
  li.dataset.stages = got.stages.join(" ");
  li.querySelector(".status").textContent = got.stage +
    (r.result === "reverted" ? " (reverted)" : "");
  const facts = [];
  if (r.result) facts.push(r.result);
  if (r.gas_used) facts.push("gas " + Number(r.gas_used).toLocaleString("en-US"));
  for (const e of r.events || []) facts.push(e.contract + "." + e.event);
  if (r.replaced_by) facts.push("replaced by " + shortAddress(r.replaced_by));
  li.querySelector(".args").textContent = facts.join(" · ");
  li.dataset.result = r.result || "";
  li.dataset.gas = r.gas_used || "";
  li.dataset.replacedBy = r.replaced_by || "";
  const meta = [];
  if (r.block_number !== null && r.block_number !== undefined) {
    meta.push("block " + r.block_number);
  }
  meta.push(got.stages.join(" → "));
  meta.push(msg.topic.slice(0, 12) + "… #" + msg.offset);
  li.querySelector(".meta").textContent = meta.join(" · ");
}
