/**
 * The witness arbiter, pure: a lease per module, granted to ONE node at a time by a witness that both mirror
 * nodes reach. A ping cannot arbitrate (two nodes cut from each other both see the router and both go ALONE); a
 * witness that grants one lease can. No I/O, no clock: every input carries `now` (monotonic ms of the caller).
 *
 * Messages (UDP, one per datagram, authenticated with HMAC-SHA256 under the cluster key, see {@link encodeArbiter}):
 * - `claim {module, node, seq, ttl}` -> `grant {module, node, seq, ttl}` | `deny {module, node, seq, holder, remaining}`
 * - `release {module, node, seq}` -> `released {module, node, seq}`
 *
 * Witness ({@link ArbiterWitness}): per module, the holder and the expiry on the witness's monotonic clock
 * (receive time + ttl). The holder's claim renews; another node's claim is granted only once the lease expired
 * or was released. A restarted witness knows no holder, so it grants nothing during one `maxTtlMs` after its start
 * (a holder from before the restart still believes in its lease that long at most). The table is bounded.
 *
 * Client ({@link ArbiterLease}): the lease counts as valid until (local time the claim was SENT) + ttl x (1 - margin).
 * The witness's expiry is (its receive time) + ttl, and receive >= send, so the client always believes the lease
 * ended before the witness may grant it elsewhere, as long as the client's clock runs at least (1 - margin) times
 * as fast as the witness's (ttl x (1 - margin) on the client's clock must not last longer than ttl on the
 * witness's clock). With the default margin 0.1, clock rates may differ by up to 10 % (NTP-slewed clocks differ
 * by 0.05 % at most; monotonic clocks are not stepped). Delay, loss, duplication and reordering of messages do
 * not matter: a late grant is dated by its claim's send time.
 *
 * Replays across a witness restart: within one run of the witness, per-node sequence numbers (kept in memory)
 * refuse replays. A restarted witness has forgotten them, so every run has a boot nonce (`boot`, random, from
 * the server): every answer carries it, and claims and releases must echo it. A claim without the current nonce
 * (a client that has not heard this run yet, or a replay captured before the restart) changes nothing and is
 * denied with the nonce; the client learns it from that answer (only from an answer to one of its own pending
 * claims, so a replayed old answer cannot teach it a stale one) and claims again at once. Wire: `boot` is an
 * optional field of version 1; a new client with an old witness never learns a nonce and sends none; an old
 * client is always denied by a new witness (upgrade the witness after the nodes).
 */
import type { MacFn } from "./membership/wire.js";
import { MAC_BYTES } from "./membership/wire.js";

/** Datagram magic: "HFA" + protocol version 1. */
export const ARBITER_MAGIC = Uint8Array.of(0x48, 0x46, 0x41, 0x01);
/** Largest datagram accepted (bytes). Claims are ~120 bytes; anything bigger is garbage or an attack. */
export const ARBITER_MAX_DATAGRAM = 512;
/** Longest module or node name accepted. */
export const ARBITER_MAX_NAME = 64;

/** `boot`: the witness run's nonce, carried by answers and echoed by claims and releases (see the module comment). */
export type ArbiterMessage =
  | { readonly t: "claim"; readonly module: string; readonly node: string; readonly seq: number; readonly ttl: number; readonly yield?: boolean; readonly boot?: string }
  | { readonly t: "grant"; readonly module: string; readonly node: string; readonly seq: number; readonly ttl: number; readonly boot?: string }
  | { readonly t: "deny"; readonly module: string; readonly node: string; readonly seq: number; readonly holder: string; readonly remaining: number; readonly boot?: string }
  | { readonly t: "release"; readonly module: string; readonly node: string; readonly seq: number; readonly boot?: string }
  | { readonly t: "released"; readonly module: string; readonly node: string; readonly seq: number; readonly boot?: string };

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

