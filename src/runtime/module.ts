/**
 * `Module`: the driver that runs one module on this node. It wires the pure {@link ModuleCore} to the
 * world: hooks (scripts or functions, through {@link runHook}), the VIP (a {@link VipDriver} port),
 * persisted state (a {@link ModuleStateStore} port), timers (a {@link Clock}), the event log, and typed
 * events (eventemitter3), also readable as an async iterator.
 *
 * Order of effects: carried out one after the other in the order the core returns them (persist before
 * advertise; VIP added before start_prim runs; stop_prim done before the VIP is removed). A hook is
 * launched and runs in the background; its end is fed back to the core, which then continues. Inputs that
 * arrive meanwhile (peer reports, checker verdicts, commands) are processed at once. Listeners of one
 * module are called synchronously in decision order and never concurrently; an input fed from inside a listener
 * is decided at once, its effects carried out after those of the batch in progress (see `feed`).
 *
 * Inputs from the other layers: `view()` and `peerReport()` from membership (and `advertise` events go
 * back to it), `checker()` from the checker runner (and `resetCheckers` events go back to it),
 * `replication()` from the replication layer.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { extname, join } from "node:path";
import { EventEmitter } from "eventemitter3";
import type { CheckerVerdict } from "../core/checker.js";
import {
  ModuleCore,
  parseModulesText,
  resolveModule,
  type HookName,
  type MembershipView,
  type ModuleCommand,
  type ModuleDefinition,
  type ModuleEffect,
  type ModuleEvent,
  type ModuleReport,
  type ModuleState,
  type ModuleStatus,
  type PersistedModuleState,
  type ResolvedModule,
  decodeModuleReport,
} from "../core/module/index.js";
import { isPrimaryState } from "../core/module/types.js";
import { ConfigError, type ConfigProblem } from "../core/errors.js";
import type { CheckerGroup } from "../checkers/group.js";
import type { Clock } from "./clock.js";
import type { Membership } from "./membership.js";
import { EventLog, type ModuleLogRecord } from "./event-log.js";
import { runHook, type HookResult } from "./hooks.js";

/**
 * A module's virtual IP on this node: `add` puts it here (and announces it: gratuitous ARP / unsolicited NA),
 * `remove` takes it off. One interface for both kinds: {@link MirrorVip} (the VIP on the primary alone) and the
 * farm's `FarmDriver` (the VIP on every node, behind the packet filter's buckets).
 */
export interface VirtualIp {
  add(vip: string, module: string): Promise<void>;
  remove(vip: string, module: string): Promise<void>;
}
/** The module engine's name for {@link VirtualIp}. */
export type VipDriver = VirtualIp;

/** An in-memory VIP driver (tests, simulations): records what is held. */
export class MemoryVipDriver implements VipDriver {
  readonly held = new Set<string>();
  readonly ops: string[] = [];
  async add(vip: string): Promise<void> {
    this.held.add(vip);
    this.ops.push(`add ${vip}`);
  }
  async remove(vip: string): Promise<void> {
    this.held.delete(vip);
    this.ops.push(`remove ${vip}`);
  }
}

/** Where a module's persisted state lives (generation, up-to-date flag, restart history). */
export interface ModuleStateStore {
  load(module: string): Promise<PersistedModuleState | undefined>;
  save(module: string, state: PersistedModuleState): Promise<void>;
}

export class MemoryModuleStore implements ModuleStateStore {
  readonly states = new Map<string, PersistedModuleState>();
  async load(module: string): Promise<PersistedModuleState | undefined> {
    return this.states.get(module);
  }
  async save(module: string, state: PersistedModuleState): Promise<void> {
    this.states.set(module, state);
  }
}

