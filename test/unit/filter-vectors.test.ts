/**
 * The TypeScript reference decision on the shared vectors (test/vectors/filter.json, also run against the
 * eBPF program, nftables and the userspace fallback), plus the decision's ownership logic.
 */
import { describe, expect, it } from "vitest";
import { BUCKET_COUNT, bucketOf, type BalanceBy } from "../../src/core/buckets.js";
import { compileFilter, decide, type FilterConfig } from "../../src/farm/filter/decision.js";
import { MemoryFilterBackend } from "../../src/farm/filter/memory.js";
import { craftPacket, type PacketSpec } from "../../src/farm/filter/packets.js";
import { mayHoldFromSockets, parseSsTcp } from "../../src/farm/filter/ebpf.js";
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

  it("in a foreign bucket whose may-hold flag is clear, drops mid-flow TCP without asking for a socket (except a SYN+ACK)", () => {
    const asked: number[] = [];
    const lookup = (): boolean => (asked.push(1), true);
    const bucket = bucketOf("198.18.20.1", "address+port", 1000, config.seed!);
    expect(decide(ack, filter, none, lookup, (b) => b !== bucket)).toMatchObject({ verdict: "drop", reason: "foreign", bucket });
    expect(asked).toHaveLength(0);
    expect(decide(ack, filter, none, lookup, (b) => b === bucket)).toMatchObject({ verdict: "pass", reason: "kept-socket" });
    expect(asked).toHaveLength(1);
    const synAck = craftPacket({ src: "198.18.20.1", dst: "198.18.10.1", protocol: "tcp", sport: 1000, dport: 80, tcpFlags: 0x12 });
    expect(decide(synAck, filter, none, lookup, () => false)).toMatchObject({ verdict: "pass", reason: "kept-socket" });
    // Owned buckets ignore the flag; the default (no flag input) is every flag set.
    expect(decide(ack, filter, all, () => true, () => false)).toMatchObject({ verdict: "pass", reason: "owned" });
    expect(decide(ack, filter, none, () => true)).toMatchObject({ verdict: "pass", reason: "kept-socket" });
  });

  it("seeds may-hold flags from `ss -Htn` lines: the bucket of each socket on a VIP, hashed with its port's rule", () => {
    const text = [
      "ESTAB      0      0        198.18.10.1:80      198.18.20.1:1000",
      "ESTAB 0 0 198.18.10.1:22 198.18.22.3:30002",
      "TIME-WAIT 0 0 [::ffff:198.18.10.1]:80 [::ffff:198.18.20.2]:1001",
      "ESTAB 0 0 [fd00:4844::10]:8443 [fd00:4844::22:1]:30000",
      "ESTAB 0 0 198.18.10.2:80 198.18.20.9:5555", // not a VIP
      "ESTAB 0 0 [fe80::1]%eth0:22 [fe80::2]%eth0:4000", // not a VIP
      "garbage",
    ].join("\n");
    const sockets = parseSsTcp(text);
    expect(sockets).toHaveLength(6);
    expect(sockets[2]!.local).toEqual(Uint8Array.from([198, 18, 10, 1]));
    expect(sockets[5]!.remotePort).toBe(4000);
    const mask = mayHoldFromSockets(config, sockets);
    const expected = new Set([
      bucketOf("198.18.20.1", "address+port", 1000, config.seed!),
      bucketOf("198.18.22.3", "address", 30002, config.seed!),
      bucketOf("198.18.20.2", "address+port", 1001, config.seed!),
      bucketOf("fd00:4844::22:1", "address", 30000, config.seed!),
    ]);
    expect(new Set([...mask.keys()].filter((b) => mask[b] === 1))).toEqual(expected);
  });

  it("drops orphan mid-flow TCP in an owned bucket unless strictTcp is off", () => {
    expect(decide(ack, filter, all, () => false)).toMatchObject({ verdict: "drop", reason: "orphan" });
    expect(decide(ack, filter, all, () => true)).toMatchObject({ verdict: "pass", reason: "owned" });
    const lax = compileFilter({ ...config, strictTcp: false });
    expect(decide(ack, lax, all, () => false)).toMatchObject({ verdict: "pass", reason: "owned" });
  });

  it("asks for a socket on owned mid-flow TCP only where the bucket is contested", () => {
    const bucket = bucketOf("198.18.20.1", "address+port", 1000, config.seed!);
    const asked: number[] = [];
    const lookup = (): boolean => (asked.push(1), false);
    expect(decide(ack, filter, all, lookup, undefined, { contested: (b) => b !== bucket })).toMatchObject({ verdict: "pass", reason: "owned" });
    expect(asked).toHaveLength(0);
    expect(decide(ack, filter, all, lookup, undefined, { contested: (b) => b === bucket })).toMatchObject({ verdict: "drop", reason: "orphan" });
    expect(asked).toHaveLength(1);
    expect(decide(ack, filter, all, lookup)).toMatchObject({ verdict: "drop", reason: "orphan" }); // default: contested
  });

  it("drops an owned SYN no listener would take (dropSynWithoutListener, default on); never a foreign or mid-flow one by that rule", () => {
    const none_ = () => false;
    expect(decide(syn, filter, all, none_, undefined, { hasListener: none_ })).toMatchObject({ verdict: "drop", reason: "no-listener" });
    expect(decide(syn, filter, all, none_, undefined, { hasListener: () => true })).toMatchObject({ verdict: "pass", reason: "owned" });
    expect(decide(syn, filter, all, none_)).toMatchObject({ verdict: "pass", reason: "owned" }); // default: a listener exists
    expect(decide(syn, filter, none, none_, undefined, { hasListener: none_ })).toMatchObject({ verdict: "drop", reason: "foreign" });
    expect(decide(ack, filter, all, () => true, undefined, { hasListener: none_ })).toMatchObject({ verdict: "pass", reason: "owned" });
    const off = compileFilter({ ...config, dropSynWithoutListener: false });
    expect(decide(syn, off, all, none_, undefined, { hasListener: none_ })).toMatchObject({ verdict: "pass", reason: "owned" });
  });

  it("the in-memory backend applies the contested mask given with the table and counts SYNs dropped for no listener", async () => {
    const mem = new MemoryFilterBackend({ config });
    await mem.start();
    const bucket = bucketOf("198.18.20.1", "address+port", 1000, config.seed!);
    await mem.setOwned(all, new Uint8Array(BUCKET_COUNT)); // nothing contested
    expect(mem.deliver(ack)).toMatchObject({ verdict: "pass", reason: "owned" });
    const contested = new Uint8Array(BUCKET_COUNT);
    contested[bucket] = 1;
    await mem.setOwned(all, contested);
    expect(mem.deliver(ack)).toMatchObject({ verdict: "drop", reason: "orphan" });
    expect(mem.deliver(syn, () => false, () => false)).toMatchObject({ verdict: "drop", reason: "no-listener" });
    expect((await mem.counters()).droppedNoListener).toBe(1);
    await mem.setOwned(all); // no mask: every bucket contested
    expect(mem.contested.every((v) => v === 1)).toBe(true);
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
