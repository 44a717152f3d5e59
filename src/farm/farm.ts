/**
 * The farm module's driver: it ties the module engine (states), membership (who is alive, and their
 * modules' reports), the VIP on every node ({@link FarmVip}) and the packet filter ({@link PacketFilter}).
 *
 * - As the module's `VipDriver`: `add` (after `start_both` succeeded) puts the VIP and the filter in place
 *   with no bucket owned; `remove` releases every bucket first, then removes the filter and the VIP.
 * - Ownership: the nodes serving the farm are those whose module is UP and ready (this node from its own
 *   status, peers from their heartbeat reports) among the view's members; the buckets follow weighted
 *   rendezvous hashing, applied by the {@link OwnershipPlanner}: losses at once, gains after `settleMs`.
 *
 * - Contested buckets: each node publishes its held set (buckets it owns, plus those where it may still hold
 *   TCP connections: the filter's may-hold flags, pruned every `pruneEveryMs` of buckets with no socket left)
 *   through `publishHeld`, and reads its peers' through `heldIn`. An owned bucket that no live peer holds (and
 *   that was not gained within `contestGraceMs`) is applied as uncontested: the eBPF filter then skips the
 *   strict socket lookup of its mid-flow packets ({@link ContestTracker}). Only in the healthy steady state: while
 *   a configured node (`nodes`) is missing from the view, the view is not agreed, or a member (or this node, after a
 *   stall) came back less than `contestGraceMs` ago, every owned bucket is strict.
 * - Stalls: after a freeze of this node ({@link FarmDriver.stalled}, from membership's `localStall` and the filter's
 *   `lease-lapsed`) it owns nothing until `stallHoldMs` has passed and the view is agreed, then waits `settleMs`.
 *
 * Order of effects on a failure elsewhere: membership drops the peer from the view -> its buckets are
 * assigned to the survivors -> each survivor takes its share `settleMs` later. Detection (~0.6 s on the LAN
 * preset) + settle (0.15 s) stays under the 1 s target.
 */
import { EventEmitter } from "eventemitter3";
import { BUCKET_COUNT } from "../core/buckets.js";
import { ContestTracker, decodeBucketSet, encodeBucketSet, farmOwners, OwnershipPlanner } from "../core/farm.js";
import { decodeModuleReport, type MembershipView, type ModuleReport, type ModuleStatus } from "../core/module/index.js";
import { systemClock, type Clock } from "../runtime/clock.js";
import type { Module, ModuleMembership, VipDriver } from "../runtime/module.js";

/** What the driver needs of a VIP (FarmVip fits). */
export interface FarmVipLike {
  start(): Promise<void>;
  stop(): Promise<void>;
}
/** What the driver needs of a filter (PacketFilter fits). */
export interface FarmFilterLike {
  start(): Promise<void>;
  /** `contested`: where another live node may hold connections (see PacketFilter.setOwned). */
  setOwned(buckets: Uint8Array, contested?: Uint8Array): Promise<void>;
  stop(): Promise<void>;
  /**
   * Clears the may-hold flags of foreign buckets with no local socket left; resolves to the flags after that, or
   * undefined when the filter keeps none (then this node publishes every bucket as held).
   */
  pruneMayHold?(): Promise<{ cleared: number[]; flags: Uint8Array } | undefined>;
}

