/**
 * nftables backend: the same decision as the eBPF program, as nftables rules generated here and loaded
 * with `nft -f` (one atomic transaction each time).
 *
 * Layout (two tables per filter instance, replaced atomically on start, deleted on stop):
 * - `table netdev holdfast_<inst>`, ingress hook on the interface, priority -500 (before anything else):
 *   VIP packets get `meta pkttype set host`, then `meta mark set jhash <key> mod 4096 seed S offset TAG`
 *   (the same key and bucket as src/core/buckets.ts), then owned (`meta mark @mine`) -> accept,
 *   foreign -> drop. ICMP errors and IPv6 ND are accepted on every node. Per-bucket named counters
 *   (`a<b>` accepted, `d<b>` dropped; 8192 of them for 4096 buckets: the whole ruleset loads in ~0.2 s and
 *   reads back in ~0.2 s, measured here) through objref maps keyed by the mark.
 * - The lease: owned buckets count as owned only while the set `lease` (`flags dynamic, timeout`) holds
 *   the interface's name, matched with `meta iifname @lease`. The ruleset starts with a permanent element
 *   (no lease yet); the first `renewLease` replaces it, in one `nft` transaction, by one with a timeout.
 *   Later renewals do not go through nft at all: the backend sends one Ethernet frame (EtherType 0x88b5,
 *   local experimental, with a per-instance 4-byte token) out of the interface, and the table's egress
 *   chain does `update @lease { meta oifname timeout <leaseMs>ms }` and drops the frame (it never reaches
 *   the wire). Why: every nft transaction on this table re-reads nft's cache of the whole ruleset (8192
 *   counters): 12-40 ms of CPU per renewal, measured here, 10 times a second; a frame costs one sendto().
 *   The kernel expires the element by itself (lookups ignore expired elements; verified in the lab test), so
 *   when this process dies or freezes every bucket turns foreign within leaseMs, and a renewal after a
 *   freeze adds the element again. One element is refreshed rather than a timeout on each owned mark: the
 *   renewal never touches the ownership table (so it cannot reorder with `setOwned`) and costs the same
 *   whatever the node owns. While the interface is down the frames cannot be sent (ENETDOWN) and the
 *   lease lapses, which costs nothing (nothing arrives on a down link); the first frame after it comes
 *   back adds the element again. Needs the netdev egress hook (Linux >= 5.16, nftables >= 1.0.1); where
 *   it is missing the ruleset does not load and "auto" falls back to the userspace backend.
 * - Mid-flow TCP (not SYN-only) cannot be decided at netdev (no socket lookup there): it is counted as
 *   accepted, tagged (mark | 0x1000, plus 0x2000 when its bucket is not owned under a live lease) and
 *   decided in `table inet holdfast_<inst>` at prerouting priority -300 (before conntrack) with the
 *   `socket` expression: foreign bucket + local socket -> accept (established flows survive a bucket move),
 *   foreign without socket -> drop, owned without socket -> drop (strictTcp: no RST for another node's
 *   flow).
 *
 * Known differences from the eBPF backend: the mark of VIP packets is overwritten (nftables has no scratch
 * register that survives to prerouting); `socket` also finds listeners, and only a listener on the
 * wildcard address can be told apart from a flow (`socket wildcard 1`), so with this backend TCP services
 * should listen on the wildcard address (a listener bound to the VIP itself would answer a foreign
 * mid-flow packet with RST); a handshake completed by a SYN cookie (no request socket) in an owned bucket
 * is dropped under strictTcp; mid-flow TCP dropped in prerouting is counted in `droppedOrphan` /
 * the inet table's counters, while the per-bucket counters count it as accepted.
 */
import { execFile } from "node:child_process";
import { BUCKET_COUNT, jhash, parseIp, formatIp, type BalanceBy } from "../../core/buckets.js";
import { NotSupportedError } from "../../core/errors.js";
import { DEFAULT_LEASE_MS, type FilterBackend, type FilterBackendOptions, type FilterCounters } from "./backend.js";
import type { FilterConfig } from "./decision.js";
import { FrameSender } from "./inject.js";

