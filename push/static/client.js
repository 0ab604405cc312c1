// chainpush browser client: connect, auth (first frame), subscribe, resume, reconnect, dedup,
// stream epochs; and a record book that keeps each record's and each state key's current state
// whatever order messages arrive in. The protocol is in docs/protocol.md. No dependencies;
// exposes window.ChainpushClient and window.ChainpushRecordBook.
(function () {
  "use strict";

  // close codes after which reconnecting with the same token is pointless
  const NEW_TOKEN_CODES = new Set([4001, 4003]);

  // The node answers user:<address> topics in EIP-55 case whatever case they were asked in
  // (MetaMask gives lower case): key subscriptions case-insensitively for those.
  function subKey(topic) {
    return topic.startsWith("user:") ? topic.toLowerCase() : topic;
  }

  class ChainpushClient {
    /**
     * @param {object} o
     * @param {string[]} o.urls        push node websocket URLs (tried in turn)
     * @param {() => Promise<string>} o.getToken  returns a fresh token
     * @param {(msg: object) => void} o.onMessage  each message, once, in offset order per topic
     * @param {(state: string, detail?: object) => void} [o.onState]
     * @param {(error: object) => void} [o.onError]  error frames and unknown frames
     */
    constructor(o) {
      this.urls = o.urls;
      this.getToken = o.getToken;
      this.onMessage = o.onMessage;
      this.onState = o.onState || (() => {});
      this.onError = o.onError || ((e) => console.warn("chainpush", e));
      // subKey(topic) -> {topic, filter, since, epoch}: since = last offset received, in the
      // stream `epoch`
      this.subs = new Map();
      this.seen = new Set(); // message ids delivered (dedup across reconnects)
      this.seenOrder = [];
      this.urlIndex = Math.floor(Math.random() * this.urls.length);
      this.attempt = 0;
      this.token = null;
      this.ws = null;
      this.stopped = false;
    }

    /**
     * Subscribe; since = last offset already seen (0: everything; undefined: live only), epoch =
     * the stream that offset belongs to (from a previous session's `subscribed` or message).
     */
    subscribe(topic, { since, filter, epoch } = {}) {
      this.subs.set(subKey(topic), { topic, since, filter, epoch });
      this._send(this._subscribeFrame(this.subs.get(subKey(topic))));
    }

    /** Where a subscription stands: {since, epoch}, to keep across page loads. */
    position(topic) {
      const s = this.subs.get(subKey(topic));
      return s ? { since: s.since, epoch: s.epoch } : undefined;
    }

    _subscribeFrame(s) {
      // the epoch only qualifies a since: without one there is nothing to check
      const epoch = s.since === undefined ? undefined : s.epoch;
      return { type: "subscribe", topic: s.topic, since: s.since, epoch, filter: s.filter };
    }

    unsubscribe(topic) {
      this.subs.delete(subKey(topic));
      this._send({ type: "unsubscribe", topic });
    }

    async start() {
      this.stopped = false;
      await this._connect();
    }

    stop() {
      this.stopped = true;
      if (this.ws) this.ws.close(1000, "bye");
    }

    _send(frame) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN && this.ready) {
        this.ws.send(JSON.stringify(frame));
      }
    }

    async _connect() {
      if (this.stopped) return;
      if (!this.token) {
        try {
          this.token = await this.getToken();
        } catch (err) {
          this.onState("error", { reason: "login failed: " + err });
          return this._retry();
        }
      }
      const url = this.urls[this.urlIndex % this.urls.length];
      this.onState("connecting", { url });
      this.ready = false;
      this.wasReady = false;
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: this.token }));
      ws.onmessage = (ev) => this._frame(ev.data);
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ready = false;
        this.onState("disconnected", { code: ev.code, reason: ev.reason, url });
        if (NEW_TOKEN_CODES.has(ev.code)) this.token = null;
        // back to the same node when it was serving us (its state is warm); to the next one
        // when it never answered or is going away (1001)
        if (!this.wasReady || ev.code === 1001) this.urlIndex += 1;
        this._retry();
      };
    }

    _retry() {
      if (this.stopped) return;
      // exponential backoff with full jitter, capped: reconnect storms spread out
      const cap = Math.min(15000, 250 * 2 ** Math.min(this.attempt, 6));
      const delay = Math.random() * cap;
      this.attempt += 1;
      this.onState("waiting", { delay_ms: Math.round(delay) });
      setTimeout(() => this._connect(), delay);
    }

    _remember(id) {
      this.seen.add(id);
      this.seenOrder.push(id);
      if (this.seenOrder.length > 20000) this.seen.delete(this.seenOrder.shift());
    }

    _frame(data) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (err) {
        this.onError({ code: "bad_json", message: String(err) });
        return;
      }
      switch (msg.type) {
        case "welcome":
          this.ready = true;
          this.wasReady = true;
          this.attempt = 0;
          this.onState("connected", msg);
          for (const s of this.subs.values()) {
            this.ws.send(JSON.stringify(this._subscribeFrame(s)));
          }
          break;
        case "subscribed": {
          const s = this.subs.get(subKey(msg.topic));
          if (s) {
            // reset: our since belonged to another stream (store wiped or restored); the node
            // replays this one from offset 1. Live-only: resume from where it started.
            if (msg.reset || s.since === undefined) s.since = msg.since;
            if (msg.epoch) s.epoch = msg.epoch;
          }
          this.onState("subscribed", msg);
          break;
        }
        case "message": {
          const s = this.subs.get(subKey(msg.topic));
          if (s) {
            // a message of another epoch: the stream was replaced, its offsets start again
            const replaced = msg.epoch && s.epoch && msg.epoch !== s.epoch;
            s.since = replaced ? msg.offset : Math.max(s.since || 0, msg.offset);
            if (msg.epoch) s.epoch = msg.epoch;
          }
          if (this.seen.has(msg.id + "@" + msg.topic)) break;
          this._remember(msg.id + "@" + msg.topic);
          this.onMessage(msg);
          break;
        }
        case "unsubscribed":
        case "pong":
          break;
        case "error":
          this.onError(msg);
          break;
        default:
          this.onError({ code: "unknown_type", message: "unknown frame type " + msg.type });
      }
    }
  }

  // --- what a record's messages add up to (docs/protocol.md §5) --------------------------------

  const STATUS_RANK = { pending: 0, confirmed: 1, removed: 2 };

  /** > 0 if record a is a later transition of its id than b: (incarnation, status rank). */
  function compareTransitions(a, b) {
    return ((a.incarnation || 0) - (b.incarnation || 0)) ||
      (STATUS_RANK[a.status] - STATUS_RANK[b.status]);
  }

  /** A state record's key: `<Contract>.<fn>(<inputs>)`. */
  function stateKey(r) {
    const inputs = (r.args && r.args.inputs) || [];
    return r.contract + "." + r.event + "(" + inputs.map((x) => JSON.stringify(x)).join(",") + ")";
  }

  /**
   * The current state of each record id and each state key, whatever order messages arrive in
   * (several topics, a `confirmed` of an older block after the `pending` of a newer one, replays
   * after a reset). Feed it every record with apply(); it never goes backwards:
   *  - a record id shows its greatest (incarnation, status rank) message; older ones are stale;
   *  - a state key's value is its non-removed record with the highest block_number (ties, two
   *    forks of one height before the `removed` arrives: the later one); when that record is
   *    removed, the next highest live one is current again.
   */
  class ChainpushRecordBook {
    constructor({ maxRecords = 20000, maxPerKey = 256 } = {}) {
      this.maxRecords = maxRecords;
      this.maxPerKey = maxPerKey;
      this.records = new Map(); // record id -> {record, seq}: its greatest message so far
      this.keys = new Map(); // state key -> Map(record id -> {record, seq})
      this.seq = 0;
    }

    /**
     * Apply one record. Returns {record, changed, key, current}: record = what the id shows now,
     * changed = whether that is this record (false: stale or repeated); for state records,
     * key and current = the key's current record (null when none is live).
     */
    apply(record) {
      let live = null;
      const key = record.kind === "state" ? stateKey(record) : undefined;
      if (key !== undefined) {
        live = this.keys.get(key);
        if (!live) this.keys.set(key, (live = new Map()));
      }
      // a state key keeps its records longer than the id map may: ask it too
      const prev = this.records.get(record.id) || (live && live.get(record.id));
      const changed = !prev || compareTransitions(record, prev.record) > 0;
      const entry = changed ? { record, seq: prev ? prev.seq : ++this.seq } : prev;
      if (changed) {
        this.records.delete(record.id); // re-insert: eviction goes by last change
        this.records.set(record.id, entry);
        if (this.records.size > this.maxRecords) {
          this.records.delete(this.records.keys().next().value);
        }
        if (live) {
          live.set(record.id, entry);
          if (live.size > this.maxPerKey) this._prune(live);
        }
      }
      const out = { record: entry.record, changed };
      if (key !== undefined) {
        out.key = key;
        out.current = this.current(key);
      }
      return out;
    }

    /** The current record of a state key, or null. */
    current(key) {
      let best = null;
      for (const e of (this.keys.get(key) || new Map()).values()) {
        if (e.record.status === "removed") continue;
        if (!best || e.record.block_number > best.record.block_number ||
            (e.record.block_number === best.record.block_number && e.seq > best.seq)) best = e;
      }
      return best ? best.record : null;
    }

    _prune(live) {
      // the lowest blocks go first: they matter only if every block above them is removed
      const byBlock = [...live.entries()].sort((a, b) => a[1].record.block_number - b[1].record.block_number);
      for (const [id] of byBlock.slice(0, live.size - this.maxPerKey)) live.delete(id);
    }
  }

  window.ChainpushClient = ChainpushClient;
  window.ChainpushRecordBook = ChainpushRecordBook;
})();
