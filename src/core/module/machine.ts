/**
 * The module state machine: pure and deterministic. One instance per module per node.
 *
 * Inputs (each returns the effects to carry out, in order): {@link ModuleCore.tick},
 * {@link ModuleCore.command}, {@link ModuleCore.view}, {@link ModuleCore.peerReport},
 * {@link ModuleCore.checker}, {@link ModuleCore.hookDone}, {@link ModuleCore.replication},
 * {@link ModuleCore.stalled}, {@link ModuleCore.peerSilence}.
 * The driver must call `tick(now)` before feeding any other input at a later time (the core has no clock).
 *
 * Effects order contract: the driver carries effects out one after the other, in the order returned.
 * `runHook` is always the last effect of a batch that contains it: the driver runs the hook and feeds
 * `hookDone` when it ends (success, failure or timeout). At most one hook runs at a time per module.
 *
 * ## Mirror rules (two nodes)
 * - PRIM = primary with an in-sync secondary (it reports SECOND and ready); ALONE = primary without one (no
 *   peer, a secondary still resyncing, or one that dropped out of sync, e.g. its disk is full).
 * - Very first start (no node has held a role): a node becomes primary only on an explicit `prim`
 *   command, or if it is the configured `defaultPrimary`. The other becomes SECOND when it sees it.
 * - A node whose data is marked not up to date never becomes primary unless `prim --force` (logged).
 * - Two nodes in WAIT that see each other pick one primary with the same deterministic rank on both:
 *   explicit claim first, then up-to-date data, then the higher generation, then the smaller node id.
 * - Two primaries that see each other (simultaneous starts with reports in flight, or a partition heal
 *   where both went ALONE) keep the side with writes acknowledged alone, then the higher generation, ties broken
 *   by the smaller node id; the loser stops its app, drops the VIP and becomes SECOND, marked not up to date (it
 *   needs a resync). Both with writes acknowledged alone: a split brain (below).
 * - Failover: the peer leaves the view (or stops, or yields) while it was primary: an in-sync SECOND
 *   goes ALONE, adds the VIP, starts the app — if the module has split-brain checkers, only when each of
 *   them last said ok (one never heard from, or failed, keeps the node SECOND). The same gate holds for
 *   every other way of becoming primary with no peer in view (`defaultPrimary` on a first start, the last
 *   sole primary after `peerWait`); only an explicit `prim` passes it.
 * - Step-down (split brain, the other half): a primary (PRIM or ALONE) with no peer in view whose split-brain
 *   checker failed cannot tell "the peer died" from "I am the one cut off": it leaves the role (app stopped,
 *   VIP removed, so no more acks) and waits. If the peer left the view as an in-sync secondary, it may have
 *   taken over on its side: this node then stops counting as the last sole primary (persisted) and waits for
 *   the peer (the usual rank rules apply when it is back) or for `prim`. Otherwise no other node can hold
 *   the role, and it comes back when the witness answers again (the `peerWait` rule). A `prim` typed while
 *   cut off overrides the step-down until the witness or the peer is seen again. A peer still in the view but
 *   silent as long as it needs to declare this node lost (`peerSilence`) counts as out of view for this rule.
 * - Generation: bumped whenever a node becomes primary, and when a primary loses its in-sync secondary;
 *   a secondary adopts the primary's generation when in sync. A peer with a higher generation than ours
 *   means our copy is stale.
 * - Outdated (DRBD): a secondary that loses its primary while the witness is unreachable (or while the witness
 *   arbiter's lease still names that primary `peerWait` later) marks its copy not up to date: the primary may go on
 *   alone. Primary again only after a resync or `prim --force`.
 * - Writes acknowledged alone (persisted `aloneWrites`, set in ALONE, cleared in PRIM): they win a two-primaries
 *   contest before generation and node id, and are never discarded without an operator decision (`second` on
 *   this node, `prim --force` on the peer). Both sides with such writes: a split brain, logged with both
 *   generations; the side that sees it stops and keeps its copy.
 * - Diverged: a node that was primary on its own line and becomes SECOND reports `diverged`; its primary emits
 *   `resync checksum` (its extent log does not hold the loser's changes).
 * - Own stall (`stalled`): a primary whose peer was an in-sync secondary steps down and waits for fresh reports.
 */
import { CommandRefusedError } from "../errors.js";
import type { CheckerVerdict } from "../checker.js";
import type { ResolvedModule } from "./config.js";
import { decideRestart } from "./policy.js";
import type {
  HookName,
  MembershipView,
  ModuleCommand,
  ModuleEffect,
  ModuleEvent,
  ModuleReport,
  ModuleState,
  ModuleStatus,
  PersistedModuleState,
} from "./types.js";
import { INITIAL_PERSISTED, isPrimaryState } from "./types.js";

type Role = "prim" | "second" | "both";

type Step =
  | { readonly k: "hook"; readonly hook: HookName; readonly critical: boolean }
  | { readonly k: "vip"; readonly op: "add" | "remove" }
  | { readonly k: "state"; readonly to: ModuleState }
  | { readonly k: "do"; readonly fn: () => void };

interface Plan {
  readonly target: ModuleState;
  readonly cause: string;
  readonly steps: Step[];
  index: number;
  /** Caused by `prim --force`: the state events of this transition say so (`forced`). */
  readonly forced?: boolean;
}

export interface ModuleCoreOptions {
  readonly module: ResolvedModule;
  /** This node's id (as in the membership view). */
  readonly nodeId: string;
  /** State persisted by a previous run (effects `persist`). Default: a fresh node. */
  readonly persisted?: PersistedModuleState;
  /** The clock at creation, ms. Default 0. */
  readonly now?: number;
}

interface PeerInfo {
  readonly id: string;
  readonly report: ModuleReport;
}

const MAX_SETTLE_ROUNDS = 16;

export class ModuleCore {
  readonly module: ResolvedModule;
  readonly nodeId: string;
  private now: number;
  private p: PersistedModuleState;
  private st: ModuleState = "STOP";
  private reason = "not started";
  private plan: Plan | null = null;
  private pendingHook: HookName | null = null;
  private pendingStop: string | null = null;
  private running: Role | null = null;
  private vipHeld = false;
  private prestarted = false;
  private viewMembers: Set<string> | null = null;
  private readonly reports = new Map<string, ModuleReport>();
  private readonly failing = new Map<string, CheckerVerdict>();
  private deferred: CheckerVerdict | null = null;
  /** Split-brain checkers whose last verdict was ok (a configured one never heard from blocks ALONE). */
  private readonly splitBrainOk = new Set<string>();
  private inSync = false;
  /** Explicit `prim` pending (value: forced or not). */
  private claim: { forced: boolean } | null = null;
  private secondRequested = false;
  private yielding = false;
  private swapRequested = false;
  private waitSince = 0;
  /**
   * The peer left the view while this node was (becoming) primary and the peer was an in-sync secondary:
   * it may have taken over on its side of a partition. Cleared when a peer is in view again.
   */
  private peerMayHaveTakenOver = false;
  /** Id of the last peer that left the view (for log lines). */
  private lostPeer: string | null = null;
  /**
   * Peers in the view that have been silent longer than they take to declare this node lost (fed by the driver,
   * {@link ModuleCore.peerSilence}): for the split-brain rules they count as out of view (our membership may keep a
   * silent peer in the view much longer, e.g. after stalls of our own raised its loss timeout).
   */
  private readonly silentPeers = new Set<string>();
  /** This node stepped down as cut off while that peer could take over; cleared when a peer is in view. */
  private steppedDownFor: string | null = null;
  /** `prim` typed while cut off: do not step down until the witness is confirmed or a peer is seen again. */
  private splitBrainOverride = false;
  /** A peer in WAIT reports a split brain with this primary: logged once per episode. */
  private splitBrainSeen = false;
  /** The peer reported `diverged` and a checksum resync was asked for (once per episode). */
  private divergedResyncAsked = false;
  /** After a stall of our own as primary: the peer's reports are stale until this time (core clock). */
  private staleUntil = 0;
  /**
   * Secondary that lost its primary while the witness arbiter's lease names that primary: the lease must lapse
   * (and be granted here) before this time, or the primary lives on alone (it keeps renewing) and this copy is
   * outdated. 0: not waiting.
   */
  private leaseWaitUntil = 0;
  private out: ModuleEffect[] = [];
  private lastStatusKey = "";
  private lastReportKey = "";
  private lastPersistKey = "";

