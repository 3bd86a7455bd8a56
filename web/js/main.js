// tickpool browser client: state, wiring and views. The socket (socket.js) feeds live state;
// REST (api.js) fills lists and resyncs after every (re)connect; the server clock drives every
// countdown so a tab that slept shows the right time as soon as it wakes.

import { api, setToken, ApiError } from "./api.js";
import { Socket } from "./socket.js";
import { PriceChart } from "./chart.js";
import { verifyRound } from "./fairness.js";
import { potentialPayout, refundBands, roundOutcome, stakeAllowed } from "./payout.js";
import {
  $, el, setText, money, parseStake, bandLabel, bandName, mult, pct, timeOf, dateTimeOf, toast, errorWords, newKey,
} from "./ui.js";

const ROUNDS_PAGE = 12;
const BETS_PAGE = 20;

const state = {
  token: null,
  user: null, // {user_id, username}
  balance: null,
  open: null,
  live: null,
  lastPrice: null,
  rounds: new Map(), // id → Round (recent)
  roundsKeep: ROUNDS_PAGE, // how many rounds the list shows: one page more per "older rounds"
  roundsEnd: false, // the server has no older round than the list's last
  myBets: [],
  betsEnd: false, // no bet older than the list's last
  betsPlaced: 0, // bets this page has placed: a list read before the latest of them may miss it
  excludedUntil: null, // Unix ms while the player has excluded themselves from betting
  paused: null, // {since, reason} while the operator has paused the game
  leaders: [],
  selected: null,
  bandsFor: null, // round id the band buttons were built for
  betBusy: false,
  slip: null, // {key, sig, until}: the idempotency key of the current slip
};

const socket = new Socket({ state: onConnState, message: onMessage, closed: onClosed });
const chart = new PriceChart($("chart"), () => socket.clock.now());
const pending = new Map(); // req → {resolve, reject, timer}
let reqSeq = 0;

// ---------------------------------------------------------------- connection

function onConnState(name, detail) {
  const text = name === "waiting" ? `reconnecting in ${Math.max(1, Math.round(detail / 1000))}s` : name;
  setText($("conn-state"), text);
  document.body.dataset.conn = name;
  if (name !== "live") failPendingBets();
}

function onClosed(code, wasSynced, helloSeen) {
  // A token the server no longer accepts shows up as an upgrade that never says hello.
  if (state.token && !helloSeen) {
    api.me().catch((e) => {
      if (e instanceof ApiError && e.status === 401) signOut("Your session has expired. Please sign in again.");
    });
  }
}

function onMessage(m) {
  switch (m.t) {
    case "hello":
      if (m.user_id != null && typeof m.balance === "number") {
        setBalance(m.balance);
      } else if (state.token) {
        // Anonymous hello although we hold a token: authenticate in-band (contract §6), and
        // drop the session only if the server says it is no longer valid.
        socket.send({ t: "auth", token: state.token });
        refreshMe();
      }
      break;
    case "snapshot":
      state.open = (m.rounds && m.rounds.open) || null;
      state.live = (m.rounds && m.rounds.live) || null;
      setPaused(m.paused);
      if (Array.isArray(m.ticks)) chart.add(m.ticks);
      if (m.ticks && m.ticks.length) setPrice(m.ticks[m.ticks.length - 1][1]);
      roundsChanged();
      resync();
      break;
    case "tick":
      chart.add([[m.ts, m.price]]);
      setPrice(m.price);
      if (m.odds) applyOdds(m.odds); // a beat may carry the open round's new pools
      break;
    case "odds":
      applyOdds(m);
      break;
    case "round":
      if (m.round) applyRound(m.round);
      // The pair right after this change: a boundary (lock of N, open of N+1) is one state.
      if (m.rounds) {
        state.open = m.rounds.open || null;
        state.live = m.rounds.live || null;
        roundsChanged();
      }
      break;
    case "pause":
      setPaused(m.paused);
      break;
    case "bet_ok":
    case "bet_err": {
      const p = pending.get(m.req);
      if (p) {
        pending.delete(m.req);
        clearTimeout(p.timer);
        if (m.t === "bet_ok") p.resolve(m);
        else p.reject(new ApiError(0, m.code, m.message));
      }
      break;
    }
    case "payout":
      if (typeof m.balance === "number") setBalance(m.balance);
      if (!showResult(state.rounds.get(m.round_id), m.amount)) toast(`Round #${m.round_id} paid you ${money(m.amount)} credits.`);
      refreshMyBets();
      break;
    default:
      break; // pong and anything newer
  }
}

