// Test environment for the browser end-to-end tests: a private redis-server, a fresh Postgres
// database, the real tickpool binary on free ports, and Debian's Chromium driven by
// playwright-core. Everything started here is stopped by stop() (call it from an after hook).
//
// Env: TP_BIN (tickpool binary), TP_SRC (repo root), TP_TEST_PG_ADMIN_URL (Postgres admin URL;
// without it a private cluster is initialised), TP_TEST_OUTPUT (artifacts).

import { test } from "node:test";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, chmodSync, chownSync, existsSync, mkdirSync, openSync, closeSync, readFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";

export const SRC = resolve(process.env.TP_SRC || fileURLToPath(new URL("../../..", import.meta.url)));
export const BIN = process.env.TP_BIN || join(SRC, "build", "tickpool");
export const OUTPUT = process.env.TP_TEST_OUTPUT || join(SRC, "test-output");
const PG_BIN = "/usr/lib/postgresql/15/bin";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export async function waitFor(pred, { timeout = 15000, interval = 100, what = "condition" } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await pred();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(interval);
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ""}`);
}

function tmp(prefix) {
  const d = mkdtempSync(join("/tmp", prefix));
  chmodSync(d, 0o755);
  return d;
}

const asPostgres = (cmd, args) =>
  process.getuid && process.getuid() === 0 ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args];

function redisPing(port) {
  return new Promise((res) => {
    const c = connect(port, "127.0.0.1");
    let buf = "";
    c.on("connect", () => c.write("PING\r\n"));
    c.on("data", (d) => {
      buf += d;
      if (buf.includes("\r\n")) {
        c.destroy();
        res(buf.startsWith("+PONG"));
      }
    });
    c.on("error", () => res(false));
    setTimeout(() => {
      c.destroy();
      res(false);
    }, 1000);
  });
}

class Redis {
  async start() {
    this.port = await freePort();
    this.dir = tmp("tp-e2e-redis-");
    this.proc = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir,
      "--save", "", "--appendonly", "no", "--logfile", join(this.dir, "log")], { stdio: "ignore" });
    this.url = `redis://127.0.0.1:${this.port}`;
    await waitFor(() => redisPing(this.port), { what: `redis on port ${this.port}` });
    return this;
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill("SIGKILL");
      await new Promise((r) => this.proc.once("exit", r));
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

function psql(url, sql) {
  return execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql], { encoding: "utf8", timeout: 30000 });
}

