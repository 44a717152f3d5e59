/**
 * The farm filter's decision, in TypeScript: the reference that the eBPF program (src/native/farm.bpf.c),
 * the nftables rules and the userspace fallback must match, packet for packet (see test/vectors/filter.json).
 * Pure: no I/O.
 */
import { BUCKET_COUNT, bucketOfKey, flowKey, parseIp, type BalanceBy } from "../../core/buckets.js";

/** A load-balancing rule for one port and protocol. */
export interface FilterRule {
  /** Transport protocol of the service. */
  readonly protocol: "tcp" | "udp";
  /** Destination port of the service on the VIP (1-65535). */
  readonly port: number;
  /**
   * How a client is identified: `"address"` (the same client always lands on the same node: session
   * affinity for stateful apps) or `"address+port"` (each connection placed on its own: best spread for
   * stateless apps; a protocol that opens several connections, e.g. FTP, may be split over nodes).
   */
  readonly by: BalanceBy;
  /** The VIP this rule applies to; all VIPs of the filter when omitted. */
  readonly vip?: string;
}

/** What the filter needs to decide: the VIPs, their rules, the hash seed. */
export interface FilterConfig {
  /** VIP addresses (IPv4 or IPv6 text). Traffic to any other address passes untouched. */
  readonly vips: readonly string[];
  /** Port rules. Traffic to a VIP that matches no rule is balanced with {@link FilterConfig.defaultBy}. */
  readonly rules: readonly FilterRule[];
  /**
   * How clients are identified for VIP traffic that matches no port rule (also ICMP echo and other
   * protocols; fragments always use `"address"`). Default `"address"`.
   */
  readonly defaultBy?: BalanceBy;
  /**
   * jhash seed (unsigned 32-bit), the same on every node of a farm (it is part of the farm's
   * configuration): changing it moves every client. Default 0.
   */
  readonly seed?: number;
  /**
   * In an owned bucket, drop mid-flow TCP packets that belong to no local socket instead of letting the
   * stack reset them: a flow another node still serves after a bucket move must not be reset by the new
   * owner. Costs one socket lookup per non-SYN TCP packet in owned buckets that are contested (another
   * live node may hold connections there, see `setOwned`'s `contested`; the nftables and userspace backends
   * treat every owned bucket as contested). Default true.
   */
  readonly strictTcp?: boolean;
  /**
   * In an owned bucket, drop a SYN (without ACK) that no local socket would take (no listener) instead of
   * letting the stack answer RST: while the app is dead and the filter's lease still holds (up to `leaseMs`,
   * 400 ms by default), clients retransmit their SYN (after ~1 s) and land on the node that takes the bucket
   * over, instead of failing at once. Costs one socket lookup per new connection. eBPF backend only (nftables and
   * userspace pass the SYN, and the kernel answers RST). Default true.
   */
  readonly dropSynWithoutListener?: boolean;
}

/** The outcome for one packet. `pass` means delivered to the local stack. */
export type FilterDecision =
  | { readonly verdict: "pass"; readonly kind: "not-vip" }
  | { readonly verdict: "pass"; readonly kind: "broadcast" }
  | {
      readonly verdict: "pass" | "drop";
      readonly kind: "bucket";
      readonly bucket: number;
      /**
       * `owned`, `foreign`, `kept-socket` (foreign, local socket), `orphan` (owned, mid-flow, no socket),
       * `no-listener` (owned, SYN, no local listener).
       */
      readonly reason: "owned" | "foreign" | "kept-socket" | "orphan" | "no-listener";
      /** The parsed flow, for the userspace backend's socket lookup and for logs. */
      readonly flow: PacketFlow;
    };

/** The fields of a packet that the decision used. */
export interface PacketFlow {
  readonly family: 4 | 6;
  readonly protocol: number;
  readonly source: Uint8Array;
  readonly destination: Uint8Array;
  readonly sourcePort: number;
  readonly destinationPort: number;
  /** TCP that does not open a connection (not SYN-only): may belong to an existing socket. */
  readonly midflow: boolean;
  readonly fragment: boolean;
}

const IPPROTO_ICMP = 1;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_ICMPV6 = 58;
const IPV6_FRAGMENT = 44;

