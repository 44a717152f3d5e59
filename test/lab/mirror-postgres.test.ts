/**
 * PostgreSQL (Debian's postgresql-15) on the replicated mount: pgbench commits, kill -9 of the primary "node"
 * (the replication helper and every PostgreSQL process at once), then PostgreSQL recovers on the secondary's
 * copy and every transaction pgbench reported committed must be there. Also measures pgbench TPS on the mount
 * against a plain local directory. Needs root, /dev/fuse and the postgresql package.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { killMountNamespace, mountNamespaceOf, pollUntil, startLoopbackPair, type LoopbackPair } from "../../src/mirror/testing.js";

const PG = "/usr/lib/postgresql/15/bin";
const canRun = process.getuid?.() === 0 && existsSync("/dev/fuse") && existsSync(`${PG}/postgres`);
const pgUid = canRun ? Number(spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout) : 0;
const pgGid = canRun ? Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout) : 0;

const servers: Array<{ wrap: (a: string[]) => string[]; dataDir: string; child: ChildProcess }> = [];
const namespaces: string[] = [];
const pairs: LoopbackPair[] = [];
afterEach(async () => {
  // PostgreSQL backends run in sessions of their own: stop servers with pg_ctl, crash nodes by namespace
  for (const s of servers.splice(0)) {
    if (s.child.exitCode !== null || s.child.signalCode !== null) continue;
    try {
      const [cmd, ...args] = s.wrap(["runuser", "-u", "postgres", "--", `${PG}/pg_ctl`, "-D", s.dataDir, "-m", "immediate", "-w", "stop"]);
      spawnSync(cmd as string, args, { stdio: "ignore", timeout: 30_000 });
    } catch {
      /* its node's namespace is gone: killed below */
    }
  }
  for (const ns of namespaces.splice(0)) killMountNamespace(ns);
  await Promise.allSettled(pairs.splice(0).map((p) => p.close()));
});