class Postgres {
  async start() {
    this.admin = process.env.TP_TEST_PG_ADMIN_URL;
    if (!this.admin) {
      // No shared cluster (running the file by hand): initialise a private one.
      if (!existsSync(join(PG_BIN, "initdb"))) throw new Error("postgresql not installed");
      this.port = await freePort();
      this.dir = tmp("tp-e2e-pg-");
      if (process.getuid() === 0) {
        const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }));
        const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }));
        chownSync(this.dir, uid, gid);
      }
      this.data = join(this.dir, "data");
      execFileSync(...asPostgres(join(PG_BIN, "initdb"), ["-D", this.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]), { stdio: "ignore" });
      execFileSync(...asPostgres(join(PG_BIN, "pg_ctl"), ["-D", this.data, "-l", join(this.dir, "log"), "-w", "-o",
        `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`, "start"]), { stdio: "ignore" });
      this.admin = `postgresql://postgres@127.0.0.1:${this.port}/postgres`;
    }
    this.name = `tp_e2e_${randomBytes(6).toString("hex")}`;
    psql(this.admin, `CREATE DATABASE ${this.name}`);
    this.url = `${this.admin.slice(0, this.admin.lastIndexOf("/"))}/${this.name}`;
    return this;
  }

  async stop() {
    if (this.name && this.admin) {
      try {
        psql(this.admin, `DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
      } catch {
        /* cluster already gone */
      }
    }
    if (this.data) {
      try {
        execFileSync(...asPostgres(join(PG_BIN, "pg_ctl"), ["-D", this.data, "-m", "immediate", "stop"]), { stdio: "ignore" });
      } catch {
        /* not running */
      }
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/** The tickpool server (master + workers, own process group) on fixed private ports. */
class Server {
  constructor(redis, pg, env) {
    this.redis = redis;
    this.pg = pg;
    this.extra = env;
  }

  async init() {
    this.httpPort = await freePort();
    this.httpsPort = await freePort();
    this.dir = tmp("tp-e2e-srv-");
    this.logPath = join(this.dir, "tickpool.log");
    this.env = {
      ...process.env,
      TICKPOOL_SERVER_BIND: "127.0.0.1",
      TICKPOOL_SERVER_HTTP_PORT: String(this.httpPort),
      TICKPOOL_SERVER_HTTPS_PORT: String(this.httpsPort),
      TICKPOOL_SERVER_WORKERS: "1",
      TICKPOOL_SERVER_VAR_DIR: join(this.dir, "var"),
      TICKPOOL_SERVER_WEB_ROOT: join(SRC, "web"),
      TICKPOOL_REDIS_URL: this.redis.url,
      TICKPOOL_POSTGRES_URL: this.pg.url,
      // The tests sign up many players from one address: no per-client limits.
      TICKPOOL_LIMITS_SIGNUP_PER_MIN: "0",
      TICKPOOL_LIMITS_SIGNIN_PER_MIN: "0",
      ...this.extra,
    };
    this.httpUrl = `http://127.0.0.1:${this.httpPort}`;
    this.httpsUrl = `https://127.0.0.1:${this.httpsPort}`;
    if (!existsSync(BIN)) throw new Error(`tickpool binary not found at ${BIN}`);
    try {
      execFileSync(BIN, ["migrate"], { cwd: SRC, env: this.env, encoding: "utf8", timeout: 60000, stdio: "pipe" });
    } catch (e) {
      throw new Error(`tickpool migrate failed: ${e.stdout || ""}${e.stderr || e.message}`);
    }
    return this;
  }

  async start() {
    const fd = openSync(this.logPath, "a");
    this.proc = spawn(BIN, [], { cwd: SRC, env: this.env, stdio: ["ignore", fd, fd], detached: true });
    closeSync(fd);
    this.exited = new Promise((r) => this.proc.once("exit", r));
    await waitFor(async () => {
      if (this.proc.exitCode !== null) throw new Error(`tickpool exited with ${this.proc.exitCode}: ${this.logTail()}`);
      const r = await fetch(`${this.httpUrl}/healthz`);
      return r.status === 200;
    }, { timeout: 20000, what: "tickpool /healthz" });
    return this;
  }

  /** Stops the whole process group: SIGTERM (or the given signal), SIGKILL after a grace. */
  async stop(sig = "SIGTERM") {
    if (!this.proc) return;
    const pid = this.proc.pid;
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      try {
        process.kill(-pid, sig);
      } catch {
        /* already gone */
      }
      await Promise.race([this.exited, sleep(10000)]);
    }
    try {
      process.kill(-pid, "SIGKILL"); // nothing it started may outlive it
    } catch {
      /* group empty */
    }
    this.proc = null;
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  async api(method, path, { body, token, headers = {} } = {}) {
    const h = { ...headers };
    if (body !== undefined) h["Content-Type"] = "application/json";
    if (token) h.Authorization = `Bearer ${token}`;
    const r = await fetch(`${this.httpUrl}/api/v1${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    return { status: r.status, data };
  }

  cleanup() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Starts Redis, a database and tickpool with short phases; returns {redis, pg, server, stop}. */
export async function startEnv(env = {}) {
  const started = [];
  const stop = async () => {
    for (const s of started.reverse()) {
      try {
        await s();
      } catch {
        /* keep stopping the rest */
      }
    }
  };
  try {
    const redis = await new Redis().start();
    started.push(() => redis.stop());
    const pg = new Postgres();
    started.push(() => pg.stop());
    await pg.start();
    const server = new Server(redis, pg, {
      TICKPOOL_GAME_BETTING_S: "4",
      TICKPOOL_GAME_LIVE_S: "4",
      ...env,
    });
    started.push(() => server.cleanup());
    started.push(() => server.stop());
    await server.init();
    await server.start();
    return { redis, pg, server, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** Debian's Chromium with a fresh profile (never a downloaded browser). Returns {context, close}. */
export async function launchBrowser(viewport = { width: 1280, height: 900 }) {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "tp-e2e-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    ignoreHTTPSErrors: true,
    viewport,
  });
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export function screenshotDir() {
  const d = join(OUTPUT, "screenshots");
  mkdirSync(d, { recursive: true });
  return d;
}

/**
 * Ordered steps on one shared environment. Every step is its own test (so a broken server counts
 * as failures, not as cancelled tests); every step after the first fails at once unless
 * `ready()` says the first one set the environment up. Returns {it(name, fn, timeout), failed()}:
 * failed() tells whether a step threw (then dump the server log).
 */
export function steps(ready) {
  let first = true;
  let failed = false;
  const it = (name, fn, timeout = 60000) => {
    const setup = first;
    first = false;
    test(name, { timeout }, async () => {
      if (!setup && !ready()) throw new Error("no environment: the set-up step failed");
      try {
        await fn();
      } catch (e) {
        failed = true;
        throw e;
      }
    });
  };
  return { it, failed: () => failed };
}

/**
 * Collects the page's uncaught errors and console errors into `problems` (a test asserts it stays
 * empty), except console lines `expected(text)` accepts.
 */
export function watchPage(page, problems, expected = () => false) {
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !expected(m.text())) problems.push(`console: ${m.text()}`);
  });
}