export interface FarmDriverOptions {
  /** The farm module's name (reports are looked up under it). */
  readonly module: string;
  readonly nodeId: string;
  readonly vip: FarmVipLike;
  readonly filter: FarmFilterLike;
  /**
   * How long the set of serving nodes must be stable before this node takes buckets it gains, ms.
   * Must exceed the time for a report to reach every peer (one heartbeat pulse plus delivery).
   * Default 150 (LAN preset: pulse 100 ms).
   */
  readonly settleMs?: number;
  readonly clock?: Clock;
  /**
   * Where a peer's report of this module sits in its heartbeat metadata. Default: `meta.modules[module]`
   * (the layout of `bindMembership`); the reference daemon publishes `meta.r[module]`.
   */
  readonly reportIn?: (meta: unknown, module: string) => unknown;
  /**
   * Publishes this node's held set (text of `encodeBucketSet`: the buckets it owns or may still hold TCP
   * connections in) to its peers, e.g. into its heartbeat metadata where their `heldIn` finds it. Called after
   * every table change and prune that changes it, and with `""` once the filter is removed. Without it peers cannot
   * tell which buckets this node holds and keep every bucket they own contested (always strict: safe, slower).
   */
  readonly publishHeld?: (held: string) => void;
  /** Where a peer's held set sits in its heartbeat metadata. Default: `meta.held[module]`. */
  readonly heldIn?: (meta: unknown, module: string) => unknown;
  /**
   * How long a gained bucket stays contested, ms: a margin for the previous owner's held set (published at once
   * after it released the bucket) to arrive. Default 1000 (ten heartbeat pulses of the LAN preset).
   */
  readonly contestGraceMs?: number;
  /**
   * How often the filter's may-hold flags are pruned (buckets no longer owned where no local socket is left; one
   * `ss` listing, twice when something is cleared), ms, so that this node's held set, and the peers' contested
   * sets, shrink back after a move. 0 disables. Default 2000.
   */
  readonly pruneEveryMs?: number;
  /**
   * The configured farm: the ids of every node that may serve it (the membership's configured node list). An owned
   * bucket is applied as uncontested (no strict lookup) only while every one of them is in the agreed view and has
   * been heard for `contestGraceMs` ({@link ContestTracker}): a missing node may be frozen or cut off with connections
   * anywhere, and may come back before the views merge. Without it, the nodes seen in a view since start count.
   */
  readonly nodes?: readonly string[];
  /**
   * After a stall of this node ({@link FarmDriver.stalled}: a membership `localStall`, or a lapsed filter lease),
   * how long it owns nothing at least, ms; it then waits for an agreed view and `settleMs` before taking buckets.
   * Must exceed the time for its peers to hear it again and release what they took (one pulse plus delivery).
   * Default `contestGraceMs` (1000).
   */
  readonly stallHoldMs?: number;
  /**
   * The shortest stall after which peers may have declared this node lost and taken its buckets, ms: about
   * `lossTimeoutMs - pulseMs` of the membership (its first missed heartbeat left a pulse before the stall at worst).
   * A shorter stall only re-applies the table in force (a lapsed lease emptied it) with every bucket contested for
   * `contestGraceMs`; a longer one releases everything ({@link FarmDriver.stalled}). Default 500 (LAN preset).
   */
  readonly stallMinMs?: number;
}

const modulesLayout = (meta: unknown, module: string): unknown =>
  (meta as { modules?: Record<string, unknown> } | null | undefined)?.modules?.[module];
const heldLayout = (meta: unknown, module: string): unknown =>
  (meta as { held?: Record<string, unknown> } | null | undefined)?.held?.[module];

export interface FarmDriverEvents {
  /** A new ownership table is in force. `sole`: owned buckets applied as uncontested (no strict lookup). */
  buckets: [{ type: "buckets"; owned: number; sole: number; buckets: Uint8Array; owners: string[]; reason: string }];
  /** The contested set changed without an ownership change (`sole` owned buckets are uncontested now). */
  contested: [{ type: "contested"; owned: number; sole: number; reason: string }];
  /** This node's held set was published (`held`: how many buckets). */
  held: [{ type: "held"; held: number; cleared: number }];
  error: [Error];
}

export class FarmDriver extends EventEmitter<FarmDriverEvents> implements VipDriver {
  readonly options: FarmDriverOptions;
  private readonly planner: OwnershipPlanner;
  private readonly clock: Clock;
  private installed = false;
  private installing: Promise<void> | null = null;
  private serving = false;
  private view: MembershipView = { epoch: 0, members: [] };
  private agreed = true;
  private readonly reports = new Map<string, ModuleReport>();
  private cancelRecheck: (() => void) | null = null;
  private owners: string[] = [];
  /** The owner set of the last `buckets` event (a view change that leaves this node's share as it is still tells). */
  private emittedOwners = "";
  private readonly contest: ContestTracker;
  private readonly held = new Map<string, Uint8Array>();
  /** The contested mask last applied (1 = strict), for the owned buckets. */
  private appliedContested: Uint8Array = new Uint8Array(BUCKET_COUNT).fill(1);
  private flags: Uint8Array | undefined = undefined;
  /** The ownership table last given to the filter (the planner's may be ahead while a change is queued). */
  private filterOwned: Uint8Array = new Uint8Array(BUCKET_COUNT);
  private removing = false;
  private publishedHeld: string | undefined;
  /** Filter operations and publications, in order. */
  private chain: Promise<void> = Promise.resolve();
  private cancelContestRecheck: (() => void) | null = null;
  private pruneTimer: ReturnType<typeof setInterval> | null = null;