/** Encodes `msg` as magic + JSON + HMAC(magic + JSON). */
export function encodeArbiter(msg: ArbiterMessage, mac: MacFn): Uint8Array {
  const body = enc.encode(JSON.stringify(msg));
  const head = new Uint8Array(ARBITER_MAGIC.length + body.length);
  head.set(ARBITER_MAGIC, 0);
  head.set(body, ARBITER_MAGIC.length);
  const tag = mac(head);
  const out = new Uint8Array(head.length + tag.length);
  out.set(head, 0);
  out.set(tag, head.length);
  return out;
}

/** Why a datagram was dropped (counted by the drivers). */
export type ArbiterDropReason = "size" | "magic" | "mac" | "malformed";

function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= (a[i] as number) ^ (b[i] as number);
  return d === 0;
}

const isName = (u: unknown): u is string => typeof u === "string" && u.length > 0 && u.length <= ARBITER_MAX_NAME;
const isCount = (u: unknown): u is number => typeof u === "number" && Number.isSafeInteger(u) && u >= 0;

/** Decodes and authenticates a datagram; a reason instead of a message when it must be dropped. */
export function decodeArbiter(datagram: Uint8Array, mac: MacFn): { ok: true; msg: ArbiterMessage } | { ok: false; reason: ArbiterDropReason } {
  if (datagram.length > ARBITER_MAX_DATAGRAM || datagram.length < ARBITER_MAGIC.length + MAC_BYTES + 2) return { ok: false, reason: "size" };
  for (let i = 0; i < ARBITER_MAGIC.length; i++) if (datagram[i] !== ARBITER_MAGIC[i]) return { ok: false, reason: "magic" };
  const head = datagram.subarray(0, datagram.length - MAC_BYTES);
  if (!constantTimeEqual(mac(head), datagram.subarray(datagram.length - MAC_BYTES))) return { ok: false, reason: "mac" };
  let o: unknown;
  try {
    o = JSON.parse(dec.decode(head.subarray(ARBITER_MAGIC.length)));
  } catch {
    return { ok: false, reason: "malformed" };
  }
  if (typeof o !== "object" || o === null) return { ok: false, reason: "malformed" };
  const m = o as Record<string, unknown>;
  if (!isName(m.module) || !isName(m.node) || !isCount(m.seq)) return { ok: false, reason: "malformed" };
  if (m.boot !== undefined && !isName(m.boot)) return { ok: false, reason: "malformed" };
  const base = { module: m.module, node: m.node, seq: m.seq, ...(m.boot !== undefined ? { boot: m.boot } : {}) };
  switch (m.t) {
    case "claim":
    case "grant":
      if (!isCount(m.ttl) || m.ttl === 0) return { ok: false, reason: "malformed" };
      if (m.t === "claim" && m.yield === true) return { ok: true, msg: { t: "claim", ...base, ttl: m.ttl, yield: true } };
      return { ok: true, msg: { t: m.t, ...base, ttl: m.ttl } };
    case "deny":
      if (!isName(m.holder) || !isCount(m.remaining)) return { ok: false, reason: "malformed" };
      return { ok: true, msg: { t: "deny", ...base, holder: m.holder, remaining: m.remaining } };
    case "release":
    case "released":
      return { ok: true, msg: { t: m.t, ...base } };
    default:
      return { ok: false, reason: "malformed" };
  }
}

// ---- witness ------------------------------------------------------------------------------------

export interface ArbiterWitnessOptions {
  /**
   * Longest lease granted, ms; longer claims are granted this much. Also how long a (re)started witness grants
   * nothing: a holder from before the restart may believe in its lease that long. Default 5000.
   */
  readonly maxTtlMs?: number;
  /** Most modules tracked (claims for more are denied, holder `(table full)`). Default 1024. */
  readonly maxModules?: number;
  /** Most nodes remembered per module (for replay protection). Default 16. */
  readonly maxNodesPerModule?: number;
  /**
   * This run's nonce (1-64 characters, random per start: `WitnessServer` draws 64 bits). When set, answers carry
   * it and only claims and releases that echo it count, so messages captured before a restart are refused.
   * Unset: no nonce (sequence numbers alone, which a restart forgets).
   */
  readonly boot?: string;
}

