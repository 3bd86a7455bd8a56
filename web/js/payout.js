// The game's settlement arithmetic on the client (docs/http-api.md §3, Round): what a stake
// would pay, and what a final round paid the player's bets. Integers only, in BigInt, so a
// product of two large amounts stays exact; results are plain numbers (minor units).

const big = (x) => BigInt(Math.trunc(Number(x) || 0));
const min = (a, b) => (a < b ? a : b);

/**
 * What `stake` on `band` would pay if that band won at the current pools, with the stake itself
 * in the pool: T′ = T + s, pool′ = pool_b + s, rake′ = min(⌊T′·rake_bps/10000⌋, T′ − pool′),
 * payout ⌊s·(T′ − rake′)/pool′⌋. Returns null for a stake or band that cannot be priced, else
 * {payout, rake, total, pool, others}: `others` is what the other bands hold (0 means every
 * outcome gives the stake back: the band's win has nobody to pay it, any other band's win is a
 * refund because nobody backed it).
 */
export function potentialPayout(pools, band, stake, rakeBps) {
  if (!Array.isArray(pools) || !Number.isInteger(band) || band < 0 || band >= pools.length) return null;
  if (!Number.isSafeInteger(stake) || stake <= 0) return null;
  const r = big(rakeBps);
  if (r < 0n) return null;
  const s = big(stake);
  const total = pools.reduce((a, p) => a + big(p), 0n) + s;
  const pool = big(pools[band]) + s;
  const rake = min((total * r) / 10000n, total - pool);
  const payout = (s * (total - rake)) / pool;
  return { payout: Number(payout), rake: Number(rake), total: Number(total), pool: Number(pool),
    others: Number(total - pool) };
}

/** Bands other than `band` that nobody has backed: if one of them wins, every stake is refunded. */
export function refundBands(pools, band) {
  const out = [];
  (pools || []).forEach((p, i) => {
    if (i !== band && !(Number(p) > 0)) out.push(i);
  });
  return out;
}

/**
 * The outcome of the player's `bets` in a final round `r` (settled or cancelled), from the
 * published receipt: {outcome: "won"|"lost"|"refunded"|"mixed", won, lost, refunded, staked, …}
 * (amounts in minor units; `won` is the sum paid for winning bets). Null when the round is not
 * final yet or the player had no bet in it.
 */
export function roundOutcome(r, bets) {
  if (!r || !Array.isArray(bets)) return null;
  const mine = bets.filter((b) => b.round_id === r.id);
  if (!mine.length) return null;
  const res = { won: 0, lost: 0, refunded: 0, staked: 0, bets: mine.length, winners: 0, losers: 0 };
  for (const b of mine) res.staked += b.stake;
  const rc = r.receipt;
  if (r.state === "cancelled" || (r.state === "settled" && rc && rc.winning_stake === 0)) {
    res.refunded = res.staked;
    res.outcome = "refunded";
    return res;
  }
  if (r.state !== "settled" || !rc || r.winning_band == null) return null;
  const pot = big(rc.total) - big(rc.rake);
  for (const b of mine) {
    if (b.band === r.winning_band) {
      res.winners++;
      res.won += Number((big(b.stake) * pot) / big(rc.winning_stake));
    } else {
      res.losers++;
      res.lost += b.stake;
    }
  }
  res.outcome = res.winners && res.losers ? "mixed" : res.winners ? "won" : "lost";
  return res;
}

/**
 * Whether round r takes a stake of `stake` minor units: within its own min_stake..max_stake,
 * fixed when it opened (a restarted server may use other bounds for later rounds). A round
 * without them (opened by an older server) is left to the server to judge: true.
 */
export function stakeAllowed(r, stake) {
  if (!r || typeof r.min_stake !== "number" || typeof r.max_stake !== "number") return true;
  return stake >= r.min_stake && stake <= r.max_stake;
}