  constructor(options: FarmDriverOptions) {
    super();
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.planner = new OwnershipPlanner(options.nodeId, options.settleMs ?? 150);
    this.contest = new ContestTracker(options.nodeId, options.contestGraceMs ?? 1000, options.nodes);
  }

  /**
   * This node stalled and resumed (its event loop or the machine was frozen: SIGSTOP, a stopped VM, a long block):
   * its view, its peers' reports and held sets are stale, and its peers have likely declared it lost and taken its
   * buckets (and hold connections there). It releases every bucket at once and takes them back only after
   * `stallHoldMs`, an agreed view and `settleMs` ({@link OwnershipPlanner.stalled}); every bucket stays contested for
   * `contestGraceMs`. Called on membership's `localStall` (see {@link bind}); call it on the filter's `lease-lapsed`
   * (with `releaseOnLapse`, which empties the table) with the time since the last renewal (`lapsedMs + leaseMs`).
   * `gapMs`: how long the stall lasted; below `stallMinMs` the table in force is only re-applied (strict for the grace).
   */
  stalled(why: string, gapMs = Number.POSITIVE_INFINITY): void {
    const now = this.clock.now();
    this.contest.stalled(now);
    if (gapMs >= (this.options.stallMinMs ?? 500)) {
      this.planner.stalled(now, this.options.stallHoldMs ?? this.options.contestGraceMs ?? 1000);
      this.recompute(`stalled (${why})`);
      this.refreshContested(`stalled (${why})`);
      return;
    }
    // Too short for the peers to have taken anything: the table in force again (strict everywhere for the grace).
    if (!this.installed || this.removing) return;
    this.enqueue(async () => {
      if (!this.installed || this.removing) return;
      const contested = this.contestedNow();
      await this.options.filter.setOwned(this.filterOwned, contested);
      this.appliedContested = contested;
      this.emit("contested", { type: "contested", owned: this.filterOwned.reduce((a, b) => a + b, 0), sole: this.soleCount(this.filterOwned), reason: `short stall (${why}): table re-applied` });
    });
  }

  /** The contested mask in force (1 = an owned bucket there gets the strict lookup; meaningful for owned buckets). */
  get contested(): Uint8Array {
    return this.appliedContested;
  }

  /** The ownership table in force (1 = this node accepts the bucket). */
  get owned(): Uint8Array {
    return this.planner.current;
  }

  // ---- VipDriver (called by the module engine) ------------------------------------------------

  async add(): Promise<void> {
    if (this.installed) return;
    this.installing ??= (async () => {
      await this.options.filter.start();
      await this.options.vip.start();
      this.installed = true;
      this.flags = undefined;
      this.enqueue(() => this.prune(true));
      const every = this.options.pruneEveryMs ?? 2000;
      if (every > 0 && this.options.filter.pruneMayHold) {
        this.pruneTimer = setInterval(() => this.enqueue(() => this.prune(false)), every);
        this.pruneTimer.unref?.();
      }
    })().finally(() => (this.installing = null));
    await this.installing;
    // The module may already report UP (its state event can precede the end of this VIP step).
    this.recompute("filter and VIP in place");
  }

  async remove(): Promise<void> {
    if (!this.installed) return;
    this.removing = true;
    this.serving = false;
    this.cancelRecheck?.();
    this.cancelRecheck = null;
    this.cancelContestRecheck?.();
    this.cancelContestRecheck = null;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.pruneTimer = null;
    const none = new Uint8Array(BUCKET_COUNT);
    this.planner.update(this.clock.now(), []);
    await this.chain;
    try {
      await this.options.filter.setOwned(none);
      this.filterOwned = none;
      this.contest.applied(this.clock.now(), none);
      await this.options.filter.stop();
      await this.options.vip.stop();
    } finally {
      this.installed = false;
      this.removing = false;
      this.flags = undefined;
    }
    this.publish(""); // no filter, no VIP: no connection of the farm here any more
  }

  // ---- inputs ---------------------------------------------------------------------------------

