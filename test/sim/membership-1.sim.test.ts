import { expect, it } from "vitest";
import { baseSeed, describeFailures, runBatch } from "./run-schedules.js";

// Half 1 of the membership simulation (two files so that vitest runs them on both cores).
const PER_FILE = Number(process.env.HOLDFAST_SIM_SCHEDULES ?? 5000) / 2;

it("membership invariants hold over " + PER_FILE + " seeded fault schedules (part 1)", () => {
  const base = baseSeed();
  const first = (base + 1 * PER_FILE) >>> 0;
  const batch = runBatch(first, PER_FILE);
  console.log(
    `membership sim part 1: ${batch.schedules} schedules from seed ${first} (HOLDFAST_SIM_SEED=${base}), ` +
      `${batch.adversarial} forged/replayed datagrams, slowest agreement ${batch.maxConvergedAfterMs} ms after faults stopped (bound ${batch.boundMs} ms)`,
  );
  if (batch.violations.length > 0) expect.fail(describeFailures(batch));
  expect(batch.schedules).toBe(PER_FILE);
  expect(batch.adversarial).toBeGreaterThan(PER_FILE); // the adversary really attacked
});
