/**
 * Only the daemon dies, with PostgreSQL on the replicated mount (issue "Mirror: after the daemon dies, nothing it
 * started may serve again"): the shipped daemon (dist/cli.js, build with `npx tsup` first) on 2 lab nodes, a witness
 * arbiter in the client namespace, module db whose start_prim / stop_prim hooks start and stop Debian's PostgreSQL
 * with its data directory inside the replicated mount.
 *
 * (a) idle database: SIGKILL of the primary's daemon process alone (not the helper, not PostgreSQL). Every process
 *     of the old primary role (postmaster and children, replication helper) is gone within 1 s (figure logged); the
 *     peer takes over with every committed row; the restarted daemon becomes SECOND only after that.
 * (b) the same while pgbench commits rows through the VIP: no commit pgbench saw acknowledged is lost.
 * (c) a swap back to the node restarted in (b), while a client commits and reads through the VIP: no read returns
 *     fewer rows than were acknowledged before it started, and every answer comes from the postmaster that is
 *     primary at the time (its pg_postmaster_start_time), never from one of a previous run.
 * (d) the daemon killed together with its hook guard (the process that kills the hooks' cgroup when the daemon
 *     dies): the idle orphan PostgreSQL stays until the daemon starts again, which kills it within 1 s, names it in
 *     the module's log and reports no state before.
 *
 * Needs root, /dev/fuse and the postgresql package (scripts/setup.sh).
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GUARD_NAME } from "../../src/runtime/containment.js";
import { Lab, type LabHost, type LabProcess } from "../../src/testing/lab.js";
import { pidsInNamespaces } from "../../src/testing/lab-cleanup.js";
import { MembershipCluster, REPO, type ClusterNode, type NodeLine } from "./helpers/membership-cluster.js";
import { PG_BIN, Pgbench, conninfo, loggedTransactions, psql as psqlIn } from "./helpers/pg.js";

const canRun = process.getuid?.() === 0 && existsSync("/dev/fuse") && existsSync(`${PG_BIN}/postgres`) && existsSync(join(REPO, "dist", "cli.js"));
const PG_PORT = 5432;
const REPL_PORT = 7791;
const ARBITER_PORT = 7798;
/** Bound of "gone" after the daemon's death (the issue's figure). */
const GONE_MS = 1000;

const settled = (state: string) => (l: NodeLine) => l.type === "state" && l.module === "db" && l.state === state && l.ready === true && l.transient === false;

let lab: Lab;
let cluster: MembershipCluster;
let witness: LabProcess | undefined;
let client: LabHost;
let vip: string;
let work: string;
let conn: string;

const sql = (q: string, timeoutMs = 10_000) => psqlIn(lab, client, conn, q, timeoutMs);

/**
 * start_prim / stop_prim of one node. They run inside the mount's namespace ($HOLDFAST_MOUNT is the replicated
 * directory). start_prim: initdb on the very first start (pg_hba: trust from anywhere, a lab setting), then the
 * postmaster as user postgres, socket and server log in a node directory outside the mount. The copy's
 * postmaster.pid is removed first: it was written by whichever node ran PostgreSQL last (lab nodes share one PID
 * namespace, so its pid may even be a live process of the other node).
 */
function writePgHooks(node: string, backing: string): { start: string; stop: string } {
  const run = join(work, node);
  mkdirSync(run, { recursive: true });
  chmodSync(run, 0o777); // the postgres user writes its socket and log here
  const common = `#!/bin/sh
cd /
PG=${PG_BIN}
D="$HOLDFAST_MOUNT/pgdata"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
`;
  const start = join(run, "pg_start.sh");
  const stop = join(run, "pg_stop.sh");
  writeFileSync(
    start,
    `${common}set -e
chmod 755 "$HOLDFAST_MOUNT"
if [ ! -f "$D/PG_VERSION" ]; then
  mkdir -p "$D"; chown postgres:postgres "$D"; chmod 700 "$D"
  as_pg $PG/initdb -D "$D" -A trust -U postgres -E UTF8 --locale=C -N >/dev/null
  echo "host all all 0.0.0.0/0 trust" >> "$D/pg_hba.conf"
fi
rm -f "$D/postmaster.pid"
# crash recovery makes the data directory durable: one syncfs of the backing file system does it at once
sync -f "${backing}"
as_pg $PG/pg_ctl -D "$D" -l "${run}/pg.log" -w -t 60 -s -o "-c listen_addresses=* -p ${PG_PORT} -k ${run} -c recovery_init_sync_method=syncfs" start
`,
  );
  writeFileSync(
    stop,
    `${common}[ -f "$D/postmaster.pid" ] || exit 0
as_pg $PG/pg_ctl -D "$D" -m fast -w -t 20 -s stop && exit 0
as_pg $PG/pg_ctl -D "$D" -m immediate -w -t 10 -s stop
exit 0
`,
  );
  chmodSync(start, 0o755);
  chmodSync(stop, 0o755);
  return { start, stop };
}

