// Live price chart on uPlot: the last few minutes of ticks, scrolled on every animation frame by
// the server clock, with the live round's lock price, its band boundaries (the band the price
// is in right now shaded) and the lock/close times drawn on top.

import uPlot from "uplot";

const PAST_S = 150; // seconds of history on screen
const AHEAD_S = 20; // room on the right so the close line can be seen coming
const KEEP_MS = 6 * 60 * 1000;

function css(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

const fmtTime = (s) => new Date(s * 1000).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const fmtUsd = (v) => "$" + v.toLocaleString("en-US", { maximumFractionDigits: 0 });

export class PriceChart {
  constructor(el, nowFn) {
    this.el = el;
    this.now = nowFn;
    this.ts = []; // ms
    this.px = []; // cents
    this.live = null; // {lock, edges: [bps], locks_at, closes_at}
    this.nextLock = null;
    this.dirty = true;
    const accent = css("--accent", "#4cc2ff");
    const grid = css("--grid", "rgba(255,255,255,0.07)");
    const axis = css("--muted", "#9aa7b5");
    const opts = {
      width: Math.max(200, el.clientWidth),
      height: Math.max(160, el.clientHeight),
      legend: { show: false },
      cursor: { show: false },
      select: { show: false },
      scales: {
        x: { time: true, range: () => this.xRange() },
        y: { range: (u, min, max) => this.yRange(min, max) },
      },
      axes: [
        {
          stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, space: 70,
          font: "11px system-ui, sans-serif", values: (u, vals) => vals.map(fmtTime),
        },
        {
          stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 64,
          font: "11px system-ui, sans-serif", values: (u, vals) => vals.map(fmtUsd),
        },
      ],
      series: [{}, { stroke: accent, width: 2, points: { show: false } }],
      hooks: { draw: [(u) => this.drawOverlay(u)] },
    };
    this.u = new uPlot(opts, [[], []], el);
    new ResizeObserver(() => {
      this.u.setSize({ width: Math.max(200, el.clientWidth), height: Math.max(160, el.clientHeight) });
    }).observe(el);
    const frame = () => {
      this.render();
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  /** Adds ticks [[ts, price], …] (any order, duplicates ignored). */
  add(ticks) {
    for (const [ts, price] of ticks) {
      if (typeof ts !== "number" || typeof price !== "number") continue;
      const n = this.ts.length;
      if (n === 0 || ts > this.ts[n - 1]) {
        this.ts.push(ts);
        this.px.push(price);
      } else {
        // Out of order (a snapshot or /prices overlapping what we have): insert in place.
        let i = n - 1;
        while (i >= 0 && this.ts[i] > ts) i--;
        if (i >= 0 && this.ts[i] === ts) continue;
        this.ts.splice(i + 1, 0, ts);
        this.px.splice(i + 1, 0, price);
      }
    }
    const cut = (this.ts[this.ts.length - 1] ?? 0) - KEEP_MS;
    let drop = 0;
    while (drop < this.ts.length && this.ts[drop] < cut) drop++;
    if (drop) {
      this.ts.splice(0, drop);
      this.px.splice(0, drop);
    }
    this.dirty = true;
  }

  setRounds(open, live) {
    this.live = live && live.lock_price != null
      ? {
        lock: live.lock_price,
        edges: (live.bands || []).slice(1).map((b) => b.lo_bps).filter((e) => e != null),
        locks_at: live.locks_at,
        closes_at: live.closes_at,
      }
      : null;
    this.nextLock = open ? open.locks_at : null;
    this.dirty = true;
  }

  xRange() {
    const now = this.now() / 1000;
    const past = this.el.clientWidth < 500 ? PAST_S / 2 : PAST_S;
    return [now - past, now + AHEAD_S];
  }

  yRange(min, max) {
    let lo = min;
    let hi = max;
    if (this.live) {
      for (const e of [0, ...this.live.edges]) {
        const y = (this.live.lock * (10000 + e)) / 10000 / 100;
        lo = lo == null ? y : Math.min(lo, y);
        hi = hi == null ? y : Math.max(hi, y);
      }
    }
    if (lo == null || hi == null) return [64900, 65100];
    const pad = Math.max((hi - lo) * 0.08, 1);
    return [lo - pad, hi + pad];
  }

  render() {
    if (document.hidden) return;
    // Keep scrolling even between ticks: the x window follows the server clock.
    if (this.dirty || !this.cache) {
      const xs = new Array(this.ts.length);
      const ys = new Array(this.px.length);
      for (let i = 0; i < xs.length; i++) {
        xs[i] = this.ts[i] / 1000;
        ys[i] = this.px[i] / 100;
      }
      this.cache = [xs, ys];
      this.dirty = false;
    }
    this.u.setData(this.cache);
  }

  drawOverlay(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const dpr = devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left"; // uPlot leaves "right" behind from its y axis labels
    const textColor = css("--muted", "#9aa7b5");
    if (this.live) {
      const L = this.live.lock;
      const ys = this.live.edges.map((e) => u.valToPos((L * (10000 + e)) / 10000 / 100, "y", true));
      // Shade the band the latest price is in: that band would win if the round closed now.
      const last = this.px[this.px.length - 1];
      if (last != null) {
        let b = 0;
        while (b < this.live.edges.length && this.live.edges[b] * L <= (last - L) * 10000) b++;
        const yTop = b < ys.length ? ys[b] : top;
        const yBot = b > 0 ? ys[b - 1] : top + height;
        ctx.fillStyle = css("--band-fill", "rgba(76,194,255,0.10)");
        ctx.fillRect(left, Math.min(yTop, yBot), width, Math.abs(yBot - yTop));
      }
      ctx.setLineDash([4 * dpr, 4 * dpr]);
      ctx.lineWidth = dpr;
      ctx.strokeStyle = css("--edge", "rgba(255,255,255,0.35)");
      ctx.fillStyle = textColor;
      this.live.edges.forEach((e, i) => {
        ctx.beginPath();
        ctx.moveTo(left, ys[i]);
        ctx.lineTo(left + width, ys[i]);
        ctx.stroke();
        ctx.fillText(`${e > 0 ? "+" : ""}${(e / 100).toFixed(2)}%`, left + 4 * dpr, ys[i] - 2 * dpr);
      });
      ctx.setLineDash([]);
      ctx.lineWidth = 1.5 * dpr;
      ctx.strokeStyle = css("--lock", "#f5b942");
      const yl = u.valToPos(L / 100, "y", true);
      ctx.beginPath();
      ctx.moveTo(left, yl);
      ctx.lineTo(left + width, yl);
      ctx.stroke();
      ctx.fillStyle = css("--lock", "#f5b942");
      ctx.fillText(`lock $${(L / 100).toFixed(2)}`, left + 4 * dpr, yl - 2 * dpr);
      this.vline(u, this.live.locks_at, css("--lock", "#f5b942"), "lock", false, 0);
      this.vline(u, this.live.closes_at, css("--close", "#ff7a90"), "close", false, 1);
    }
    if (this.nextLock) this.vline(u, this.nextLock, textColor, "next lock", true, 2);
    const n = this.ts.length;
    if (n) {
      const x = u.valToPos(this.ts[n - 1] / 1000, "x", true);
      const y = u.valToPos(this.px[n - 1] / 100, "y", true);
      ctx.fillStyle = css("--accent", "#4cc2ff");
      ctx.beginPath();
      ctx.arc(x, y, 3.5 * dpr, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.restore();
  }

  vline(u, ms, color, label, dashed, row) {
    if (ms == null) return;
    const ctx = u.ctx;
    const dpr = devicePixelRatio || 1;
    const { top, height, left, width } = u.bbox;
    const x = u.valToPos(ms / 1000, "x", true);
    if (x < left || x > left + width) return;
    ctx.setLineDash(dashed ? [2 * dpr, 3 * dpr] : []);
    ctx.strokeStyle = color;
    ctx.lineWidth = dpr;
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = color;
    ctx.textBaseline = "top";
    const w = ctx.measureText(label).width;
    ctx.fillText(label, Math.min(x + 3 * dpr, left + width - w - 2 * dpr), top + (2 + 14 * row) * dpr);
    ctx.textBaseline = "bottom";
  }
}
