// Provably fair prices, recomputed in the browser (docs/fairness.md is normative).
//
// Pure module: no DOM, no network of its own (later rounds' seeds come through an injected
// fetchRound), so node's test runner checks it against the golden vectors. Every price is a
// BigInt in cents; BigInt division truncates toward zero exactly like C. The only primitive
// taken from the platform is WebCrypto (HMAC-SHA256, SHA-256): crypto.subtle exists on https
// and on http://localhost, and in Node 20 as globalThis.crypto.subtle.

export const DEFAULT_VOL_PPB = 45034; // volatility 0.8 at tick_ms 100 (docs/fairness.md §3)
export const DEFAULT_TICK_MS = 100;
const MIN_PRICE = 1n;
const MAX_PRICE = 1000000000000000n;
const PPB_SCALE = 1000000000000000n; // vol_ppb (1e-9) times z_micro (1e-6)

function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new Error("this page needs https (or localhost) to use WebCrypto");
  return s;
}

/** 64 hex characters → 32 bytes; throws on anything else. */
export function hexToBytes(hex) {
  if (typeof hex !== "string" || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new Error("seed must be 64 hex characters");
  }
  const b = new Uint8Array(32);
  for (let i = 0; i < 32; i++) b[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return b;
}

export function toHex(buf) {
  return [...new Uint8Array(buf)].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** Lowercase hex SHA-256 of the seed's 32 bytes. */
export async function seedHash(seedHex) {
  return toHex(await subtle().digest("SHA-256", hexToBytes(seedHex)));
}

/** HMAC key for a seed, usable with zMicro. */
export function importSeed(seedHex) {
  return subtle().importKey("raw", hexToBytes(seedHex), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
}

/** Irwin–Hall deviate ×10^6 for tick `index` (BigInt or number, 0 … 2^64−1). */
export async function zMicro(key, index) {
  const msg = new Uint8Array(8);
  new DataView(msg.buffer).setBigUint64(0, BigInt(index), false);
  const h = new Uint8Array(await subtle().sign("HMAC", key, msg));
  let s = 0n;
  for (let i = 0; i < 24; i += 2) s += BigInt((h[i] << 8) | h[i + 1]);
  return ((2n * s - 786420n) * 1000000n) / 131071n;
}

/** One integer price step, clamped to [1, 10^15]. */
export function step(prev, volPpb, z) {
  let p = prev + (prev * BigInt(volPpb) * z) / PPB_SCALE;
  if (p < MIN_PRICE) p = MIN_PRICE;
  if (p > MAX_PRICE) p = MAX_PRICE;
  return p;
}

/** Ticks 1..n of one segment from price `start`: [price(1), …, price(n)] as BigInt. */
export async function segment(seedHex, volPpb, start, n) {
  const key = await importSeed(seedHex);
  const vol = BigInt(volPpb);
  const out = [];
  let p = BigInt(start);
  for (let i = 1; i <= n; i++) {
    p = step(p, vol, await zMicro(key, i));
    out.push(p);
  }
  return out;
}

/** Winning band: the number of edges e with e·L ≤ (C − L)·10000, exact. */
export function band(lock, close, edgesBps) {
  const L = BigInt(lock);
  const move = (BigInt(close) - L) * 10000n;
  let b = 0;
  while (b < edgesBps.length && BigInt(edgesBps[b]) * L <= move) b++;
  return b;
}

/** Band edges (bps) from a Round's `bands` list: every band's lo_bps but the first. */
export function edgesFromBands(bands) {
  return [...bands]
    .sort((a, b) => a.index - b.index)
    .slice(1)
    .map((b) => b.lo_bps);
}

function segmentTicks(r, tickMs) {
  const n = (r.locks_at - r.opens_at) / tickMs;
  if (!Number.isInteger(n) || n <= 0) throw new Error(`round ${r.id}: betting phase is not whole ticks`);
  return n;
}

/**
 * Verifies a settled round: seed ↔ seed_hash, every tick from lock_price to the close (chaining
 * into later rounds' revealed seeds when live_s > betting_s), close_price and winning_band.
 * opts: {volPpb, tickMs, fetchRound(id) → Round}. Returns {match, checks: [{what, ok, expected,
 * got}], ticks: [BigInt], close: BigInt|null, band: number|null}; never throws for bad data.
 */
export async function verifyRound(round, opts = {}) {
  const checks = [];
  const report = { match: false, checks, ticks: [], close: null, band: null };
  const check = (what, ok, expected, got) => {
    checks.push({ what, ok, expected: String(expected), got: String(got) });
    return ok;
  };
  try {
    if (round.state !== "settled") {
      check("round is settled", false, "settled", round.state);
      return report;
    }
    if (round.seed == null) {
      check("seed revealed", false, "a 64-hex seed", "not yet revealed");
      return report;
    }
    const tickMs = round.tick_ms ?? opts.tickMs ?? DEFAULT_TICK_MS;
    const volOf = (r) => r.vol_ppb ?? opts.volPpb ?? DEFAULT_VOL_PPB;
    check("seed_hash = SHA-256(seed)", (await seedHash(round.seed)) === String(round.seed_hash).toLowerCase(),
      round.seed_hash, await seedHash(round.seed));

    const k = (round.closes_at - round.locks_at) / tickMs;
    if (!Number.isInteger(k) || k <= 0) throw new Error("live phase is not whole ticks");
    let seg = round;
    let start = BigInt(round.lock_price);
    let remaining = k;
    const ticks = [];
    for (;;) {
      const n = segmentTicks(seg, tickMs);
      const take = Math.min(n, remaining);
      const part = await segment(seg.seed, volOf(seg), start, take);
      ticks.push(...part);
      remaining -= take;
      if (remaining === 0) break;
      // The close lies in a later segment: the next round's revealed seed continues the path.
      if (!opts.fetchRound) throw new Error("close lies in a later round; no way to fetch it");
      const next = await opts.fetchRound(seg.id + 1);
      if (!next || next.seed == null) throw new Error(`round ${seg.id + 1}'s seed is not revealed yet`);
      if (!check(`round ${next.id} seed_hash`, (await seedHash(next.seed)) === String(next.seed_hash).toLowerCase(),
        next.seed_hash, await seedHash(next.seed))) {
        return report;
      }
      seg = next;
      start = ticks[ticks.length - 1];
    }
    report.ticks = ticks;
    report.close = ticks[ticks.length - 1];
    check("close price recomputed", report.close === BigInt(round.close_price), round.close_price, report.close);
    report.band = band(round.lock_price, report.close, edgesFromBands(round.bands));
    check("winning band", report.band === round.winning_band, round.winning_band, report.band);
    report.match = checks.every((c) => c.ok);
  } catch (e) {
    check("recomputation", false, "completes", e.message);
  }
  return report;
}