  /** Follows the module's status and the membership view and reports. Returns a function that unbinds. */
  bind(module: Module, membership: ModuleMembership): () => void {
    const onState = (status: ModuleStatus) => this.setServing(status.state === "UP" && status.ready && !status.transient);
    const onView = (e: { view: ModuleMembership["view"]; agreed?: boolean }) => {
      this.view = { epoch: e.view.epoch, members: e.view.members.map((m) => ({ id: m.id, weight: m.weight })) };
      this.agreed = e.agreed ?? (membership as { agreed?: boolean }).agreed ?? true;
      this.contest.view(this.clock.now(), this.view.members.map((m) => m.id));
      for (const m of e.view.members) {
        this.noteMeta(m.id, membership.peerMeta(m.id));
        this.noteHeld(m.id, membership.peerMeta(m.id));
      }
      this.recompute("view changed");
      this.refreshContested("view changed");
    };
    const onMeta = (e: { node: string; meta: unknown }) => {
      const heldChanged = this.noteHeld(e.node, e.meta);
      if (this.noteMeta(e.node, e.meta)) this.recompute(`report from ${e.node}`);
      else if (heldChanged) this.refreshContested(`held set of ${e.node}`);
    };
    const onStall = (e: { gapMs: number }) => this.stalled(`own event loop stalled ${Math.round(e.gapMs)} ms`, e.gapMs);
    module.on("state", onState);
    membership.on("viewChange", onView);
    membership.on("peerMeta", onMeta);
    membership.on("localStall", onStall);
    onView({ view: membership.view });
    onState(module.status);
    return () => {
      module.off("state", onState);
      membership.off("viewChange", onView);
      membership.off("peerMeta", onMeta);
      membership.off("localStall", onStall);
    };
  }

  /** This node serves (module UP and ready) or not. */
  setServing(serving: boolean): void {
    if (serving === this.serving) return;
    this.serving = serving;
    this.recompute(serving ? "module UP and ready" : "module not serving");
  }

  private noteMeta(node: string, meta: unknown): boolean {
    if (node === this.options.nodeId) return false;
    const raw = (this.options.reportIn ?? modulesLayout)(meta, this.options.module);
    if (raw === undefined) return this.reports.delete(node);
    try {
      const r = decodeModuleReport(raw);
      const before = this.reports.get(node);
      this.reports.set(node, r);
      return !before || before.state !== r.state || before.ready !== r.ready;
    } catch {
      return this.reports.delete(node); // a malformed report counts as not serving
    }
  }

  /** A peer's held set from its metadata (undefined: not published or malformed). Returns whether it changed. */
  private noteHeld(node: string, meta: unknown): boolean {
    if (node === this.options.nodeId) return false;
    const text = (this.options.heldIn ?? heldLayout)(meta, this.options.module);
    const mask = decodeBucketSet(text);
    const before = this.held.get(node);
    if (!mask) return this.held.delete(node);
    this.held.set(node, mask);
    return !before || before.some((v, b) => v !== mask[b]);
  }

