/**
 * Farm buckets: the hash that maps a client to one of {@link BUCKET_COUNT} buckets, and the weighted
 * rendezvous assignment of buckets to nodes.
 *
 * Pure and deterministic: no I/O, no clock, no randomness.
 *
 * ## The packet hash (shared bit for bit by the TS code, the eBPF program and nftables)
 * The hash is the Linux kernel's `jhash()` (include/linux/jhash.h, Bob Jenkins' lookup3 as the kernel
 * implements it) over a key laid out exactly as nftables lays out the concatenation
 * `ip saddr . tcp sport` in its registers, scaled to a bucket exactly as `nft_jhash_eval` does
 * (`reciprocal_scale(h, 4096)` = `(h * 4096) >> 32`, i.e. the hash's top 12 bits):
 *
 * | rule             | key bytes (network order)                        | length |
 * | ---------------- | ------------------------------------------------ | ------ |
 * | address, IPv4    | saddr[4]                                         | 4      |
 * | address, IPv6    | saddr[16]                                        | 16     |
 * | address+port, v4 | saddr[4] . sport[2] . 00 00 (register padding)   | 8      |
 * | address+port, v6 | saddr[16] . sport[2] . 00 00                     | 20     |
 *
 * `bucket = jhash(key, length, seed) >>> 20`, which is what nftables computes for
 * `jhash <key> mod 4096 seed <seed>`. The kernel reads 32-bit words in CPU order; the eBPF program and the
 * nftables kernel code run on the same CPU, and this file reads words little-endian (x86-64, arm64): on a
 * big-endian host the three would need the same byte swap (not supported).
 *
 * ## Ownership
 * Weighted rendezvous hashing (highest random weight; Thaler & Ravishankar 1998, weighted form
 * `score = -weight / ln(u)` with `u` uniform in (0,1) derived from (node id, bucket), stratified per node:
 * see `memberUniforms`). Each bucket goes to
 * the member with the highest score, independently of the others, so removing a member moves only its
 * buckets, and adding one moves only buckets to it.
 *
 * ## Why 4096 buckets
 * SafeKit uses 256. With 256, a node's share is a sample of 256 draws: 3 equal nodes get e.g. 95/86/75
 * buckets (ids n0, n1, n2: the largest 1.11x the mean), beyond the farm's +-10% spread target. Rendezvous
 * hashing is kept because its movement is minimal (a leaver moves only its buckets, a joiner only takes
 * buckets), so the spread can only shrink with more samples: 4096 buckets bring the binomial standard
 * deviation of a node's share to ~2% of the mean for 3 nodes (~1.8% after the stratification below), i.e.
 * balance within a few percent, for a cost that stays small: a 4 KiB ownership table per node (BPF array
 * value, nftables set of at most 4096 marks) and 4096 per-bucket counters.
 */

/**
 * Number of buckets (a power of two: the bucket is the hash's top 12 bits). Fixed: the eBPF program
 * (`FARM_BUCKETS` in src/native/farm_shared.h) and the nftables rules (`mod 4096`) are built for it, and
 * every node of a farm must use the same value. See "Why 4096 buckets" above.
 */
export const BUCKET_COUNT = 4096;

/** log2({@link BUCKET_COUNT}): the bucket is the top `BUCKET_BITS` bits of the 32-bit hash. */
export const BUCKET_BITS = 12;

/** How a load-balancing rule identifies a client. */
export type BalanceBy = "address" | "address+port";

const JHASH_INITVAL = 0xdeadbeef;

function rol32(x: number, s: number): number {
  return ((x << s) | (x >>> (32 - s))) >>> 0;
}

/**
 * The Linux kernel's `jhash(key, length, initval)` (include/linux/jhash.h), bit for bit, words read
 * little-endian. Returns an unsigned 32-bit integer.
 */