/** One JSON file per module in `dir`, replaced atomically (write + rename). */
export class FileModuleStore implements ModuleStateStore {
  /** Mode of a state directory the store creates (owner only). */
  static readonly DIR_MODE = 0o700;
  /** Mode of the state files the store creates (owner only). */
  static readonly FILE_MODE = 0o600;
  constructor(readonly dir: string) {}
  async load(module: string): Promise<PersistedModuleState | undefined> {
    try {
      return JSON.parse(readFileSync(join(this.dir, `${module}.state.json`), "utf8")) as PersistedModuleState;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }
  async save(module: string, state: PersistedModuleState): Promise<void> {
    // Created owner-only (0700 directory, 0600 files), not chmod'ed after: no moment where others may read.
    // An existing directory is left as it is.
    mkdirSync(this.dir, { recursive: true, mode: FileModuleStore.DIR_MODE });
    const path = join(this.dir, `${module}.state.json`);
    // A leftover temporary file (a crash between write and rename) would keep its old mode: start afresh.
    rmSync(`${path}.tmp`, { force: true });
    writeFileSync(`${path}.tmp`, JSON.stringify(state), { mode: FileModuleStore.FILE_MODE });
    renameSync(`${path}.tmp`, path);
  }
}

/**
 * Reads a modules file (`.json`, `.yaml` or `.yml`: `{ modules: [...] }`) and validates it with the same
 * codec as definitions in code. Throws a ConfigError naming the path (e.g. `modules.1.hooks.start_prim`)
 * and the value.
 */
export function loadModulesFile(path: string): ResolvedModule[] {
  const ext = extname(path).toLowerCase();
  const format = ext === ".json" ? "json" : "yaml";
  return parseModulesText(readFileSync(path, "utf8"), format);
}

/** Wall-clock time: the restart history is persisted, so it must mean the same after a daemon restart. */
export const wallClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const h = setTimeout(fn, ms);
    return () => clearTimeout(h);
  },
};

export interface ModuleOptions {
  /** This node's id, as in the membership view. */
  readonly nodeId: string;
  /**
   * Required: puts this module's VIPs on this node and takes them off. Production: `MirrorVip` for a
   * mirror module (the VIP on the primary only), `FarmVip` (through the farm driver) for a farm module
   * (the VIP on every node, the packet filter decides who answers), or the driver of another module kind.
   * There is no default: a module without a real driver would hold no VIP at all. Tests and simulations pass a
   * `MemoryVipDriver` from "holdfast/testing".
   */
  readonly vip: VipDriver;
  /**
   * Required: where the module's safety state lives (generation, up-to-date flag, last sole primary, writes
   * acknowledged alone, restart history). Production: {@link FileModuleStore} on a persistent local directory
   * (e.g. `/var/lib/holdfast`). There is no default: a module whose state does not survive a restart could
   * become primary on stale data. Tests and simulations pass a `MemoryModuleStore` from "holdfast/testing".
   */
  readonly store: ModuleStateStore;
  /** Default: {@link wallClock}. */
  readonly clock?: Clock;
  /** Directory of the event log files; omit to keep the log in memory only. */
  readonly logDir?: string;
  /** Extra environment for hook scripts. */
  readonly hookEnv?: Readonly<Record<string, string>>;
  /** SIGTERM -> SIGKILL delay for hook scripts, ms. Default 1000. */
  readonly killGraceMs?: number;
  /**
   * Mirror: after a stall of this node's own event loop (reported by the membership, see {@link bindMembership})
   * a primary whose peer was an in-sync secondary steps down and waits this long for fresh peer reports before
   * the usual rules decide, ms. Default 1000: several heartbeats on every membership preset's tick, so a peer
   * that took over during the stall is known before this node could serve again.
   */
  readonly stallHoldMs?: number;
  /**
   * Mirror: the shortest own stall after which a primary steps down, ms. Default 400: on the LAN membership preset
   * (pulse 100 ms, loss after 600 ms) a shorter stall cannot have let the peer declare this node lost and take
   * over. With a slower preset, set it to about its loss timeout minus one pulse.
   */
  readonly stallStepDownMs?: number;
}