interface ModuleLease {
  holder: string | undefined;
  expiry: number;
  /** A node denied while the lease was held (it wants the lease), and until when that wish counts. */
  wanted: { node: string; until: number } | undefined;
  /** Highest sequence number seen per node: older or equal ones are replays and dropped. */
  readonly seqs: Map<string, number>;
}

/** The witness's lease table. See the module comment. */
export class ArbiterWitness {
  readonly maxTtlMs: number;
  readonly maxModules: number;
  readonly maxNodesPerModule: number;
  readonly boot: string | undefined;
  readonly #startedAt: number;
  readonly #leases = new Map<string, ModuleLease>();
  /** Replayed (old or duplicate sequence number) messages dropped. */
  replays = 0;
  /** Claims and releases without this run's nonce (refused: claims denied with the nonce, releases ignored). */
  staleBoot = 0;

  constructor(now: number, opts: ArbiterWitnessOptions = {}) {
    this.maxTtlMs = opts.maxTtlMs ?? 5000;
    this.maxModules = opts.maxModules ?? 1024;
    this.maxNodesPerModule = opts.maxNodesPerModule ?? 16;
    this.#startedAt = now;
    this.boot = opts.boot;
    if (this.boot !== undefined && !isName(this.boot)) throw new RangeError(`arbiter boot nonce must be 1..${ARBITER_MAX_NAME} characters`);
  }

  /** The current holder of `module` and its remaining ms, if any. */
  holder(module: string, now: number): { node: string; remainingMs: number } | undefined {
    const l = this.#leases.get(module);
    if (l?.holder === undefined || l.expiry <= now) return undefined;
    return { node: l.holder, remainingMs: l.expiry - now };
  }

  /** Handles one authenticated message; returns the answer to send back (none for a replay or an answer type). */
  receive(msg: ArbiterMessage, now: number): ArbiterMessage | undefined {
    const a = this.#receive(msg, now);
    return a === undefined || this.boot === undefined ? a : { ...a, boot: this.boot };
  }

