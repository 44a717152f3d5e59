/**
 * PacketFilter's lease on the in-memory backend: granted by start(), renewed from a timer, lapsing when the
 * event loop is blocked (the renewal timer cannot run) and reported when renewals resume; validated options.
 * The kernel backends are tested against dead and frozen processes in test/lab/filter-lease.test.ts.
 */
import { describe, expect, it } from "vitest";
import { BUCKET_COUNT } from "../../src/core/buckets.js";
import { ConfigError } from "../../src/core/errors.js";
import { craftPacket, DEFAULT_LEASE_MS, MemoryFilterBackend, PacketFilter, type FilterBackend } from "../../src/farm/filter/index.js";

const config = { vips: ["198.18.0.100"], rules: [{ protocol: "tcp", port: 80, by: "address+port" }] } as const;
const syn = craftPacket({ src: "198.18.0.201", dst: "198.18.0.100", protocol: "tcp", sport: 5555, dport: 80 });
const all = new Uint8Array(BUCKET_COUNT).fill(1);

/** Blocks the event loop (as a hung synchronous call would) for `ms`. */
function block(ms: number): void {
  const end = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
  while (process.hrtime.bigint() < end);
}

describe("PacketFilter lease (in-memory backend)", () => {
  it("is granted by start and lapses while the event loop is blocked; renewals resume and report the lapse", async () => {
    const mem = new MemoryFilterBackend({ config });
    const logs: string[] = [];
    const f = new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], backend: mem, leaseMs: 40, log: (l) => logs.push(l) });
    await f.start();
    expect(mem.leaseUntil).toBeDefined();
    await f.setOwned(all);
    expect(mem.deliver(syn)).toMatchObject({ verdict: "pass", reason: "owned" });
    block(80); // no renewal can run: the lease (40 ms) runs out
    expect(mem.deliver(syn)).toMatchObject({ verdict: "drop", reason: "foreign" });
    const lapse = await new Promise<{ lapsedMs: number }>((resolve) => f.once("lease-lapsed", resolve));
    expect(lapse.lapsedMs).toBeGreaterThanOrEqual(1);
    expect(logs.join("\n")).toMatch(/lease had run out for \d+ ms/);
    expect(mem.deliver(syn)).toMatchObject({ verdict: "pass", reason: "owned" });
    const c = await f.counters();
    expect(c.leaseExpired).toBe(1);
    expect(c.accepted.reduce((s, x) => s + x, 0)).toBe(2);
    expect(c.dropped.reduce((s, x) => s + x, 0)).toBe(1);
    await f.stop();
  });

  it("with releaseOnLapse, a lapse empties the table before the lease is renewed: the stale table does not come back", async () => {
    const mem = new MemoryFilterBackend({ config });
    const f = new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], backend: mem, leaseMs: 40, releaseOnLapse: true });
    await f.start();
    await f.setOwned(all);
    expect(mem.deliver(syn)).toMatchObject({ verdict: "pass", reason: "owned" });
    const owned: number[] = [];
    f.on("owned", (e) => owned.push(e.count));
    block(80);
    await new Promise<void>((resolve) => f.once("lease-lapsed", () => resolve()));
    expect(owned).toEqual([0]);
    expect(mem.leaseUntil! > process.hrtime.bigint()).toBe(true); // the lease is back ...
    expect(mem.deliver(syn)).toMatchObject({ verdict: "drop", reason: "foreign" }); // ... over an empty table
    await f.setOwned(all); // the owner takes buckets again when it has heard its peers
    expect(mem.deliver(syn)).toMatchObject({ verdict: "pass", reason: "owned" });
    await f.stop();
  });

  it("keeps renewing while the loop runs: a healthy process never lapses", async () => {
    const mem = new MemoryFilterBackend({ config });
    const f = new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], backend: mem, leaseMs: 40 });
    let lapses = 0;
    f.on("lease-lapsed", () => lapses++);
    await f.start();
    await f.setOwned(all);
    const first = mem.leaseUntil!;
    // Several lease lengths pass while the loop is free (awaiting real timers is the behaviour under test).
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 40));
      expect(mem.deliver(syn).verdict).toBe("pass");
    }
    expect(mem.leaseUntil! > first).toBe(true);
    expect(lapses).toBe(0);
    await f.stop();
    const stopped = mem.leaseUntil;
    await new Promise((r) => setTimeout(r, 40));
    expect(mem.leaseUntil).toBe(stopped); // no renewal after stop
  });

  it("leaseMs 0 disables the lease (logged); a backend without renewLease is logged too", async () => {
    const logs: string[] = [];
    const mem = new MemoryFilterBackend({ config });
    const f = new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], backend: mem, leaseMs: 0, log: (l) => logs.push(l) });
    await f.start();
    expect(mem.leaseUntil).toBeUndefined();
    await f.setOwned(all);
    block(20);
    expect(mem.deliver(syn).verdict).toBe("pass");
    await f.stop();
    expect(logs.join("\n")).toMatch(/no lease \(leaseMs 0\)/);

    const inner = new MemoryFilterBackend({ config });
    const bare: FilterBackend = { name: "memory", start: () => inner.start(), setOwned: (m) => inner.setOwned(m), counters: () => inner.counters(), stop: () => inner.stop() };
    const g = new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], backend: bare, log: (l) => logs.push(l) });
    await g.start();
    expect(logs.join("\n")).toMatch(/memory backend has no lease/);
    await g.stop();
  });

  it("fails start when the first lease cannot be granted, and removes the backend", async () => {
    const mem = new MemoryFilterBackend({ config });
    const failing: FilterBackend = {
      name: "memory", start: () => mem.start(), setOwned: (m) => mem.setOwned(m), counters: () => mem.counters(), stop: () => mem.stop(),
      renewLease: () => Promise.reject(new Error("no lease for you")),
    };
    const f = new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], backend: failing });
    await expect(f.start()).rejects.toThrow(/no lease for you/);
    expect(mem.running).toBe(false);
    expect(f.backend).toBeUndefined();
  });

  it("reports failing renewals once, and the lapse once when renewals work again", async () => {
    const mem = new MemoryFilterBackend({ config });
    let failing = false;
    let calls = 0;
    const flaky: FilterBackend = {
      name: "memory", start: () => mem.start(), setOwned: (m) => mem.setOwned(m), counters: () => mem.counters(), stop: () => mem.stop(),
      renewLease: (until) => {
        calls++;
        if (failing) throw new Error("interface down");
        mem.renewLease(until);
      },
    };
    const logs: string[] = [];
    const lapses: number[] = [];
    const f = new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], backend: flaky, leaseMs: 40, log: (l) => logs.push(l) });
    f.on("lease-lapsed", (e) => lapses.push(e.lapsedMs));
    await f.start();
    await f.setOwned(all);
    failing = true;
    const from = calls;
    while (calls < from + 6) await new Promise((r) => setTimeout(r, 10)); // several failed renewals (> one lease)
    expect(mem.deliver(syn).verdict).toBe("drop");
    failing = false;
    await new Promise<void>((resolve) => f.once("lease-lapsed", () => resolve()));
    expect(mem.deliver(syn).verdict).toBe("pass");
    await f.stop();
    expect(logs.filter((l) => l.includes("renewal failed (interface down)"))).toHaveLength(1);
    expect(logs.filter((l) => l.includes("renewal works again"))).toHaveLength(1);
    expect(lapses).toHaveLength(1);
    expect(lapses[0]).toBeGreaterThan(0);
  });

  it("validates leaseMs and defaults it to 400 ms", () => {
    expect(DEFAULT_LEASE_MS).toBe(400);
    for (const bad of [-1, 5, 1.5, 700_000]) {
      expect(() => new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], leaseMs: bad }), String(bad)).toThrow(ConfigError);
    }
    expect(() => new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], leaseMs: "400" as unknown as number })).toThrow(ConfigError);
    expect(() => new PacketFilter({ iface: "eth0", ...config, rules: [...config.rules], leaseMs: 0 })).not.toThrow();
  });
});