/** Typed events of a module. */
export interface ModuleEvents {
  /** Every record of the event log (decisions and hook output). */
  record: (r: ModuleLogRecord) => void;
  /** The state, ready or transient flag changed. */
  state: (status: ModuleStatus, event: Extract<ModuleEvent, { type: "state" }>) => void;
  /** The report to carry in heartbeats changed (membership sends it to peers). */
  advertise: (report: ModuleReport) => void;
  /** The persisted state changed (the save through the store is queued in effect order). */
  persist: (state: PersistedModuleState) => void;
  /** A (re)start completed: the checker runner should reset its hysteresis. */
  resetCheckers: () => void;
  /** Mirror primary: the next resync pass towards the secondary must use `mode` (e.g. it diverged: `checksum`). */
  resync: (r: { mode: "checksum"; cause: string }) => void;
  /** A hook ended. */
  hook: (hook: HookName, result: HookResult) => void;
  /** A driver-side failure (VIP driver, store) that the core cannot see. */
  error: (err: Error) => void;
}

export class Module extends EventEmitter<ModuleEvents> {
  readonly definition: ResolvedModule;
  readonly nodeId: string;
  readonly log: EventLog;
  private readonly core: ModuleCore;
  private readonly vip: VipDriver;
  private readonly store: ModuleStateStore;
  private readonly clock: Clock;
  private readonly opts: ModuleOptions;
  private chain: Promise<void> = Promise.resolve();
  private hookAbort: AbortController | null = null;
  /** Hook runs issued (runHook effects seen) and the highest one cancelled (forcestop). */
  private hooksIssued = 0;
  private hooksCancelled = 0;
  private cancelTimer: (() => void) | null = null;
  private closed = false;
  /** Effects produced by the core and not carried out yet (in production order), and whether a feed carries them out. */
  private readonly pending: ModuleEffect[] = [];
  private draining = false;
  private readonly iterators = new Set<{ push: (r: ModuleLogRecord | null) => void }>();

  private constructor(def: ResolvedModule, opts: ModuleOptions, persisted: PersistedModuleState | undefined) {
    super();
    this.definition = def;
    this.nodeId = opts.nodeId;
    this.opts = opts;
    this.vip = opts.vip;
    this.store = opts.store;
    this.clock = opts.clock ?? wallClock;
    this.log = new EventLog(opts.nodeId, def.name, { ...(opts.logDir ? { dir: opts.logDir } : {}) });
    this.core = new ModuleCore({
      module: def,
      nodeId: opts.nodeId,
      now: this.clock.now(),
      ...(persisted ? { persisted } : {}),
    });
  }

  /**
   * Validates the definition (path-precise ConfigError), loads the persisted state, and returns the module (STOP).
   * Throws a ConfigError naming `vip` or `store` when one is missing (a JavaScript caller): there are no
   * in-memory defaults.
   */
  static async create(definition: ModuleDefinition | ResolvedModule, opts: ModuleOptions): Promise<Module> {
    const problems: ConfigProblem[] = [];
    const o = (opts ?? {}) as Partial<ModuleOptions>;
    if (typeof o.vip?.add !== "function" || typeof o.vip.remove !== "function")
      problems.push({ path: "vip", value: o.vip, expected: "a VipDriver (MirrorVip, FarmVip, a module kind's driver; MemoryVipDriver from holdfast/testing in tests)" });
    if (typeof o.store?.load !== "function" || typeof o.store.save !== "function")
      problems.push({ path: "store", value: o.store, expected: "a ModuleStateStore (FileModuleStore; MemoryModuleStore from holdfast/testing in tests)" });
    if (problems.length > 0) throw new ConfigError("module options", problems);
    const def = resolveModule(definition);
    const persisted = await opts.store.load(def.name);
    const m = new Module(def, opts, persisted);
    return m;
  }

  get name(): string {
    return this.definition.name;
  }
  /** The time source of this module's timers (for {@link bindMembership}'s timers). @internal */
  get timers(): Clock {
    return this.clock;
  }
  get status(): ModuleStatus {
    return this.core.status;
  }
  get report(): ModuleReport {
    return this.core.report;
  }
  get persisted(): PersistedModuleState {
    return this.core.persisted;
  }

  // ---- commands (throw CommandRefusedError when refused) --------------------------------------

