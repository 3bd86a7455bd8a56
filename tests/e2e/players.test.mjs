// Browser end-to-end for the player's slip, history and account hooks: Debian's Chromium
// (playwright-core) against the REAL tickpool with a private Redis and Postgres and 4-second
// phases. The bet slip's potential payout against the game's formula for the pools on screen, the
// result banner after settlement, paging further back in "Recent rounds" and "My bets",
// self-exclusion (a bet afterwards refused in words), the operator's pause (`tickpool admin
// pause`) shown with its reason, a password change and sign-out (both revoke the old token on the
// server). Steps run in order on one page.
import { after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { execFileSync } from "node:child_process";
import { startEnv, launchBrowser, screenshotDir, waitFor, sleep, steps, watchPage, BIN, SRC } from "./lib/env.mjs";

const PHASE_S = 4;
const ROUND_MS = 2 * PHASE_S * 1000;
const tid = (id) => `[data-testid="${id}"]`;
const credits = (text) => Math.round(Number(String(text).replace(/[^0-9.\-−]/g, "").replace("−", "-")) * 100);
const money = (minor) => `${Math.floor(minor / 100).toLocaleString("en-US")}.${String(minor % 100).padStart(2, "0")}`;

let env;
let browser;
let page;
let token; // the page's player
let username; // and its name
let other; // a second player betting over HTTP, so the pools are not the page's alone
const problems = [];
let betRound; // the round the page bet on in the potential step

async function text(id) {
  return (await page.locator(tid(id)).first().textContent()).trim();
}

async function waitBettingTime(s = 2) {
  await waitFor(async () => Number(await text("lock-countdown")) >= s, { timeout: ROUND_MS + 5000, what: `≥${s}s of betting left` });
}

async function signUp(username) {
  const { status, data } = await env.server.api("POST", "/accounts", { body: { username, password: "correct horse battery" } });
  assert.equal(status, 201, JSON.stringify(data));
  return data.token;
}

async function apiBet(tok, roundId, band, stake) {
  const r = await env.server.api("POST", "/bets", { token: tok, body: { round_id: roundId, band, stake }, headers: { "Idempotency-Key": randomUUID() } });
  assert.equal(r.status, 201, JSON.stringify(r.data));
  return r.data;
}

// The formula of the slip (docs/http-api.md §3): the stake joins the pool it would share.
function expectedPayout(pools, band, stake, rakeBps) {
  const T = BigInt(pools.reduce((a, b) => a + b, 0) + stake);
  const P = BigInt(pools[band] + stake);
  let rake = (T * BigInt(rakeBps)) / 10000n;
  if (rake > T - P) rake = T - P;
  return Number((BigInt(stake) * (T - rake)) / P);
}

// Pools as the page shows them, the open round id on screen, and the slip's potential payout,
// read twice: equal reads mean no odds update landed in between.
async function readSlip() {
  const read = () => page.evaluate(() => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const pools = [];
    for (let i = 0; q(`band-${i}`); i++) pools.push(q(`band-${i}-pool`).textContent.trim());
    const pot = q("bet-potential");
    return JSON.stringify({ round: document.getElementById("open-id").textContent.trim(), pools,
      payout: pot.dataset.payout ?? null, refund: pot.dataset.refund ?? null, text: pot.textContent.trim(),
      note: document.getElementById("potential-note").textContent.trim() });
  });
  const a = await read();
  await sleep(150);
  const b = await read();
  if (a !== b) return null;
  const s = JSON.parse(a);
  return { ...s, round: Number(s.round.replace("#", "")), pools: s.pools.map(credits),
    payout: s.payout == null ? null : Number(s.payout) };
}

const { it, failed } = steps(() => page);

