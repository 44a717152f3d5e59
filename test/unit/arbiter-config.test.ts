/**
 * The arbiter's defaults where the SDK user gets them: a split-brain checker given `arbiter` gets the timing chain's
 * checker settings (src/checkers/arbiter.ts ARBITER_DEFAULTS) unless the entry says otherwise, `onProbe` hands out the
 * probe, and its permit budget follows the lease (0 without one; ends the guard before the lease's end).
 */
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARBITER_DEFAULTS, ArbiterProbe } from "../../src/checkers/arbiter.js";
import { WitnessServer } from "../../src/checkers/witness-server.js";
import { createProbe, decodeCheckerConfig } from "../../src/checkers/config.js";
import { generateKey, parseKey } from "../../src/runtime/crypto.js";

const keyText = generateKey();
const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});
function keyFile(): string {
  const dir = mkdtempSync(join(tmpdir(), "hf-arbiter-config-"));
  closers.push(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, "key");
  writeFileSync(f, keyText, { mode: 0o600 });
  return f;
}

describe("split-brain checker with arbiter: defaults and onProbe", () => {
  it("gets interval 50, timeout 150, rise 1, fall 1 unless given; a ping split-brain checker keeps the common defaults", () => {
    const kf = keyFile();
    const c = decodeCheckerConfig({ type: "split-brain", arbiter: "127.0.0.1:7799", keyFile: kf, node: "n0" });
    expect(c).toMatchObject({ interval: 50, timeout: 150, rise: 1, fall: 1 });
    expect(c).toMatchObject(ARBITER_DEFAULTS.checker);
    const given = decodeCheckerConfig({ type: "split-brain", arbiter: "127.0.0.1:7799", keyFile: kf, node: "n0", interval: 200, fall: 2 });
    expect(given).toMatchObject({ interval: 200, timeout: 150, rise: 1, fall: 2 });
    const ping = decodeCheckerConfig({ type: "split-brain", witnesses: ["198.18.0.1"] });
    expect(ping).toMatchObject({ interval: 500, timeout: 400, rise: 2, fall: 3 });
  });

  it("the timing chain's constraints hold for the defaults (renew + report margin below ttl x (1 - margin); the fence)", () => {
    const d = ARBITER_DEFAULTS;
    const valid = d.ttlMs * (1 - d.margin);
    expect(d.reportMarginMs + d.renewMs).toBeLessThan(valid);
    // A cut-off primary leaves the role at least reportMargin - interval - 100 ms (a run's answer wait) before its
    // lease ends on its clock: the arbiter's failover fence (mirror-node sets no failoverFenceMs with it).
    expect(d.reportMarginMs - d.checker.interval - 100).toBeGreaterThanOrEqual(250);
    // Renewals that may be lost in a row before the verdict fails.
    expect(Math.floor((valid - d.reportMarginMs) / d.renewMs) - 1).toBeGreaterThanOrEqual(4);
    // Failover after a kill: at most ttl + a checker run + ~200 ms for ALONE, mount, VIP: below 1.5 s.
    expect(d.ttlMs + d.checker.interval + 200).toBeLessThan(1500);
  });

  it("onProbe gets the probe; its permit budget is 0 without a lease and ends the guard before the lease with one", async () => {
    const key = parseKey(keyText);
    const w = new WitnessServer({ host: "127.0.0.1", port: 0, key, maxTtlMs: 1000 });
    await w.start();
    closers.push(() => w.close());
    let got: ArbiterProbe | undefined;
    const probe = createProbe(
      decodeCheckerConfig({ type: "split-brain", arbiter: `127.0.0.1:${w.port}`, keyFile: keyFile(), node: "n0", onProbe: (p: ArbiterProbe) => (got = p) }),
    );
    closers.push(() => probe.close?.());
    expect(got).toBe(probe);
    const p = got as ArbiterProbe;
    expect(p.permitBudgetMs()).toBe(0);
    // The witness grants nothing during its start grace (maxTtl, 1 s): run until granted (bounded).
    let r = await p.run(AbortSignal.timeout(300));
    for (let i = 0; i < 60 && !r.ok; i++) {
      await new Promise((res) => setTimeout(res, 50));
      r = await p.run(AbortSignal.timeout(300));
    }
    expect(r.ok).toBe(true);
    const budget = p.permitBudgetMs();
    const d = ARBITER_DEFAULTS;
    expect(budget).toBeLessThanOrEqual(d.ttlMs * (1 - d.margin) - d.permitGuardMs);
    expect(budget).toBeGreaterThan(d.ttlMs * (1 - d.margin) - d.permitGuardMs - 150);
    expect(p.permitBudgetMs()).toBeLessThanOrEqual(p.lease.remaining(performance.now()) - d.permitGuardMs + 1);
  });
});
