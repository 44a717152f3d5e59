/**
 * MirrorDriver with the real module engine (Module, in-memory VIP and store) and fake replicators: the order of
 * mount, VIP and application hooks, the secondary's in-sync reports, the grace after a lost stream, the first
 * resync mode, the refusal to mount a copy whose resync did not finish, and the fence before a failover.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { FakeMembership } from "./helpers/fake-membership.js";
import { afterEach, describe, expect, it } from "vitest";
import { Module, type VipDriver } from "../../src/runtime/module.js";
import { MemoryModuleStore } from "../../src/testing/index.js";
import type { ModuleReport } from "../../src/core/module/types.js";
import { MirrorDriver, type ReplicatorLike } from "../../src/mirror/mirror.js";
import type { FileReplicatorEvents, FileReplicatorOptions, ReplicatorMetrics } from "../../src/mirror/FileReplicator.js";
import { mirrorReport } from "./helpers/mirror-report.js";

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
  resync(): void {}
  metrics(): ReplicatorMetrics {
    return METRICS;
  }
  mountPath(rel = ""): string {
    if (this.pid === undefined) throw new Error("not mounted");
    return `/proc/${this.pid}/root/mnt/${rel}`;
  }
  commandInMount(argv: readonly string[]): [string, ...string[]] {
    return ["nsenter", ...argv];
  }
  /** Secondary: a primary connects and resyncs. */
  resynced(): void {
    this.state = "sync";
    this.emit("connected");
    this.consistent = false;
    this.emit("consistency", { consistent: false });
    this.consistent = true;
    this.emit("consistency", { consistent: true });
  }
}


const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function node(nodeId: string, opts: { defaultPrimary?: string; maxloop?: number; fenceMs?: number; witness?: boolean } = {}) {
  const ops: string[] = [];
  const reps: FakeRep[] = [];
  const dir = mkdtempSync(join(tmpdir(), "hf-mirror-driver-"));
  dirs.push(dir);
  const driver = new MirrorDriver({
    nodeId,
    backingDir: join(dir, "data"),
    mountPoint: join(dir, "mnt"),
    keyFile: join(dir, "key"),
    listen: { host: "198.18.0.10", port: 7790 },
    peer: { host: "198.18.0.11", port: 7790 },
    disconnectGraceMs: 50,
    ...(opts.fenceMs !== undefined ? { failoverFenceMs: opts.fenceMs } : {}),
    createReplicator: (o) => {
      const r = new FakeRep(o, ops);
      reps.push(r);
      return r;
    },
  });
  const vip: VipDriver = {
    add: async (v) => void ops.push(`vip add ${v}`),
    remove: async (v) => void ops.push(`vip remove ${v}`),
  };
  const module = await Module.create(
    {
      name: "db",
      kind: "mirror",
      vips: ["198.18.0.100/24"],
      hooks: driver.hooks({
        start_prim: async () => void ops.push(`app start in ${driver.mountPath("x")}`),
        stop_prim: async () => void ops.push("app stop"),
      }),
      restart: { maxloop: opts.maxloop ?? 3 },
      ...(opts.witness ? { checkers: [{ type: "split-brain", name: "sb", witnesses: ["198.18.0.1"] }] } : {}),
      mirror: { ...(opts.defaultPrimary ? { defaultPrimary: opts.defaultPrimary } : {}), peerWait: 100 },
    },
    { nodeId, vip, store: new MemoryModuleStore() },
  );
  const membership = new FakeMembership();
  driver.bind(module, membership);
  const syncs: string[] = [];
  driver.on("sync", (e) => syncs.push(`${e.inSync ? "in" : "out"}: ${e.reason}`));
  const setView = (ids: string[]) => {
    membership.set(ids);
    module.view({ epoch: ids.length, members: ids.map((id) => ({ id, weight: 1 })) });
  };
  return { ops, reps, dir, driver, module, setView, syncs };
}

const report = mirrorReport;

/** n1 joins n0 (PRIM) and becomes SECOND, resynced and ready. */
async function secondInSync(n: Awaited<ReturnType<typeof node>>): Promise<void> {
  n.setView(["n0", "n1"]);
  n.module.peerReport("n0", report("PRIM"));
  await n.module.start();
  await n.module.waitFor("SECOND");
  (n.reps[0] as FakeRep).resynced();
  await n.module.waitFor((s) => s.state === "SECOND" && s.ready);
}