  #receive(msg: ArbiterMessage, now: number): ArbiterMessage | undefined {
    if (msg.t !== "claim" && msg.t !== "release") return undefined;
    if (this.boot !== undefined && msg.boot !== this.boot) {
      // Not of this run (a replay from before a restart, or a client that has not heard this run yet): no state
      // changes, not even the sequence number; a claim learns the nonce from the denial (holder as it stands).
      this.staleBoot++;
      if (msg.t === "release") return undefined;
      const h = this.holder(msg.module, now);
      const grace = this.#startedAt + this.maxTtlMs - now;
      const [holder, remaining] = h !== undefined ? [h.node, Math.ceil(h.remainingMs)] : grace > 0 ? ["witness-restarting", Math.ceil(grace)] : ["(nonce required)", 0];
      return { t: "deny", module: msg.module, node: msg.node, seq: msg.seq, holder, remaining };
    }
    let l = this.#leases.get(msg.module);
    if (l === undefined) {
      if (this.#leases.size >= this.maxModules) this.#evictExpired(now);
      if (this.#leases.size >= this.maxModules) {
        return msg.t === "claim" ? { t: "deny", module: msg.module, node: msg.node, seq: msg.seq, holder: "(table full)", remaining: 0 } : undefined;
      }
      l = { holder: undefined, expiry: 0, wanted: undefined, seqs: new Map() };
      this.#leases.set(msg.module, l);
    }
    const last = l.seqs.get(msg.node);
    if (last !== undefined && msg.seq <= last) {
      this.replays++;
      return undefined;
    }
    if (last === undefined && l.seqs.size >= this.maxNodesPerModule) {
      // Forget the node with the oldest sequence that does not hold the lease.
      let victim: string | undefined;
      let low = Number.POSITIVE_INFINITY;
      for (const [n, s] of l.seqs) if (n !== l.holder && s < low) [victim, low] = [n, s];
      if (victim === undefined) return undefined;
      l.seqs.delete(victim);
    }
    l.seqs.set(msg.node, msg.seq);
    const base = { module: msg.module, node: msg.node, seq: msg.seq };
    if (msg.t === "release") {
      if (l.holder === msg.node) {
        l.holder = undefined;
        l.expiry = 0;
      }
      return { t: "released", ...base };
    }
    const held = l.holder !== undefined && l.expiry > now;
    if (held && l.holder !== msg.node) {
      // A node that does not yield wants the lease: a yielding holder's renewals stop (see below).
      if (msg.yield !== true) l.wanted = { node: msg.node, until: now + Math.min(msg.ttl, this.maxTtlMs) };
      return { t: "deny", ...base, holder: l.holder as string, remaining: Math.ceil(l.expiry - now) };
    }
    const grace = this.#startedAt + this.maxTtlMs - now;
    if (!held && grace > 0) return { t: "deny", ...base, holder: "witness-restarting", remaining: Math.ceil(grace) };
    // A yielding claim (a secondary with its primary in view) is granted a free lease, but not renewed while another
    // node wants it: that node is named as the holder-to-be and gets the lease once this one lapsed. Only ever a
    // denial more, so safety is untouched.
    if (msg.yield === true && l.wanted !== undefined && l.wanted.node !== msg.node && l.wanted.until > now) {
      return { t: "deny", ...base, holder: l.wanted.node, remaining: held ? Math.ceil(l.expiry - now) : 0 };
    }
    if (!held || l.holder !== msg.node) l.wanted = undefined;
    const ttl = Math.min(msg.ttl, this.maxTtlMs);
    l.holder = msg.node;
    // Never shorten: a renewal with a smaller ttl keeps the later expiry (the holder dates it by send time anyway).
    l.expiry = Math.max(held ? l.expiry : 0, now + ttl);
    return { t: "grant", ...base, ttl };
  }

  #evictExpired(now: number): void {
    for (const [m, l] of this.#leases) if (l.holder === undefined || l.expiry <= now) this.#leases.delete(m);
  }

  /** Modules tracked. */
  get size(): number {
    return this.#leases.size;
  }
}

// ---- client -------------------------------------------------------------------------------------

export interface ArbiterLeaseOptions {
  /** Lease asked for, ms. Default 1000. A node's failover waits up to this long after its primary stopped renewing. */
  readonly ttlMs?: number;
  /** Safety margin on clock rates: the lease counts until send + ttl x (1 - margin). 0 < margin < 1. Default 0.1. */
  readonly margin?: number;
  /** Claims remembered while waiting for an answer (older ones are forgotten: their answers are ignored). Default 64. */
  readonly maxPending?: number;
}

/** The client's view of its lease on one module. See the module comment. */
export class ArbiterLease {
  readonly ttlMs: number;
  readonly margin: number;
  readonly #maxPending: number;
  /** Sent claims: seq -> local send time and the witness nonce the claim echoed. */
  readonly #pending = new Map<number, { at: number; boot: string | undefined }>();
  #validUntil = Number.NEGATIVE_INFINITY;
  #releasedAtSeq = -1;
  #lastDeny: { holder: string; remainingMs: number; at: number } | undefined;
  #lastAnswerAt: number | undefined;
  #boot: string | undefined;

