/**
 * A replicated mirror module run by two `holdfast daemon`s in network namespaces (`replication: { db: { mode:
 * sync } }`): the record app (examples/daemon/apps/records-app.mjs) started by a script `start_prim` inside the
 * replication mount's namespace, records written through the VIP by a client, the primary node killed (every
 * process in its namespace: daemon, helper, app), every acknowledged record present on the new primary, the old
 * primary's return with a resync seen through the API (`holdfast state --json` and the module details), a swap
 * through the CLI, replication metrics, and a clean SIGTERM shutdown (app stopped, VIP removed, unmounted).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DaemonCluster, RECORDS_WRITER, until, writeRecordAppHooks } from "../../examples/daemon/lab-cluster.js";
import type { ClusterState } from "../../examples/daemon/daemon.js";
import { decodeConfig, type ReplicationSyncEntry } from "../../examples/daemon/config.js";
import { ConfigError } from "../../src/core/errors.js";
import { Lab, type LabHost } from "../../src/testing/lab.js";

const isRoot = process.getuid?.() === 0;
const APP_PORT = 8090;
const RECORD_BYTES = 512;
let lab: Lab;
let cluster: DaemonCluster;
let client: LabHost;
let vip: string;
/** Every id the app acknowledged so far: each must be on every later primary. */
const acked = new Set<number>();
let nextId = 1;


/** GET on a node's API from inside its namespace (curl: fast enough to poll). */
const api = <T>(node: string, path: string): Promise<T> => cluster.get<T>(node, path);

interface Replication {
  role: string;
  state: string;
  percent?: number;
  bytes?: number;
  resyncBytes?: number;
  resync?: { mode: string; active: boolean; percent: number; bytes: number; totalBytes: number; sentBytes?: number };
}
const replicationOf = (s: ClusterState): Replication | undefined => s.nodes.find((n) => n.self)?.modules.db?.details?.replication as Replication | undefined;
const dbOf = (s: ClusterState, node: string) => s.nodes.find((n) => n.id === node)?.modules.db;

async function roles(prim: string, second: string): Promise<ClusterState> {
  return until(`db PRIM on ${prim} and SECOND (ready) on ${second}`, async () => {
    const s = await api<ClusterState>(prim, "/api/v1/state");
    const p = dbOf(s, prim);
    const q = dbOf(s, second);
    return p?.state === "PRIM" && p.ready && !p.transient && q?.state === "SECOND" && q.ready && !q.transient ? s : undefined;
  });
}

/** Runs the record writer in the client namespace; returns its result lines. */
async function write(opts: { count: number; maxMs: number; gapMs?: number; timeoutMs?: number }): Promise<{ id: number; ok: boolean; node?: string; t: number }[]> {
  const from = nextId;
  nextId += opts.count;
  const r = await lab.exec(client, [process.execPath, RECORDS_WRITER, JSON.stringify({ vip, port: APP_PORT, from, timeoutMs: 1000, ...opts })], { timeoutMs: opts.maxMs + 10_000 });
  const lines = r.stdout
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { id: number; ok: boolean; node?: string; t: number; done?: boolean })
    .filter((l) => !l.done);
  for (const l of lines) if (l.ok) acked.add(l.id);
  return lines;
}

/** The ids in records.log as the current primary's app reads them (through the VIP). */
async function recordsViaVip(): Promise<{ node: string; ids: Set<number> }> {
  const r = await lab.exec(client, ["curl", "-sf", "-m", "5", `http://${vip}:${APP_PORT}/records`]);
  if (r.code !== 0) throw new Error(`GET /records: curl exit ${r.code}`);
  const [node, ...ids] = r.stdout.trim().split("\n");
  return { node: node ?? "", ids: new Set(ids.filter((x) => x !== "").map(Number)) };
}

const missing = (have: Set<number>) => [...acked].filter((id) => !have.has(id));
const backing = (node: string) => join(cluster.dir, node, "db.backing");

