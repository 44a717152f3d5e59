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
 * Order of effects on a failure elsewhere: membership drops the peer from the view -> its buckets are
 * assigned to the survivors -> each survivor takes its share `settleMs` later. Detection (~0.6 s on the LAN
 * preset) + settle (0.15 s) stays under the 1 s target.
 */
import { EventEmitter } from "eventemitter3";
import { BUCKET_COUNT } from "../core/buckets.js";
import { farmOwners, OwnershipPlanner } from "../core/farm.js";
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
  setOwned(buckets: Uint8Array): Promise<void>;
  stop(): Promise<void>;
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
}

const modulesLayout = (meta: unknown, module: string): unknown =>
  (meta as { modules?: Record<string, unknown> } | null | undefined)?.modules?.[module];

export interface FarmDriverEvents {
  /** A new ownership table is in force. */
  buckets: [{ type: "buckets"; owned: number; buckets: Uint8Array; owners: string[]; reason: string }];
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
  private readonly reports = new Map<string, ModuleReport>();
  private cancelRecheck: (() => void) | null = null;
  private owners: string[] = [];

  constructor(options: FarmDriverOptions) {
    super();
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.planner = new OwnershipPlanner(options.nodeId, options.settleMs ?? 150);
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
    })().finally(() => (this.installing = null));
    await this.installing;
    // The module may already report UP (its state event can precede the end of this VIP step).
    this.recompute("filter and VIP in place");
  }

  async remove(): Promise<void> {
    if (!this.installed) return;
    this.serving = false;
    this.cancelRecheck?.();
    this.cancelRecheck = null;
    const none = new Uint8Array(BUCKET_COUNT);
    this.planner.update(this.clock.now(), []);
    await this.options.filter.setOwned(none);
    await this.options.filter.stop();
    await this.options.vip.stop();
    this.installed = false;
  }

  // ---- inputs ---------------------------------------------------------------------------------

  /** Follows the module's status and the membership view and reports. Returns a function that unbinds. */
  bind(module: Module, membership: ModuleMembership): () => void {
    const onState = (status: ModuleStatus) => this.setServing(status.state === "UP" && status.ready && !status.transient);
    const onView = (e: { view: ModuleMembership["view"] }) => {
      this.view = { epoch: e.view.epoch, members: e.view.members.map((m) => ({ id: m.id, weight: m.weight })) };
      for (const m of e.view.members) this.noteMeta(m.id, membership.peerMeta(m.id));
      this.recompute("view changed");
    };
    const onMeta = (e: { node: string; meta: unknown }) => {
      if (this.noteMeta(e.node, e.meta)) this.recompute(`report from ${e.node}`);
    };
    module.on("state", onState);
    membership.on("viewChange", onView);
    membership.on("peerMeta", onMeta);
    onView({ view: membership.view });
    onState(module.status);
    return () => {
      module.off("state", onState);
      membership.off("viewChange", onView);
      membership.off("peerMeta", onMeta);
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

  private recompute(why: string): void {
    if (!this.installed && !this.serving) return;
    const owners = farmOwners({ id: this.options.nodeId, serving: this.serving && this.installed }, this.view, (n) => this.reports.get(n));
    this.owners = owners.map((o) => o.id);
    const step = this.planner.update(this.clock.now(), owners);
    if (step.apply) {
      const mask = step.apply;
      const owned = mask.reduce((a, b) => a + b, 0);
      this.options.filter.setOwned(mask).then(
        () => this.emit("buckets", { type: "buckets", owned, buckets: mask, owners: this.owners, reason: `${why}: ${step.reason ?? ""}` }),
        (e: unknown) => this.emit("error", e as Error),
      );
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
