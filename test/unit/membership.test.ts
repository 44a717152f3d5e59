import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ConfigError } from "../../src/core/errors.js";
import { LAN, validateMembershipOptions, type MembershipSettings } from "../../src/core/membership/config.js";
import { MembershipCore, type MembershipEffect, type MembershipEvent } from "../../src/core/membership/membership.js";
import { decodeHeartbeat, encodeHeartbeat, HEADER_BYTES, type Heartbeat } from "../../src/core/membership/wire.js";
import { generateKey, hmacSha256, parseKey } from "../../src/runtime/crypto.js";

const key = parseKey(generateKey());
const mac = hmacSha256(key);

function settings(self: string, ids: string[], networks = 1): MembershipSettings {
  return validateMembershipOptions({
    clusterId: "t",
    nodeId: self,
    nodes: ids.map((id, i) => ({ id, addresses: [...Array(networks).keys()].map((n) => `198.18.${n}.${10 + i}`) })),
  });
}

/** Two or more cores wired by a perfect, instant in-memory network that a test can cut per direction. */
class Pair {
  cores = new Map<string, MembershipCore>();
  events: { node: string; e: MembershipEvent }[] = [];
  cut = new Set<string>(); // "a>b#n"
  stalled = new Set<string>();
  now = 0;
  constructor(ids: string[], networks = 1) {
    ids.forEach((id, i) => this.cores.set(id, new MembershipCore(settings(id, ids, networks), 1000 + i, mac)));
    for (const [id, c] of this.cores) this.apply(id, c.start(this.now));
  }
  apply(from: string, effects: MembershipEffect[]) {
    for (const e of effects) {
      if (e.type === "event") this.events.push({ node: from, e: e.event });
      else if (!this.cut.has(`${from}>${e.to}#${e.network}`) && !this.stalled.has(e.to)) {
        const to = this.cores.get(e.to);
        if (to) this.apply(e.to, to.receive(this.now, e.network, e.bytes));
      }
    }
  }
  run(ms: number) {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += LAN.tickMs;
      for (const [id, c] of this.cores) if (!this.stalled.has(id)) this.apply(id, c.tick(this.now));
    }
  }
  of(type: MembershipEvent["type"], node?: string) {
    return this.events.filter((x) => x.e.type === type && (node === undefined || x.node === node)).map((x) => x.e);
  }
}

describe("membership options", () => {
  it("rejects a wrong field naming its path and value", () => {
    const bad = { clusterId: "c", nodeId: "a", nodes: [{ id: "a", addresses: ["198.18.0.1"] }, { id: "b", addresses: ["198.18.0.300"] }] };
    expect(() => validateMembershipOptions(bad)).toThrow(ConfigError);
    try {
      validateMembershipOptions(bad);
    } catch (e) {
      expect((e as ConfigError).problems).toEqual([{ path: "nodes.1.addresses.0", value: "198.18.0.300", expected: "an IPv4 or IPv6 address" }]);
    }
    expect(() => validateMembershipOptions({ ...bad, nodes: [{ id: "a", addresses: ["198.18.0.1"] }], timing: { pulseMs: -5 } })).toThrow(/timing\.pulseMs.*-5/);
    expect(() => validateMembershipOptions({ clusterId: "c", nodeId: "zz", nodes: [{ id: "a", addresses: ["fd00:4844::1"] }] })).toThrow(/nodeId: expected the id of one of `nodes`, got "zz"/);
  });
  it("fills the LAN preset by default and accepts overrides", () => {
    const s = validateMembershipOptions({ clusterId: "c", nodeId: "a", nodes: [{ id: "a", addresses: ["fd00:4844::1", "198.18.1.1"] }], timing: { lossTimeoutMs: 900 } });
    expect(s.timing).toEqual({ ...LAN, lossTimeoutMs: 900 });
    expect(s.networks).toBe(2);
  });
  it("rejects short or non-base64 keys without echoing them", () => {
    expect(() => parseKey("c2hvcnQ=")).toThrow(/at least 32 bytes/);
    expect(() => parseKey("not base64 !!")).toThrow(/base64/);
  });
});

