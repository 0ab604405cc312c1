// @chainpush/client: the chainpush wire protocol (docs/protocol.md) as a small ES module for
// browsers (and Node 22+, or any runtime given a WebSocket). No dependencies, no build step.
//
//   const client = connect({ urls, getToken });
//   const off = client.subscribe("contract:DemoToken", { since: 0 }, (msg) => show(msg));
//   client.on("state", (s) => console.log(s.state, s.reason));
//
// What it does for you: the token in the first frame, a subscription per topic resumed with
// `since` + `epoch` after every reconnect (and across reloads with `storage`), a stream reset
// followed, duplicates dropped by message id, reconnects with exponential backoff and full
// jitter, and a new token fetched before the current one expires.

export {
  RecordBook, compareTransitions, stateKey, STATUS_RANK, TxBook, txStage, FINAL_TX_STAGES,
} from "./recordbook.js";

/** Close codes after which the same token will not do (docs/protocol.md §7). */
const NEW_TOKEN_CODES = new Set([4001, 4003]);

/** What a close code means, for people (docs/protocol.md §2, §7). */
export const CLOSE_REASONS = Object.freeze({
  1000: "closed", 1001: "the node is going away", 1006: "connection lost",
  1009: "frame too big", 1011: "keepalive timeout or node error",
  4000: "first frame must be auth", 4001: "authentication failed",
  4002: "authentication timeout", 4003: "token expired", 4008: "slow consumer",
  4029: "too many frames",
});

const MAX_SEEN = 20000; // message ids kept for dedup
const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout's limit

/**
 * The node answers user:<address> topics in EIP-55 case whatever case they were asked in
 * (MetaMask gives lower case), and tx:<hash> in lower case: subscriptions are keyed
 * case-insensitively for those.
 */
export function topicKey(topic) {
  return topic.startsWith("user:") || topic.startsWith("tx:") ? topic.toLowerCase() : topic;
}

/**
 * Whether a token's topic patterns (the welcome frame's `topics`, in the "open" state) grant
 * `topic` (docs/push.md §Tokens): an exact topic, a prefix ending in `*`, or `*` — except a
 * tx: topic, which only a pattern starting with `tx:` grants. (user:<wallet> and the user's
 * inbox come with the token's wallets and sub: not checked here.)
 */
export function grants(patterns, topic) {
  const tx = topic.startsWith("tx:");
  return (patterns || []).some((p) => (!tx || p.startsWith("tx:")) &&
    (p === topic || p === "*" || (p.endsWith("*") && topic.startsWith(p.slice(0, -1)))));
}

/** Exponential backoff with full jitter: a random delay in [0, min(cap, base × 2^attempt)). */
export function backoffDelay(attempt, random, { baseMs = 250, capMs = 15000 } = {}) {
  return random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}

/**
 * When to fetch a new token (ms since the epoch): renewBeforeS before expires_at, or halfway
 * through the remaining lifetime of a token shorter than twice that.
 */
export function renewAt(expiresAtS, nowMs, renewBeforeS) {
  const expiresMs = expiresAtS * 1000;
  return expiresMs - Math.min(renewBeforeS * 1000, Math.max(0, expiresMs - nowMs) / 2);
}

/** Open a client; it connects at once and keeps connecting until close(). */
export function connect(options) {
  return new ChainpushClient(options);
}

export class ChainpushClient {
  constructor({
    urls, ordered = false, token, getToken, storage, storagePrefix = "chainpush:", renewBeforeS = 60,
    backoff = {}, WebSocket: Socket = globalThis.WebSocket, now = () => Date.now(),
    random = Math.random, setTimeout: setTimer = (f, ms) => setTimeout(f, ms),
    clearTimeout: clearTimer = (t) => clearTimeout(t),
  }) {
    if (!Array.isArray(urls) || urls.length === 0) {
      throw new TypeError("connect: urls must be a non-empty array of ws:// or wss:// URLs");
    }
    if (!token && typeof getToken !== "function") {
      throw new TypeError("connect: give a token, or getToken (a function returning one)");
    }
    if (typeof Socket !== "function") {
      throw new TypeError("connect: no WebSocket in this runtime: pass options.WebSocket");
    }
    Object.assign(this, { urls, token, getToken, storage, storagePrefix, renewBeforeS,
      backoff, Socket, now, random, setTimer, clearTimer });
    this.subs = new Map(); // topicKey -> {topic, filter, since, epoch, onMessage}
    this.listeners = { state: new Set(), subscribed: new Set(), error: new Set() };
    this.seen = new Set(); // message id + topic, delivered (dedup across reconnects)
    this.seenOrder = [];
    // ordered: the list is this user's placement (the auth service's rendezvous order): start
    // at its head; otherwise a random start spreads users over a plain list of nodes
    this.urlIndex = ordered ? 0 : Math.floor(random() * urls.length);
    this.attempt = 0;
    this.ws = null;
    this.ready = false;
    this.closed = false;
    this.retryTimer = null;
    this.renewTimer = null;
    this.renewStreak = 0; // renewals in a row that came due at once (below)
    this.state = { state: "connecting" };
    // start on the next turn, so that on() and subscribe() called right after connect() apply
    Promise.resolve().then(() => this._connect());
  }

