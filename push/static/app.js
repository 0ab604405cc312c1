// The demo page: log in (dev login), pick topics, watch events arrive with their status.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let client = null;
  let config = null;

  function setState(state, detail) {
    const el = $("state");
    el.textContent = state + (detail && detail.url ? " " + detail.url : "") +
      (detail && detail.code ? " (" + detail.code + (detail.reason ? " " + detail.reason : "") + ")" : "");
    el.dataset.state = state;
  }

  // what the messages add up to: one row per record showing its current status, one value per
  // state key that never goes backwards (docs/protocol.md §5)
  let book = null;
  const rows = new Map(); // record id -> <tr>

  function display(v) {
    if (v === undefined) return "?";
    return typeof v === "string" ? v : JSON.stringify(v); // uints arrive as decimal strings
  }

  function showValue(key, current, record) {
    let li = document.querySelector('#values li[data-key="' + CSS.escape(key) + '"]');
    if (!li) {
      li = document.createElement("li");
      li.dataset.key = key;
      $("values").appendChild(li);
    }
    const value = current ? display(current.args.value) : "?";
    li.textContent = key + " = " + value + (current ? " (block " + current.block_number + ", " +
      current.status + ")" : "");
    if (record.contract === "CallDemo") {
      $("calldemo").textContent = value;
      $("calldemo").dataset.block = current ? String(current.block_number) : "";
    }
  }

  function showRow(msg, r) {
    let row = rows.get(r.id);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.id = r.id;
      for (let i = 0; i < 6; i++) row.appendChild(document.createElement("td"));
      rows.set(r.id, row);
      $("events").prepend(row);
      while ($("events").children.length > 500) {
        rows.delete($("events").lastChild.dataset.id);
        $("events").lastChild.remove();
      }
    }
    row.className = "event status-" + r.status;
    row.dataset.msg = msg.id;
    const status = r.status + (r.incarnation ? " (incarnation " + r.incarnation + ")" : "");
    const cells = [msg.topic, msg.offset, r.contract + "." + r.event, status, r.block_number,
      JSON.stringify(r.args)];
    cells.forEach((c, i) => { row.children[i].textContent = String(c); });
  }

  function show(msg) {
    const got = book.apply(msg.record);
    if (got.key !== undefined) showValue(got.key, got.current, msg.record);
    if (got.changed) showRow(msg, msg.record); // a stale message changes nothing
  }

  async function login() {
    const wallet = $("wallet").value.trim();
    const res = await fetch("/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value.trim(), wallets: wallet ? [wallet] : [] }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.status);
    $("who").textContent = body.user;
    return body.token;
  }

  async function start(ev) {
    ev.preventDefault();
    if (client) client.stop();
    book = new window.ChainpushRecordBook();
    rows.clear();
    $("events").replaceChildren();
    $("values").replaceChildren();
    client = new window.ChainpushClient({
      urls: config.push_urls,
      getToken: login,
      onMessage: show,
      onState: setState,
      onError: (e) => { $("errors").textContent = e.code + ": " + e.message; },
    });
    const events = $("event-filter").value.split(",").map((e) => e.trim()).filter((e) => e);
    // state records carry the view function's name as `event`: never filter those out
    const filter = (topic) => (events.length && topic.startsWith("contract:") ?
      { event: events } : undefined);
    for (const box of document.querySelectorAll("input[name=topic]:checked")) {
      client.subscribe(box.value, { since: 0, filter: filter(box.value) });
    }
    const wallet = $("wallet").value.trim();
    if (wallet) client.subscribe("user:" + wallet, { since: 0, filter: filter("contract:") });
    await client.start();
  }

  async function init() {
    config = await (await fetch("/config.json")).json();
    const list = $("topics");
    for (const t of config.topics) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox"; box.name = "topic"; box.value = t; box.checked = true;
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + t));
      list.appendChild(label);
    }
    $("login").addEventListener("submit", start);
  }

  init();
})();