function applyOdds(m) {
  if (state.open && state.open.id === m.round_id) {
    Object.assign(state.open, { pools: m.pools, total: m.total, multipliers: m.multipliers });
    renderBands();
  }
}

function applyRound(r) {
  if (r.state === "open") {
    if (!state.open || r.id >= state.open.id) state.open = r;
  } else if (r.state === "live") {
    if (state.open && state.open.id === r.id) state.open = null;
    if (!state.live || r.id >= state.live.id) state.live = r;
  } else {
    if (state.live && state.live.id === r.id) state.live = null;
    if (state.open && state.open.id === r.id) state.open = null;
    showResult(r);
    soon("settled", () => {
      refreshMyBets();
      refreshMe();
      refreshLeaders();
    }, 300);
  }
  state.rounds.set(r.id, r);
  roundsChanged();
}

// The operator's pause (`paused` of the snapshot, /rounds/current and the `pause` message):
// bets are refused until it resumes; the rounds in flight still lock and settle.
function setPaused(p) {
  state.paused = p && typeof p === "object" ? p : null;
  const box = $("game-paused");
  box.hidden = !state.paused;
  setText($("game-paused-reason"), state.paused
    ? `${state.paused.reason ? `${state.paused.reason}. ` : ""}No new round opens and bets are refused until the game resumes.`
    : "");
  renderLive();
  renderSlipButton();
}

function roundsChanged() {
  chart.setRounds(state.open, state.live);
  renderBands();
  renderLive();
  renderRounds();
}

// The banner for the player's bets in a round that just became final. `paid` (a payout
// message: the total credited for the round) replaces the amount computed from the receipt.
// Returns whether the round had bets of the player's to show.
function showResult(r, paid) {
  const o = roundOutcome(r, state.myBets);
  if (!o) return false;
  if (typeof paid === "number") {
    if (o.outcome === "refunded") o.refunded = paid;
    else o.won = paid;
  }
  const k = (r.bands && r.bands.length) || 5;
  const bits = [];
  if (o.won) bits.push(el("strong", { class: "up" }, `won ${money(o.won)}`));
  if (o.lost) bits.push(el("strong", { class: "down" }, `lost ${money(o.lost)}`));
  if (o.refunded) bits.push(el("strong", {}, `got ${money(o.refunded)} back`));
  const parts = [`Round #${r.id}: you `];
  bits.forEach((b, i) => parts.push(i ? " and " : "", b));
  if (o.outcome === "refunded") {
    parts.push(r.state === "cancelled" ? ": the round was cancelled, every stake is refunded." : ": nobody backed the winning band, every stake is refunded.");
  } else {
    parts.push(` on ${money(o.staked)} staked. ${bandName(r.winning_band, k)} won.`);
  }
  const box = $("round-result");
  box.dataset.roundId = r.id;
  box.dataset.outcome = o.outcome;
  box.dataset.amount = String(o.won + o.refunded);
  $("round-result-text").replaceChildren(...parts);
  box.hidden = false;
  soon("result", () => {
    box.hidden = true;
  }, 20000);
  return true;
}

// Everything REST knows, after each (re)connect: what happened while we were away.
function resync() {
  refreshRounds();
  refreshLeaders();
  if (state.token) {
    refreshMe();
    refreshMyBets();
    refreshExclusion();
  }
  const since = socket.clock.now() - 180000;
  api.prices(since).then((rows) => {
    if (Array.isArray(rows)) chart.add(rows.map((p) => [p.ts, p.price]));
  }).catch(() => {});
}

const timers = new Map();
function soon(name, fn, ms) {
  clearTimeout(timers.get(name));
  timers.set(name, setTimeout(fn, ms));
}

// ---------------------------------------------------------------- account

function setBalance(b) {
  state.balance = b;
  setText($("balance"), money(b));
  setText($("slip-balance"), money(b));
  renderPotential(); // a stake over the balance is said there
}

function showAccount() {
  const inside = !!state.token;
  $("wallet").hidden = !inside;
  $("who").hidden = !inside;
  $("auth").hidden = inside;
  $("mybets-box").hidden = !inside;
  $("exclusion-box").hidden = !inside;
  $("password-box").hidden = !inside;
  $("slip-balance-box").hidden = !inside;
  setText($("who-name"), state.user ? state.user.username : "");
  if (!inside) setText($("balance"), "–");
  renderSlipButton();
}

function signIn(token, user, balance) {
  state.token = token;
  state.user = user;
  setToken(token);
  try {
    localStorage.setItem("tp.session", JSON.stringify({ token, user }));
  } catch {
    /* private mode: session lasts for this tab */
  }
  if (typeof balance === "number") setBalance(balance);
  showAccount();
  socket.start(token);
  refreshMyBets();
  refreshExclusion();
}

