/**
 * Farm bucket ownership over time (pure). Who owns which bucket is a function of who serves
 * ({@link farmOwners}) and of the weighted rendezvous assignment (`assignBuckets` in buckets.ts); this file
 * decides *when* a node applies a new table so that two nodes never accept the same bucket:
 *
 * - buckets a node **loses** are released at once;
 * - buckets a node **gains** are taken only after the owner set has been stable for `settleMs`, so that the
 *   previous owner (which learns of the change by the same heartbeats, within one pulse) has released them —
 *   except when the owner set only shrank (a node failed or stopped serving): its buckets have no live owner
 *   to wait for (a frozen node's filter lease has expired before membership declares it lost), so the survivors
 *   take them at once.
 *
 * With rendezvous hashing, a node that leaves moves only its own buckets (to survivors, who gain them after
 * `settleMs`; the failed node serves nothing meanwhile) and a node that joins only takes buckets (its peers
 * lose them at once when its UP report arrives; it takes them `settleMs` later). Established connections
 * are untouched either way: the filter keeps packets of flows that have a local socket.
 */
import { assignBuckets, BUCKET_COUNT, ownedMask, type BucketMember } from "./buckets.js";
import type { MembershipView, ModuleReport } from "./module/types.js";

/** The nodes that serve a farm module now: this node when UP and ready, and every peer in the view that reports so. */
export function farmOwners(
  self: { id: string; serving: boolean },
  view: MembershipView,
  reportOf: (node: string) => ModuleReport | undefined,
): BucketMember[] {
  const out: BucketMember[] = [];
  for (const m of view.members) {
    const serving = m.id === self.id ? self.serving : (() => {
      const r = reportOf(m.id);
      return !!r && r.state === "UP" && r.ready;
    })();
    if (serving) out.push({ id: m.id, weight: m.weight });
  }
  if (self.serving && !out.some((o) => o.id === self.id)) out.push({ id: self.id, weight: 1 });
  return out;
}

export interface OwnershipStep {
  /** The table to apply now, or undefined when nothing changes. */
  readonly apply?: Uint8Array;
  /** Call {@link OwnershipPlanner.update} again at this time (a gain is waiting to settle). */
  readonly recheckAt?: number;
  /** Human-readable account of the change, e.g. `released 85 buckets; 42 to take at 1234`. */
  readonly reason?: string;
}

const count = (m: Uint8Array) => m.reduce((a, b) => a + (b ? 1 : 0), 0);
const key = (owners: readonly BucketMember[]) =>
  [...owners].sort((a, b) => (a.id < b.id ? -1 : 1)).map((o) => `${o.id}/${o.weight}`).join(",");

/** Applies ownership changes: losses at once, gains after the owner set has been stable for `settleMs`. */
export class OwnershipPlanner {
  private applied: Uint8Array = new Uint8Array(BUCKET_COUNT);
  private ownersKey = "";
  private ownerIds = new Set<string>();
  private onlyShrank = false;
  private weightKeys = new Map<string, string>();
  private stableSince = 0;
  private desiredMask: Uint8Array = new Uint8Array(BUCKET_COUNT);
  private recoverUntil: number | undefined;

  constructor(
    readonly self: string,
    readonly settleMs: number,
  ) {}

  /** The table in force. */
  get current(): Uint8Array {
    return this.applied;
  }

  /**
   * This node stalled (its event loop, or the whole machine, was frozen: a lease lapse or a membership
   * `localStall`). Its view and its peers' reports are stale: the peers have likely declared it lost and taken its
   * buckets. From now on {@link update} owns nothing (it releases everything at its next call) until `holdMs` has
   * passed **and** the view is agreed again (the peers advertise the same view: they have heard this node again and
   * released what they took), then gains wait `settleMs` as after any change of the owner set.
   */
  stalled(now: number, holdMs: number): void {
    this.recoverUntil = Math.max(this.recoverUntil ?? Number.NEGATIVE_INFINITY, now + holdMs);
  }

