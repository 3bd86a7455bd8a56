// Unit test of the browser's fairness module (web/js/fairness.js) against the golden vectors of
// docs/fairness.md §7, in Node (crypto.subtle is the same WebCrypto the page uses).
import { test } from "node:test";
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import * as f from "../../web/js/fairness.js";

// Node 18 (Debian 12's) has WebCrypto only as node:crypto's webcrypto; Node 19+ also as
// globalThis.crypto, which is what the page's module uses.
if (!globalThis.crypto) globalThis.crypto = webcrypto;

const SEED_A = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SEED_B = "ff".repeat(32);
const EDGES = [-10, -3, 3, 10];
const BANDS = [
  { index: 0, lo_bps: null, hi_bps: -10 },
  { index: 1, lo_bps: -10, hi_bps: -3 },
  { index: 2, lo_bps: -3, hi_bps: 3 },
  { index: 3, lo_bps: 3, hi_bps: 10 },
  { index: 4, lo_bps: 10, hi_bps: null },
];

test("seed hashes", async () => {
  assert.equal(await f.seedHash(SEED_A), "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd");
  assert.equal(await f.seedHash(SEED_B), "af9613760f72635fbdb44a5a0a63c39f12af30f950a6ee5c971be188e89c4051");
});

test("z_micro vectors, including 64-bit indices", async () => {
  const a = await f.importSeed(SEED_A);
  const b = await f.importSeed(SEED_B);
  const vectors = [
    [0n, 558643n, -1223382n],
    [1n, 1630108n, 773306n],
    [2n, 2109009n, -823919n],
    [3n, 1474727n, -836279n],
    [4n, 1417384n, 295900n],
    [5n, -2527073n, -1430385n],
    [300n, 1292932n, -1388300n],
    [4294967297n, -82626n, -1291391n],
    [2n ** 64n - 1n, 1400614n, -311617n],
  ];
  for (const [i, za, zb] of vectors) {
    assert.equal(await f.zMicro(a, i), za, `seed A index ${i}`);
    assert.equal(await f.zMicro(b, i), zb, `seed B index ${i}`);
  }
});

test("segments: seed A, B chained, truncation toward zero", async () => {
  const a = await f.segment(SEED_A, 45034, 6500000, 300);
  assert.deepEqual(a.slice(0, 5), [6500477n, 6501094n, 6501525n, 6501939n, 6501200n]);
  assert.equal(a[99], 6504701n);
  assert.equal(a[299], 6500918n);
  assert.equal(f.band(6500000, a[299], EDGES), 2);
  const b = await f.segment(SEED_B, 45034, a[299], 300);
  assert.equal(b[0], 6501144n);
  assert.equal(b[299], 6498315n);
  assert.equal(f.band(6500918, b[299], EDGES), 1);
  const chain = [...a, ...b];
  assert.equal(chain[449], 6503715n);
  assert.equal(chain[599], 6498315n);
  assert.equal(f.band(6500000, chain[599], EDGES), 2);
  assert.deepEqual(await f.segment(SEED_A, 20000000, 100, 5), [103n, 107n, 110n, 113n, 108n]);
});

test("bands: a move exactly on an edge belongs to the band above", () => {
  assert.equal(f.band(6500000, 6501950, EDGES), 3);
  assert.equal(f.band(6500000, 6501949, EDGES), 2);
  assert.equal(f.band(6500001, 6500001 + 1950, EDGES), 2);
  assert.equal(f.band(6500000, 6500000 - 6500, EDGES), 1); // exactly −10 bps
  assert.equal(f.band(6500000, 6500000 - 6501, EDGES), 0);
  assert.equal(f.band(6500000, 6506500, EDGES), 4);
  assert.deepEqual(f.edgesFromBands([...BANDS].reverse()), EDGES);
});

test("hostile seeds are refused", async () => {
  for (const bad of ["", "zz".repeat(32), SEED_A + "00", SEED_A.slice(2), null, 42]) {
    assert.throws(() => f.hexToBytes(bad));
  }
});

function round(over) {
  return {
    id: 7, state: "settled", opens_at: 1_000_000, locks_at: 1_030_000, closes_at: 1_060_000,
    seed: SEED_A, seed_hash: "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd",
    lock_price: 6500000, close_price: 6500918, winning_band: 2, bands: BANDS, ...over,
  };
}

test("verifyRound: match, and mismatch on every tampered field", async () => {
  const ok = await f.verifyRound(round({}));
  assert.equal(ok.match, true, JSON.stringify(ok.checks));
  assert.equal(ok.ticks.length, 300);
  assert.equal(ok.close, 6500918n);
  for (const bad of [
    { close_price: 6500919 },
    { winning_band: 3 },
    { seed_hash: "00".repeat(32) },
    { lock_price: 6500001 },
    { seed: SEED_B },
    { seed: "not hex" },
    { seed: null },
    { state: "live" },
    { closes_at: 1_060_050 },
  ]) {
    const r = await f.verifyRound(round(bad));
    assert.equal(r.match, false, `tampered ${JSON.stringify(bad)} must not match`);
  }
  // Uppercase published hash is the same hash.
  assert.equal((await f.verifyRound(round({ seed_hash: round({}).seed_hash.toUpperCase() }))).match, true);
});

test("verifyRound: live_s < betting_s and live_s > betting_s (chained seeds)", async () => {
  const a = await f.segment(SEED_A, 45034, 6500000, 300);
  const short = round({ closes_at: 1_030_000 + 15_000, close_price: Number(a[149]),
    winning_band: f.band(6500000, a[149], EDGES) });
  assert.equal((await f.verifyRound(short)).match, true);

  // live 60 s, betting 30 s: the close is tick 300 of round 8's segment (seed B).
  const long = round({ closes_at: 1_030_000 + 60_000, close_price: 6498315, winning_band: 2 });
  const next = { id: 8, state: "live", opens_at: 1_030_000, locks_at: 1_060_000, closes_at: 1_120_000,
    seed: SEED_B, seed_hash: await f.seedHash(SEED_B), lock_price: 6500918 };
  const rep = await f.verifyRound(long, { fetchRound: async (id) => (id === 8 ? next : null) });
  assert.equal(rep.match, true, JSON.stringify(rep.checks));
  assert.equal(rep.ticks.length, 600);
  assert.equal((await f.verifyRound(long)).match, false); // cannot fetch → no false "match"
  const hidden = await f.verifyRound(long, { fetchRound: async () => ({ ...next, seed: null }) });
  assert.equal(hidden.match, false);
});

test("verifyRound uses the round's recorded vol_ppb and tick_ms", async () => {
  const p = await f.segment(SEED_A, 20000000, 100, 5);
  const r = round({ vol_ppb: 20000000, tick_ms: 6000, opens_at: 0, locks_at: 30_000, closes_at: 60_000,
    lock_price: 100, close_price: Number(p[4]), winning_band: f.band(100, p[4], EDGES) });
  assert.equal((await f.verifyRound(r)).match, true);
  assert.equal((await f.verifyRound({ ...r, vol_ppb: 45034 })).match, false);
});