  constructor(opts: ModuleCoreOptions) {
    this.module = opts.module;
    this.nodeId = opts.nodeId;
    this.now = opts.now ?? 0;
    this.p = { ...(opts.persisted ?? INITIAL_PERSISTED) };
    this.lastPersistKey = JSON.stringify(this.p);
    this.lastStatusKey = this.statusKey();
  }

  // ---- read-only views ------------------------------------------------------------------------

  get status(): ModuleStatus {
    const transient = this.plan !== null;
    return {
      module: this.module.name,
      state: this.st,
      ready: this.isReady(),
      transient,
      ...(transient && this.plan ? { next: this.plan.target } : {}),
      reason: this.reason,
    };
  }

  private isReady(): boolean {
    if (this.plan) return false;
    if (this.st === "PRIM" || this.st === "ALONE" || this.st === "UP") return true;
    if (this.st === "SECOND") return this.inSync;
    return false;
  }

  get persisted(): PersistedModuleState {
    return this.p;
  }

  /** The report this node advertises for this module. */
  get report(): ModuleReport {
    const r: ModuleReport = {
      module: this.module.name,
      state: this.st,
      ready: this.isReady(),
      ...(this.plan ? { next: this.plan.target } : {}),
      upToDate: this.p.upToDate && this.p.initialized,
      generation: this.p.generation,
      candidate: this.isCandidate(),
      ...(this.claimActive() ? { claim: true } : {}),
      ...(this.swapRequested ? { swap: true } : {}),
      ...(this.p.aloneWrites ? { aloneWrites: true } : {}),
      ...(this.p.splitBrain ? { splitBrain: true } : {}),
      ...(this.p.forced && this.primaryOrBecoming() ? { forced: true } : {}),
      ...(this.p.diverged ? { diverged: true } : {}),
    };
    return r;
  }

  /** The hook the driver is running for this core, if any. */
  get runningHook(): HookName | null {
    return this.pendingHook;
  }

  /** Earliest time at which `tick` may change something (peerWait), or undefined. */
  nextDeadline(): number | undefined {
    if (this.module.kind === "mirror" && this.st === "WAIT" && !this.plan && this.staleUntil > this.now) return this.staleUntil;
    if (this.module.kind === "mirror" && this.st === "SECOND" && !this.plan && this.leaseWaitUntil > this.now) return this.leaseWaitUntil;
    if (this.module.kind === "mirror" && this.st === "WAIT" && !this.plan && this.p.soleOwner && !this.peer()) {
      return this.waitSince + this.module.mirror.peerWait;
    }
    return undefined;
  }

  // ---- inputs ---------------------------------------------------------------------------------

  tick(now: number): ModuleEffect[] {
    return this.input(() => {
      if (now > this.now) this.now = now;
    });
  }

  /** Administrator command. Throws {@link CommandRefusedError} when the state does not allow it. */
  command(cmd: ModuleCommand): ModuleEffect[] {
    this.validate(cmd);
    return this.input(() => this.applyCommand(cmd));
  }

  view(view: MembershipView): ModuleEffect[] {
    return this.input(() => {
      this.viewMembers = new Set(view.members.map((m) => m.id));
      for (const id of [...this.silentPeers]) if (!this.viewMembers.has(id)) this.silentPeers.delete(id);
      for (const [id, r] of [...this.reports]) {
        if (this.viewMembers.has(id)) continue;
        this.reports.delete(id);
        this.lostPeer = id;
        if (this.couldTakeOver(r)) this.peerMayHaveTakenOver = true;
      }
    });
  }

  peerReport(node: string, report: ModuleReport): ModuleEffect[] {
    return this.input(() => {
      if (node === this.nodeId || report.module !== this.module.name) return;
      if (this.viewMembers && !this.viewMembers.has(node)) return;
      this.reports.set(node, report);
      this.silentPeers.delete(node); // a report is news from it
      this.leaseWaitUntil = 0;
      this.peerMayHaveTakenOver = false;
      this.steppedDownFor = null;
    });
  }

  checker(verdict: CheckerVerdict): ModuleEffect[] {
    return this.input(() => this.applyVerdict(verdict));
  }

  /**
   * A peer in the view has been silent (nothing received from it) for longer than it needs to declare this node
   * lost (`silent`), or is heard again. A primary whose split-brain checker failed treats a silent peer as out of
   * view: it may be on the other side of a cut, declare this node lost and take over with the witness's agreement
   * (the lease lapses about a ttl after the cut) while our own membership, with a loss timeout raised by stalls of
   * ours, still shows it. While the witness answers (or with no split-brain checker) silence changes nothing.
   */
  peerSilence(node: string, silent: boolean): ModuleEffect[] {
    return this.input(() => {
      if (node === this.nodeId) return;
      if (!silent) {
        this.silentPeers.delete(node);
        return;
      }
      if (this.viewMembers && !this.viewMembers.has(node)) return;
      if (this.silentPeers.has(node)) return;
      this.silentPeers.add(node);
      const r = this.reports.get(node);
      if (r && this.couldTakeOver(r)) {
        this.lostPeer = node;
        this.peerMayHaveTakenOver = true;
      }
    });
  }

  /** The replication layer's report (mirror): the secondary's copy is in sync with the primary, or not. */
  replication(r: { inSync: boolean }): ModuleEffect[] {
    return this.input(() => {
      const peer = this.peer();
      if (this.st === "SECOND" && !this.plan) {
        if (r.inSync && peer && this.isPeerPrimary(peer)) {
          this.inSync = true;
          this.setP({
            upToDate: true,
            initialized: true,
            generation: Math.max(this.p.generation, peer.report.generation),
            // The copy equals the primary's now: nothing of ours is left to lose, nothing diverges.
            aloneWrites: false,
            splitBrain: false,
            diverged: false,
          });
          this.reason = `in sync with ${peer.id}`;
        } else if (!r.inSync) {
          this.inSync = false;
          if (peer && this.isPeerPrimary(peer)) this.reason = `resync from ${peer.id} in progress`;
        }
      }
      // A primary learns about its secondary's sync from the secondary's report (one source of truth).
    });
  }

  /**
   * The driver's event loop stalled for `gapMs` (SIGSTOP, a frozen VM, a long GC pause: the membership measures
   * it). A primary whose peer could have taken over meanwhile (it was an in-sync secondary) has no fresh view of
   * it: it steps down before serving (app stopped, VIP removed) and waits `holdMs` for fresh reports before the
   * usual rules decide (it becomes primary again if the peer is still an in-sync secondary, SECOND if it took over).
   */
  stalled(gapMs: number, holdMs: number): ModuleEffect[] {
    return this.input(() => {
      if (this.module.kind !== "mirror") return;
      const peer = this.peer();
      if (!peer || !this.couldTakeOver(peer.report)) return;
      this.staleUntil = this.now + holdMs;
      const cause = `own event loop stalled ${Math.round(gapMs)} ms as primary: ${peer.id} (an in-sync secondary) may have taken over -> wait (app stopped, VIP removed), fresh reports within ${holdMs} ms decide`;
      this.decision("warn", cause);
      this.setP({ soleOwner: false });
      // A transition in progress ends at its hook boundary; the hold then applies in WAIT.
      if (!this.plan) this.beginLeave(cause);
    });
  }