  /** True while recovering from a stall (see {@link stalled}): this node owns nothing. */
  get recovering(): boolean {
    return this.recoverUntil !== undefined;
  }

  /**
   * The step for the owner set `owners` at `now`. `agreed`: whether the membership view is agreed (every member
   * advertises the same view); it matters only while recovering from a stall.
   */
  update(now: number, ownersNow: readonly BucketMember[], agreed = true): OwnershipStep {
    let owners = ownersNow;
    let recheckRecovery: number | undefined;
    if (this.recoverUntil !== undefined) {
      if (now >= this.recoverUntil && agreed) this.recoverUntil = undefined;
      else {
        owners = [];
        if (now < this.recoverUntil) recheckRecovery = this.recoverUntil;
      }
    }
    const step = this.step(now, owners);
    if (recheckRecovery === undefined) return step;
    return { ...step, recheckAt: Math.min(step.recheckAt ?? Number.POSITIVE_INFINITY, recheckRecovery) };
  }

  private step(now: number, owners: readonly BucketMember[]): OwnershipStep {
    const k = key(owners);
    if (k !== this.ownersKey) {
      const ids = new Set(owners.map((o) => o.id));
      const weightsSame = owners.every((o) => key([o]) === this.weightKeys.get(o.id));
      // Taking at once is safe only when the previous set had settled (every survivor then held exactly its
      // share of it) and the change only removed members: what we gain was the removed members' alone.
      const prevSettled = now - this.stableSince >= this.settleMs;
      this.onlyShrank = this.ownersKey !== "" && prevSettled && weightsSame && [...ids].every((id) => this.ownerIds.has(id)) && ids.size < this.ownerIds.size;
      this.ownerIds = ids;
      this.weightKeys = new Map(owners.map((o) => [o.id, key([o])]));
      this.ownersKey = k;
      this.stableSince = now;
      this.desiredMask = owners.some((o) => o.id === this.self) ? ownedMask(assignBuckets(owners), this.self) : new Uint8Array(BUCKET_COUNT);
    }
    const desired = this.desiredMask;
    let lost = 0;
    let gained = 0;
    const keep = new Uint8Array(BUCKET_COUNT);
    for (let b = 0; b < BUCKET_COUNT; b++) {
      if (this.applied[b] && !desired[b]) lost++;
      if (!this.applied[b] && desired[b]) gained++;
      keep[b] = this.applied[b] && desired[b] ? 1 : 0;
    }
    if (gained === 0) {
      if (lost === 0) return {};
      this.applied = keep;
      return { apply: keep, reason: `released ${lost} bucket(s), now own ${count(keep)}` };
    }
    const settleAt = this.onlyShrank ? this.stableSince : this.stableSince + this.settleMs;
    if (now >= settleAt) {
      this.applied = desired;
      return { apply: desired, reason: `took ${gained} bucket(s)${lost ? `, released ${lost}` : ""}: now own ${count(desired)} (owners ${k || "none"})` };
    }
    if (lost > 0) {
      this.applied = keep;
      return { apply: keep, recheckAt: settleAt, reason: `released ${lost} bucket(s); ${gained} to take at ${settleAt}` };
    }
    return { recheckAt: settleAt };
  }
}

// ---- contested buckets: where an owner still needs the strict socket lookup ----------------------------------

/**
 * Encodes a set of buckets (a BUCKET_COUNT-entry mask, non-zero = in the set) compactly for heartbeat metadata:
 * ranges such as `"3-7,12"` (`""` for the empty set), or `"b:"` + the base64 bitmap (bucket b is bit `b % 8` of
 * byte `b / 8`; 4096 buckets = 684 characters) when that is shorter (a node's own share is scattered over the
 * whole range by rendezvous hashing, so its ranges are many).
 */
