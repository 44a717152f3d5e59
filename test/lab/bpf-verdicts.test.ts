/**
 * The farm tc program run through BPF_PROG_TEST_RUN on the shared vectors (test/vectors/filter.json):
 * its verdict must equal the TypeScript reference decision for every packet, with the packet's bucket
 * owned and with it foreign. Also: established flows (a real local TCP socket) survive a foreign bucket.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, connect, type Server, type Socket } from "node:net";
import { once } from "node:events";
import { execFileSync } from "node:child_process";
import { BUCKET_COUNT, bucketOf, parseIp } from "../../src/core/buckets.js";
import { NotSupportedError } from "../../src/core/errors.js";
import { compileFilter, decide, type FilterConfig } from "../../src/farm/filter/decision.js";
import { craftPacket } from "../../src/farm/filter/packets.js";
import { FarmProgram, listLocalTcpSockets, mayHoldFromSockets } from "../../src/farm/filter/ebpf.js";
import { BpfError, TC_ACT_OK, TC_ACT_SHOT, testRun } from "../../src/native/libbpf.js";
import data from "../vectors/filter.json" with { type: "json" };

function tryLoad(): FarmProgram | NotSupportedError {
  try {
    return FarmProgram.load();
  } catch (err) {
    if (err instanceof BpfError || err instanceof NotSupportedError) {
      return new NotSupportedError("ebpf", `BPF_PROG_TEST_RUN tests need root and BPF: ${err.message}`, { cause: err });
    }
    throw err;
  }
}
const probe = tryLoad();
const supported = probe instanceof FarmProgram;
if (!supported) console.warn(`skipping: ${probe.message}`);
else probe.close();

const verdictOf = (retval: number): "pass" | "drop" => {
  expect([TC_ACT_OK, TC_ACT_SHOT]).toContain(retval);
  return retval === TC_ACT_OK ? "pass" : "drop";
};

describe.skipIf(!supported)("farm tc program (BPF_PROG_TEST_RUN)", () => {
  let prog: FarmProgram;
  const config = data.config as FilterConfig;
  const filter = compileFilter(config);
  beforeAll(() => {
    prog = FarmProgram.load();
    prog.configure(config);
  });
  afterAll(() => prog?.close());

  it("takes the reference decision on every shared vector, bucket owned and foreign, may-hold flag set and clear, contested or not", () => {
    expect(data.vectors.length).toBeGreaterThan(100);
    const ones = new Uint8Array(BUCKET_COUNT).fill(1);
    const zeros = new Uint8Array(BUCKET_COUNT);
    // The program's listener lookup (dropSynWithoutListener) sees this process's namespace: vectors to a port
    // something listens on here are left out, the others have no listener.
    const listening = new Set(execFileSync("ss", ["-Hltn"], { encoding: "utf8" }).split("\n").map((l) => Number(/:(\d+)\s/.exec(l)?.[1])));
    let hashed = 0;
    let synDropped = 0;
    for (const v of data.vectors) {
      if (v.spec.protocol === "tcp" && listening.has(v.spec.dport ?? 0)) continue;
      const frame = Uint8Array.from(Buffer.from(v.frame, "hex"));
      const masks: Uint8Array[] = [];
      if (v.kind === "bucket") {
        const only = new Uint8Array(BUCKET_COUNT);
        only[v.bucket!] = 1;
        masks.push(only, only.map((x) => 1 - x));
        hashed++;
      } else {
        masks.push(new Uint8Array(BUCKET_COUNT), new Uint8Array(BUCKET_COUNT).fill(1));
      }
      for (const mask of masks) {
        for (const flag of [true, false]) {
          for (const contested of [true, false]) {
            prog.setOwned(mask, contested ? ones : zeros);
            // A passed SYN sets a flag: reset the packet's bucket's flag before every packet (only it matters).
            if (v.kind === "bucket" && flag) prog.addMayHold([v.bucket!]);
            else if (v.kind === "bucket") prog.clearMayHold([v.bucket!]);
            const expected = decide(frame, filter, mask, () => false, () => flag, { contested: () => contested, hasListener: () => false });
            expect(expected.kind, v.name).toBe(v.kind);
            if (expected.kind === "bucket" && expected.reason === "no-listener") synDropped++;
            expect(verdictOf(testRun(prog.progFd, frame).retval), `${v.name} owned=${mask[v.bucket ?? 0]} mayhold=${flag} contested=${contested}`).toBe(expected.verdict);
          }
        }
      }
    }
    expect(hashed).toBeGreaterThan(100);
    expect(synDropped).toBeGreaterThan(10);
  });

  it("with dropSynWithoutListener off, passes every SYN of an owned bucket (the stack answers)", () => {
    const p = FarmProgram.load();
    try {
      p.configure({ ...config, dropSynWithoutListener: false });
      p.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
      const off = compileFilter({ ...config, dropSynWithoutListener: false });
      let syns = 0;
      for (const v of data.vectors) {
        if (v.kind !== "bucket" || v.spec.protocol !== "tcp" || v.spec.tcpFlags !== undefined || v.spec.fragment) continue;
        const frame = Uint8Array.from(Buffer.from(v.frame, "hex"));
        expect(decide(frame, off, new Uint8Array(BUCKET_COUNT).fill(1), () => false, () => false, { hasListener: () => false }).verdict).toBe("pass");
        expect(testRun(p.progFd, frame).retval, v.name).toBe(TC_ACT_OK);
        syns++;
      }
      expect(syns).toBeGreaterThan(10);
      expect(p.counters().droppedNoListener).toBe(0);
    } finally {
      p.close();
    }
  });

  it("counts accepted and dropped packets in the packet's bucket", () => {
    const spec = { src: "198.18.40.9", dst: "198.18.10.1", protocol: "udp", sport: 4242, dport: 5353 } as const;
    const b = bucketOf(spec.src, "address+port", spec.sport, config.seed!);
    const before = prog.counters();
    const only = new Uint8Array(BUCKET_COUNT);
    only[b] = 1;
    prog.setOwned(only);
    for (let i = 0; i < 3; i++) expect(testRun(prog.progFd, craftPacket(spec)).retval).toBe(TC_ACT_OK);
    prog.setOwned(new Uint8Array(BUCKET_COUNT));
    for (let i = 0; i < 2; i++) expect(testRun(prog.progFd, craftPacket(spec)).retval).toBe(TC_ACT_SHOT);
    const after = prog.counters();
    expect(after.accepted[b]! - before.accepted[b]!).toBe(3);
    expect(after.dropped[b]! - before.dropped[b]!).toBe(2);
    const others = after.accepted.reduce((s, x, i) => s + (i === b ? 0 : x - before.accepted[i]!), 0);
    expect(others).toBe(0);
  });

  it("treats owned buckets as foreign once the lease has run out (the kernel's monotonic clock against lease_until_ns)", () => {
    const spec = { src: "198.18.40.10", dst: "198.18.10.1", protocol: "udp", sport: 4243, dport: 5353 } as const;
    const b = bucketOf(spec.src, "address+port", spec.sport, config.seed!);
    const p = FarmProgram.load();
    try {
      p.configure(config);
      p.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
      expect(testRun(p.progFd, craftPacket(spec)).retval).toBe(TC_ACT_OK); // no lease yet: the table holds
      p.renewLease(process.hrtime.bigint() + 10_000_000_000n);
      expect(testRun(p.progFd, craftPacket(spec)).retval).toBe(TC_ACT_OK);
      // Expired: the same clock as the kernel's (CLOCK_MONOTONIC); the program's coarse reading trails by up to a tick.
      p.renewLease(process.hrtime.bigint() - 50_000_000n);
      expect(testRun(p.progFd, craftPacket(spec)).retval).toBe(TC_ACT_SHOT);
      // ICMP errors still reach every node.
      expect(testRun(p.progFd, craftPacket({ src: "198.18.99.1", dst: "198.18.10.1", protocol: "icmp", icmpType: 3 })).retval).toBe(TC_ACT_OK);
      const c = p.counters();
      expect(c.leaseExpired).toBe(1);
      expect(c.dropped[b]).toBe(1);
      expect(c.accepted[b]).toBe(2);
      p.renewLease(process.hrtime.bigint() + 10_000_000_000n); // renewed: owned again
      expect(testRun(p.progFd, craftPacket(spec)).retval).toBe(TC_ACT_OK);
    } finally {
      p.close();
    }
  });

  it("measures the per-packet cost of the program", () => {
    const frame = craftPacket({ src: "198.18.40.9", dst: "198.18.10.1", protocol: "tcp", sport: 4242, dport: 80 });
    prog.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
    const r = testRun(prog.progFd, frame, 100_000);
    console.log(`farm tc program: ${r.durationNs} ns per SYN (BPF_PROG_TEST_RUN, 100k repeats)`);
    expect(r.durationNs).toBeLessThan(10_000);
  });
});

describe.skipIf(!supported)("established flows survive a bucket move (bpf_skc_lookup_tcp)", () => {
  let prog: FarmProgram;
  let server: Server;
  let client: Socket;
  let accepted: Socket | undefined;
  const config: FilterConfig = { seed: 99, vips: ["127.0.0.1"], rules: [{ protocol: "tcp", port: 1, by: "address+port" }] };
  beforeAll(async () => {
    prog = FarmProgram.load();
    prog.configure(config);
    server = createServer((s) => (accepted = s));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    client = connect((server.address() as { port: number }).port, "127.0.0.1");
    await once(client, "connect");
  });
  afterAll(() => {
    client?.destroy();
    accepted?.destroy();
    server?.close();
    prog?.close();
  });

  const flowBucket = (): number => bucketOf("127.0.0.1", "address", client.localPort!, config.seed!); // no rule for the port: address

  it("drops a foreign mid-flow packet at once, without a socket lookup, when its bucket's may-hold flag is clear", () => {
    const port = (server.address() as { port: number }).port;
    const base = { src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port } as const;
    prog.setOwned(new Uint8Array(BUCKET_COUNT));
    prog.setMayHold(new Uint8Array(BUCKET_COUNT)); // the program never passed a SYN of this bucket
    const before = prog.counters();
    // The local socket exists (a lookup would find it, see below), but no lookup is made: dropped.
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x10 })).retval).toBe(TC_ACT_SHOT);
    expect(prog.counters().keptSocket! - before.keptSocket!).toBe(0);
    expect(prog.mayHold()[flowBucket()]).toBe(0);
  });

  it("seeds the flag from the sockets that already exist (ss -Htn), so the same packet passes", () => {
    const port = (server.address() as { port: number }).port;
    const base = { src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port } as const;
    const seeded = mayHoldFromSockets(config, listLocalTcpSockets());
    expect(seeded[flowBucket()]).toBe(1);
    prog.setOwned(new Uint8Array(BUCKET_COUNT));
    prog.setMayHold(seeded);
    const before = prog.counters();
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x10 })).retval).toBe(TC_ACT_OK);
    expect(prog.counters().keptSocket! - before.keptSocket!).toBe(1);
  });

  it("sets the flag when it passes a SYN in an owned bucket; after the bucket moves away the flow's packets still pass", () => {
    const port = (server.address() as { port: number }).port;
    const base = { src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port } as const;
    const b = flowBucket();
    prog.setMayHold(new Uint8Array(BUCKET_COUNT));
    const only = new Uint8Array(BUCKET_COUNT);
    only[b] = 1;
    prog.setOwned(only);
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x10 })).retval).toBe(TC_ACT_OK); // owned mid-flow: no flag
    expect(prog.mayHold()[b]).toBe(0);
    expect(testRun(prog.progFd, craftPacket({ ...base, sport: 3, tcpFlags: 0x02 })).retval).toBe(TC_ACT_OK); // SYN passed
    const flags = prog.mayHold();
    expect(flags[b]).toBe(1);
    expect(flags.reduce((s, x) => s + x, 0)).toBe(1);
    prog.setOwned(new Uint8Array(BUCKET_COUNT)); // the bucket moved to another node
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x10 })).retval).toBe(TC_ACT_OK);
    expect(testRun(prog.progFd, craftPacket({ ...base, sport: 1, tcpFlags: 0x10 })).retval).toBe(TC_ACT_SHOT); // no socket
    expect(prog.mayHold()[b]).toBe(1); // never cleared
  });

  it("a foreign SYN+ACK is looked up even with the flag clear (connection opened from the VIP) and sets the flag", () => {
    const port = (server.address() as { port: number }).port;
    const base = { src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port } as const;
    prog.setOwned(new Uint8Array(BUCKET_COUNT));
    prog.setMayHold(new Uint8Array(BUCKET_COUNT));
    expect(testRun(prog.progFd, craftPacket({ ...base, sport: 1, tcpFlags: 0x12 })).retval).toBe(TC_ACT_SHOT); // no socket
    expect(prog.mayHold()[flowBucket()]).toBe(0);
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x12 })).retval).toBe(TC_ACT_OK);
    expect(prog.mayHold()[flowBucket()]).toBe(1);
  });

  it("keeps mid-flow packets of a local connection in a foreign bucket, drops a new SYN there", () => {
    const port = (server.address() as { port: number }).port;
    const base = { src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port } as const;
    prog.setOwned(new Uint8Array(BUCKET_COUNT)); // nothing owned: every bucket is foreign
    prog.setMayHold(new Uint8Array(BUCKET_COUNT).fill(1));
    const before = prog.counters();
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x10 })).retval).toBe(TC_ACT_OK); // ACK of our flow
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x18 })).retval).toBe(TC_ACT_OK); // PSH+ACK
    expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x02 })).retval).toBe(TC_ACT_SHOT); // a new SYN
    // Same ports but an unknown client port: no socket, foreign bucket -> dropped.
    expect(testRun(prog.progFd, craftPacket({ ...base, sport: 1, tcpFlags: 0x10 })).retval).toBe(TC_ACT_SHOT);
    expect(prog.counters().keptSocket! - before.keptSocket!).toBe(2);
  });

  it("drops orphan mid-flow packets in an owned bucket instead of letting the stack reset them", () => {
    const port = (server.address() as { port: number }).port;
    const base = { src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", dport: port } as const;
    prog.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
    const before = prog.counters();
    expect(testRun(prog.progFd, craftPacket({ ...base, sport: 1, tcpFlags: 0x10 })).retval).toBe(TC_ACT_SHOT);
    expect(testRun(prog.progFd, craftPacket({ ...base, sport: 1, tcpFlags: 0x02 })).retval).toBe(TC_ACT_OK);
    expect(testRun(prog.progFd, craftPacket({ ...base, sport: client.localPort!, tcpFlags: 0x10 })).retval).toBe(TC_ACT_OK);
    expect(prog.counters().droppedOrphan! - before.droppedOrphan!).toBe(1);
  });

  it("skips the strict lookup in an owned bucket no other node holds (FARM_OWNED_SOLE), makes it where contested", () => {
    const port = (server.address() as { port: number }).port;
    const orphan = craftPacket({ src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: 1, dport: port, tcpFlags: 0x10 });
    const b = bucketOf("127.0.0.1", "address", 1, config.seed!);
    const all = new Uint8Array(BUCKET_COUNT).fill(1);
    const contested = new Uint8Array(BUCKET_COUNT);
    contested[b] = 1;
    const before = prog.counters();
    prog.setOwned(all, contested); // the orphan's bucket contested: looked up, no socket, dropped
    expect(testRun(prog.progFd, orphan).retval).toBe(TC_ACT_SHOT);
    prog.setOwned(all, new Uint8Array(BUCKET_COUNT)); // nothing contested: passed at once (the stack would answer)
    expect(testRun(prog.progFd, orphan).retval).toBe(TC_ACT_OK);
    prog.setOwned(all); // no contested mask: every bucket contested, as before the flag existed
    expect(testRun(prog.progFd, orphan).retval).toBe(TC_ACT_SHOT);
    expect(prog.counters().droppedOrphan! - before.droppedOrphan!).toBe(2);
    // Measured cost of the lookup the flag saves (no socket: established miss + listener lookup).
    const strict = (prog.setOwned(all), testRun(prog.progFd, craftPacket({ src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port, tcpFlags: 0x10 }), 200_000).durationNs);
    const sole = (prog.setOwned(all, new Uint8Array(BUCKET_COUNT)), testRun(prog.progFd, craftPacket({ src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port, tcpFlags: 0x10 }), 200_000).durationNs);
    console.log(`owned mid-flow packet of a local connection: ${strict} ns contested (socket lookup), ${sole} ns sole (BPF_PROG_TEST_RUN)`);
  });

  it("drops a SYN that no listener would take in an owned bucket (no RST while the app is dead), passes one with a listener", () => {
    const port = (server.address() as { port: number }).port;
    const spare = createServer();
    spare.listen(0, "127.0.0.1");
    return once(spare, "listening").then(async () => {
      const deadPort = (spare.address() as { port: number }).port;
      await new Promise<void>((r) => spare.close(() => r())); // the app on deadPort is gone: nothing listens there
      prog.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
      const before = prog.counters();
      expect(testRun(prog.progFd, craftPacket({ src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: 40001, dport: port, tcpFlags: 0x02 })).retval).toBe(TC_ACT_OK);
      expect(testRun(prog.progFd, craftPacket({ src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: 40001, dport: deadPort, tcpFlags: 0x02 })).retval).toBe(TC_ACT_SHOT);
      // Only SYN-only packets get the listener lookup: a mid-flow packet of the live connection still passes.
      expect(testRun(prog.progFd, craftPacket({ src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port, tcpFlags: 0x10 })).retval).toBe(TC_ACT_OK);
      expect(prog.counters().droppedNoListener! - before.droppedNoListener!).toBe(1);
      const d = decide(craftPacket({ src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: 40001, dport: deadPort, tcpFlags: 0x02 }), compileFilter(config), new Uint8Array(BUCKET_COUNT).fill(1), () => false, () => true, { hasListener: () => false });
      expect(d).toMatchObject({ verdict: "drop", reason: "no-listener" });
    });
  });

  it("with the lease run out, still keeps the local connection's packets but drops new SYNs", () => {
    const port = (server.address() as { port: number }).port;
    const base = { src: "127.0.0.1", dst: "127.0.0.1", protocol: "tcp", sport: client.localPort!, dport: port } as const;
    prog.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
    prog.setMayHold(new Uint8Array(BUCKET_COUNT).fill(1));
    prog.renewLease(process.hrtime.bigint() - 50_000_000n);
    try {
      expect(testRun(prog.progFd, craftPacket({ ...base, tcpFlags: 0x10 })).retval).toBe(TC_ACT_OK);
      expect(testRun(prog.progFd, craftPacket({ ...base, sport: 2, tcpFlags: 0x02 })).retval).toBe(TC_ACT_SHOT);
    } finally {
      prog.renewLease(process.hrtime.bigint() + 3_600_000_000_000n);
    }
  });
});

describe.skipIf(!supported)("farm egress program: IPv6 neighbour discovery for the VIP (BPF_PROG_TEST_RUN)", () => {
  const vip = parseIp("fd00:4844::100");
  const shared = Uint8Array.from([0x02, 0xbf, 0xc6, 0x12, 0x00, 0x64]);
  const own = Uint8Array.from([0x02, 0x48, 0x46, 0x00, 0x00, 0x01]);
  let prog: FarmProgram;
  beforeAll(() => {
    prog = FarmProgram.load();
    prog.setNeighbourMac(vip, shared);
  });
  afterAll(() => prog?.close());

  /** A neighbour advertisement (or solicitation) as the kernel sends it: own MAC in the option. */
  function nd(type: 135 | 136, src: Uint8Array, target: Uint8Array): Uint8Array {
    const dst = parseIp("fd00:4844::200");
    const msg = Uint8Array.from([type, 0, 0, 0, type === 136 ? 0x60 : 0, 0, 0, 0, ...target, type === 136 ? 2 : 1, 1, ...own]);
    const cs = icmp6Checksum(src, dst, msg);
    msg[2] = cs >> 8;
    msg[3] = cs & 0xff;
    return Uint8Array.from([...own, ...own, 0x86, 0xdd, 0x60, 0, 0, 0, 0, msg.length, 58, 255, ...src, ...dst, ...msg]);
  }
  function icmp6Checksum(src: Uint8Array, dst: Uint8Array, msg: Uint8Array): number {
    const p = [...src, ...dst, 0, 0, msg.length >> 8, msg.length & 0xff, 0, 0, 0, 58, ...msg];
    let sum = 0;
    for (let i = 0; i < p.length; i += 2) sum += ((p[i] ?? 0) << 8) | (p[i + 1] ?? 0);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    return ~sum & 0xffff;
  }
  const optionMac = (frame: Uint8Array): number[] => Array.from(frame.subarray(14 + 40 + 24 + 2, 14 + 40 + 24 + 8));
  const checksumOk = (frame: Uint8Array): boolean =>
    icmp6Checksum(frame.subarray(22, 38), frame.subarray(38, 54), Uint8Array.from(frame.subarray(54)).fill(0, 2, 4)) ===
    ((frame[56]! << 8) | frame[57]!);

  it("writes the shared MAC into an NA for the VIP and keeps the checksum valid", () => {
    const r = testRun(prog.egressFd, nd(136, parseIp("fd00:4844::10"), vip));
    expect(r.retval).toBe(TC_ACT_OK);
    expect(optionMac(r.dataOut)).toEqual(Array.from(shared));
    expect(checksumOk(r.dataOut)).toBe(true);
  });

  it("writes it into an NS sent from the VIP, and leaves other ND alone", () => {
    const ns = testRun(prog.egressFd, nd(135, vip, parseIp("fd00:4844::200")));
    expect(optionMac(ns.dataOut)).toEqual(Array.from(shared));
    expect(checksumOk(ns.dataOut)).toBe(true);
    const other = nd(136, parseIp("fd00:4844::10"), parseIp("fd00:4844::10"));
    const r = testRun(prog.egressFd, other);
    expect(Array.from(r.dataOut)).toEqual(Array.from(other));
  });
});
