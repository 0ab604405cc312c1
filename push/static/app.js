// The demo page: log in (dev login), pick topics, watch events arrive. One card per event that
// changes in place (pending → confirmed → removed); "your notifications" for the wallet's user:
// topic; one value per state key that never goes backwards. The client is the @chainpush/client
// package (clients/js), served at /static/client/.
import { connect, RecordBook } from "./client/index.js";
import { amountToken, chainLabel, formatUnits, leaves, shortAddress, valueNode }
  from "./format.js";
import { TxCard } from "./txcard.js";

const $ = (id) => document.getElementById(id);
const MAX_CARDS = 500; // per list
let client = null;
let config = null;
let book = null;
let subscribed = 0; // topics the node confirmed on this connection
let countdown = null;
let txCard = null; // the "Transactions" card (txcard.js)

// --- connection state and errors ------------------------------------------------------------

function showState(s) {
  const el = $("state");
  el.textContent = s.state;
  el.dataset.state = s.state;
  clearInterval(countdown);
  const detail = $("state-detail");
  if (s.state === "open") subscribed = 0;
  if (s.state === "waiting") {
    const tick = () => {
      const left = Math.max(0, (s.retryAt - Date.now()) / 1000);
      detail.textContent = s.reason + " — retrying in " + left.toFixed(1) + " s (at " +
        new Date(s.retryAt).toLocaleTimeString() + ")";
    };
    tick();
    countdown = setInterval(tick, 200);
  } else if (s.state === "connecting") {
    detail.textContent = s.url;
  } else if (s.state === "closed") {
    detail.textContent = s.reason;
  } else {
    detail.textContent = s.url + (s.node ? " (" + s.node + ")" : "");
  }
}

function showError(text) {
  $("errors").textContent = text;
}

// --- state values ---------------------------------------------------------------------------

function valueText(record) {
  const v = record.args.value;
  if (v === undefined) return "?";
  if (typeof v !== "string") return JSON.stringify(v);
  const token = /^[0-9]+$/.test(v) ? amountToken(record.contract, "value") : undefined;
  return token ? formatUnits(v, token.decimals) + " " + token.symbol : v;
}

function showValue(key, current, record) {
  let li = document.querySelector('#values li[data-key="' + CSS.escape(key) + '"]');
  if (!li) {
    li = document.createElement("li");
    li.dataset.key = key;
    $("values").appendChild(li);
  }
  const value = current ? valueText(current) : "?";
  li.textContent = key + " = " + value + (current ? " (block " + current.block_number + ", " +
    current.status + ")" : "");
  if (record.contract === "CallDemo") {
    $("calldemo").textContent = value;
    $("calldemo").dataset.block = current ? String(current.block_number) : "";
  }
}

// --- event cards ----------------------------------------------------------------------------

function newCard(list, id) {
  const card = document.createElement("li");
  card.className = "event";
  card.dataset.id = id;
  card.innerHTML = '<div class="card-head"><span class="name"></span>' +
    '<span class="tags"><span class="chain"></span><span class="status"></span></span></div>' +
    '<div class="args"></div><div class="meta"></div>';
  list.prepend(card);
  while (list.children.length > MAX_CARDS) list.lastElementChild.remove();
  return card;
}

function findCard(list, id) {
  return list.querySelector('.event[data-id="' + CSS.escape(id) + '"]');
}

/** Render what a record id shows now into its card (the same element every time). */
function fill(card, r, msg) {
  card.className = "event status-" + r.status;
  card.dataset.status = r.status;
  card.dataset.msg = msg.id;
  card.dataset.offset = String(msg.offset);
  card.dataset.topic = msg.topic;
  card.querySelector(".name").textContent = r.contract + "." + r.event;
  // several chains may feed one page (docs/watcher.md, Several chains): say which one
  card.dataset.chain = r.chain_id === undefined ? "" : String(r.chain_id);
  card.querySelector(".chain").textContent = chainLabel(r.chain_id);
  card.querySelector(".status").textContent = r.status +
    (r.incarnation ? " (incarnation " + r.incarnation + ")" : "");
  const args = card.querySelector(".args");
  args.replaceChildren();
  for (const [path, v] of leaves(r.args)) {
    if (path === "inputs" && Array.isArray(v) && !v.length) continue; // a state read of get()
    const arg = document.createElement("span");
    arg.className = "arg";
    const name = document.createElement("span");
    name.className = "arg-name";
    name.textContent = path;
    arg.append(name, " ", valueNode(r.contract, path, v));
    args.append(arg);
  }
  const meta = ["block " + r.block_number];
  if (r.tx_hash) meta.push("tx " + shortAddress(r.tx_hash));
  const topic = msg.topic.startsWith("user:") ? "user:" + shortAddress(msg.topic.slice(5))
    : msg.topic;
  meta.push(topic + " #" + msg.offset);
  card.querySelector(".meta").textContent = meta.join(" · ");
}

