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