export function jhash(key: Uint8Array, seed: number, length: number = key.length): number {
  let a = (JHASH_INITVAL + length + seed) >>> 0;
  let b = a;
  let c = a;
  let o = 0;
  let len = length;
  const k = (i: number): number => key[o + i] ?? 0;
  const word = (i: number): number => (k(i) | (k(i + 1) << 8) | (k(i + 2) << 16) | (k(i + 3) << 24)) >>> 0;
  while (len > 12) {
    a = (a + word(0)) >>> 0;
    b = (b + word(4)) >>> 0;
    c = (c + word(8)) >>> 0;
    // __jhash_mix
    a = (a - c) >>> 0; a = (a ^ rol32(c, 4)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol32(a, 6)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol32(b, 8)) >>> 0; b = (b + a) >>> 0;
    a = (a - c) >>> 0; a = (a ^ rol32(c, 16)) >>> 0; c = (c + b) >>> 0;
    b = (b - a) >>> 0; b = (b ^ rol32(a, 19)) >>> 0; a = (a + c) >>> 0;
    c = (c - b) >>> 0; c = (c ^ rol32(b, 4)) >>> 0; b = (b + a) >>> 0;
    len -= 12;
    o += 12;
  }
  if (len === 0) return c;
  // The kernel's fall-through switch on the tail length: bytes beyond `len` contribute nothing.
  const t = (i: number, shift: number): number => (i < len ? (k(i) << shift) >>> 0 : 0);
  c = (c + t(8, 0) + t(9, 8) + t(10, 16) + t(11, 24)) >>> 0;
  b = (b + t(4, 0) + t(5, 8) + t(6, 16) + t(7, 24)) >>> 0;
  a = (a + t(0, 0) + t(1, 8) + t(2, 16) + t(3, 24)) >>> 0;
  // __jhash_final
  c = (c ^ b) >>> 0; c = (c - rol32(b, 14)) >>> 0;
  a = (a ^ c) >>> 0; a = (a - rol32(c, 11)) >>> 0;
  b = (b ^ a) >>> 0; b = (b - rol32(a, 25)) >>> 0;
  c = (c ^ b) >>> 0; c = (c - rol32(b, 16)) >>> 0;
  a = (a ^ c) >>> 0; a = (a - rol32(c, 4)) >>> 0;
  b = (b ^ a) >>> 0; b = (b - rol32(a, 14)) >>> 0;
  c = (c ^ b) >>> 0; c = (c - rol32(b, 24)) >>> 0;
  return c;
}

/**
 * The hash key for a client, laid out as nftables lays out `ip saddr` or `ip saddr . th sport` (each
 * field padded to 4 bytes with zeros). `address` is 4 (IPv4) or 16 (IPv6) bytes in network order.
 */
export function flowKey(address: Uint8Array, by: BalanceBy, sourcePort = 0): Uint8Array {
  if (address.length !== 4 && address.length !== 16) {
    throw new RangeError(`flowKey: address must be 4 or 16 bytes, got ${address.length}`);
  }
  if (by === "address") return Uint8Array.from(address);
  const key = new Uint8Array(address.length + 4);
  key.set(address, 0);
  key[address.length] = (sourcePort >>> 8) & 0xff;
  key[address.length + 1] = sourcePort & 0xff;
  return key;
}

/** The bucket of a hash key: `jhash(key, len, seed)` scaled to 4096 as nftables' `mod 4096` does (top 12 bits). */
export function bucketOfKey(key: Uint8Array, seed: number): number {
  return jhash(key, seed >>> 0) >>> (32 - BUCKET_BITS);
}

/** The bucket of a client (address, and source port for the `address+port` rule). */
export function bucketOf(address: Uint8Array | string, by: BalanceBy, sourcePort: number, seed: number): number {
  const addr = typeof address === "string" ? parseIp(address) : address;
  return bucketOfKey(flowKey(addr, by, sourcePort), seed);
}

/** Parses an IPv4 dotted quad or an IPv6 address (RFC 4291 text forms, incl. `::` and a dotted tail). */
export function parseIp(text: string): Uint8Array {
  const v4 = parseIpv4(text);
  if (v4) return v4;
  const v6 = parseIpv6(text);
  if (v6) return v6;
  throw new RangeError(`not an IP address: ${JSON.stringify(text)}`);
}

function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] ?? "";
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIpv6(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const items = s.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i] ?? "";
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = parseIpv4(item);
        if (!v4) return undefined;
        out.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return undefined;
        out.push(parseInt(item, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0] ?? "");
  const tail = halves.length === 2 ? groups(halves[1] ?? "") : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >>> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** Formats 4 or 16 address bytes as text (IPv6 in RFC 5952 canonical form). */