  /** A hook ended. `ok=false` covers a non-zero exit, an exception and a timeout (see `detail`). */
  hookDone(hook: HookName, ok: boolean, detail: string): ModuleEffect[] {
    return this.input(() => {
      if (this.pendingHook !== hook || !this.plan) {
        this.decision("warn", `ignored result of hook ${hook} (not running)`);
        return;
      }
      this.pendingHook = null;
      const step = this.plan.steps[this.plan.index - 1];
      const critical = step?.k === "hook" && step.critical;
      if (this.pendingStop !== null) {
        const cause = this.pendingStop;
        this.pendingStop = null;
        if (this.running && hook === `stop_${this.running}`) this.running = null; // the app is stopped already
        this.event({ type: "hook", hook, ok, detail, cause: `then ${cause}` });
        this.beginStop(cause);
        return;
      }
      if (this.supersededByPeer()) {
        // We started becoming primary while cut off; a connected peer is primary and ranks first: give up
        // at this hook boundary rather than finishing (VIP, app) and stepping down afterwards.
        const peer = this.peer() as PeerInfo;
        this.event({ type: "hook", hook, ok, detail, cause: `-> abandon: peer ${peer.id} is primary and ranks first` });
        this.plan = null;
        if (this.running === "second" && hook === "stop_second" && ok) this.running = null;
        if (this.splitBrainWith(peer)) {
          if (this.running && hook === `stop_${this.running}`) this.running = null;
          this.enterSplitBrain(peer);
          this.beginLeave(`split brain with ${peer.id} -> wait for \`prim --force\` on the node whose data wins`);
          return;
        }
        this.setP({ upToDate: false, soleOwner: false });
        this.beginSecond(`peer ${peer.id} became primary first (generation ${peer.report.generation}) -> secondary, resync needed`);
        return;
      }
      const cut = this.becomingPrimaryCutOff();
      if (cut) {
        // The witness stopped answering (and no peer is in view) while this node was on its way to primary, or
        // restarting as primary: give up at this hook boundary rather than finishing (VIP, app) and stepping down
        // afterwards.
        const cause = `cut off on the way to ${this.plan.target}: no peer in view and split-brain witness unreachable (${cut.reason}) -> wait`;
        this.event({ type: "hook", hook, ok, detail, cause: "-> abandon: cut off" });
        this.decision("warn", cause);
        this.plan = null;
        if (this.running && hook === `stop_${this.running}`) this.running = null; // that app is stopped already
        this.beginLeave(cause);
        return;
      }
      if (ok) {
        this.event({ type: "hook", hook, ok, detail, cause: "continue" });
        this.advance();
        return;
      }
      if (!critical) {
        this.event({ type: "hook", hook, ok, detail, cause: "stop hooks are best effort: continue" });
        this.advance();
        return;
      }
      if (hook === "prestart") {
        this.event({ type: "hook", hook, ok, detail, cause: "-> stop" });
        this.plan = null;
        this.beginStop(`prestart failed: ${detail}`);
        return;
      }
      this.onStartFailure(hook, detail);
    });
  }

  // ---- input plumbing -------------------------------------------------------------------------

  private input(fn: () => void): ModuleEffect[] {
    this.out = [];
    fn();
    this.settle();
    const out = this.out;
    this.out = [];
    return out;
  }

  private settle(): void {
    for (let i = 0; i < MAX_SETTLE_ROUNDS; i++) {
      if (this.plan) break;
      const before = this.statusKey() + this.reportKeyNow();
      if (this.deferred) {
        const v = this.deferred;
        this.deferred = null;
        if (this.failing.has(v.checker)) this.applyVerdict(v);
      } else {
        this.reconcile();
      }
      this.touch();
      if (this.statusKey() + this.reportKeyNow() === before && !this.plan) break;
    }
    this.touch();
    const pk = JSON.stringify(this.p);
    if (pk !== this.lastPersistKey) {
      this.lastPersistKey = pk;
      // Persist before advertising: a peer must never learn of a state we could forget in a crash.
      // ... and before acting on it (VIP, hooks).
      const runIdx = this.out.findIndex((e) => e.type === "runHook" || e.type === "addVip" || e.type === "removeVip");
      const eff: ModuleEffect = { type: "persist", state: this.p };
      if (runIdx >= 0) this.out.splice(runIdx, 0, eff);
      else this.out.push(eff);
    }
    const rk = this.reportKeyNow();
    if (rk !== this.lastReportKey) {
      this.lastReportKey = rk;
      const eff: ModuleEffect = { type: "advertise", report: this.report };
      const runIdx = this.out.findIndex((e) => e.type === "runHook");
      if (runIdx >= 0) this.out.splice(runIdx, 0, eff);
      else this.out.push(eff);
    }
  }

  private reportKeyNow(): string {
    return JSON.stringify(this.report);
  }

  private statusKey(): string {
    const s = this.status;
    return `${s.state}|${s.ready}|${s.transient}|${s.next ?? ""}`;
  }

  /** Emits a state event if the visible status changed; `forced` when the transition was caused by `prim --force`. */
  private touch(forced = this.plan?.forced === true): void {
    const key = this.statusKey();
    if (key === this.lastStatusKey) return;
    const [from] = this.lastStatusKey.split("|") as [ModuleState];
    this.lastStatusKey = key;
    const s = this.status;
    this.event({
      type: "state",
      from,
      to: s.state,
      ready: s.ready,
      transient: s.transient,
      ...(s.next !== undefined ? { next: s.next } : {}),
      cause: this.reason,
      ...(forced ? { forced: true as const } : {}),
    });
  }

  private event(e: ModuleEvent): void {
    this.out.push({ type: "emit", event: e });
  }

  private decision(level: "info" | "warn" | "error", cause: string): void {
    this.event({ type: "decision", level, cause });
  }

  private setP(patch: Partial<PersistedModuleState>): void {
    this.p = { ...this.p, ...patch };
  }

  // ---- plans ----------------------------------------------------------------------------------

  private begin(target: ModuleState, cause: string, steps: Step[], forced = false): void {
    this.plan = { target, cause, steps, index: 0, ...(forced ? { forced } : {}) };
    this.reason = cause;
    this.touch();
    this.advance();
  }

  private advance(): void {
    while (this.plan && this.plan.index < this.plan.steps.length) {
      const plan = this.plan;
      const step = plan.steps[plan.index++] as Step;
      switch (step.k) {
        case "hook": {
          if (this.module.hooks[step.hook] === undefined) continue;
          this.pendingHook = step.hook;
          this.out.push({ type: "runHook", hook: step.hook, state: this.st, nextState: plan.target, reason: plan.cause });
          return;
        }
        case "vip":
          if (step.op === "add" && !this.vipHeld) {
            this.vipHeld = true;
            if (this.module.vips.length > 0) this.out.push({ type: "addVip" });
          } else if (step.op === "remove" && this.vipHeld) {
            this.vipHeld = false;
            if (this.module.vips.length > 0) this.out.push({ type: "removeVip" });
          }
          break;
        case "state":
          this.st = step.to;
          if (step.to === "WAIT") this.waitSince = this.now;
          this.noteAloneWrites();
          break;
        case "do":
          step.fn();
          break;
      }
      if (this.plan !== plan) return; // a step replaced the plan (and advanced it)
    }
    if (this.plan) {
      const done = this.plan;
      this.plan = null;
      this.reason = done.cause;
      this.touch(done.forced === true);
    }
  }

  /**
   * ALONE acknowledges writes that no in-sync secondary stores: remember it (persisted) until a secondary is in
   * sync again (PRIM). Such writes are never discarded without an operator decision.
   */
  private noteAloneWrites(): void {
    if (this.module.kind !== "mirror") return;
    if (this.st === "ALONE" && !this.p.aloneWrites) this.setP({ aloneWrites: true });
    else if (this.st === "PRIM" && (this.p.aloneWrites || this.p.forced || this.p.diverged)) this.setP({ aloneWrites: false, forced: false, diverged: false });
  }

