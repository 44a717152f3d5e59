// npm run chaos -- --minutes N [--seed S] [--replay FILE] [--out DIR] [--inject no-witness|no-hook-guard]
//
// The chaos suite: a farm of 3 nodes and a mirror of 2 nodes (real processes, real kernel, in network namespaces;
// bench/helpers/chaos-run.ts), a seeded random schedule of faults played on both for N minutes (SIGKILL then
// restart, SIGKILL of the daemon alone, SIGSTOP/SIGCONT, link down/up, one-way drops, partitions, a restart during a resync; each bounded and
// healed; bench/helpers/chaos-schedule.ts), invariants checked all along (bench/helpers/chaos-invariants.ts), then
// a convergence check. The seed is printed first; the schedule is written to DIR/schedule.json (default
// /tmp/holdfast-chaos-<seed>); `--seed S` or `--replay DIR/schedule.json` plays it again. Prints a summary, then as
// the very last line one JSON object {"bench":"chaos",...}. Exit code 1 on any violation.
// `--inject no-witness` starts the mirror without its split-brain protection, `--inject no-hook-guard` kills the hook
// guards with the daemon in killDaemon faults (what the hooks started outlives it until its restart): the suite
// must then report violations.
import { randomInt } from "node:crypto";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { runChaos } from "./helpers/chaos-run.js";
import { makeSchedule, parseSchedule } from "./helpers/chaos-schedule.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "5" },
    seed: { type: "string" },
    replay: { type: "string" },
    out: { type: "string" },
    /** A deliberate bug the suite must catch: "no-witness" (mirror nodes without split-brain protection), "no-hook-guard". */
    inject: { type: "string" },
  },
});
const minutes = Number(values.minutes);
if (!(minutes > 0 && minutes <= 600) || (values.inject !== undefined && values.inject !== "no-witness" && values.inject !== "no-hook-guard")) {
  console.error("usage: npm run chaos -- --minutes N [--seed S] [--replay FILE] [--out DIR] [--inject no-witness|no-hook-guard]   (N in (0, 600])");
  process.exit(2);
}
const schedule = values.replay
  ? parseSchedule(readFileSync(values.replay, "utf8"))
  : makeSchedule(values.seed !== undefined ? Number(values.seed) : randomInt(0, 2 ** 31), minutes);
const seed = schedule.seed;
const outDir = values.out ?? join(tmpdir(), `holdfast-chaos-${seed}`);
const injected = values.inject ? ` --inject ${values.inject}` : "";
const replay = `npm run chaos -- --minutes ${minutes} ${values.replay ? `--replay ${values.replay}` : `--seed ${seed}`}${injected}`;
console.log(`chaos: seed ${seed}, ${minutes} min of faults; schedule in ${join(outDir, "schedule.json")}; replay: ${replay}`);

const r = await runChaos({ schedule, runMs: minutes * 60_000, outDir, log: (s) => console.log(s), ...(values.inject === "no-witness" || values.inject === "no-hook-guard" ? { inject: values.inject } : {}) });

const row = (k: string, v: string | number) => console.log(`  ${k.padEnd(34)} ${v}`);
console.log("\nchaos summary");
row("seed", seed);
row("faults injected (farm / mirror)", `${r.schedules} (${r.faults.farm} / ${r.faults.mirror})`);
for (const [k, n] of Object.entries(r.faults.byKind).sort()) row(`  ${k}`, n);
row("farm requests ok / sent", `${r.farmRequests.ok} / ${r.farmRequests.sent} (${r.farmRequests.failed} failed, ${r.farmRequests.excused} during faults)`);
row("farm streams complete / total", `${r.farmStreams.complete} / ${r.farmStreams.total}`);
row("SYN-ACKs / resets seen by the client", `${r.packets.synAcks} / ${r.packets.resets}`);
row("mirror writes acknowledged", r.ackedWrites);
row("mirror lost-write checks", r.lostWriteChecks);
row("mirror role samples", r.roleSamples);
row("convergence after faults (farm)", `${r.finalConvergenceMs.farm} ms`);
row("convergence after faults (mirror)", `${r.finalConvergenceMs.mirror} ms`);
row("violations", r.violations.length);
for (const [k, n] of Object.entries(r.violationsByFault).sort()) row(`  ${k}`, n);
row("lost writes", r.lostWrites);
row("dual primary", `${r.dualPrimaryMs} ms`);
row("run time", `${(r.ms / 1000).toFixed(0)} s`);
if (r.violations.length > 0) {
  const kinds = [...new Set(r.violations.map((v) => v.invariant))];
  console.log(`\nFAILED: ${r.violations.length} violation(s) (${kinds.join(", ")}); details above and in ${outDir}`);
  console.log(`replay with: ${replay}`);
}
console.log(
  JSON.stringify({ bench: "chaos", seed, minutes, schedules: r.schedules, violations: r.violations.length, lost_writes: r.lostWrites, dual_primary_ms: r.dualPrimaryMs, acked_writes: r.ackedWrites, farm_requests: r.farmRequests.sent }),
);
process.exit(r.violations.length > 0 ? 1 : 0);
