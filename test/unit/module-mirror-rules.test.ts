/**
 * MirrorDriver's part of the engine's safety rules (issue 5, chaos findings), with the real module engine and fake
 * replicators: a diverged secondary (a split-brain loser) is resynced by checksum, never by the primary's extent
 * log; a secondary whose helper reports an apply error (ENOSPC) is out of sync at once, not ~0.5-3 s later.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { FakeMembership } from "./helpers/fake-membership.js";
import { afterEach, describe, expect, it } from "vitest";
import { Module } from "../../src/runtime/module.js";
import { MemoryModuleStore, MemoryVipDriver } from "../../src/testing/index.js";
import type { ModuleReport } from "../../src/core/module/types.js";
import { MirrorDriver, type ReplicatorLike } from "../../src/mirror/mirror.js";
import { ReplicatorError } from "../../src/mirror/errors.js";
import type { FileReplicatorEvents, FileReplicatorOptions, ReplicatorMetrics, ResyncMode } from "../../src/mirror/FileReplicator.js";

const METRICS: ReplicatorMetrics = { bytesReplicated: 0, acks: 0, ackLatencyAvgUs: 0, ackLatencyMaxUs: 0, queueDepth: 0, logRecords: 0, resyncBytes: 0, degradedCount: 0 };

class FakeRep extends EventEmitter<FileReplicatorEvents> implements ReplicatorLike {
  state = "starting";
  consistent: boolean | undefined;
  pid: number | undefined;
  constructor(
    readonly options: FileReplicatorOptions,
    private readonly ops: string[],
  ) {
    super();
  }
  get role(): string {
    return this.options.role;
  }
  async start(): Promise<void> {
    this.pid = 4242;
    this.state = "degraded";
    this.ops.push(this.options.role === "primary" ? `mount (first resync ${this.options.initialSync})` : "listen");
  }
  async stop(): Promise<void> {
    this.state = "stopped";
    this.pid = undefined;
    this.ops.push(this.options.role === "primary" ? "unmount" : "stop listening");
  }
  resync(mode: ResyncMode): void {
    this.ops.push(`resync ${mode}`);
  }
  metrics(): ReplicatorMetrics {
    return METRICS;
  }
  mountPath(rel = ""): string {
    return `/proc/${this.pid ?? 0}/root/mnt/${rel}`;
  }
  commandInMount(argv: readonly string[]): [string, ...string[]] {
    return ["nsenter", ...argv];
  }
  resynced(): void {
    this.state = "sync";
    this.emit("connected");
    this.emit("consistency", { consistent: false });
    this.emit("consistency", { consistent: true });
  }
}


const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function node(nodeId: string, defaultPrimary?: string) {
  const ops: string[] = [];
  const reps: FakeRep[] = [];
  const dir = mkdtempSync(join(tmpdir(), "hf-mirror-rules-"));
  dirs.push(dir);
  const driver = new MirrorDriver({
    nodeId,
    backingDir: join(dir, "data"),
    mountPoint: join(dir, "mnt"),
    keyFile: join(dir, "key"),
    listen: { host: "198.18.0.10", port: 7790 },
    peer: { host: "198.18.0.11", port: 7790 },
    disconnectGraceMs: 3000,
    createReplicator: (o) => {
      const r = new FakeRep(o, ops);
      reps.push(r);
      return r;
    },
  });
  const module = await Module.create(
    {
      name: "db",
      kind: "mirror",
      vips: [],
      hooks: driver.hooks({ start_prim: async () => void ops.push("app start"), stop_prim: async () => void ops.push("app stop") }),
      mirror: { ...(defaultPrimary ? { defaultPrimary } : {}), peerWait: 100 },
    },
    { nodeId, vip: new MemoryVipDriver(), store: new MemoryModuleStore() },
  );
  const membership = new FakeMembership();
  driver.bind(module, membership);
  const syncs: string[] = [];
  driver.on("sync", (e) => syncs.push(`${e.inSync ? "in" : "out"}: ${e.reason}`));
  const setView = (ids: string[]) => {
    membership.set(ids);
    module.view({ epoch: ids.length, members: ids.map((id) => ({ id, weight: 1 })) });
  };
  return { ops, reps, driver, module, setView, syncs };
}

const report = (state: ModuleReport["state"], extra: Partial<ModuleReport> = {}): ModuleReport => ({
  module: "db",
  state,
  ready: false,
  upToDate: false,
  generation: 1,
  candidate: false,
  ...extra,
});

describe("MirrorDriver: the engine's safety rules", () => {
  it("a diverged secondary (split-brain loser) is resynced by checksum, not by the primary's extent log", async () => {
    const n = await node("n0", "n0");
    n.setView(["n0"]);
    await n.module.start();
    await n.module.waitFor("ALONE", 2000);
    await n.driver.idle();
    expect(n.ops).toContain("mount (first resync checksum)");
    n.setView(["n0", "n1"]);
    // A secondary that was not primary on its own line: nothing asked (the helper's own choice, log, stands).
    n.module.peerReport("n1", report("SECOND"));
    await n.module.idle();
    expect(n.ops.filter((o) => o.startsWith("resync"))).toEqual([]);
    // The peer lost a split brain (or gave up on its way to primary): it reports `diverged`.
    n.module.peerReport("n1", report("SECOND", { diverged: true }));
    await n.module.idle();
    expect(n.ops.filter((o) => o.startsWith("resync"))).toEqual(["resync checksum"]);
    // Asked once per episode, not at every report.
    n.module.peerReport("n1", report("SECOND", { diverged: true, generation: 1 }));
    n.module.peerReport("n1", report("SECOND", { diverged: true, ready: false, candidate: false }));
    await n.module.idle();
    expect(n.ops.filter((o) => o.startsWith("resync"))).toEqual(["resync checksum"]);
    expect(n.module.log.recent().some((r) => r.text.includes("resync by checksum"))).toBe(true);
    await n.module.close();
    await n.driver.close();
  });

  it("a secondary whose helper cannot apply an operation reports out of sync at once", async () => {
    const n = await node("n1");
    n.setView(["n0", "n1"]);
    n.module.peerReport("n0", report("PRIM", { ready: true, upToDate: true, candidate: true }));
    await n.module.start();
    await n.module.waitFor("SECOND", 2000);
    await n.driver.idle();
    const sec = n.reps[0]!;
    sec.resynced();
    await n.module.waitFor((s) => s.state === "SECOND" && s.ready, 2000);
    n.driver.on("error", () => undefined);
    const t0 = performance.now();
    sec.emit("error", new ReplicatorError("HOLDFAST_MIRROR_PEER", "secondary could not apply op write (seq 42): No space left on device"));
    // Synchronously: no timer, no next resync pass needed.
    expect(n.module.status).toMatchObject({ state: "SECOND", ready: false });
    expect(n.syncs.at(-1)).toMatch(/^out: secondary helper error: .*No space left on device/);
    expect(performance.now() - t0).toBeLessThan(100);
    // The engine's copy is no longer a failover candidate: the primary leaving now does not make it primary.
    n.setView(["n1"]);
    await n.module.waitFor("WAIT", 2000);
    await n.module.close();
    await n.driver.close();
  });
});