/** A live (not zombie) process: its executable and command line; undefined when gone. */
function proc(pid: number): { exe: string; cmd: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    if (state === "Z" || state === "X") return undefined;
    return { exe: readlinkSync(`/proc/${pid}/exe`), cmd: readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim() };
  } catch {
    return undefined;
  }
}

/** The processes of the primary role on `host`: PostgreSQL's (postmaster and children) and the replication helper. */
function roleProcesses(host: LabHost): Map<number, string> {
  const out = new Map<number, string>();
  for (const pid of pidsInNamespaces([host.ns])) {
    const p = proc(pid);
    if (p && (p.exe === `${PG_BIN}/postgres` || p.exe.endsWith("/holdfast-replicator"))) out.set(pid, p.cmd);
  }
  return out;
}

/** Polls /proc every 2 ms until none of `pids` is alive; the ms from `t0` (performance.now()) or undefined at `boundMs`. */
async function goneAfter(pids: readonly number[], t0: number, boundMs: number): Promise<number | undefined> {
  for (;;) {
    const now = performance.now();
    if (pids.every((pid) => proc(pid) === undefined)) return now - t0;
    if (now - t0 > boundMs) return undefined;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** The hook guards (src/runtime/containment.ts) among the children of `pid`. */
function guardsOf(pid: number): number[] {
  return pidsInNamespaces(lab.nodes.map((h) => h.ns)).filter((x) => {
    try {
      const stat = readFileSync(`/proc/${x}/stat`, "utf8");
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid && readFileSync(`/proc/${x}/cmdline`, "utf8").split("\0").includes(GUARD_NAME);
    } catch {
      return false;
    }
  });
}

const c = (id: string): ClusterNode => cluster.node(id);
const peerOf = (id: string) => (id === "n0" ? "n1" : "n0");

/** The module's event log records of `node` (the daemon's logDir): their event parts. */
function moduleLog(node: string): { type?: string; cause?: string; state?: string; ts?: string }[] {
  const p = join(work, node, "log", "db.jsonl");
  if (!existsSync(p)) return [];
  return readFileSync(p, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      const r = JSON.parse(l) as { ts?: string; event?: { type?: string; cause?: string } };
      return { ...(r.event ?? {}), ...(r.ts !== undefined ? { ts: r.ts } : {}) };
    });
}

interface KillResult {
  /** ms from the SIGKILL to the last process of the old primary role gone. */
  goneMs: number;
  /** ms from the SIGKILL to the peer ALONE (settled). */
  takeoverMs: number;
  /** ms from the SIGKILL to the restarted node SECOND (settled, in sync). */
  secondMs: number;
  killed: string[];
}

/**
 * SIGKILL of `prim`'s daemon process alone; checks the role's processes are gone within {@link GONE_MS}, the peer
 * takes over, and the restarted daemon becomes SECOND only after both (its own trace: no state before its leftovers
 * were cleaned, and the module log names any leftover it killed before its first state).
 */
async function killDaemon(prim: string): Promise<KillResult> {
  const p = c(prim);
  const sec = c(peerOf(prim));
  const role = roleProcesses(p.host);
  const names = [...role.values()];
  expect(names.filter((n) => n.includes("holdfast-replicator")).length, `helper on ${prim}: ${names.join("; ")}`).toBe(1);
  expect(names.filter((n) => /postgres/.test(n) && !n.includes("holdfast-replicator")).length, `postmaster and children on ${prim}: ${names.join("; ")}`).toBeGreaterThanOrEqual(5);
  const daemon = p.proc as LabProcess;
  const markSec = sec.mark();
  const logBefore = moduleLog(prim).length;
  const t0 = performance.now();
  const wall0 = Date.now();
  process.kill(daemon.pid, "SIGKILL"); // the daemon's main process only
  const goneMs = await goneAfter([...role.keys()], t0, 10_000);
  const goneWall = Date.now();
  const left = [...role.keys()].filter((pid) => proc(pid) !== undefined).map((pid) => `${pid} ${role.get(pid)}`);
  await daemon.exited;
  const alone = await sec.waitFor(settled("ALONE"), 30_000, markSec, `${sec.id} ALONE after ${prim}'s daemon died`);
  const takeoverMs = alone.t - wall0;
  console.info(`${prim}: daemon SIGKILLed; old primary role (${role.size} processes) gone after ${goneMs === undefined ? "NOT within 10 s" : `${goneMs.toFixed(0)} ms`}; ${sec.id} ALONE after ${takeoverMs.toFixed(0)} ms`);
  expect(left, `still alive 10 s after the daemon's death`).toEqual([]);
  expect(goneMs, `old primary role gone within ${GONE_MS} ms of the daemon's death`).toBeLessThanOrEqual(GONE_MS);

  // The restart: the node comes back as SECOND, after its leftovers are gone and after the peer took over.
  const from = await cluster.restart(p);
  const second = await p.waitFor(settled("SECOND"), 60_000, from, `${prim} SECOND after its restart`);
  expect(second.t, "SECOND after the peer took over").toBeGreaterThan(alone.t);
  expect(second.t, "SECOND after the old role's processes were gone").toBeGreaterThan(goneWall);
  const run2 = moduleLog(prim).slice(logBefore);
  const firstState = run2.findIndex((r) => r.type === "state");
  const killing = run2.findIndex((r) => /left by a previous run: killing/.test(r.cause ?? ""));
  if (killing >= 0) {
    const cleaned = run2.findIndex((r) => /left by a previous run: leftover hook processes gone/.test(r.cause ?? ""));
    expect(cleaned, JSON.stringify(run2.slice(0, 6))).toBeGreaterThan(killing);
    expect(firstState === -1 || firstState > cleaned, "no state before the leftovers were gone").toBe(true);
  }
  // None of the old processes is back (pids are not reused this fast), and nothing answers on the node's own address.
  expect([...role.keys()].filter((pid) => proc(pid) !== undefined)).toEqual([]);
  const direct = await lab.exec(client, [`${PG_BIN}/psql`, conninfo(lab.addr(p.host), PG_PORT), "-At", "-c", "SELECT 1"], { timeoutMs: 10_000 });
  expect(direct.code, `PostgreSQL answers on ${prim}'s own address while it is SECOND: ${direct.stdout}`).not.toBe(0);
  await sec.waitFor(settled("PRIM"), 60_000, markSec, `${sec.id} PRIM again`);
  return { goneMs: goneMs as number, takeoverMs, secondMs: second.t - wall0, killed: names };
}

describe.skipIf(!canRun)("daemon killed alone on a mirror primary running PostgreSQL: nothing it started serves again", () => {
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2, clients: 1, networks: 1 });
    work = mkdtempSync(join(tmpdir(), "holdfast-pgorphan-"));
    chmodSync(work, 0o755);
    try {
      const [n0, n1] = lab.nodes as [LabHost, LabHost];
      client = lab.clients[0] as LabHost;
      vip = lab.spareAddr(0);
      conn = conninfo(vip, PG_PORT);
      const key = join(work, "repl.key");
      writeFileSync(key, randomBytes(32), { mode: 0o600 });
      const arbiter = `${lab.addr(client)}:${ARBITER_PORT}`;
      witness = lab.spawn(client, [process.execPath, "--import", "tsx", join(REPO, "examples/witness.ts"), "--listen", arbiter, "--key", key, "--max-ttl-ms", "2000"], { cwd: REPO });
      await witness.waitForLine(/"type":"ready"/, 30_000);
      cluster = await MembershipCluster.start(lab, {
        daemon: (h) => {
          const dir = join(work, h.name);
          const backing = join(dir, "data");
          const hooks = writePgHooks(h.name, backing);
          return {
            modules: [
              {
                name: "db",
                kind: "mirror",
                vips: [`${vip}/24`],
                mirror: { defaultPrimary: n0.name, peerWait: 3000 },
                hooks: { start_prim: hooks.start, stop_prim: hooks.stop },
                hookTimeout: 90_000,
                checkers: [{ type: "split-brain", name: "witness", arbiter, keyFile: key, node: h.name, lease: "mirror-db" }],
              },
            ],
            replication: {
              db: {
                mode: "sync",
                directories: [{ path: join(dir, "mnt"), backing }],
                keyFile: key,
                iface: "eth0",
                nodes: { [n0.name]: { address: lab.addr(n0), port: REPL_PORT }, [n1.name]: { address: lab.addr(n1), port: REPL_PORT } },
                ackTimeoutMs: 1000,
                statsIntervalMs: 500,
              },
            },
            stateDir: join(dir, "state"),
            logDir: join(dir, "log"),
          };
        },
      });
      await c("n0").waitFor(settled("PRIM"), 120_000, 0, "n0 PRIM (initdb, postgres started)");
      await c("n1").waitFor(settled("SECOND"), 60_000, 0, "n1 SECOND in sync");
      await sql("CREATE TABLE idle (id int PRIMARY KEY)");
      await sql("INSERT INTO idle SELECT generate_series(1, 1000)");
      await sql("CREATE TABLE commits (client int NOT NULL, n int NOT NULL, PRIMARY KEY (client, n))");
      await sql("CREATE TABLE swap (v int PRIMARY KEY)");
    } catch (e) {
      await cluster?.stop().catch(() => undefined);
      witness?.kill("SIGKILL");
      await lab.destroy();
      throw e;
    }
  }, 180_000);

  afterAll(async () => {
    if (cluster) {
      for (const n of cluster.nodes) writeFileSync(join(tmpdir(), `holdfast-pgorphan-${n.id}.jsonl`), n.lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
      // An orderly stop first (PostgreSQL stopped by stop_prim, helpers and anything over the mount points removed),
      // bounded; then whatever is left is killed.
      const running = cluster.nodes.filter((n) => n.proc);
      for (const n of running) n.proc?.kill("SIGTERM");
      await Promise.all(running.map((n) => Promise.race([n.proc?.exited, new Promise((r) => setTimeout(r, 20_000))])));
      await cluster.stop().catch(() => undefined);
    }
    witness?.kill("SIGKILL");
    // Whatever PostgreSQL a failed run left lives in the nodes' namespaces: destroy kills it.
    await lab?.destroy();
    if (work) {
      // Mounts a killed daemon left under the work directory (deepest first), so that it can be removed.
      const mounts = readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .map((l) => l.split(" ")[4] ?? "")
        .filter((m) => m.startsWith(`${work}/`))
        .sort((x, y) => y.length - x.length);
      for (const m of mounts) spawnSync("umount", ["-l", m]);
      rmSync(work, { recursive: true, force: true });
    }
  });

  let pmOfN1 = "";

  it("(a) idle: the postmaster, its children and the helper are gone within 1 s; n1 serves every committed row; n0 SECOND after", async () => {
    const r = await killDaemon("n0");
    console.info(`(a) idle: ${JSON.stringify({ goneMs: Math.round(r.goneMs), takeoverMs: Math.round(r.takeoverMs), secondMs: Math.round(r.secondMs), processes: r.killed.length })}`);
    expect(await sql("SELECT count(*) FROM idle")).toBe("1000");
  }, 150_000);

  it("(b) busy: the same under pgbench through the VIP, no acknowledged commit lost", async () => {
    pmOfN1 = await sql("SELECT pg_postmaster_start_time()");
    const script = join(work, "insert.sql");
    writeFileSync(script, "\\set n :n + 1\nINSERT INTO commits(client, n) VALUES (:client_id, :n);\n");
    const bench = new Pgbench(lab, client, ["-n", "-c", "4", "-j", "2", "-T", "30", "-P", "1", "-f", script, "-D", "n=0", "-l", "--log-prefix=pgb"], conn, work);
    await bench.runningFor(2, 30_000);
    const r = await killDaemon("n1");
    const done = await Promise.race([bench.proc.exited, new Promise<null>((res) => setTimeout(() => res(null), 40_000))]);
    expect(done, "pgbench ended").not.toBeNull();
    const logged = loggedTransactions(work, "pgb");
    expect(logged.length, "commits before the kill").toBeGreaterThan(100);
    const present = new Set((await sql("SELECT client || '|' || n FROM commits")).split("\n"));
    const lost = logged.filter((t) => !present.has(`${t.client}|${t.txno}`));
    console.info(`(b) busy: ${JSON.stringify({ goneMs: Math.round(r.goneMs), takeoverMs: Math.round(r.takeoverMs), secondMs: Math.round(r.secondMs), commits: logged.length, rows: present.size, lost: lost.length })}`);
    expect(lost, "acknowledged commits missing on the new primary").toEqual([]);
  }, 150_000);

  it("(c) swap back to the restarted node: no stale read, no answer from a postmaster of a previous run", async () => {
    const pmOfN0 = await sql("SELECT pg_postmaster_start_time()");
    const t0 = Date.now();
    const acks: { v: number; t: number }[] = [];
    const reads: { start: number; count: number; max: number; pm: string; pmEpoch: number; end: number }[] = [];
    let stop = false;
    let failedWrites = 0;
    let failedReads = 0;
    const writer = (async () => {
      for (let v = 1; v <= 5000 && !stop && Date.now() - t0 < 60_000; v++) {
        const ok = await sql(`INSERT INTO swap VALUES (${v})`, 5000).then(() => true, () => false);
        if (ok) acks.push({ v, t: Date.now() });
        else {
          failedWrites++;
          v--; // the same value again: a row is acknowledged once
          await new Promise((res) => setTimeout(res, 20));
        }
      }
    })();
    const reader = (async () => {
      for (let i = 0; i < 5000 && !stop && Date.now() - t0 < 60_000; i++) {
        const start = Date.now();
        const out = await sql("SELECT count(*), coalesce(max(v), 0), pg_postmaster_start_time(), extract(epoch from pg_postmaster_start_time()) FROM swap", 5000).catch(() => undefined);
        if (out === undefined) {
          failedReads++;
          await new Promise((res) => setTimeout(res, 20));
          continue;
        }
        const [count, max, pm, pmEpoch] = out.split("|");
        reads.push({ start, count: Number(count), max: Number(max), pm: pm as string, pmEpoch: Number(pmEpoch) * 1000, end: Date.now() });
      }
    })();
    try {
      while (acks.length < 20 && Date.now() - t0 < 20_000) await new Promise((res) => setTimeout(res, 20));
      expect(acks.length, "writes through the VIP before the swap").toBeGreaterThanOrEqual(20);
      const m0 = c("n0").mark();
      const m1 = c("n1").mark();
      const tSwap = Date.now();
      await cluster.command(c("n0"), "db", "swap");
      await c("n1").waitFor(settled("PRIM"), 60_000, m1, "n1 PRIM after the swap");
      await c("n0").waitFor(settled("SECOND"), 60_000, m0, "n0 SECOND after the swap");
      const tDone = Date.now();
      // Reads and writes go on against the new primary for a while.
      const goal = acks.length + 20;
      while (acks.length < goal && Date.now() - tDone < 20_000) await new Promise((res) => setTimeout(res, 20));
      stop = true;
      await Promise.all([writer, reader]);
      const pmNew = await sql("SELECT pg_postmaster_start_time()");
      const stale = reads.filter((r) => {
        const before = acks.filter((a) => a.t < r.start);
        const need = before.length === 0 ? 0 : Math.max(...before.map((a) => a.v));
        return r.count < before.length || r.max < need;
      });
      const servers = [...new Set(reads.map((r) => r.pm))];
      const foreign = reads.filter((r) => r.pm !== pmOfN0 && r.pm !== pmNew);
      const afterSwap = reads.filter((r) => r.pm === pmNew);
      console.info(
        `(c) swap: ${JSON.stringify({ swapMs: tDone - tSwap, acks: acks.length, reads: reads.length, failedReads, failedWrites, stale: stale.length, servers, readsFromNew: afterSwap.length })}`,
      );
      expect(stale, "reads that returned fewer rows than were acknowledged before they started").toEqual([]);
      expect(foreign, "answers from a postmaster other than the primary's before and after the swap").toEqual([]);
      expect(pmNew).not.toBe(pmOfN1); // n1's postmaster of before its daemon was killed is not the one answering
      expect(afterSwap.length, "reads served by n1's new postmaster").toBeGreaterThan(0);
      expect(Math.min(...afterSwap.map((r) => r.pmEpoch))).toBeGreaterThanOrEqual(tSwap - 5); // started by the swap
      expect(Number(await sql("SELECT count(*) FROM swap"))).toBeGreaterThanOrEqual(acks.length);
    } finally {
      stop = true;
      await Promise.all([writer, reader]);
    }
  }, 150_000);

  it("(d) the guard killed with the daemon: the idle orphan stays until the restart, which kills it before the node reports anything", async () => {
    const p = c("n1");
    const sec = c("n0");
    const role = roleProcesses(p.host);
    const postgres = [...role.entries()].filter(([, cmd]) => !cmd.includes("holdfast-replicator")).map(([pid]) => pid);
    expect(postgres.length).toBeGreaterThanOrEqual(5);
    const daemonPid = (p.proc as LabProcess).pid;
    const markSec = sec.mark();
    const logBefore = moduleLog("n1").length;
    // Frozen first, so that it cannot start its guard again in between; then the guard, then the daemon.
    process.kill(daemonPid, "SIGSTOP");
    const guards = guardsOf(daemonPid);
    expect(guards.length, "the daemon's hook guard").toBe(1);
    for (const g of guards) process.kill(g, "SIGKILL");
    process.kill(daemonPid, "SIGKILL");
    await (p.proc as LabProcess).exited;
    await sec.waitFor(settled("ALONE"), 30_000, markSec, "n0 ALONE");
    // The problem the restart solves: PostgreSQL of the dead daemon's run is still there.
    expect(postgres.filter((pid) => proc(pid) !== undefined), "the orphan postmaster and children").toEqual(postgres);
    const t0 = performance.now();
    const gone = goneAfter(postgres, t0, 30_000);
    const from = await cluster.restart(p);
    const goneMs = await gone;
    const second = await p.waitFor(settled("SECOND"), 60_000, from, "n1 SECOND after its restart");
    const wall0 = performance.timeOrigin + t0;
    /** ms from the restart to the first record of this run's module log whose cause matches `re` (NaN: none). */
    const at = (re: RegExp): number => {
      const r = moduleLog("n1").slice(logBefore).find((x) => re.test(x.cause ?? ""));
      return r?.ts === undefined ? NaN : Date.parse(r.ts) - wall0;
    };
    const opened = at(/contained in/);
    console.info(
      `(d) guard lost: orphan postgres (${postgres.length} processes) gone ${goneMs?.toFixed(0)} ms after the daemon was started again ` +
        `(its log: unit opened at ${opened.toFixed(0)} ms, killing at ${at(/: killing/).toFixed(0)} ms); SECOND after ${(second.t - wall0).toFixed(0)} ms`,
    );
    // From the host's start (its unit opened, after Node loaded the daemon: 0.45 s on an idle machine, more under
    // load) the bound is the issue's; from the process start only a sanity bound.
    expect(goneMs, "orphan gone after the restart").toBeLessThanOrEqual(5000);
    expect((goneMs as number) - opened, "orphan gone within 1 s of the host's start").toBeLessThanOrEqual(GONE_MS);
    const run2 = moduleLog("n1").slice(logBefore);
    const killing = run2.findIndex((r) => /left by a previous run: killing \d+ leftover hook process/.test(r.cause ?? "") && r.cause?.includes(String(postgres[0])));
    const cleaned = run2.findIndex((r) => /left by a previous run: leftover hook processes gone/.test(r.cause ?? ""));
    const firstState = run2.findIndex((r) => r.type === "state");
    expect(killing, JSON.stringify(run2.slice(0, 6))).toBeGreaterThanOrEqual(0);
    expect(cleaned).toBeGreaterThan(killing);
    expect(firstState === -1 || firstState > cleaned, "no state before the leftovers were gone").toBe(true);
    expect(await sql("SELECT count(*) FROM idle")).toBe("1000");
  }, 150_000);
});