function signOut(message) {
  state.token = null;
  state.user = null;
  state.balance = null;
  state.myBets = [];
  state.betsEnd = false;
  setToken(null);
  try {
    localStorage.removeItem("tp.session");
  } catch {
    /* nothing stored */
  }
  state.excludedUntil = null;
  renderMyBets();
  renderExclusion();
  showAccount();
  setText($("auth-message"), message || "");
  socket.start(null);
}

// Sign out asks the server to revoke the token first (every copy of it, on every server), then
// forgets it here whatever the answer: a token the server already refuses is as good as gone.
async function onSignOut() {
  if (state.token) await api.logout().catch(() => {});
  signOut("Signed out.");
}

async function onChangePassword(ev) {
  ev.preventDefault();
  const oldPassword = $("password-old").value;
  const newPassword = $("password-new").value;
  const status = $("password-status");
  if (!oldPassword) return setText(status, "Enter your current password.");
  if (newPassword.length < 8) return setText(status, errorWords("weak_password"));
  setText(status, "Changing your password…");
  withButton($("password-submit"), async () => {
    try {
      const user = state.user;
      await api.changePassword(oldPassword, newPassword);
      $("password-old").value = "";
      $("password-new").value = "";
      // Every earlier token is revoked, this tab's included: sign in again with the new password,
      // then say so (the confirmation means this tab already holds its new token).
      const r = await api.signIn(user.username, newPassword);
      signIn(r.token, user, state.balance);
      setText(status, "Password changed. Other devices have been signed out.");
    } catch (e) {
      // The old password is checked like a sign-in: a wrong one is bad_credentials.
      setText(status, e.code === "bad_credentials" ? "That is not your current password." : errorWords(e.code, e.message));
    }
  });
}

async function onSignUp(ev) {
  ev.preventDefault();
  const username = $("signup-username").value.trim();
  const password = $("signup-password").value;
  if (!/^[A-Za-z0-9_-]{3,32}$/.test(username)) return setText($("auth-message"), errorWords("invalid_username"));
  if (password.length < 8) return setText($("auth-message"), errorWords("weak_password"));
  setText($("auth-message"), "Creating your account…");
  try {
    const r = await api.signUp(username, password);
    setText($("auth-message"), "");
    signIn(r.token, { user_id: r.user_id, username: r.username || username }, r.balance);
    toast(`Welcome, ${r.username || username}! You start with ${money(r.balance)} credits.`);
  } catch (e) {
    setText($("auth-message"), errorWords(e.code, e.message));
  }
}

async function onSignIn(ev) {
  ev.preventDefault();
  const username = $("signin-username").value.trim();
  const password = $("signin-password").value;
  if (!username || !password) return setText($("auth-message"), "Enter your username and password.");
  setText($("auth-message"), "Signing in…");
  try {
    const r = await api.signIn(username, password);
    setToken(r.token);
    const me = await api.me().catch(() => ({ user_id: r.user_id, username }));
    setText($("auth-message"), "");
    signIn(r.token, { user_id: me.user_id, username: me.username || username }, me.balance);
  } catch (e) {
    setToken(state.token);
    setText($("auth-message"), errorWords(e.code, e.message));
  }
}

function refreshMe() {
  if (!state.token) return;
  api.me().then((me) => {
    if (typeof me.balance === "number") setBalance(me.balance);
    if (me.username && state.user) {
      state.user.username = me.username;
      showAccount();
    }
  }).catch((e) => {
    if (e.status === 401) signOut("Your session has ended. Please sign in again.");
    else if (e.code === "account_disabled") toast(errorWords(e.code));
  });
}

// ---------------------------------------------------------------- self-exclusion

// `message` (optional) stays shown instead of the exclusion's own line.
function refreshExclusion(message) {
  if (!state.token) return;
  api.exclusion().then((r) => {
    state.excludedUntil = (r && r.excluded_until) || null;
    renderExclusion(message);
  }).catch(() => {});
}

function renderExclusion(message) {
  const until = state.excludedUntil;
  const active = until != null && until > Date.now();
  setText($("exclusion-submit"), active ? "Extend" : "Exclude me");
  setText($("exclusion-status"), message ||
    (active ? `You have excluded yourself from betting until ${dateTimeOf(until)}.` : ""));
  $("exclusion-box").dataset.excludedUntil = active ? String(until) : "";
}

