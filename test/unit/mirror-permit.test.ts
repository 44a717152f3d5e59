/**
 * MirrorDriver's permit renewals (fencing) with the real module engine and a fake replicator that records
 * `renewPermit`: renewed every permit/4 while the module is primary; not once it leaves the role; not while the
 * engine's rule for staying primary alone says no (a module exposing `mayStayPrimaryAlone`); after a stall of
 * the driver's own process longer than the permit, nothing for one permit (the view catches up first).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { FakeMembership } from "./helpers/fake-membership.js";
import { afterEach, describe, expect, it } from "vitest";
import { Module, type VipDriver } from "../../src/runtime/module.js";
import { MemoryModuleStore } from "../../src/testing/index.js";
import { MirrorDriver, type ReplicatorLike } from "../../src/mirror/mirror.js";
import type { FileReplicatorEvents, FileReplicatorOptions, ReplicatorMetrics } from "../../src/mirror/FileReplicator.js";
import { mirrorReport } from "./helpers/mirror-report.js";

const METRICS: ReplicatorMetrics = { bytesReplicated: 0, acks: 0, ackLatencyAvgUs: 0, ackLatencyMaxUs: 0, queueDepth: 0, logRecords: 0, resyncBytes: 0, degradedCount: 0 };

class FakeRep extends EventEmitter<FileReplicatorEvents> implements ReplicatorLike {
  state = "starting";
  consistent: boolean | undefined;
  pid: number | undefined;
  readonly renewals: { at: number; ms: number }[] = [];
  constructor(readonly options: FileReplicatorOptions) {
    super();
  }
  async start(): Promise<void> {
    this.pid = 4242;
    this.state = "degraded";
  }
  async stop(): Promise<void> {
    this.state = "stopped";
    this.pid = undefined;
  }
  resync(): void {}
  metrics(): ReplicatorMetrics {
    return METRICS;
  }
  mountPath(rel = ""): string {
    return `/mnt/${rel}`;
  }
  commandInMount(argv: readonly string[]): [string, ...string[]] {
    return [...argv] as [string, ...string[]];
  }
  renewPermit(ms: number): void {
    this.renewals.push({ at: performance.now(), ms });
  }
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const PERMIT = 200;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A node that is ALONE (primary, no peer) with a fake replicator; `extra` goes to the driver's options. */
async function primaryNode(extra: { permitCap?: () => number } = {}) {
  const reps: FakeRep[] = [];
  const dir = mkdtempSync(join(tmpdir(), "hf-mirror-permit-"));
  dirs.push(dir);
  const lines: string[] = [];
  const driver = new MirrorDriver({
    nodeId: "n0",
    backingDir: join(dir, "data"),
    mountPoint: join(dir, "mnt"),
    keyFile: join(dir, "key"),
    listen: { host: "198.18.0.10", port: 7790 },
    peer: { host: "198.18.0.11", port: 7790 },
    permitMs: PERMIT,
    ...extra,
    log: (l) => lines.push(l),
    createReplicator: (o) => {
      const r = new FakeRep(o);
      reps.push(r);
      return r;
    },
  });
  const vip: VipDriver = { add: async () => undefined, remove: async () => undefined };
  const module = await Module.create(
    { name: "db", kind: "mirror", vips: ["198.18.0.100/24"], hooks: driver.hooks({}), mirror: { defaultPrimary: "n0", peerWait: 100 } },
    { nodeId: "n0", vip, store: new MemoryModuleStore() },
  );
  const membership = new FakeMembership();
  driver.bind(module, membership);
  membership.set(["n0"]);
  module.view({ epoch: 1, members: [{ id: "n0", weight: 1 }] });
  await module.start();
  await module.waitFor("ALONE");
  const rep = reps.find((r) => r.options.role === "primary") as FakeRep;
  return { driver, module, membership, rep, lines };
}