describe("MirrorDriver", () => {
  it("primary: VIP, then mount, then the app; stop: app, VIP, then unmount", async () => {
    const n = await node("n0", { defaultPrimary: "n0" });
    n.setView(["n0"]);
    await n.module.start();
    await n.module.waitFor("ALONE");
    expect(n.driver.role).toBe("primary");
    await n.module.stop();
    await n.module.waitFor("STOP");
    await n.driver.close();
    expect(n.ops).toEqual([
      "vip add 198.18.0.100/24",
      "mount (first resync checksum)", // first start: the peer's copy is unknown
      "app start in /proc/4242/root/mnt/x",
      "app stop",
      "vip remove 198.18.0.100/24",
      "unmount",
    ]);
    expect(() => n.driver.mountPath()).toThrow(/not primary/);
    await n.module.close();
  });

  it("secondary: in sync only when a resync finished; out of sync when the stream ended and the primary is still alive", async () => {
    const n = await node("n1");
    n.setView(["n0", "n1"]);
    n.module.peerReport("n0", report("ALONE"));
    await n.module.start();
    await n.module.waitFor("SECOND");
    expect(n.ops).toEqual(["listen"]);
    expect(n.module.status.ready).toBe(false);
    const sec = n.reps[0] as FakeRep;
    sec.resynced();
    await n.module.waitFor((s) => s.state === "SECOND" && s.ready);
    expect(n.module.persisted).toMatchObject({ upToDate: true, generation: 1 });
    // The stream ends; the primary stays in the view (it went on alone): after the grace, out of sync.
    sec.state = "degraded";
    sec.emit("disconnected", { reason: "connection closed" });
    await n.module.waitFor((s) => s.state === "SECOND" && !s.ready, 1000);
    expect(n.syncs.at(-1)).toMatch(/^out: primary's stream ended 50 ms ago and the primary is still alive/);
    sec.resynced();
    await n.module.waitFor((s) => s.state === "SECOND" && s.ready);
    await n.module.close();
  });

  it("failover: a stream that ended because the primary died is not reported; the takeover resyncs by checksum", async () => {
    const n = await node("n1");
    await secondInSync(n);
    const sec = n.reps[0] as FakeRep;
    sec.state = "degraded";
    sec.emit("disconnected", { reason: "connection reset" });
    n.setView(["n1"]); // membership declares n0 lost before the grace ends
    await n.module.waitFor("ALONE", 2000);
    await new Promise((r) => setTimeout(r, 100)); // past the grace: nothing may be reported now
    expect(n.syncs.filter((x) => x.includes("still alive"))).toEqual([]);
    expect(n.ops).toEqual(["listen", "vip add 198.18.0.100/24", "stop listening", "mount (first resync checksum)", "app start in /proc/4242/root/mnt/x"]);
    await n.module.close();
  });

  it("handover from a live peer (swap): the first resync uses the extent log", async () => {
    const n = await node("n1");
    await secondInSync(n);
    n.module.peerReport("n0", report("WAIT", { candidate: false, ready: false })); // n0 yielded: app stopped, VIP gone
    await n.module.waitFor("ALONE", 2000);
    expect(n.ops).toContain("mount (first resync log)");
    await n.module.close();
  });

  it("swap on the primary: the mount (and its stream) stays through WAIT; unmount and extent log discarded when it becomes secondary", async () => {
    const n = await node("n0", { defaultPrimary: "n0" });
    n.setView(["n0", "n1"]);
    n.module.peerReport("n1", report("SECOND", { generation: 0, upToDate: false }));
    await n.module.start();
    await n.module.waitFor("PRIM");
    n.module.peerReport("n1", report("SECOND", { generation: n.module.persisted.generation }));
    await n.module.idle();
    writeFileSync(join(n.dir, ".data.hfextents"), "records of this node's time as primary");
    await n.module.swap();
    await n.module.waitFor("WAIT");
    expect(n.driver.role).toBe("primary"); // no app, but the stream to n1 stays up until n1 has taken over
    expect(n.ops.slice(-2)).toEqual(["app stop", "vip remove 198.18.0.100/24"]);
    n.module.peerReport("n1", report("ALONE", { generation: n.module.persisted.generation + 1 }));
    await n.module.waitFor("SECOND");
    expect(n.ops.slice(-2)).toEqual(["unmount", "listen"]);
    expect(readFileSync(join(n.dir, ".data.hfextents"), "utf8")).toBe("");
    await n.module.close();
  });

  it("after a partition the secondary's stream is suspect: out of sync, a fresh helper, in sync only after a new resync", async () => {
    const n = await node("n1", { witness: true });
    n.module.checker({ type: "checker", checker: "sb", kind: "split-brain", ok: true, action: "wait", reason: "witness answers" });
    await secondInSync(n);
    // Cut off from the primary and the witness: no takeover (the engine's split-brain rule); the primary may go on
    // alone, so the engine marks this copy outdated and waits (DRBD's "outdated"); the driver reports nothing.
    n.module.checker({ type: "checker", checker: "sb", kind: "split-brain", ok: false, action: "wait", reason: "no witness answered" });
    n.setView(["n1"]);
    await n.module.waitFor("WAIT", 1000);
    expect(n.module.persisted.upToDate).toBe(false);
    expect(n.syncs.filter((x) => x.startsWith("out"))).toEqual(["out: resync started: copy inconsistent"]);
    // The partition heals: the primary may have gone on alone over a stream this node never saw end.
    n.setView(["n0", "n1"]);
    n.module.peerReport("n0", report("ALONE", { generation: 2 }));
    n.module.checker({ type: "checker", checker: "sb", kind: "split-brain", ok: true, action: "wait", reason: "witness answers" });
    await n.module.waitFor((s) => s.state === "SECOND" && !s.transient && !s.ready, 1000);
    await n.driver.idle();
    expect(n.ops).toEqual(["listen", "stop listening", "listen"]);
    const fresh = n.reps[1] as FakeRep;
    fresh.resynced();
    await n.module.waitFor((s) => s.state === "SECOND" && s.ready);
    expect(n.module.persisted.generation).toBe(2);
    await n.module.close();
  });

  it("back in SECOND on a stream that resynced meanwhile: the in-sync report made from the state event is the last one advertised (chaos seed 208767711)", async () => {
    // The driver reports "still in sync on the same stream" from inside the module's `state` event (SECOND, not
    // ready). That input used to be carried out in the middle of the batch that emitted the event: its advertise
    // (SECOND ready) went out first, the batch's own (SECOND not ready) last, and the peer, primary ALONE, never saw
    // an in-sync secondary again (no further change to advertise): ALONE + SECOND in sync, for good.
    const n = await node("n1", { witness: true });
    const advertised: ModuleReport[] = [];
    n.module.on("advertise", (r) => advertised.push(r));
    const sb = (ok: boolean) => n.module.checker({ type: "checker", checker: "sb", kind: "split-brain", ok, action: "wait", reason: ok ? "witness answers" : "no witness answered" });
    sb(true);
    n.setView(["n0", "n1"]);
    n.module.peerReport("n0", report("PRIM"));
    await n.module.start();
    await n.module.waitFor("SECOND");
    const sec = n.reps[0] as FakeRep;
    sec.resynced();
    await n.module.waitFor((s) => s.state === "SECOND" && s.ready);
    // Cut off from the primary and the witness: outdated, WAIT. Meanwhile the primary's stream comes back on this
    // very helper and a resync completes (the view has not caught up yet): the copy is consistent again.
    sb(false);
    n.setView(["n1"]);
    await n.module.waitFor("WAIT", 1000);
    sec.resynced();
    // The view catches up: n0 is ALONE; this node becomes SECOND on the same, consistent stream.
    n.setView(["n0", "n1"]);
    n.module.peerReport("n0", report("ALONE", { generation: 2 }));
    sb(true);
    await n.module.waitFor((s) => s.state === "SECOND" && !s.transient && s.ready, 1000);
    await n.module.idle();
    expect(n.ops).toEqual(["listen"]); // the same helper all along
    expect(n.syncs.at(-1)).toBe("in: still in sync on the same stream");
    expect(advertised.at(-1)).toMatchObject({ state: "SECOND", ready: true, generation: 2 });
    expect(advertised.at(-1)).toEqual(n.module.report);
    await n.module.close();
  });

  it("a handshake failure is an error only when the replicator says the peer refused (typed flag, not its reason text)", async () => {
    const n = await node("n1");
    const errors: string[] = [];
    const logs: string[] = [];
    n.driver.on("error", (e) => errors.push(e.message));
    n.driver.on("log", (l) => logs.push(l));
    n.setView(["n0", "n1"]);
    n.module.peerReport("n0", report("ALONE"));
    await n.module.start();
    await n.module.waitFor("SECOND");
    const sec = n.reps[0] as FakeRep;
    sec.emit("authFailed", { reason: "peer failed authentication", refused: false });
    sec.emit("authFailed", { reason: "wrong key", refused: true });
    expect(errors).toEqual(["replication peer refused: wrong key"]);
    expect(logs).toContain("replication handshake did not complete: peer failed authentication");
    await n.module.close();
  });

  it("a restart after that refusal refuses again: its reason quotes the error (`without prim --force`) but it is not forced", async () => {
    const n = await node("n0", { defaultPrimary: "n0", maxloop: 2 });
    writeFileSync(join(n.dir, ".data.hfstate"), "inconsistent\n");
    const failed: string[] = [];
    const states: { cause: string; forced: boolean }[] = [];
    n.module.on("hook", (h, r) => {
      if (h === "start_prim" && !r.ok) failed.push(r.detail);
    });
    n.module.on("state", (s, ev) => {
      if (s.transient && s.next === "ALONE") states.push({ cause: ev.cause, forced: ev.forced === true });
    });
    n.setView(["n0"]);
    await n.module.start();
    await n.module.waitFor("STOP", 2000);
    expect(failed).toHaveLength(3); // the first start and two restarts, each refused
    expect(states.slice(1).every((x) => x.cause.includes("--force") && !x.forced)).toBe(true);
    expect(n.ops.some((o) => o.startsWith("mount"))).toBe(false);
    await n.module.prim({ force: true });
    await n.module.waitFor("ALONE", 2000);
    expect(states.at(-1)).toEqual({ cause: "command prim --force", forced: true });
    expect(n.ops).toContain("mount (first resync checksum)");
    await n.module.close();
  });

  it("refuses to mount a copy whose resync did not finish, unless prim --force", async () => {
    const n = await node("n0", { defaultPrimary: "n0", maxloop: 0 });
    writeFileSync(join(n.dir, ".data.hfstate"), "inconsistent\n");
    expect(n.driver.localCopy()).toBe("inconsistent");
    const errors: string[] = [];
    n.module.on("hook", (h, r) => {
      if (!r.ok) errors.push(`${h}: ${r.detail}`);
    });
    n.setView(["n0"]);
    await n.module.start();
    await n.module.waitFor("STOP", 2000);
    expect(errors.join("\n")).toMatch(/start_prim: .*local copy is inconsistent.*refusing to mount as primary without prim --force/);
    expect(n.ops.some((o) => o.startsWith("mount"))).toBe(false);
    await n.module.prim({ force: true });
    await n.module.waitFor("ALONE", 2000);
    expect(n.ops).toContain("mount (first resync checksum)");
    expect(n.driver.localCopy()).toBe("consistent"); // this copy is the reference now
    await n.module.close();
  });

  it("failover fence: the mount and the app wait failoverFenceMs after the peer left the view", async () => {
    const n = await node("n1", { fenceMs: 200 });
    await secondInSync(n);
    const t0 = performance.now();
    n.setView(["n1"]);
    await n.module.waitFor("ALONE", 2000);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(195);
    await n.module.close();
  });

  it("failover fence: it counts from the peer's departure, so a takeover decided later (a lease wait) waits only the rest", async () => {
    // The arbiter's case: the lease still names the lost primary, the engine waits for it to lapse; the fence has
    // partly run meanwhile. (A secondary that held the lease already takes over at once: the fence then runs whole,
    // and the primary, which sees the loss up to ~150 ms later, has left the role when this node's app starts.)
    const n = await node("n1", { fenceMs: 200, witness: true });
    const lines: string[] = [];
    n.driver.on("log", (l) => lines.push(l));
    const sb = (ok: boolean, reason: string, holder?: string) =>
      n.module.checker({ type: "checker", checker: "sb", kind: "split-brain", ok, action: "wait", reason, lease: holder === undefined ? {} : { holder } });
    sb(true, "lease held for 900 ms");
    await secondInSync(n);
    sb(false, "lease held by n0 for 300 ms", "n0");
    const t0 = performance.now();
    n.setView(["n1"]);
    await new Promise((r) => setTimeout(r, 80)); // within peerWait (100): still waiting for the lease
    expect(n.module.status).toMatchObject({ state: "SECOND", transient: false });
    sb(true, "lease held for 900 ms");
    await n.module.waitFor("ALONE", 2000);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(195);
    const waited = lines.map((l) => /^failover: waiting (\d+) ms \(200 ms after the peer left the view\)/.exec(l)).find((m) => m !== null);
    expect(Number(waited?.[1])).toBeLessThanOrEqual(121);
    await n.module.close();
  });
});