/** The mark value of bucket 0 (`offset` of the jhash expression): "HF" in the high half. */
export const NFT_MARK_TAG = 0x48460000;
/** Added to the mark of mid-flow TCP deferred to the prerouting chain (the bit above the 12 bucket bits). */
export const NFT_MARK_DEFERRED = 0x1000;
/** Added to a deferred mark when its bucket is not owned under a live lease (prerouting decides it as foreign). */
export const NFT_MARK_NOT_OWNED = 0x2000;
/** EtherType of the lease renewal frames (IEEE 802 local experimental). */
export const NFT_LEASE_ETHERTYPE = 0x88b5;
const LEASE_DST_MAC = [0x02, 0x48, 0x46, 0x4c, 0x45, 0x41]; // locally administered, used by no host

/** The 4-byte token that the renewal frames of an instance carry (distinct per table name). */
export function nftLeaseToken(instance?: string): number {
  return jhash(new TextEncoder().encode(nftTableName(instance)), 0x4c454153) >>> 0;
}

/** The renewal frame of an instance (60 bytes: the minimum Ethernet frame without FCS). */
export function nftLeaseFrame(instance?: string): Uint8Array {
  const f = new Uint8Array(60);
  f.set(LEASE_DST_MAC, 0);
  f.set([0x02, 0x48, 0x46, 0, 0, 0], 6);
  f[12] = NFT_LEASE_ETHERTYPE >> 8;
  f[13] = NFT_LEASE_ETHERTYPE & 0xff;
  const t = nftLeaseToken(instance);
  f.set([t >>> 24, (t >>> 16) & 0xff, (t >>> 8) & 0xff, t & 0xff], 14);
  return f;
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;
const ENOBUFS = 105;

/** The table name for an instance (letters, digits, `_` only). */
export function nftTableName(instance = "holdfast"): string {
  return `holdfast_${instance.replace(/[^A-Za-z0-9_]/g, "_")}`.slice(0, 64);
}

function hashExpr(family: 4 | 6, by: BalanceBy, proto: "tcp" | "udp" | undefined, seed: number): string {
  const addr = family === 4 ? "ip saddr" : "ip6 saddr";
  const key = by === "address+port" && proto ? `${addr} . ${proto} sport` : addr;
  return `meta mark set jhash ${key} mod ${BUCKET_COUNT} seed ${hex(seed)} offset ${hex(NFT_MARK_TAG)}`;
}

/**
 * Generates the complete ruleset (both tables) for a configuration: the text given to `nft -f`. `leaseMs`:
 * the lease that each renewal frame grants (default 400).
 */
export function nftRuleset(iface: string, cfg: FilterConfig, instance?: string, leaseMs = DEFAULT_LEASE_MS): string {
  const table = nftTableName(instance);
  const seed = (cfg.seed ?? 0) >>> 0;
  const strict = cfg.strictTcp ?? true;
  const def = cfg.defaultBy ?? "address";
  const vips = cfg.vips.map((v) => parseIp(v));
  const v4 = vips.filter((a) => a.length === 4).map(formatIp);
  const v6 = vips.filter((a) => a.length === 16).map(formatIp);
  const L: string[] = [];
  // Create-then-delete makes the delete safe when the table does not exist: a stale table of a crashed run
  // is replaced in the same transaction that installs the new one.
  L.push(`table netdev ${table} {}`, `delete table netdev ${table}`, `table inet ${table} {}`, `delete table inet ${table}`);
  L.push(`table netdev ${table} {`);
  L.push(`  set mine { type mark; }`);
  L.push(`  set lease { type ifname; flags dynamic, timeout; elements = { ${JSON.stringify(iface)} } }`, `  counter expired {}`, `  counter renewed {}`);
  for (let b = 0; b < BUCKET_COUNT; b++) L.push(`  counter a${b} {}`, `  counter d${b} {}`);
  L.push(`  counter broadcast {}`);
  const elems = (p: string): string =>
    Array.from({ length: BUCKET_COUNT }, (_, b) => `${hex(NFT_MARK_TAG + b)} : "${p}${b}"`).join(", ");
  L.push(`  map acc { type mark : counter; elements = { ${elems("a")} } }`);
  L.push(`  map drp { type mark : counter; elements = { ${elems("d")} } }`);
  L.push(`  chain lease {`, `    type filter hook egress device "${iface}" priority -500; policy accept;`);
  L.push(`    ether type ${hex(NFT_LEASE_ETHERTYPE)} @ll,112,32 ${hex(nftLeaseToken(instance))} update @lease { meta oifname timeout ${Math.max(1, Math.round(leaseMs))}ms } counter name "renewed" drop`);
  L.push(`  }`);
  L.push(`  chain ingress {`, `    type filter hook ingress device "${iface}" priority -500; policy accept;`);
  if (v4.length) L.push(`    ip daddr { ${v4.join(", ")} } jump vip4`);
  if (v6.length) L.push(`    ip6 daddr { ${v6.join(", ")} } jump vip6`);
  L.push(`  }`);
  for (const family of [4, 6] as const) {
    const ip = family === 4 ? "ip" : "ip6";
    const protoMatch = (p: "tcp" | "udp"): string => (family === 4 ? `ip protocol ${p}` : `ip6 nexthdr ${p}`);
    L.push(`  chain vip${family} {`, `    meta pkttype set host`);
    if (family === 4) {
      L.push(`    ip frag-off & 0x3fff != 0 ${hashExpr(4, "address", undefined, seed)} goto decide`);
      L.push(`    ip protocol icmp icmp type { 3, 4, 11, 12 } counter name "broadcast" accept`);
    } else {
      L.push(`    ip6 nexthdr ipv6-frag ${hashExpr(6, "address", undefined, seed)} goto decide`);
      L.push(`    ip6 nexthdr ipv6-icmp icmpv6 type { 1, 2, 3, 4, 133-137 } counter name "broadcast" accept`);
    }
    for (const r of cfg.rules) {
      if (r.vip !== undefined && parseIp(r.vip).length !== (family === 4 ? 4 : 16)) continue;
      if (r.vip === undefined && !(family === 4 ? v4 : v6).length) continue;
      const dst = r.vip !== undefined ? `${ip} daddr ${formatIp(parseIp(r.vip))} ` : "";
      const next = r.protocol === "tcp" ? "decide_tcp" : "decide";
      L.push(`    ${dst}${protoMatch(r.protocol)} ${r.protocol} dport ${r.port} ${hashExpr(family, r.by, r.protocol, seed)} goto ${next}`);
    }
    L.push(`    ${protoMatch("tcp")} ${hashExpr(family, def, "tcp", seed)} goto decide_tcp`);
    L.push(`    ${protoMatch("udp")} ${hashExpr(family, def, "udp", seed)} goto decide`);
    L.push(`    ${hashExpr(family, "address", undefined, seed)} goto decide`);
    L.push(`  }`);
  }
  L.push(`  chain decide_tcp {`);
  L.push(`    tcp flags & (syn | ack) != syn meta mark @mine meta iifname @lease counter name meta mark map @acc meta mark set meta mark | ${hex(NFT_MARK_DEFERRED)} accept`);
  L.push(`    tcp flags & (syn | ack) != syn meta mark @mine counter name "expired"`);
  L.push(`    tcp flags & (syn | ack) != syn counter name meta mark map @acc meta mark set meta mark | ${hex(NFT_MARK_DEFERRED | NFT_MARK_NOT_OWNED)} accept`);
  L.push(`    goto decide`, `  }`);
  L.push(`  chain decide {`, `    meta mark @mine meta iifname @lease counter name meta mark map @acc accept`);
  L.push(`    meta mark @mine counter name "expired"`, `    counter name meta mark map @drp drop`, `  }`);
  L.push(`}`);
  L.push(`table inet ${table} {`);
  L.push(`  counter kept {}`, `  counter orphan {}`, `  counter foreign {}`);
  L.push(`  chain pre {`, `    type filter hook prerouting priority -300; policy accept;`);
  // Deferred = the tag and the deferred bit, whatever the bucket and the not-owned bit.
  L.push(`    meta mark & ${hex((0xffff0000 | NFT_MARK_DEFERRED) >>> 0)} != ${hex(NFT_MARK_TAG + NFT_MARK_DEFERRED)} accept`);
  L.push(`    meta mark & ${hex(NFT_MARK_NOT_OWNED)} == 0 jump owned`);
  L.push(`    jump foreign`, `  }`);
  // Does a local socket have this flow? `socket wildcard` tells full sockets apart (1: a listener on the
  // wildcard address, which is not a flow); it does not answer for request and time-wait sockets, which
  // `socket transparent` (0 or 1) does. No socket at all: every `socket` match fails.
  const flowRules = (noSocket: string): string[] => [
    `    socket wildcard 1 goto ${noSocket}`,
    `    socket wildcard 0 accept`,
    `    socket transparent 0 accept`,
    `    socket transparent 1 accept`,
    `    goto ${noSocket}`,
  ];
  L.push(`  chain owned {`, ...flowRules("owned_nosock"), `  }`);
  L.push(`  chain owned_nosock {`, strict ? `    counter name "orphan" drop` : `    accept`, `  }`);
  L.push(`  chain foreign {`);
  L.push(`    socket wildcard 1 goto foreign_nosock`, `    socket wildcard 0 counter name "kept" accept`);
  L.push(`    socket transparent 0 counter name "kept" accept`, `    socket transparent 1 counter name "kept" accept`);
  L.push(`    goto foreign_nosock`, `  }`);
  L.push(`  chain foreign_nosock {`, `    counter name "foreign" drop`);
  L.push(`  }`, `}`);
  return L.join("\n") + "\n";
}

/** The transaction that swaps the owned set atomically. */
export function nftOwnedUpdate(mask: Uint8Array, instance?: string): string {
  const table = nftTableName(instance);
  const owned: number[] = [];
  mask.forEach((v, b) => {
    if (v) owned.push(b);
  });
  const L = [`flush set netdev ${table} mine`];
  if (owned.length) L.push(`add element netdev ${table} mine { ${owned.map((b) => hex(NFT_MARK_TAG + b)).join(", ")} }`);
  return L.join("\n") + "\n";
}

/** The transaction that turns the permanent lease element into one that expires in `ms` (the first renewal). */
export function nftLeaseRenewal(iface: string, ms: number, instance?: string): string {
  const table = nftTableName(instance);
  return `flush set netdev ${table} lease\nadd element netdev ${table} lease { ${JSON.stringify(iface)} timeout ${Math.max(1, Math.ceil(ms))}ms }\n`;
}

/** Runs `nft` (inside a network namespace when `netns` is a path), feeding `input` on stdin. */
export function runNft(args: readonly string[], input: string | undefined, netns?: string): Promise<string> {
  const [cmd, argv] = netns ? ["nsenter", [`--net=${netns}`, "nft", ...args]] : ["nft", [...args]];
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, argv, { maxBuffer: 64 * 1024 * 1024, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`nft ${args.join(" ")}: ${stderr.trim() || err.message}`), { cause: err }));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