describe("replication: mode sync in the daemon config (no namespaces needed)", () => {
  const tmp = mkdtempSync(join(tmpdir(), "hf-repl-config-"));
  const key = join(tmp, "cluster.key");
  writeFileSync(key, "a".repeat(44) + "\n", { mode: 0o600 });
  const base = (nodes: number) => ({
    cluster: { id: "c", keyFile: key, nodes: Array.from({ length: nodes }, (_, i) => ({ id: `n${i}`, addresses: [`198.18.0.${10 + i}`] })) },
    node: "n0",
    modules: [{ name: "db", kind: "mirror" }],
  });
  const problems = (input: unknown) => {
    try {
      decodeConfig(input);
      return [];
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      return e.problems.map((p) => `${p.path}: ${p.expected}`);
    }
  };
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("fills the defaults: endpoints from the nodes' first addresses and port 7790, the cluster key", () => {
    const cfg = decodeConfig({ ...base(2), replication: { db: { mode: "sync", directories: [{ path: "/srv/db", backing: "/srv/db.backing" }] } } });
    const e = cfg.replication.db as ReplicationSyncEntry;
    expect(e).toMatchObject({ mode: "sync", keyFile: key, directories: [{ path: "/srv/db", backing: "/srv/db.backing" }] });
    expect(e.nodes).toEqual({ n0: { host: "198.18.0.10", port: 7790 }, n1: { host: "198.18.0.11", port: 7790 } });
    const three = decodeConfig({ ...base(3), replication: { db: { mode: "sync", port: 7000, directories: [{ path: "/a", backing: "/b" }], nodes: { n0: {}, n2: { address: "fd00:4844::2", port: 7001 } } } } });
    expect((three.replication.db as ReplicationSyncEntry).nodes).toEqual({ n0: { host: "198.18.0.10", port: 7000 }, n2: { host: "fd00:4844::2", port: 7001 } });
    expect(decodeConfig({ ...base(2), replication: { db: { mode: "none" } } }).replication.db).toEqual({ mode: "none" });
  });

  it("reports each mistake at its path", () => {
    expect(problems({ ...base(2), replication: { db: { mode: "async" } } })).toEqual(['replication.db.mode: "none" | "sync"']);
    expect(problems({ ...base(3), replication: { db: { mode: "sync", directories: [{ path: "/srv/db", backing: "/srv/db/data" }, { path: "/x", backing: "/y" }], ackTimeoutMs: 0, nodes: { n0: {}, n9: { address: "nope" } } } } })).toEqual([
      "replication.db.directories: exactly one directory (one replicated directory per module for now: put the module's data under it)",
      "replication.db.directories.0.backing: a directory neither inside nor containing path /srv/db",
      "replication.db.nodes.n9: the id of one of cluster.nodes",
      "replication.db.ackTimeoutMs: an integer >= 1",
      "replication.db.nodes.n9.address: an IPv4 or IPv6 address",
    ]);
    expect(problems({ ...base(3), replication: { db: { mode: "sync", directories: [{ path: "/a", backing: "/b" }] } } })).toEqual(["replication.db.nodes: the module's two nodes (the cluster has 3: n0, n1, n2)"]);
    expect(problems({ ...base(2), replication: { db: { mode: "sync", directories: [{ path: "/a", backing: "/b" }], keyFile: join(tmp, "missing.key"), trheads: 4 } } })).toEqual([
      "replication.db.trheads: no such option: known options here are mode, directories, keyFile, port, nodes, ackTimeoutMs, reconnectMs, disconnectGraceMs, failoverFenceMs, threads, statsIntervalMs, mountNamespace, helperPath, options, iface",
    ]);
    expect(problems({ ...base(2), replication: { db: { mode: "sync", directories: [{ path: "/a", backing: "/b" }], keyFile: join(tmp, "missing.key") } } })[0]).toMatch(/^replication\.db\.keyFile: a readable key file/);
    expect(problems({ ...base(3), replication: { db: { mode: "sync", directories: [{ path: "/a", backing: "/b" }], nodes: { n1: {}, n2: {} } } } })).toEqual([
      "replication.db.nodes: to include this node (n0), which runs module db",
    ]);
    expect(problems({ ...base(2), modules: [{ name: "db", kind: "farm" }], replication: { db: { mode: "sync", directories: [{ path: "/a", backing: "/b" }] } } })).toEqual([
      "replication.db: the name of a mirror module of this config",
    ]);
  });
});