  constructor(opts: ArbiterLeaseOptions = {}) {
    this.ttlMs = opts.ttlMs ?? 1000;
    this.margin = opts.margin ?? 0.1;
    this.#maxPending = opts.maxPending ?? 64;
    if (!(this.ttlMs > 0)) throw new RangeError(`arbiter ttl must be positive, got ${this.ttlMs}`);
    if (!(this.margin > 0 && this.margin < 1)) throw new RangeError(`arbiter margin must be in (0, 1), got ${this.margin}`);
  }

  /** Records a claim sent at `now` with sequence `seq` (sequences must increase), echoing {@link boot}. */
  claimSent(seq: number, now: number): void {
    this.#pending.set(seq, { at: now, boot: this.#boot });
    if (this.#pending.size > this.#maxPending) {
      const first = this.#pending.keys().next().value;
      if (first !== undefined) this.#pending.delete(first);
    }
  }

  /** Drops the lease at once (a release is being sent with sequence `seq`): answers to earlier claims are ignored. */
  release(seq: number): void {
    this.#validUntil = Number.NEGATIVE_INFINITY;
    this.#releasedAtSeq = seq;
    this.#pending.clear();
  }

  /**
   * Handles an authenticated answer addressed to this node and module. Returns true when it is a denial that
   * taught this client the witness's current boot nonce (a new witness run, or this client's first answer):
   * claim again at once, echoing {@link boot}.
   */
  receive(msg: ArbiterMessage, now: number): boolean {
    if (msg.t !== "grant" && msg.t !== "deny") return false;
    const pending = this.#pending.get(msg.seq);
    if (pending === undefined || msg.seq <= this.#releasedAtSeq) return false;
    const sentAt = pending.at;
    this.#lastAnswerAt = now;
    // Only an answer to a pending claim teaches the nonce: a replayed answer of an earlier run cannot.
    if (msg.boot !== undefined) this.#boot = msg.boot;
    if (msg.t === "deny" && msg.boot !== undefined && msg.boot !== pending.boot) {
      // The claim did not carry this run's nonce and was refused for that alone: not a verdict on the lease.
      this.#pending.delete(msg.seq);
      return true;
    }
    if (msg.t === "grant") {
      const until = sentAt + Math.min(msg.ttl, this.ttlMs) * (1 - this.margin);
      if (until > this.#validUntil) this.#validUntil = until;
      this.#lastDeny = undefined;
      // Answers to claims sent before this one can only date the lease earlier: forget them.
      for (const s of this.#pending.keys()) if (s <= msg.seq) this.#pending.delete(s);
    } else {
      this.#pending.delete(msg.seq);
      this.#lastDeny = { holder: msg.holder, remainingMs: msg.remaining, at: now };
    }
    return false;
  }

  /** The witness run's nonce learned from the answers (undefined before the first, or with an older witness). */
  get boot(): string | undefined {
    return this.#boot;
  }

  /** Whether this node holds a valid lease at `now`. */
  holds(now: number): boolean {
    return now < this.#validUntil;
  }

  /** Ms the lease stays valid (0 when not held). */
  remaining(now: number): number {
    return Math.max(0, this.#validUntil - now);
  }

  /**
   * The longest fencing permit (ms) that may be granted at `now` on the strength of this lease: one that ends
   * `guardMs` before the lease does on this clock, so before the witness may grant the lease elsewhere (see the
   * module comment), whatever happens to later renewals. 0 when the lease is not held or ends within `guardMs`.
   * `guardMs` must cover the delay between this call and the moment the permit's holder starts counting it (e.g.
   * the replication helper reading the command).
   */
  permitBudget(now: number, guardMs: number): number {
    return Math.max(0, Math.floor(this.#validUntil - now - guardMs));
  }

  /** The last denial (holder and the remaining time the witness told), while no grant came after it. */
  get lastDeny(): { holder: string; remainingMs: number; at: number } | undefined {
    return this.#lastDeny;
  }

  /** Local time of the last answer received (grant or deny), if any. */
  get lastAnswerAt(): number | undefined {
    return this.#lastAnswerAt;
  }
}
