// k6 script for the HTTP bet path (for users who have k6; bench/run uses the bundled loadgen).
// Open-loop constant arrival rate: k6 starts iterations on schedule whatever the latency.
//
//   k6 run -e BASE=http://127.0.0.1:8080 -e RATE=1000 -e DURATION=30s -e USERS=100 bench/k6/bets.js
//
// setup() creates USERS accounts (POST /api/v1/accounts) and reads the open round; each
// iteration places one bet with a unique Idempotency-Key for a player picked round-robin.
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';
const RATE = parseInt(__ENV.RATE || '500', 10);
const USERS = parseInt(__ENV.USERS || '100', 10);
const STAKE = parseInt(__ENV.STAKE || '100', 10);

export const options = {
  setupTimeout: '300s',
  scenarios: {
    bets: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: parseInt(__ENV.VUS || '64', 10),
      maxVUs: parseInt(__ENV.MAX_VUS || '1000', 10),
    },
  },
  thresholds: {
    'http_req_failed{name:bet}': ['rate<0.01'],
    'http_req_duration{name:bet}': ['p(99)<50'],
  },
  summaryTrendStats: ['avg', 'med', 'p(99)', 'p(99.9)', 'max'],
};

export function setup() {
  const run = Math.random().toString(36).slice(2, 8);
  const users = [];
  for (let i = 0; i < USERS; i++) {
    const r = http.post(`${BASE}/api/v1/accounts`,
      JSON.stringify({ username: `k6${run}_${i}`, password: 'bench-password-1' }),
      { headers: { 'Content-Type': 'application/json' } });
    if (r.status !== 201) throw new Error(`sign-up failed: HTTP ${r.status} ${r.body}`);
    users.push(r.json('token'));
  }
  const cur = http.get(`${BASE}/api/v1/rounds/current`);
  if (cur.status !== 200) throw new Error(`no current round: HTTP ${cur.status}`);
  return { run, users, round: cur.json('open.id'), bands: cur.json('open.bands').length };
}

export default function (data) {
  const n = exec.scenario.iterationInTest;
  const token = data.users[n % data.users.length];
  const body = JSON.stringify({ round_id: data.round, band: n % data.bands, stake: STAKE });
  const r = http.post(`${BASE}/api/v1/bets`, body, {
    headers: {
      'Content-Type': 'application/json',
      Authorization: `Bearer ${token}`,
      'Idempotency-Key': `k6${data.run}-${exec.vu.idInTest}-${n}`,
    },
    tags: { name: 'bet' },
  });
  check(r, { 'bet accepted (201)': (res) => res.status === 201 });
}
