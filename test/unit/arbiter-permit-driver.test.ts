/**
 * MirrorDriver `permitCap` (the arbiter's lease budget, src/checkers/arbiter.ts timing chain point 1): every renewal
 * is min(permitMs, cap()); none while the cap is <= 0, even with the peer in view (with an arbiter, writes acked alone
 * need the lease). Real module engine, fake replicator recording `renewPermit`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { afterEach, describe, expect, it } from "vitest";
import { FakeMembership } from "./helpers/fake-membership.js";
import { Module, type VipDriver } from "../../src/runtime/module.js";
import { MirrorDriver, type ReplicatorLike } from "../../src/mirror/mirror.js";
import type { FileReplicatorEvents, FileReplicatorOptions, ReplicatorMetrics } from "../../src/mirror/FileReplicator.js";

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

describe("MirrorDriver permitCap (the arbiter's lease budget)", () => {
  it("renews min(permit, cap); nothing while the cap is <= 0, even with the peer in view", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-arbiter-permit-"));
    dirs.push(dir);
    let cap = 1000;
    const reps: FakeRep[] = [];
    const lines: string[] = [];
    const driver = new MirrorDriver({
      nodeId: "n0",
      backingDir: join(dir, "data"),
      mountPoint: join(dir, "mnt"),
      keyFile: join(dir, "key"),
      listen: { host: "198.18.0.10", port: 7790 },
      peer: { host: "198.18.0.11", port: 7790 },
      permitMs: PERMIT,
      permitCap: () => cap,
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
      { nodeId: "n0", vip },
    );
    const membership = new FakeMembership();
    driver.bind(module, membership);
    membership.set(["n0"]);
    module.view({ epoch: 1, members: [{ id: "n0", weight: 1 }] });
    await module.start();
    await module.waitFor("ALONE");
    const rep = reps.find((r) => r.options.role === "primary") as FakeRep;
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
