// The README's first command (`npm run demo`): a 3-node holdfast cluster in network namespaces on this
// machine. One node is killed; the others report it with the time it took; it comes back and rejoins.
// Everything is cleaned up at the end, also on failure or Ctrl-C. Needs root (namespaces).
import { Lab } from "holdfast/testing";
import { LAN } from "holdfast";
import { MembershipCluster } from "../test/lab/helpers/membership-cluster.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DaemonCluster, RECORDS_WRITER, REPO, writeHttpAppHooks, writeRecordAppHooks, type DaemonNodeRun } from "./daemon/lab-cluster.js";
import type { ClusterState } from "./daemon/daemon.js";

const now = () => performance.timeOrigin + performance.now();
const say = (s: string) => console.log(s);
const fmt = (n: number) => (n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(2)} MiB`);
const DB_PORT = 8090;
const RECORD_BYTES = 512;
/** The replication part of the mirror's details (the mirror kind, src/mirror/kind.ts). */
interface Replication {
  state: string;
  resync?: { mode: string; active: boolean; percent: number; totalBytes: number; sentBytes?: number; durationMs?: number };
}
/** Where the failover's time went, from the new primary's event log (`<ts> <node> <module> <text>` lines). */
function failoverSteps(logFile: string, from: number): string | undefined {
  const steps: [number, string][] = [];
  try {
    const events = readFileSync(join(logFile, "..", "membership.jsonl"), "utf8")
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { ts: string; type: string; agreed?: boolean; members?: string[] })
      .filter((e) => (e.type === "nodeDown" || e.type === "viewChange") && Date.parse(e.ts) >= from);
    for (const e of events.slice(0, 3)) steps.push([Date.parse(e.ts) - from, e.type === "nodeDown" ? "node lost" : `view [${e.members?.join(", ")}]${e.agreed ? " agreed" : ""}`]);
  } catch {
    // no membership log: the module's steps alone
  }
  let text = "";
  try {
    text = readFileSync(logFile, "utf8");
  } catch {
    // no module log
  }
  const marks: [RegExp, string][] = [
    [/transient -> ALONE\]/, "failover decided"],
    [/vip: .* added/, "VIP added"],
    [/primary: mounted/, "mounted"],
    [/hook start_prim ok/, "app started"],
  ];
  const lines = text.split("\n").map((l) => ({ t: Date.parse(l.slice(0, l.indexOf(" "))), l })).filter((x) => x.t >= from);
  for (const [re, what] of marks) {
    const hit = lines.find((x) => re.test(x.l));
    if (hit) steps.push([hit.t - from, what]);
  }
  steps.sort((a, b) => a[0] - b[0]);
  return steps.length ? steps.map(([t, what]) => `${what} +${t} ms`).join(", ") : undefined;
}

/** One line per part, printed at the end. */
const summary: string[] = [];

if (process.getuid?.() !== 0) {
  console.error("demo: needs root (it creates network namespaces). Run: sudo npm run demo");
  process.exit(1);
}

const started = now();
say("holdfast demo: 3 nodes, 2 heartbeat networks, in network namespaces on this machine\n");
const lab = await Lab.create({ nodes: 3, clients: 1, networks: 2 });
let cluster: MembershipCluster | undefined;
let daemons: DaemonCluster | undefined;
let ok = false;
try {
  say(`  lab ${lab.prefix}: nodes ${lab.nodes.map((n) => `${n.name}=${lab.addr(n, 0)},${lab.addr(n, 1)}`).join("  ")}`);
  cluster = await MembershipCluster.start(lab, { networks: 2 });
  const ids = cluster.nodes.map((n) => n.id);
  const t0 = now();
  await cluster.waitView(cluster.nodes, ids, 30_000);
  say(`  cluster formed: every node agrees on [${ids.join(", ")}] (${Math.round(now() - t0)} ms after start)`);
  say(`  preset LAN: heartbeat every ${LAN.pulseMs} ms on each network, a node is lost after ${LAN.lossTimeoutMs} ms of silence on all networks\n`);

  const victim = cluster.node("n2");
  const survivors = cluster.nodes.filter((n) => n !== victim);
  const marks = cluster.marks();
  say(`  >> kill -9 ${victim.id} (pid ${victim.proc?.pid})`);
  const k = now();
  victim.proc?.kill("SIGKILL");
  const downs = await Promise.all(survivors.map((n) => n.waitFor((l) => l.type === "nodeDown" && l.node === victim.id, 10_000, marks.get(n))));
  downs.forEach((d, i) => say(`     ${survivors[i]?.id} reports ${victim.id} lost after ${Math.round(d.t - k)} ms: ${d.reason}`));
  summary.push(`membership: a killed node reported lost after ${downs.map((d) => Math.round(d.t - k)).join(" / ")} ms by the survivors`);
  await cluster.waitView(survivors, survivors.map((n) => n.id), 10_000, marks);
  say(`     survivors agree on [${survivors.map((n) => n.id).join(", ")}]\n`);

  say(`  >> restart ${victim.id}`);
  const after = cluster.marks();
  const r = now();
  await cluster.restart(victim);
  await cluster.waitView(cluster.nodes, ids, 30_000, after);
  say(`     ${victim.id} rejoined: every node agrees on [${ids.join(", ")}] again (${Math.round(now() - r)} ms including process start)\n`);

  // Part 2: the reference daemon with modules whose hooks are shell scripts, driven through the CLI.
  await cluster.stop();
  cluster = undefined;
  const vip = lab.spareAddr(0);
  const client = lab.clients[0]!;
  const dbVip = lab.spareAddr(1);
  say(`  >> 3 holdfast daemons: farm module web (HTTP app, VIP ${vip} on every node, in-kernel filter),`);
  say(`     mirror module db on n0 + n1 (VIP ${dbVip}; a record app whose directory is replicated synchronously)`);
  daemons = await DaemonCluster.start(lab, {
    modules: (dir, node) => [
      { name: "web", kind: "farm", vips: [`${vip}/32`], hooks: (({ start, stop }) => ({ start_both: start, stop_both: stop }))(writeHttpAppHooks(dir)) },
      ...(node === "n2"
        ? []
        : [{ name: "db", kind: "mirror", vips: [`${dbVip}/24`], mirror: { defaultPrimary: "n0" }, hooks: (({ start, stop }) => ({ start_prim: start, stop_prim: stop }))(writeRecordAppHooks(dir, DB_PORT, RECORD_BYTES)) }]),
    ],
    replication: (node, dir) =>
      node === "n2"
        ? undefined
        : { db: { mode: "sync", directories: [{ path: join(dir, node, "db"), backing: join(dir, node, "db.backing") }], nodes: { n0: {}, n1: {} }, ackTimeoutMs: 1000, statsIntervalMs: 250 } },
    extra: { farm: { web: { iface: "eth0", rules: [{ protocol: "tcp", port: 8080, by: "address+port" }] } } },
  });
  // The client: a burst of requests to the VIP, each on a new connection, answered by whichever node owns it.
  const burst = async (n: number) => {
    const r = await lab.sh(client, `for i in $(seq 1 ${n}); do curl -s -m 0.5 http://${vip}:8080/ || echo FAIL; done`);
    const counts: Record<string, number> = {};
    for (const l of r.stdout.trim().split("\n")) counts[l] = (counts[l] ?? 0) + 1;
    return counts;
  };
  for (const end = now() + 30_000; ; await new Promise((r) => setTimeout(r, 200))) {
    const c = await burst(30);
    if (!c.FAIL && Object.keys(c).length === 3) break;
    if (now() > end) throw new Error(`the farm does not serve on all nodes: ${JSON.stringify(c)}`);
  }
  say(`     client -> ${vip}:8080, 60 requests: ${JSON.stringify(await burst(60))}`);
  say(`  >> n2's network cables pulled (link down on both networks), while the client opens a connection every 20 ms`);
  // The client probes with a new connection every 20 ms (250 ms timeout) from 60 source addresses.
  const addrs = Array.from({ length: 60 }, (_, i) => lab.spareAddr(40 + i));
  await lab.sh(client, addrs.map((a) => `ip addr add ${a}/24 dev eth0`).join(" && "));
  const probe = lab.spawn(client, [process.execPath, "--import", "tsx", join(REPO, "test/lab/helpers/http-probe.mts"), JSON.stringify({ vip, port: 8080, addresses: addrs, streams: 0, streamMs: 0, probeEveryMs: 20, probeTimeoutMs: 250, durationMs: 3000 })], { cwd: REPO });
  const probes: { type: string; t?: number; ok?: boolean }[] = [];
  const probed = (async () => {
    for await (const raw of probe.lines()) probes.push(JSON.parse(raw) as (typeof probes)[number]);
  })();
  await new Promise((r) => setTimeout(r, 300)); // let the probes start before the cut (they are the measurement)
  const cut = Date.now();
  await lab.linkDown(lab.nodes[2]!, 0);
  await lab.linkDown(lab.nodes[2]!, 1);
  await probed;
  const failed = probes.filter((x) => x.type === "probe" && !x.ok && (x.t as number) >= cut).map((x) => x.t as number);
  const servedAfter = failed.length ? Math.max(...failed) + 250 - cut : 0;
  say(`     ${failed.length} of ${probes.filter((x) => x.type === "probe" && (x.t as number) >= cut).length} new connections failed; every one served by the survivors again ${servedAfter} ms after the cut: ${JSON.stringify(await burst(30))}`);
  summary.push(`farm: a node's cables pulled -> its share served by the survivors again ${servedAfter} ms after the cut`);
  await lab.linkUp(lab.nodes[2]!, 0);
  await lab.linkUp(lab.nodes[2]!, 1);
  const back = now();
  for (const end = now() + 20_000; now() < end; await new Promise((r) => setTimeout(r, 100))) {
    const c = await burst(30);
    if (!c.FAIL && c.n2) break;
  }
  say(`  >> cables back: n2 serves its share again after ${Math.round(now() - back)} ms: ${JSON.stringify(await burst(60))}\n`);
  const d = daemons;
  const [d0, d1] = [d.node("n0"), d.node("n1")];
  const apiGet = async (node: DaemonNodeRun, path: string): Promise<ClusterState> => {
    const r = await lab.exec(node.host, ["curl", "-sf", "-m", "3", "-H", `Authorization: Bearer ${d.tokens.monitor}`, `${node.url}${path}`]);
    if (r.code !== 0) throw new Error(`GET ${path} on ${node.id}: curl exit ${r.code}`);
    return JSON.parse(r.stdout) as ClusterState;
  };
  const replication = (s: ClusterState) => s.nodes.find((n) => n.self)?.modules.db?.details?.replication as Replication | undefined;
  const db = async (want: Record<string, string>, via = d0, extra: (s: ClusterState) => boolean = () => true) => {
    for (const end = now() + 30_000; now() < end; await new Promise((r) => setTimeout(r, 100))) {
      const s = await apiGet(via, "/api/v1/state").catch(() => undefined);
      if (s && Object.entries(want).every(([n, st]) => s.nodes.find((x) => x.id === n)?.modules.db?.state === st && s.nodes.find((x) => x.id === n)?.modules.db?.ready) && extra(s)) return s;
    }
    throw new Error(`db did not reach ${JSON.stringify(want)}`);
  };
  // The record app's client: appends through the VIP, one record at a time; an acknowledged record is on both disks.
  const acked = new Set<number>();
  let nextId = 1;
  const write = async (o: { count: number; maxMs: number; gapMs?: number; timeoutMs?: number }) => {
    const from = nextId;
    nextId += o.count;
    const r = await lab.exec(client, [process.execPath, RECORDS_WRITER, JSON.stringify({ vip: dbVip, port: DB_PORT, from, timeoutMs: 1000, ...o })], { timeoutMs: o.maxMs + 10_000 });
    const lines = r.stdout.trim().split("\n").filter((l) => l.startsWith('{"id"')).map((l) => JSON.parse(l) as { id: number; ok: boolean; node?: string; t: number });
    for (const l of lines) if (l.ok) acked.add(l.id);
    return lines;
  };
  const records = async () => {
    const r = await lab.exec(client, ["curl", "-sf", "-m", "5", `http://${dbVip}:${DB_PORT}/records`]);
    const [node, ...ids] = r.stdout.trim().split("\n");
    const have = new Set(ids.filter((x) => x !== "").map(Number));
    return { node, missing: [...acked].filter((id) => !have.has(id)).length };
  };
  const post = async (path: string) => (await lab.exec(client, ["curl", "-sf", "-m", "60", "-X", "POST", `http://${dbVip}:${DB_PORT}${path}`])).stdout.trim();

  await db({ n0: "PRIM", n1: "SECOND" }, d0, (s) => replication(s)?.state === "sync");
  say((await d.cli(d0, ["state"], { token: d.tokens.monitor })).stdout.trimEnd().replace(/^/gm, "     "));
  say(`  >> client -> ${dbVip}:${DB_PORT}: a 32 MiB file and 300 records (each fdatasync'd, acknowledged only once on both disks)`);
  await post("/blob?mib=32&at=0");
  await write({ count: 300, maxMs: 30_000 });
  say(`     ${acked.size} records acknowledged by n0; n1's copy is in sync`);

  say(`  >> n0 crashes (kill -9 of every process of the node: daemon, replication helper, app) while the client keeps writing`);
  const writing = write({ count: 100_000, maxMs: 6_000, gapMs: 5, timeoutMs: 300 });
  await new Promise((r) => setTimeout(r, 1500));
  const killedAt = Date.now();
  lab.signalHost(d0.host, "SIGKILL");
  d0.proc = null;
  const lines = await writing;
  const firstOnN1 = lines.find((l) => l.ok && l.node === "n1" && l.t > killedAt);
  if (!firstOnN1) throw new Error("n1 never acknowledged a record after the crash");
  const failoverMs = Math.round(firstOnN1.t - killedAt);
  const lostWrites = lines.filter((l) => !l.ok && l.t > killedAt).length;
  const afterCrash = await records();
  say(`     n1 took over (ALONE): first record acknowledged by n1 ${failoverMs} ms after the crash (detection + VIP + mount + app start);`);
  const steps = failoverSteps(join(d.dir, "n1", "logs", "db.log"), killedAt);
  if (steps) say(`     n1's log, from the crash: ${steps}`);
  say(`     ${lostWrites} requests failed meanwhile (not acknowledged); n1 serves ${acked.size - afterCrash.missing} of ${acked.size} acknowledged records (missing: ${afterCrash.missing})`);
  if (afterCrash.node !== "n1" || afterCrash.missing !== 0) throw new Error(`acknowledged records missing on n1: ${afterCrash.missing}`);

  say(`  >> while n0 is away: 4 MiB of the 32 MiB file rewritten, 200 more records`);
  const byN1Before = lines.filter((l) => l.ok && l.node === "n1").length;
  await post("/blob?mib=4&at=8");
  const more = await write({ count: 200, maxMs: 30_000 });
  const modified = (4 << 20) + (byN1Before + more.filter((l) => l.ok).length) * RECORD_BYTES;
  say(`  >> n0 restarts: it becomes SECOND and n1 resyncs it while the app keeps running`);
  const progress: string[] = [];
  let watching = true;
  const watch = (async () => {
    while (watching) {
      const r = await apiGet(d1, "/api/v1/state").then(replication, () => undefined);
      if (r?.resync?.active) progress.push(`${r.resync.percent.toFixed(0)}%`);
      await new Promise((x) => setTimeout(x, 30));
    }
  })();
  const restartAt = now();
  await d.startNode(d0);
  const resynced = await db({ n0: "SECOND", n1: "PRIM" }, d1, (s) => replication(s)?.resync?.sentBytes !== undefined && replication(s)?.state === "sync");
  watching = false;
  await watch;
  const rs = replication(resynced)?.resync;
  const sent = rs?.sentBytes ?? 0;
  const reintegrationMs = Math.round(now() - restartAt);
  say(`     resync (${rs?.mode}): ${fmt(sent)} sent for ${fmt(modified)} modified (${(sent / modified).toFixed(2)}x), ${fmt(rs?.totalBytes ?? 0)} compared, ${rs?.durationMs} ms;`);
  say(`     progress seen through the API: ${[...new Set(progress)].join(" ") || "(quicker than a poll)"} -> 100%; n0 SECOND and in sync ${reintegrationMs} ms after its restart (process start included)`);

  say(`  >> holdfast swap db (on n0, control token): back to n0, while the client keeps writing`);
  const swapWriting = write({ count: 100_000, maxMs: 6_000, gapMs: 5, timeoutMs: 300 });
  await new Promise((r) => setTimeout(r, 500));
  const sw = now();
  await d.cli(d0, ["swap", "db"], { token: d.tokens.control });
  await db({ n0: "PRIM", n1: "SECOND" }, d0);
  const swapMs = Math.round(now() - sw);
  const swapLines = await swapWriting;
  const byNode = (n: string) => swapLines.filter((l) => l.ok && l.node === n).length;
  const afterSwap = await records();
  say(`     db is PRIM on n0 and SECOND on n1 after ${swapMs} ms (CLI start included); during it ${byNode("n1")} records acknowledged by n1, then ${byNode("n0")} by n0, ${swapLines.filter((l) => !l.ok).length} requests failed (not acknowledged)`);
  say(`     n0 serves ${acked.size - afterSwap.missing} of ${acked.size} acknowledged records`);
  if (afterSwap.node !== "n0" || afterSwap.missing !== 0) throw new Error(`acknowledged records missing on n0 after the swap: ${afterSwap.missing}`);
  say(`  console: ${d0.url}/ (inside the lab network; token ${d.tokens.monitor.slice(0, 6)}..., monitor role)\n`);
  summary.push(
    `mirror: failover ${failoverMs} ms (crash -> first write acknowledged by the secondary${steps ? `; ${steps}` : ""}), ${acked.size} records acknowledged, 0 lost`,
    `mirror: resync of the returning node sent ${fmt(sent)} for ${fmt(modified)} modified (${(sent / modified).toFixed(2)}x, of a ${fmt(rs?.totalBytes ?? 0)} data set); swap back in ${swapMs} ms`,
  );
  ok = true;
} catch (e) {
  console.error(`demo failed: ${(e as Error).message}`);
} finally {
  await cluster?.stop();
  await daemons?.stop();
  await lab.destroy();
  say(`  cleaned up: namespaces of lab ${lab.prefix} deleted`);
}
if (summary.length > 0) say(`\nsummary:\n${summary.map((l) => `  - ${l}`).join("\n")}`);
say(ok ? `\ndemo finished in ${((now() - started) / 1000).toFixed(1)} s` : "\ndemo FAILED");
process.exit(ok ? 0 : 1);
