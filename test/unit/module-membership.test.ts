/**
 * Whole chain on virtual time: two nodes, each with the real membership driver (LAN preset, heartbeats
 * with HMAC over a fake datagram network) and a mirror module bound to it with `bindMembership`. A partition
 * of the primary's node makes the in-sync secondary fail over; the time from the cut to the secondary being
 * ALONE and ready is measured in virtual ms (detection + failover, the app start being an instant function).
 */
import { describe, expect, it } from "vitest";
import { Membership, Module, bindMembership, generateKey } from "../../src/index.js";
import { isPrimaryState } from "../../src/core/module/types.js";
import { FakeClock, FakeNetwork, MemoryModuleStore, MemoryVipDriver, Rng } from "../../src/testing/index.js";
import { SimTransport } from "./helpers/sim-transport.js";

const ADDR: Record<string, string> = { "198.18.0.10": "a", "198.18.0.11": "b" };


const flush = () => new Promise<void>((r) => setImmediate(r));

describe("modules over membership (virtual time)", () => {
  it("partition of the primary: the in-sync secondary fails over; detection + failover measured", async () => {
    const clock = new FakeClock(1_000_000);
    const net = new FakeNetwork(clock, new Rng(7), { networks: 1, minDelayMs: 0.2, maxDelayMs: 1, duplicate: 0 });
    const key = generateKey();
    const nodes = [
      { id: "a", addresses: ["198.18.0.10"] },
      { id: "b", addresses: ["198.18.0.11"] },
    ];
    const run = async (ms: number, step = 5) => {
      for (let t = 0; t < ms; t += step) {
        clock.advance(step);
        await flush();
      }
    };
    const sides = await Promise.all(
      ["a", "b"].map(async (id, i) => {
        const membership = new Membership({ clusterId: "c1", nodeId: id, nodes, key, clock, transport: new SimTransport(net, id, ADDR), incarnation: 1 + i });
        const module = await Module.create(
          { name: "db", kind: "mirror", vips: ["198.18.0.100/24"], hooks: { start_prim: async () => {}, start_second: async () => {} } },
          { nodeId: id, clock, vip: new MemoryVipDriver(), store: new MemoryModuleStore() },
        );
        const unbind = bindMembership(membership, [module]);
        await membership.start();
        return { id, membership, module, unbind };
      }),
    );
    const [a, b] = sides as [(typeof sides)[0], (typeof sides)[0]];
    await run(2000);
    expect(a.membership.view.members.map((m) => m.id)).toEqual(["a", "b"]);

    await a.module.start();
    await b.module.start();
    await run(100);
    await a.module.prim();
    await run(500);
    // PRIM only once the secondary is in sync: until then a's writes are only logged for the resync.
    expect(a.module.status.state).toBe("ALONE");
    expect(b.module.status.state).toBe("SECOND");
    b.module.replication({ inSync: true });
    await run(500);
    expect(a.module.status.state).toBe("PRIM");
    expect(a.module.persisted.soleOwner).toBe(false);

    // Cut a off (both directions).
    const cutAt = clock.now();
    net.link("a", "b", 0).blocked = true;
    net.link("b", "a", 0).blocked = true;
    let readyAt: number | undefined;
    b.module.on("state", (s) => {
      if (s.state === "ALONE" && s.ready && readyAt === undefined) readyAt = clock.now();
    });
    await run(3000);
    expect(b.module.status).toMatchObject({ state: "ALONE", ready: true });
    expect(readyAt).toBeDefined();
    const failoverMs = readyAt! - cutAt;
    console.log(`virtual failover time (detection + failover, LAN preset): ${failoverMs} ms`);
    expect(failoverMs).toBeLessThan(1000);
    // The cut-off primary also lost its peer: it stays primary alone (no split-brain checker configured here).
    expect(a.module.status.state).toBe("ALONE");

    // Heal: both went ALONE from generation 1 (a when it lost its in-sync secondary, b at its failover), so
    // both are at generation 2 and both acknowledged writes alone: a true split brain. Neither copy is discarded
    // (the node id no longer breaks that tie): both stop and wait for an operator.
    expect(a.module.persisted.generation).toBe(2);
    expect(b.module.persisted.generation).toBe(2);
    expect(a.module.persisted.aloneWrites).toBe(true);
    expect(b.module.persisted.aloneWrites).toBe(true);
    net.healAll();
    await run(3000);
    // One side noticed first and stopped (app, VIP) without discarding anything; the other keeps serving. Both log it.
    const serving = [a, b].filter((s) => isPrimaryState(s.module.status.state));
    const held = [a, b].filter((s) => s.module.status.state === "WAIT");
    expect(serving.length).toBe(1);
    expect(held.length).toBe(1);
    const [p, w] = [serving[0]!, held[0]!];
    expect(w.module.persisted.splitBrain).toBe(true);
    expect(w.module.persisted.aloneWrites).toBe(true);
    for (const s of [p, w]) {
      const other = s === p ? w : p;
      const lines = s.module.log.recent().filter((r) => r.text.includes(`split brain: this node (generation 2) and ${other.id} (generation 2)`));
      expect(lines.length).toBe(1);
    }
    await run(3000);
    expect(w.module.status.state).toBe("WAIT"); // no silent discard, however long it waits
    // The operator keeps the serving node's data: `second` on the other discards its own changes (resync by checksum).
    await w.module.second();
    await run(1000);
    expect(w.module.status.state).toBe("SECOND");
    expect(w.module.persisted.upToDate).toBe(false);
    expect(w.module.report.diverged).toBe(true);
    expect(w.module.log.recent().some((r) => r.text.includes("discarding writes this node acknowledged alone"))).toBe(true);
    w.module.replication({ inSync: true }); // the resync from the primary finished
    await run(500);
    expect(p.module.status.state).toBe("PRIM");
    expect(w.module.persisted.diverged).toBe(false);

    for (const s of sides) {
      s.unbind();
      await s.module.close();
      await s.membership.stop();
    }
  });

  it("split brain over membership: the primary cut off from its peer and its witness steps down; the other side takes over; never both", async () => {
    const clock = new FakeClock(1_000_000);
    const net = new FakeNetwork(clock, new Rng(11), { networks: 1, minDelayMs: 0.2, maxDelayMs: 1, duplicate: 0 });
    const key = generateKey();
    const nodes = [
      { id: "a", addresses: ["198.18.0.10"] },
      { id: "b", addresses: ["198.18.0.11"] },
    ];
    const sides = await Promise.all(
      ["a", "b"].map(async (id, i) => {
        const membership = new Membership({ clusterId: "c1", nodeId: id, nodes, key, clock, transport: new SimTransport(net, id, ADDR), incarnation: 1 + i });
        const vip = new MemoryVipDriver();
        const module = await Module.create(
          {
            name: "db",
            kind: "mirror",
            vips: ["198.18.0.100/24"],
            hooks: { start_prim: async () => {}, start_second: async () => {} },
            checkers: [{ type: "split-brain", name: "witness", witnesses: ["198.18.0.1"] }],
            mirror: { peerWait: 2000 },
          },
          { nodeId: id, clock, vip, store: new MemoryModuleStore() },
        );
        const unbind = bindMembership(membership, [module]);
        await membership.start();
        return { id, membership, module, vip, unbind };
      }),
    );
    const [a, b] = sides as [(typeof sides)[0], (typeof sides)[0]];
    const witness = (s: (typeof sides)[0], ok: boolean) =>
      s.module.checker({ type: "checker", checker: "witness", kind: "split-brain", ok, action: "wait", reason: ok ? "198.18.0.1 answers" : "198.18.0.1 no answer" });
    // Sampled every virtual 5 ms: both primary (PRIM/ALONE, not leaving the role) at once is a violation.
    let both = 0;
    const primary = (m: Module) => {
      const st = m.status;
      return (st.state === "PRIM" || st.state === "ALONE") && !(st.transient && st.next !== "PRIM" && st.next !== "ALONE");
    };
    const run = async (ms: number, step = 5) => {
      for (let t = 0; t < ms; t += step) {
        clock.advance(step);
        await flush();
        if (primary(a.module) && primary(b.module)) both++;
      }
    };
    await run(2000);
    witness(a, true);
    witness(b, true);
    await a.module.start();
    await b.module.start();
    await run(100);
    await a.module.prim();
    await run(500);
    b.module.replication({ inSync: true });
    await run(500);
    expect(a.module.status.state).toBe("PRIM");
    expect(b.module.status).toMatchObject({ state: "SECOND", ready: true });

    // a loses the witness (its checker judges faster than membership: the verdict comes first), then b.
    witness(a, false);
    net.link("a", "b", 0).blocked = true;
    net.link("b", "a", 0).blocked = true;
    await run(3000);
    expect(b.module.status).toMatchObject({ state: "ALONE", ready: true });
    expect(a.module.status).toMatchObject({ state: "WAIT", transient: false });
    expect(a.module.status.reason).toContain("cut off earlier: waiting for b");
    expect(a.vip.held.size).toBe(0);
    expect(b.vip.held.has("198.18.0.100/24")).toBe(true);
    // b is named silent (still in a's view, silent past lossTimeoutMs - pulseMs) or out of view, whichever came first.
    expect(a.module.log.recent().some((r) => /WARN: cut off: (b out of view|b silent \(still in view\)) and split-brain witness unreachable \(198\.18\.0\.1 no answer\)/.test(r.text))).toBe(true);
    // The witness answers again, peerWait passes: a still waits (b took over), and says so.
    witness(a, true);
    await run(5000);
    expect(a.module.status.state).toBe("WAIT");
    expect(a.module.persisted.soleOwner).toBe(false);
    // Heal: a becomes b's secondary; b is PRIM once a is in sync.
    net.healAll();
    await run(3000);
    expect(a.module.status.state).toBe("SECOND");
    a.module.replication({ inSync: true });
    await run(500);
    expect(b.module.status).toMatchObject({ state: "PRIM", ready: true });
    expect(both).toBe(0);

    for (const s of sides) {
      s.unbind();
      await s.module.close();
      await s.membership.stop();
    }
  });

  it("own stall (localStall from the membership): the primary steps down before serving, then fresh reports decide", async () => {
    const clock = new FakeClock(1_000_000);
    const net = new FakeNetwork(clock, new Rng(5), { networks: 1, minDelayMs: 0.2, maxDelayMs: 1, duplicate: 0 });
    const key = generateKey();
    const nodes = [
      { id: "a", addresses: ["198.18.0.10"] },
      { id: "b", addresses: ["198.18.0.11"] },
    ];
    const run = async (ms: number, step = 5) => {
      for (let t = 0; t < ms; t += step) {
        clock.advance(step);
        await flush();
      }
    };
    const sides = await Promise.all(
      ["a", "b"].map(async (id, i) => {
        const membership = new Membership({ clusterId: "c1", nodeId: id, nodes, key, clock, transport: new SimTransport(net, id, ADDR), incarnation: 1 + i });
        const module = await Module.create(
          { name: "db", kind: "mirror", vips: [], hooks: { start_prim: async () => {}, start_second: async () => {} } },
          { nodeId: id, clock, vip: new MemoryVipDriver(), store: new MemoryModuleStore() },
        );
        const unbind = bindMembership(membership, [module]);
        await membership.start();
        return { id, membership, module, unbind };
      }),
    );
    const [a, b] = sides as [(typeof sides)[0], (typeof sides)[0]];
    await run(2000);
    await a.module.start();
    await b.module.start();
    await run(100);
    await a.module.prim();
    await run(500);
    b.module.replication({ inSync: true });
    await run(500);
    expect(a.module.status.state).toBe("PRIM");
    const states: string[] = [];
    a.module.on("state", (s) => states.push(`${s.state}${s.transient ? `->${s.next}` : ""}`));
    // A stall shorter than the peer's loss detection: nothing happens.
    (a.membership as unknown as { emit: (e: string, x: unknown) => void }).emit("localStall", { type: "localStall", at: clock.now(), gapMs: 300, localHealth: 0, reason: "test" });
    await run(100);
    expect(states).toEqual([]);
    // A long one: a steps down at once (synchronously, before any heartbeat is read), then is primary again because
    // b still reports itself an in-sync secondary after the hold.
    (a.membership as unknown as { emit: (e: string, x: unknown) => void }).emit("localStall", { type: "localStall", at: clock.now(), gapMs: 3000, localHealth: 0, reason: "test" });
    expect(a.module.status).toMatchObject({ state: "WAIT", ready: false }); // no stop_prim hook here: at once
    await run(500);
    expect(a.module.status.state).toBe("WAIT");
    await run(1500);
    expect(a.module.status.state).toBe("PRIM");
    expect(states[0]).toBe("PRIM->WAIT");
    expect(a.module.log.recent().some((r) => r.text.includes("own event loop stalled 3000 ms as primary"))).toBe(true);
    for (const s of sides) {
      s.unbind();
      await s.module.close();
      await s.membership.stop();
    }
  });

  it("a malformed report from the network is logged and ignored", async () => {
    const clock = new FakeClock(0);
    const m = await Module.create({ name: "db", kind: "mirror" }, { nodeId: "a", clock, vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
    const handlers: Record<string, (e: never) => void> = {};
    const fake = {
      view: { epoch: 1, members: [{ id: "a", weight: 1, incarnation: 1 }, { id: "b", weight: 1, incarnation: 1 }], hash: "x" },
      nodeId: "a",
      setMeta: () => {},
      peerMeta: () => undefined,
      on: (ev: string, fn: (e: never) => void) => (handlers[ev] = fn),
      off: () => {},
    };
    bindMembership(fake as never, [m]);
    handlers.peerMeta!({ node: "b", meta: { modules: { db: { module: "db", state: "BOSS", ready: true } } } } as never);
    const last = m.log.recent().at(-1)!;
    expect(last.text).toContain("WARN: ignored malformed report from b: invalid module report: state: expected");
    expect(last.text).toContain('"BOSS"');
    await m.close();
  });
});
