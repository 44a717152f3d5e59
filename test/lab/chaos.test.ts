// The chaos suite's short CI profile: one minute of a fresh random fault schedule over a real 3-node farm and a real
// 2-node mirror (bench/helpers/chaos-run.ts). The seed is printed; a failure prints the one command that replays it.
// The checkers' ability to fail is tested on synthetic event streams in test/unit/chaos-invariants.test.ts.
import { randomInt } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runChaos } from "../../bench/helpers/chaos-run.js";
import { makeSchedule, parseSchedule } from "../../bench/helpers/chaos-schedule.js";
import { readFileSync } from "node:fs";

const root = process.getuid?.() === 0;
const MINUTES = Number(process.env.HOLDFAST_CHAOS_MINUTES ?? 1);

describe.skipIf(!root)("chaos: random faults over a farm of 3 and a mirror of 2", () => {
  it("a fresh seed: 0 violations, 0 lost writes, 0 ms of dual primary, both systems converge", async () => {
    const seed = process.env.HOLDFAST_CHAOS_SEED ? Number(process.env.HOLDFAST_CHAOS_SEED) : randomInt(0, 2 ** 31);
    const replay = `npm run chaos -- --minutes ${MINUTES} --seed ${seed}`;
    console.log(`chaos seed ${seed} (replay: ${replay})`);
    const outDir = join(tmpdir(), `holdfast-chaos-${seed}`);
    const r = await runChaos({ schedule: makeSchedule(seed, MINUTES), runMs: MINUTES * 60_000, outDir, log: (s) => console.log(s) });
    console.log(JSON.stringify({ bench: "chaos", seed, schedules: r.schedules, violations: r.violations.length, lost_writes: r.lostWrites, dual_primary_ms: r.dualPrimaryMs }));
    const why = `seed ${seed}; replay: ${replay}; details in ${outDir}`;
    // The run did exercise both systems: faults of every kind were injected, the clients were served.
    expect(r.faults.farm, why).toBeGreaterThanOrEqual(3);
    expect(r.faults.mirror, why).toBeGreaterThanOrEqual(3);
    expect(r.ackedWrites, why).toBeGreaterThan(100);
    expect(r.farmRequests.ok, why).toBeGreaterThan(500);
    expect(r.roleSamples, why).toBeGreaterThan(1000);
    expect(r.lostWriteChecks, why).toBeGreaterThanOrEqual(r.faults.mirror);
    // Safety (no lost write, no dual primary, every farm invariant) and liveness (both systems converge after each
    // fault and at the end: the mirror back to PRIM + an in-sync, up-to-date SECOND within the bound; issue 7).
    expect(r.violations.map((v) => `${v.invariant}: ${v.detail}`), why).toEqual([]);
    expect(r.lostWrites, why).toBe(0);
    expect(r.dualPrimaryMs, why).toBe(0);
  }, 20 * 60_000);

  // The schedules that found real bugs (lost acknowledged writes, dual primary) before the witness arbiter, the
  // outdated-secondary, alone-writes and stall rules and the helper's permit: each must now end clean, converged too.
  // partition-primary (also the injected-bug schedule below, there without the witness): with the arbiter, a
  // secondary holding the lease at the cut took over before the primary saw the loss (25 ms of two primaries) until
  // the failover fence counted from the peer's departure.
  for (const name of ["stop-then-linkdown", "stop-primary", "partition-primary"]) {
    it(`replay ${name}: 0 violations, 0 lost writes, 0 ms of dual primary`, async () => {
      const schedule = parseSchedule(readFileSync(join(import.meta.dirname, `../../bench/helpers/chaos-replay-${name}.json`), "utf8"));
      const outDir = join(tmpdir(), `holdfast-chaos-replay-${name}`);
      const r = await runChaos({ schedule, runMs: 60_000, outDir, log: (s) => console.log(s) });
      console.log(JSON.stringify({ bench: "chaos", replay: name, schedules: r.schedules, violations: r.violations.length, lost_writes: r.lostWrites, dual_primary_ms: r.dualPrimaryMs }));
      const why = `replay: npm run chaos -- --minutes 1 --replay bench/helpers/chaos-replay-${name}.json; details in ${outDir}`;
      expect(r.faults.mirror, why).toBeGreaterThanOrEqual(2);
      expect(r.ackedWrites, why).toBeGreaterThan(100);
      expect(r.violations.map((v) => `${v.invariant}: ${v.detail}`), why).toEqual([]);
      expect(r.lostWrites, why).toBe(0);
      expect(r.dualPrimaryMs, why).toBe(0);
    }, 10 * 60_000);
  }

  it("catches an injected bug: the mirror without its witness (no split-brain protection) under partitions of the primary", async () => {
    // bench/helpers/chaos-replay-partition-primary.json: three partitions of the primary (cut from its peer and the
    // witness), nothing on the farm. Without the witness both nodes serve; the suite must see it.
    const schedule = parseSchedule(readFileSync(join(import.meta.dirname, "../../bench/helpers/chaos-replay-partition-primary.json"), "utf8"));
    const outDir = join(tmpdir(), "holdfast-chaos-injected-no-witness");
    const r = await runChaos({ schedule, runMs: 60_000, outDir, inject: "no-witness", log: (s) => console.log(s) });
    console.log(JSON.stringify({ bench: "chaos", injected: "no-witness", schedules: r.schedules, violations: r.violations.length, lost_writes: r.lostWrites, dual_primary_ms: r.dualPrimaryMs }));
    // The first partition makes both nodes primary; at the heal the engine sees that both acknowledged writes alone
    // and holds the split brain for the operator (n0 serving, n1 waiting, neither copy discarded), so the pair does
    // not converge and the runner, waiting for convergence, injects no further mirror fault.
    expect(r.faults.mirror).toBeGreaterThanOrEqual(1);
    // A partition lasts 2.5-3.5 s; n1 serves from detection + failover (mount, app start by its hook) on, n0 until the
    // heal: ~1.5 s on a quiet machine, ~0.5 s seen at load average 10 (detection raised to 1.2 s by local health).
    expect(r.dualPrimaryMs).toBeGreaterThan(200);
    const seen = new Set(r.violations.map((v) => v.invariant));
    expect(seen).toContain("mirror-dual-primary");
    expect(seen).toContain("mirror-convergence");
    // The writes n1 acknowledged while both served are on n1's held copy, not on n0 (the one still serving): the
    // suite counts them against the serving primary, as an operator would see them until the split brain is resolved.
    // The farm had no fault: it must not be blamed for anything (no false positive from the checkers).
    expect(r.violations.filter((v) => v.invariant.startsWith("farm"))).toEqual([]);
    expect(r.farmRequests.failed).toBe(0);
  }, 10 * 60_000);
});