/** A {@link FilterConfig} compiled for fast lookups. */
export interface CompiledFilter {
  readonly seed: number;
  readonly strictTcp: boolean;
  readonly dropSynWithoutListener: boolean;
  /** key `family|hexaddr` -> default mode. */
  readonly vipDefault: ReadonlyMap<string, BalanceBy>;
  /** key `family|hexaddr|proto|port` -> mode. */
  readonly ruleMode: ReadonlyMap<string, BalanceBy>;
}

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const protoNumber = (p: "tcp" | "udp"): number => (p === "tcp" ? IPPROTO_TCP : IPPROTO_UDP);

/** Validates and compiles a filter configuration (throws RangeError on a bad address, port or rule VIP). */
export function compileFilter(cfg: FilterConfig): CompiledFilter {
  const vipDefault = new Map<string, BalanceBy>();
  const ruleMode = new Map<string, BalanceBy>();
  const vips = cfg.vips.map((v) => parseIp(v));
  for (const a of vips) vipDefault.set(`${a.length === 4 ? 4 : 6}|${hex(a)}`, cfg.defaultBy ?? "address");
  for (const r of cfg.rules) {
    if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) throw new RangeError(`rule port ${r.port} not in 1-65535`);
    const targets = r.vip === undefined ? vips : [parseIp(r.vip)];
    for (const a of targets) {
      const base = `${a.length === 4 ? 4 : 6}|${hex(a)}`;
      if (!vipDefault.has(base)) throw new RangeError(`rule for ${r.vip}: not one of the filter's VIPs`);
      ruleMode.set(`${base}|${protoNumber(r.protocol)}|${r.port}`, r.by);
    }
  }
  return { seed: (cfg.seed ?? 0) >>> 0, strictTcp: cfg.strictTcp ?? true, dropSynWithoutListener: cfg.dropSynWithoutListener ?? true, vipDefault, ruleMode };
}

/**
 * The bucket of a TCP connection seen from this node (`local` = the VIP side, `remote` = the client), hashed
 * with the rule of its local port as the filter does; undefined when `local` is not one of the filter's VIPs.
 * Used to seed the eBPF program's per-bucket flags from the sockets that already exist.
 */
export function tcpConnectionBucket(
  filter: CompiledFilter, local: Uint8Array, localPort: number, remote: Uint8Array, remotePort: number,
): number | undefined {
  const base = `${local.length === 4 ? 4 : 6}|${hex(local)}`;
  const def = filter.vipDefault.get(base);
  if (def === undefined) return undefined;
  const by = filter.ruleMode.get(`${base}|${IPPROTO_TCP}|${localPort}`) ?? def;
  return bucketOfKey(flowKey(remote, by, remotePort), filter.seed);
}

/** Further inputs of {@link decide}, with defaults that give the behaviour of the nftables and userspace backends. */
export interface DecideInputs {
  /**
   * Whether another live node may hold TCP connections of an owned bucket (default: every bucket): only then do
   * owned mid-flow packets get the strict socket lookup (eBPF: the farm_owned entry without FARM_OWNED_SOLE).
   */
  readonly contested?: (bucket: number) => boolean;
  /** Whether a local socket, a listener included, would take this SYN (default: yes). */
  readonly hasListener?: (flow: PacketFlow) => boolean;
}

/**
 * Decides one Ethernet frame. `owned` is the BUCKET_COUNT-entry (4096) ownership mask (non-zero = owned); `hasSocket` says
 * whether a local TCP socket (not a listener) has this flow (only asked for mid-flow TCP). `mayHold` says whether
 * the bucket's "this node may hold connections here" flag is set (the eBPF program's `farm_mayhold`, set when a
 * SYN passes): in a foreign bucket whose flag is clear, mid-flow TCP is dropped without asking `hasSocket`, except
 * a SYN+ACK (reply to a connection opened from the VIP), which is always asked. Default: every flag set (the
 * behaviour of the backends that keep no such flag).
 */