async function onExclude(ev) {
  ev.preventDefault();
  const text = $("exclusion-days").value.trim();
  const days = /^\d{1,3}$/.test(text) ? Number(text) : 0;
  if (days < 1 || days > 365) return renderExclusion("Enter a whole number of days from 1 to 365.");
  withButton($("exclusion-submit"), async () => {
    try {
      const r = await api.exclude(days);
      state.excludedUntil = r.excluded_until;
      renderExclusion();
      toast(`No betting until ${dateTimeOf(r.excluded_until)}. Take care.`);
    } catch (e) {
      if (e.code !== "exclusion_cannot_shorten") throw e;
      const words = errorWords(e.code);
      renderExclusion(words);
      refreshExclusion(words);
    }
  });
}

// The newest page replaces what it covers; pages loaded with "older bets" stay below it.
// A bet placed while the read was on its way may be missing from its answer: it stays on top.
function refreshMyBets() {
  if (!state.token) return;
  const placedBefore = state.betsPlaced;
  api.myBets(BETS_PAGE).then((r) => {
    const fresh = (r && r.bets) || [];
    const have = new Set(fresh.map((b) => b.bet_id));
    const later = state.myBets.filter((b) => b.placed > placedBefore && !have.has(b.bet_id));
    if (fresh.length < BETS_PAGE) {
      state.myBets = later.concat(fresh);
      state.betsEnd = true;
    } else {
      const oldest = fresh[fresh.length - 1].bet_id;
      const older = state.myBets.filter((b) => b.bet_id < oldest);
      if (!older.length) state.betsEnd = false;
      state.myBets = later.concat(fresh, older);
    }
    renderMyBets();
  }).catch(() => {});
}

function loadOlderBets() {
  const last = state.myBets[state.myBets.length - 1];
  if (!state.token || !last) return;
  withButton($("my-bets-older"), async () => {
    const r = await api.myBets(BETS_PAGE, last.bet_id);
    const got = (r && r.bets) || [];
    const have = new Set(state.myBets.map((b) => b.bet_id));
    state.myBets.push(...got.filter((b) => !have.has(b.bet_id)));
    if (got.length < BETS_PAGE) state.betsEnd = true;
    renderMyBets();
  });
}

// Runs a request behind `btn` (disabled meanwhile, so a double click asks once); a failure is
// told in a toast.
async function withButton(btn, fn) {
  btn.disabled = true;
  try {
    await fn();
  } catch (e) {
    toast(errorWords(e.code, e.message));
  } finally {
    btn.disabled = false;
  }
}

// Band count of round `id`: its own bands (a restart may change them for later rounds), else
// the open round's when that round is not loaded.
function bandsOf(id) {
  const r = state.rounds.get(id) || (state.open && state.open.id === id ? state.open : null);
  const any = r || state.open;
  return (any && Array.isArray(any.bands) && any.bands.length) || 5;
}

// A message when `stake` is outside round r's own stake bounds (fixed when it opened), else null.
function stakeOutside(r, stake) {
  if (stakeAllowed(r, stake)) return null;
  return `Stakes in round #${r.id} go from ${money(r.min_stake)} to ${money(r.max_stake)}.`;
}

function renderMyBets() {
  const ul = $("my-bets");
  ul.replaceChildren(...state.myBets.map((b) => {
    const status = b.status || "pending";
    let result = "—";
    if (status === "won") result = `+${money(b.payout)}`;
    else if (status === "refunded") result = `refund ${money(b.payout ?? b.stake)}`;
    else if (status === "lost") result = `−${money(b.stake)}`;
    else result = "waiting";
    return el("li", { class: "bet-row", dataset: { testid: "my-bet", status, betId: b.bet_id } },
      el("span", { class: "num" }, `#${b.round_id}`),
      el("span", {}, bandName(b.band, bandsOf(b.round_id))),
      el("span", { class: "num right" }, money(b.stake)),
      el("span", { class: `badge ${status}` }, status),
      el("span", { class: "num right" }, result));
  }));
  $("my-bets-empty").hidden = state.myBets.length > 0;
  $("my-bets-older").hidden = state.betsEnd || state.myBets.length === 0;
}

// ---------------------------------------------------------------- market

function setPrice(p) {
  state.lastPrice = p;
  setText($("price"), money(p));
  const mv = $("move");
  if (state.live && state.live.lock_price) {
    const L = state.live.lock_price;
    const bps = ((p - L) * 10000) / L;
    setText(mv, `${pct(Math.round(bps * 100) / 100)} since lock`);
    mv.className = `move num small ${p > L ? "up" : p < L ? "down" : ""}`;
  } else {
    setText(mv, "");
  }
}

function renderLive() {
  const info = $("live-info");
  const lv = state.live;
  if (!lv) {
    setText(info, state.open ? `Round #${state.open.id} takes bets; it goes live at the lock.`
      : state.paused ? "The game is paused: no round is running." : "Waiting for the next round…");
    return;
  }
  setText(info, `Round #${lv.id} is live: locked at $${money(lv.lock_price)}. Dashed lines are its band edges; the shaded band would win if it closed now.`);
}

