// WebSocket link to /ws (contract §6): MessagePack frames, subprotocol tickpool.v1, automatic
// reconnect with jittered exponential backoff, a silence watchdog, and the server clock.

import { decode, encode } from "@msgpack/msgpack";

const PROTOCOL = "tickpool.v1";
const SILENCE_MS = 5000; // ticks arrive every tick_ms; this much silence means a dead link
const HELLO_MS = 8000;
const PING_MS = 10000;

// Server clock: offset = server − local, from hello.server_time and every tick's ts. A message
// is stamped before it travels, so ts − now underestimates the offset by the latency: the
// largest sample of a recent window is the best estimate, and the window forgets stale samples
// (a laptop that slept, an NTP jump) within seconds.
export class ServerClock {
  constructor(window = 40) {
    this.samples = [];
    this.window = window;
    this.offset = 0;
  }

  sample(serverMs) {
    if (typeof serverMs !== "number" || !Number.isFinite(serverMs)) return;
    this.samples.push(serverMs - Date.now());
    if (this.samples.length > this.window) this.samples.shift();
    this.offset = Math.max(...this.samples);
  }

  reset(serverMs) {
    this.samples = [];
    this.sample(serverMs);
  }

  now() {
    return Date.now() + this.offset;
  }
}

/**
 * Socket emits through `handlers`: state(name, detail), message(msg). States: connecting, syncing
 * (open, waiting for hello/snapshot), live, waiting (reconnect scheduled; detail = ms), offline.
 */
export class Socket {
  constructor(handlers) {
    this.h = handlers;
    this.token = null;
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.clock = new ServerClock();
    this.lastMsgAt = 0;
    this.synced = false;
    this.helloSeen = false;
    this.openedAt = 0;
    this.stopped = true;
    this.watchdog = setInterval(() => this.check(), 1000);
    addEventListener("online", () => this.kick());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.kick();
    });
  }

  /** (Re)connects with the given token (null = anonymous, view only). */
  start(token) {
    this.token = token || null;
    this.stopped = false;
    this.attempt = 0;
    this.restart();
  }

  restart() {
    this.drop();
    this.connect();
  }

  get isLive() {
    return this.synced && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(encode(msg));
    return true;
  }

  // Reconnect now if we are only waiting for the backoff timer.
  kick() {
    if (!this.stopped && !this.ws && this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.connect();
    }
  }

  drop() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
    }
    this.synced = false;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const q = this.token ? `?token=${encodeURIComponent(this.token)}` : "";
    this.synced = false;
    this.helloSeen = false;
    this.h.state("connecting");
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws${q}`, PROTOCOL);
    } catch {
      this.scheduleRetry();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.openedAt = Date.now();
    ws.onopen = () => {
      this.lastMsgAt = Date.now();
      this.h.state("syncing");
    };
    ws.onmessage = (ev) => this.onMessage(ev);
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const wasSynced = this.synced;
      this.synced = false;
      this.h.closed && this.h.closed(ev.code, wasSynced, this.helloSeen);
      this.scheduleRetry();
    };
  }

  onMessage(ev) {
    this.lastMsgAt = Date.now();
    if (!(ev.data instanceof ArrayBuffer)) return; // text frames are not part of the protocol
    let msg;
    try {
      msg = decode(new Uint8Array(ev.data));
    } catch {
      return; // a bad frame must not kill the page
    }
    if (!msg || typeof msg !== "object" || typeof msg.t !== "string") return;
    switch (msg.t) {
      case "hello":
        this.helloSeen = true;
        this.clock.reset(msg.server_time);
        break;
      case "tick":
        this.clock.sample(msg.ts);
        break;
      case "snapshot":
        this.synced = true;
        this.attempt = 0;
        break;
    }
    this.h.message(msg);
    if (msg.t === "snapshot") this.h.state("live");
  }

  scheduleRetry() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const base = Math.min(10000, 500 * 2 ** Math.min(this.attempt, 5));
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.attempt++;
    this.h.state(navigator.onLine === false ? "offline" : "waiting", delay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  check() {
    const ws = this.ws;
    if (!ws) return;
    const now = Date.now();
    const stuck =
      (ws.readyState === WebSocket.OPEN && now - this.lastMsgAt > SILENCE_MS) ||
      (ws.readyState === WebSocket.CONNECTING && now - this.openedAt > HELLO_MS) ||
      (ws.readyState === WebSocket.OPEN && !this.synced && now - this.openedAt > HELLO_MS);
    if (stuck) {
      this.drop();
      this.scheduleRetry();
      return;
    }
    if (ws.readyState === WebSocket.OPEN && now - (this.lastPing || 0) > PING_MS) {
      this.lastPing = now;
      this.send({ t: "ping", ts: now });
    }
  }
}
