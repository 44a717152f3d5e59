/**
 * The SDK's wiring of a mirror's split-brain checkers to its driver (src/mirror/splitBrain.ts): what the daemon
 * (test/unit/daemon-mirror-arbiter.test.ts) and examples/mirror-node.ts both rely on, including what only code can do
 * (its own onProbe and yieldWhen) and what must be refused (two leases for one permit).
 */
import { describe, expect, it } from "vitest";
import type { ArbiterProbe } from "../../src/checkers/arbiter.js";
import { mirrorSplitBrain, SPLIT_BRAIN_FENCE_MS } from "../../src/mirror/splitBrain.js";

const arbiter = { type: "split-brain", name: "witness", arbiter: "198.18.0.200:7799" };
const probe = (ms: number) => ({ permitBudgetMs: () => ms }) as unknown as ArbiterProbe;

describe("mirrorSplitBrain", () => {
  it("bounds the permit by the lease, yields while SECOND with the peer, and keeps the entry's own onProbe", () => {
    let second = false;
    const seen: ArbiterProbe[] = [];
    const w = mirrorSplitBrain([{ ...arbiter, onProbe: (p: ArbiterProbe) => seen.push(p) }, { type: "tcp", name: "app" }], { secondWithPeer: () => second });
    const c = w.checkers[0] as unknown as { onProbe: (p: ArbiterProbe) => void; yieldWhen: () => boolean };
    expect(w.driver.permitCap?.()).toBe(0); // no probe yet: no lease, no permit
    const p = probe(275);
    c.onProbe(p);
    expect(w.driver.permitCap?.()).toBe(275);
    expect(seen).toEqual([p]);
    expect(c.yieldWhen()).toBe(false);
    second = true;
    expect(c.yieldWhen()).toBe(true);
    expect(w.checkers[1]).toEqual({ type: "tcp", name: "app" });
    expect(w.driver.failoverFenceMs).toBe(SPLIT_BRAIN_FENCE_MS);
  });

  it("an entry's own yieldWhen wins over the SECOND rule", () => {
    const w = mirrorSplitBrain([{ ...arbiter, yieldWhen: () => true }], { secondWithPeer: () => false });
    expect((w.checkers[0] as { yieldWhen: () => boolean }).yieldWhen()).toBe(true);
  });

  it("a ping witness: the fence, no cap, the entry untouched; an explicit fence wins; none without a split-brain checker", () => {
    const ping = { type: "split-brain", name: "witness", witnesses: ["198.18.0.200"] };
    const w = mirrorSplitBrain([ping], { secondWithPeer: () => true });
    expect(w.checkers[0]).toBe(ping);
    expect(w.driver).toEqual({ failoverFenceMs: SPLIT_BRAIN_FENCE_MS });
    expect(mirrorSplitBrain([arbiter], { secondWithPeer: () => true, failoverFenceMs: 0 }).driver.failoverFenceMs).toBe(0);
    expect(mirrorSplitBrain([{ type: "tcp" }], { secondWithPeer: () => true }).driver).toEqual({});
  });

  it("refuses two arbiter leases: the permit can follow one", () => {
    expect(() => mirrorSplitBrain([arbiter, { ...arbiter, name: "w2" }], { secondWithPeer: () => true })).toThrow(/2 split-brain checkers with an arbiter/);
  });
});