function show(msg) {
  const got = book.apply(msg.record);
  if (got.key !== undefined) showValue(got.key, got.current, msg.record);
  const wallet = msg.topic.startsWith("user:");
  const home = wallet ? $("wallet-events") : $("events");
  // the list the message came for gets a card even when another topic brought this state first
  // (a stale message changes nothing in a card that exists)
  const card = findCard(home, msg.record.id);
  if (!card) fill(newCard(home, msg.record.id), got.record, msg);
  else if (got.changed) fill(card, got.record, msg);
  if (got.changed) { // the other list's card of this record follows
    const other = findCard(wallet ? $("events") : $("wallet-events"), msg.record.id);
    if (other) fill(other, got.record, { ...msg, offset: other.dataset.offset,
      topic: other.dataset.topic });
  }
  $("wallet-count").textContent = String($("wallet-events").children.length);
}

// --- login and subscriptions ----------------------------------------------------------------

async function login(user, wallet) {
  const res = await fetch("/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, wallets: wallet ? [wallet] : [] }),
  });
  let body = {};
  try { body = await res.json(); } catch { /* not JSON: the status says it */ }
  if (!res.ok) throw new Error(body.error || "HTTP " + res.status);
  return body;
}

async function start(ev) {
  ev.preventDefault();
  showError("");
  const user = $("user").value.trim();
  const wallet = $("wallet").value.trim();
  let first;
  try {
    first = await login(user, wallet);
  } catch (err) {
    showError("login refused: " + err.message);
    return;
  }
  if (client) client.close();
  $("who").textContent = first.user;
  book = new RecordBook();
  $("events").replaceChildren();
  $("wallet-events").replaceChildren();
  $("values").replaceChildren();
  $("wallet-count").textContent = "0";
  client = connect({
    // the login answers the live nodes in this user's order (rendezvous hashing: all of a
    // user's tabs on one node, its failure moves only its users): start with the first
    urls: first.push_urls && first.push_urls.length ? first.push_urls : config.push_urls,
    ordered: Boolean(first.push_urls && first.push_urls.length),
    token: first.token,
    getToken: async () => (await login(user, wallet)).token,
  });
  client.on("state", showState);
  txCard.start(client);
  client.on("subscribed", () => {
    subscribed += 1;
    if (client.state.state === "open") { $("state").textContent = "subscribed";
      $("state").dataset.state = "subscribed"; }
  });
  client.on("error", (e) => showError(e.code + ": " + e.message));
  const events = $("event-filter").value.split(",").map((e) => e.trim()).filter((e) => e);
  // state records carry the view function's name as `event`: never filter those out
  const filter = (topic) => (events.length && !topic.startsWith("state:") ?
    { event: events } : undefined);
  for (const box of document.querySelectorAll("input[name=topic]:checked")) {
    client.subscribe(box.value, { since: 0, filter: filter(box.value) }, show);
  }
  if (wallet) {
    client.subscribe("user:" + wallet, { since: 0, filter: filter("user:") }, show);
    $("wallet-note").replaceChildren("events naming ", valueNode("", "wallet", wallet));
  } else {
    $("wallet-note").textContent = "log in with a wallet address to see its notifications";
  }
}

async function init() {
  config = await (await fetch("/config.json")).json();
  const list = $("topics");
  for (const t of config.topics) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.name = "topic"; box.value = t; box.checked = true;
    label.append(box, " " + t);
    list.appendChild(label);
  }
  if (!config.dev_login) {
    showError("dev login is off on this server: tokens come from your backend (docs/push.md)");
  }
  $("login").addEventListener("submit", start);
  txCard = new TxCard();
}

init();