function renderBands() {
  const box = $("bands");
  const r = state.open;
  setText($("open-id"), r ? `#${r.id}` : "–");
  if (!r || !Array.isArray(r.bands)) {
    if (state.bandsFor !== null) box.replaceChildren();
    state.bandsFor = null;
    renderSlipButton();
    return;
  }
  const k = r.bands.length;
  if (state.bandsFor !== `${r.id}:${k}`) {
    state.bandsFor = `${r.id}:${k}`;
    state.slip = null;
    box.replaceChildren(...r.bands.map((b, i) =>
      el("button", {
        type: "button", class: "band", "aria-pressed": "false", dataset: { testid: `band-${i}`, band: i },
        onclick: () => selectBand(i),
      },
      el("span", { class: "band-name" }, bandName(i, k)),
      el("span", { class: "band-range small muted" }, bandLabel(b)),
      el("span", { class: "band-stats" },
        el("span", { class: "small muted" }, "Pool "),
        el("span", { class: "num", dataset: { testid: `band-${i}-pool` } }, "0.00"),
        el("span", { class: "num share small muted" }, ""),
      ),
      el("span", { class: "num mult", dataset: { testid: `band-${i}-multiplier` } }, "—"))));
  }
  const total = r.total || 0;
  r.bands.forEach((b, i) => {
    const btn = box.children[i];
    const pool = (r.pools && r.pools[i]) || 0;
    setText(btn.querySelector(`[data-testid="band-${i}-pool"]`), money(pool));
    setText(btn.querySelector(".share"), total > 0 ? ` ${Math.round((pool * 100) / total)}%` : "");
    setText(btn.querySelector(`[data-testid="band-${i}-multiplier"]`), mult(r.multipliers && r.multipliers[i]));
    btn.setAttribute("aria-pressed", String(state.selected === i));
    btn.setAttribute("aria-label",
      `${bandName(i, k)}, ${bandLabel(b)}, pool ${money(pool)} credits, multiplier ${mult(r.multipliers && r.multipliers[i])}`);
  });
  renderSlipButton();
  renderPotential();
}

function selectBand(i) {
  state.selected = i;
  renderBands();
  setText($("bet-message"), "");
}

// What the slip's stake would pay if its band won at the open round's current pools (with the
// stake itself in them), and which outcomes would only refund it. Redrawn on every odds update.
function renderPotential() {
  const line = $("bet-potential");
  const note = $("potential-note");
  const r = state.open;
  const i = state.selected;
  const stake = parseStake($("stake").value);
  let parts;
  let sub = "";
  let data = {};
  if (!r || !Array.isArray(r.bands)) {
    parts = ["No round is taking bets right now."];
  } else if (i == null || i >= r.bands.length) {
    parts = ["Pick a band to see what your stake would pay."];
  } else if (stake == null || stake <= 0) {
    parts = ["Enter a stake to see what it would pay."];
  } else if (state.token && state.balance != null && stake > state.balance) {
    parts = [`That is more than your balance of ${money(state.balance)}.`];
  } else if (stakeOutside(r, stake)) {
    parts = [stakeOutside(r, stake)];
  } else if (typeof r.rake_bps !== "number") {
    parts = ["The odds are not known yet."];
  } else {
    const k = r.bands.length;
    const pools = r.bands.map((_, b) => (r.pools && r.pools[b]) || 0);
    const p = potentialPayout(pools, i, stake, r.rake_bps);
    const empty = refundBands(pools, i).map((b) => bandName(b, k));
    parts = ["Pays ", el("strong", { class: "num" }, money(p.payout)), ` if ${bandName(i, k)} wins `,
      el("span", { class: "num muted" }, `(×${(p.payout / stake).toFixed(2)})`)];
    if (p.others === 0) {
      sub = "Nobody has bet on another band yet: whichever band wins, you would only get your stake back (a refund if it is another band).";
      data = { payout: p.payout, refund: "all" };
    } else {
      if (empty.length) sub = `Refunded if ${listWords(empty)} wins: nobody has backed ${empty.length > 1 ? "them" : "it"} yet. `;
      sub += "Odds move until betting closes.";
      data = { payout: p.payout, refund: empty.length ? "some" : "none" };
    }
  }
  const key = JSON.stringify([parts.map((x) => (typeof x === "string" ? x : x.textContent)), sub]);
  if (line.dataset.key === key) return;
  line.dataset.key = key;
  delete line.dataset.payout;
  delete line.dataset.refund;
  Object.assign(line.dataset, data);
  line.replaceChildren(...parts);
  setText(note, sub);
}

