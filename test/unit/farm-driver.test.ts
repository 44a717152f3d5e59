/**
 * FarmDriver with fakes (filter, VIP, module, membership, clock): the contested mask it applies with each table
 * follows its peers' published held sets and the grace of gained buckets, and it publishes its own held set.
 */
import { describe, expect, it } from "vitest";
import { EventEmitter } from "eventemitter3";
import { assignBuckets, BUCKET_COUNT, ownedMask } from "../../src/core/buckets.js";
import { decodeBucketSet, encodeBucketSet } from "../../src/core/farm.js";
import type { ModuleReport } from "../../src/core/module/types.js";
import { FarmDriver, type FarmFilterLike } from "../../src/farm/farm.js";
import type { Module, ModuleMembership } from "../../src/runtime/module.js";
import { FakeClock } from "../../src/testing/sim/clock.js";

const report: ModuleReport = { module: "web", state: "UP", ready: true, upToDate: true, generation: 0, candidate: false };
const maskOf = (...bs: number[]): Uint8Array => {
  const m = new Uint8Array(BUCKET_COUNT);
  for (const b of bs) m[b] = 1;
  return m;
};
const count = (m: Uint8Array) => m.reduce((s, v) => s + (v ? 1 : 0), 0);
const flush = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};

class FakeFilter implements FarmFilterLike {
  calls: { owned: Uint8Array; contested: Uint8Array | undefined }[] = [];
  flags = new Uint8Array(BUCKET_COUNT);
  prunes = 0;
  async start() {}
  async stop() {}
  async setOwned(owned: Uint8Array, contested?: Uint8Array) {
    this.calls.push({ owned: Uint8Array.from(owned), contested: contested && Uint8Array.from(contested) });
  }
  async pruneMayHold() {
    this.prunes++;
    return { cleared: [], flags: Uint8Array.from(this.flags) };
  }
  get last() {
    return this.calls.at(-1)!;
  }
}

function setup(nodes: string[] = ["a", "b"]) {
  const clock = new FakeClock(0);
  const filter = new FakeFilter();
  const published: string[] = [];
  const driver = new FarmDriver({
    module: "web", nodeId: "a", vip: { start: async () => {}, stop: async () => {} }, filter, clock, settleMs: 150, contestGraceMs: 1000, pruneEveryMs: 0,
    publishHeld: (h) => published.push(h), nodes,
  });
  const module = Object.assign(new EventEmitter(), { status: { state: "UP", ready: true, transient: false } }) as unknown as Module;
  const metas = new Map<string, unknown>();
  const members = nodes.slice(0, 2);
  const mem = Object.assign(new EventEmitter(), { nodeId: "a", peerMeta: (id: string) => metas.get(id), setMeta: () => undefined });
  Object.defineProperty(mem, "view", { get: () => ({ epoch: 1, members: members.map((id) => ({ id, weight: 1 })) }) });
  const membership = mem as unknown as ModuleMembership;
  const peer = (id: string, held: Uint8Array | undefined) => {
    const meta = { modules: { web: report }, ...(held ? { held: { web: encodeBucketSet(held) } } : {}) };
    metas.set(id, meta);
    mem.emit("peerMeta", { node: id, meta });
  };
  return { clock, filter, published, driver, module, membership, mem, members, peer };
}

