// Formatting (integers only for money) and small DOM helpers shared by the views.

export const $ = (id) => document.getElementById(id);

/** Minor units (integer) → "1,234.56"; negative gets a real minus sign. */
export function money(minor) {
  if (typeof minor !== "number" || !Number.isFinite(minor)) return "–";
  const neg = minor < 0;
  const abs = Math.abs(Math.trunc(minor));
  const whole = Math.floor(abs / 100);
  const cents = String(abs % 100).padStart(2, "0");
  return `${neg ? "−" : ""}${whole.toLocaleString("en-US")}.${cents}`;
}

/** "10", "2.5", "0.75" (credits) → minor units, or null when not a plain amount. */
export function parseStake(text) {
  const m = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(String(text));
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "").padEnd(2, "0"));
}

export function pct(bps) {
  return `${bps > 0 ? "+" : bps < 0 ? "−" : "±"}${(Math.abs(bps) / 100).toFixed(2)}%`;
}

/** Human label of a band {lo_bps, hi_bps}: "below −0.10%", "−0.10% to −0.03%", "+0.10% or more". */
export function bandLabel(b) {
  if (!b) return "–";
  if (b.lo_bps == null && b.hi_bps == null) return "any move";
  if (b.lo_bps == null) return `below ${pct(b.hi_bps)}`;
  if (b.hi_bps == null) return `${pct(b.lo_bps)} or more`;
  return `${pct(b.lo_bps)} to ${pct(b.hi_bps)}`;
}

export function bandName(i, k) {
  const five = ["Big drop", "Down", "Flat", "Up", "Big rise"];
  return k === 5 ? five[i] : `Band ${i}`;
}

export function mult(m) {
  return typeof m === "number" && Number.isFinite(m) ? `×${m.toFixed(2)}` : "—";
}

/** A date and time the player reads: "12 Dec 2026, 10:04". */
export function dateTimeOf(ms) {
  if (typeof ms !== "number") return "–";
  return new Date(ms).toLocaleString("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function timeOf(ms) {
  if (typeof ms !== "number") return "–";
  return new Date(ms).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Element factory: el("li", {class: "x", dataset: {testid: "y"}}, child, "text", …). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Sets textContent only when it changed (no needless layout or screen-reader chatter). */
export function setText(node, text) {
  const t = String(text);
  if (node.textContent !== t) node.textContent = t;
}

let toastTimer = null;
export function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("show"), 4500);
}

/** Player words for server error codes (contract §5). */
export function errorWords(code, message) {
  switch (code) {
    case "insufficient_funds": return "Not enough credits for that stake.";
    case "round_not_open": return "Betting on that round has closed. Pick a band for the next round.";
    case "round_not_found": return "That round doesn't exist any more. Pick a band for the open round.";
    case "overloaded": return "The server is busy right now: try again in a moment.";
    case "unavailable": return "The game is briefly unavailable: try again in a moment.";
    case "invalid_stake": return "That stake is outside the allowed range.";
    case "invalid_band": return "That band doesn't exist. Pick one of the bands shown.";
    case "unauthorized": return "Please sign in again to place a bet.";
    case "idempotency_conflict": return "That bet was already sent with different details. Try again.";
    case "pool_full": return "This round's pool is full. Bet on the next round.";
    case "game_paused": return "The game is paused: no bets until it resumes.";
    case "network": return "Can't reach the server. Check your connection and try again.";
    case "username_taken": return "That username is taken. Try another one.";
    case "invalid_username": return "Usernames are 3 to 32 letters, digits, _ or -.";
    case "weak_password": return "Passwords need at least 8 characters.";
    case "bad_credentials": return "Wrong username or password.";
    case "account_disabled": return "This account has been disabled. Contact the operator.";
    case "rate_limited": return "Too many attempts from your address: wait a little and try again.";
    case "self_excluded": return "You have excluded yourself from betting for now.";
    case "exclusion_cannot_shorten": return "Your exclusion already lasts longer: it can be extended, never shortened.";
    default: return message ? `Something went wrong: ${message}` : "Something went wrong. Try again.";
  }
}

/** A random idempotency key (UUID v4 where available; 128 random bits otherwise). */
export function newKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}
