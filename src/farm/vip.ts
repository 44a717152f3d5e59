/**
 * The VIP of a farm, on every node: layer-2 delivery of every VIP packet to every node.
 *
 * What start() sets up (the farm's layer-2 delivery, docs/architecture.md; all verified on this kind of machine):
 * - the VIP on the interface of every node (IPv4 /32; IPv6 /128 `nodad`, since all nodes hold it, with
 *   `keep_addr_on_down=1` so a link flap does not delete it);
 * - `arp_announce=2` (all and the interface): the node never uses the VIP as the sender of its own ARP
 *   requests;
 * - every ARP packet the node sends with the VIP as sender carries the shared MAC as sender hardware
 *   address (nftables `arp` output rule), so clients resolve the VIP to the shared MAC:
 *   - unicast mode (a locally administered unicast MAC, e.g. `02:bf:...`): never used as an Ethernet
 *     source, so switches never learn it and flood frames for it to every port;
 *   - multicast mode (group bit set, e.g. `01:00:5e:...` or NLB-style `03:bf:...`): the MAC is added to the
 *     interface's multicast list (`ip maddr add`). Some routers refuse an ARP answer with a multicast MAC
 *     (the Windows NLB / CLUSTERIP caveat); Linux clients accept it.
 * - an RFC 5227 ARP announcement (two, 200 ms apart) with the shared MAC, so clients switch at once.
 * The packet-type fix (frames to the shared MAC arrive as OTHERHOST/MULTICAST and TCP would drop them) is
 * done by the PacketFilter (eBPF `bpf_skb_change_type`, or `meta pkttype set host` in nftables).
 *
 * IPv6 (no arp_announce there): the tc egress program `farm_egress` of src/native/farm.bpf.o writes the
 * shared MAC into the link-layer option of neighbour advertisements for the VIP and of neighbour
 * solicitations sent from it (checksum fixed incrementally), and start() sends an unsolicited neighbour
 * advertisement (RFC 4861 section 7.2.6; Override set) with the shared MAC. This needs BPF: without it the
 * IPv6 VIP is still added but clients learn one node's own MAC (logged; that node alone gets the IPv6
 * traffic).
 *
 * stop() removes everything start() added and restores the sysctls it changed. start() first removes what a
 * crashed earlier run of the same instance may have left.
 */
import { execFile } from "node:child_process";
import { parseIp, formatIp } from "../core/buckets.js";
import { ConfigError } from "../core/errors.js";
import { BPF_TC_EGRESS, ifIndex, tcAttach, tcDetach, tcHookCreate, tcQuery, withNetns } from "../native/libbpf.js";
import { FarmProgram, FARM_TC_HANDLE, FARM_TC_PRIORITY } from "./filter/ebpf.js";
import { FrameSender } from "./filter/inject.js";

/** Options of a {@link FarmVip}. */
export interface FarmVipOptions {
  /** The interface that carries the VIP (the one the PacketFilter watches). */
  readonly iface: string;
  /** The VIP addresses (IPv4 and/or IPv6, without prefix length). */
  readonly addresses: readonly string[];
  /**
   * The shared MAC every node announces for the VIP, the same on all nodes of the farm. Its group bit
   * chooses the mode: unicast (`02:bf:..`, flooded by switches) or multicast (`01:00:5e:..`, `03:bf:..`).
   */
  readonly mac: string;
  /** Run the set-up in this network namespace (a path such as `/run/netns/NAME`); for labs and tests. */
  readonly netns?: string;
  /** Distinguishes the nftables table of several farms on one host. Letters, digits, `_`. Default `holdfast`. */
  readonly instance?: string;
  /** Sink for one-line log messages. */
  readonly log?: (line: string) => void;
}

function run(args: readonly string[], netns: string | undefined, input?: string): Promise<string> {
  const [cmd, argv] = netns ? ["nsenter", [`--net=${netns}`, ...args]] : [args[0]!, args.slice(1)];
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, argv, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`${args.join(" ")}: ${stderr.trim() || err.message}`), { cause: err }));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

function parseMac(mac: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(mac)) {
    throw new ConfigError("farm VIP options", [{ path: "mac", value: mac, expected: "a MAC address like 02:bf:00:00:00:01" }]);
  }
  return Uint8Array.from(mac.split(":").map((h) => parseInt(h, 16)));
}