export function encodeBucketSet(mask: Uint8Array): string {
  const parts: string[] = [];
  let bytes = "";
  const bitmap = new Uint8Array(BUCKET_COUNT / 8);
  for (let b = 0; b < BUCKET_COUNT; b++) {
    if (!mask[b]) continue;
    bitmap[b >> 3]! |= 1 << (b & 7);
    let e = b;
    while (e + 1 < BUCKET_COUNT && mask[e + 1]) e++;
    parts.push(e === b ? `${b}` : `${b}-${e}`);
    for (let x = b + 1; x <= e; x++) bitmap[x >> 3]! |= 1 << (x & 7);
    b = e;
  }
  const ranges = parts.join(",");
  if (ranges.length <= 686) return ranges; // "b:" + 684 base64 characters
  for (const x of bitmap) bytes += String.fromCharCode(x);
  return `b:${btoa(bytes)}`;
}

/** Decodes {@link encodeBucketSet}'s text; undefined when it is not a valid encoding (treat as unknown). */
export function decodeBucketSet(text: unknown): Uint8Array | undefined {
  if (typeof text !== "string") return undefined;
  const mask = new Uint8Array(BUCKET_COUNT);
  if (text.startsWith("b:")) {
    let bytes: string;
    try {
      bytes = atob(text.slice(2));
    } catch {
      return undefined;
    }
    if (bytes.length !== BUCKET_COUNT / 8) return undefined;
    for (let b = 0; b < BUCKET_COUNT; b++) mask[b] = (bytes.charCodeAt(b >> 3) >> (b & 7)) & 1;
    return mask;
  }
  if (text === "") return mask;
  for (const part of text.split(",")) {
    const m = /^(\d{1,4})(?:-(\d{1,4}))?$/.exec(part);
    if (!m) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi >= BUCKET_COUNT) return undefined;
    mask.fill(1, lo, hi + 1);
  }
  return mask;
}

/** What {@link ContestTracker.contested} returns. */
export interface ContestStep {
  /** 1 where an owner needs the strict lookup: another node may hold connections, or a recent gain. */
  readonly mask: Uint8Array;
  /** Call again at this time: a grace ends (the mask may shrink). */
  readonly recheckAt?: number;
}

/**
 * Which owned buckets are contested (pure). An owner must drop, not reset, mid-flow TCP packets that belong to
 * a flow another node still holds after a bucket move; that costs a socket lookup per packet, needed only where
 * another node may hold connections. Each node publishes its **held set** (see {@link encodeBucketSet}): the
 * buckets it owns plus those whose may-hold flag is set (it passed a SYN there, and a local socket may remain;
 * flags of foreign buckets are cleared once no socket is left).
 *
 * A bucket may be **sole** (uncontested: no lookup) only in the healthy steady state; every bucket is contested when
 *
 * - a node of the configured farm (`nodes`; without it, every node ever seen in a view) is not in the view: it may
 *   be frozen, cut off or on the other side of a partition, still holding connections (a frozen node's clients
 *   retransmit, a partitioned node keeps serving the clients it reaches, and every node receives every packet), or
 *   it may come back at any moment, before the views merge, with connections of its own in any bucket;
 * - the view is not agreed (members advertise different views: a partition healing, a node returning);
 * - a member of the view joined (or rejoined) it less than `graceMs` ago, or this node stalled less than `graceMs`
 *   ago ({@link stalled}): the held sets known for them may predate the fault (metadata is only re-sent on change),
 *   so they are trusted only once they have had `graceMs` of heartbeats to arrive;
 * - a member has published no (valid) held set: unknown.
 *
 * Otherwise a bucket is contested when a member's held set contains it (that member owns it too, a transient double
 * ownership, or may still hold connections there), or when this node gained it less than `graceMs` ago (the previous
 * owner's publication that shows its connections may still be on its way).
 *
 * So a failure costs the per-packet lookup everywhere until every node is back and has been heard for `graceMs`:
 * only the healthy steady state is fast, which is the case worth optimising. Why the steady state is safe: a node
 * accepts connections in a bucket only while it owns it, so its held set contains the bucket from before its first
 * accepted connection (publications follow each table change) until its last socket there is gone; the new owner
 * applies a gain only after the owner set has been stable for settleMs and keeps it contested for graceMs more.
 */
