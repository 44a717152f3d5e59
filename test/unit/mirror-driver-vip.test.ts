/** MirrorVip against a recording command runner: the order of address and announcements, repeats, removal, stale VIPs. */
import { afterEach, describe, expect, it, vi } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { MirrorVip, garpFrames } from "../../src/mirror/vip.js";

interface Fake {
  calls: string[];
  held: Map<string, { dev: string; len: number }>;
  run: (argv: readonly string[]) => Promise<string>;
  advertise: (iface: string, mac: string, addr: string) => void;
}

function fakeHost(): Fake {
  const held = new Map<string, { dev: string; len: number }>();
  const calls: string[] = [];
  const run = async (argv: readonly string[]): Promise<string> => {
    const line = argv.join(" ");
    calls.push(line);
    if (argv[0] === "announce") return "";
    if (line.startsWith("ip -j route get")) return JSON.stringify([{ dst: argv[4], dev: "eth0" }]);
    if (line === "ip -j addr show") {
      const byDev = new Map<string, { local: string; prefixlen: number }[]>();
      for (const [addr, h] of held) byDev.set(h.dev, [...(byDev.get(h.dev) ?? []), { local: addr, prefixlen: h.len }]);
      return JSON.stringify([...byDev].map(([ifname, addr_info]) => ({ ifname, addr_info })));
    }
    if (line.startsWith("ip -j link show")) return JSON.stringify([{ ifname: argv[5], address: "02:48:46:00:00:0a" }]);
    if (argv[1] === "addr" && (argv[2] === "replace" || argv[2] === "change")) {
      const [addr, len] = (argv[3] as string).split("/");
      held.set(addr as string, { dev: argv[5] as string, len: Number(len) });
      return "";
    }
    if (argv[1] === "addr" && argv[2] === "del") {
      const [addr, len] = (argv[3] as string).split("/");
      const h = held.get(addr as string);
      if (!h || h.len !== Number(len)) throw new Error("RTNETLINK answers: Cannot assign requested address");
      held.delete(addr as string);
      return "";
    }
    return "";
  };
  const advertise = (iface: string, mac: string, addr: string): void => {
    calls.push(`announce ${iface} ${mac} ${addr}`);
  };
  return { calls, held, run, advertise };
}

const arpings = (f: Fake): string[] => f.calls.filter((c) => c.startsWith("announce"));

afterEach(() => {
  vi.useRealTimers();
});