  /** Listen: "state" ({state, …}), "subscribed" (the node's frame), "error" ({code, message}). */
  on(event, fn) {
    const set = this.listeners[event];
    if (!set) throw new TypeError("on: unknown event " + JSON.stringify(event));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Subscribe to a topic; onMessage gets each message once, in offset order. since: the last
   * offset already had (0: from the first message; undefined: live only), used when storage
   * holds no position for the topic (a stored one wins: a reload resumes where it left off).
   * Subscribing again to a topic replaces its subscription. Returns the unsubscribe function.
   */
  subscribe(topic, { since, epoch, filter } = {}, onMessage = () => {}) {
    const key = topicKey(topic);
    const stored = this._load(key, filter);
    const sub = stored ? { topic, filter, onMessage, ...stored }
      : { topic, filter, onMessage, since, epoch };
    this.subs.set(key, sub);
    this._send(this._subscribeFrame(sub));
    return () => {
      if (this.subs.get(key) !== sub) return; // replaced meanwhile
      this.subs.delete(key);
      this._send({ type: "unsubscribe", topic });
    };
  }

  /** Where a subscription stands: {since, epoch}, or undefined. */
  position(topic) {
    const s = this.subs.get(topicKey(topic));
    return s ? { since: s.since, epoch: s.epoch } : undefined;
  }

  /** Stop for good: no more reconnects. */
  close() {
    this.closed = true;
    this._clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "bye");
    this._state({ state: "closed", reason: "closed by the application" });
  }

  // --- the connection ---------------------------------------------------------------------

