/**
 * The TypeScript reference decision on the shared vectors (test/vectors/filter.json, also run against the
 * eBPF program, nftables and the userspace fallback), plus the decision's ownership logic.
 */
import { describe, expect, it } from "vitest";
import { BUCKET_COUNT, bucketOf, type BalanceBy } from "../../src/core/buckets.js";
import { compileFilter, decide, type FilterConfig } from "../../src/farm/filter/decision.js";
import { craftPacket, type PacketSpec } from "../../src/farm/filter/packets.js";
import data from "../vectors/filter.json" with { type: "json" };

const config = data.config as FilterConfig;
const filter = compileFilter(config);
const none = new Uint8Array(BUCKET_COUNT);
const all = new Uint8Array(BUCKET_COUNT).fill(1);

describe("shared filter vectors", () => {
  it("are reproduced by the packet crafter and the reference decision", () => {
    for (const v of data.vectors) {
      const frame = craftPacket(v.spec as PacketSpec);
      expect(Buffer.from(frame).toString("hex"), v.name).toBe(v.frame);
      const d = decide(frame, filter, none);
      expect(d.kind, v.name).toBe(v.kind);
      if (d.kind === "bucket") expect(d.bucket, v.name).toBe(v.bucket);
    }
  });

  it("hash each packet with the key its rule asks for (independent re-derivation)", () => {
    // The rule table of the vectors' config, written out by hand.
    const by = (s: PacketSpec): BalanceBy => {
      if (s.fragment || s.protocol === "icmp" || s.protocol === "other") return "address";
      if (s.protocol === "tcp" && s.dport === 80) return "address+port";
      if (s.protocol === "udp" && s.dport === 5353) return "address+port";
      return "address";
    };
    let checked = 0;
    for (const v of data.vectors) {
      if (v.kind !== "bucket") continue;
      const s = v.spec as PacketSpec;
      expect(v.bucket, v.name).toBe(bucketOf(s.src, by(s), s.sport ?? 0, config.seed!));
      checked++;
    }
    expect(checked).toBeGreaterThan(100);
  });

  it("cover every kind of packet the backends must agree on", () => {
    const names = data.vectors.map((v) => v.name).join("\n");
    for (const k of ["v4 tcp syn", "v6 tcp syn", "v4 udp", "v6 udp", "fragment", "icmp error", "v6 icmp type 1", "not a VIP", "mid-flow", "gre"]) {
      expect(names).toContain(k);
    }
  });
});

describe("decide", () => {
  const syn = craftPacket({ src: "198.18.20.1", dst: "198.18.10.1", protocol: "tcp", sport: 1000, dport: 80 });
  const ack = craftPacket({ src: "198.18.20.1", dst: "198.18.10.1", protocol: "tcp", sport: 1000, dport: 80, tcpFlags: 0x10 });

  it("passes owned buckets and drops foreign ones", () => {
    expect(decide(syn, filter, all)).toMatchObject({ verdict: "pass", reason: "owned" });
    expect(decide(syn, filter, none)).toMatchObject({ verdict: "drop", reason: "foreign" });
  });

  it("keeps mid-flow TCP of a local socket in a foreign bucket, never a new SYN", () => {
    expect(decide(ack, filter, none, () => true)).toMatchObject({ verdict: "pass", reason: "kept-socket" });
    expect(decide(syn, filter, none, () => true)).toMatchObject({ verdict: "drop", reason: "foreign" });
  });

  it("drops orphan mid-flow TCP in an owned bucket unless strictTcp is off", () => {
    expect(decide(ack, filter, all, () => false)).toMatchObject({ verdict: "drop", reason: "orphan" });
    expect(decide(ack, filter, all, () => true)).toMatchObject({ verdict: "pass", reason: "owned" });
    const lax = compileFilter({ ...config, strictTcp: false });
    expect(decide(ack, lax, all, () => false)).toMatchObject({ verdict: "pass", reason: "owned" });
  });

  it("passes ICMP errors to every node whatever it owns", () => {
    const err = craftPacket({ src: "198.18.99.1", dst: "198.18.10.1", protocol: "icmp", icmpType: 3 });
    expect(decide(err, filter, none)).toEqual({ verdict: "pass", kind: "broadcast" });
  });

  it("rejects rules for unknown VIPs and bad ports", () => {
    expect(() => compileFilter({ vips: ["198.18.10.1"], rules: [{ protocol: "tcp", port: 0, by: "address" }] })).toThrow(RangeError);
    expect(() => compileFilter({ vips: ["198.18.10.1"], rules: [{ protocol: "tcp", port: 80, by: "address", vip: "198.18.10.9" }] })).toThrow(RangeError);
  });
});
