// bench:peers — data lost at a crash with lsyncd (asynchronous replication): node A (n0) runs the records writer
// (examples/daemon/apps/records-app.mjs: each record fdatasync'd before it is acknowledged) on a local directory
// that lsyncd (default.rsync) copies to an rsync daemon on node B (n1). The client appends records one at a time;
// after a few seconds A dies (SIGKILL of every process in its namespace + link down) and the acknowledged
// records missing from B's copy are counted.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabHost, LabProcess } from "../../src/testing/lab.js";
import { until } from "./peers-failover.js";

export const RECORD_BYTES = 4096;
const APP_PORT = 8081;

export interface Ack {
  acked: number;
  node: string;
  t: number;
}

/** The client writer (bench/helpers/peers-writer.mts) against host:port; `acks` fills as records are acknowledged. */
export function startWriter(lab: Lab, repo: string, client: LabHost, host: string, port: number, from: number): { acks: Ack[]; proc: LabProcess; done: Promise<void> } {
  const proc = lab.spawn(client, [process.execPath, "--import", "tsx", join(repo, "bench/helpers/peers-writer.mts"), JSON.stringify({ host, port, from, count: 1_000_000, maxMs: 60_000 })], { cwd: repo });
  const acks: Ack[] = [];
  const done = (async () => {
    for await (const raw of proc.lines()) {
      const l = JSON.parse(raw) as Partial<Ack>;
      if (l.acked !== undefined) acks.push(l as Ack);
    }
  })();
  return { acks, proc, done };
}

/** Acknowledged records per second, from WARMUP_MS after the first ack (a fresh process warms up) to the last. */
export function rate(acks: readonly Ack[]): number {
  const first = acks[0];
  if (!first) return NaN;
  const steady = acks.filter((a) => a.t >= first.t + WARMUP_MS);
  if (steady.length < 2) return NaN;
  return ((steady.length - 1) * 1000) / ((steady.at(-1) as Ack).t - (steady[0] as Ack).t);
}
const WARMUP_MS = 500;

/**
 * The records writer of the mirror's lab tests and demo (examples/daemon/apps/records-app.mjs: each record
 * fdatasync'd before it is acknowledged), here on a plain local directory of `host`.
 */
function recordsApp(lab: Lab, repo: string, host: LabHost, dir: string): LabProcess {
  return lab.spawn(host, [process.execPath, join(repo, "examples/daemon/apps/records-app.mjs"), String(APP_PORT), String(RECORD_BYTES)], {
    cwd: repo,
    env: { HOLDFAST_MOUNT: dir, HOLDFAST_NODE: host.name },
  });
}

/** The record ids in a records.log (missing file: none). */
export function idsIn(file: string): Set<number> {
  let text = "";
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  return new Set(
    text
      .split("\n")
      .filter((l) => l.length > 0)
      .map((l) => Number(l.split(" ")[0])),
  );
}

export interface LossTrial {
  /** Acknowledged records. */
  acked: number;
  /** Acknowledged records missing on B after the crash. */
  lost: number;
  /** Acknowledged records per second before the crash. */
  rate: number;
  /** How long the writer ran before the crash. */
  runMs: number;
  /** The write rate without replication (see {@link localRate}) measured just before this trial. */
  localRate: number;
}

/**
 * The baseline of the write rates: the same client and records app on a local directory of n0, no replication at
 * all, for `ms`. Measured next to each replicated run (the machine's load varies over a run).
 */
export async function localRate(lab: Lab, repo: string, ms: number, from: number): Promise<number> {
  const a = lab.nodes[0] as LabHost;
  const dir = join(lab.dir(a), "local");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const app = recordsApp(lab, repo, a, dir);
  try {
    await app.waitForLine(/^records-app on/, 20_000);
    const w = startWriter(lab, repo, lab.clients[0] as LabHost, lab.addr(a), APP_PORT, from);
    await until(() => w.acks.length > 0 && Date.now() - (w.acks[0] as Ack).t >= ms, ms + 20_000, "local writer acknowledged for ms");
    w.proc.kill("SIGKILL");
    await w.done;
    return rate(w.acks);
  } finally {
    app.kill("SIGKILL");
    await app.exited;
  }
}

export interface LsyncdVariant {
  name: string;
  /** lsyncd's `delay` (s): events are collected this long before an rsync runs. Debian's lsyncd 2.2: default 15. */
  delay: number;
}

