// bench:detect — failure detection of the membership protocol with real processes in namespaces.
//
//   npm run bench:detect [-- --trials 20 --healthy-seconds 60]
//
// A 5-node cluster (LAN preset, 2 heartbeat networks) in network namespaces. Each trial SIGKILLs one node
// (round robin), measures the time until the LAST survivor reports it lost, restarts it and waits until
// all five agree again. Then the cluster runs healthy for --healthy-seconds while stress-ng loads one core
// fully, and every node loss declared meanwhile is a false positive. CPU per node is measured from
// /proc/<pid>/stat over the healthy phase. Prints a table, then one JSON object as the very last line.
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { LAN } from "../src/core/membership/config.js";
import { Lab } from "../src/testing/lab.js";
import { MembershipCluster, REPO } from "../test/lab/helpers/membership-cluster.js";

const { values } = parseArgs({ options: { trials: { type: "string", default: "20" }, "healthy-seconds": { type: "string", default: "60" } } });
const trials = Number(values.trials);
const healthyS = Number(values["healthy-seconds"]);
const now = () => performance.timeOrigin + performance.now();
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number);
};
const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return Number(rest[11]) + Number(rest[12]); // utime + stime (fields 14, 15)
};
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

const lab = await Lab.create({ nodes: 5, clients: 0, networks: 2 });
let cluster: MembershipCluster | undefined;
let stress: ReturnType<typeof spawn> | undefined;
try {
  cluster = await MembershipCluster.start(lab, { networks: 2 });
  const ids = cluster.nodes.map((n) => n.id);
  await cluster.waitView(cluster.nodes, ids, 30_000);

  const perTrial: number[] = [];
  const perSurvivor: number[] = [];
  for (let t = 0; t < trials; t++) {
    const victim = cluster.nodes[t % cluster.nodes.length]!;
    const survivors = cluster.nodes.filter((n) => n !== victim);
    const marks = cluster.marks();
    const t0 = now();
    victim.proc?.kill("SIGKILL");
    const downs = await Promise.all(survivors.map((n) => n.waitFor((l) => l.type === "nodeDown" && l.node === victim.id, 15_000, marks.get(n))));
    const times = downs.map((d) => d.t - t0);
    perSurvivor.push(...times);
    perTrial.push(Math.max(...times));
    await victim.proc?.exited;
    const after = cluster.marks();
    await cluster.restart(victim);
    await cluster.waitView(cluster.nodes, ids, 30_000, after);
    process.stderr.write(`trial ${t + 1}/${trials}: ${victim.id} killed, last survivor knew after ${Math.max(...times).toFixed(0)} ms\n`);
  }

  // Healthy phase under CPU pressure: one core fully loaded by stress-ng.
  const marks = cluster.marks();
  stress = spawn("stress-ng", ["--cpu", "1", "--cpu-load", "100", "--timeout", `${healthyS + 5}s`], { stdio: "ignore" });
  const pids = cluster.nodes.map((n) => n.proc!.pid);
  const c0 = pids.map(cpuTicks);
  const w0 = now();
  await new Promise((r) => setTimeout(r, healthyS * 1000)); // the measured healthy period itself
  const c1 = pids.map(cpuTicks);
  const wallS = (now() - w0) / 1000;
  stress.kill("SIGKILL");
  const falsePositives = cluster.nodes.reduce((acc, n) => acc + n.lines.slice(marks.get(n)).filter((l) => l.type === "nodeDown").length, 0);
  const cpu = pids.map((_, i) => (100 * ((c1[i]! - c0[i]!) / CLK_TCK)) / wallS);
  const cpuPct = cpu.reduce((a, b) => a + b, 0) / cpu.length;

  const result = {
    bench: "detect",
    trials,
    p50_ms: Math.round(pct(perTrial, 50)),
    p99_ms: Math.round(pct(perTrial, 99)),
    false_positives: falsePositives,
    cpu_pct_per_node: Math.round(cpuPct * 100) / 100,
  };
  const rows: [string, string][] = [
    ["preset", `lan (pulse ${LAN.pulseMs} ms, loss timeout ${LAN.lossTimeoutMs} ms), 5 nodes, 2 heartbeat networks`],
    ["kill trials", String(trials)],
    ["detection, last survivor p50 / p99 / max", `${result.p50_ms} / ${result.p99_ms} / ${Math.round(Math.max(...perTrial))} ms`],
    ["detection, any survivor p50 / p99", `${Math.round(pct(perSurvivor, 50))} / ${Math.round(pct(perSurvivor, 99))} ms`],
    ["p99 over the configured loss timeout (ratio)", (result.p99_ms / LAN.lossTimeoutMs).toFixed(2)],
    [`false positives in ${healthyS} s healthy, 1 core loaded`, String(falsePositives)],
    ["CPU per node process (healthy, % of one core)", cpuPct.toFixed(2)],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  console.log(`\n| ${"metric".padEnd(w)} | value |\n|${"-".repeat(w + 2)}|-------|`);
  for (const [k, v] of rows) console.log(`| ${k.padEnd(w)} | ${v} |`);
  mkdirSync(join(REPO, "bench/results"), { recursive: true });
  writeFileSync(join(REPO, "bench/results/detect.json"), JSON.stringify({ ...result, samples_last_survivor_ms: perTrial.map(Math.round), machine: { cpus: 2, node: process.version } }, null, 2) + "\n");
  console.log(JSON.stringify(result));
} finally {
  stress?.kill("SIGKILL");
  await cluster?.stop();
  await lab.destroy();
}
