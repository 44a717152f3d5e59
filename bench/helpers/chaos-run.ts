// The chaos suite's runner: a farm of 3 nodes and a mirror of 2 nodes (witness = its client namespace), each node the
// shipped daemon (dist/cli.js, a config file per node; the apps started by its hooks), each in a lab of its own (own bridge, own per-run
// namespace prefix), real clients, and a fault schedule (chaos-schedule.ts) played on both at once. Invariants
// (chaos-invariants.ts) are checked on what was observed; see bench/chaos.ts for the command line.
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUCKET_COUNT } from "../../src/core/buckets.js";
import { Lab, type LabHost, type LabProcess } from "../../src/testing/lab.js";
import { pidsInNamespaces } from "../../src/testing/lab-cleanup.js";
import { GUARD_NAME } from "../../src/runtime/containment.js";
import { MembershipCluster, REPO, type ClusterNode, type NodeLine } from "../../test/lab/helpers/membership-cluster.js";
import {
  checkPackets,
  checkPreviousRoles,
  checkProbes,
  checkStreams,
  connectionHolders,
  dualPrimary,
  farmConverged,
  idsOf,
  lostWrites,
  mirrorConverged,
  parseTcpdump,
  type BucketTable,
  type FaultWindow,
  type MirrorStatus,
  type PacketRecord,
  type PreviousRoleProcess,
  type ProbeRecord,
  type RoleSample,
  type StreamRecord,
  type Violation,
} from "./chaos-invariants.js";
import { describeFault, FARM_NODES, type FarmFault, type MirrorFault, type Schedule } from "./chaos-schedule.js";
import { daemonApi } from "./mirror-control.js";
import { mirrorDaemonConfig } from "./mirror-daemon.js";
import { writeHttpAppHooks } from "../../examples/daemon/lab-cluster.js";

export interface ChaosOptions {
  schedule: Schedule;
  /** Faults are injected for this long (ms); then everything is healed and convergence is checked. */
  runMs: number;
  /** Where the schedule, the nodes' lines and the observations are written. */
  outDir: string;
  /** Bound on each convergence wait (before each fault and at the end), ms. Default 60 000. */
  convergeMs?: number;
  /** Grace after a fault is healed during which the farm may still fail requests of that node (ms). Default 1 500. */
  graceMs?: number;
  /** Role sampling period of the mirror (ms). Default 25. */
  sampleMs?: number;
  log?: (line: string) => void;
  /**
   * A deliberate bug, to show that the suite catches it: "no-witness" starts the mirror nodes without their witness
   * (no split-brain checker), so a cut-off primary stays primary while its peer takes over; "no-hook-guard" kills
   * the hook guards with the daemon in killDaemon faults, so what the hooks started outlives it until its restart.
   */
  inject?: "no-witness" | "no-hook-guard";
  /**
   * How the mirror nodes' split-brain checker uses the witness (the client namespace): "arbiter" (default) runs
   * examples/witness.ts there and the nodes hold its lease (--arbiter), so two nodes cut from each other that both
   * reach the witness never both go ALONE; "ping" only pings it (the suite's first findings: dual primaries under
   * one-way drops and partitions between the nodes). Also HOLDFAST_CHAOS_WITNESS=ping|arbiter.
   */
  witness?: "arbiter" | "ping";
}