  private stopSteps(): Step[] {
    const steps: Step[] = [];
    if (this.running) steps.push({ k: "hook", hook: `stop_${this.running}` as HookName, critical: false });
    steps.push({ k: "do", fn: () => (this.running = null) });
    steps.push({ k: "vip", op: "remove" });
    if (this.prestarted) {
      steps.push({ k: "hook", hook: "poststop", critical: false });
      steps.push({ k: "do", fn: () => (this.prestarted = false) });
    }
    return steps;
  }

  private beginStop(cause: string): void {
    const wasSecond = this.running === "second" || this.st === "SECOND";
    const peer = this.peer();
    const handsOver = isPrimaryState(this.st) && !!peer && peer.report.state === "SECOND" && peer.report.ready;
    if (this.module.kind === "mirror" && this.p.initialized && (wasSecond || handsOver)) {
      // The peer goes on without us: our copy will be stale.
      this.setP({ upToDate: false, soleOwner: false });
    }
    this.clearIntents();
    this.begin("STOP", cause, [...this.stopSteps(), { k: "state", to: "STOP" }]);
  }

  private beginStart(cause: string): void {
    this.begin("WAIT", cause, [
      { k: "do", fn: () => (this.prestarted = true) },
      { k: "hook", hook: "prestart", critical: true },
      { k: "state", to: "WAIT" },
      { k: "do", fn: () => (this.inSync = false) },
    ]);
  }

  private clearIntents(): void {
    this.splitBrainOverride = false;
    this.claim = null;
    this.secondRequested = false;
    this.yielding = false;
    this.swapRequested = false;
  }

  /**
   * Leaves the current role (VIP removed, app stopped) and waits. The VIP goes first, unlike an orderly stop or
   * yield: this node leaves because it may no longer be the rightful holder (cut off, split brain, stalled, a
   * wait checker failed), and its app's stop may block for its whole timeout (a database's shutdown checkpoint
   * writing into a mount that may not acknowledge alone): clients must move to the peer now, not after that.
   */
  private beginLeave(cause: string): void {
    const steps: Step[] = [];
    steps.push({ k: "vip", op: "remove" });
    if (this.running) steps.push({ k: "hook", hook: `stop_${this.running}` as HookName, critical: false });
    steps.push({ k: "do", fn: () => (this.running = null) });
    steps.push({ k: "state", to: "WAIT" });
    this.inSync = false;
    this.begin("WAIT", cause, steps);
  }

  /** Becomes primary: PRIM when the peer is an in-sync secondary, else ALONE. */
  private beginPrimary(cause: string): void {
    const peer = this.peer();
    // PRIM only with an in-sync secondary (writes are then on both nodes when acked); else ALONE until it is.
    const to = peer && peer.report.state === "SECOND" && peer.report.ready ? "PRIM" : "ALONE";
    const peerGen = peer ? peer.report.generation : 0;
    const forced = this.claim?.forced === true;
    this.setP({
      initialized: true,
      upToDate: true,
      generation: Math.max(this.p.generation, peerGen) + 1,
      soleOwner: true,
      // An operator decided that this copy wins (it ends a split brain): the peer may then discard its own.
      ...(forced ? { forced: true, splitBrain: false } : {}),
      diverged: false,
    });
    this.claim = null;
    this.yielding = false;
    this.swapRequested = false;
    this.secondRequested = false;
    this.inSync = false;
    const steps: Step[] = [];
    if (this.running === "second") steps.push({ k: "hook", hook: "stop_second", critical: false });
    steps.push({ k: "do", fn: () => (this.running = "prim") });
    steps.push({ k: "vip", op: "add" });
    steps.push({ k: "hook", hook: "start_prim", critical: true });
    steps.push({ k: "state", to });
    steps.push({ k: "do", fn: () => this.resetCheckers() });
    this.begin(to, cause, steps, forced);
  }

  private beginSecond(cause: string): void {
    if (this.module.kind === "mirror") {
      // Primary on a line of changes the peer did not follow (a split-brain loser, a primary that went on alone):
      // its own changes are discarded, and the new primary's extent log does not describe them: resync by checksum.
      const diverged = !!this.p.diverged || !!this.p.aloneWrites || this.p.soleOwner || isPrimaryState(this.st) || this.running === "prim";
      if (this.p.aloneWrites) {
        const peer = this.peer();
        this.decision(
          "warn",
          `discarding writes this node acknowledged alone (generation ${this.p.generation}) by operator decision (${
            this.secondRequested ? "command second" : `prim --force on ${peer?.id ?? "the peer"}`
          }): resync by checksum from the peer`,
        );
      }
      this.setP({ aloneWrites: false, splitBrain: false, ...(diverged ? { diverged: true } : {}) });
    }
    this.setP({ upToDate: false, soleOwner: false });
    this.claim = null;
    this.yielding = false;
    this.secondRequested = false;
    this.swapRequested = false;
    this.inSync = false;
    const steps: Step[] = [];
    if (this.running === "prim") steps.push({ k: "hook", hook: "stop_prim", critical: false });
    steps.push({ k: "vip", op: "remove" });
    steps.push({ k: "do", fn: () => (this.running = "second") });
    steps.push({ k: "hook", hook: "start_second", critical: true });
    steps.push({ k: "state", to: "SECOND" });
    this.begin("SECOND", cause, steps);
  }

  private beginUp(cause: string): void {
    this.begin("UP", cause, [
      { k: "do", fn: () => (this.running = "both") },
      { k: "hook", hook: "start_both", critical: true },
      { k: "vip", op: "add" },
      { k: "state", to: "UP" },
      { k: "do", fn: () => this.resetCheckers() },
    ]);
  }

  /** Local restart of the current role (hooks only, no role change). */
  private beginRestart(cause: string, target: ModuleState): void {
    const role = this.running ?? this.roleOf(target);
    if (!role) return;
    this.begin(target, cause, [
      { k: "hook", hook: `stop_${role}` as HookName, critical: false },
      { k: "do", fn: () => (this.running = role) },
      ...(role === "prim" || role === "both" ? [{ k: "vip", op: "add" } as Step] : []),
      { k: "hook", hook: `start_${role}` as HookName, critical: true },
      { k: "state", to: target },
      { k: "do", fn: () => this.resetCheckers() },
    ]);
  }

  /**
   * A (re)start completed: forget the failures of app checkers (restart/stopstart/failover/stop) seen
   * before or during it and ask the driver to reset the checkers; a failure that persists is reported
   * again (the contract of the `resetCheckers` effect). Wait and split-brain failures are about the
   * environment, not the app: they stay.
   */
  private resetCheckers(): void {
    for (const [name, v] of [...this.failing]) if (v.action !== "wait" && !this.isSplitBrain(v)) this.failing.delete(name);
    if (this.deferred && this.deferred.action !== "wait") this.deferred = null;
    this.out.push({ type: "resetCheckers" });
  }

  private roleOf(s: ModuleState): Role | null {
    if (s === "PRIM" || s === "ALONE") return "prim";
    if (s === "SECOND") return "second";
    if (s === "UP") return "both";
    return null;
  }

  /** Primary hands the role over to an in-sync secondary (swap, failover on a checker). */
  private beginYield(cause: string): void {
    this.setP({ soleOwner: false });
    this.yielding = true;
    const steps: Step[] = [];
    if (this.running) steps.push({ k: "hook", hook: `stop_${this.running}` as HookName, critical: false });
    steps.push({ k: "do", fn: () => (this.running = null) });
    steps.push({ k: "vip", op: "remove" });
    steps.push({ k: "state", to: "WAIT" });
    this.begin("WAIT", cause, steps);
  }

  // ---- policy ---------------------------------------------------------------------------------