/** An RFC 5227 ARP announcement: a broadcast request whose sender and target are the VIP. */
export function arpAnnouncement(ethSource: Uint8Array, sharedMac: Uint8Array, vip: Uint8Array): Uint8Array {
  return Uint8Array.from([
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...ethSource, 0x08, 0x06,
    0, 1, 0x08, 0x00, 6, 4, 0, 1, ...sharedMac, ...vip, 0, 0, 0, 0, 0, 0, ...vip,
  ]);
}

function icmp6Checksum(src: Uint8Array, dst: Uint8Array, msg: Uint8Array): number {
  const pseudo = new Uint8Array(40 + msg.length);
  pseudo.set(src, 0);
  pseudo.set(dst, 16);
  pseudo[34] = (msg.length >> 8) & 0xff;
  pseudo[35] = msg.length & 0xff;
  pseudo[39] = 58;
  pseudo.set(msg, 40);
  let sum = 0;
  for (let i = 0; i < pseudo.length; i += 2) sum += ((pseudo[i] ?? 0) << 8) | (pseudo[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An unsolicited neighbour advertisement (RFC 4861 7.2.6) for `vip` with `sharedMac`, to all nodes (ff02::1). */
export function unsolicitedNa(ethSource: Uint8Array, sharedMac: Uint8Array, vip: Uint8Array): Uint8Array {
  const allNodes = parseIp("ff02::1");
  const msg = Uint8Array.from([136, 0, 0, 0, 0x20, 0, 0, 0, ...vip, 2, 1, ...sharedMac]);
  const cs = icmp6Checksum(vip, allNodes, msg);
  msg[2] = cs >> 8;
  msg[3] = cs & 0xff;
  const ip = [0x60, 0, 0, 0, 0, msg.length, 58, 255, ...vip, ...allNodes];
  return Uint8Array.from([0x33, 0x33, 0, 0, 0, 1, ...ethSource, 0x86, 0xdd, ...ip, ...msg]);
}

/** The farm VIP on one node. */
export class FarmVip {
  readonly options: FarmVipOptions;
  readonly #mac: Uint8Array;
  readonly #v4: string[];
  readonly #v6: string[];
  #saved: [string, string][] = [];
  #started = false;
  #nd: { prog: FarmProgram; ifindex: number } | undefined;

  constructor(options: FarmVipOptions) {
    this.#mac = parseMac(options.mac);
    const addrs = options.addresses.map((a) => parseIp(a));
    if (addrs.length === 0) throw new ConfigError("farm VIP options", [{ path: "addresses", value: options.addresses, expected: "at least one address" }]);
    this.#v4 = addrs.filter((a) => a.length === 4).map(formatIp);
    this.#v6 = addrs.filter((a) => a.length === 16).map(formatIp);
    this.options = options;
  }

  /** `unicast` or `multicast`, from the MAC's group bit. */
  get mode(): "unicast" | "multicast" {
    return ((this.#mac[0] ?? 0) & 1) === 1 ? "multicast" : "unicast";
  }

  get #table(): string {
    return `holdfast_vip_${(this.options.instance ?? "holdfast").replace(/[^A-Za-z0-9_]/g, "_")}`;
  }

  async #sysctl(key: string, value: string): Promise<void> {
    const before = (await run(["sysctl", "-n", key], this.options.netns)).trim();
    if (!this.#saved.some(([k]) => k === key)) this.#saved.push([key, before]);
    if (before !== value) await run(["sysctl", "-qw", `${key}=${value}`], this.options.netns);
  }

  async #cleanup(): Promise<boolean> {
    const { iface, netns } = this.options;
    let found = false;
    await run(["nft", "-f", "-"], netns, `table arp ${this.#table} {}\ndelete table arp ${this.#table}\n`).catch(() => undefined);
    for (const a of this.#v4) await run(["ip", "addr", "del", `${a}/32`, "dev", iface], netns).then(() => (found = true), () => undefined);
    for (const a of this.#v6) await run(["ip", "-6", "addr", "del", `${a}/128`, "dev", iface], netns).then(() => (found = true), () => undefined);
    if (this.mode === "multicast") await run(["ip", "maddr", "del", this.options.mac, "dev", iface], netns).catch(() => undefined);
    return found;
  }

  /** Adds the VIP and the ARP rewrite, announces the shared MAC. */
  async start(): Promise<void> {
    const { iface, netns, log } = this.options;
    if (await this.#cleanup()) log?.(`vip: removed a stale VIP from ${iface} left by an earlier run`);
    await this.#sysctl("net.ipv4.conf.all.arp_announce", "2");
    await this.#sysctl(`net.ipv4.conf.${iface}.arp_announce`, "2");
    if (this.#v6.length) await this.#sysctl(`net.ipv6.conf.${iface}.keep_addr_on_down`, "1");
    for (const a of this.#v4) await run(["ip", "addr", "add", `${a}/32`, "dev", iface], netns);
    for (const a of this.#v6) await run(["ip", "-6", "addr", "add", `${a}/128`, "dev", iface, "nodad"], netns);
    if (this.mode === "multicast") await run(["ip", "maddr", "add", this.options.mac, "dev", iface], netns);
    if (this.#v4.length) {
      const rules = this.#v4.map((a) => `    arp saddr ip ${a} arp saddr ether set ${this.options.mac}`).join("\n");
      await run(["nft", "-f", "-"], netns, `table arp ${this.#table} {\n  chain out {\n    type filter hook output priority 0; policy accept;\n${rules}\n  }\n}\n`);
    }
    if (this.#v6.length) this.#attachNd();
    this.#started = true;
    log?.(`vip: ${[...this.#v4, ...this.#v6].join(", ")} on ${iface} with shared ${this.mode} MAC ${this.options.mac}`);
    await this.announce();
  }

  #inNs<T>(fn: () => T): T {
    return this.options.netns ? withNetns(this.options.netns, fn) : fn();
  }

  /** Loads and attaches the egress ND rewrite for the IPv6 VIPs (logs and goes on without it if BPF fails). */
  #attachNd(): void {
    const { iface, log } = this.options;
    let prog: FarmProgram | undefined;
    try {
      prog = FarmProgram.load();
      for (const a of this.#v6) prog.setNeighbourMac(parseIp(a), this.#mac);
      const p = prog;
      const ifindex = this.#inNs(() => {
        const index = ifIndex(iface);
        tcHookCreate(index);
        const stale = tcQuery(index, FARM_TC_HANDLE, FARM_TC_PRIORITY, BPF_TC_EGRESS);
        if (stale !== undefined) log?.(`vip: replacing a stale neighbour-discovery tc program (id ${stale}) on ${iface}`);
        tcAttach(index, p.egressFd, FARM_TC_HANDLE, FARM_TC_PRIORITY, true, BPF_TC_EGRESS);
        return index;
      });
      this.#nd = { prog, ifindex };
    } catch (err) {
      prog?.close();
      log?.(`vip: IPv6 neighbour advertisements keep this node's own MAC (the BPF rewrite failed: ${(err as Error).message}): clients reach the IPv6 VIP through one node only`);
    }
  }

  /** Sends the RFC 5227 announcements (IPv4) and unsolicited neighbour advertisements (IPv6), twice, 200 ms apart. */
  async announce(): Promise<void> {
    if (!this.#v4.length && !(this.#v6.length && this.#nd)) return;
    const { iface, netns } = this.options;
    const link = JSON.parse(await run(["ip", "-j", "link", "show", "dev", iface], netns)) as { address: string }[];
    const own = Uint8Array.from((link[0]?.address ?? "00:00:00:00:00:00").split(":").map((h) => parseInt(h, 16)));
    const sender = new FrameSender(iface, netns);
    try {
      for (let i = 0; i < 2; i++) {
        if (i) await new Promise((r) => setTimeout(r, 200));
        for (const a of this.#v4) sender.send(arpAnnouncement(own, this.#mac, parseIp(a)));
        if (this.#nd) for (const a of this.#v6) sender.send(unsolicitedNa(own, this.#mac, parseIp(a)));
      }
    } finally {
      sender.close();
    }
  }

  /** Removes the VIP, the ARP rewrite and the multicast entry; restores the sysctls. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    const nd = this.#nd;
    this.#nd = undefined;
    if (nd) {
      try {
        this.#inNs(() => tcDetach(nd.ifindex, FARM_TC_HANDLE, FARM_TC_PRIORITY, BPF_TC_EGRESS));
      } finally {
        nd.prog.close();
      }
    }
    await this.#cleanup();
    for (const [k, v] of this.#saved.reverse()) await run(["sysctl", "-qw", `${k}=${v}`], this.options.netns).catch(() => undefined);
    this.#saved = [];
  }
}
