// bench:peers — holdfast beside the tools administrators use today, in the same namespaces and the same run.
//
//   npm run bench:peers [-- --trials 10 --loss-trials 5]
//
// One lab: 2 nodes (n0, n1) + a client (c0) on one bridge. In turn:
// 1. keepalived (Debian's) VRRP for a VIP, the same HTTP app (bench/helpers/app.mts) on both nodes; with the
//    default advert_int (1 s, VRRPv2) and a tuned one (0.1 s, VRRPv3: v2 takes whole seconds only). --trials master
//    failures of each kind: SIGKILL of every process of the master ("kill"), and its link down ("link"). Failover
//    time = fault -> start of the first probe (a new connection every 10 ms) answered by the other node.
// 2. The holdfast mirror (examples/mirror-node.ts, its records app, no witness): the same faults, the same probe,
//    --trials each; then --loss-trials crashes (SIGKILL of every process + link down) while a client appends
//    fdatasync'd records one at a time: acknowledged records missing on the survivor, and the write rate. Without a
//    witness a primary whose link went down goes on ALONE, and its rejoin is held as a split brain for an operator:
//    the bench plays the operator (`second` on the old primary, which no client reached) and counts it. Then the
//    same failover trials with the witness arbiter (examples/witness.ts in the client namespace, --arbiter): the
//    recommended, split-brain-safe setup (a cut-off primary steps down; the survivor waits for the lease).
// 3. lsyncd (default.rsync to an rsync daemon on n1) behind the same records writer on a local directory of n0:
//    the same crashes, --loss-trials each, with lsyncd's default delay (15 s) and with delay = 1 s.
// 4. HAProxy against the farm: bench/farm.ts runs as part of this run (its own lab: 3 nodes + client; direct,
//    flooded, each filter backend and HAProxy 2.6 in front of the same apps) with --farm-trials reconvergence
//    trials; its JSON last line is folded in (haproxy_ratio = farm eBPF over HAProxy, many connections).
// Prints a table, then one JSON object as the very last line; bench/results/peers.json keeps every sample.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Lab } from "../src/testing/lab.js";
import { PROBE_EVERY_MS, pct } from "./helpers/peers-failover.js";
import { keepalivedTrials, type Fault, type KeepalivedTrials } from "./helpers/peers-keepalived.js";
import { lsyncdTrials, type LossTrial } from "./helpers/peers-lsyncd.js";
import { mirrorTrials } from "./helpers/peers-mirror.js";

const REPO = resolve(import.meta.dirname, "..");
const { values } = parseArgs({
  options: { trials: { type: "string", default: "10" }, "loss-trials": { type: "string", default: "5" }, "farm-trials": { type: "string", default: "10" } },
});
const TRIALS = Math.max(1, Math.min(100, Number(values.trials)));
const LOSS_TRIALS = Math.max(1, Math.min(50, Number(values["loss-trials"])));
const log = (s: string) => process.stderr.write(`${s}\n`);
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

function version(cmd: string, args: string[]): string {
  try {
    const out = execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return out.split("\n")[0]?.trim() ?? "";
  } catch (e) {
    // keepalived -v prints to stderr and exits 0 on some versions, non-zero on others
    const err = e as { stderr?: string; stdout?: string };
    return `${err.stdout ?? ""}${err.stderr ?? ""}`.split("\n")[0]?.trim() ?? "?";
  }
}
function keepalivedVersion(): string {
  const r = execFileSync("sh", ["-c", "keepalived -v 2>&1 | head -1"], { encoding: "utf8" });
  return r.trim();
}
const osName = (() => {
  try {
    return /PRETTY_NAME="([^"]+)"/.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "?";
  } catch {
    return "?";
  }
})();
const machine = {
  os: osName,
  kernel: version("uname", ["-r"]),
  cpus: cpus().length,
  mem_gib: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  keepalived: keepalivedVersion(),
  lsyncd: version("lsyncd", ["--version"]),
  rsync: version("rsync", ["--version"]),
};
log(`machine: ${JSON.stringify(machine)}`);