  /** Runs filter operations and publications one after the other (errors are emitted, the chain goes on). */
  private enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((e: unknown) => void this.emit("error", e as Error));
  }

  private contestedNow(): Uint8Array {
    this.cancelContestRecheck?.();
    this.cancelContestRecheck = null;
    const step = this.contest.contested(this.clock.now(), this.view.members.map((m) => m.id), (n) => this.held.get(n), this.agreed);
    if (step.recheckAt !== undefined) {
      this.cancelContestRecheck = this.clock.setTimer(Math.max(0, step.recheckAt - this.clock.now()), () => {
        this.cancelContestRecheck = null;
        this.refreshContested("grace of gained buckets over");
      });
    }
    return step.mask;
  }

  /** Re-applies the table in force when the contested state of an owned bucket changed. */
  private refreshContested(why: string): void {
    if (!this.installed || this.removing) return;
    this.enqueue(async () => {
      if (!this.installed || this.removing) return;
      const owned = this.filterOwned;
      const contested = this.contestedNow();
      if (!owned.some((v, b) => v && contested[b] !== this.appliedContested[b])) return;
      await this.options.filter.setOwned(owned, contested);
      this.appliedContested = contested;
      const n = owned.reduce((a, b) => a + b, 0);
      this.emit("contested", { type: "contested", owned: n, sole: this.soleCount(owned), reason: why });
    });
  }

  private soleCount(owned: Uint8Array): number {
    let n = 0;
    for (let b = 0; b < BUCKET_COUNT; b++) if (owned[b] && !this.appliedContested[b]) n++;
    return n;
  }

  /** Prunes the filter's may-hold flags (`force`: read them even when nothing was cleared) and publishes. */
  private async prune(force: boolean): Promise<void> {
    if (!this.installed || this.removing) return;
    if (this.options.filter.pruneMayHold) {
      const r = await this.options.filter.pruneMayHold();
      if (r) {
        this.flags = r.flags;
        this.publishHeldSet(r.cleared.length);
        return;
      }
    }
    if (force || !this.flags) this.flags = new Uint8Array(BUCKET_COUNT).fill(1); // no flags kept: any bucket may be held
    this.publishHeldSet(0);
  }

  private publishHeldSet(cleared: number): void {
    const owned = this.filterOwned;
    const flags = this.flags ?? new Uint8Array(BUCKET_COUNT).fill(1);
    const held = Uint8Array.from(owned, (v, b) => (v || flags[b] ? 1 : 0));
    const n = held.reduce((a, b) => a + b, 0);
    if (this.publish(encodeBucketSet(held))) this.emit("held", { type: "held", held: n, cleared });
  }

  private publish(text: string): boolean {
    if (!this.options.publishHeld || text === this.publishedHeld) return false;
    this.publishedHeld = text;
    this.options.publishHeld(text);
    return true;
  }

  private recompute(why: string): void {
    if (!this.installed && !this.serving) return;
    const owners = farmOwners({ id: this.options.nodeId, serving: this.serving && this.installed }, this.view, (n) => this.reports.get(n));
    this.owners = owners.map((o) => o.id);
    const before = this.filterOwned;
    const step = this.planner.update(this.clock.now(), owners, this.agreed);
    if (step.apply) {
      const mask = step.apply;
      const owned = mask.reduce((a, b) => a + b, 0);
      const ownersNow = this.owners;
      // Gains are published before they take effect (peers see them as held at once), releases after.
      const flags = this.flags ?? new Uint8Array(BUCKET_COUNT).fill(1);
      if (this.installed) this.publish(encodeBucketSet(Uint8Array.from(mask, (v, b) => (v || before[b] || flags[b] ? 1 : 0))));
      this.enqueue(async () => {
        if (this.removing) return;
        this.contest.applied(this.clock.now(), mask);
        const contested = this.contestedNow();
        await this.options.filter.setOwned(mask, contested);
        this.filterOwned = mask;
        this.appliedContested = contested;
        this.emittedOwners = ownersNow.join(",");
        this.emit("buckets", { type: "buckets", owned, sole: this.soleCount(mask), buckets: mask, owners: ownersNow, reason: `${why}: ${step.reason ?? ""}` });
        await this.prune(false); // flags read after the flip: a SYN passed before it is in them
        this.publishHeldSet(0);
      });
    } else if (this.installed && step.recheckAt === undefined && this.agreed && this.owners.join(",") !== this.emittedOwners) {
      // The owner set changed and this node's share did not (e.g. a node joined while a take planned for the smaller
      // set was pending, and the new set's share is the one held): say so, or the last event names the old set.
      // Only once the share is final for the new set (nothing to take later, the view agreed): at start, with a take
      // still settling, the held share (none yet) is not the set's, and a `buckets` event naming all owners with it
      // would read as "this node serves 0 of them" (the farm lab's partition check summed such events to 0).
      const ownersNow = this.owners;
      this.enqueue(async () => {
        if (this.removing || ownersNow.join(",") === this.emittedOwners) return;
        const mask = this.filterOwned;
        this.emittedOwners = ownersNow.join(",");
        const owned = mask.reduce((a, b) => a + b, 0);
        this.emit("buckets", { type: "buckets", owned, sole: this.soleCount(mask), buckets: mask, owners: ownersNow, reason: `${why}: owners now ${ownersNow.join("/")}, this node's share unchanged` });
      });
    }
    this.cancelRecheck?.();
    this.cancelRecheck = null;
    if (step.recheckAt !== undefined) {
      this.cancelRecheck = this.clock.setTimer(Math.max(0, step.recheckAt - this.clock.now()), () => {
        this.cancelRecheck = null;
        this.recompute("owner set stable");
      });
    }
  }
}