describe.skipIf(!isRoot)("holdfast daemons with a replicated mirror module", () => {
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2, clients: 1, networks: 1 });
    client = lab.clients[0] as LabHost;
    vip = lab.spareAddr(0);
    try {
      cluster = await DaemonCluster.start(lab, {
        modules: (dir) => {
          const app = writeRecordAppHooks(dir, APP_PORT, RECORD_BYTES);
          return [
            {
              name: "db",
              kind: "mirror",
              vips: [`${vip}/24`],
              mirror: { defaultPrimary: "n0" },
              hooks: { start_prim: app.start, stop_prim: app.stop, start_second: `${dir}/hooks/start_second.sh`, stop_second: `${dir}/hooks/stop_second.sh` },
            },
          ];
        },
        replication: (node, dir) => ({
          db: { mode: "sync", directories: [{ path: join(dir, node, "db"), backing: join(dir, node, "db.backing") }], ackTimeoutMs: 1000, statsIntervalMs: 250 },
        }),
      });
    } catch (e) {
      await lab.destroy();
      throw e;
    }
  });

  afterAll(async () => {
    await cluster?.stop();
    await lab?.destroy();
  });

  it("starts the app on the primary inside the mount: PRIM n0 in sync, SECOND n1 in sync, the VIP on n0", async () => {
    const s = await roles("n0", "n1");
    expect(replicationOf(s)).toMatchObject({ role: "primary", percent: 100 });
    await until("n0 replication sync", async () => (replicationOf(await api<ClusterState>("n0", "/api/v1/state"))?.state === "sync" ? true : undefined));
    const r1 = replicationOf(await api<ClusterState>("n1", "/api/v1/state"));
    expect(r1).toMatchObject({ role: "secondary", state: "in sync", percent: 100 });
    const w = await write({ count: 1, maxMs: 5_000 });
    expect(w[0]).toMatchObject({ ok: true, node: "n0" });
    // The app runs in the mount's (private) namespace: its file is in the backing directory through the mount,
    // and the mount point seen from outside that namespace stays empty.
    expect(existsSync(join(backing("n0"), "records.log"))).toBe(true);
    expect(existsSync(join(cluster.dir, "n0", "db", "records.log"))).toBe(false);
  });

  it("replicates every acknowledged record to the secondary's disk", async () => {
    const w = await write({ count: 200, maxMs: 20_000 });
    expect(w.filter((l) => l.ok)).toHaveLength(200);
    const onSecondary = new Set(
      readFileSync(join(backing("n1"), "records.log"), "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => Number(l.split(" ")[0])),
    );
    expect(missing(onSecondary)).toEqual([]);
    // A 32 MiB file: the resync after the failover must send what changed, not the whole of it.
    const b = await lab.exec(client, ["curl", "-sf", "-m", "30", "-X", "POST", `http://${vip}:${APP_PORT}/blob?mib=32&at=0`]);
    expect(b.stdout).toMatch(/^ok blob 32 n0/);
    // The counters come with the helper's next stats line.
    const m = await until("bytes replicated counted", async () => {
      const m = await api<string>("n0", "/metrics");
      return Number(/holdfast_replication_bytes_total\{node="n0",module="db"\} (\d+)/.exec(m)?.[1]) > 32 << 20 ? m : undefined;
    });
    expect(m).toMatch(/holdfast_replication_in_sync\{node="n0",module="db"\} 1/);
    expect(m).toMatch(/holdfast_replication_ack_latency_seconds\{node="n0",module="db"\} [0-9.e-]+/);
  });

  it("fails over when n0 dies (every process in its namespace): n1 serves every acknowledged record", async () => {
    const before = acked.size;
    // The writer runs through the kill; the node is killed 1.5 s after it started.
    const writing = write({ count: 100_000, maxMs: 6_000, gapMs: 5, timeoutMs: 300 });
    await new Promise((r) => setTimeout(r, 1500));
    const killedAt = Date.now();
    lab.signalHost(cluster.node("n0").host, "SIGKILL");
    cluster.node("n0").proc = null;
    const lines = await writing;
    expect(acked.size).toBeGreaterThan(before);
    const firstOnN1 = lines.find((l) => l.ok && l.node === "n1" && l.t > killedAt);
    expect(firstOnN1).toBeDefined();
    const outage = (firstOnN1?.t ?? 0) - killedAt;
    console.info(`daemon mirror failover: kill of n0 -> first record acknowledged by n1 after ${Math.round(outage)} ms (detection + mount + app start)`);
    expect(outage).toBeLessThan(5_000);
    const s = await until("n1 ALONE", async () => {
      const s = await api<ClusterState>("n1", "/api/v1/state");
      return dbOf(s, "n1")?.state === "ALONE" && dbOf(s, "n1")?.ready ? s : undefined;
    });
    expect(replicationOf(s)).toMatchObject({ role: "primary", state: "degraded" });
    const r = await recordsViaVip();
    expect(r.node).toBe("n1");
    expect(missing(r.ids)).toEqual([]);
  });

  it("resyncs the returning n0 with only what changed, progress visible through the API and `holdfast state --json`", async () => {
    // Changed while n0 is away: 4 MiB of the 32 MiB file and 100 records.
    const b = await lab.exec(client, ["curl", "-sf", "-m", "30", "-X", "POST", `http://${vip}:${APP_PORT}/blob?mib=4&at=8`]);
    expect(b.stdout).toMatch(/^ok blob 4 n1/);
    expect((await write({ count: 100, maxMs: 20_000 })).filter((l) => l.ok)).toHaveLength(100);
    const modified = (4 << 20) + 100 * RECORD_BYTES;
    // Watch n1's module details while n0 comes back.
    const seen: Replication[] = [];
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const r = await api<{ details?: { replication?: Replication } }>("n1", "/api/v1/state")
          .then((s) => replicationOf(s as unknown as ClusterState))
          .catch(() => undefined);
        if (r) seen.push(r);
        await new Promise((x) => setTimeout(x, 30));
      }
    })();
    await cluster.startNode(cluster.node("n0"));
    const s = await until("n0 SECOND ready, n1 PRIM, resync finished", async () => {
      const s = await api<ClusterState>("n1", "/api/v1/state");
      return dbOf(s, "n1")?.state === "PRIM" && dbOf(s, "n0")?.state === "SECOND" && dbOf(s, "n0")?.ready && replicationOf(s)?.resync?.sentBytes !== undefined ? s : undefined;
    });
    watching = false;
    await watch;
    const rep = replicationOf(s);
    expect(rep?.resync).toMatchObject({ active: false, percent: 100 });
    const sent = rep?.resync?.sentBytes ?? -1;
    console.info(
      `daemon mirror resync: mode ${rep?.resync?.mode}, ${sent} bytes sent for ${modified} bytes modified (${(sent / modified).toFixed(3)}x), ` +
        `${rep?.resync?.totalBytes} bytes examined; samples during the resync: ${seen.filter((x) => x.state === "resyncing").map((x) => `${x.percent}%`).join(" ") || "(none: it was quicker than a poll)"}`,
    );
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThanOrEqual(modified * 1.2);
    // While n0 was away n1 was degraded; the watcher saw it go on to sync.
    expect(seen.some((x) => x.state === "degraded" || x.state === "resyncing")).toBe(true);
    for (const x of seen) if (x.percent !== undefined) expect(x.percent).toBeGreaterThanOrEqual(0);
    // The same through the CLI.
    const cli = await cluster.cli(cluster.node("n1"), ["state", "--json"], { token: cluster.tokens.monitor });
    expect(cli.code).toBe(0);
    const viaCli = replicationOf(JSON.parse(cli.stdout) as ClusterState);
    expect(viaCli).toMatchObject({ role: "primary", state: "sync", percent: 100, resync: { active: false, percent: 100, sentBytes: sent } });
    // n0's copy is the primary's: every record there.
    const onN0 = new Set(
      readFileSync(join(backing("n0"), "records.log"), "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => Number(l.split(" ")[0])),
    );
    expect(missing(onN0)).toEqual([]);
  });

  it("swaps back through the CLI while the client writes: n0 PRIM with every acknowledged record, n1 SECOND", async () => {
    const writing = write({ count: 100_000, maxMs: 6_000, gapMs: 5, timeoutMs: 300 });
    await new Promise((r) => setTimeout(r, 500));
    const r = await cluster.cli(cluster.node("n0"), ["swap", "db"], { token: cluster.tokens.control });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    await roles("n0", "n1");
    const lines = await writing;
    expect(lines.some((l) => l.ok && l.node === "n1")).toBe(true);
    expect(lines.some((l) => l.ok && l.node === "n0")).toBe(true);
    const w = await write({ count: 20, maxMs: 20_000 });
    expect(w.filter((l) => l.ok && l.node === "n0")).toHaveLength(20);
    const recs = await recordsViaVip();
    expect(recs.node).toBe("n0");
    expect(missing(recs.ids)).toEqual([]);
    const m = await api<string>("n0", "/metrics");
    expect(m).toMatch(/holdfast_replication_state\{node="n0",module="db",state="sync"\} 1/);
  });

  it("runs `holdfast resync` on the primary (a checksum pass: nothing differs, nothing sent) and refuses it on the secondary", async () => {
    const refused = await cluster.cli(cluster.node("n1"), ["resync", "db"], { token: cluster.tokens.control });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/not primary/);
    const before = replicationOf(await api<ClusterState>("n0", "/api/v1/state"))?.resync;
    const r = await cluster.cli(cluster.node("n0"), ["resync", "db"], { token: cluster.tokens.control });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const after = await until("a new checksum pass finished", async () => {
      const x = replicationOf(await api<ClusterState>("n0", "/api/v1/state"));
      return x?.state === "sync" && x.resync && x.resync.mode === "checksum" && JSON.stringify(x.resync) !== JSON.stringify(before) && x.resync.sentBytes !== undefined ? x.resync : undefined;
    });
    expect(after.sentBytes).toBe(0);
    expect(after.totalBytes).toBeGreaterThan(32 << 20);
    await roles("n0", "n1");
  });

  it("stops cleanly on SIGTERM: app stopped, VIP removed, unmounted", async () => {
    const pidFile = join(cluster.dir, "n0.records.pid");
    const appPid = Number(readFileSync(pidFile, "utf8").trim());
    const n0 = cluster.node("n0");
    cluster.terminate(n0); // the daemon alone, as systemd's KillMode=mixed
    const x = await n0.proc?.exited;
    expect(x?.code).toBe(0);
    n0.proc = null;
    const alive = (() => {
      try {
        return !/^\S+ \([^)]*\) Z/.test(readFileSync(`/proc/${appPid}/stat`, "utf8"));
      } catch {
        return false;
      }
    })();
    if (alive) console.info(readFileSync(join(cluster.dir, "n0", "logs", "db.log"), "utf8").split("\n").slice(-40).join("\n"));
    expect(alive).toBe(false);
    const addrs = (await lab.exec(n0.host, ["ip", "-j", "addr", "show"])).stdout;
    expect(addrs).not.toContain(`"${vip}"`);
    // No helper of n0 left (its private mount namespace, and so the mount, went with it).
    const helpers = (await lab.exec(n0.host, ["sh", "-c", `ps -eo pid,args | grep -F "${backing("n0")}" | grep -v grep || true`])).stdout.trim();
    expect(helpers).toBe("");
    expect(readFileSync(join(cluster.dir, "n0", "logs", "db.log"), "utf8")).toMatch(/unmounted/);
    // n1 took over (its peer left cleanly) with every record.
    await until("n1 ALONE after n0 left", async () => {
      const s = await api<ClusterState>("n1", "/api/v1/state");
      return dbOf(s, "n1")?.state === "ALONE" && dbOf(s, "n1")?.ready ? true : undefined;
    });
    const recs = await recordsViaVip();
    expect(recs.node).toBe("n1");
    expect(missing(recs.ids)).toEqual([]);
  });

  it("takes n0 back after its clean stop: SECOND and in sync, n1 primary with every record", async () => {
    await write({ count: 20, maxMs: 20_000 });
    await cluster.startNode(cluster.node("n0"));
    await roles("n1", "n0");
    const rep = replicationOf(await api<ClusterState>("n1", "/api/v1/state"));
    expect(rep?.state).toBe("sync");
    const onN0 = new Set(
      readFileSync(join(backing("n0"), "records.log"), "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => Number(l.split(" ")[0])),
    );
    expect(missing(onN0)).toEqual([]);
  });

  it("a stall of the primary's daemon (SIGSTOP of the daemon alone, 1.5 s): n0 takes over, n1 steps down on resume as the SDK's module does, nothing acknowledged lost", async () => {
    await roles("n1", "n0");
    const n1 = cluster.node("n1");
    const pid = n1.proc?.pid as number;
    const logFile = join(cluster.dir, "n1", "logs", "db.log");
    const logBefore = readFileSync(logFile, "utf8").length;
    const writing = write({ count: 100_000, maxMs: 7_000, gapMs: 5, timeoutMs: 300 });
    await new Promise((r) => setTimeout(r, 1000));
    process.kill(pid, "SIGSTOP");
    await until("n0 ALONE while n1's daemon is frozen", async () => {
      const s = await api<ClusterState>("n0", "/api/v1/state");
      return dbOf(s, "n0")?.state === "ALONE" && dbOf(s, "n0")?.ready ? true : undefined;
    }, 10_000, 50).finally(() => process.kill(pid, "SIGCONT"));
    await writing;
    // On resume the membership reports the stall before any heartbeat of the resumed loop is read: the primary
    // leaves the role first (app stopped, VIP removed) and waits for fresh reports, then joins n0 as SECOND.
    const log = await until("n1's stall step-down in its module log", async () => {
      const l = readFileSync(logFile, "utf8").slice(logBefore);
      return /own event loop stalled \d+ ms as primary/.test(l) ? l : undefined;
    }, 10_000);
    expect(log).toMatch(/own event loop stalled \d+ ms as primary: n0 \(an in-sync secondary\) may have taken over/);
    await until("n0 primary and n1 SECOND again", async () => {
      const s = await api<ClusterState>("n0", "/api/v1/state");
      const p = dbOf(s, "n0");
      const q = dbOf(s, "n1");
      return (p?.state === "PRIM" || p?.state === "ALONE") && p.ready && q?.state === "SECOND" && q.ready && !q.transient ? true : undefined;
    }, 60_000);
    const recs = await recordsViaVip();
    expect(recs.node).toBe("n0");
    expect(missing(recs.ids)).toEqual([]);
  });
});