  /** Runs a command; resolves once its immediate effects are carried out (not when the transition ends). */
  command(cmd: ModuleCommand): Promise<void> {
    try {
      this.feed((c) => c.command(cmd));
    } catch (e) {
      return Promise.reject(e);
    }
    return this.idle();
  }
  start(): Promise<void> {
    return this.command({ type: "start" });
  }
  stop(): Promise<void> {
    return this.command({ type: "stop" });
  }
  restart(): Promise<void> {
    return this.command({ type: "restart" });
  }
  stopstart(): Promise<void> {
    return this.command({ type: "stopstart" });
  }
  swap(): Promise<void> {
    return this.command({ type: "swap" });
  }
  prim(opts: { force?: boolean } = {}): Promise<void> {
    return this.command({ type: "prim", force: opts.force === true });
  }
  second(): Promise<void> {
    return this.command({ type: "second" });
  }
  forcestop(): Promise<void> {
    return this.command({ type: "forcestop" });
  }

  // ---- inputs from the other layers -----------------------------------------------------------

  view(view: MembershipView): void {
    this.feed((c) => c.view(view));
  }
  peerReport(node: string, report: ModuleReport): void {
    this.feed((c) => c.peerReport(node, report));
  }
  checker(verdict: CheckerVerdict): void {
    this.feed((c) => c.checker(verdict));
  }
  /** A peer in the view has been silent longer than it needs to declare this node lost, or is heard again ({@link bindMembership}). */
  peerSilence(node: string, silent: boolean): void {
    this.feed((c) => c.peerSilence(node, silent));
  }
  replication(r: { inSync: boolean }): void {
    this.feed((c) => c.replication(r));
  }
  /** This node's event loop stalled for `gapMs` (the membership measures it): a primary steps down before serving. */
  stalled(gapMs: number): void {
    if (gapMs < (this.opts.stallStepDownMs ?? 400)) return;
    this.feed((c) => c.stalled(gapMs, this.opts.stallHoldMs ?? 1000));
  }

  /**
   * Feeds a module's checkers into it: every verdict goes to the core. Verdicts are sent on change only,
   * so after a (re)start (`resetCheckers`) a checker still failed `interval * fall + timeout` ms later
   * is fed again as a fresh failure: a restart that did not help counts against the budget and escalates.
   * Returns a function that detaches.
   */
  attachCheckers(group: Pick<CheckerGroup, "on" | "off" | "runners">): () => void {
    const onVerdict = (v: CheckerVerdict) => this.checker(v);
    const timers = new Set<() => void>();
    const onReset = () => {
      for (const r of group.runners) {
        if (r.state !== "failed" || r.options.action === "wait") continue;
        const wait = r.options.interval * r.options.fall + r.options.timeout;
        const cancel = this.clock.setTimer(wait, () => {
          timers.delete(cancel);
          const last = r.lastVerdict;
          if (r.state === "failed" && last && !last.ok) this.checker({ ...last, reason: `${last.reason}; still failing after the restart` });
        });
        timers.add(cancel);
      }
    };
    group.on("verdict", onVerdict);
    this.on("resetCheckers", onReset);
    return () => {
      group.off("verdict", onVerdict);
      this.off("resetCheckers", onReset);
      for (const c of timers) c();
      timers.clear();
    };
  }

  /** Resolves when every effect produced so far has been carried out (hooks may still run). */
  idle(): Promise<void> {
    return this.chain;
  }

  /**
   * Resolves with the status once `pred` holds (checked after every state, report or persisted-state
   * change), or rejects after
   * `timeoutMs` with the current status in the message.
   */
  waitFor(pred: ModuleState | ((s: ModuleStatus) => boolean), timeoutMs = 10_000): Promise<ModuleStatus> {
    const test = typeof pred === "string" ? (s: ModuleStatus) => s.state === pred && !s.transient : pred;
    if (test(this.status)) return Promise.resolve(this.status);
    return new Promise((resolve, reject) => {
      const onState = () => {
        const s = this.status;
        if (!test(s)) return;
        cleanup();
        resolve(s);
      };
      const cancel = this.clock.setTimer(timeoutMs, () => {
        cleanup();
        const s = this.status;
        reject(new Error(`${this.name}: condition not met within ${timeoutMs}ms (now ${s.state}${s.transient ? ` -> ${s.next}` : ""}: ${s.reason})`));
      });
      const cleanup = () => {
        cancel();
        this.off("state", onState);
        this.off("advertise", onState);
        this.off("persist", onState);
      };
      this.on("state", onState);
      this.on("advertise", onState);
      this.on("persist", onState);
    });
  }

