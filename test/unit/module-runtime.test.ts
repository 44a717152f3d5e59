/**
 * The Module driver with function hooks, the in-memory VIP driver and store, real timers: commands,
 * hooks with their context, VIP order, persisted state, the event log, the async iterator, the restart
 * policy, a function hook that times out, and two modules wired together failing over.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  CommandRefusedError,
  FileModuleStore,
  ConfigError,
  Module,
  loadModulesFile,
  type HookContext,
  type ModuleDefinition,
} from "../../src/index.js";
import { MemoryModuleStore, MemoryVipDriver } from "../../src/testing/index.js";

function recorder() {
  const calls: string[] = [];
  const hook = (name: string, behave?: (ctx: HookContext) => Promise<void> | void) => async (ctx: HookContext) => {
    calls.push(`${name} ${ctx.state}->${ctx.nextState}`);
    ctx.log(`${name} says hello`);
    await behave?.(ctx);
  };
  return { calls, hook };
}

const view = (...ids: string[]) => ({ epoch: 1, members: ids.map((id) => ({ id, weight: 1 })) });

describe("Module driver", () => {
  it("runs a farm: start, checker restart within budget, then stop when exhausted; logs every decision", async () => {
    const { calls, hook } = recorder();
    const dir = mkdtempSync(join(tmpdir(), "hf-module-"));
    const vip = new MemoryVipDriver();
    const def: ModuleDefinition = {
      name: "web",
      kind: "farm",
      vips: ["198.18.0.100/24"],
      hooks: { start_both: hook("start_both"), stop_both: hook("stop_both") },
      restart: { maxloop: 1, loopInterval: 60_000 },
    };
    const m = await Module.create(def, { nodeId: "n0", vip, store: new MemoryModuleStore(), logDir: dir });
    let resets = 0;
    m.on("resetCheckers", () => resets++);
    await m.start();
    const up = await m.waitFor("UP");
    expect(up.ready).toBe(true);
    expect(vip.held.has("198.18.0.100/24")).toBe(true);
    await expect(m.start()).rejects.toBeInstanceOf(CommandRefusedError);

    m.checker({ type: "checker", checker: "tcp:web:80", ok: false, action: "restart", reason: "connect refused (3/3)" });
    await m.waitFor((s) => s.state === "UP" && !s.transient && calls.length >= 3);
    m.checker({ type: "checker", checker: "tcp:web:80", ok: false, action: "restart", reason: "connect refused (3/3)" });
    await m.waitFor("STOP");
    expect(calls).toEqual(["start_both WAIT->UP", "stop_both UP->UP", "start_both UP->UP", "stop_both UP->STOP"]);
    expect(vip.held.size).toBe(0);
    expect(resets).toBe(2);

    const text = readFileSync(join(dir, "web.log"), "utf8");
    expect(text).toContain("checker tcp:web:80 failed (connect refused (3/3)) -> restart (1 of 1 in 1m)");
    expect(text).toContain("-> stop (restart budget exhausted: 1 of 1 in 1m)");
    expect(text).toContain("hook start_both stdout: start_both says hello");
    const json = readFileSync(join(dir, "web.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(json.some((r) => r.kind === "event" && r.event.type === "state" && r.event.to === "STOP")).toBe(true);
    await m.close();
  });

  it("mirror: first start with prim, hooks get state/next/reason, VIP added before start_prim, state persisted", async () => {
    const order: string[] = [];
    const vip = new MemoryVipDriver();
    const store = new MemoryModuleStore();
    const reasons: string[] = [];
    const m = await Module.create(
      {
        name: "db",
        kind: "mirror",
        vips: ["198.18.0.101/24"],
        hooks: {
          start_prim: async (ctx) => {
            order.push(`start_prim vip=${vip.held.has("198.18.0.101/24")}`);
            reasons.push(`${ctx.module} ${ctx.hook} ${ctx.state} ${ctx.nextState} ${ctx.reason}`);
          },
          stop_prim: async () => {
            order.push(`stop_prim vip=${vip.held.has("198.18.0.101/24")}`);
          },
        },
      },
      { nodeId: "n0", vip, store },
    );
    m.view(view("n0"));
    const it = m.records();
    await m.start();
    await m.waitFor("WAIT");
    expect(m.status.reason).toContain("first start");
    await m.prim();
    await m.waitFor("ALONE");
    expect(reasons).toEqual(["db start_prim WAIT ALONE command prim"]);
    expect(store.states.get("db")).toMatchObject({ initialized: true, upToDate: true, generation: 1, soleOwner: true });
    await m.stop();
    await m.waitFor("STOP");
    expect(order).toEqual(["start_prim vip=true", "stop_prim vip=true"]);
    expect(vip.ops).toEqual(["add 198.18.0.101/24", "remove 198.18.0.101/24"]);
    await m.close();
    const texts: string[] = [];
    for await (const r of it) texts.push(r.text);
    expect(texts[0]).toBe("command start");
    expect(texts.at(-1)).toBe("state ALONE -> STOP: command stop");
  });

  it("a function hook that times out is a failure handled by the policy", async () => {
    const m = await Module.create(
      {
        name: "slow",
        kind: "farm",
        hookTimeout: 100,
        hooks: {
          start_both: (ctx) => new Promise<void>((_, reject) => ctx.signal.addEventListener("abort", () => reject(new Error("aborted")))),
        },
        restart: { maxloop: 0, loopInterval: 1000 },
      },
      { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore() },
    );
    await m.start();
    const s = await m.waitFor("STOP", 5000);
    expect(s.reason).toContain("start_both failed: timed out after 100ms (signal aborted)");
    await m.close();
  });

  it("has no in-memory defaults: a missing vip or store (a JavaScript caller) is a ConfigError naming the option", async () => {
    const def: ModuleDefinition = { name: "web", kind: "farm" };
    const create = (opts: object) => Module.create(def, opts as Parameters<typeof Module.create>[1]);
    await expect(create({ nodeId: "n0", store: new MemoryModuleStore() })).rejects.toThrow(/module options: vip: expected a VipDriver/);
    await expect(create({ nodeId: "n0", vip: new MemoryVipDriver() })).rejects.toThrow(/module options: store: expected a ModuleStateStore/);
    const both = await create({ nodeId: "n0" }).catch((e: unknown) => e);
    expect(both).toBeInstanceOf(ConfigError);
    expect((both as ConfigError).problems.map((p) => p.path)).toEqual(["vip", "store"]);
    await expect(create({ nodeId: "n0", vip: {}, store: new MemoryModuleStore() })).rejects.toThrow(ConfigError);
  });

  it("persists to files and a restarted module remembers its generation", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-store-"));
    const def: ModuleDefinition = { name: "db", kind: "mirror", mirror: { defaultPrimary: "n0", peerWait: 50 } };
    const m1 = await Module.create(def, { nodeId: "n0", vip: new MemoryVipDriver(), store: new FileModuleStore(dir) });
    m1.view(view("n0"));
    await m1.start();
    await m1.waitFor("ALONE");
    await m1.stop();
    await m1.waitFor("STOP");
    await m1.close();
    const m2 = await Module.create(def, { nodeId: "n0", vip: new MemoryVipDriver(), store: new FileModuleStore(dir) });
    expect(m2.persisted).toMatchObject({ initialized: true, generation: 1, soleOwner: true, upToDate: true });
    m2.view(view("n0"));
    await m2.start();
    // The last sole primary comes back alone after peerWait (50 ms, a real timer).
    const s = await m2.waitFor("ALONE", 5000);
    expect(s.reason).toContain("no peer after 50ms");
    expect(m2.persisted.generation).toBe(2);
    await m2.close();
  });

  it("two modules wired by an in-memory exchange: first start, sync, failover when the primary's node leaves", async () => {
    const mods = new Map<string, Module>();
    const vips = new Map<string, MemoryVipDriver>();
    for (const id of ["n0", "n1"]) {
      const vip = new MemoryVipDriver();
      vips.set(id, vip);
      const m = await Module.create({ name: "db", kind: "mirror", vips: ["198.18.0.102/24"], hooks: { start_prim: async () => {}, start_second: async () => {} } }, { nodeId: id, vip, store: new MemoryModuleStore() });
      mods.set(id, m);
    }
    const [a, b] = [mods.get("n0")!, mods.get("n1")!];
    a.on("advertise", (r) => queueMicrotask(() => b.peerReport("n0", r)));
    b.on("advertise", (r) => queueMicrotask(() => a.peerReport("n1", r)));
    a.view(view("n0", "n1"));
    b.view(view("n0", "n1"));
    await a.start();
    await b.start();
    await a.prim();
    await a.waitFor("ALONE"); // PRIM once b is in sync
    await b.waitFor("SECOND");
    b.replication({ inSync: true });
    await a.waitFor((s) => s.state === "PRIM" && a.persisted.soleOwner === false);
    // n0 disappears from n1's view: n1 fails over.
    b.view(view("n1"));
    const s = await b.waitFor("ALONE");
    expect(s.ready).toBe(true);
    expect(vips.get("n1")!.held.has("198.18.0.102/24")).toBe(true);
    expect(b.persisted.generation).toBe(2);
    await a.close();
    await b.close();
  });

  it("what a tick decides is carried out even when the input that came with it is refused", async () => {
    // A clock whose timers never fire: the peerWait deadline passes unnoticed until the next input, a refused
    // command. The tick before it decides ALONE (the last sole primary, no peer): that must still happen.
    let now = 1000;
    const clock = { now: () => now, setTimer: () => () => undefined };
    const store = new MemoryModuleStore();
    store.states.set("db", { initialized: true, upToDate: true, generation: 3, soleOwner: true, restarts: [] });
    const m = await Module.create(
      { name: "db", kind: "mirror", vips: [], hooks: { start_prim: async () => undefined }, mirror: { peerWait: 100 } },
      { nodeId: "n0", vip: new MemoryVipDriver(), store, clock },
    );
    m.view(view("n0"));
    await m.start();
    await m.waitFor("WAIT");
    now += 500;
    await expect(m.swap()).rejects.toBeInstanceOf(CommandRefusedError);
    for (let i = 0; i < 100 && !(m.status.state === "ALONE" && !m.status.transient); i++) await new Promise((r) => setTimeout(r, 10));
    expect(m.status).toMatchObject({ state: "ALONE", transient: false });
    expect(m.persisted.generation).toBe(4);
    await m.close();
  });

  it("loads several modules from a YAML file and runs them independently", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-modfile-"));
    const path = join(dir, "modules.yaml");
    writeFileSync(path, "modules:\n  - { name: web, kind: farm }\n  - { name: db, kind: mirror, mirror: { defaultPrimary: n0, peerWait: 10ms } }\n");
    const defs = loadModulesFile(path);
    const mods = await Promise.all(defs.map((d) => Module.create(d, { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore() })));
    for (const m of mods) m.view(view("n0"));
    await Promise.all(mods.map((m) => m.start()));
    await mods[0]!.waitFor("UP");
    await mods[1]!.waitFor("ALONE");
    await mods[0]!.stop();
    await mods[0]!.waitFor("STOP");
    expect(mods[1]!.status.state).toBe("ALONE");
    await Promise.all(mods.map((m) => m.close()));
    writeFileSync(path, "modules:\n  - { name: web, kind: farm, hooks: { start_both: 42 } }\n");
    expect(() => loadModulesFile(path)).toThrow(ConfigError);
    expect(() => loadModulesFile(path)).toThrow(/modules\.0\.hooks\.start_both/);
  });

  it("forcestop cancels the running hook (its signal aborts) and a hook still queued behind a slow VIP add", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slowVip = { ...new MemoryVipDriver(), add: async () => gate, remove: async () => {} };
    const calls: string[] = [];
    const m = await Module.create(
      { name: "db", kind: "mirror", vips: ["198.18.0.103/24"], hooks: { start_prim: async () => void calls.push("start_prim") } },
      { nodeId: "n0", vip: slowVip, store: new MemoryModuleStore() },
    );
    m.view(view("n0"));
    await m.start();
    await m.waitFor("WAIT");
    void m.prim(); // add VIP (held by the gate), then start_prim queued behind it
    const stopped = m.forcestop(); // resolves once the queued effects (the held VIP add) are through
    expect(m.status.state).toBe("STOP");
    release();
    await stopped;
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toEqual([]);
    expect(m.status.state).toBe("STOP");

    let aborted = false;
    const f = await Module.create(
      {
        name: "web",
        kind: "farm",
        hooks: { start_both: (ctx) => new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => ((aborted = true), resolve()))) },
      },
      { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore() },
    );
    await f.start();
    await f.waitFor((s) => s.transient && s.next === "UP");
    await f.forcestop();
    await new Promise((r) => setTimeout(r, 20));
    expect(aborted).toBe(true);
    expect(f.status).toMatchObject({ state: "STOP", transient: false });
    expect(f.log.recent().some((r) => r.text.includes("ignored result"))).toBe(false);
    await m.close();
    await f.close();
  });
});
