/**
 * A module fed by its real checker runners (CheckerGroup with custom function probes, real timers): a
 * failure that a restart fixes, and one it does not — restarts bounded by maxloop, then the module stops,
 * each decision explained in the event log.
 */
import { describe, expect, it } from "vitest";
import { CheckerGroup, Module, type HookContext } from "../../src/index.js";
import { MemoryModuleStore, MemoryVipDriver } from "../../src/testing/index.js";

function app() {
  const s = { running: false, broken: false, fixOnRestart: true, starts: 0 };
  const hooks = {
    start_both: async (_ctx: HookContext) => {
      s.starts++;
      s.running = true;
      if (s.fixOnRestart) s.broken = false;
    },
    stop_both: async () => {
      s.running = false;
    },
  };
  return { s, hooks };
}

async function setup(fixOnRestart: boolean) {
  const { s, hooks } = app();
  s.fixOnRestart = fixOnRestart;
  const checkers = [
    { type: "custom", name: "custom:app", run: () => ({ ok: s.running && !s.broken, detail: s.broken ? "app answers 500" : "app ok" }), interval: 40, timeout: 30, rise: 1, fall: 2 },
  ];
  const m = await Module.create({ name: "web", kind: "farm", hooks, checkers, restart: { maxloop: 2, loopInterval: 60_000 } }, { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
  const group = new CheckerGroup(m.definition.checkers, "module web");
  const detach = m.attachCheckers(group);
  group.start();
  const texts: string[] = [];
  m.on("record", (r) => texts.push(r.text));
  return { s, m, group, detach, texts };
}

describe("module + checkers", () => {
  it("a failure fixed by a restart: one restart, the module stays UP", async () => {
    const { s, m, group, detach, texts } = await setup(true);
    await m.start();
    await m.waitFor("UP");
    s.broken = true;
    await m.waitFor(() => s.starts === 2 && m.status.state === "UP" && !m.status.transient, 5000);
    // Poll (with a deadline) until the checker confirms the fix; no further restart happens.
    await new Promise<void>((resolve) => {
      const deadline = Date.now() + 2000;
      const poll = () => (group.runners[0]!.state === "ok" || Date.now() > deadline ? resolve() : setTimeout(poll, 20));
      poll();
    });
    expect(group.runners[0]!.state).toBe("ok");
    expect(s.starts).toBe(2);
    expect(m.status.state).toBe("UP");
    expect(texts.some((t) => t.startsWith("checker custom:app failed") && t.endsWith("-> restart (1 of 2 in 1m)"))).toBe(true);
    detach();
    await group.stop();
    await m.close();
  });

  it("a failure a restart does not fix: maxloop restarts, then stop", async () => {
    const { s, m, group, detach, texts } = await setup(false);
    await m.start();
    await m.waitFor("UP");
    s.broken = true;
    const st = await m.waitFor("STOP", 10_000);
    expect(st.reason).toContain("restart budget exhausted (2 of 2 in 1m) -> stop");
    expect(s.starts).toBe(3); // first start + 2 restarts
    const decisions = texts.filter((t) => t.startsWith("checker custom:app failed"));
    expect(decisions).toHaveLength(3);
    expect(decisions[0]).toMatch(/-> restart \(1 of 2 in 1m\)$/);
    expect(decisions[1]).toMatch(/still failing after the restart\) -> restart \(2 of 2 in 1m\)$/);
    expect(decisions[2]).toMatch(/-> stop \(restart budget exhausted: 2 of 2 in 1m\)$/);
    detach();
    await group.stop();
    await m.close();
  });
});
