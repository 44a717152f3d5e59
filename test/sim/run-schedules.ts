import { randomSchedule, runMembershipSchedule, type SimViolation } from "../../src/testing/sim/membership-sim.js";

/**
 * Base seed of this run: `HOLDFAST_SIM_SEED` when set (to replay a run), otherwise fresh each run so that
 * every run explores new schedules. It is printed; a failure prints the exact replay command.
 */
export function baseSeed(): number {
  const env = process.env.HOLDFAST_SIM_SEED;
  if (env !== undefined && env !== "") return Number(env) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

export interface Batch {
  schedules: number;
  violations: SimViolation[];
  maxConvergedAfterMs: number;
  boundMs: number;
  adversarial: number;
}

export function runBatch(first: number, count: number): Batch {
  const violations: SimViolation[] = [];
  let maxConv = 0;
  let bound = 0;
  let adversarial = 0;
  for (let i = 0; i < count; i++) {
    const seed = (first + i) >>> 0;
    const r = runMembershipSchedule(randomSchedule(seed));
    violations.push(...r.violations);
    if (r.convergedAfterMs !== null) maxConv = Math.max(maxConv, r.convergedAfterMs);
    bound = Math.max(bound, r.boundMs);
    adversarial += r.adversarial;
  }
  return { schedules: count, violations, maxConvergedAfterMs: maxConv, boundMs: bound, adversarial };
}

export function describeFailures(b: Batch): string {
  const seeds = [...new Set(b.violations.map((v) => v.seed))];
  return (
    b.violations.slice(0, 10).map((v) => `seed ${v.seed} @${v.at}ms ${v.invariant}: ${v.detail}`).join("\n") +
    `\nreplay with: npm run sim -- --seed ${seeds[0]} (failing seeds: ${seeds.slice(0, 20).join(", ")})`
  );
}

/**
 * Declares one part of the membership simulation (the schedules are split over two files so that vitest
 * runs them on both cores): `HOLDFAST_SIM_SCHEDULES` in all (default 5,000), this part's share of them.
 */
export function simulationPart(part: 0 | 1, it: typeof import("vitest").it, expect: typeof import("vitest").expect): void {
  const perFile = Number(process.env.HOLDFAST_SIM_SCHEDULES ?? 5000) / 2;
  it(`membership invariants hold over ${perFile} seeded fault schedules (part ${part})`, () => {
    const base = baseSeed();
    const first = (base + part * perFile) >>> 0;
    const batch = runBatch(first, perFile);
    console.log(
      `membership sim part ${part}: ${batch.schedules} schedules from seed ${first} (HOLDFAST_SIM_SEED=${base}), ` +
        `${batch.adversarial} forged/replayed datagrams, slowest agreement ${batch.maxConvergedAfterMs} ms after faults stopped (bound ${batch.boundMs} ms)`,
    );
    if (batch.violations.length > 0) expect.fail(describeFailures(batch));
    expect(batch.schedules).toBe(perFile);
    expect(batch.adversarial).toBeGreaterThan(perFile); // the adversary really attacked
  }, 600_000); // ~50 s on an idle 2-core machine; generous for a loaded one (time is not what this asserts)
}