  async _connect() {
    if (this.closed) return;
    if (!this.token) {
      try {
        const got = await this.getToken();
        this.token = typeof got === "string" ? got : got && got.token;
        if (!this.token) throw new Error("getToken returned no token");
      } catch (err) {
        return this._retry("getToken failed: " + (err && err.message ? err.message : err));
      }
      if (this.closed) return;
    }
    const url = this.urls[this.urlIndex % this.urls.length];
    this._state({ state: "connecting", url, attempt: this.attempt });
    this.ready = false;
    let served = false; // did this node welcome us?
    const ws = new this.Socket(url);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: this.token }));
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return; // a socket being replaced: the next one resumes with since
      if (this._frame(ev.data) === "welcome") served = true;
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      this._clearTimers();
      const code = ev.code;
      const reason = code + " " + (ev.reason || CLOSE_REASONS[code] || "closed") +
        (served ? "" : " (" + url + " did not let us in)");
      if (NEW_TOKEN_CODES.has(code)) {
        this.token = null;
        if (!this.getToken) {
          this._state({ state: "closed", code, reason: reason + "; no getToken for a new one" });
          return;
        }
      }
      // back to the same node when it was serving us (its state is warm); to the next one
      // when it never answered or is going away (1001)
      if (!served || code === 1001) this.urlIndex += 1;
      this._retry(reason, code);
    };
  }

  _retry(reason, code) {
    if (this.closed) return;
    const delayMs = Math.round(backoffDelay(this.attempt, this.random, this.backoff));
    this.attempt += 1;
    this._state({ state: "waiting", reason, code, delayMs, retryAt: this.now() + delayMs });
    this.retryTimer = this.setTimer(() => { this.retryTimer = null; this._connect(); }, delayMs);
  }

  _scheduleRenewal(expiresAtS) {
    if (!this.getToken || typeof expiresAtS !== "number") return;
    if (this.renewTimer !== null) this.clearTimer(this.renewTimer);
    let delay = renewAt(expiresAtS, this.now(), this.renewBeforeS) - this.now();
    // a token that looks expired on arrival (this clock ahead of the node's, or a backend that
    // hands out old tokens): renew after 1 s, 2 s, 4 s… rather than in a tight loop; the node's
    // 4003 at the real expiry still gets a new token
    const floor = Math.min(this.backoff.capMs || 15000, 1000 * 2 ** this.renewStreak);
    this.renewStreak = delay < floor ? this.renewStreak + 1 : 0;
    delay = Math.max(delay, this.renewStreak ? floor : 0);
    this.renewTimer = this.setTimer(() => this._renew(), Math.min(MAX_TIMER_MS, delay));
  }

  async _renew() {
    this.renewTimer = null;
    let fresh;
    try {
      const got = await this.getToken();
      fresh = typeof got === "string" ? got : got && got.token;
      if (!fresh) throw new Error("getToken returned no token");
    } catch (err) {
      // the node closes with 4003 at expiry; reconnecting then asks getToken again
      this._emit("error", { code: "renew_failed", message: String(err && err.message || err) });
      return;
    }
    this.token = fresh; // for the next connection in any case
    if (this.closed || !this.ws) return; // between connections: the next one uses it
    // switch sockets now: the new one resumes every subscription with since
    const old = this.ws;
    this.ws = null;
    old.close(1000, "token renewal");
    this._connect();
  }

  _clearTimers() {
    if (this.retryTimer !== null) this.clearTimer(this.retryTimer);
    if (this.renewTimer !== null) this.clearTimer(this.renewTimer);
    this.retryTimer = this.renewTimer = null;
  }

  // --- frames -----------------------------------------------------------------------------

  _frame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      this._emit("error", { code: "bad_json", message: "a frame that is not JSON: " + err });
      return undefined;
    }
    switch (msg.type) {
      case "welcome":
        this.ready = true;
        this.attempt = 0;
        this._state({ state: "open", url: this.ws.url, user: msg.user, node: msg.node,
          expiresAt: msg.expires_at, topics: msg.topics || [] });
        for (const s of this.subs.values()) this._send(this._subscribeFrame(s));
        this._scheduleRenewal(msg.expires_at);
        break;
      case "subscribed": {
        const s = this.subs.get(topicKey(msg.topic));
        if (s) {
          // reset: our since belonged to another stream (store wiped or restored); the node
          // replays this one from offset 1. Live-only: resume from where it started.
          if (msg.reset || s.since === undefined) s.since = msg.since;
          if (msg.epoch) s.epoch = msg.epoch;
          this._save(s);
        }
        this._emit("subscribed", msg);
        break;
      }
      case "message":
        this._message(msg);
        break;
      case "unsubscribed":
      case "pong":
        break;
      case "error":
        this._emit("error", msg);
        break;
      default:
        this._emit("error", { code: "unknown_type", message: "unknown frame type " + msg.type });
    }
    return msg.type;
  }

  _message(msg) {
    const s = this.subs.get(topicKey(msg.topic));
    if (!s) return; // unsubscribed meanwhile
    // a message of another epoch: the stream was replaced, its offsets start again
    const replaced = msg.epoch && s.epoch && msg.epoch !== s.epoch;
    const since = replaced ? msg.offset : Math.max(s.since || 0, msg.offset);
    const epoch = msg.epoch || s.epoch;
    const id = msg.id + "@" + s.topic;
    if (!this.seen.has(id)) {
      this.seen.add(id);
      this.seenOrder.push(id);
      if (this.seenOrder.length > MAX_SEEN) this.seen.delete(this.seenOrder.shift());
      try {
        s.onMessage(msg);
      } catch (err) {
        this._emit("error", { code: "handler_failed", message: String(err), topic: s.topic });
      }
    }
    // the position moves after the handler ran: a reload in between gets the message again
    s.since = since;
    s.epoch = epoch;
    this._save(s);
  }

  _subscribeFrame(s) {
    // the epoch only qualifies a since: without one there is nothing to check
    const epoch = s.since === undefined ? undefined : s.epoch;
    return { type: "subscribe", topic: s.topic, since: s.since, epoch, filter: s.filter };
  }

  _send(frame) {
    if (this.ws && this.ready) this.ws.send(JSON.stringify(frame));
  }

  _state(s) {
    this.state = s;
    this._emit("state", s);
  }

  _emit(event, value) {
    for (const fn of this.listeners[event]) fn(value);
  }

  // --- positions across reloads -----------------------------------------------------------

  _storageKey(key, filter) {
    return this.storagePrefix + key + (filter ? " " + JSON.stringify(filter) : "");
  }

  _load(key, filter) {
    if (!this.storage) return undefined;
    try {
      const p = JSON.parse(this.storage.getItem(this._storageKey(key, filter)));
      return p && Number.isInteger(p.since) ? { since: p.since, epoch: p.epoch } : undefined;
    } catch {
      return undefined; // unreadable: start from the subscription's own since
    }
  }

  _save(s) {
    if (!this.storage || s.since === undefined) return;
    this.storage.setItem(this._storageKey(topicKey(s.topic), s.filter),
      JSON.stringify({ since: s.since, epoch: s.epoch }));
  }
}