function listWords(xs) {
  return xs.length < 2 ? xs.join("") : `${xs.slice(0, -1).join(", ")} or ${xs[xs.length - 1]}`;
}

function renderSlipButton() {
  const btn = $("bet-submit");
  const r = state.open;
  let label = "Place bet";
  if (state.paused) label = "Paused";
  else if (!state.token) label = "Sign in to bet";
  else if (state.selected == null) label = "Pick a band";
  else if (r && r.bands) label = `Bet on ${bandName(state.selected, r.bands.length)}`;
  setText(btn, label);
}

function tickTimers() {
  const now = socket.clock.now();
  const o = state.open;
  const lv = state.live;
  setText($("lock-countdown"), o ? Math.max(0, Math.ceil((o.locks_at - now) / 1000)) : "–");
  setText($("close-countdown"), lv ? Math.max(0, Math.ceil((lv.closes_at - now) / 1000)) : "–");
  const frac = (a, b) => (a == null || b == null || b <= a ? 0 : Math.min(1, Math.max(0, (now - a) / (b - a))));
  $("lock-bar").style.transform = `scaleX(${o ? 1 - frac(o.opens_at, o.locks_at) : 0})`;
  $("close-bar").style.transform = `scaleX(${lv ? 1 - frac(lv.locks_at, lv.closes_at) : 0})`;
}

// ---------------------------------------------------------------- bets

function failPendingBets() {
  for (const [req, p] of pending) {
    pending.delete(req);
    clearTimeout(p.timer);
    p.reject(Object.assign(new Error("socket closed"), { fallback: true }));
  }
}

function wsBet(body, key) {
  return new Promise((resolve, reject) => {
    const req = ++reqSeq;
    const timer = setTimeout(() => {
      pending.delete(req);
      reject(Object.assign(new Error("no answer"), { fallback: true }));
    }, 6000);
    pending.set(req, { resolve, reject, timer });
    if (!socket.send({ t: "bet", req, key, ...body })) {
      pending.delete(req);
      clearTimeout(timer);
      reject(Object.assign(new Error("not connected"), { fallback: true }));
    }
  });
}

async function placeBet(ev) {
  ev.preventDefault();
  if (state.betBusy) return; // the first click is still on its way
  const msg = $("bet-message");
  const r = state.open;
  if (!state.token) return setText(msg, "Sign up or sign in to place a bet.");
  if (state.selected == null) return setText(msg, "Pick a band first.");
  if (!r) return setText(msg, "No round is taking bets right now. Wait a moment.");
  const stake = parseStake($("stake").value);
  if (stake == null || stake <= 0) return setText(msg, "Enter a stake like 10 or 2.50.");
  if (state.balance != null && stake > state.balance) {
    return setText(msg, `Not enough credits: your balance is ${money(state.balance)}.`);
  }
  if (stakeOutside(r, stake)) return setText(msg, stakeOutside(r, stake));
  const body = { round_id: r.id, band: state.selected, stake };
  // One idempotency key per slip: a repeat of the same slip right after (a double click, a
  // retry after a lost answer) reuses it, so the server debits at most once.
  const sig = JSON.stringify(body);
  const now = Date.now();
  if (!state.slip || state.slip.sig !== sig || (state.slip.until && now > state.slip.until)) {
    state.slip = { key: newKey(), sig, until: 0 };
  }
  const key = state.slip.key;
  state.betBusy = true;
  $("bet-submit").setAttribute("aria-busy", "true");
  setText(msg, "Placing your bet…");
  try {
    let res;
    try {
      if (!socket.isLive) throw Object.assign(new Error("offline"), { fallback: true });
      res = await wsBet(body, key);
    } catch (e) {
      if (!e.fallback) throw e;
      res = await api.bet(body.round_id, body.band, body.stake, key);
    }
    state.slip.until = Date.now() + 1000;
    if (typeof res.balance === "number") setBalance(res.balance);
    if (!state.myBets.some((b) => b.bet_id === res.bet_id)) {
      state.myBets.unshift({ bet_id: res.bet_id, round_id: res.round_id, band: res.band, stake: res.stake,
        status: "pending", payout: null, placed: ++state.betsPlaced });
      renderMyBets();
    }
    setText(msg, `Bet placed: ${money(res.stake)} on ${bandName(res.band, r.bands.length)} in round #${res.round_id}.`);
    if (state.open && state.open.id === res.round_id) refreshOddsSoon();
  } catch (e) {
    if (e.code !== "network") state.slip = null; // a definite answer: the next click is a new bet
    if (e.code === "unauthorized") signOut(errorWords(e.code));
    setText(msg, errorWords(e.code, e.message));
    if (e.code === "insufficient_funds") refreshMe();
    if (e.code === "self_excluded") {
      if (state.excludedUntil) setText(msg, `You have excluded yourself from betting until ${dateTimeOf(state.excludedUntil)}.`);
      refreshExclusion();
    }
  } finally {
    state.betBusy = false;
    $("bet-submit").removeAttribute("aria-busy");
  }
}