describe("wire format", () => {
  const hb: Heartbeat = { k: "hb", c: "t", f: "a", to: "b", n: 0, i: 5, s: 9, a: 3, ai: 7, w: 1, ve: 2, vh: "00ff", m: { x: [1, 2] } };
  it("round-trips a signed heartbeat", () => {
    const d = decodeHeartbeat(encodeHeartbeat(hb, mac), mac);
    expect(d).toEqual({ ok: true, hb });
  });
  it("rejects any single bit flip, another key, truncation and garbage", () => {
    const bytes = encodeHeartbeat(hb, mac);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: bytes.length * 8 - 1 }), (bit) => {
        const b = bytes.slice();
        b[bit >> 3] = (b[bit >> 3] as number) ^ (1 << (bit & 7));
        const d = decodeHeartbeat(b, mac);
        return !d.ok && (d.reason === "badMac" || d.reason === "malformed");
      }),
    );
    expect(decodeHeartbeat(encodeHeartbeat(hb, hmacSha256(parseKey(generateKey()))), mac)).toEqual({ ok: false, reason: "badMac" });
    expect(decodeHeartbeat(bytes.subarray(0, HEADER_BYTES + 4), mac).ok).toBe(false);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (junk) => !decodeHeartbeat(junk, mac).ok));
  });
  it("rejects a correctly signed payload with wrong field types (validated before use)", () => {
    const bad = { ...hb, s: -1 } as unknown as Heartbeat;
    expect(decodeHeartbeat(encodeHeartbeat(bad, mac), mac)).toEqual({ ok: false, reason: "malformed" });
  });
});

describe("membership core", () => {
  it("joins, agrees on one view and epoch", () => {
    const p = new Pair(["a", "b", "c"]);
    p.run(500);
    for (const c of p.cores.values()) {
      expect(c.view.members.map((m) => m.id)).toEqual(["a", "b", "c"]);
      expect(c.isAgreed).toBe(true);
    }
    const epochs = new Set([...p.cores.values()].map((c) => c.view.epoch));
    expect(epochs.size).toBe(1);
    expect(p.of("nodeDown")).toEqual([]);
  });

  it("detects a crash within the loss timeout + one tick, on every survivor", () => {
    const p = new Pair(["a", "b", "c"]);
    p.run(1000);
    p.cores.delete("c");
    const crashAt = p.now;
    p.run(2000);
    for (const n of ["a", "b"]) {
      const downs = p.events.filter((x) => x.node === n && x.e.type === "nodeDown");
      expect(downs).toHaveLength(1);
      const e = downs[0]?.e as Extract<MembershipEvent, { type: "nodeDown" }>;
      expect(e.node).toBe("c");
      expect(e.cause).toBe("silence");
      expect(e.at - crashAt).toBeLessThanOrEqual(LAN.lossTimeoutMs + LAN.tickMs);
      expect(e.at - crashAt).toBeGreaterThanOrEqual(LAN.lossTimeoutMs - LAN.pulseMs);
    }
  });

  it("keeps a node when one of two heartbeat networks is cut, and reports the network", () => {
    const p = new Pair(["a", "b"], 2);
    p.run(500);
    p.cut.add("a>b#0").add("b>a#0");
    p.run(3000);
    expect(p.of("nodeDown")).toEqual([]);
    expect(p.of("networkDown").map((e) => (e as { network: number }).network)).toEqual([0, 0]);
    p.cut.clear();
    p.run(500);
    expect(p.of("networkUp")).toHaveLength(2);
  });

  it("detects a one-way cut on both sides", () => {
    const p = new Pair(["a", "b"]);
    p.run(500);
    p.cut.add("a>b#0");
    p.run(1500);
    const downs = p.of("nodeDown") as Extract<MembershipEvent, { type: "nodeDown" }>[];
    expect(downs.map((d) => d.node).sort()).toEqual(["a", "b"]);
    expect(downs.find((d) => d.node === "b")?.cause).toBe("oneWay");
  });

  it("does not blame peers for its own stall, but peers detect the stalled node", () => {
    const p = new Pair(["a", "b"]);
    p.run(500);
    p.stalled.add("a");
    p.run(3000);
    p.stalled.delete("a");
    p.run(1000);
    expect(p.of("localStall", "a")).toHaveLength(1);
    expect(p.of("nodeDown", "a")).toEqual([]);
    expect(p.of("nodeDown", "b")).toHaveLength(1);
    expect(p.of("nodeUp", "b").length).toBeGreaterThanOrEqual(2); // joined, then came back
    expect(p.cores.get("a")?.localHealthMultiplier).toBeGreaterThan(1);
  });

  it("a graceful leave is seen at once, and a restart (new incarnation) rejoins", () => {
    const p = new Pair(["a", "b"]);
    p.run(500);
    p.apply("b", p.cores.get("b")?.leave(p.now) ?? []);
    p.cores.delete("b");
    const left = p.of("nodeDown", "a") as Extract<MembershipEvent, { type: "nodeDown" }>[];
    expect(left.map((d) => d.cause)).toEqual(["left"]);
    const b2 = new MembershipCore(settings("b", ["a", "b"]), 5000, mac);
    p.cores.set("b", b2);
    p.apply("b", b2.start(p.now));
    p.run(500);
    const ups = p.of("nodeUp", "a") as Extract<MembershipEvent, { type: "nodeUp" }>[];
    expect(ups.at(-1)?.incarnation).toBe(5000);
    expect(p.cores.get("a")?.view.members.map((m) => m.id)).toEqual(["a", "b"]);
  });

  it("propagates module metadata and weights", () => {
    const p = new Pair(["a", "b"]);
    p.run(300);
    p.apply("a", p.cores.get("a")?.setMeta(p.now, { web: "UP" }) ?? []);
    p.apply("a", p.cores.get("a")?.setWeight(p.now, 3) ?? []);
    p.run(300);
    expect(p.cores.get("b")?.peerMeta("a")).toEqual({ web: "UP" });
    expect(p.cores.get("b")?.view.members.find((m) => m.id === "a")?.weight).toBe(3);
  });

  it("drops and counts replayed, foreign and misdirected datagrams without any state change", () => {
    const p = new Pair(["a", "b", "c"], 2);
    const captured: MembershipEffect[] = [];
    const a = p.cores.get("a") as MembershipCore;
    p.run(500);
    captured.push(...a.tick(p.now + 100).filter((e) => e.type === "send"));
    p.run(500);
    const b = p.cores.get("b") as MembershipCore;
    const before = b.stateDigest();
    for (const e of captured) {
      if (e.type !== "send") continue;
      expect(b.receive(p.now, e.network, e.bytes)).toEqual([]); // replayed (or misdirected to b)
      expect(b.receive(p.now, 1 - e.network, e.bytes)).toEqual([]); // on the other network
    }
    expect(b.stateDigest()).toBe(before);
    const d = b.counters.dropped;
    expect(d.replay + d.wrongRecipient + d.wrongNetwork).toBe(captured.length * 2);
    const other = new MembershipCore({ ...settings("a", ["a", "b", "c"], 2), clusterId: "other" }, 1, mac);
    for (const e of other.start(0)) if (e.type === "send" && e.to === "b") b.receive(p.now, e.network, e.bytes);
    expect(b.counters.dropped.wrongCluster).toBe(2);
    expect(b.stateDigest()).toBe(before);
  });
});