interface NftCounterJson {
  counter?: { name: string; family: string; packets: number };
}

/** The nftables backend. */
export class NftablesBackend implements FilterBackend {
  readonly name = "nftables" as const;
  readonly #opts: FilterBackendOptions;
  #started = false;
  /** Sends the renewal frames; set once the first renewal turned the lease element into a timed one. */
  #sender: FrameSender | undefined;

  constructor(opts: FilterBackendOptions) {
    this.#opts = opts;
  }

  async start(): Promise<void> {
    const table = nftTableName(this.#opts.instance);
    let stale: boolean;
    try {
      const list = await runNft(["list", "tables"], undefined, this.#opts.netns);
      stale = list.includes(` ${table}\n`) || list.endsWith(` ${table}`);
    } catch (err) {
      throw new NotSupportedError("nftables", `cannot run nft: ${(err as Error).message}`, { cause: err });
    }
    if (stale) this.#opts.log?.(`filter: replacing stale nftables tables ${table} left by an earlier run`);
    try {
      await runNft(["-f", "-"], nftRuleset(this.#opts.iface, this.#opts.config, this.#opts.instance, this.#leaseMs()), this.#opts.netns);
    } catch (err) {
      throw new NotSupportedError("nftables", `cannot load the farm ruleset: ${(err as Error).message}`, { cause: err });
    }
    this.#started = true;
  }

  #leaseMs(): number {
    return this.#opts.leaseMs || DEFAULT_LEASE_MS;
  }

  async setOwned(mask: Uint8Array): Promise<void> {
    if (!this.#started) throw new Error("nftables backend not started");
    await runNft(["-f", "-"], nftOwnedUpdate(mask, this.#opts.instance), this.#opts.netns);
  }

  /**
   * The first call sets the lease element's timeout to `untilNs` (an nft transaction); later calls send one
   * renewal frame, which the kernel turns into a lease of `leaseMs` (FilterBackendOptions.leaseMs) from its
   * receipt: `untilNs` is then only checked to be about that far.
   */
  async renewLease(untilNs: bigint): Promise<void> {
    if (!this.#started) return;
    if (!this.#sender) {
      const ms = Number(untilNs - process.hrtime.bigint()) / 1e6;
      const sender = new FrameSender(this.#opts.iface, this.#opts.netns);
      try {
        await runNft(["-f", "-"], nftLeaseRenewal(this.#opts.iface, ms, this.#opts.instance), this.#opts.netns);
      } catch (err) {
        sender.close();
        throw err;
      }
      if (!this.#started) {
        sender.close();
        return;
      }
      this.#sender = sender;
      return;
    }
    const r = this.#sender.trySend(nftLeaseFrame(this.#opts.instance));
    // The egress rule drops the frame after refreshing the lease: the kernel reports the drop as ENOBUFS.
    // A frame that left the interface found no rule (table gone): the lease was not renewed.
    if (r.errno === 0) throw new Error(`lease renewal frame left ${this.#opts.iface} unconsumed: is the ${nftTableName(this.#opts.instance)} table gone?`);
    if (r.errno !== ENOBUFS) throw new Error(`lease renewal frame: sendto failed with errno ${r.errno}`);
  }

  async counters(): Promise<FilterCounters> {
    const table = nftTableName(this.#opts.instance);
    const read = async (family: string): Promise<Map<string, number>> => {
      const out = await runNft(["-j", "list", "counters", "table", family, table], undefined, this.#opts.netns);
      const m = new Map<string, number>();
      for (const item of (JSON.parse(out) as { nftables: NftCounterJson[] }).nftables) {
        if (item.counter) m.set(item.counter.name, item.counter.packets);
      }
      return m;
    };
    const nd = await read("netdev");
    const inet = await read("inet");
    return {
      accepted: Array.from({ length: BUCKET_COUNT }, (_, b) => nd.get(`a${b}`) ?? 0),
      dropped: Array.from({ length: BUCKET_COUNT }, (_, b) => nd.get(`d${b}`) ?? 0),
      broadcast: nd.get("broadcast") ?? 0,
      keptSocket: inet.get("kept") ?? 0,
      droppedOrphan: inet.get("orphan") ?? 0,
      droppedDeferred: inet.get("foreign") ?? 0,
      leaseExpired: nd.get("expired") ?? 0,
    };
  }

  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    this.#sender?.close();
    this.#sender = undefined;
    const table = nftTableName(this.#opts.instance);
    await runNft(["-f", "-"], [`table netdev ${table} {}`, `delete table netdev ${table}`, `table inet ${table} {}`, `delete table inet ${table}`].join("\n") + "\n", this.#opts.netns);
  }
}