// odds arrive over the socket; without it, fetch the open round's pools.
function refreshOddsSoon() {
  if (socket.isLive) return;
  soon("odds", () => api.current().then((c) => {
    if (c && "paused" in c) setPaused(c.paused);
    if (c && c.open) applyRound(c.open);
    if (c && c.live) applyRound(c.live);
  }).catch(() => {}), 200);
}

// ---------------------------------------------------------------- rounds, fairness, leaders

function mergeRounds(rows) {
  for (const x of rows) {
    const had = state.rounds.get(x.id);
    if (!had || had.state === x.state || x.state === "settled" || x.state === "cancelled") state.rounds.set(x.id, x);
  }
}

function refreshRounds() {
  api.rounds(ROUNDS_PAGE).then((r) => {
    const rows = (r && r.rounds) || [];
    mergeRounds(rows);
    if (rows.length < ROUNDS_PAGE && state.rounds.size <= ROUNDS_PAGE) state.roundsEnd = true;
    renderRounds();
  }).catch(() => {});
}

// One page further back than the oldest round shown; the list keeps that many rows from then on.
function loadOlderRounds() {
  const ids = [...state.rounds.keys()];
  if (!ids.length) return;
  withButton($("rounds-older"), async () => {
    const r = await api.rounds(ROUNDS_PAGE, Math.min(...ids));
    const rows = (r && r.rounds) || [];
    mergeRounds(rows);
    state.roundsKeep = Math.max(state.roundsKeep, state.rounds.size);
    if (rows.length < ROUNDS_PAGE) state.roundsEnd = true;
    renderRounds();
  });
}

function renderRounds() {
  const ids = [...state.rounds.keys()].sort((a, b) => b - a);
  for (const id of ids.slice(state.roundsKeep)) {
    state.rounds.delete(id);
    state.roundsEnd = false; // new rounds pushed the oldest out: they can be loaded again
  }
  $("rounds-older").hidden = state.roundsEnd || ids.length === 0 || ids[Math.min(ids.length, state.roundsKeep) - 1] <= 1;
  $("rounds").replaceChildren(...ids.slice(0, state.roundsKeep).map((id) => {
    const r = state.rounds.get(id);
    const rc = r.receipt;
    const parts = [];
    if (r.lock_price != null) parts.push(`lock $${money(r.lock_price)}`);
    if (r.close_price != null) parts.push(`close $${money(r.close_price)}`);
    let receipt = "";
    if (rc) {
      receipt = rc.refunds > 0 && rc.payouts === 0
        ? `pool ${money(rc.total)} · refunded ${money(rc.refunds)}`
        : `pool ${money(rc.total)} · paid ${money(rc.payouts)} · house ${money(rc.rake + rc.breakage)}`;
    }
    const verifiable = r.state === "settled";
    return el("li", { class: `round-row ${r.state}`, dataset: { testid: "round-row", roundId: r.id, state: r.state } },
      el("button", {
        type: "button", class: "row-btn", disabled: !verifiable,
        "aria-label": verifiable ? `Check round ${r.id} for fairness` : `Round ${r.id}, ${r.state}`,
        onclick: () => checkFairness(r.id),
      },
      el("span", { class: "num rid" }, `#${r.id}`),
      el("span", { class: `badge ${r.state}` }, r.state),
      el("span", { class: "num prices small" }, parts.join(" → ") || timeOf(r.locks_at)),
      el("span", { class: "win" }, r.winning_band != null ? `Won: ${bandName(r.winning_band, bandsOf(r.id))}` : ""),
      el("span", { class: "num small muted receipt" }, receipt)));
  }));
}