export function formatIp(addr: Uint8Array): string {
  if (addr.length === 4) return Array.from(addr).join(".");
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(((addr[2 * i] ?? 0) << 8) | (addr[2 * i + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(":");
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

// ---------------------------------------------------------------------------------------------------------
// Ownership

/** A node taking part in bucket ownership. */
export interface BucketMember {
  /** The node's stable id (the membership protocol's node id). */
  readonly id: string;
  /**
   * Relative capacity: a node of weight 2 gets about twice the buckets of a node of weight 1.
   * A weight of 0 (or less) owns nothing. Unitless; default 1 in the farm configuration.
   */
  readonly weight: number;
}

/** Owner per bucket (index = bucket), `undefined` where no member can own it (no member with weight > 0). */
export type BucketAssignment = readonly (string | undefined)[];

function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** splitmix32-style step: a well-mixed 32-bit stream from a 32-bit state (pure, no global state). */
function mix32(x: number): number {
  let z = (x + 0x9e3779b9) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * The member's {@link BUCKET_COUNT} uniforms in (0,1), one per bucket, *stratified*: bucket b gets
 * `(perm[b] + jitter(b)) / BUCKET_COUNT` where `perm` is a pseudo-random permutation of the bucket numbers
 * seeded by the id (Fisher-Yates driven by a counter-mode mix of `jhash(id)`). Each value is still
 * uniform for its bucket and independent of the other members' values, so the rendezvous properties and
 * the weight-proportional probabilities hold as with plain hashing; but a member's values cover (0,1)
 * evenly, which removes the member's own share of the sampling noise (for 3 equal nodes the standard
 * deviation of a node's bucket count drops from the binomial 30 buckets to about 24).
 */
function memberUniforms(idBytes: Uint8Array): Float64Array {
  const k1 = jhash(idBytes, 0x51ed270b);
  const k2 = jhash(idBytes, 0x9e3779b9);
  const perm = new Uint16Array(BUCKET_COUNT);
  for (let i = 0; i < BUCKET_COUNT; i++) perm[i] = i;
  for (let i = BUCKET_COUNT - 1; i > 0; i--) {
    const j = mix32((k1 ^ Math.imul(i, 0x2545f491)) >>> 0) % (i + 1);
    const tmp = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = tmp;
  }
  const out = new Float64Array(BUCKET_COUNT);
  for (let b = 0; b < BUCKET_COUNT; b++) {
    const jitter = ((mix32((k2 ^ Math.imul(b, 0x27d4eb2f)) >>> 0) >>> 6) + 0.5) / 2 ** 26; // in (0,1)
    out[b] = (perm[b]! + jitter) / BUCKET_COUNT;
  }
  return out;
}

/**
 * Weighted rendezvous ownership: the owner of each of the {@link BUCKET_COUNT} buckets.
 *
 * Properties (tested with fast-check): every bucket has exactly one owner when some weight is > 0; a
 * member leaving moves only its own buckets; a member joining only takes buckets; shares are proportional
 * to weights (within sampling tolerance: a few percent with 4096 buckets). The result depends only on the set of members
 * (not on their order); ties (practically impossible) break on the smaller id.
 */
export function assignBuckets(members: readonly BucketMember[]): BucketAssignment {
  const live = members
    .filter((m) => m.weight > 0 && Number.isFinite(m.weight))
    .map((m) => ({ id: m.id, weight: m.weight, u: memberUniforms(utf8(m.id)).map((u) => -1 / Math.log(u)) }));
  const out: (string | undefined)[] = new Array<string | undefined>(BUCKET_COUNT).fill(undefined);
  for (let b = 0; b < BUCKET_COUNT; b++) {
    let best: string | undefined;
    let bestScore = -Infinity;
    for (const m of live) {
      const score = m.weight * m.u[b]!; // = -weight / ln(u)
      if (score > bestScore || (score === bestScore && best !== undefined && m.id < best)) {
        best = m.id;
        bestScore = score;
      }
    }
    out[b] = best;
  }
  return out;
}

/** The buckets owned by `id` in an assignment, as a {@link BUCKET_COUNT}-byte mask (1 = owned). */
export function ownedMask(assignment: BucketAssignment, id: string): Uint8Array {
  const mask = new Uint8Array(BUCKET_COUNT);
  assignment.forEach((owner, b) => {
    if (owner === id) mask[b] = 1;
  });
  return mask;
}

/** Normalises a set of buckets or a {@link BUCKET_COUNT}-entry mask to a mask (1 = owned); validates the input. */
export function toMask(buckets: Uint8Array | ReadonlySet<number> | readonly number[]): Uint8Array {
  const mask = new Uint8Array(BUCKET_COUNT);
  if (buckets instanceof Uint8Array) {
    if (buckets.length !== BUCKET_COUNT) {
      throw new RangeError(`bucket mask must have ${BUCKET_COUNT} entries, got ${buckets.length}`);
    }
    buckets.forEach((v, i) => {
      mask[i] = v ? 1 : 0;
    });
    return mask;
  }
  for (const b of buckets) {
    if (!Number.isInteger(b) || b < 0 || b >= BUCKET_COUNT) throw new RangeError(`not a bucket: ${b}`);
    mask[b] = 1;
  }
  return mask;
}

/** The bucket numbers set in a mask, ascending. */
export function maskToList(mask: Uint8Array): number[] {
  const out: number[] = [];
  mask.forEach((v, i) => {
    if (v) out.push(i);
  });
  return out;
}