/** Runs argv (already wrapped for the mount namespace if needed) as the postgres user; throws on failure. */
function asPostgres(wrap: (argv: string[]) => string[], argv: string[], cwd = "/"): string {
  const [cmd, ...args] = wrap(["runuser", "-u", "postgres", "--", ...argv]);
  const r = spawnSync(cmd as string, args, { encoding: "utf8", cwd, timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** Starts a postmaster in its own process group; resolves when it accepts connections. */
async function startPostgres(wrap: (argv: string[]) => string[], dataDir: string, sock: string, port: number): Promise<ChildProcess> {
  const [cmd, ...args] = wrap(["runuser", "-u", "postgres", "--", `${PG}/postgres`, "-D", dataDir, "-k", sock, "-p", String(port), "-c", "listen_addresses="]);
  const child = spawn(cmd as string, args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  servers.push({ wrap, dataDir, child });
  await pollUntil(
    () => spawnSync(`${PG}/pg_isready`, ["-q", "-h", sock, "-p", String(port)]).status === 0 || child.exitCode !== null,
    60_000,
    "postgres ready",
  );
  if (child.exitCode !== null) throw new Error(`postgres exited: ${err}`);
  return child;
}

function psql(sock: string, port: number, sql: string): string {
  const r = spawnSync(`${PG}/psql`, ["-h", sock, "-p", String(port), "-U", "postgres", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** Per-client count of transactions pgbench logged as done (`-l` logs: client_id transaction_no time ...). */
function loggedCommits(dir: string, prefix: string): Map<number, number> {
  const counts = new Map<number, number>();
  for (const f of readdirSync(dir).filter((n) => n.startsWith(`${prefix}.`))) {
    for (const line of readFileSync(join(dir, f), "utf8").split("\n")) {
      const [client, , time] = line.split(" ");
      if (client === undefined || time === undefined || !/^\d+$/.test(time)) continue;
      counts.set(Number(client), (counts.get(Number(client)) ?? 0) + 1);
    }
  }
  return counts;
}

function pgbench(sock: string, port: number, args: string[], cwd: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(`${PG}/pgbench`, ["-h", sock, "-p", String(port), "-U", "postgres", ...args, "postgres"], { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", (code) => resolve({ out, code }));
  });
}

async function setUpCluster(tag: string): Promise<{ p: LoopbackPair; sock: string; wrap: (a: string[]) => string[]; data: string }> {
  const p = await startLoopbackPair(tag, { ackTimeoutMs: 5000 });
  pairs.push(p);
  const sock = join(p.root, "sock");
  mkdirSync(sock);
  chmodSync(sock, 0o777);
  chmodSync(p.root, 0o755);
  mkdirSync(p.primary.mountPath("pgdata"), { mode: 0o700 });
  chownSync(p.primary.mountPath("pgdata"), pgUid, pgGid);
  const wrap = (argv: string[]): string[] => p.primary.commandInMount(argv);
  const data = join(p.mnt, "pgdata");
  asPostgres(wrap, [`${PG}/initdb`, "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8"]);
  return { p, sock, wrap, data };
}

describe.skipIf(!canRun)("mirror: PostgreSQL on the replicated mount", () => {
  it("kill -9 of the primary node mid-pgbench: every reported commit is present after recovery on the secondary", async () => {
    const { p, sock, wrap, data } = await setUpCluster("pgcrash");
    const port = 15432 + (process.pid % 1000);
    await startPostgres(wrap, data, sock, port);
    const node = mountNamespaceOf(p.primary.pid as number);
    namespaces.push(node);
    psql(sock, port, "CREATE TABLE commits (client int NOT NULL, id bigserial PRIMARY KEY)");
    writeFileSync(join(p.root, "insert.sql"), "INSERT INTO commits(client) VALUES (:client_id);\n");
    const bench = pgbench(sock, port, ["-n", "-c", "4", "-j", "2", "-T", "60", "-f", join(p.root, "insert.sql"), "-l", "--log-prefix=pgb"], p.root);
    await pollUntil(() => psqlCount(sock, port) >= 500, 60_000, "500 commits");
    // the crash: the helper and every PostgreSQL process of this node at once
    const killed = killMountNamespace(node);
    expect(killed.length).toBeGreaterThanOrEqual(6); // helper, postmaster, 4 backends, ...
    // gone and reaped (the recovering postmaster refuses to start while the old pid still exists)
    await pollUntil(() => killed.every((pid) => !existsSync(`/proc/${pid}`)), 10_000, "killed processes reaped");
    const { code } = await bench;
    expect(code).not.toBe(0); // pgbench saw its server die
    const logged = loggedCommits(p.root, "pgb");
    const total = [...logged.values()].reduce((x, y) => x + y, 0);
    expect(total).toBeGreaterThanOrEqual(400);

    // failover: PostgreSQL recovers from the secondary's copy (a plain directory on the other "node")
    const port2 = port + 1;
    await startPostgres((a) => a, join(p.b, "pgdata"), sock, port2);
    const rows = new Map<number, number>();
    for (const line of psql(sock, port2, "SELECT client, count(*) FROM commits GROUP BY client").split("\n")) {
      const [c, n] = line.split("|");
      rows.set(Number(c), Number(n));
    }
    console.info(`postgres crash: ${total} commits reported by pgbench, ${[...rows.values()].reduce((x, y) => x + y, 0)} rows on the secondary`);
    for (const [client, n] of logged) expect(rows.get(client) ?? 0, `client ${client}`).toBeGreaterThanOrEqual(n);
  });

  it("pgbench TPS on the replicated mount vs a local directory (measurement)", async () => {
    const { p, sock, wrap, data } = await setUpCluster("pgtps");
    const port = 16432 + (process.pid % 1000);
    const local = join(p.root, "local");
    mkdirSync(local, { mode: 0o700 });
    chownSync(local, pgUid, pgGid);
    asPostgres((a) => a, [`${PG}/initdb`, "-D", local, "-A", "trust", "-U", "postgres"]);
    const tps = async (dir: string, w: (a: string[]) => string[], prt: number): Promise<number> => {
      await startPostgres(w, dir, sock, prt);
      const init = await pgbench(sock, prt, ["-i", "-s", "4", "-q"], p.root);
      expect(init.code).toBe(0);
      const r = await pgbench(sock, prt, ["-c", "4", "-j", "2", "-T", "10"], p.root);
      expect(r.code).toBe(0);
      const [cmd, ...args] = w(["runuser", "-u", "postgres", "--", `${PG}/pg_ctl`, "-D", dir, "-m", "fast", "-w", "stop"]);
      expect(spawnSync(cmd as string, args, { stdio: "ignore" }).status).toBe(0);
      const m = /tps = ([\d.]+)/.exec(r.out);
      return Number(m?.[1]);
    };
    const tLocal = await tps(local, (a) => a, port);
    const tMirror = await tps(data, wrap, port + 1);
    console.info(`pgbench -c4 -j2 -T10 -s4: local ${tLocal.toFixed(0)} tps, replicated mount ${tMirror.toFixed(0)} tps, ratio ${(tMirror / tLocal).toFixed(2)}`);
    expect(tLocal).toBeGreaterThan(0);
    expect(tMirror).toBeGreaterThan(0);
  });
});

function psqlCount(sock: string, port: number): number {
  try {
    return Number(psql(sock, port, "SELECT count(*) FROM commits"));
  } catch {
    return 0;
  }
}