async function checkFairness(id) {
  const box = $("fairness");
  box.replaceChildren(el("p", { class: "small muted" }, `Recomputing round #${id} from its seed…`));
  let r;
  try {
    r = await api.round(id);
  } catch (e) {
    box.replaceChildren(el("p", {}, errorWords(e.code, e.message)));
    return;
  }
  if (r.seed == null) {
    box.replaceChildren(el("p", {}, `Round #${id}'s seed is not revealed yet: it is revealed once its ticks are past. Try again in a few seconds.`));
    return;
  }
  const rep = await verifyRound(r, { fetchRound: (n) => api.round(n) });
  const seen = compareSeen(r, rep.ticks);
  box.replaceChildren(
    el("p", { class: "verdict" },
      `Round #${r.id}: `,
      el("strong", { class: `badge ${rep.match ? "won" : "lost"}`, dataset: { testid: "fairness-result" } },
        rep.match ? "match" : "mismatch")),
    el("p", { class: "small" }, rep.match
      ? `All ${rep.ticks.length} ticks recomputed from the revealed seed lead from the lock price to the published close price and winning band.`
      : "The published round does not agree with what its seed generates."),
    el("ul", { class: "checks small" }, ...rep.checks.map((c) =>
      el("li", { class: c.ok ? "ok" : "bad" }, `${c.ok ? "✓" : "✗"} ${c.what}`,
        c.ok ? "" : el("span", { class: "muted" }, ` (published ${c.expected}, recomputed ${c.got})`)))),
    seen ? el("p", { class: "small muted" }, seen) : "",
    el("dl", { class: "seed small" },
      el("dt", {}, "Seed"), el("dd", { class: "mono" }, r.seed),
      el("dt", {}, "SHA-256"), el("dd", { class: "mono" }, r.seed_hash),
      el("dt", {}, "Volatility"), el("dd", { class: "mono" },
        r.vol_ppb != null ? `${r.vol_ppb} ppb per tick` : "45034 ppb per tick (server default; not published with the round)")));
}

// Ticks this page received live that fall on the recomputed path (same timestamp).
function compareSeen(r, ticks) {
  if (!ticks.length) return "";
  const tickMs = r.tick_ms ?? 100;
  const byTs = new Map();
  ticks.forEach((p, i) => byTs.set(r.locks_at + (i + 1) * tickMs, p));
  let n = 0;
  let same = 0;
  chart.ts.forEach((ts, i) => {
    const p = byTs.get(ts);
    if (p !== undefined) {
      n++;
      if (BigInt(chart.px[i]) === p) same++;
    }
  });
  return n ? `Of the ticks this page received live for this round, ${same} of ${n} equal the recomputed ones.` : "";
}

function refreshLeaders() {
  api.leaderboard(10).then((r) => {
    state.leaders = (r && r.players) || [];
    $("leaderboard").replaceChildren(...state.leaders.map((p, i) => {
      const net = p.net ?? p.net_winnings ?? p.winnings ?? 0;
      const me = state.user && p.username === state.user.username;
      return el("li", { class: `leader${me ? " me" : ""}` },
        el("span", { class: "num rank" }, `${i + 1}`),
        el("span", { class: "name" }, p.username ?? `player ${p.user_id}`),
        el("span", { class: `num right ${net >= 0 ? "up" : "down"}` }, `${net >= 0 ? "+" : ""}${money(net)}`));
    }));
    if (!state.leaders.length) $("leaderboard").replaceChildren(el("li", { class: "small muted" }, "No winners yet."));
  }).catch(() => {});
}

// ---------------------------------------------------------------- start

function start() {
  $("signup-form").addEventListener("submit", onSignUp);
  $("signin-form").addEventListener("submit", onSignIn);
  $("signout").addEventListener("click", onSignOut);
  $("password-form").addEventListener("submit", onChangePassword);
  $("slip").addEventListener("submit", placeBet);
  $("stake").addEventListener("input", renderPotential);
  for (const b of document.querySelectorAll("[data-quick]")) {
    b.addEventListener("click", () => {
      $("stake").value = b.dataset.quick;
      setText($("bet-message"), "");
      renderPotential();
    });
  }
  $("rounds-older").addEventListener("click", loadOlderRounds);
  $("my-bets-older").addEventListener("click", loadOlderBets);
  $("exclusion-form").addEventListener("submit", onExclude);
  $("round-result-close").addEventListener("click", () => {
    $("round-result").hidden = true;
  });
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem("tp.session") || "null");
  } catch {
    saved = null;
  }
  if (saved && saved.token) {
    state.token = saved.token;
    state.user = saved.user || null;
    setToken(saved.token);
  }
  showAccount();
  renderMyBets();
  renderBands();
  // Until the socket says hello, show what REST knows.
  api.current().then((c) => {
    if (c && c.open && !state.open) state.open = c.open;
    if (c && c.live && !state.live) state.live = c.live;
    if (c && "paused" in c && !socket.isLive) setPaused(c.paused);
    roundsChanged();
  }).catch(() => {});
  resync();
  socket.start(state.token);
  setInterval(tickTimers, 100);
  setInterval(refreshLeaders, 30000);
}

start();
