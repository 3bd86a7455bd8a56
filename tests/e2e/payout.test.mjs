// The web client's settlement arithmetic (web/js/payout.js), without a browser: the bet slip's
// potential payout and the result banner's amounts against hand-worked cases of the game rules.
import { test } from "node:test";
import assert from "node:assert/strict";
import { potentialPayout, refundBands, roundOutcome, stakeAllowed } from "../../web/js/payout.js";

test("potential payout: the stake joins the pool it would share, rake capped at T' - pool'", () => {
  // T' = 2100 + 750, pool' = 700 + 750, rake' = min(⌊2850·300/10000⌋ = 85, 1400) = 85,
  // payout ⌊750·2765/1450⌋ = 1430.
  assert.deepEqual(potentialPayout([300, 700, 0, 1100, 0], 1, 750, 300),
    { payout: 1430, rake: 85, total: 2850, pool: 1450, others: 1400 });
  // Alone in the round: the rake cap is 0, the stake comes back whatever happens.
  const alone = potentialPayout([0, 0, 0, 0, 0], 2, 1000, 300);
  assert.equal(alone.payout, 1000);
  assert.equal(alone.others, 0);
  // The cap binds: others hold 10, the uncapped rake would be ⌊100010·1000/10000⌋ = 10001.
  assert.equal(potentialPayout([0, 100000, 10], 1, 1, 1000).rake, 10);
  assert.equal(potentialPayout([0, 100000, 10], 1, 1, 1000).payout, 1);
  // Exact far beyond 2^53 in the intermediate product.
  const big = potentialPayout([9e15, 0], 1, 9e15, 0);
  assert.equal(big.payout, 18e15);
});

test("potential payout refuses what cannot be priced", () => {
  assert.equal(potentialPayout([1, 2], 2, 100, 300), null);
  assert.equal(potentialPayout([1, 2], -1, 100, 300), null);
  assert.equal(potentialPayout([1, 2], 0, 0, 300), null);
  assert.equal(potentialPayout([1, 2], 0, 1.5, 300), null);
  assert.equal(potentialPayout(null, 0, 100, 300), null);
  assert.equal(potentialPayout([1, 2], 0, 100, -1), null);
});

test("refund bands: the other bands nobody backed", () => {
  assert.deepEqual(refundBands([300, 700, 0, 1100, 0], 1), [2, 4]);
  assert.deepEqual(refundBands([0, 0, 0], 0), [1, 2]);
  assert.deepEqual(refundBands([5, 5], 0), []);
});

test("round outcome from the receipt: won, lost, mixed, refunded, cancelled", () => {
  const bets = [
    { round_id: 12, band: 2, stake: 500 },
    { round_id: 12, band: 1, stake: 200 },
    { round_id: 11, band: 0, stake: 100 },
  ];
  const settled = { id: 12, state: "settled", winning_band: 2,
    receipt: { total: 1800, winning_stake: 1200, rake: 54, breakage: 0, payouts: 1746, refunds: 0 } };
  const o = roundOutcome(settled, bets);
  assert.equal(o.outcome, "mixed");
  assert.equal(o.won, Math.floor((500 * 1746) / 1200));
  assert.equal(o.lost, 200);
  assert.equal(roundOutcome(settled, [bets[0]]).outcome, "won");
  assert.equal(roundOutcome(settled, [bets[1]]).outcome, "lost");
  const nobody = { id: 12, state: "settled", winning_band: 4,
    receipt: { total: 700, winning_stake: 0, rake: 0, breakage: 0, payouts: 0, refunds: 700 } };
  assert.deepEqual([roundOutcome(nobody, bets).outcome, roundOutcome(nobody, bets).refunded], ["refunded", 700]);
  const cancelled = { id: 12, state: "cancelled", winning_band: null, receipt: null };
  assert.equal(roundOutcome(cancelled, bets).refunded, 700);
  assert.equal(roundOutcome({ id: 12, state: "live" }, bets), null);
  assert.equal(roundOutcome(settled, [bets[2]]), null);
});

test("stake bounds: the round's own, inclusive; a round without them is the server's to judge", () => {
  const r = { id: 7, min_stake: 500, max_stake: 1000 };
  assert.equal(stakeAllowed(r, 500), true);
  assert.equal(stakeAllowed(r, 1000), true);
  assert.equal(stakeAllowed(r, 499), false);
  assert.equal(stakeAllowed(r, 1001), false);
  assert.equal(stakeAllowed({ id: 6, min_stake: null, max_stake: null }, 1), true);
  assert.equal(stakeAllowed(null, 1), true);
});