  /** The event log records as an async iterator (from now on), ending at `close()`. */
  records(): AsyncIterableIterator<ModuleLogRecord> {
    const queue: (ModuleLogRecord | null)[] = [];
    let wake: (() => void) | null = null;
    const sub = {
      push: (r: ModuleLogRecord | null) => {
        queue.push(r);
        wake?.();
        wake = null;
      },
    };
    this.iterators.add(sub);
    const iterators = this.iterators;
    const it: AsyncIterableIterator<ModuleLogRecord> = {
      async next(): Promise<IteratorResult<ModuleLogRecord>> {
        while (queue.length === 0) await new Promise<void>((r) => (wake = r));
        const r = queue.shift() as ModuleLogRecord | null;
        if (r === null) {
          iterators.delete(sub);
          return { done: true, value: undefined };
        }
        return { done: false, value: r };
      },
      async return(): Promise<IteratorResult<ModuleLogRecord>> {
        iterators.delete(sub);
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  /** Stops timers, cancels a running hook (its process group is killed) and ends the iterators. The module is not stopped. */
  async close(): Promise<void> {
    this.closed = true;
    this.cancelTimer?.();
    this.cancelTimer = null;
    this.hookAbort?.abort();
    await this.chain;
    for (const it of this.iterators) it.push(null);
    this.iterators.clear();
  }

  /** Records a decision of the driver layer (e.g. a malformed peer report) in the module's log. */
  note(level: "info" | "warn" | "error", cause: string): void {
    this.record(this.log.event({ type: "decision", level, cause }));
  }

  // ---- plumbing -------------------------------------------------------------------------------

  /**
   * Feeds one input to the core at once (so a refused command throws, and the core's state is current for the
   * caller), and carries its effects out in the order the core produced them, across inputs. A listener that feeds
   * an input while an effect is being carried out (the mirror driver reports `replication` from a `state` event)
   * gets its effects queued behind the rest of the batch in progress, not carried out in the middle of it: done in
   * the middle, the outer batch's remaining `advertise` and `persist` (older reports and states) would be carried
   * out last, and the peers (and the store) would keep a stale report, e.g. SECOND not ready while this node is in
   * sync, with nothing left to advertise the newer one.
   */
  private feed(input: (c: ModuleCore) => ModuleEffect[]): void {
    if (this.closed) return;
    this.pending.push(...this.core.tick(this.clock.now()));
    try {
      this.pending.push(...input(this.core));
    } finally {
      // Also when the input throws (a refused command): what the tick decided is carried out all the same.
      if (!this.draining) this.drain();
    }
  }

  private drain(): void {
    this.draining = true;
    try {
      for (let e = this.pending.shift(); e !== undefined; e = this.pending.shift()) this.carryOut(e);
    } finally {
      this.draining = false;
      this.armTimer();
    }
  }

  private carryOut(e: ModuleEffect): void {
    // Events are delivered at once and in order; effects with I/O are chained.
    switch (e.type) {
      case "emit":
        this.onEvent(e.event);
        break;
      case "advertise":
        this.emit("advertise", e.report);
        break;
      case "resync":
        this.emit("resync", { mode: e.mode, cause: e.cause });
        break;
      case "resetCheckers":
        this.emit("resetCheckers");
        break;
      case "persist": {
        const state = e.state;
        this.emit("persist", state);
        this.chain = this.chain.then(() => this.store.save(this.name, state)).catch((err: unknown) => this.fail(err));
        break;
      }
      case "addVip":
        for (const v of this.definition.vips) {
          this.chain = this.chain.then(() => this.vip.add(v, this.name)).catch((err: unknown) => this.fail(err));
        }
        break;
      case "removeVip":
        for (const v of this.definition.vips) {
          this.chain = this.chain.then(() => this.vip.remove(v, this.name)).catch((err: unknown) => this.fail(err));
        }
        break;
      case "cancelHook":
        // Cancels the running hook and any still queued behind a VIP/persist effect; their results are not reported.
        this.hooksCancelled = this.hooksIssued;
        this.hookAbort?.abort();
        this.hookAbort = null;
        break;
      case "runHook": {
        const eff = e;
        const token = ++this.hooksIssued;
        this.chain = this.chain.then(() => this.launch(eff, token));
        break;
      }
    }
  }

  private launch(e: Extract<ModuleEffect, { type: "runHook" }>, seq: number): void {
    if (seq <= this.hooksCancelled || this.closed) return; // cancelled before it started
    const spec = this.definition.hooks[e.hook];
    const ac = new AbortController();
    this.hookAbort = ac;
    if (spec === undefined) {
      queueMicrotask(() => this.hookEnded(seq, e.hook, { ok: true, detail: "no hook", timedOut: false, cancelled: false, code: null, durationMs: 0, output: [] }));
      return;
    }
    void runHook({
      module: this.name,
      hook: e.hook,
      spec,
      state: e.state,
      nextState: e.nextState,
      reason: e.reason,
      defaultTimeout: this.definition.hookTimeout,
      signal: ac.signal,
      ...(this.opts.killGraceMs !== undefined ? { killGraceMs: this.opts.killGraceMs } : {}),
      ...(this.opts.hookEnv ? { env: this.opts.hookEnv } : {}),
      onOutput: (line, stream) => this.record(this.log.output(e.hook, stream, line)),
    }).then((r) => this.hookEnded(seq, e.hook, r));
  }

  private hookEnded(seq: number, hook: HookName, r: HookResult): void {
    this.emit("hook", hook, r);
    if (seq <= this.hooksCancelled || this.closed) return; // cancelled (forcestop) or closed
    this.hookAbort = null;
    this.feed((c) => c.hookDone(hook, r.ok, r.detail));
  }

  private onEvent(ev: ModuleEvent): void {
    this.record(this.log.event(ev));
    if (ev.type === "state") {
      // The status as of this event (a batch may hold several state changes).
      const status: ModuleStatus = {
        module: this.name,
        state: ev.to,
        ready: ev.ready,
        transient: ev.transient,
        ...(ev.next !== undefined ? { next: ev.next } : {}),
        reason: ev.cause,
      };
      this.emit("state", status, ev);
    }
  }

  private record(r: ModuleLogRecord): void {
    this.emit("record", r);
    for (const it of this.iterators) it.push(r);
  }

  private fail(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.record(this.log.event({ type: "decision", level: "error", cause: `driver: ${e.message}` }));
    if (this.listenerCount("error") > 0) this.emit("error", e);
  }

  private armTimer(): void {
    this.cancelTimer?.();
    this.cancelTimer = null;
    if (this.closed) return;
    const at = this.core.nextDeadline();
    if (at === undefined) return;
    const delay = Math.max(0, at - this.clock.now());
    this.cancelTimer = this.clock.setTimer(delay + 1, () => {
      this.cancelTimer = null;
      this.feed(() => []);
    });
  }

  /** True when this node is primary for a mirror module (PRIM/ALONE) or UP for a farm. */
  get serving(): boolean {
    const s = this.status;
    return s.ready && (isPrimaryState(s.state) || s.state === "UP");
  }
}

/** The part of the membership driver that modules use (the {@link Membership} class fits). */
export type ModuleMembership = Pick<Membership, "view" | "nodeId" | "setMeta" | "peerMeta" | "on" | "off"> &
  Partial<Pick<Membership, "peerSilenceMs" | "settings">>;

/**
 * Connects this node's modules to the membership protocol: each module gets the agreed view and its
 * peers' reports; this node publishes its modules' reports as its heartbeat metadata
 * (`{ modules: { <name>: report } }`, see {@link ModulesMeta}). Reports from the network are validated
 * ({@link decodeModuleReport}); a malformed one is logged and ignored. Returns a function that unbinds.
 */
export function bindMembership(membership: ModuleMembership, modules: readonly Module[]): () => void {
  const reports: Record<string, ModuleReport> = {};
  for (const m of modules) reports[m.name] = m.report;
  const publish = () => membership.setMeta({ modules: { ...reports } });
  const deliver = (node: string, meta: unknown) => {
    if (node === membership.nodeId || typeof meta !== "object" || meta === null) return;
    const theirs = (meta as { modules?: unknown }).modules;
    if (typeof theirs !== "object" || theirs === null) return;
    for (const m of modules) {
      const raw = (theirs as Record<string, unknown>)[m.name];
      if (raw === undefined) continue;
      let report: ModuleReport;
      try {
        report = decodeModuleReport(raw);
      } catch (e) {
        m.note("warn", `ignored malformed report from ${node}: ${(e as Error).message}`);
        continue;
      }
      if (report.module === m.name) m.peerReport(node, report);
    }
  };
  const toView = (v: ModuleMembership["view"]): MembershipView => ({
    epoch: v.epoch,
    members: v.members.map((x) => ({ id: x.id, weight: x.weight })),
  });
  const onView = (e: { view: ModuleMembership["view"] }) => {
    const view = toView(e.view);
    for (const m of modules) m.view(view);
    // Peers that just joined: their latest reports came with their heartbeats.
    for (const x of e.view.members) deliver(x.id, membership.peerMeta(x.id));
  };
  const onMeta = (e: { node: string; meta: unknown }) => deliver(e.node, e.meta);
  // Own stall (SIGSTOP, frozen VM): reported before any heartbeat of the resumed loop is read, so a primary steps down first.
  const onStall = (e: { gapMs: number }) => {
    for (const m of modules) m.stalled(e.gapMs);
  };
  const onAdvertise = new Map<Module, (r: ModuleReport) => void>();
  for (const m of modules) {
    const fn = (r: ModuleReport) => {
      reports[m.name] = r;
      publish();
    };
    onAdvertise.set(m, fn);
    m.on("advertise", fn);
  }
  membership.on("viewChange", onView);
  membership.on("peerMeta", onMeta);
  membership.on("localStall", onStall);
  publish();
  onView({ view: membership.view });
  // Silence of peers still in the view: a peer that has heard nothing from us for its loss timeout declares us lost,
  // whatever our own (possibly raised) timeout says; from lossTimeoutMs - pulseMs of silence on it may do so. The
  // modules hear of it (a mirror primary cut from its witness then steps down as if the peer had left the view).
  let stopSilence = () => {};
  const silenceOf = membership.peerSilenceMs?.bind(membership);
  const timing = membership.settings?.timing;
  if (silenceOf && timing) {
    const after = timing.lossTimeoutMs - timing.pulseMs;
    const silent = new Set<string>();
    const poll = () => {
      for (const x of membership.view.members) {
        if (x.id === membership.nodeId) continue;
        const now = silenceOf(x.id) > after;
        if (now === silent.has(x.id)) continue;
        if (now) silent.add(x.id);
        else silent.delete(x.id);
        for (const m of modules) m.peerSilence(x.id, now);
      }
      for (const id of [...silent]) if (!membership.view.members.some((x) => x.id === id)) silent.delete(id);
    };
    // On the modules' clock (virtual time in simulations), re-armed after each poll.
    const clock = modules[0]?.timers;
    const setTimer: Clock["setTimer"] =
      clock !== undefined && clock !== wallClock
        ? (ms, fn) => clock.setTimer(ms, fn)
        : (ms, fn) => {
            const h = setTimeout(fn, ms);
            h.unref?.(); // never what keeps a process alive
            return () => clearTimeout(h);
          };
    let cancel: () => void = () => {};
    let stopped = false;
    const arm = () => {
      cancel = setTimer(timing.tickMs, () => {
        if (stopped) return;
        poll();
        arm();
      });
    };
    arm();
    stopSilence = () => {
      stopped = true;
      cancel();
    };
  }
  return () => {
    stopSilence();
    membership.off("viewChange", onView);
    membership.off("peerMeta", onMeta);
    membership.off("localStall", onStall);
    for (const [m, fn] of onAdvertise) m.off("advertise", fn);
  };
}
