/**
 * A mirror primary whose witness fails and whose peer, still in the view, has gone silent (chaos seeds 1783697131 and
 * 920632347: the primary's membership, its loss timeout raised to 1.8 s by stalls of its own under load, kept a
 * partitioned peer in view while the peer declared it lost after 0.6 s and took over with the witness's lease: up to
 * 757 ms of two primaries). bindMembership reports a peer silent for lossTimeoutMs - pulseMs; the engine then treats
 * it as out of view for the split-brain rules: it steps down and waits to hear from it.
 */
import { describe, expect, it } from "vitest";
import { EventEmitter } from "eventemitter3";
import { Module, bindMembership, type ModuleMembership } from "../../src/runtime/module.js";
import { FakeClock } from "../../src/testing/sim/clock.js";
import { MemoryModuleStore, MemoryVipDriver } from "../../src/testing/index.js";
import { mirrorReport } from "./helpers/mirror-report.js";

const view = (...ids: string[]) => ({ epoch: 1, members: ids.map((id) => ({ id, weight: 1 })) });
const report = mirrorReport;
const sb = (ok: boolean) => ({ type: "checker" as const, checker: "sb", kind: "split-brain", ok, action: "wait" as const, reason: ok ? "lease held for 900 ms" : "witness unreachable (no answer for 1000 ms)" });

async function primary(): Promise<{ m: Module; ops: string[] }> {
  const ops: string[] = [];
  const m = await Module.create(
    {
      name: "db",
      kind: "mirror",
      vips: [],
      hooks: { start_prim: async () => void ops.push("start_prim"), stop_prim: async () => void ops.push("stop_prim") },
      checkers: [{ type: "split-brain", name: "sb", witnesses: ["198.18.0.1"] }],
      mirror: { defaultPrimary: "n0", peerWait: 100 },
    },
    { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore() },
  );
  m.checker(sb(true));
  m.view(view("n0", "n1"));
  m.peerReport("n1", report("SECOND", { ready: false, upToDate: false, generation: 0 }));
  await m.start();
  await m.waitFor("ALONE");
  m.peerReport("n1", report("SECOND", { generation: m.persisted.generation }));
  await m.waitFor("PRIM");
  return { m, ops };
}

describe("mirror primary and a silent peer", () => {
  it("witness unreachable and the in-sync peer silent: steps down and waits; primary again when the peer is heard", async () => {
    const { m, ops } = await primary();
    m.checker(sb(false)); // the peer is in view: nothing changes
    await m.idle();
    expect(m.status).toMatchObject({ state: "PRIM", transient: false });
    m.peerSilence("n1", true);
    await m.waitFor("WAIT", 1000);
    expect(ops).toEqual(["start_prim", "stop_prim"]);
    expect(m.persisted.soleOwner).toBe(false); // the peer may have taken over: not the last sole primary
    await new Promise((r) => setTimeout(r, 250)); // past peerWait: still waiting (no primary while cut off)
    expect(m.status).toMatchObject({ state: "WAIT", transient: false });
    expect(m.status.reason).toMatch(/cut off/);
    // Heard again, still an in-sync secondary (the cut was short, nobody took over): primary again.
    m.peerSilence("n1", false);
    await m.waitFor("PRIM", 1000);
    await m.close();
  });

  it("a fresh report ends the silence; a silent peer changes nothing while the witness answers", async () => {
    const { m } = await primary();
    m.peerSilence("n1", true);
    await m.idle();
    expect(m.status).toMatchObject({ state: "PRIM", transient: false }); // the witness confirms us
    m.checker(sb(false));
    await m.waitFor("WAIT", 1000);
    // The peer took over on its side: its report (news from it) ends the silence; this node follows it.
    m.peerReport("n1", report("ALONE", { generation: m.persisted.generation + 1 }));
    await m.waitFor("SECOND", 1000);
    await m.close();
  });

  it("bindMembership reports a peer in view silent for lossTimeoutMs - pulseMs, and heard again, on the modules' clock", async () => {
    const clock = new FakeClock(0);
    let lastHeard = 0;
    const mem = Object.assign(new EventEmitter(), {
      nodeId: "n0",
      view: { epoch: 1, hash: "h", members: [{ id: "n0", incarnation: 1, weight: 1 }, { id: "n1", incarnation: 1, weight: 1 }] },
      setMeta: () => undefined,
      peerMeta: () => undefined,
      peerSilenceMs: () => clock.now() - lastHeard,
      settings: { timing: { lossTimeoutMs: 600, pulseMs: 100, tickMs: 50 } },
    }) as unknown as ModuleMembership;
    const m = await Module.create({ name: "db", kind: "mirror", vips: [], mirror: {} }, { nodeId: "n0", clock, vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
    const fed: string[] = [];
    const orig = m.peerSilence.bind(m);
    m.peerSilence = (node: string, silent: boolean) => {
      fed.push(`${clock.now()} ${node} ${silent}`);
      orig(node, silent);
    };
    const unbind = bindMembership(mem, [m]);
    clock.advance(500);
    expect(fed).toEqual([]); // 500 ms of silence: not yet more than lossTimeoutMs - pulseMs
    clock.advance(200);
    expect(fed).toEqual(["550 n1 true"]); // seen at the first poll after
    lastHeard = clock.now();
    clock.advance(50);
    expect(fed).toEqual(["550 n1 true", "750 n1 false"]);
    unbind();
    clock.advance(1000);
    expect(fed.length).toBe(2);
    await m.close();
  });
});