export function decide(
  frame: Uint8Array,
  filter: CompiledFilter,
  owned: Uint8Array,
  hasSocket: (flow: PacketFlow) => boolean = () => false,
  mayHold: (bucket: number) => boolean = () => true,
  inputs: DecideInputs = {},
): FilterDecision {
  const NOT_VIP = { verdict: "pass", kind: "not-vip" } as const;
  if (frame.length < 14) return NOT_VIP;
  const etherType = ((frame[12] ?? 0) << 8) | (frame[13] ?? 0);
  const u8 = (o: number): number | undefined => frame[o];
  let family: 4 | 6;
  let src: Uint8Array;
  let dst: Uint8Array;
  let proto: number;
  let fragment: boolean;
  let l4: number;
  if (etherType === 0x0800) {
    if (frame.length < 34) return NOT_VIP;
    const ihl = (frame[14] ?? 0) & 0x0f;
    if (ihl < 5) return NOT_VIP;
    family = 4;
    src = frame.slice(26, 30);
    dst = frame.slice(30, 34);
    proto = frame[23] ?? 0;
    fragment = ((((frame[20] ?? 0) << 8) | (frame[21] ?? 0)) & 0x3fff) !== 0;
    l4 = 14 + ihl * 4;
  } else if (etherType === 0x86dd) {
    if (frame.length < 54) return NOT_VIP;
    family = 6;
    src = frame.slice(22, 38);
    dst = frame.slice(38, 54);
    proto = frame[20] ?? 0;
    fragment = proto === IPV6_FRAGMENT;
    l4 = 54;
  } else {
    return NOT_VIP;
  }
  const base = `${family}|${hex(dst)}`;
  const def = filter.vipDefault.get(base);
  if (def === undefined) return NOT_VIP;

  let by: BalanceBy = "address";
  let sport = 0;
  let dport = 0;
  let tcpFlags = 0;
  if (!fragment) {
    if ((family === 4 && proto === IPPROTO_ICMP) || (family === 6 && proto === IPPROTO_ICMPV6)) {
      const type = u8(l4);
      if (type !== undefined) {
        const broadcast = family === 6 ? (type >= 1 && type <= 4) || (type >= 133 && type <= 137) : [3, 4, 11, 12].includes(type);
        if (broadcast) return { verdict: "pass", kind: "broadcast" };
      }
    } else if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
      if (frame.length >= l4 + 4) {
        sport = ((frame[l4] ?? 0) << 8) | (frame[l4 + 1] ?? 0);
        dport = ((frame[l4 + 2] ?? 0) << 8) | (frame[l4 + 3] ?? 0);
        by = filter.ruleMode.get(`${base}|${proto}|${dport}`) ?? def;
        if (proto === IPPROTO_TCP) tcpFlags = frame[l4 + 13] ?? 0;
      }
    }
  }
  const bucket = bucketOfKey(flowKey(src, by, sport), filter.seed);
  const synOnly = (tcpFlags & 0x02) !== 0 && (tcpFlags & 0x10) === 0;
  const midflow = !fragment && proto === IPPROTO_TCP && !synOnly;
  const flow: PacketFlow = {
    family, protocol: proto, source: src, destination: dst, sourcePort: sport, destinationPort: dport, midflow, fragment,
  };
  const isOwned = (owned[bucket % BUCKET_COUNT] ?? 0) !== 0;
  if (isOwned) {
    const contested = inputs.contested?.(bucket) ?? true;
    if (midflow && filter.strictTcp && contested && !hasSocket(flow)) return { verdict: "drop", kind: "bucket", bucket, reason: "orphan", flow };
    const synOnlyTcp = !fragment && proto === IPPROTO_TCP && synOnly;
    if (synOnlyTcp && filter.dropSynWithoutListener && !(inputs.hasListener?.(flow) ?? true)) {
      return { verdict: "drop", kind: "bucket", bucket, reason: "no-listener", flow };
    }
    return { verdict: "pass", kind: "bucket", bucket, reason: "owned", flow };
  }
  const synAck = (tcpFlags & 0x02) !== 0;
  if (midflow && (synAck || mayHold(bucket)) && hasSocket(flow)) return { verdict: "pass", kind: "bucket", bucket, reason: "kept-socket", flow };
  return { verdict: "drop", kind: "bucket", bucket, reason: "foreign", flow };
}