  private onStartFailure(hook: HookName, detail: string): void {
    const target = this.plan?.target ?? this.st;
    this.plan = null;
    const d = decideRestart(this.p.restarts, this.module.restart, this.now);
    if (d.allowed) {
      this.setP({ restarts: d.history });
      this.event({ type: "hook", hook, ok: false, detail, cause: `-> restart (${d.text})` });
      this.beginRestart(`${hook} failed: ${detail} -> restart (${d.text})`, target);
      return;
    }
    this.event({ type: "hook", hook, ok: false, detail, cause: `-> ${this.escalation()} (restart budget exhausted: ${d.text})` });
    this.escalate(`${hook} failed: ${detail}; restart budget exhausted (${d.text})`);
  }

  private escalation(): string {
    return this.canFailOver() ? "failover" : "stop";
  }

  private canFailOver(): boolean {
    if (this.module.kind !== "mirror" || this.running !== "prim") return false;
    const peer = this.peer();
    return !!peer && peer.report.state === "SECOND" && peer.report.ready;
  }

  private escalate(cause: string): void {
    if (this.canFailOver()) this.beginYield(`${cause} -> failover to ${this.peer()?.id}`);
    else this.beginStop(`${cause} -> stop`);
  }

  private applyVerdict(v: CheckerVerdict): void {
    if (this.isSplitBrain(v)) {
      if (v.ok && !this.splitBrainOk.has(v.checker) && !this.failing.has(v.checker)) {
        this.event({ type: "checker", checker: v.checker, ok: true, action: v.action, reason: v.reason, cause: "split-brain witness confirmed" });
      }
      if (v.ok) this.splitBrainOk.add(v.checker);
      else this.splitBrainOk.delete(v.checker);
    }
    if (v.ok) {
      const was = this.failing.delete(v.checker);
      if (was) this.event({ type: "checker", checker: v.checker, ok: true, action: v.action, reason: v.reason, cause: "ok again" });
      return;
    }
    const isNew = !this.failing.has(v.checker);
    this.failing.set(v.checker, v);
    const splitBrain = this.isSplitBrain(v);
    if (splitBrain || v.action === "wait") {
      if (isNew) {
        const cause = splitBrain ? "split-brain witness unreachable: this node will not go ALONE" : "-> wait";
        this.event({ type: "checker", checker: v.checker, ok: false, action: v.action, reason: v.reason, cause });
      }
      return; // reconcile() applies it
    }
    if (this.st === "STOP") return;
    if (this.plan) {
      this.deferred = v; // applied when the transition ends, if still failing (a completed start forgets it)
      if (isNew) {
        const cause = `deferred: transition in progress (${this.st} -> ${this.plan.target})`;
        this.event({ type: "checker", checker: v.checker, ok: false, action: v.action, reason: v.reason, cause });
      }
      return;
    }
    const appRuns = this.st === "PRIM" || this.st === "ALONE" || this.st === "UP";
    if (v.action === "stop") {
      this.event({ type: "checker", checker: v.checker, ok: false, action: v.action, reason: v.reason, cause: "-> stop" });
      this.beginStop(`${v.checker} failed: ${v.reason} -> stop`);
      return;
    }
    if (!appRuns) {
      this.event({
        type: "checker",
        checker: v.checker,
        ok: false,
        action: v.action,
        reason: v.reason,
        cause: `ignored in ${this.st} (the app does not run here)`,
      });
      return;
    }
    this.failing.delete(v.checker); // a restart/failover consumes the failure; resetCheckers re-arms the probe
    if ((v.action === "stopstart" || v.action === "failover") && this.canFailOver()) {
      const cause = `-> failover to ${this.peer()?.id}`;
      this.event({ type: "checker", checker: v.checker, ok: false, action: v.action, reason: v.reason, cause });
      this.beginYield(`${v.checker} failed: ${v.reason} ${cause}`);
      return;
    }
    const d = decideRestart(this.p.restarts, this.module.restart, this.now);
    if (d.allowed) {
      this.setP({ restarts: d.history });
      const cause = `-> restart (${d.text})`;
      this.event({ type: "checker", checker: v.checker, ok: false, action: v.action, reason: v.reason, cause });
      this.beginRestart(`${v.checker} failed: ${v.reason} ${cause}`, this.st);
      return;
    }
    const cause = `-> ${this.escalation()} (restart budget exhausted: ${d.text})`;
    this.event({ type: "checker", checker: v.checker, ok: false, action: v.action, reason: v.reason, cause });
    this.escalate(`${v.checker} failed: ${v.reason}; restart budget exhausted (${d.text})`);
  }

  /** A split-brain checker gates going ALONE instead of acting: known by the verdict's kind, the configured type, or the name. */
  private isSplitBrain(v: CheckerVerdict): boolean {
    const entry = this.module.checkers.find((c) => c.name === v.checker);
    const type = v.kind ?? entry?.type ?? v.checker.split(":")[0];
    return type === "split-brain" || type === "splitbrain";
  }

  private waitBlocker(): CheckerVerdict | undefined {
    for (const v of this.failing.values()) if (v.action === "wait" && !this.isSplitBrain(v)) return v;
    return undefined;
  }

  private splitBrainFailing(): CheckerVerdict | undefined {
    for (const v of this.failing.values()) if (this.isSplitBrain(v)) return v;
    return undefined;
  }

  // ---- peers ----------------------------------------------------------------------------------

  /** The mirror peer: another node in the view that reports this module in a state other than STOP. */
  private peer(): PeerInfo | undefined {
    const ids = [...this.reports.keys()].sort();
    for (const id of ids) {
      const r = this.reports.get(id);
      if (r && r.state !== "STOP") return { id, report: r };
    }
    return undefined;
  }

  /** This node is primary or on its way to it. */
  private primaryOrBecoming(): boolean {
    return isPrimaryState(this.st) || (this.plan !== null && isPrimaryState(this.plan.target));
  }

  /** A peer with this report could take over from this node if it were gone: we are (becoming) primary and it is our in-sync secondary. */
  private couldTakeOver(r: ModuleReport): boolean {
    return this.primaryOrBecoming() && r.state === "SECOND" && r.ready;
  }

  private isPeerPrimary(peer: PeerInfo): boolean {
    return isPrimaryState(peer.report.state) || isPrimaryState(peer.report.next);
  }

  /** A transition into a primary role is running, and a connected peer is primary and ranks first. */
  private supersededByPeer(): boolean {
    if (!this.plan || !isPrimaryState(this.plan.target) || isPrimaryState(this.st)) return false;
    const peer = this.peer();
    return !!peer && this.isPeerPrimary(peer) && !this.beats(peer);
  }

  /** A transition into (or a restart of) a primary role runs while this node sees neither a peer nor its witness (no override). */
  private becomingPrimaryCutOff(): CheckerVerdict | undefined {
    if (!this.plan || !isPrimaryState(this.plan.target) || this.splitBrainOverride) return undefined;
    return this.cutOff();
  }

  private claimActive(): boolean {
    if (this.module.kind !== "mirror") return false;
    if (this.claim) return true;
    return !this.p.initialized && this.module.mirror.defaultPrimary === this.nodeId;
  }

  private isCandidate(): boolean {
    if (this.module.kind !== "mirror" || this.st === "STOP") return false;
    if (this.secondRequested || this.yielding || this.waitBlocker()) return false;
    if (this.p.splitBrain && !this.claim) return false;
    return this.claimActive() || (this.p.initialized && this.p.upToDate);
  }