describe("MirrorDriver permit renewals", () => {
  it("renews every permit/4 with the permit while primary, stops once the module leaves the role", async () => {
    const n = await primaryNode();
    expect(n.rep.options).toMatchObject({ permit: "renewed" });
    await sleep(5 * PERMIT);
    const r = n.rep.renewals;
    expect(r.length).toBeGreaterThanOrEqual(12); // 20 ticks of 50 ms in 1 s, with room for a slow machine
    expect(new Set(r.map((x) => x.ms))).toEqual(new Set([PERMIT]));
    const gaps = r.slice(1).map((x, i) => x.at - (r[i] as { at: number }).at);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(PERMIT / 4 - 5);
    await n.module.stop();
    await n.module.waitFor("STOP");
    const count = r.length;
    await sleep(2 * PERMIT);
    expect(r.length).toBe(count);
    await n.driver.close();
  });

  it("the engine's rule for staying primary alone: no renewal while it says no and the peer is out of view", async () => {
    const n = await primaryNode();
    let may = false;
    (n.module as unknown as { mayStayPrimaryAlone: () => boolean }).mayStayPrimaryAlone = () => may;
    await sleep(PERMIT / 2); // the tick in flight
    const before = n.rep.renewals.length;
    await sleep(2 * PERMIT);
    expect(n.rep.renewals.length).toBe(before);
    expect(n.lines.some((l) => l.includes("permit: not renewed"))).toBe(true);
    // the peer in view is enough (the engine's rule), whatever the witness says
    n.membership.set(["n0", "n1"]);
    await sleep(PERMIT);
    expect(n.rep.renewals.length).toBeGreaterThan(before);
    n.membership.set(["n0"]);
    may = true;
    const again = n.rep.renewals.length;
    await sleep(PERMIT);
    expect(n.rep.renewals.length).toBeGreaterThan(again);
    await n.module.stop();
    await n.driver.close();
  });

  it("with the peer in the view: no renewal while it is an in-sync secondary (PRIM), renewals once it reports out of sync (ALONE)", async () => {
    // Acked alone while PRIM (the stream broke, the peer has not noticed yet), a write would be missing from the
    // copy of a peer that may still take over: the helper must wait for its reconnection or the peer's report.
    const n = await primaryNode();
    n.membership.set(["n0", "n1"]);
    n.module.view({ epoch: 2, members: [{ id: "n0", weight: 1 }, { id: "n1", weight: 1 }] });
    n.module.peerReport("n1", mirrorReport("SECOND", { generation: n.module.persisted.generation }));
    await n.module.waitFor("PRIM");
    await sleep(PERMIT / 2); // the tick in flight
    const before = n.rep.renewals.length;
    await sleep(2 * PERMIT);
    expect(n.rep.renewals.length).toBe(before);
    expect(n.lines.some((l) => l.includes("permit: not renewed (this node may not act alone)"))).toBe(true);
    // n1 reports its copy out of sync (its stream ended and this node is still alive): ALONE, the data moves on
    // without it, and writes may be acknowledged alone again.
    const gen = n.module.persisted.generation;
    n.module.peerReport("n1", mirrorReport("SECOND", { generation: gen, ready: false }));
    await n.module.waitFor("ALONE");
    expect(n.module.persisted.generation).toBe(gen + 1);
    const again = n.rep.renewals.length;
    await sleep(PERMIT);
    expect(n.rep.renewals.length).toBeGreaterThan(again);
    await n.module.stop();
    await n.driver.close();
  });

  it("after a stall of its own longer than the permit, the driver waits one permit before renewing again", async () => {
    const n = await primaryNode();
    await sleep(PERMIT);
    // the event loop stalls (as after SIGSTOP/SIGCONT of the whole node): busy for 1.5 permits
    const stallStart = performance.now();
    while (performance.now() - stallStart < 1.5 * PERMIT) {
      /* stalled */
    }
    const resumed = performance.now();
    await sleep(3 * PERMIT);
    const after = n.rep.renewals.filter((x) => x.at >= resumed);
    expect(after.length).toBeGreaterThan(0);
    expect((after[0] as { at: number }).at - resumed).toBeGreaterThanOrEqual(PERMIT - 5);
    expect(n.lines.some((l) => /permit: this process stalled \d+ ms/.test(l))).toBe(true);
    await n.module.stop();
    await n.driver.close();
  });
});

// The arbiter's lease budget (src/checkers/arbiter.ts timing chain point 1): every renewal is min(permitMs, cap());
// none while the cap is <= 0, even with the peer in view (with an arbiter, writes acked alone need the lease).
describe("MirrorDriver permitCap (the arbiter's lease budget)", () => {
  it("renews min(permit, cap); nothing while the cap is <= 0, even with the peer in view", async () => {
    let cap = 1000;
    const { driver, module, membership, rep, lines } = await primaryNode({ permitCap: () => cap });
    try {
      await sleep(PERMIT);
      expect(rep.renewals.length).toBeGreaterThan(0);
      expect(new Set(rep.renewals.map((x) => x.ms))).toEqual(new Set([PERMIT])); // the cap is above the permit
      cap = 120.7; // the lease ends soon: the permit shrinks to it
      await sleep(PERMIT / 2);
      const capped = rep.renewals.length;
      await sleep(PERMIT);
      expect(rep.renewals.slice(capped).map((x) => x.ms)).toContain(120);
      expect(Math.max(...rep.renewals.slice(capped).map((x) => x.ms))).toBe(120);
      cap = 0; // no lease: no renewal, whatever the view
      membership.set(["n0", "n1"]);
      await sleep(PERMIT / 2);
      const none = rep.renewals.length;
      await sleep(2 * PERMIT);
      expect(rep.renewals.length).toBe(none);
      expect(lines.some((l) => l.includes("no lease budget (permitCap)"))).toBe(true);
      cap = 1000;
      await sleep(PERMIT);
      expect(rep.renewals.length).toBeGreaterThan(none);
    } finally {
      await module.stop();
      await driver.close();
    }
  });
});