export interface ChaosResult {
  seed: number;
  /** Faults injected (each one an inject -> hold -> heal -> converge episode). */
  schedules: number;
  faults: { farm: number; mirror: number; byKind: Record<string, number> };
  violations: Violation[];
  /** Violations counted by invariant and by the kind of the fault under way (or last injected) on that system. */
  violationsByFault: Record<string, number>;
  lostWrites: number;
  dualPrimaryMs: number;
  ackedWrites: number;
  farmRequests: { sent: number; ok: number; failed: number; excused: number };
  farmStreams: { total: number; complete: number };
  packets: { synAcks: number; resets: number };
  roleSamples: number;
  lostWriteChecks: number;
  finalConvergenceMs: { farm: number; mirror: number };
  ms: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const REPL_PORT = 7790;
/** UDP port of the witness arbiter (examples/witness.ts) in the mirror lab's client namespace. */
const ARBITER_PORT = 7799;
const CLIENT_ADDRS = 40;
/**
 * A short request's bound: 2.5 s lets TCP retransmit a lost SYN once (Linux's initial RTO is 1 s). A SYN that
 * lands in the instant a bucket changes hands may be dropped (never reset); the connection is still answered, once,
 * on the retransmission. A request not answered by then failed.
 */
const PROBE_TIMEOUT_MS = 2_500;
/** After a split's views have merged (every node prints the merged table), SYN-ACKs already sent under the old
 *  tables may still arrive at the client for this long. */
const MERGE_MARGIN_MS = 250;

/** A node's status of module db from its daemon's API (unix socket), or undefined when it does not answer in time. */
async function mirrorStatus(sock: string, token: string, timeoutMs = 300): Promise<MirrorStatus & { next?: string } | undefined> {
  const j = (await daemonApi(sock, token, "GET", "/api/v1/modules/db", timeoutMs)) as { state?: string; ready?: boolean; transient?: boolean; next?: string; upToDate?: boolean } | undefined;
  if (!j?.state) return undefined;
  return { state: j.state, ready: j.ready, transient: j.transient, next: j.next, upToDate: j.upToDate === true };
}

/** "primary" when PRIM/ALONE and not leaving the role (a node going to WAIT/SECOND has closed its app first). */
function roleOf(s: (MirrorStatus & { next?: string }) | undefined): string | undefined {
  if (!s) return undefined;
  const prim = (x: string | undefined) => x === "PRIM" || x === "ALONE";
  return prim(s.state) && !(s.transient && !prim(s.next)) ? "primary" : s.state;
}

/** Follows a spawned process's JSON lines into `sink` until it ends. */
function follow<T>(proc: LabProcess, sink: (x: T) => void): Promise<void> {
  return (async () => {
    for await (const raw of proc.lines()) {
      try {
        sink(JSON.parse(raw) as T);
      } catch {
        // not a JSON line
      }
    }
  })();
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const convergeMs = o.convergeMs ?? 60_000;
  const graceMs = o.graceMs ?? 1_500;
  const sampleMs = o.sampleMs ?? 25;
  const t0 = Date.now();
  const rel = (t: number) => `+${((t - t0) / 1000).toFixed(1)}s`;
  mkdirSync(o.outDir, { recursive: true });
  writeFileSync(join(o.outDir, "schedule.json"), JSON.stringify(o.schedule, null, 1) + "\n");

  const violations: Violation[] = [];
  const violate = (invariant: string, detail: string, at = Date.now()) => {
    violations.push({ invariant, at, detail });
    log(`VIOLATION ${invariant} ${rel(at)}: ${detail}`);
  };
  const farmWindows: FaultWindow[] = [];
  const mirrorWindows: FaultWindow[] = [];
  const byKind: Record<string, number> = {};
  let farmDone = 0;
  let mirrorDone = 0;

  let farmLab: Lab | undefined;
  let mirrorLab: Lab | undefined;
  let farmCluster: MembershipCluster | undefined;
  let mirrorCluster: MembershipCluster | undefined;
  const keyDir = mkdtempSync(join(tmpdir(), "holdfast-chaos-key-"));
  const cleanupTmp = () => {
    for (const d of [keyDir, farmCluster?.dir, mirrorCluster?.dir]) if (d) rmSync(d, { recursive: true, force: true });
  };
  process.once("exit", cleanupTmp);
  // Interrupted (Ctrl-C, SIGTERM): the key files go here; the labs' own handlers kill every process in their
  // namespaces and delete the namespaces (src/testing/lab-cleanup.ts); then the process ends.
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: tearing the labs down`);
    cleanupTmp();
    process.nextTick(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const probes: ProbeRecord[] = [];
  const streams: StreamRecord[] = [];
  const packets: PacketRecord[] = [];
  const acked: number[] = [];
  /** Who acknowledged each record, and when: what a lost write is traced back to. */
  const ackedBy = new Map<number, { node: string; t: number; app?: string; at?: number }>();
  /** What the daemons killed alone (killDaemon) had started: none of it may answer after the grace. */
  const previousRoles: PreviousRoleProcess[] = [];
  const samples: RoleSample[] = [];
  const lost = new Set<number>();
  let lostChecks = 0;
  const finalConvergence = { farm: -1, mirror: -1 };
  let stopTimers = () => {};

  try {
    // ---- the farm: 3 nodes + a client with CLIENT_ADDRS source addresses ------------------------------------------
    farmLab = await Lab.create({ nodes: 3, clients: 1, networks: 1 });
    const fl = farmLab;
    const farmClient = fl.clients[0] as LabHost;
    const farmVip = fl.spareAddr(0);
    const addrs = Array.from({ length: CLIENT_ADDRS }, (_, i) => fl.spareAddr(40 + i));
    const ar = await fl.sh(farmClient, addrs.map((a) => `ip addr add ${a}/24 dev eth0`).join(" && "));
    if (ar.code !== 0) throw new Error(`client addresses: ${ar.stderr}`);
    const fc = await MembershipCluster.start(fl, {
      daemon: (h) => {
        const app = writeHttpAppHooks(fl.dir(h), 80);
        return {
          modules: [{ name: "web", kind: "farm", vips: [`${farmVip}/32`], hooks: { start_both: app.start, stop_both: app.stop } }],
          farm: { web: { iface: "eth0", rules: [{ protocol: "tcp", port: 80, by: "address+port" }] } },
          stateDir: join(fl.dir(h), "state"),
          logDir: join(fl.dir(h), "log"),
        };
      },
    });
    farmCluster = fc;
    const macToNode = new Map(fl.nodes.map((h) => [fl.mac(h), h.name]));
    log(`farm lab ${fl.prefix}: nodes ${fl.nodes.map((h) => h.name).join(",")}, VIP ${farmVip}`);

    // ---- the mirror: 2 nodes + the witness/writer client -----------------------------------------------------
    mirrorLab = await Lab.create({ nodes: 2, clients: 1, networks: 1 });
    const ml = mirrorLab;
    const [m0, m1] = ml.nodes as [LabHost, LabHost];
    const mirrorClient = ml.clients[0] as LabHost;
    const mirrorVip = ml.spareAddr(0);
    const key = join(keyDir, "repl.key");
    writeFileSync(key, randomBytes(32), { mode: 0o600 });
    const witnessMode = o.witness ?? (process.env.HOLDFAST_CHAOS_WITNESS === "ping" ? "ping" : "arbiter");
    const arbiterAt = `${ml.addr(mirrorClient)}:${ARBITER_PORT}`;
    let arbiterProc: LabProcess | undefined;
    if (o.inject !== "no-witness" && witnessMode === "arbiter") {
      // Max ttl 3 s (the nodes ask for 1 s, ARBITER_DEFAULTS): a (re)started witness grants nothing for that long.
      arbiterProc = ml.spawn(mirrorClient, [process.execPath, "--import", "tsx", join(REPO, "examples/witness.ts"), "--listen", arbiterAt, "--key", key, "--max-ttl-ms", "3000"], { cwd: REPO });
      await arbiterProc.waitForLine(/"type":"ready"/, 30_000);
      void follow<{ type: string }>(arbiterProc, (x) => {
        if (x.type === "grant" || x.type === "release" || x.type === "drop") log(`  arbiter: ${JSON.stringify(x)}`);
      });
    }
    const mc = await MembershipCluster.start(ml, {
      daemon: mirrorDaemonConfig({
        lab: ml,
        vip: mirrorVip,
        key,
        replPort: REPL_PORT,
        appPort: 80,
        recordBytes: 256,
        ...(o.inject === "no-witness" ? {} : arbiterProc !== undefined ? { arbiter: arbiterAt } : { witness: ml.addr(mirrorClient) }),
      }),
    });
    mirrorCluster = mc;
    const socks = [m0, m1].map((h) => mc.apiSocket(mc.node(h.name)));
    const dataFile = (i: number) => join(ml.dir(ml.nodes[i] as LabHost), "data", "records.log");
    log(`mirror lab ${ml.prefix}: nodes ${m0.name},${m1.name}, VIP ${mirrorVip}, witness ${o.inject === "no-witness" ? "NONE (injected bug: no split-brain protection)" : arbiterProc !== undefined ? `arbiter ${arbiterAt}` : `ping ${ml.addr(mirrorClient)}`}`);

    // ---- convergence ------------------------------------------------------------------------------------------
    const farmTables = () => new Map<string, BucketTable | undefined>(fc.nodes.map((n) => [n.id, [...n.lines].reverse().find((l) => l.type === "buckets") as BucketTable | undefined]));
    const farmWhyNot = () => farmConverged(farmTables(), FARM_NODES, BUCKET_COUNT);
    const mirrorStatuses = () => Promise.all(socks.map((s) => mirrorStatus(s, mc.token)));
    const pollUntil = async (why: () => Promise<string | null> | string | null, ms: number): Promise<{ ok: boolean; ms: number; why: string | null }> => {
      const start = Date.now();
      for (;;) {
        const w = await why();
        if (w === null) return { ok: true, ms: Date.now() - start, why: null };
        if (Date.now() - start > ms) return { ok: false, ms: Date.now() - start, why: w };
        await sleep(50);
      }
    };
    const mirrorWhyNot = async () => mirrorConverged(await mirrorStatuses());
    const [fConv, mConv] = await Promise.all([pollUntil(farmWhyNot, 30_000), pollUntil(mirrorWhyNot, 60_000)]);
    if (!fConv.ok || !mConv.ok) throw new Error(`the labs did not come up: farm ${fConv.why ?? "ok"}; mirror ${mConv.why ?? "ok"}`);
    log(`both systems up and converged (${rel(Date.now())})`);

    // ---- observers: farm client + packet capture, mirror writer + role sampler ------------------------------
    const maxMs = o.runMs + 4 * convergeMs;
    const capture = fl.spawn(farmClient, ["tcpdump", "-i", "eth0", "-e", "-tt", "-n", "-l", "-Q", "in", `src host ${farmVip} and tcp[tcpflags] & (tcp-syn|tcp-rst) != 0`]);
    const captureDone = (async () => {
      for await (const line of capture.lines()) {
        const p = parseTcpdump(line, macToNode);
        if (p) packets.push(p);
      }
    })();
    await sleep(500); // tcpdump attaches without telling; its first packets would otherwise be missed
    const farmClientProc = fl.spawn(
      farmClient,
      [process.execPath, "--import", "tsx", join(REPO, "bench/helpers/chaos-farm-client.mts"), JSON.stringify({ vip: farmVip, port: 80, addresses: addrs, everyMs: 20, timeoutMs: PROBE_TIMEOUT_MS, streams: 6, streamMs: 3000, maxMs })],
      { cwd: REPO },
    );
    const farmClientDone = follow<{ type: string } & ProbeRecord & StreamRecord>(farmClientProc, (x) => {
      if (x.type === "probe") probes.push({ t: x.t, end: x.end, ok: x.ok, node: x.node, err: x.err, addr: x.addr, port: x.port, app: x.app, at: x.at });
      else if (x.type === "stream") streams.push({ node: x.node, addr: x.addr, port: x.port, start: x.start, end: x.end, complete: x.complete, err: x.err, app: x.app, at: x.at });
    });
    const writer = ml.spawn(mirrorClient, [process.execPath, "--import", "tsx", join(REPO, "bench/helpers/chaos-writer.mts"), JSON.stringify({ vip: mirrorVip, port: 80, pauseMs: 5, timeoutMs: 2000, maxMs })], { cwd: REPO });
    let writerFailed = 0;
    const writerErrorsFrom: { t: number; app: string; what: string }[] = [];
    const writerDone = follow<{ acked?: number; failed?: number; node?: string; app?: string; at?: number; err?: string; t: number }>(writer, (x) => {
      if (x.acked !== undefined) {
        acked.push(x.acked);
        ackedBy.set(x.acked, { node: x.node ?? "?", t: x.t, ...(x.app !== undefined ? { app: x.app } : {}), ...(x.at !== undefined ? { at: x.at } : {}) });
      } else if (x.failed !== undefined) {
        writerFailed++;
        if (x.app !== undefined) writerErrorsFrom.push({ t: x.at ?? x.t, app: x.app, what: `mirror append ${x.failed} refused (${x.err})` });
      }
    });

    // Lost writes: every id acknowledged so far must be in the current primary's copy. Serialised.
    let checks: Promise<void> = Promise.resolve();
    const checkLost = (why: string): Promise<void> => {
      const run = async () => {
        const ackedNow = [...acked];
        const st = await mirrorStatuses();
        const idx = st.findIndex((s) => roleOf(s) === "primary");
        if (idx < 0 || st.filter((s) => roleOf(s) === "primary").length !== 1) return;
        const file = dataFile(idx);
        const text = existsSync(file) ? readFileSync(file, "utf8") : "";
        const ids = idsOf(text);
        lostChecks++;
        const missing = lostWrites(ackedNow, ids).filter((id) => !lost.has(id));
        if (missing.length > 0) {
          for (const id of missing) lost.add(id);
          const active = mirrorWindows.filter((w) => w.to >= Date.now() - 10_000).map((w) => w.label);
          const by = missing.slice(0, 10).map((id) => `${id} (acked by ${ackedBy.get(id)?.node} at ${rel(ackedBy.get(id)?.t ?? 0)})`);
          violate("mirror-lost-write", `${missing.length} acknowledged record(s) missing on primary ${ml.nodes[idx]?.name} (${why}; recent faults: ${active.join("; ") || "none"}): ${by.join(", ")}`);
          // The evidence, as found: the copy the check read and the other node's, and both nodes' module logs.
          const at = join(o.outDir, `lost-${Date.now() - t0}`);
          mkdirSync(at, { recursive: true });
          writeFileSync(join(at, `records-${ml.nodes[idx]?.name}.log`), text);
          for (const [i, h] of ml.nodes.entries()) {
            const other = dataFile(i);
            if (i !== idx && existsSync(other)) writeFileSync(join(at, `records-${h.name}.log`), readFileSync(other));
            const logs = join(ml.dir(h), "log");
            if (existsSync(logs)) cpSync(logs, join(at, `log-${h.name}`), { recursive: true });
          }
          log(`  evidence of the lost write in ${at}`);
        }
      };
      checks = checks.then(run, run);
      return checks;
    };

    // Role sampling on a fixed cadence: a sample (both nodes asked at once) starts every `sampleMs` whether or not
    // the previous one has answered (a frozen node answers only after its timeout), at most 16 in flight.
    let lastPrimary = -1;
    let inFlight = 0;
    const pendingSamples = new Set<Promise<void>>();
    const takeSample = () => {
      if (inFlight >= 16) return;
      inFlight++;
      const t = Date.now();
      const p = mirrorStatuses()
        .catch(() => [undefined, undefined])
        .then((st) => {
          const roles = st.map(roleOf);
          samples.push({ t, states: roles });
          const prims = roles.map((r, i) => (r === "primary" ? i : -1)).filter((i) => i >= 0);
          if (prims.length === 1 && prims[0] !== lastPrimary) {
            if (lastPrimary >= 0) void checkLost(`failover to ${ml.nodes[prims[0] as number]?.name}`);
            lastPrimary = prims[0] as number;
          }
        })
        .finally(() => {
          inFlight--;
          pendingSamples.delete(p);
        });
      pendingSamples.add(p);
    };
    const samplerTimer = setInterval(takeSample, sampleMs);
    stopTimers = () => clearInterval(samplerTimer);
    const stopSampler = async () => {
      clearInterval(samplerTimer);
      await Promise.all([...pendingSamples]);
      samples.sort((a, b) => a.t - b.t);
    };

    // ---- the tracks --------------------------------------------------------------------------------------------
    const deadline = Date.now() + o.runMs; // the run time counts from when both systems are up
    const farmTrack = async () => {
      for (const [i, f] of o.schedule.farm.entries()) {
        if (Date.now() >= deadline) break;
        const c = await pollUntil(farmWhyNot, convergeMs);
        if (!c.ok) {
          violate("farm-convergence", `not converged ${convergeMs} ms after the previous fault: ${c.why}`);
          return;
        }
        await sleep(f.gapMs);
        if (Date.now() >= deadline) break;
        const label = describeFault(f, i);
        log(`${rel(Date.now())} ${label}`);
        const w: FaultWindow = { node: f.node, from: Date.now(), to: Number.POSITIVE_INFINITY, label, split: f.kind === "partition" || f.kind === "oneWay" || f.kind === "linkDown" };
        farmWindows.push(w);
        await farmFault(fl, fc, f, log, (p) => previousRoles.push(...p.map((x) => ({ ...x, label }))), o.inject === "no-hook-guard");
        const healed = Date.now();
        w.to = healed + graceMs;
        if (w.split) {
          // Until the views merge again both sides of a split serve every bucket (FaultWindow.split): the window
          // lasts until every node applies the merged table, and at least graceMs after the heal. How long the
          // merge took is logged: a slow merge shows here instead of as a violation.
          const merged = await pollUntil(farmWhyNot, convergeMs);
          w.to = Math.max(healed + graceMs, Date.now() + MERGE_MARGIN_MS);
          log(`${rel(Date.now())}   ${merged.ok ? `views merged ${Date.now() - healed} ms after the heal` : `views not merged ${merged.ms} ms after the heal: ${merged.why}`}`);
        }
        farmDone++;
        byKind[`farm.${f.kind}`] = (byKind[`farm.${f.kind}`] ?? 0) + 1;
      }
    };
    const mirrorTrack = async () => {
      for (const [i, f] of o.schedule.mirror.entries()) {
        if (Date.now() >= deadline) break;
        const c = await pollUntil(mirrorWhyNot, convergeMs);
        if (!c.ok) {
          violate("mirror-convergence", `not converged ${convergeMs} ms after the previous fault: ${c.why}`);
          return;
        }
        await checkLost("converged");
        await sleep(f.gapMs);
        if (Date.now() >= deadline) break;
        const st = await mirrorStatuses();
        const pIdx = st.findIndex((s) => s?.state === "PRIM");
        if (pIdx < 0) continue; // changed during the gap: the next round waits for convergence again
        const idx = f.role === "primary" ? pIdx : 1 - pIdx;
        const node = mc.nodes[idx] as ClusterNode;
        const label = `${describeFault(f, i)} = ${node.id}`;
        log(`${rel(Date.now())} ${label}`);
        const w: FaultWindow = { node: node.id, from: Date.now(), to: Number.POSITIVE_INFINITY, label };
        mirrorWindows.push(w);
        const peer = mc.nodes[1 - idx] as ClusterNode;
        await mirrorFault(ml, mc, f, node, peer, mirrorClient, mirrorVip, log, (p) => previousRoles.push(...p.map((x) => ({ ...x, label }))), o.inject === "no-hook-guard");
        w.to = Date.now() + graceMs;
        mirrorDone++;
        byKind[`mirror.${f.kind}`] = (byKind[`mirror.${f.kind}`] ?? 0) + 1;
      }
    };
    await Promise.all([farmTrack(), mirrorTrack()]);

    // ---- heal everything, then convergence -------------------------------------------------------------------
    log(`${rel(Date.now())} faults stopped (${farmDone} farm, ${mirrorDone} mirror); checking convergence`);
    await fl.heal();
    await ml.heal();
    const [fEnd, mEnd] = await Promise.all([pollUntil(farmWhyNot, convergeMs), pollUntil(mirrorWhyNot, convergeMs)]);
    finalConvergence.farm = fEnd.ms;
    finalConvergence.mirror = mEnd.ms;
    if (!fEnd.ok) violate("farm-convergence", `not converged ${convergeMs} ms after the faults stopped: ${fEnd.why}`);
    if (!mEnd.ok) violate("mirror-convergence", `not converged ${convergeMs} ms after the faults stopped: ${mEnd.why}`);
    if (fEnd.ok) log(`farm converged ${fEnd.ms} ms after the faults stopped: every node up, 4096 buckets, one owner each`);
    if (mEnd.ok) log(`mirror converged ${mEnd.ms} ms after the faults stopped: PRIM + SECOND in sync`);

    // ---- stop the observers, final checks ---------------------------------------------------------------------
    await sleep(1_000);
    farmClientProc.kill("SIGTERM");
    writer.kill("SIGTERM");
    await Promise.race([Promise.all([farmClientDone, writerDone]), sleep(15_000)]);
    await stopSampler();
    await checkLost("end of run");
    await checks;
    if (mEnd.ok) {
      // Both copies identical at the end (the secondary is in sync): the records files agree.
      await sleep(300);
      const a = existsSync(dataFile(0)) ? readFileSync(dataFile(0), "utf8") : "";
      const b = existsSync(dataFile(1)) ? readFileSync(dataFile(1), "utf8") : "";
      if (a !== b) violate("mirror-copies-differ", `records.log differs between ${m0.name} (${a.length} bytes) and ${m1.name} (${b.length} bytes) after convergence`);
    }
    capture.kill("SIGTERM");
    await Promise.race([captureDone, sleep(3_000)]);

    const windows = [...farmWindows];
    // Every answer that names its process: the writer's acknowledgements and refusals, the farm's requests and streams.
    const answers = [
      ...writerErrorsFrom,
      ...[...ackedBy].flatMap(([id, a]) => (a.app ? [{ t: a.at ?? a.t, app: a.app, what: `mirror append ${id} acknowledged by ${a.node}` }] : [])),
      ...probes.flatMap((p) => (p.ok && p.app ? [{ t: p.at ?? p.end ?? p.t, app: p.app, what: `farm request answered by ${p.node}` }] : [])),
      ...streams.flatMap((x) => (x.app ? [{ t: x.at ?? x.end, app: x.app, what: `farm stream served by ${x.node} (${x.complete ? "complete" : "broken"}), last written then` }] : [])),
    ];
    if (previousRoles.length > 0) log(`previous-role check: ${previousRoles.length} process(es) left by daemons killed alone, ${answers.length} answers`);
    for (const v of [...checkProbes(probes, windows, FARM_NODES), ...checkStreams(streams, windows), ...checkPackets(packets, windows, 2_000, connectionHolders(probes, streams)), ...checkPreviousRoles(answers, previousRoles)]) {
      violations.push(v);
      log(`VIOLATION ${v.invariant} ${rel(v.at)}: ${v.detail}`);
    }
    const dp = dualPrimary(samples, 4 * sampleMs);
    for (const e of dp.episodes) {
      const during = mirrorWindows.filter((w) => w.from <= e.to && w.to >= e.from).map((w) => w.label);
      violate("mirror-dual-primary", `both nodes primary for ${e.to - e.from} ms (${e.samples} samples) during: ${during.join("; ") || "no fault"}`, e.from);
    }
    const failedProbes = probes.filter((p) => !p.ok);
    const excused = failedProbes.filter((p) => windows.some((w) => p.t >= w.from && p.t <= w.to)).length;
    log(`writer: ${acked.length} acknowledged, ${writerFailed} failed attempts; ${lostChecks} lost-write checks`);

    const violationsByFault: Record<string, number> = {};
    for (const v of violations) {
      const ws = v.invariant.startsWith("farm") ? farmWindows : mirrorWindows;
      const last = ws.filter((w) => w.from <= v.at).at(-1);
      const kind = last ? (/#\d+ (\S+)/.exec(last.label)?.[1] ?? "?") : "no fault yet";
      const key = `${v.invariant} after ${kind}`;
      violationsByFault[key] = (violationsByFault[key] ?? 0) + 1;
    }
    const result: ChaosResult = {
      seed: o.schedule.seed,
      schedules: farmDone + mirrorDone,
      faults: { farm: farmDone, mirror: mirrorDone, byKind },
      violations,
      violationsByFault,
      lostWrites: lost.size,
      dualPrimaryMs: dp.ms,
      ackedWrites: acked.length,
      farmRequests: { sent: probes.length, ok: probes.length - failedProbes.length, failed: failedProbes.length, excused },
      farmStreams: { total: streams.length, complete: streams.filter((s) => s.complete).length },
      packets: { synAcks: packets.filter((p) => p.kind === "SA").length, resets: packets.filter((p) => p.kind === "R").length },
      roleSamples: samples.length,
      lostWriteChecks: lostChecks,
      finalConvergenceMs: finalConvergence,
      ms: Date.now() - t0,
    };
    writeFileSync(join(o.outDir, "result.json"), JSON.stringify(result, null, 1) + "\n");
    return result;
  } finally {
    stopTimers();
    // Post-mortem material, then everything torn down (the labs' exit handlers cover a crash of this process).
    try {
      writeFileSync(join(o.outDir, "faults.json"), JSON.stringify({ farm: farmWindows, mirror: mirrorWindows }, null, 1) + "\n");
      writeFileSync(join(o.outDir, "writer.jsonl"), [...ackedBy].map(([id, a]) => JSON.stringify({ id, ...a })).join("\n") + "\n");
      writeFileSync(join(o.outDir, "samples.jsonl"), samples.map((s) => JSON.stringify(s)).join("\n") + "\n");
      writeFileSync(join(o.outDir, "probes.jsonl"), [...probes, ...streams, ...packets].map((s) => JSON.stringify(s)).join("\n") + "\n");
      for (const [name, c] of [["farm", farmCluster], ["mirror", mirrorCluster]] as const) {
        for (const n of c?.nodes ?? []) writeFileSync(join(o.outDir, `${name}-${n.id}.jsonl`), n.lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
      }
    } catch {
      // best effort
    }
    await farmCluster?.stop().catch(() => undefined);
    await mirrorCluster?.stop().catch(() => undefined);
    await farmLab?.destroy();
    await mirrorLab?.destroy();
    cleanupTmp();
    process.removeListener("exit", cleanupTmp);
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

// ---- fault injection --------------------------------------------------------------------------------------

/** The demo applications a node's hooks started (web-app.mjs, records-app.mjs), with their start times. */
function appProcesses(host: LabHost): { pid: number; start: number }[] {
  const btime = Number(/^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1] ?? 0) * 1000;
  const out: { pid: number; start: number }[] = [];
  for (const pid of pidsInNamespaces([host.ns])) {
    try {
      if (!/-app\.mjs\0/.test(readFileSync(`/proc/${pid}/cmdline`, "latin1"))) continue;
      const ticks = Number(readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[19]);
      out.push({ pid, start: btime + ticks * 10 }); // USER_HZ is 100 on Linux
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

type PreviousRoles = (p: Omit<PreviousRoleProcess, "label">[]) => void;

/** The faults a farm node and a mirror node share: kill (then restart), the daemon alone killed, stop/cont, link down/up. */
async function nodeFault(
  lab: Lab,
  cluster: MembershipCluster,
  node: ClusterNode,
  kind: "kill" | "killDaemon" | "stop" | "linkDown",
  holdMs: number,
  previous: PreviousRoles,
  noHookGuard = false,
): Promise<void> {
  const h = node.host;
  if (kind === "kill") {
    lab.signalHost(h, "SIGKILL");
    await sleep(holdMs);
    await cluster.restart(node);
    return;
  }
  if (kind === "killDaemon") {
    // The daemon process alone: its helper and the application its hooks started live on unless holdfast ends them.
    const apps = appProcesses(h);
    const daemon = node.proc?.pid;
    if (noHookGuard && daemon !== undefined) {
      // The injected bug: the hook guards go first (the daemon frozen, so that it cannot start them again), and
      // what the hooks started outlives the daemon until its restart cleans it up.
      process.kill(daemon, "SIGSTOP");
      for (const pid of pidsInNamespaces([h.ns])) {
        try {
          if (readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").includes(GUARD_NAME)) process.kill(pid, "SIGKILL");
        } catch {
          /* gone meanwhile */
        }
      }
    }
    const from = Date.now();
    if (daemon !== undefined) process.kill(daemon, "SIGKILL"); // the process only, not its group
    previous(apps.map((a) => ({ node: node.id, pid: a.pid, start: a.start, from })));
    await sleep(holdMs);
    await cluster.restart(node);
    return;
  }
  if (kind === "stop") lab.signalHost(h, "SIGSTOP");
  else await lab.linkDown(h);
  try {
    await sleep(holdMs);
  } finally {
    if (kind === "stop") lab.signalHost(h, "SIGCONT");
    else await lab.linkUp(h);
  }
}

async function farmFault(lab: Lab, cluster: MembershipCluster, f: FarmFault, log: (s: string) => void, previous: PreviousRoles, noHookGuard: boolean): Promise<void> {
  const node = cluster.node(f.node);
  const h = node.host;
  const peers = lab.nodes.filter((x) => x.ns !== h.ns);
  switch (f.kind) {
    case "kill":
    case "killDaemon":
    case "stop":
    case "linkDown":
      return nodeFault(lab, cluster, node, f.kind, f.holdMs, previous, noHookGuard);
    case "oneWay":
    case "partition":
      for (const p of peers) {
        if (f.kind === "partition") await lab.drop(h, p);
        else if (f.direction === "in") await lab.drop(p, h, { oneWay: true });
        else await lab.drop(h, p, { oneWay: true });
      }
      try {
        await sleep(f.holdMs);
      } finally {
        await lab.heal();
      }
      return;
    default:
      log(`farm fault ${f.kind} not known: skipped`);
  }
}

async function mirrorFault(
  lab: Lab,
  cluster: MembershipCluster,
  f: MirrorFault,
  node: ClusterNode,
  peer: ClusterNode,
  client: LabHost,
  vip: string,
  log: (s: string) => void,
  previous: PreviousRoles,
  noHookGuard: boolean,
): Promise<void> {
  const h = node.host;
  switch (f.kind) {
    case "kill":
    case "killDaemon":
    case "stop":
    case "linkDown":
      return nodeFault(lab, cluster, node, f.kind, f.holdMs, previous, noHookGuard);
    case "oneWay":
      if (f.direction === "in") await lab.drop(peer.host, h, { oneWay: true });
      else await lab.drop(h, peer.host, { oneWay: true });
      try {
        await sleep(f.holdMs);
      } finally {
        await lab.heal();
      }
      return;
    case "partition":
      // Cut off from its peer and from the witness (the client): the other side of the split-brain rule.
      await lab.drop(h, peer.host);
      await lab.drop(h, client);
      try {
        await sleep(f.holdMs);
      } finally {
        await lab.heal();
      }
      return;
    case "restartDuringResync": {
      // The secondary dies; the primary goes on alone and writes `mib` MiB; the secondary returns and is killed
      // again once its resync has started; after the hold it returns for good.
      const from = peer.mark();
      lab.signalHost(h, "SIGKILL");
      await peer.waitFor((l: NodeLine) => l.type === "state" && l.state === "ALONE" && l.transient === false, 15_000, from, "primary ALONE").catch((e: Error) => log(`  ${e.message.split("\n")[0]}`));
      const r = await lab.exec(client, ["curl", "-sS", "-m", "60", "-X", "POST", `http://${vip}/blob?mib=${f.mib ?? 64}`], { timeoutMs: 70_000 });
      if (!r.stdout.startsWith("ok blob")) log(`  bulk write: ${r.stdout.trim()} ${r.stderr.trim()}`);
      const r0 = peer.mark();
      await cluster.restart(node);
      const started = await peer.waitFor((l) => l.type === "resyncStart", 30_000, r0, "resync start").then(
        () => true,
        () => false,
      );
      lab.signalHost(h, "SIGKILL");
      const mid = !peer.lines.slice(r0).some((l) => l.type === "synced");
      log(`  killed ${node.id} ${started && mid ? "during its resync" : started ? "after its resync (it was quick)" : "(no resync seen)"}`);
      await sleep(f.holdMs);
      await cluster.restart(node);
      return;
    }
  }
}
