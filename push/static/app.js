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

  function show(msg) {
    const r = msg.record;
    if (r.kind === "state") {
      const v = r.args.value; // uints arrive as decimal strings: show them bare
      if (r.contract === "CallDemo") $("calldemo").textContent = typeof v === "string" ? v : JSON.stringify(v);
    }
    const row = document.createElement("tr");
    row.className = "event status-" + r.status;
    row.dataset.id = msg.id;
    const cells = [msg.topic, msg.offset, r.contract + "." + r.event, r.status, r.block_number,
      JSON.stringify(r.args)];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = String(c);
      row.appendChild(td);
    }
    $("events").prepend(row);
    while ($("events").children.length > 500) $("events").lastChild.remove();
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