/** Runs `trials` crashes for each variant; the writer runs 3 s, 4 s, ... before the crash (different phases). */
export async function lsyncdTrials(lab: Lab, repo: string, variants: readonly LsyncdVariant[], trials: number, log: (s: string) => void): Promise<Record<string, LossTrial[]>> {
  let baselineId = 900_000_000;
  const [a, b] = lab.nodes as [LabHost, LabHost];
  const client = lab.clients[0] as LabHost;
  const bDir = join(lab.dir(b), "rsyncd");
  rmSync(bDir, { recursive: true, force: true });
  mkdirSync(join(bDir, "recs"), { recursive: true });
  // An idle transfer (the sender died with its link down) ends after `timeout` s; a partial file is never renamed in.
  writeFileSync(
    join(bDir, "rsyncd.conf"),
    `pid file = ${join(bDir, "rsyncd.pid")}\nuse chroot = no\n[recs]\n  path = ${join(bDir, "recs")}\n  read only = false\n  uid = root\n  gid = root\n  timeout = 2\n  reverse lookup = no\n`,
  );
  const rsyncd = lab.spawn(b, ["rsync", "--daemon", "--no-detach", `--config=${join(bDir, "rsyncd.conf")}`, `--address=${lab.addr(b)}`, "--port=873", `--log-file=${join(bDir, "rsyncd.log")}`]);
  const out: Record<string, LossTrial[]> = {};
  let nextId = 1;
  try {
    await until(async () => (await lab.sh(b, "ss -Hltn 'sport = :873' | grep -q .")).code === 0, 10_000, "rsync daemon listening");
    for (const v of variants) {
      out[v.name] = [];
      for (let t = 0; t < trials; t++) {
        const local = await localRate(lab, repo, 2000, (baselineId += 100_000));
        const aDir = join(lab.dir(a), "lsyncd");
        rmSync(aDir, { recursive: true, force: true });
        mkdirSync(join(aDir, "src"), { recursive: true });
        for (const f of ["records.log"]) rmSync(join(bDir, "recs", f), { force: true });
        const cfg = join(aDir, "lsyncd.conf.lua");
        writeFileSync(
          cfg,
          `settings { nodaemon = true, logfile = "${join(aDir, "lsyncd.log")}", statusFile = "${join(aDir, "lsyncd.status")}", insist = true }\n` +
            `sync { default.rsync, source = "${join(aDir, "src")}/", target = "${lab.addr(b)}::recs/", delay = ${v.delay} }\n`,
        );
        const app = recordsApp(lab, repo, a, join(aDir, "src"));
        await app.waitForLine(/^records-app on/, 20_000);
        lab.spawn(a, ["lsyncd", cfg]);
        await until(() => {
          try {
            return /Startup of .* finished/.test(readFileSync(join(aDir, "lsyncd.log"), "utf8"));
          } catch {
            return false;
          }
        }, 20_000, "lsyncd started (initial sync done)");
        const runMs = 3000 + t * 1000;
        const w = startWriter(lab, repo, client, lab.addr(a), APP_PORT, nextId);
        nextId += 1_000_000;
        await until(() => w.acks.length > 0 && Date.now() - (w.acks[0] as Ack).t >= runMs, runMs + 20_000, "writer acknowledged for runMs");
        lab.signalHost(a, "SIGKILL");
        await lab.linkDown(a);
        w.proc.kill("SIGKILL");
        await w.done;
        // B's copy is final once no transfer is left open (the dead sender's one times out after 2 s). A transfer
        // still open later cannot change it either: the sender is dead, and a partial file is never renamed in.
        await until(async () => (await lab.sh(b, "ss -Htn state established 'sport = :873' | grep -q .")).code !== 0, 10_000, "").catch(() => log("  (an rsync transfer on B is still open)"));
        const have = idsIn(join(bDir, "recs", "records.log"));
        const trial: LossTrial = { acked: w.acks.length, lost: w.acks.filter((x) => !have.has(x.acked)).length, rate: rate(w.acks), runMs, localRate: local };
        out[v.name]?.push(trial);
        log(`  lsyncd ${v.name} ${t + 1}/${trials}: ${trial.acked} acked in ${runMs} ms (${trial.rate.toFixed(0)}/s; ${local.toFixed(0)}/s without replication just before), ${trial.lost} missing on ${b.name}`);
        await lab.linkUp(a);
      }
    }
  } finally {
    rsyncd.kill("SIGKILL");
    await rsyncd.exited;
  }
  return out;
}