  /** Deterministic rank (same result on both nodes): true when this node beats the peer. */
  private beats(peer: PeerInfo): boolean {
    const me = this.report;
    // An operator's decision first, then the side that acknowledged writes alone (the other has not seen them),
    // then current data and its generation; the node id only breaks a tie between equivalent copies.
    const a = [me.claim ? 1 : 0, me.forced ? 1 : 0, me.aloneWrites ? 1 : 0, me.upToDate ? 1 : 0, me.generation];
    const b = [peer.report.claim ? 1 : 0, peer.report.forced ? 1 : 0, peer.report.aloneWrites ? 1 : 0, peer.report.upToDate ? 1 : 0, peer.report.generation];
    for (let i = 0; i < a.length; i++) {
      if ((a[i] as number) !== (b[i] as number)) return (a[i] as number) > (b[i] as number);
    }
    return this.nodeId < peer.id;
  }

  // ---- reconcile: decide what to do when no transition runs -----------------------------------

  private reconcile(): void {
    if (this.plan || this.st === "STOP") return;
    const blocker = this.waitBlocker();
    if (blocker && this.st !== "WAIT") {
      this.beginLeave(`${blocker.checker} failed: ${blocker.reason} -> wait`);
      return;
    }
    if (this.module.kind === "farm") return this.reconcileFarm();
    return this.reconcileMirror();
  }

  private reconcileFarm(): void {
    if (this.st === "WAIT") {
      const blocker = this.waitBlocker();
      if (blocker) {
        this.reason = `waiting: ${blocker.checker} failed (${blocker.reason})`;
        return;
      }
      this.beginUp(this.reason.startsWith("waiting:") ? "checkers ok -> start" : this.reason);
    }
  }

  private reconcileMirror(): void {
    const peer = this.peer();
    const peerPrimary = !!peer && this.isPeerPrimary(peer);
    if (this.splitBrainOverride && (this.reports.size > 0 || this.splitBrainConfirmed())) {
      this.splitBrainOverride = false;
      this.decision("info", `${this.reports.size > 0 ? "peer in view again" : "split-brain witness confirmed"}: the override of \`prim\` ends`);
    }
    // A peer with newer data makes ours stale.
    if (peer && peer.report.generation > this.p.generation && this.p.upToDate && !isPrimaryState(this.st)) {
      this.setP({ upToDate: false });
      this.decision("info", `peer ${peer.id} has generation ${peer.report.generation} > ${this.p.generation}: local copy not up to date`);
    }
    switch (this.st) {
      case "WAIT":
        return this.reconcileWait(peer, peerPrimary);
      case "SECOND":
        return this.reconcileSecond(peer, peerPrimary);
      case "PRIM":
      case "ALONE":
        return this.reconcilePrimary(peer, peerPrimary);
      default:
        return;
    }
  }

  private reconcileWait(peer: PeerInfo | undefined, peerPrimary: boolean): void {
    const blocker = this.waitBlocker();
    if (blocker) {
      this.reason = `waiting: ${blocker.checker} failed (${blocker.reason})`;
      return;
    }
    if (peer && peerPrimary && this.p.aloneWrites && !this.secondRequested && !peer.report.forced) {
      // This copy holds writes acknowledged alone: becoming secondary would discard them.
      if (this.splitBrainWith(peer)) {
        this.enterSplitBrain(peer);
        return this.holdReason(`split brain with ${peer.id}: \`prim --force\` on the node whose data wins (\`second\` here discards this node's writes)`);
      }
      return this.holdReason(`peer ${peer.id} is becoming primary but this node acknowledged writes alone: waiting (\`second\` here discards them)`);
    }
    if (peer && peerPrimary) {
      this.beginSecond(`peer ${peer.id} is ${peer.report.next ?? peer.report.state} -> secondary`);
      return;
    }
    if (this.p.splitBrain && !this.claim) {
      this.reason = `split brain${peer ? ` with ${peer.id}` : ""}: waiting for \`prim --force\` on the node whose data wins`;
      return;
    }
    if (this.staleUntil > this.now) {
      this.reason = `after a stall of its own: waiting for fresh reports from the peer (until ${this.staleUntil})`;
      return;
    }
    if (this.yielding) {
      if (!peer) {
        this.yielding = false;
      } else if (!(peer.report.state === "SECOND" && peer.report.ready)) {
        this.yielding = false;
        this.decision("warn", `handover: peer ${peer.id} no longer in sync -> take the role back`);
      } else {
        this.reason = `handing over to ${peer.id}`;
        return;
      }
    }
    if (this.secondRequested) {
      this.reason = "waiting for a primary (second requested)";
      return;
    }
    if (this.claim) {
      if (!this.claim.forced && this.p.initialized && !this.p.upToDate) {
        this.claim = null;
        this.decision("warn", "prim cancelled: this node's data is no longer up to date");
      } else {
        this.beginPrimary(this.claim.forced ? "command prim --force" : "command prim");
        return;
      }
    }
    if (!this.p.initialized && !this.claimActive()) {
      this.reason = "first start: waiting for `prim` on the node whose data wins";
      return;
    }
    if (!this.isCandidate()) {
      this.reason = "not up to date: waiting for a primary to resync from (or `prim --force`)";
      return;
    }
    const cut = peer ? this.cutOff() : undefined;
    if (peer && cut) {
      // Every peer in view is silent and the witness does not confirm us: as cut off as with no peer in view.
      return this.holdReason(`cut off: ${peer.id} silent and split-brain witness unreachable (${cut.reason}): waiting to hear from it (\`prim\` to make this node primary)`);
    }
    if (peer) {
      if (peer.report.state === "SECOND" || !peer.report.candidate || this.beats(peer)) {
        const why = this.claimActive() && !this.p.initialized ? `first start, default primary` : `rank over ${peer.id}`;
        this.beginPrimary(`${why} -> primary`);
      } else {
        this.reason = `peer ${peer.id} ranks first: waiting for it to become primary`;
      }
      return;
    }
    if (this.claimActive()) {
      const gate = this.aloneBlocker();
      if (gate) return this.holdReason(`first start, default primary, no peer; ${gate}: not going ALONE`);
      this.beginPrimary("first start, default primary, no peer -> alone");
      return;
    }
    if (!this.p.soleOwner) {
      this.reason = this.steppedDownFor
        ? `cut off earlier: waiting for ${this.steppedDownFor}, which may have taken over (\`prim\` to make this node primary)`
        : "waiting for the peer (it may hold newer data; `prim` to make this node primary)";
      return;
    }
    const gate = this.aloneBlocker();
    if (gate) return this.holdReason(`no peer; ${gate}: not going ALONE`);
    if (this.now - this.waitSince >= this.module.mirror.peerWait) {
      this.beginPrimary(`no peer after ${this.module.mirror.peerWait}ms and this node was the last primary -> alone`);
    } else {
      this.reason = `waiting ${this.module.mirror.peerWait}ms for the peer`;
    }
  }

  private reconcileSecond(peer: PeerInfo | undefined, peerPrimary: boolean): void {
    if (peer && peerPrimary) {
      if (this.swapRequested && !this.inSync) this.swapRequested = false;
      return;
    }
    this.swapRequested = false;
    const why = !peer
      ? "primary lost"
      : peer.report.state === "WAIT"
        ? `peer ${peer.id} left the primary role (WAIT)`
        : `peer ${peer.id} is ${peer.report.state}`;
    if (peer && peer.report.candidate && peer.report.state === "WAIT") {
      this.reason = `${why}; waiting for it to become primary`;
      return;
    }
    if (!(this.inSync && this.p.upToDate)) {
      this.beginLeave(`${why}; local copy not in sync: cannot take over -> wait`);
      return;
    }
    const gate = peer ? undefined : this.aloneBlocker();
    if (gate) {
      const holder = this.arbiterGate() ? (this.leaseHolder() ?? "the lost primary") : undefined;
      if (holder !== undefined) {
        // The witness arbiter's lease names the (lost) primary. If it died, the lease lapses within its ttl and is
        // granted here: failover. If it is still held `peerWait` later, the primary lives on (it renews) and may
        // acknowledge writes alone: this copy is outdated like below. (peerWait must exceed the ttl + the check.)
        if (this.leaseWaitUntil === 0) this.leaseWaitUntil = this.now + this.module.mirror.peerWait;
        if (this.now < this.leaseWaitUntil) {
          return this.holdReason(`${why}; ${gate}: lease held by ${holder}, waiting up to ${this.module.mirror.peerWait}ms for it to lapse`);
        }
      }
      // DRBD's "outdated": the primary may be alive on the other side of the cut, acking writes alone (it reaches the
      // witness, this node does not): this copy must not become primary again before a resync, or an explicit force.
      this.setP({ upToDate: false });
      this.leaseWaitUntil = 0;
      const cause = `${why}; ${gate}${holder !== undefined ? ` for ${this.module.mirror.peerWait}ms` : ""}: the primary may go on alone -> this copy is outdated (primary again only after a resync from ${
        this.lostPeer ?? "the peer"
      } or \`prim --force\`)`;
      this.decision("warn", cause);
      this.beginLeave(cause);
      return;
    }
    this.beginPrimary(`${why} -> failover`);
  }

