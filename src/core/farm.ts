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

  constructor(
    readonly self: string,
    readonly settleMs: number,
  ) {}

  /** The table in force. */
  get current(): Uint8Array {
    return this.applied;
  }

  update(now: number, owners: readonly BucketMember[]): OwnershipStep {
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
