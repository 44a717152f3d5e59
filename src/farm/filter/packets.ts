/**
 * Crafted Ethernet frames for filter tests (BPF_PROG_TEST_RUN, vectors): IPv4/IPv6 with TCP, UDP, ICMP,
 * fragments. Checksums are filled (IPv4 header; L4 checksums left zero: the filter never checks them).
 * Pure.
 */
import { parseIp } from "../../core/buckets.js";

/** One crafted packet. */
export interface PacketSpec {
  readonly src: string;
  readonly dst: string;
  readonly protocol: "tcp" | "udp" | "icmp" | "other";
  readonly sport?: number;
  readonly dport?: number;
  /** TCP flags byte (default SYN = 0x02). */
  readonly tcpFlags?: number;
  /** ICMP / ICMPv6 type (default echo request: 8 / 128). */
  readonly icmpType?: number;
  /** Make it a fragment: `first` (MF set, offset 0), `later` (offset > 0, no L4 header). */
  readonly fragment?: "first" | "later";
  /** Payload bytes after the L4 header (default 16 zero bytes). */
  readonly payloadLength?: number;
}

const SRC_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const DST_MAC = [0x02, 0xbf, 0x00, 0x00, 0x00, 0x01];

function ipv4Checksum(h: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += ((h[i] ?? 0) << 8) | (h[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function l4Header(p: PacketSpec, v6: boolean): { proto: number; bytes: number[] } {
  const sport = p.sport ?? 40000;
  const dport = p.dport ?? 80;
  const be16 = (n: number): number[] => [(n >>> 8) & 0xff, n & 0xff];
  switch (p.protocol) {
    case "tcp":
      return { proto: 6, bytes: [...be16(sport), ...be16(dport), 0, 0, 0, 1, 0, 0, 0, 0, 0x50, p.tcpFlags ?? 0x02, 0xff, 0xff, 0, 0, 0, 0] };
    case "udp":
      return { proto: 17, bytes: [...be16(sport), ...be16(dport), ...be16(8 + (p.payloadLength ?? 16)), 0, 0] };
    case "icmp":
      return { proto: v6 ? 58 : 1, bytes: [p.icmpType ?? (v6 ? 128 : 8), 0, 0, 0, 0, 1, 0, 1] };
    case "other":
      return { proto: 47, bytes: [0, 0, 0x08, 0x00] }; // GRE
  }
}

/** Builds the frame (Ethernet II + IP + L4 + payload). */
export function craftPacket(p: PacketSpec): Uint8Array {
  const src = parseIp(p.src);
  const dst = parseIp(p.dst);
  if (src.length !== dst.length) throw new RangeError("src and dst must be the same family");
  const v6 = src.length === 16;
  const l4 = l4Header(p, v6);
  const payload = new Array<number>(p.payloadLength ?? 16).fill(0);
  const later = p.fragment === "later";
  const body = later ? payload : [...l4.bytes, ...payload];
  let ip: number[];
  if (!v6) {
    const total = 20 + body.length;
    let frag = 0;
    if (p.fragment === "first") frag = 0x2000;
    if (later) frag = 0x0003; // offset 3 (24 bytes), last fragment
    const h = new Uint8Array([0x45, 0, total >> 8, total & 0xff, 0x12, 0x34, frag >> 8, frag & 0xff, 64, l4.proto, 0, 0, ...src, ...dst]);
    const cs = ipv4Checksum(h);
    h[10] = cs >> 8;
    h[11] = cs & 0xff;
    ip = Array.from(h);
  } else {
    let next = l4.proto;
    let ext: number[] = [];
    if (p.fragment) {
      const off = later ? 3 << 3 : 0;
      const more = later ? 0 : 1;
      ext = [l4.proto, 0, (off >> 8) & 0xff, (off & 0xf8) | more, 0, 0, 0x12, 0x34];
      next = 44;
    }
    const plen = ext.length + body.length;
    ip = [0x60, 0, 0, 0, plen >> 8, plen & 0xff, next, 64, ...src, ...dst, ...ext];
  }
  return Uint8Array.from([...DST_MAC, ...SRC_MAC, ...(v6 ? [0x86, 0xdd] : [0x08, 0x00]), ...ip, ...body]);
}