export class ContestTracker {
  private readonly gainedAt = new Float64Array(BUCKET_COUNT).fill(Number.NEGATIVE_INFINITY);
  private owned = new Uint8Array(BUCKET_COUNT);
  private readonly known: Set<string>;
  private readonly fixedNodes: boolean;
  /** Member id -> since when it has been in the view without interruption. */
  private readonly inViewSince = new Map<string, number>();
  private stalledAt = Number.NEGATIVE_INFINITY;

  /**
   * @param nodes the configured farm (the membership's node ids). Without it, the nodes ever seen in a view count
   *   as the farm (a node that never showed up since this node started is then not waited for).
   */
  constructor(
    readonly self: string,
    readonly graceMs: number,
    nodes?: readonly string[],
  ) {
    this.fixedNodes = nodes !== undefined;
    this.known = new Set(nodes ?? []);
  }

  /** Notes the ownership table in force from `now` on: buckets it gains start their grace. */
  applied(now: number, mask: Uint8Array): void {
    for (let b = 0; b < BUCKET_COUNT; b++) if (mask[b] && !this.owned[b]) this.gainedAt[b] = now;
    this.owned = Uint8Array.from(mask, (v) => (v ? 1 : 0));
  }

  /** Notes the view's members at `now` (call on every view change; {@link contested} calls it too). */
  view(now: number, members: readonly string[]): void {
    const live = new Set(members);
    for (const id of [...this.inViewSince.keys()]) if (!live.has(id)) this.inViewSince.delete(id);
    for (const id of members) {
      if (!this.inViewSince.has(id)) this.inViewSince.set(id, now);
      if (!this.fixedNodes) this.known.add(id);
    }
  }

  /** This node stalled (event loop or machine frozen) and resumed at `now`: what it knows of its peers is stale. */
  stalled(now: number): void {
    this.stalledAt = Math.max(this.stalledAt, now);
  }

  /**
   * The contested mask at `now`, given the live members (ids, this node included or not), their held sets, and
   * whether the view is agreed.
   */
  contested(now: number, members: readonly string[], heldBy: (node: string) => Uint8Array | undefined, agreed = true): ContestStep {
    this.view(now, members);
    const mask = new Uint8Array(BUCKET_COUNT);
    const whole = (): ContestStep => ({ mask: mask.fill(1), ...this.nextAt(now) });
    if (!agreed || now - this.stalledAt < this.graceMs) return whole();
    const live = new Set(members);
    for (const id of this.known) if (id !== this.self && !live.has(id)) return whole();
    for (const id of members) {
      if (id === this.self) continue;
      if (now - (this.inViewSince.get(id) ?? now) < this.graceMs) return whole();
      const held = heldBy(id);
      if (!held) return whole();
      for (let b = 0; b < BUCKET_COUNT; b++) if (held[b]) mask[b] = 1;
    }
    for (let b = 0; b < BUCKET_COUNT; b++) if (now - this.gainedAt[b]! < this.graceMs) mask[b] = 1;
    return { mask, ...this.nextAt(now) };
  }

  /** The next time a grace ends (a gained bucket's, a member's since it joined, or the one after a stall). */
  private nextAt(now: number): { recheckAt?: number } {
    let next = Number.POSITIVE_INFINITY;
    const consider = (end: number) => {
      if (end > now && end < next) next = end;
    };
    for (let b = 0; b < BUCKET_COUNT; b++) if (this.owned[b]) consider(this.gainedAt[b]! + this.graceMs);
    for (const [id, since] of this.inViewSince) if (id !== this.self) consider(since + this.graceMs);
    consider(this.stalledAt + this.graceMs);
    return Number.isFinite(next) ? { recheckAt: next } : {};
  }
}