  /** Both sides acknowledged writes alone and neither was made primary by an operator: a true split brain. */
  private splitBrainWith(peer: PeerInfo): boolean {
    if (this.module.kind !== "mirror" || !this.p.aloneWrites || !peer.report.aloneWrites) return false;
    if (peer.report.forced || (this.p.forced && isPrimaryState(this.st))) return false;
    return !this.secondRequested;
  }

  /** Records a split brain (persisted; logged once, with both generations). */
  private enterSplitBrain(peer: PeerInfo): void {
    if (!this.p.splitBrain) {
      this.decision(
        "error",
        `split brain: this node (generation ${this.p.generation}) and ${peer.id} (generation ${peer.report.generation}) both acknowledged writes alone; no copy is discarded without an operator decision: \`prim --force\` on the node whose data wins`,
      );
    }
    this.setP({ splitBrain: true, soleOwner: false });
  }

  /**
   * The node that holds the witness's lease according to a failed split-brain verdict (the arbiter's denial, its
   * `lease.holder`), or undefined (the witness is unreachable, or the checker is not an arbiter).
   */
  private leaseHolder(): string | undefined {
    return this.splitBrainFailing()?.lease?.holder;
  }

  /**
   * The failing split-brain checker is a witness arbiter (its entry has `arbiter`, or its verdict carries `lease`):
   * a denial there may be "held by the peer, until it lapses", which a failover must be allowed to wait out. (Its
   * verdict's reason is the one of its first failure and may be stale, e.g. `lease ending ...` on a former primary.)
   */
  private arbiterGate(): boolean {
    const v = this.splitBrainFailing();
    if (!v) return false;
    const entry = this.module.checkers.find((c) => c.name === v.checker) as (Record<string, unknown> & { name?: string }) | undefined;
    return (entry !== undefined && entry["arbiter"] !== undefined) || v.lease !== undefined;
  }

  /** A node decides not to become primary: logged once per distinct reason (the state does not change). */
  private holdReason(reason: string): void {
    if (this.reason !== reason) this.decision("warn", reason);
    this.reason = reason;
  }

  /**
   * Why this node must not become primary with no peer in view, if it must not: a split-brain checker failed
   * (the witness is unreachable), or one has not said ok yet. Undefined when the module has none.
   */
  private aloneBlocker(): string | undefined {
    const sb = this.splitBrainFailing();
    if (sb) return `${this.leaseHolder() !== undefined ? "split-brain witness denies the lease" : "split-brain witness unreachable"} (${sb.reason})`;
    const configured = this.splitBrainConfigured();
    if (this.splitBrainOk.size < configured) return `split-brain witness not confirmed yet (${this.splitBrainOk.size} of ${configured} checkers ok)`;
    return undefined;
  }

  private splitBrainConfigured(): number {
    return this.module.checkers.filter((c) => c.type === "split-brain" || c.type === "splitbrain").length;
  }

  /** Every configured split-brain checker last said ok (false when the module has none). */
  private splitBrainConfirmed(): boolean {
    const configured = this.splitBrainConfigured();
    return configured > 0 && this.splitBrainOk.size >= configured && !this.splitBrainFailing();
  }

  /** A split-brain checker failed and no peer is in view (none reports this module): this node may be the one cut off. */
  private cutOff(): CheckerVerdict | undefined {
    if (this.module.kind !== "mirror") return undefined;
    for (const id of this.reports.keys()) if (!this.silentPeers.has(id)) return undefined;
    return this.splitBrainFailing();
  }

  private reconcilePrimary(peer: PeerInfo | undefined, peerPrimary: boolean): void {
    if (peer && peerPrimary && peer.report.next !== undefined && !isPrimaryState(peer.report.next)) {
      // The peer is leaving the primary role (stepping down as cut off, yielding): no contest, it settles first.
      // (Contesting it could make both lose: this node becomes SECOND while the peer settles in WAIT and sees it.)
      this.reason = `peer ${peer.id} is leaving the primary role (${peer.report.state} -> ${peer.report.next})`;
      return;
    }
    if (peer && peerPrimary && this.splitBrainWith(peer)) {
      this.enterSplitBrain(peer);
      this.beginLeave(`split brain with ${peer.id} -> wait (app stopped, VIP removed) for \`prim --force\` on the node whose data wins`);
      return;
    }
    if (peer && peerPrimary) {
      if (!this.beats(peer)) {
        this.setP({ upToDate: false, soleOwner: false });
        const tie = peer.report.forced
          ? ", it was made primary by prim --force"
          : !!peer.report.aloneWrites !== !!this.p.aloneWrites
            ? ", it acknowledged writes alone"
            : peer.report.generation === this.p.generation
              ? ", tie broken by node id"
              : "";
        this.beginSecond(
          `two primaries: peer ${peer.id} wins (generation ${peer.report.generation} vs ${this.p.generation}${tie}) -> secondary, resync needed`,
        );
      } else {
        this.reason = `two primaries: this node wins over ${peer.id}`;
      }
      return;
    }
    if (peer && !peerPrimary && peer.report.splitBrain && this.p.aloneWrites) {
      if (!this.splitBrainSeen) {
        this.splitBrainSeen = true;
        this.decision(
          "error",
          `split brain: this node (generation ${this.p.generation}) and ${peer.id} (generation ${peer.report.generation}) both acknowledged writes alone; ${peer.id} stopped and keeps its copy: \`second\` on ${peer.id} discards its changes, or stop this node and \`prim --force\` on ${peer.id}`,
        );
      }
    } else this.splitBrainSeen = false;
    if (peer && peer.report.state === "SECOND" && peer.report.diverged) {
      if (!this.divergedResyncAsked) {
        this.divergedResyncAsked = true;
        const cause = `secondary ${peer.id} diverged (it was primary on its own line of changes): resync by checksum, not by this node's extent log`;
        this.decision("info", cause);
        this.out.push({ type: "resync", mode: "checksum", cause });
      }
    } else if (!peer || !peer.report.diverged) this.divergedResyncAsked = false;
    const secondReady = !!peer && peer.report.state === "SECOND" && peer.report.ready;
    if (peer && peer.report.swap && secondReady) {
      this.beginYield(`swap requested by ${peer.id} -> hand over`);
      return;
    }
    if (secondReady) {
      if (this.p.soleOwner) this.setP({ soleOwner: false });
    } else if (!this.p.soleOwner) {
      // The in-sync secondary is gone or fell behind: our data moves on without it.
      this.setP({ soleOwner: true, generation: this.p.generation + 1 });
      this.decision("info", `secondary ${peer ? `${peer.id} not in sync` : "lost"} -> generation ${this.p.generation}`);
    }
    const cut = this.cutOff();
    if (cut && !this.splitBrainOverride) {
      const who = this.lostPeer ?? "the peer";
      const mayHave = this.peerMayHaveTakenOver;
      // If the peer left as an in-sync secondary and reaches the witness, it takes over: this node must not come
      // back on its own (the peerWait rule would make two primaries on data older than the peer's).
      if (mayHave) {
        this.setP({ soleOwner: false });
        this.steppedDownFor = who;
        if (this.p.aloneWrites) {
          // The in-sync secondary takes over with the witness's agreement (it reaches it, this node does not): the
          // role is handed over by arbitration, so what this node acknowledged alone since it lost the peer (the
          // window the replication permit bounds) is not on the new primary. Said loudly, then forfeited.
          this.decision(
            "warn",
            `writes acknowledged alone since ${who} was lost (generation ${this.p.generation}) are not on ${who}, which may take over with the witness's agreement: they will be discarded when this node resyncs from it`,
          );
          this.setP({ aloneWrites: false, diverged: true });
        }
      }
      const then = mayHave
        ? `${who} left as an in-sync secondary and may take over: waiting for it (or \`prim\`)`
        : `no in-sync secondary could take over: back when the witness answers`;
      const gone = peer ? `${peer.id} silent (still in view)` : `${who} out of view`;
      const cause = `cut off: ${gone} and split-brain witness unreachable (${cut.reason}) -> wait (app stopped, VIP removed); ${then}`;
      this.decision("warn", cause);
      this.beginLeave(cause);
      return;
    }
    // PRIM = an in-sync secondary stores every write before it is acked; ALONE = it does not (none, or resyncing,
    // or it dropped out of sync: e.g. its disk is full), so changes are only logged for the resync.
    if (this.st === "PRIM" && !secondReady) {
      this.st = "ALONE";
      this.noteAloneWrites();
      this.reason = !peer
        ? "secondary lost -> alone"
        : peer.report.state === "SECOND"
          ? `secondary ${peer.id} not in sync -> alone`
          : `peer ${peer.id} is ${peer.report.next ? `${peer.report.state} -> ${peer.report.next}` : peer.report.state} -> alone`;
    } else if (this.st === "ALONE" && secondReady && peer) {
      this.st = "PRIM";
      this.noteAloneWrites();
      this.reason = `secondary ${peer.id} in sync`;
    }
  }