describe("MirrorVip", () => {
  it("adds the address on the routed interface, then announces it before add() resolves", async () => {
    const f = fakeHost();
    const vip = new MirrorVip({ run: f.run, advertise: f.advertise, announce: { count: 1, repeatAfterMs: 0 } });
    await vip.add("198.18.0.100/24", "db");
    const replace = f.calls.indexOf("ip addr replace 198.18.0.100/24 dev eth0 valid_lft 3 preferred_lft 3");
    expect(f.calls[0]).toBe("ip -j route get 198.18.0.100");
    expect(replace).toBeGreaterThan(0);
    expect(arpings(f)).toEqual(["announce eth0 02:48:46:00:00:0a 198.18.0.100"]);
    for (const a of arpings(f)) expect(f.calls.indexOf(a)).toBeGreaterThan(replace);
    expect(f.held.get("198.18.0.100")).toEqual({ dev: "eth0", len: 24 });
    // the node never names the VIP as the sender of its own ARP requests; set once per interface, before the address
    const sysctl = f.calls.indexOf("sysctl -qw net/ipv4/conf/eth0/arp_announce=2");
    expect(sysctl).toBeGreaterThanOrEqual(0);
    expect(sysctl).toBeLessThan(replace);
    await vip.remove("198.18.0.100/24");
    await vip.add("198.18.0.100/24");
    expect(f.calls.filter((c) => c.startsWith("sysctl"))).toHaveLength(1);
  });

  it("repeats the announcement count times, again after repeatAfterMs, and stops when the VIP is removed", async () => {
    vi.useFakeTimers();
    const f = fakeHost();
    const vip = new MirrorVip({ run: f.run, advertise: f.advertise, iface: "eth1", announce: { count: 3, intervalMs: 100, repeatAfterMs: 1000 } });
    await vip.add("198.18.1.100/24");
    expect(f.calls.some((c) => c.startsWith("ip -j route get"))).toBe(false); // iface given
    expect(arpings(f)).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(arpings(f)).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(100);
    expect(arpings(f)).toHaveLength(3); // first burst: count 3
    await vi.advanceTimersByTimeAsync(1000 + 100);
    expect(arpings(f)).toHaveLength(4); // the repeat burst started
    await vip.remove("198.18.1.100/24");
    const after = arpings(f).length;
    await vi.advanceTimersByTimeAsync(5000);
    expect(arpings(f)).toHaveLength(after);
    expect(f.held.has("198.18.1.100")).toBe(false);
  });

  it("IPv6: nodad, and an unsolicited neighbour advertisement from the interface's MAC", async () => {
    const f = fakeHost();
    const vip = new MirrorVip({ run: f.run, advertise: f.advertise, iface: "eth0", announce: { count: 1, repeatAfterMs: 0 } });
    await vip.add("fd00:4844::100/112");
    expect(f.calls).toContain("ip addr replace fd00:4844::100/112 dev eth0 nodad valid_lft 3 preferred_lft 3");
    expect(arpings(f)).toEqual(["announce eth0 02:48:46:00:00:0a fd00:4844::100"]);
  });

  it("a failed announcement is logged, the VIP stays", async () => {
    const f = fakeHost();
    const lines: string[] = [];
    const advertise = (): void => {
      throw new Error("socket: Operation not permitted");
    };
    const vip = new MirrorVip({ run: f.run, advertise, iface: "eth0", announce: { count: 1, repeatAfterMs: 0 }, log: (l) => lines.push(l) });
    await vip.add("198.18.0.100/24");
    expect(f.held.has("198.18.0.100")).toBe(true);
    expect(lines.some((l) => l.includes("announcement of 198.18.0.100 on eth0 failed"))).toBe(true);
  });

  it("removeStale removes what an earlier run left (whatever its prefix length), and only that", async () => {
    const f = fakeHost();
    f.held.set("198.18.0.100", { dev: "eth0", len: 32 });
    const vip = new MirrorVip({ run: f.run });
    expect(await vip.removeStale(["198.18.0.100/24", "198.18.0.101/24"])).toEqual(["198.18.0.100/24"]);
    expect(f.calls).toContain("ip addr del 198.18.0.100/32 dev eth0");
    expect(f.held.size).toBe(0);
    await vip.remove("198.18.0.100/24"); // idempotent
  });

  it("a VIP whose lifetime runs out between the look and the delete counts as removed (a stale VIP of a killed run)", async () => {
    const f = fakeHost();
    f.held.set("198.18.0.100", { dev: "eth0", len: 24 });
    const lines: string[] = [];
    const run = async (argv: readonly string[]): Promise<string> => {
      if (argv[1] === "addr" && argv[2] === "del") f.held.delete("198.18.0.100"); // the kernel expired it just now
      return f.run(argv);
    };
    const vip = new MirrorVip({ run, log: (l) => lines.push(l) });
    expect(await vip.removeStale(["198.18.0.100/24"])).toEqual(["198.18.0.100/24"]);
    expect(lines.some((l) => l.includes("already gone from eth0"))).toBe(true);
    // any other failure of the delete still throws
    const g = fakeHost();
    g.held.set("198.18.0.101", { dev: "eth0", len: 24 });
    const failing = new MirrorVip({ run: async (argv) => (argv[2] === "del" ? Promise.reject(new Error("RTNETLINK answers: Operation not permitted")) : g.run(argv)) });
    await expect(failing.remove("198.18.0.101/24")).rejects.toThrow(/not permitted/);
  });

  it("gratuitous ARP frames: an RFC 5227 announcement (request) and an unsolicited reply, both broadcast", () => {
    const mac = Uint8Array.from([2, 0x48, 0x46, 0, 0, 0x0a]);
    const ip = Uint8Array.from([198, 18, 0, 100]);
    const [req, rep] = garpFrames(mac, ip);
    const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
    // eth dst broadcast, src mac, ARP; htype 1, ptype IPv4, 6, 4, op; sha, spa, tha, tpa
    expect(hex(req)).toBe("ffffffffffff02484600000a0806000108000604000102484600000ac6120064000000000000c6120064");
    expect(hex(rep)).toBe("ffffffffffff02484600000a0806000108000604000202484600000ac6120064ffffffffffffc6120064");
  });

  it("rejects a VIP without a prefix length and bad announce options, with the path", async () => {
    const vip = new MirrorVip({ run: fakeHost().run });
    await expect(vip.add("198.18.0.100")).rejects.toBeInstanceOf(ConfigError);
    expect(() => new MirrorVip({ announce: { count: -1 } })).toThrow(/announce\.count/);
    expect(() => new MirrorVip({ leaseS: 1.5 })).toThrow(/leaseS/);
  });

  describe("lease (the address's kernel lifetime)", () => {
    const renewals = (f: Fake): string[] => f.calls.filter((c) => c.startsWith("ip addr change"));

    it("renews every leaseS/3 while held, and stops when the VIP is removed", async () => {
      vi.useFakeTimers();
      const f = fakeHost();
      const vip = new MirrorVip({ run: f.run, advertise: f.advertise, iface: "eth0", leaseS: 3, announce: { count: 1, repeatAfterMs: 0 } });
      await vip.add("198.18.0.100/24");
      expect(renewals(f)).toEqual([]);
      await vi.advanceTimersByTimeAsync(1000);
      expect(renewals(f)).toEqual(["ip addr change 198.18.0.100/24 dev eth0 valid_lft 3 preferred_lft 3"]);
      await vi.advanceTimersByTimeAsync(2000);
      expect(renewals(f)).toHaveLength(3);
      await vip.remove("198.18.0.100/24");
      await vi.advanceTimersByTimeAsync(5000);
      expect(renewals(f)).toHaveLength(3);
      expect(f.held.has("198.18.0.100")).toBe(false);
    });

    it("close() stops the renewal: the kernel lets the address lapse", async () => {
      vi.useFakeTimers();
      const f = fakeHost();
      const vip = new MirrorVip({ run: f.run, advertise: f.advertise, iface: "eth0", announce: { count: 1, repeatAfterMs: 0 } });
      await vip.add("fd00:4844::100/112");
      vip.close();
      await vi.advanceTimersByTimeAsync(10_000);
      expect(renewals(f)).toEqual([]);
    });

    it("an address found gone at renewal is logged and put back, without announcements", async () => {
      vi.useFakeTimers();
      const f = fakeHost();
      const lines: string[] = [];
      const vip = new MirrorVip({ run: f.run, advertise: f.advertise, iface: "eth0", leaseS: 3, announce: { count: 1, repeatAfterMs: 0 }, log: (l) => lines.push(l) });
      await vip.add("198.18.0.100/24");
      const announced = arpings(f).length;
      f.held.delete("198.18.0.100"); // the kernel expired it (a stall longer than the lease)
      await vi.advanceTimersByTimeAsync(1000);
      expect(lines.some((l) => l.includes("198.18.0.100/24 was gone from eth0 at renewal"))).toBe(true);
      expect(f.held.get("198.18.0.100")).toEqual({ dev: "eth0", len: 24 });
      expect(arpings(f)).toHaveLength(announced);
    });

    it("a renewal in flight does not put back an address remove() took away", async () => {
      vi.useFakeTimers();
      const f = fakeHost();
      let release: (() => void) | undefined;
      const run = async (argv: readonly string[]): Promise<string> => {
        // the renewal's look at the addresses is slow: remove() is called meanwhile
        if (argv.join(" ") === "ip -j addr show" && release === undefined && f.calls.some((c) => c.startsWith("ip addr replace"))) {
          await new Promise<void>((r) => (release = r));
        }
        return f.run(argv);
      };
      const vip = new MirrorVip({ run, advertise: f.advertise, iface: "eth0", leaseS: 3, announce: { count: 1, repeatAfterMs: 0 } });
      await vip.add("198.18.0.100/24");
      await vi.advanceTimersByTimeAsync(1000); // the renewal starts and waits
      expect(release).toBeDefined();
      const removed = vip.remove("198.18.0.100/24");
      release?.();
      await removed;
      await vi.advanceTimersByTimeAsync(5000);
      expect(f.held.has("198.18.0.100")).toBe(false);
    });

    it("leaseS 0: a permanent address, never renewed", async () => {
      vi.useFakeTimers();
      const f = fakeHost();
      const vip = new MirrorVip({ run: f.run, advertise: f.advertise, iface: "eth0", leaseS: 0, announce: { count: 1, repeatAfterMs: 0 } });
      await vip.add("198.18.0.100/24");
      expect(f.calls).toContain("ip addr replace 198.18.0.100/24 dev eth0 valid_lft forever preferred_lft forever");
      await vi.advanceTimersByTimeAsync(10_000);
      expect(renewals(f)).toEqual([]);
    });
  });
});