const lab = await Lab.create({ nodes: 2, clients: 1, networks: 1 });
const vip = lab.spareAddr(0);
let kaDefault: KeepalivedTrials;
let kaTuned: KeepalivedTrials;
let hf: Awaited<ReturnType<typeof mirrorTrials>>;
let hfw: Awaited<ReturnType<typeof mirrorTrials>>;
let ls: Record<string, LossTrial[]>;
const started = Date.now();
try {
  log(`keepalived, advert_int 1 s (default), ${TRIALS} trials per fault ...`);
  kaDefault = await keepalivedTrials(lab, REPO, vip, { name: "default", advertInt: 1, version: 2 }, TRIALS, log);
  log(`keepalived, advert_int 0.1 s (VRRPv3), ${TRIALS} trials per fault ...`);
  kaTuned = await keepalivedTrials(lab, REPO, vip, { name: "tuned", advertInt: 0.1, version: 3 }, TRIALS, log);
  log(`holdfast mirror, ${TRIALS} trials per fault, then ${LOSS_TRIALS} crashes under writes ...`);
  hf = await mirrorTrials(lab, REPO, vip, { failoverTrials: TRIALS, lossTrials: LOSS_TRIALS }, log);
  log(`holdfast mirror with the witness arbiter, ${TRIALS} trials per fault ...`);
  hfw = await mirrorTrials(lab, REPO, vip, { failoverTrials: TRIALS, lossTrials: 0, witness: true }, log);
  log(`lsyncd, ${LOSS_TRIALS} crashes under writes per setting ...`);
  ls = await lsyncdTrials(lab, REPO, [{ name: "default", delay: 15 }, { name: "delay1", delay: 1 }], LOSS_TRIALS, log);
} finally {
  await lab.destroy();
}
log(`done in ${Math.round((Date.now() - started) / 1000)} s`);

// ---- report ------------------------------------------------------------------------------------
const all = (r: Record<Fault, number[]>) => [...r.kill, ...r.link];
const kaD = all(kaDefault);
const kaT = all(kaTuned);
const hfAll = all(hf.failover);
const hfwAll = all(hfw.failover);
const rejoins = (r: typeof hf) => r.splitBrainsResolved.kill + r.splitBrainsResolved.link + r.splitBrainsResolved.both;
const p99 = (xs: number[]) => pct(xs, 99);
const p50 = (xs: number[]) => pct(xs, 50);
const failed = (xs: number[]) => xs.filter((x) => !Number.isFinite(x)).length;
const sum = (ts: LossTrial[], k: "lost" | "acked") => ts.reduce((a, t) => a + t[k], 0);
const meanRate = (ts: LossTrial[]) => ts.reduce((a, t) => a + t.rate, 0) / ts.length;
const meanLocal = (ts: LossTrial[]) => ts.reduce((a, t) => a + t.localRate, 0) / ts.length;
/** Mean over trials of (replicated rate / local rate measured just before): the machine's load varies. */
const rateRatio = (ts: LossTrial[]) => ts.reduce((a, t) => a + t.rate / t.localRate, 0) / ts.length;
const lsD = ls.default ?? [];
const ls1 = ls.delay1 ?? [];
// 4. The farm against HAProxy, in this same run (bench/farm.ts prints its table on stdout, progress on stderr).
log("farm vs HAProxy (bench/farm.ts) ...");
const farmRun = spawnSync("npx", ["tsx", join(REPO, "bench/farm.ts"), "--trials", String(Math.max(1, Math.min(100, Number(values["farm-trials"]))))], {
  cwd: REPO,
  encoding: "utf8",
  stdio: ["ignore", "pipe", "inherit"],
  timeout: 20 * 60_000,
});
const farmLine = (farmRun.stdout ?? "").trim().split("\n").pop() ?? "";
let farm: { haproxy_ratio?: number; ebpf_ratio?: number; vs_direct_ratio?: number } = {};
try {
  farm = JSON.parse(farmLine) as typeof farm;
} catch {
  throw new Error(`bench/farm.ts did not end with its JSON line (exit ${farmRun.status}): ${farmLine.slice(0, 200)}`);
}
const haproxy = farm.haproxy_ratio ?? null;

const out = {
  bench: "peers",
  keepalived_default_p99_ms: p99(kaD),
  keepalived_tuned_p99_ms: p99(kaT),
  holdfast_failover_p99_ms: p99(hfAll),
  failover_ratio_default: round(p99(hfAll) / p99(kaD)),
  failover_ratio_tuned: round(p99(hfAll) / p99(kaT)),
  lsyncd_lost_records: sum(lsD, "lost"),
  holdfast_lost_records: sum(hf.loss, "lost"),
  lsyncd_delay1_lost_records: sum(ls1, "lost"),
  holdfast_write_rate: Math.round(meanRate(hf.loss)),
  lsyncd_write_rate: Math.round(meanRate([...lsD, ...ls1])),
  holdfast_write_rate_ratio: round(rateRatio(hf.loss)),
  lsyncd_write_rate_ratio: round(rateRatio([...lsD, ...ls1])),
  holdfast_split_brains_resolved: rejoins(hf),
  holdfast_arbiter_failover_p99_ms: p99(hfwAll),
  failover_ratio_arbiter_default: round(p99(hfwAll) / p99(kaD)),
  failover_ratio_arbiter_tuned: round(p99(hfwAll) / p99(kaT)),
  holdfast_arbiter_split_brains: rejoins(hfw),
  haproxy_ratio: haproxy,
  farm_ebpf_ratio: farm.ebpf_ratio ?? null,
  trials: TRIALS,
  loss_trials: LOSS_TRIALS,
};

