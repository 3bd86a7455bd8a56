// REST client for /api/v1 (contract §5): JSON in and out, Bearer token, errors as ApiError.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let token = null;

export function setToken(t) {
  token = t || null;
}

export function getToken() {
  return token;
}

async function call(method, path, { body, headers = {}, timeoutMs = 10000 } = {}) {
  const h = { Accept: "application/json", ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  let res;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctl.signal,
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", "cannot reach the server");
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  const text = await res.text().catch(() => "");
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const ra = Number(res.headers.get("Retry-After"));
    throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || res.statusText,
      Number.isFinite(ra) ? ra : undefined);
  }
  return data;
}

// `before` of the list endpoints: exclusive, the oldest id already shown.
const page = (before) => (before == null ? "" : `&before=${encodeURIComponent(before)}`);

export const api = {
  signUp: (username, password) => call("POST", "/accounts", { body: { username, password } }),
  signIn: (username, password) => call("POST", "/sessions", { body: { username, password } }),
  me: () => call("GET", "/me"),
  // Revokes this token and every earlier one of the player, on every server.
  logout: () => call("DELETE", "/sessions/current"),
  changePassword: (oldPassword, newPassword) =>
    call("POST", "/me/password", { body: { old: oldPassword, new: newPassword } }),
  myBets: (limit = 20, before) => call("GET", `/me/bets?limit=${limit}${page(before)}`),
  exclusion: () => call("GET", "/me/exclusion"),
  exclude: (days) => call("POST", "/me/exclusion", { body: { days } }),
  current: () => call("GET", "/rounds/current"),
  rounds: (limit = 12, before) => call("GET", `/rounds?limit=${limit}${page(before)}`),
  round: (id) => call("GET", `/rounds/${encodeURIComponent(id)}`),
  leaderboard: (limit = 10) => call("GET", `/leaderboard?limit=${limit}`),
  prices: (since) => call("GET", `/prices?since=${Math.floor(since)}`),
  bet: (roundId, band, stake, key) =>
    call("POST", "/bets", { body: { round_id: roundId, band, stake }, headers: { "Idempotency-Key": key } }),
};