  // ---- commands -------------------------------------------------------------------------------

  private validate(cmd: ModuleCommand): void {
    const refuse = (why: string) => {
      throw new CommandRefusedError(`${this.module.name}: ${cmd.type}${cmd.type === "prim" && cmd.force ? " --force" : ""} refused: ${why}`);
    };
    const mirrorOnly = cmd.type === "swap" || cmd.type === "prim" || cmd.type === "second";
    if (mirrorOnly && this.module.kind !== "mirror") refuse("only for mirror modules");
    if (cmd.type === "forcestop" || cmd.type === "stop") return;
    if (this.plan) refuse(`transition in progress (${this.st} -> ${this.plan.target}); use stop or forcestop`);
    const peer = this.peer();
    switch (cmd.type) {
      case "start":
        if (this.st !== "STOP") refuse(`already started (${this.st})`);
        return;
      case "restart":
        if (!this.roleOf(this.st)) refuse(`nothing to restart in ${this.st}`);
        return;
      case "stopstart":
        if (this.st === "STOP") refuse("module is stopped: use start");
        return;
      case "swap":
        if (isPrimaryState(this.st)) {
          if (!(peer && peer.report.state === "SECOND" && peer.report.ready)) refuse("no in-sync secondary to hand over to");
        } else if (this.st === "SECOND") {
          if (!peer || !this.isPeerPrimary(peer)) refuse("no primary to swap with");
          if (!this.inSync) refuse("this secondary is not in sync");
        } else refuse(`not possible in ${this.st}`);
        return;
      case "prim":
        if (isPrimaryState(this.st)) refuse(`already primary (${this.st})`);
        if (peer && this.isPeerPrimary(peer)) refuse(`peer ${peer.id} is primary: use swap`);
        if (this.st === "SECOND" && !this.inSync && !cmd.force) refuse("this secondary is not in sync: use prim --force");
        if (this.p.splitBrain && !cmd.force) refuse("split brain: both nodes acknowledged writes alone; prim --force makes this node's data win");
        if (this.p.initialized && !this.p.upToDate && !cmd.force) {
          refuse(`this node's data is not up to date (generation ${this.p.generation}); prim --force makes it win`);
        }
        return;
      case "second":
        if (this.st === "SECOND") refuse("already secondary");
        if (isPrimaryState(this.st) && !(peer && peer.report.state === "SECOND" && peer.report.ready)) {
          refuse("no in-sync secondary to hand over to");
        }
        return;
    }
  }

  private applyCommand(cmd: ModuleCommand): void {
    const force = cmd.type === "prim" && cmd.force === true;
    this.event({ type: "command", command: cmd.type, ...(force ? { force } : {}), cause: `command ${cmd.type}${force ? " --force" : ""}` });
    if (cmd.type !== "forcestop" && this.p.restarts.length > 0) this.setP({ restarts: [] }); // an admin command resets the count
    const cause = `command ${cmd.type}${force ? " --force" : ""}`;
    switch (cmd.type) {
      case "start":
        this.clearIntents();
        this.beginStart(cause);
        return;
      case "stop":
        if (this.st === "STOP" && !this.plan) return;
        if (this.plan?.target === "STOP") return; // already stopping
        if (this.pendingHook) {
          this.pendingStop = cause;
          return;
        }
        this.plan = null;
        this.beginStop(cause);
        return;
      case "forcestop": {
        if (this.pendingHook) this.out.push({ type: "cancelHook", hook: this.pendingHook });
        this.pendingHook = null;
        this.pendingStop = null;
        this.plan = null;
        if (this.vipHeld) {
          this.vipHeld = false;
          if (this.module.vips.length > 0) this.out.push({ type: "removeVip" });
        }
        if (this.module.kind === "mirror" && this.p.initialized && (this.running === "second" || this.st === "SECOND")) {
          this.setP({ upToDate: false, soleOwner: false });
        }
        if (this.running) this.decision("warn", `forcestop: stop hooks not run; the app (${this.running}) may still run`);
        this.running = null;
        this.prestarted = false;
        this.clearIntents();
        this.st = "STOP";
        this.reason = cause;
        return;
      }
      case "restart":
        this.beginRestart(cause, this.st);
        return;
      case "stopstart":
        this.beginStop(cause);
        this.plan?.steps.push({ k: "do", fn: () => this.beginStart(cause) });
        if (this.plan === null && this.st === "STOP") this.beginStart(cause);
        return;
      case "swap":
        if (isPrimaryState(this.st)) this.beginYield(`${cause} -> hand over to ${this.peer()?.id}`);
        else {
          this.swapRequested = true;
          this.reason = `${cause}: asked ${this.peer()?.id} to hand over`;
        }
        return;
      case "prim":
        this.claim = { forced: force };
        this.secondRequested = false;
        if (this.module.kind === "mirror" && this.reports.size === 0 && this.splitBrainConfigured() > 0 && !this.splitBrainConfirmed()) {
          this.splitBrainOverride = true;
          this.decision(
            "warn",
            `${cause}: no peer in view and the split-brain witness not confirmed: primary by command; no step-down until the witness or the peer is seen again`,
          );
        }
        if (force) {
          const stale = this.p.initialized && !this.p.upToDate;
          this.decision(
            "warn",
            stale
              ? `prim --force: this node's data (generation ${this.p.generation}) wins although not up to date; the peer's newer changes will be discarded`
              : "prim --force",
          );
        }
        if (this.st === "STOP") this.beginStart(cause);
        else if (this.st === "SECOND") this.beginPrimary(cause);
        return;
      case "second":
        this.claim = null;
        if (isPrimaryState(this.st)) {
          this.beginYield(`${cause} -> hand over to ${this.peer()?.id}`);
          return;
        }
        this.secondRequested = true;
        if (this.st === "STOP") this.beginStart(cause);
        return;
    }
  }
}