const ms = (xs: number[]) => `${p50(xs)} / ${p99(xs)} / ${Math.max(...xs.filter(Number.isFinite))}${failed(xs) ? ` (${failed(xs)} never answered)` : ""}`;
console.log(`\nFailover, fault on the serving node -> first probe answered by the other (a new connection every ${PROBE_EVERY_MS} ms), ms, p50 / p99 / max of ${TRIALS}:`);
console.log("| fault | keepalived advert_int 1 s | keepalived advert_int 0.1 s (v3) | holdfast mirror | holdfast app started | holdfast/keepalived p99, default | tuned | holdfast + witness arbiter | + witness / keepalived p99, default | tuned |");
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const f of ["kill", "link"] as const) {
  const label = f === "kill" ? "SIGKILL (all processes)" : "link down";
  console.log(`| ${label} | ${ms(kaDefault[f])} | ${ms(kaTuned[f])} | ${ms(hf.failover[f])} | ${ms(hf.appStart[f])} | ${round(p99(hf.failover[f]) / p99(kaDefault[f]))} | ${round(p99(hf.failover[f]) / p99(kaTuned[f]))} | ${ms(hfw.failover[f])} | ${round(p99(hfw.failover[f]) / p99(kaDefault[f]))} | ${round(p99(hfw.failover[f]) / p99(kaTuned[f]))} |`);
}
console.log(`| both | ${ms(kaD)} | ${ms(kaT)} | ${ms(hfAll)} | ${ms(all(hf.appStart))} | **${out.failover_ratio_default}** | **${out.failover_ratio_tuned}** | ${ms(hfwAll)} | **${out.failover_ratio_arbiter_default}** | **${out.failover_ratio_arbiter_tuned}** |`);
console.log(`holdfast rejoins held as a split brain and resolved by \`second\` on the old primary (no witness in this bench; see bench/helpers/peers-mirror.ts): kill ${hf.splitBrainsResolved.kill}, link down ${hf.splitBrainsResolved.link}, crash under writes ${hf.splitBrainsResolved.both}; with the witness arbiter: ${rejoins(hfw)}`);
console.log(`\nData loss at a crash (SIGKILL of every process + link down of the writer's node), ${LOSS_TRIALS} crashes each:`);
console.log("| replication | acknowledged records | lost (missing on the survivor) | per crash | write rate, records/s | no replication, just before | ratio |");
console.log("|---|---|---|---|---|---|---|");
const lossRow = (name: string, ts: LossTrial[]) =>
  console.log(`| ${name} | ${sum(ts, "acked")} | **${sum(ts, "lost")}** | ${ts.map((t) => t.lost).join(", ")} | ${Math.round(meanRate(ts))} | ${Math.round(meanLocal(ts))} | ${rateRatio(ts).toFixed(2)} |`);
lossRow("holdfast mirror (synchronous)", hf.loss);
lossRow("lsyncd default.rsync, default delay (15 s)", lsD);
lossRow("lsyncd default.rsync, delay = 1 s", ls1);
console.log(`\nLoad balancing, this run (bench/farm.ts): farm with the eBPF filter over HAProxy 2.6 in front of the same 3 apps, many short connections: **${haproxy}**x (farm eBPF over the flooded path without a filter: ${farm.ebpf_ratio}; table above in its output).`);
console.log(farmRun.stdout.trim().split("\n").slice(0, -1).join("\n"));
console.log(`machine: ${machine.os}, kernel ${machine.kernel}, ${machine.cpus} CPUs, ${machine.mem_gib} GiB, node ${machine.node}; ${machine.keepalived}; ${machine.lsyncd}; ${machine.rsync}`);

mkdirSync(join(REPO, "bench/results"), { recursive: true });
writeFileSync(
  join(REPO, "bench/results/peers.json"),
  JSON.stringify({ ...out, machine, detail: { keepalived_default: kaDefault, keepalived_tuned: kaTuned, holdfast: hf, holdfast_arbiter: hfw, lsyncd: ls, farm } }, null, 2) + "\n",
);
console.log(JSON.stringify(out));