describe("heartbeat round-trip time", () => {
  it("measures twice the one-way delay on each network, net of the peer's hold time", async () => {
    const { FakeClock } = await import("../../src/testing/sim/clock.js");
    const { FakeNetwork } = await import("../../src/testing/sim/network.js");
    const { Rng } = await import("../../src/testing/sim/rng.js");
    const clock = new FakeClock(0);
    const net = new FakeNetwork(clock, new Rng(1), { networks: 2, minDelayMs: 7, maxDelayMs: 7, duplicate: 0 });
    const ids = ["a", "b"];
    const cores = new Map(ids.map((id, i) => [id, new MembershipCore(settings(id, ids, 2), 100 + i, mac)]));
    const apply = (id: string, effects: MembershipEffect[]) => {
      for (const e of effects) if (e.type === "send") net.send(id, e.to, e.network, e.bytes);
    };
    for (const [id, c] of cores) {
      net.attach(id, (n, _from, bytes) => apply(id, c.receive(clock.now(), n, bytes)));
      apply(id, c.start(clock.now()));
      const tick = () => {
        apply(id, c.tick(clock.now()));
        clock.setTimer(LAN.tickMs, tick);
      };
      clock.setTimer(LAN.tickMs, tick);
    }
    clock.advance(3000);
    const rtt = cores.get("a")?.heartbeatRtt("b") ?? [];
    expect(rtt).toHaveLength(2);
    for (const r of rtt) expect(r).toBeCloseTo(14, 0);
  });
});
