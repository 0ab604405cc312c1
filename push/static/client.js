// chainpush browser client: connect, auth (first frame), subscribe, resume, reconnect, dedup.
// The protocol is in docs/protocol.md. No dependencies; exposes window.ChainpushClient.
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
      this.subs = new Map(); // topic -> {filter, since}: since = last offset received
      this.seen = new Set(); // message ids delivered (dedup across reconnects)
      this.seenOrder = [];
      this.urlIndex = Math.floor(Math.random() * this.urls.length);
      this.attempt = 0;
      this.token = null;
      this.ws = null;
      this.stopped = false;
    }

    /** Subscribe; since = last offset already seen (0: everything; undefined: live only). */
    subscribe(topic, { since, filter } = {}) {
      this.subs.set(subKey(topic), { topic, since, filter });
      this._send({ type: "subscribe", topic, since, filter });
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
            this.ws.send(JSON.stringify({ type: "subscribe", topic: s.topic, since: s.since, filter: s.filter }));
          }
          break;
        case "subscribed": {
          const s = this.subs.get(subKey(msg.topic));
          if (s && s.since === undefined) s.since = msg.since; // live-only: resume from here
          this.onState("subscribed", msg);
          break;
        }
        case "message": {
          const s = this.subs.get(subKey(msg.topic));
          if (s) s.since = Math.max(s.since || 0, msg.offset);
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

  window.ChainpushClient = ChainpushClient;
})();