describe("FarmDriver contested buckets", () => {
  it("stays strict while the peer's held set is unknown or within the grace, then drops the lookup where no peer holds", async () => {
    const s = setup();
    s.driver.bind(s.module, s.membership);
    s.peer("b", undefined); // b serves but publishes no held set (yet)
    await s.driver.add();
    s.clock.advance(150);
    await flush();
    const mine = ownedMask(assignBuckets([{ id: "a", weight: 1 }, { id: "b", weight: 1 }]), "a");
    expect(Array.from(s.filter.last.owned)).toEqual(Array.from(mine));
    expect(count(s.filter.last.contested!)).toBe(BUCKET_COUNT); // b unknown: every bucket contested
    // Published: owned, pruned flags (none) -> exactly the owned set.
    expect(Array.from(decodeBucketSet(s.published.at(-1))!)).toEqual(Array.from(mine));

    const theirs = Uint8Array.from(mine, (v) => 1 - v);
    s.peer("b", theirs);
    await flush();
    s.clock.advance(500);
    await flush();
    // Still inside the grace of the gain: the table was not re-applied as sole.
    expect(s.filter.calls.every((c) => !c.contested || c.owned.every((v, b) => !v || c.contested![b]))).toBe(true);
    s.clock.advance(600); // grace over at 150 + 1000
    await flush();
    expect(count(s.filter.last.owned)).toBe(count(mine));
    expect(s.filter.last.owned.some((v, b) => v && s.filter.last.contested![b])).toBe(false); // sole everywhere
    expect(s.driver.contested.some((v, b) => v && mine[b])).toBe(false);

    // b may still hold connections in two of a's buckets (they moved from it): those two are contested again.
    const [x, y] = [...mine.keys()].filter((b) => mine[b]);
    s.peer("b", Uint8Array.from(theirs, (v, b) => (b === x || b === y ? 1 : v)));
    await flush();
    expect([...s.filter.last.owned.keys()].filter((b) => s.filter.last.owned[b] && s.filter.last.contested![b])).toEqual([x, y]);
    // b leaves the view: it may be frozen or cut off, still holding connections anywhere, and may come back before
    // the views merge: every bucket stays contested (strict) while a configured node is missing.
    s.members.splice(1, 1);
    s.mem.emit("viewChange", { view: s.membership.view, agreed: true });
    s.clock.advance(200);
    await flush();
    expect(count(s.filter.last.owned), JSON.stringify(s.filter.calls.map((c) => count(c.owned)))).toBe(BUCKET_COUNT);
    s.clock.advance(3000);
    await flush();
    expect(count(s.filter.last.contested!)).toBe(BUCKET_COUNT);
    // b is back (it lost its buckets to a, publishes its held set = its flags): contested while the view is not
    // agreed, and for the grace after it rejoined; then only where b holds.
    s.members.push("b");
    s.peer("b", maskOf(x!));
    s.mem.emit("viewChange", { view: s.membership.view, agreed: false });
    await flush();
    expect(count(s.filter.last.contested!)).toBe(BUCKET_COUNT);
    s.mem.emit("viewChange", { view: s.membership.view, agreed: true });
    s.clock.advance(500);
    await flush();
    expect(s.filter.last.owned.every((v, b) => !v || s.filter.last.contested![b])).toBe(true);
    s.clock.advance(1000);
    await flush();
    const strict = [...s.filter.last.owned.keys()].filter((b) => s.filter.last.owned[b] && s.filter.last.contested![b]);
    expect(strict).toEqual([x]);
  });

  it("after a stall releases every bucket, takes them back only after stallHoldMs, an agreed view and settleMs", async () => {
    const s = setup();
    s.driver.bind(s.module, s.membership);
    s.peer("b", new Uint8Array(BUCKET_COUNT));
    await s.driver.add();
    s.clock.advance(150);
    await flush();
    const mine = ownedMask(assignBuckets([{ id: "a", weight: 1 }, { id: "b", weight: 1 }]), "a");
    expect(Array.from(s.filter.last.owned)).toEqual(Array.from(mine));
    s.clock.advance(5000);
    await flush();
    s.driver.stalled("test");
    await flush();
    expect(count(s.filter.last.owned)).toBe(0); // released at once
    // The peer advertises another view (it dropped us): not agreed; the hold (1000 ms) passes: still nothing.
    s.mem.emit("viewChange", { view: s.membership.view, agreed: false });
    s.clock.advance(1500);
    await flush();
    expect(count(s.filter.last.owned)).toBe(0);
    s.mem.emit("viewChange", { view: s.membership.view, agreed: true });
    await flush();
    expect(count(s.filter.last.owned)).toBe(0);
    s.clock.advance(150); // settleMs after the view is agreed
    await flush();
    expect(Array.from(s.filter.last.owned)).toEqual(Array.from(mine));
    expect(s.filter.last.owned.every((v, b) => !v || s.filter.last.contested![b])).toBe(true); // gained: in its grace
  });

  it("a stall shorter than stallMinMs only re-applies the table in force, strict everywhere for the grace", async () => {
    const s = setup();
    s.driver.bind(s.module, s.membership);
    s.peer("b", new Uint8Array(BUCKET_COUNT));
    await s.driver.add();
    for (const ms of [150, 1000, 1000]) {
      s.clock.advance(ms);
      await flush();
    }
    const mine = ownedMask(assignBuckets([{ id: "a", weight: 1 }, { id: "b", weight: 1 }]), "a");
    expect(s.filter.last.owned.some((v, b) => v && s.filter.last.contested![b])).toBe(false);
    const n = s.filter.calls.length;
    s.driver.stalled("short", 300); // default stallMinMs 500: the peers cannot have taken anything
    await flush();
    expect(s.filter.calls.length).toBe(n + 1);
    expect(Array.from(s.filter.last.owned)).toEqual(Array.from(mine));
    expect(count(s.filter.last.contested!)).toBe(BUCKET_COUNT);
    s.clock.advance(1000);
    await flush();
    expect(Array.from(s.filter.last.owned)).toEqual(Array.from(mine));
    expect(s.filter.last.owned.some((v, b) => v && s.filter.last.contested![b])).toBe(false);
  });

  it("publishes buckets it may still hold after releasing them, and an empty set once removed", async () => {
    const s = setup();
    s.members.splice(1, 1); // alone first
    s.driver.bind(s.module, s.membership);
    await s.driver.add();
    s.clock.advance(150);
    await flush();
    expect(count(decodeBucketSet(s.published.at(-1))!)).toBe(BUCKET_COUNT);
    s.filter.flags[7] = 1; // a connection was accepted in bucket 7
    s.filter.flags[8] = 1;
    s.members.push("b");
    s.peer("b", new Uint8Array(BUCKET_COUNT));
    s.mem.emit("viewChange", { view: s.membership.view });
    await flush();
    const mine = ownedMask(assignBuckets([{ id: "a", weight: 1 }, { id: "b", weight: 1 }]), "a");
    const held = decodeBucketSet(s.published.at(-1))!;
    for (let b = 0; b < BUCKET_COUNT; b++) expect(held[b], `bucket ${b}`).toBe(mine[b] || b === 7 || b === 8 ? 1 : 0);
    expect(s.filter.prunes).toBeGreaterThan(1); // flags are read (after a prune) after every table change
    await s.driver.remove();
    expect(s.published.at(-1)).toBe("");
  });

  it("an owner set that changes while this node's share stays is still reported (chaos seed 1579128077)", async () => {
    // [a,b] -> [a] (a takes b's share, but only after the settle time: [a,b] had just formed) -> [a,c] (a releases
    // c's share at once, the take still pending) -> [a,b,c]: a's share over the three is exactly what it holds now,
    // so no table is applied; the last event must still name the three owners, not [a,c] (the chaos
    // farm-convergence check and the farm lab's waits read it).
    const s = setup(["a", "b", "c"]);
    const events: { owners: string[]; owned: number }[] = [];
    s.driver.on("buckets", (e) => events.push({ owners: [...e.owners], owned: e.owned }));
    s.driver.bind(s.module, s.membership);
    s.peer("b", undefined);
    s.peer("c", undefined);
    await s.driver.add();
    const view = async (ids: string[], advanceMs = 0) => {
      s.members.splice(0, s.members.length, ...ids);
      s.mem.emit("viewChange", { view: s.membership.view, agreed: true });
      await flush();
      s.clock.advance(advanceMs);
      await flush();
    };
    const share = (ids: string[]) => count(ownedMask(assignBuckets(ids.map((id) => ({ id, weight: 1 })))!, "a"));
    await view(["a", "b", "c"], 150);
    await view(["a", "b"]); // c left a settled set: a takes c's share at once
    expect(events.at(-1)).toEqual({ owners: ["a", "b"], owned: share(["a", "b"]) });
    await view(["a"]); // b left a set that had not settled: the take waits
    await view(["a", "c"]); // c's share of a's is released at once, b's still to take
    expect(events.at(-1)).toEqual({ owners: ["a", "c"], owned: share(["a", "b", "c"]) });
    await view(["a", "b", "c"], 1000);
    expect(count(s.filter.last.owned)).toBe(share(["a", "b", "c"]));
    expect(events.at(-1)).toEqual({ owners: ["a", "b", "c"], owned: share(["a", "b", "c"]) });
  });
});