{
  it("starts tickpool (real Redis, Postgres, 4 s phases), Chromium, and signs up", async () => {
    env = await startEnv();
    browser = await launchBrowser({ width: 1280, height: 900 });
    page = browser.context.pages()[0] || (await browser.context.newPage());
    watchPage(page, problems, (text) => /Failed to load resource: .*status of (401|402|403|409|429)/.test(text));
    other = await signUp(`e2e_o_${Date.now().toString(36)}`);
    await page.goto(`${env.server.httpUrl}/`);
    await waitFor(async () => (await text("connection-state")) === "live", { what: "connection-state live" });
    username = `e2e_p_${Date.now().toString(36)}`;
    await page.locator(tid("signup-username")).fill(username);
    await page.locator(tid("signup-password")).fill("correct horse battery");
    await page.locator(tid("signup-submit")).click();
    await waitFor(async () => /\d/.test(await text("balance")), { what: "a balance" });
    token = await page.evaluate(() => JSON.parse(localStorage.getItem("tp.session")).token);
    await waitFor(async () => (await text("connection-state")) === "live", { what: "live as the new user" });
  });

  it("bet-potential: the stake back alone, then the formula for the pools on screen, on every odds update", async () => {
    // A fresh round nobody has bet on (the other player bets only below): only the stake back.
    await waitFor(async () => {
      const c = await env.server.api("GET", "/rounds/current");
      return c.data && c.data.open && c.data.open.total === 0 && Number(await text("lock-countdown")) >= 3;
    }, { timeout: ROUND_MS + 5000, what: "a fresh open round with betting time" });
    await page.locator(tid("band-1")).click();
    await page.locator(tid("bet-stake")).fill("7.50");
    let s = await waitFor(async () => {
      const x = await readSlip();
      return x && x.pools.every((p) => p === 0) && x.payout != null ? x : null;
    }, { what: "the potential of a lone stake" });
    assert.equal(s.payout, 750, "alone in the round, the stake only comes back");
    assert.equal(s.refund, "all");
    assert.match(s.text, /7\.50/);
    assert.match(s.note, /stake back/i);

    // Another player backs bands 0, 1 and 3: the page's pools change and so does the potential.
    const { data: cur } = await env.server.api("GET", "/rounds/current");
    betRound = cur.open.id;
    const rakeBps = cur.open.rake_bps;
    assert.equal(typeof rakeBps, "number", "the Round object carries its rake_bps");
    assert.ok(rakeBps > 0, "default rake");
    await apiBet(other, betRound, 0, 300);
    await apiBet(other, betRound, 1, 700);
    await apiBet(other, betRound, 3, 1100);
    s = await waitFor(async () => {
      const x = await readSlip();
      return x && x.round === betRound && x.pools.reduce((a, b) => a + b, 0) === 2100 ? x : null;
    }, { what: "the other player's pools on screen" });
    let want = expectedPayout(s.pools, 1, 750, rakeBps);
    assert.equal(want, 1430, "T'=2850, pool'=1450, rake'=85 at 300 bps"); // documents the case
    assert.equal(s.payout, want);
    assert.ok(s.text.includes(money(want)), `"${s.text}" shows ${money(want)}`);
    assert.match(s.note, /refunded if .*(Flat).*(Big rise)/i, "names the empty bands a win would refund");

    // One more bet on the slip's band: the pools move, the potential follows (odds update).
    await apiBet(other, betRound, 1, 900);
    s = await waitFor(async () => {
      const x = await readSlip();
      return x && x.round === betRound && x.pools[1] === 1600 ? x : null;
    }, { what: "the next odds update on screen" });
    want = expectedPayout(s.pools, 1, 750, rakeBps);
    assert.equal(s.payout, want);
    assert.ok(s.text.includes(money(want)));

    // The page's own bet goes in the same round, for the result banner.
    await page.locator(tid("bet-submit")).click();
    await waitFor(async () => /placed/i.test(await text("bet-message")), { what: "the bet placed" });
  });

  it("round-result: a banner for the player's bet when its round settles", async () => {
    await waitFor(async () => (await page.locator(`${tid("round-result")}:visible`).count()) === 1 &&
      Number(await page.locator(tid("round-result")).getAttribute("data-round-id")) === betRound,
    { timeout: 2 * ROUND_MS + 10000, what: `the banner for round ${betRound}` });
    const bets = await waitFor(async () => {
      const r = await env.server.api("GET", "/me/bets?limit=50", { token });
      const mine = r.data.bets.filter((b) => b.round_id === betRound);
      return mine.length && mine.every((b) => b.status !== "pending") ? mine : null;
    }, { what: "the bet settled in the API" });
    assert.equal(bets.length, 1);
    const b = bets[0];
    const banner = page.locator(tid("round-result"));
    await waitFor(async () => (await banner.getAttribute("data-outcome")) === b.status, { what: `outcome ${b.status}` });
    const shown = await banner.textContent();
    if (b.status === "won") assert.ok(shown.includes(`won ${money(b.payout)}`), shown);
    else if (b.status === "lost") assert.ok(shown.includes(`lost ${money(b.stake)}`), shown);
    else assert.ok(shown.includes(money(b.payout)) && /refunded/.test(shown), shown);
    // Screenshots of the slip with its potential and the banner, wide and narrow.
    const dir = screenshotDir();
    await page.locator(tid("band-3")).click();
    await page.locator("#bet-slip").screenshot({ path: join(dir, "players-slip-1280.png") });
    await page.setViewportSize({ width: 375, height: 812 });
    await sleep(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at 375 px (overflow ${overflow}px)`);
    await page.locator("#bet-slip").screenshot({ path: join(dir, "players-slip-375.png") });
    await page.setViewportSize({ width: 1280, height: 900 });
  }, 2 * ROUND_MS + 30000);

  it("rounds-older: older rounds appear below the first page", async () => {
    // More than a page (12) of rounds must exist: a round opens every phase.
    await waitFor(async () => {
      const c = await env.server.api("GET", "/rounds/current");
      return c.data && c.data.open && c.data.open.id >= 16;
    }, { timeout: 16 * PHASE_S * 1000, what: "16 rounds" });
    const ids = async () => page.locator(tid("round-row")).evaluateAll((rows) => rows.map((r) => Number(r.dataset.roundId)));
    await waitFor(async () => (await ids()).length === 12, { what: "a full first page of rounds" });
    const first = await ids();
    const oldest = Math.min(...first);
    assert.ok(oldest > 1, "older rounds exist");
    await page.locator(tid("rounds-older")).click();
    const more = await waitFor(async () => {
      const x = await ids();
      return Math.min(...x) < oldest ? x : null;
    }, { what: "older rounds in the list" });
    const older = more.filter((id) => id < oldest).sort((a, b) => b - a);
    assert.equal(older[0], oldest - 1, "paging continues right below the oldest shown");
    assert.deepEqual(older, older.map((_, i) => oldest - 1 - i), "consecutive rounds");
    assert.ok(more.length > 12);
  }, 16 * PHASE_S * 1000 + 30000);

  it("my-bets-older: older bets appear below the newest page", async () => {
    await waitBettingTime(2);
    const { data: cur } = await env.server.api("GET", "/rounds/current");
    for (let i = 0; i < 21; i++) await apiBet(token, cur.open.id, i % 5, 100);
    // 22 bets now; the page's list holds the newest page once it reloads (a resync refreshes it).
    await page.reload();
    await waitFor(async () => (await page.locator(tid("my-bet")).count()) === 20, { what: "the newest 20 bets" });
    const betIds = async () => page.locator(tid("my-bet")).evaluateAll((rows) => rows.map((r) => Number(r.dataset.betId)));
    const firstPage = await betIds();
    await page.locator(tid("my-bets-older")).click();
    await waitFor(async () => (await page.locator(tid("my-bet")).count()) === 22, { what: "all 22 bets" });
    const all = await betIds();
    assert.deepEqual(all.slice(0, 20), firstPage);
    assert.ok(Math.max(...all.slice(20)) < Math.min(...firstPage), "the older page comes after, newest first");
    await waitFor(async () => !(await page.locator(tid("my-bets-older")).isVisible()), { what: "no more older bets" });
  });

  it("exclusion: the account panel excludes the player; a bet afterwards is refused in words", async () => {
    const DAY = 86400000;
    await page.locator(tid("exclusion-days")).fill("2");
    const t0 = Date.now();
    await page.locator(tid("exclusion-submit")).click();
    await waitFor(async () => /excluded yourself from betting until/i.test(await text("exclusion-status")),
      { what: "the exclusion shown" });
    const { status, data } = await env.server.api("GET", "/me/exclusion", { token });
    assert.equal(status, 200);
    assert.ok(data.excluded_until >= t0 + 2 * DAY && data.excluded_until <= Date.now() + 2 * DAY, JSON.stringify(data));
    // Shortening is refused and said so; the exclusion stays.
    await page.locator(tid("exclusion-days")).fill("1");
    await page.locator(tid("exclusion-submit")).click();
    await waitFor(async () => /never shortened/i.test(await text("exclusion-status")), { what: "the refusal to shorten" });
    assert.equal((await env.server.api("GET", "/me/exclusion", { token })).data.excluded_until, data.excluded_until);
    // A bet is refused by the server, in words, and costs nothing.
    await waitBettingTime(2);
    const before = credits(await text("balance"));
    await page.locator(tid("band-0")).click();
    await page.locator(tid("bet-stake")).fill("1");
    await page.locator(tid("bet-submit")).click();
    await waitFor(async () => /excluded yourself from betting/i.test(await text("bet-message")), { what: "the refusal" });
    await sleep(500);
    assert.equal(credits(await text("balance")), before);
    const dir = screenshotDir();
    await page.locator(".panel.account").screenshot({ path: join(dir, "players-account-1280.png") });
    await page.setViewportSize({ width: 375, height: 812 });
    await sleep(300);
    await page.locator(".panel.account").screenshot({ path: join(dir, "players-account-375.png") });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it("paused: the operator's pause shows with its reason, and goes away on resume", async () => {
    const admin = (...args) => execFileSync(BIN, ["admin", "--actor", "e2e", ...args],
      { cwd: SRC, env: env.server.env, encoding: "utf8", timeout: 30000, stdio: "pipe" });
    assert.equal(await page.locator(tid("paused")).isVisible(), false);
    admin("pause", "--reason", "Scheduled maintenance");
    // Told at once by the `pause` message, without a reload.
    await waitFor(async () => page.locator(tid("paused")).isVisible(), { what: "the paused banner" });
    assert.match(await text("paused"), /^Paused\s+Scheduled maintenance\./);
    assert.equal(await text("bet-submit"), "Paused");
    // A page opened now learns it from its snapshot.
    const fresh = await browser.context.newPage();
    await fresh.goto(`${env.server.httpUrl}/`);
    await waitFor(async () => fresh.locator(tid("paused")).isVisible(), { what: "the paused banner on a new page" });
    await fresh.close();
    await page.locator("#bet-slip").screenshot({ path: join(screenshotDir(), "players-paused-1280.png") });
    admin("resume");
    await waitFor(async () => !(await page.locator(tid("paused")).isVisible()), { what: "the banner gone" });
    assert.notEqual(await text("bet-submit"), "Paused");
    // The next round opens on the betting grid.
    await waitFor(async () => Number(await text("lock-countdown")) > 0, { timeout: ROUND_MS + 5000, what: "a round open again" });
  });

  it("password: the account panel changes the password; the old token stops working, the page carries on", async () => {
    const old = token;
    await page.locator(tid("password-old")).fill("not my password");
    await page.locator(tid("password-new")).fill("a new horse battery");
    await page.locator(tid("password-submit")).click();
    await waitFor(async () => /not your current password/i.test(await text("password-status")), { what: "the wrong-password refusal" });
    await page.locator(tid("password-old")).fill("correct horse battery");
    await page.locator(tid("password-submit")).click();
    await waitFor(async () => /password changed/i.test(await text("password-status")), { what: "the change confirmed" });
    token = await page.evaluate(() => JSON.parse(localStorage.getItem("tp.session")).token);
    assert.notEqual(token, old);
    await waitFor(async () => (await env.server.api("GET", "/me", { token: old })).status === 401, { what: "the old token revoked" });
    assert.equal((await env.server.api("GET", "/me", { token })).status, 200);
    await waitFor(async () => (await text("connection-state")) === "live", { what: "live with the new token" });
    assert.match(await text("balance"), /\d/);
  });

  it("signout: Sign out revokes the token on the server, not only in the page", async () => {
    await page.locator(tid("signout")).click();
    await waitFor(async () => (await env.server.api("GET", "/me", { token })).status === 401, { what: "the token revoked" });
    // The server revokes before the page has the logout's answer, and the page forgets the
    // session only then: wait for it rather than read it at once (failed so in CI, 102 ms in).
    await waitFor(async () => (await page.evaluate(() => localStorage.getItem("tp.session"))) === null, { what: "the session forgotten in the page" });
    await waitFor(async () => await page.locator(tid("signin-submit")).isVisible(), { what: "the sign-in form" });
    // The new password signs in again, from the page.
    await page.locator(tid("signin-username")).fill(username);
    await page.locator(tid("signin-password")).fill("a new horse battery");
    await page.locator(tid("signin-submit")).click();
    await waitFor(async () => /\d/.test(await text("balance")), { what: "signed in with the new password" });
  });

  it("has no page or console errors", async () => {
    assert.deepEqual(problems, []);
  });

  after(async () => {
    if (browser) await browser.close();
    if (env) {
      if (failed()) process.stderr.write(`---- tickpool log (tail) ----\n${env.server.logTail()}\n`);
      await env.stop();
    }
  });
}
