/**
 * MirrorDriver: ties a mirror module (the engine's states and hooks) to the replication data path
 * ({@link FileReplicator}) on one node.
 *
 * ```ts
 * const driver = new MirrorDriver({ nodeId: "n1", backingDir: "/srv/db.data", mountPoint: "/srv/db", keyFile,
 *   listen: { host: "198.18.0.10", port: 7790 }, peer: { host: "198.18.0.11", port: 7790 } });
 * const db = await Module.create({ name: "db", kind: "mirror", vips: ["198.18.0.100/24"],
 *   hooks: driver.hooks({ start_prim: startDb, stop_prim: stopDb }), mirror: { defaultPrimary: "n1" } },
 *   { nodeId: "n1", vip: new MirrorVip() });
 * driver.bind(db, membership);
 * ```
 *
 * What the driver does, by role:
 * - **Primary** (`start_prim`, which the engine runs after adding the VIP): stops this node's secondary helper,
 *   then starts the primary helper, which mounts the replicated directory, and only then runs the application's
 *   `start_prim`. The application finds its files at {@link mountPath} (or runs inside the mount's namespace with
 *   {@link commandInMount}). The first resync pass towards the peer is `log` after a handover from a live peer
 *   (swap, `second`, a checker's failover: the old primary stopped its application, every write was acked, so
 *   only this node's extent log differs) and `checksum` otherwise (after a failover the old primary may hold
 *   writes it applied but never got acked: a log of this node's changes would not undo them; also first start
 *   and `prim --force`).
 * - **Secondary** (`start_second`): stops the primary helper if it runs (the VIP is already gone), starts the
 *   secondary helper, and reports `module.replication({ inSync })` from its events: in sync only when a resync
 *   pass finished on the current stream (`consistent`), out of sync when a pass starts; out of sync when the
 *   primary's stream ended and, `disconnectGraceMs` later, the primary is still a member of the view (it went on
 *   without this node). A stream that ended because the primary died is not reported: the failover must still be
 *   possible. When the primary comes back into the view after it was out of it (a partition), the stream is
 *   suspect (the primary may have gone on alone without noticing that its old stream is dead, or noticed and
 *   logged writes this node has not seen): this node reports out of sync and restarts its secondary helper, so
 *   the primary reconnects and resyncs before this node is in sync again.
 * - **Stop order**: the application's `stop_prim` (hook) -> VIP removed (engine) -> unmount (`poststop`, STOP,
 *   or `start_second`). The mount is never taken away under a running application. A primary that only leaves
 *   the role (WAIT: a swap in progress, a checker's `wait`, a cut-off node) keeps its mount, with no application,
 *   so its stream to the peer stays up until the peer has taken over (the peer then knows that nothing was logged
 *   past it and resyncs by log); if the handover fails, the engine takes the role back on the same mount. When
 *   it becomes secondary, its extent log is discarded: the new primary's copy wins.
 * - **Never primary on stale data**: a node whose secondary helper recorded an unfinished resync (state file
 *   `inconsistent`) refuses to mount as primary unless the transition was caused by `prim --force`; the
 *   engine's own rule (not up to date -> no primary without force) comes first, this is the data path's check.
 *
 * Resync on reintegration is the helper's: when the peer comes back as secondary, the primary helper connects and
 * resyncs while the application keeps writing; progress and byte counters are re-emitted here.
 *
 * The secondary learns that its primary went on alone (degraded) from the end of the stream, `disconnectGraceMs`
 * later, or from the primary leaving the view; a cut that TCP does not notice (nothing in flight) only when the
 * primary reconnects. So the primary does not acknowledge alone while its peer is in the view and still counts as
 * an in-sync secondary (the module PRIM): no permit is renewed then (see {@link mayActAlone}); the last one
 * lapses at most `permitMs` after the module became PRIM, so a stream that breaks later gets no write
 * acknowledged alone until the peer's report (or its departure from the view) says it is no longer in sync.
 *
 * Permit (fencing; see {@link MirrorDriverOptions.permitMs}): the primary helper acknowledges writes without the
 * secondary's ack (degraded) only under a permit this driver renews every `permitMs / 4`, and only while the
 * module is primary (or becoming it) and may stay primary alone (the peer in the view and known out of sync, or
 * the peer out of the view and the engine's split-brain rule: see {@link mayActAlone}). A driver that freezes stops renewing by itself; after a stall of
 * its own (a renewal tick late by more than the permit) it renews again only once the engine has had `permitMs`
 * to see the world as it is now, so a primary resumed after its peer took over does not acknowledge alone.
 */
import { existsSync, readFileSync, renameSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { HoldfastError } from "../core/errors.js";
import type { FunctionHook, HookContext, HookFunction, HookSpec, ScriptHook } from "../core/module/config.js";
import { isPrimaryState, type HookName, type ModuleEvent, type ModuleStatus } from "../core/module/types.js";
import { runHook } from "../runtime/hooks.js";
import type { Module } from "../runtime/module.js";
import {
  FileReplicator,
  type FileReplicatorEvents,
  type FileReplicatorOptions,
  type ReplicatorMetrics,
  type ResyncMode,
} from "./FileReplicator.js";
import { createFileReplicator, type ReplicatorEngine } from "./jsfuse/index.js";
import { markerAt, markerText, MARKER_FILE, mountMarker, removeMarkers } from "./marker.js";

/** A refusal or failure of the mirror driver. Codes: `HOLDFAST_MIRROR_STALE_DATA`, `HOLDFAST_MIRROR_NOT_PRIMARY`. */
export class MirrorError extends HoldfastError {
  constructor(code: "HOLDFAST_MIRROR_STALE_DATA" | "HOLDFAST_MIRROR_NOT_PRIMARY", message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** What the driver needs of a replicator ({@link FileReplicator} fits; tests pass a fake). */
export interface ReplicatorLike {
  readonly state: string;
  readonly consistent: boolean | undefined;
  readonly pid: number | undefined;
  start(): Promise<void>;
  stop(timeoutMs?: number): Promise<void>;
  resync(mode: ResyncMode): void;
  metrics(): ReplicatorMetrics;
  mountPath(rel?: string): string;
  commandInMount(argv: readonly string[]): [string, ...string[]];
  /** Grants the helper a permit to acknowledge writes alone for `ms` (FileReplicator; fakes may omit it). */
  renewPermit?(ms: number): void;
  on<E extends keyof FileReplicatorEvents>(event: E, fn: (...args: FileReplicatorEvents[E]) => void): unknown;
  removeAllListeners(): unknown;
}

/** What the driver needs of membership: who is in the view, and its changes (the {@link Membership} class fits). */
export interface MirrorMembership {
  readonly view: { readonly members: readonly { readonly id: string }[] };
  on(event: "viewChange", fn: (e: { view: { readonly members: readonly { readonly id: string }[] } }) => void): unknown;
  off(event: "viewChange", fn: (e: { view: { readonly members: readonly { readonly id: string }[] } }) => void): unknown;
}

/** A replication endpoint: IPv4 or IPv6 literal and TCP port. */
export interface MirrorEndpoint {
  readonly host: string;
  readonly port: number;
}

/** Options passed through to each {@link FileReplicator} (see its options for units and defaults). */
export interface MirrorReplicatorTuning {
  readonly ackTimeoutMs?: number;
  readonly reconnectMs?: number;
  readonly threads?: number;
  readonly statsIntervalMs?: number;
  readonly mountNamespace?: "private" | "host";
  readonly helperPath?: string;
  readonly extentLog?: string;
  readonly stateFile?: string;
  readonly startTimeoutMs?: number;
  /**
   * Further {@link FileReplicator} options passed as they are to both roles' replicators (for options the
   * replicator grows, e.g. encryption or include/exclude patterns); the replicator validates them. The options
   * above and the driver's own (role, directories, endpoints, key) take precedence.
   */
  readonly extra?: Readonly<Record<string, unknown>>;
}

export interface MirrorDriverOptions {
  /** This node's id, as in the membership view. */
  readonly nodeId: string;
  /** The real files on this node (any directory; not inside `mountPoint`). */
  readonly backingDir: string;
  /** Where the application sees the replicated directory while this node is primary (an existing empty directory). */
  readonly mountPoint: string;
  /** Shared replication key file (same bytes on both nodes, see `generateReplicationKey`). */
  readonly keyFile: string;
  /** Where this node's secondary helper listens for the primary. */
  readonly listen: MirrorEndpoint;
  /** The peer's secondary endpoint (where this node connects while primary). */
  readonly peer: MirrorEndpoint;
  /** Passed to the replicators. */
  readonly replicator?: MirrorReplicatorTuning;
  /**
   * Secondary: how long after the primary's stream ended, with the primary still in the view, this node reports
   * itself out of sync, ms. Default 3000: longer than the membership's detection of a dead node (about 1 s on the
   * LAN preset), so a primary that died is seen as gone first and the failover stays possible; a primary that is
   * alive and went on alone (degraded: it logs what this node misses) has made this node's copy stale.
   */
  readonly disconnectGraceMs?: number;
  /**
   * Failover only (this node takes over a primary that left the view): mount and start the application no sooner
   * than this long after the peer left the view, ms. Default 0. With a witness, set it above the time a cut-off
   * primary needs to notice that it is cut off and begin leaving the role (its split-brain check's interval plus
   * the spread of the two nodes' loss detection, e.g. 300 ms for a 100 ms check): then the two nodes never run the
   * application as primary at the same time. It counts from the departure, not from the engine's decision: with the
   * witness arbiter the lease wait (about a ttl) has usually covered it already and it costs nothing; it matters
   * when this node held the lease before the cut (granted while the primary did not hold it, e.g. after the
   * witness restarted), so that it may take over as soon as it sees the loss, possibly before the primary does.
   */
  readonly failoverFenceMs?: number;
  /**
   * The primary helper's permit to acknowledge writes without the secondary (degraded, ALONE), ms; renewed every
   * `permitMs / 4` while this node may be primary alone. Default 450 = 0.75 x the LAN preset's `lossTimeoutMs`
   * (600): set 0.75 x your membership's `lossTimeoutMs`. Why it is safe: acknowledgements alone end at most
   * `permitMs` after this node's last renewal, which came before it froze or was cut off; the peer detects the
   * loss at the earliest `lossTimeoutMs - pulseMs` after this node went silent (500 ms on LAN) and then stops
   * its secondary helper at once (the `failoverFenceMs` wait comes after that stop, before the mount: it does
   * not extend the window in which this node's acks still reach the peer's copy). So the condition is
   * `permitMs < lossTimeoutMs - pulseMs` (the presets have `pulseMs <= lossTimeoutMs / 6`, so 0.75 x leaves
   * >= 50 ms on LAN); 1.5 x `lossTimeoutMs` (900) would leave a 400 ms window after the peer's secondary
   * stopped in which a primary resumed from a 0.5-0.9 s freeze could acknowledge writes alone. Renewals every
   * `permitMs / 4` tolerate two late ticks of a busy event loop; a longer stall of this process blocks writes
   * only while degraded (replies acked by the secondary never need the permit). 0 disables the permit
   * (`permit: "always"`: unsafe for HA).
   */
  readonly permitMs?: number;
  /**
   * The longest permit (ms) this node may grant now, asked at every renewal; the permit renewed is
   * min(`permitMs`, this), none when it is <= 0. With the witness arbiter, pass its lease's budget
   * (`ArbiterProbe.permitBudgetMs`, the split-brain checker's `onProbe`): the permit then always ends before the
   * witness can grant the lease to the peer, whatever the renewals, stalls or membership view (src/checkers/arbiter.ts,
   * timing chain point 1). It also applies while the peer is in view: with an arbiter, writes acked alone need the lease.
   */
  readonly permitCap?: () => number;
  /** Extra time granted to `start_prim` for the helper's start on top of the application's timeout, ms. Default 15000. */
  readonly helperStartMs?: number;
  /**
   * Extra environment of the script hooks passed to {@link MirrorDriver.hooks} (e.g. `HOLDFAST_NODE`). Those
   * scripts also get `HOLDFAST_MODULE`, `HOLDFAST_HOOK`, `HOLDFAST_STATE`, `HOLDFAST_NEXT_STATE`,
   * `HOLDFAST_REASON` (as the engine's own script hooks) and `HOLDFAST_MOUNT` (the mount point). Default none.
   */
  readonly hookEnv?: Readonly<Record<string, string>>;
  /** Sink for one-line log messages (also emitted as `log` events). */
  readonly log?: (line: string) => void;
  /**
   * Guard the mount point in this process's mount namespace with a read-only marker (src/mirror/marker.ts: a
   * small tmpfs holding `HOLDFAST-NOT-HERE`) whenever a write there would not be replicated: while this node is
   * secondary, and while it is primary with the mount in the helper's private namespace. Removed when the data
   * path stops (module STOP, {@link MirrorDriver.close}) and before a `host`-namespace mount; a marker left by a
   * crashed run is removed before the next one is mounted ({@link MirrorDriver.removeStaleMarker}). Needs
   * CAP_SYS_ADMIN; a marker that cannot be mounted is an `error` event, not a failed start. Default false (the
   * host's mirror kind, i.e. the daemon, turns it on).
   */
  readonly marker?: boolean;
  /**
   * The primary's data path: `native` (the compiled helper), `js` (the JavaScript FUSE engine) or `auto`
   * (default: the helper when it runs here, else the JS engine); the secondary is always the helper. Chosen by
   * `createFileReplicator` at each start of a helper, its choice logged in the module log.
   */
  readonly engine?: ReplicatorEngine;
  /** Replicator factory (tests). Default: `createFileReplicator` with {@link engine}. */
  readonly createReplicator?: (options: FileReplicatorOptions) => ReplicatorLike;
}

/** Typed events of the driver. */
export interface MirrorDriverEvents {
  /** The data path's role on this node changed. `initialSync`: the primary's first resync pass. */
  role: [{ role: "primary" | "secondary" | "none"; initialSync?: ResyncMode; reason: string }];
  /** Secondary: what this node reported to the module (`module.replication`). */
  sync: [{ inSync: boolean; reason: string }];
  /** Primary: replication stopped (no secondary, or it stopped answering); changes go to the extent log. */
  degraded: [{ reason: string; logged: number }];
  /** Primary: a resync pass started. */
  resyncStart: [{ mode: ResyncMode; files: number; totalBytes: number }];
  /** Primary: resync progress. */
  resyncProgress: [{ bytes: number; totalBytes: number; percent: number }];
  /** Primary: the secondary is consistent; `resyncBytes` counts the data bytes sent by resync passes so far. */
  synced: [{ mode: ResyncMode; resyncBytes: number }];
  /** Primary: fresh counters. */
  metrics: [ReplicatorMetrics];
  /** One log line. */
  log: [string];
  /** A failure of the data path (the helper died, a peer was refused, ...). */
  error: [Error];
}

type AppHook = HookFunction | FunctionHook;

/**
 * Where the replicated directory is mounted while this node is primary ({@link MirrorDriver.mountNamespace}):
 * `private`: only inside the mount namespace of the helper `pid` (`nsenter --mount=/proc/<pid>/ns/mnt`); `host`:
 * at `mountPoint` in this process's namespace.
 */
export type MountNamespaceInfo = { readonly mode: "private"; readonly pid: number; readonly mountPoint: string } | { readonly mode: "host"; readonly mountPoint: string };

/** The secondary helper's state file default (as FileReplicator computes it). */
function sideFile(backingDir: string, suffix: string): string {
  return join(dirname(backingDir), `.${basename(backingDir)}.${suffix}`);
}

export class MirrorDriver extends EventEmitter<MirrorDriverEvents> {
  readonly options: MirrorDriverOptions;
  private prim: ReplicatorLike | undefined;
  private sec: ReplicatorLike | undefined;
  private chain: Promise<void> = Promise.resolve();
  private module: Module | undefined;
  private membership: MirrorMembership | undefined;
  private graceTimer: ReturnType<typeof setTimeout> | undefined;
  private lastStatus: ModuleStatus | undefined;
  private lastMetrics: ReplicatorMetrics | undefined;
  private unbinders: (() => void)[] = [];
  /** Secondary: a resync finished on the current stream and nothing since said otherwise. */
  private inSyncBelief = false;
  /** Primary: the permit renewal timer, the last tick (monotonic ms) and the end of a post-stall quarantine. */
  private permitTimer: ReturnType<typeof setInterval> | undefined;
  private permitLastTick = 0;
  private permitQuarantineUntil = 0;
  private permitRefused = false;
  /** Secondary: the peer left the view since the stream was established. */
  private suspect = false;
  /** Secondary taking over: whether the stream was up and in sync, with the peer alive, when the engine decided. */
  private handoverSnapshot: boolean | undefined;
  /**
   * The transition in progress towards primary was caused by `prim --force` (its state event's `forced`): the next
   * start_prim may mount a copy whose resync did not finish. Taken (and cleared) by that start_prim, so a local
   * restart after it, which may bring no new state event, is not forced.
   */
  private forcedPrimary = false;
  /** The engine asked for a checksum resync (the secondary diverged) before the primary helper ran: its first pass. */
  private checksumPending = false;
  /** When the peer last left the view (monotonic ms), and whether it is in the view now: the failover fence's start. */
  private peerLeftAt: number | undefined;
  private peerWasIn = false;
  /** A marker this driver mounted is over the mount point (see {@link MirrorDriverOptions.marker}). */
  private markerUp = false;

  constructor(options: MirrorDriverOptions) {
    super();
    this.options = options;
  }

  /** The role the data path has on this node now. */
  get role(): "primary" | "secondary" | "none" {
    return this.prim ? "primary" : this.sec ? "secondary" : "none";
  }

  /** The running primary replicator, if any. */
  get primary(): ReplicatorLike | undefined {
    return this.prim;
  }

  /** The running secondary replicator, if any. */
  get secondary(): ReplicatorLike | undefined {
    return this.sec;
  }

  /** Latest primary counters (kept after the primary stops). */
  metrics(): ReplicatorMetrics | undefined {
    return this.prim?.metrics() ?? this.lastMetrics;
  }

  /** Where this process reaches `rel` inside the replicated mount. Throws unless this node is primary. */
  mountPath(rel = ""): string {
    return this.requirePrimary("mountPath").mountPath(rel);
  }

  /** The argv that runs `argv` inside the mount's namespace (see {@link FileReplicator.commandInMount}). */
  commandInMount(argv: readonly string[]): [string, ...string[]] {
    return this.requirePrimary("commandInMount").commandInMount(argv);
  }

  /**
   * Where the replicated directory is mounted now (this node primary), to run a command beside the application:
   * `holdfast exec` uses it. Throws {@link MirrorError} `HOLDFAST_MIRROR_NOT_PRIMARY` when this node is not primary
   * or its helper is restarting.
   */
  mountNamespace(): MountNamespaceInfo {
    const p = this.requirePrimary("mountNamespace");
    const mountPoint = this.options.mountPoint;
    if (!this.privateNs()) return { mode: "host", mountPoint };
    if (p.pid === undefined) throw new MirrorError("HOLDFAST_MIRROR_NOT_PRIMARY", "mountNamespace: the primary helper is not running (restarting): try again");
    return { mode: "private", pid: p.pid, mountPoint };
  }

  /**
   * Removes markers left over `mountPoint` by a crashed run (and by this one); returns how many. Call before
   * the module starts (the host's mirror kind does); {@link MirrorDriverOptions.marker} drivers also do it
   * before mounting a marker of their own.
   */
  removeStaleMarker(): number {
    this.markerUp = false;
    return removeMarkers(this.options.mountPoint);
  }

  /** Runs a resync pass now (`fullsync` is `resync("full")`; `checksum` when the log cannot be trusted). */
  resync(mode: ResyncMode): void {
    this.requirePrimary("resync").resync(mode);
    this.note(`resync ${mode} requested`);
  }

  /** The secondary helper's record of its copy: consistent, inconsistent (a resync did not finish), or unknown. */
  localCopy(): "consistent" | "inconsistent" | "unknown" {
    const f = this.stateFile();
    if (!existsSync(f)) return "unknown";
    const s = readFileSync(f, "utf8").trim();
    return s === "consistent" || s === "inconsistent" ? s : "unknown";
  }

  /**
   * The module's hooks with the data path woven in: pass the result as the definition's `hooks`. The
   * application's own hooks run where the comment of this file says. Script hooks (a path, or `{ path, args,
   * timeout }`) run inside the mount's namespace while this node is primary (see {@link commandInMount}), so an
   * application that `start_prim` launches sees the replicated directory at the mount point; with the
   * environment of {@link MirrorDriverOptions.hookEnv} and the engine's `HOLDFAST_*` variables.
   */
  hooks(app: Partial<Record<HookName, HookSpec>> = {}, defaultTimeoutMs = 60_000): Partial<Record<HookName, HookSpec>> {
    // Script hooks become functions that run the script inside the mount's namespace while this node is primary
    // (so the application it starts sees the replicated directory), and as the engine would otherwise.
    const asFn = (name: HookName, h: HookSpec | undefined): AppHook | undefined => {
      if (h === undefined || typeof h === "function" || (typeof h === "object" && "fn" in h)) return h;
      return { fn: this.scriptHook(name, h, defaultTimeoutMs), timeout: (typeof h === "string" ? undefined : h.timeout) ?? defaultTimeoutMs };
    };
    const fnOf = (h: AppHook | undefined): HookFunction | undefined => (h === undefined ? undefined : typeof h === "function" ? h : h.fn);
    const timeoutOf = (h: AppHook | undefined): number => (h !== undefined && typeof h !== "function" && h.timeout !== undefined ? h.timeout : defaultTimeoutMs);
    const extra = this.options.helperStartMs ?? 15_000;
    const out: Partial<Record<HookName, HookSpec>> = {};
    for (const [k, v] of Object.entries(app) as [HookName, HookSpec | undefined][]) {
      const f = asFn(k, v);
      if (f !== undefined) out[k] = f;
    }
    const fns = out as Partial<Record<HookName, AppHook>>;
    const userStartPrim = fnOf(fns.start_prim);
    out.start_prim = {
      fn: async (ctx) => {
        await this.becomePrimary(ctx);
        await userStartPrim?.(ctx);
      },
      timeout: timeoutOf(fns.start_prim) + extra,
    };
    const userStartSecond = fnOf(fns.start_second);
    out.start_second = {
      fn: async (ctx) => {
        await this.becomeSecondary(ctx);
        await userStartSecond?.(ctx);
      },
      timeout: timeoutOf(fns.start_second) + extra,
    };
    const userPoststop = fnOf(fns.poststop);
    out.poststop = {
      fn: async (ctx) => {
        await userPoststop?.(ctx);
        await this.serial(() => this.stopAll(ctx.reason));
      },
      timeout: timeoutOf(fns.poststop) + extra,
    };
    return out;
  }

  /**
   * A script hook as a function: runs `spec` (with the engine's arguments and environment) inside the mount's
   * namespace when this node is primary, plainly otherwise; its output goes to the module's log, a failure
   * (exit code, timeout, signal) throws with the runner's detail.
   */
  private scriptHook(name: HookName, spec: string | ScriptHook, defaultTimeoutMs: number): HookFunction {
    return async (ctx) => {
      const path = typeof spec === "string" ? spec : spec.path;
      const args = typeof spec === "string" ? [] : [...(spec.args ?? [])];
      const timeout = (typeof spec === "string" ? undefined : spec.timeout) ?? defaultTimeoutMs;
      const p = this.prim;
      const argv: [string, ...string[]] = p && p.pid !== undefined ? p.commandInMount([path, ...args]) : [path, ...args];
      const r = await runHook({
        module: ctx.module,
        hook: name,
        spec: { path: argv[0], args: argv.slice(1), timeout },
        state: ctx.state,
        nextState: ctx.nextState,
        reason: ctx.reason,
        defaultTimeout: timeout,
        env: { ...(this.options.hookEnv ?? {}), HOLDFAST_MOUNT: this.options.mountPoint },
        signal: ctx.signal,
        onOutput: (line) => ctx.log(line),
      });
      if (!r.ok) throw new Error(`${path}${p ? " (in the mount namespace)" : ""}: ${r.detail}`);
    };
  }

  /**
   * Follows `module`'s states (unmount once the module settles outside the primary role, re-report sync when it
   * settles in SECOND); `membership` tells whether the peer is still alive. Returns a function that unbinds.
   */
  bind(module: Module, membership?: MirrorMembership): () => void {
    this.module = module;
    this.membership = membership;
    const onState = (s: ModuleStatus, ev?: Extract<ModuleEvent, { type: "state" }>): void => this.onModuleState(s, ev?.forced === true);
    const onPersist = (p: { upToDate: boolean }): void => {
      // The primary moved its generation on (it saw this node not ready for a moment) after this node adopted
      // it: the engine now calls the copy stale. If the stream that made it consistent is still the one in
      // use, it is in sync: say so again (the engine adopts the primary's generation on an in-sync report).
      const st = module.status;
      if (!p.upToDate && st.state === "SECOND" && !st.transient && this.inSyncBelief && this.sec) this.report(true, "still in sync on the same stream");
    };
    const onView = (e: { view: { readonly members: readonly { readonly id: string }[] } }): void => this.onView(e.view.members);
    const onResync = (r: { mode: ResyncMode; cause: string }): void => this.onResyncRequest(r.mode, r.cause);
    module.on("state", onState);
    module.on("persist", onPersist);
    module.on("resync", onResync);
    membership?.on("viewChange", onView);
    const un = () => {
      module.off("state", onState);
      module.off("persist", onPersist);
      module.off("resync", onResync);
      membership?.off("viewChange", onView);
      if (this.module === module) this.module = undefined;
    };
    this.unbinders.push(un);
    return un;
  }

  /** Resolves when the helper operations queued so far (starts, stops, restarts) are done. */
  idle(): Promise<void> {
    return this.chain;
  }

  /** Stops every helper (primary: unmount). For shutdown after the module stopped. */
  async close(): Promise<void> {
    for (const u of this.unbinders.splice(0)) u();
    await this.serial(() => this.stopAll("driver closed"));
  }

  // ---- transitions -------------------------------------------------------------------------------

  private async becomePrimary(ctx: HookContext): Promise<void> {
    const forced = this.forcedPrimary;
    this.forcedPrimary = false;
    await this.serial(async () => {
      if (this.prim) return; // a restart of the primary role: the mount stays
      const wasSecond = this.sec;
      // A handover: when the engine decided, the peer was alive and our stream from it was up after a finished
      // resync, so nothing had been logged past this node; its app was already stopped (it yielded), so nothing
      // was written since. (By now its stream may be gone: it unmounts as soon as it sees this node take over.)
      const handover = !!wasSecond && this.handoverSnapshot === true;
      this.handoverSnapshot = undefined;
      if (this.sec) await this.stopSecondary("becoming primary");
      const copy = this.localCopy();
      if (copy === "inconsistent" && !forced) {
        throw new MirrorError(
          "HOLDFAST_MIRROR_STALE_DATA",
          `${this.options.nodeId}: local copy is inconsistent (a resync from the peer did not finish): refusing to mount as primary without prim --force`,
        );
      }
      // A secondary that diverged (a split-brain loser: it was primary on its own line of changes) is resynced by
      // checksum, never by log: this node's extent log does not describe its changes (the engine's `resync` effect).
      const initialSync: ResyncMode = handover && !forced && !this.checksumPending ? "log" : "checksum";
      this.checksumPending = false;
      const fence = this.options.failoverFenceMs ?? 0;
      if (wasSecond && !this.peerInView() && fence > 0) {
        const since = this.peerLeftAt === undefined ? 0 : performance.now() - this.peerLeftAt;
        const wait = Math.ceil(fence - since);
        if (wait > 0) {
          this.note(`failover: waiting ${wait} ms (${fence} ms after the peer left the view) for a cut-off primary to leave the role`);
          await new Promise((r) => setTimeout(r, wait));
        }
      }
      const o = this.options;
      const t = o.replicator ?? {};
      const rep = this.create({
        ...(t.extra ?? {}),
        role: "primary",
        backingDir: o.backingDir,
        mountPoint: o.mountPoint,
        keyFile: o.keyFile,
        peer: { host: o.peer.host, port: o.peer.port },
        initialSync,
        ...(t.ackTimeoutMs !== undefined ? { ackTimeoutMs: t.ackTimeoutMs } : {}),
        ...(t.reconnectMs !== undefined ? { reconnectMs: t.reconnectMs } : {}),
        ...(t.threads !== undefined ? { threads: t.threads } : {}),
        ...(t.statsIntervalMs !== undefined ? { statsIntervalMs: t.statsIntervalMs } : {}),
        ...(t.mountNamespace !== undefined ? { mountNamespace: t.mountNamespace } : {}),
        ...(t.helperPath !== undefined ? { helperPath: t.helperPath } : {}),
        ...(t.extentLog !== undefined ? { extentLog: t.extentLog } : {}),
        ...(t.startTimeoutMs !== undefined ? { startTimeoutMs: t.startTimeoutMs } : {}),
        permit: (o.permitMs ?? 450) > 0 ? "renewed" : "always",
      });
      rep.on("ready", (e) => this.note(`primary helper ready (pid ${e.pid}${e.uncleanStart ? ", previous run crashed: first resync by checksum" : ""})`));
      rep.on("degraded", (e) => {
        this.note(`replication degraded: ${e.reason} (${e.logged} operations logged)`);
        this.emit("degraded", e);
      });
      rep.on("connected", () => this.note("secondary connected: resync"));
      rep.on("resyncStart", (e) => {
        this.note(`resync ${e.mode}: ${e.files} files, ${e.totalBytes} bytes to examine`);
        this.emit("resyncStart", e);
      });
      rep.on("resyncProgress", (e) => this.emit("resyncProgress", e));
      rep.on("synced", (e) => {
        // The byte counters come with the helper's next stats line: report them with it (or the last known).
        const done = (m: ReplicatorMetrics) => {
          this.note(`secondary in sync (resync ${e.mode}, ${m.resyncBytes} bytes sent by resync passes)`);
          this.emit("synced", { mode: e.mode, resyncBytes: m.resyncBytes });
        };
        const w = (rep as Partial<Pick<FileReplicator, "waitFor">>).waitFor;
        if (typeof w !== "function") return done(rep.metrics());
        (w.call(rep, "metrics", 5000) as Promise<ReplicatorMetrics>).then(done, () => done(rep.metrics()));
      });
      rep.on("metrics", (m) => {
        this.lastMetrics = m;
        this.emit("metrics", m);
      });
      rep.on("authFailed", (e) => this.onHandshakeFailed(e));
      rep.on("error", (e) => this.fail(e));
      rep.on("exit", (e) => {
        if (!e.expected) this.note(`primary helper exited (code ${e.code}, signal ${e.signal})${e.restarting ? ", restarting" : ""}`);
      });
      // The path in this namespace: a read-only marker while the mount lives in the helper's namespace, nothing
      // over it when the mount comes here. The compiled helper's namespace copies the marker and mounts over it, so
      // it goes up first (the path is never writable meanwhile); fuse-native (the JS engine) refuses a mount point
      // that is a mount of its own or not empty, so there it goes up once the mount is ready.
      const privateNs = this.privateNs();
      const markerFirst = (rep as { engine?: unknown }).engine !== "js";
      this.guard(privateNs && markerFirst);
      await rep.start();
      if (privateNs && !markerFirst) this.guard(true);
      this.prim = rep;
      this.startPermitRenewal(rep);
      // This node's copy is now the reference: a later start as primary must not be refused for a resync it
      // received (and may not have finished) as a secondary long ago.
      this.writeLocalCopy("consistent");
      this.emit("role", { role: "primary", initialSync, reason: ctx.reason });
      this.note(`primary: mounted ${o.mountPoint} (first resync: ${initialSync}; ${ctx.reason})`);
    });
  }

  private async becomeSecondary(ctx: HookContext): Promise<void> {
    await this.serial(async () => {
      if (this.prim) await this.stopPrimary("becoming secondary");
      // Writes here reach no copy: the primary's node holds the data (after the unmount: never over a host mount).
      this.guard(true);
      // What this node logged as a primary is void now: the peer's copy wins and its resync overwrites ours. Left
      // in place, the records would be replayed the next time this node is primary.
      this.discardExtentLog();
      if (this.sec && !this.suspect) return; // already listening (e.g. back from WAIT)
      if (this.sec) await this.stopSecondary("stream suspect after a partition: a fresh stream and resync");
      await this.startSecondaryHelper(ctx.reason);
    });
  }

  /** Starts the secondary helper (the caller holds the serial chain and has stopped any other helper). */
  private async startSecondaryHelper(reason: string): Promise<void> {
    const o = this.options;
    const t = o.replicator ?? {};
    const rep = this.create({
      ...(t.extra ?? {}),
      role: "secondary",
      backingDir: o.backingDir,
      keyFile: o.keyFile,
      listen: { host: o.listen.host, port: o.listen.port },
      ...(t.helperPath !== undefined ? { helperPath: t.helperPath } : {}),
      ...(t.stateFile !== undefined ? { stateFile: t.stateFile } : {}),
      ...(t.startTimeoutMs !== undefined ? { startTimeoutMs: t.startTimeoutMs } : {}),
    });
    rep.on("connected", () => {
      this.cancelGrace();
      this.inSyncBelief = false; // a new stream always starts with a resync pass
      this.note("primary connected");
    });
    rep.on("disconnected", (e) => {
      this.inSyncBelief = false;
      this.note(`primary's stream ended (${e.reason})`);
      this.armGrace();
    });
    rep.on("consistency", (e) => {
      this.inSyncBelief = e.consistent;
      if (e.consistent) this.suspect = false;
      this.report(e.consistent, e.consistent ? "resync finished: copy consistent" : "resync started: copy inconsistent");
    });
    rep.on("authFailed", (e) => this.onHandshakeFailed(e));
    rep.on("error", (e) => {
      // An operation the secondary could not apply (ENOSPC, EIO...) or a helper failure: its copy misses an acked
      // write from now on. Say so at once (not at the next resync start or after the grace): a failover in that
      // window would start from a copy without it.
      if (this.sec === rep || this.sec === undefined) {
        this.inSyncBelief = false;
        const st = this.module?.status;
        if (st?.state === "SECOND") this.report(false, `secondary helper error: ${(e as Error).message}`);
      }
      this.fail(e);
    });
    rep.on("exit", (e) => {
      if (!e.expected) this.note(`secondary helper exited (code ${e.code}, signal ${e.signal})${e.restarting ? ", restarting" : ""}`);
    });
    this.inSyncBelief = false;
    this.suspect = false;
    await rep.start();
    this.sec = rep;
    this.emit("role", { role: "secondary", reason });
    this.note(`secondary: listening on ${o.listen.host}:${o.listen.port} (${reason})`);
  }

  /** The engine's `resync` effect (primary): the next pass towards the secondary uses `mode`. */
  private onResyncRequest(mode: ResyncMode, cause: string): void {
    const prim = this.prim;
    if (!prim) {
      // Not mounted yet (start_prim in progress, or queued): the first pass is a checksum one.
      this.checksumPending = true;
      this.note(`resync ${mode} on the next start as primary (${cause})`);
      return;
    }
    this.note(`resync ${mode} requested by the engine (${cause})`);
    try {
      prim.resync(mode);
    } catch (e) {
      this.fail(e);
    }
  }

  private onModuleState(s: ModuleStatus, forced = false): void {
    this.lastStatus = s;
    if (s.transient) {
      this.forcedPrimary = forced && isPrimaryState(s.next);
      if (s.state === "SECOND" && (s.next === "PRIM" || s.next === "ALONE")) {
        this.handoverSnapshot = !!this.sec && this.sec.state === "sync" && this.inSyncBelief && !this.suspect && this.peerInView();
      }
      return;
    }
    if (s.state === "STOP" && (this.prim || this.sec || this.markerUp)) {
      // stop_prim ran and the VIP is gone (both come before the state in the engine's plans): unmount now
      // (poststop did already, unless the module was force-stopped).
      void this.serial(() => this.stopAll(`module STOP: ${s.reason}`)).catch((e: unknown) => this.fail(e));
    }
    if (s.state === "SECOND" && this.sec && !s.ready && this.inSyncBelief && !this.suspect) {
      // Back in SECOND on the stream a resync completed on (e.g. after a WAIT): the engine forgot it was in sync.
      this.report(true, "still in sync on the same stream");
    }
  }

  /** Secondary: tracks the peer's presence; a peer back after an absence makes the stream suspect. */
  private onView(members: readonly { readonly id: string }[]): void {
    const peerIn = members.some((m) => m.id !== this.options.nodeId);
    if (this.peerWasIn && !peerIn) this.peerLeftAt = performance.now();
    this.peerWasIn = peerIn;
    if (!peerIn) {
      // Not reported now: if the primary died, this node must stay able to take over.
      if (this.sec) this.suspect = true;
      return;
    }
    if (!this.suspect || !this.sec) return;
    this.inSyncBelief = false;
    const st = this.module?.status;
    if (st?.state === "SECOND" && !st.transient) this.report(false, "the primary was out of view: stream suspect, fresh stream and resync");
    void this.serial(async () => {
      if (!this.sec || !this.suspect) return;
      await this.stopSecondary("stream suspect after a partition");
      await this.startSecondaryHelper("peer back after a partition");
    }).catch((e: unknown) => this.fail(e));
  }

  // ---- permit (fencing) ---------------------------------------------------------------------------

  /**
   * Whether this node may acknowledge writes without its secondary now: the module is primary (PRIM/ALONE) or
   * on its way there, not leaving the role, and then:
   * - the peer in the view: only while the module is ALONE, i.e. the peer is known not to be an in-sync
   *   secondary (it reported itself out of sync, or never was in sync). While the module is PRIM the peer still
   *   counts as an in-sync secondary that may take over: a write acknowledged alone then (the stream broke, the
   *   peer has not noticed yet) would be missing from its copy if this node died, so a degraded helper waits
   *   (for its reconnection, or for the peer's report that moves the module to ALONE and the generation on);
   * - the peer out of the view: the engine's own rule for staying primary alone: a module exposing
   *   `mayStayPrimaryAlone()` (its split-brain checkers ok, or a `prim` override) is asked; without it, the
   *   engine's step-down shows as it leaving the state.
   * A driver not bound to a module ({@link bind}) has no engine to ask and renews while it is primary.
   */
  mayActAlone(): boolean {
    const m = this.module;
    if (!this.prim) return false;
    if (!m) return true;
    const s = m.status;
    const isPrim = (x: string | undefined): boolean => x === "PRIM" || x === "ALONE";
    const role = s.transient ? s.next : s.state;
    if (!isPrim(role)) return false;
    if (this.peerInView()) return role === "ALONE";
    const probe = (m as unknown as { mayStayPrimaryAlone?: () => boolean }).mayStayPrimaryAlone;
    return typeof probe === "function" ? probe.call(m) : true;
  }

  private startPermitRenewal(rep: ReplicatorLike): void {
    this.stopPermitRenewal();
    const permit = this.options.permitMs ?? 450;
    if (permit <= 0 || typeof rep.renewPermit !== "function") return;
    const every = Math.max(1, Math.floor(permit / 4));
    const mono = (): number => performance.now();
    this.permitLastTick = mono();
    this.permitQuarantineUntil = 0;
    this.permitRefused = false;
    const tick = (): void => {
      if (this.prim !== rep) return;
      const now = mono();
      const late = now - this.permitLastTick;
      this.permitLastTick = now;
      if (late > permit) {
        // This process stalled (frozen, swapped out) for longer than the permit: what it knows of the view and
        // the engine's state is as old as the stall. Give membership and the engine a permit's time first.
        this.permitQuarantineUntil = now + permit;
        this.note(`permit: this process stalled ${Math.round(late)} ms; no renewal for ${permit} ms while the view catches up`);
      }
      const cap = this.options.permitCap;
      const ms = cap === undefined ? permit : Math.min(permit, Math.floor(cap()));
      const ok = now >= this.permitQuarantineUntil && this.mayActAlone() && ms > 0;
      if (ok) rep.renewPermit?.(ms);
      if (ok === this.permitRefused) {
        this.permitRefused = !ok;
        this.note(ok ? `permit: renewing (${permit} ms every ${every} ms)` : `permit: not renewed (${ms > 0 ? "this node may not act alone" : "no lease budget (permitCap)"}): writes without the secondary wait`);
      }
    };
    rep.on("restarted", () => {
      this.permitLastTick = mono();
      tick();
    });
    this.permitTimer = setInterval(tick, every);
    tick();
  }

  private stopPermitRenewal(): void {
    if (this.permitTimer) clearInterval(this.permitTimer);
    this.permitTimer = undefined;
  }

  // ---- helpers -----------------------------------------------------------------------------------

  private report(inSync: boolean, reason: string): void {
    if (inSync) this.cancelGrace();
    this.note(`report ${inSync ? "in sync" : "out of sync"}: ${reason}`);
    this.emit("sync", { inSync, reason });
    this.module?.replication({ inSync });
  }

  private armGrace(): void {
    this.cancelGrace();
    const ms = this.options.disconnectGraceMs ?? 3000;
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined;
      const s = this.lastStatus ?? this.module?.status;
      if (!this.sec || this.sec.state === "sync") return; // reconnected meanwhile
      if (s && (s.state !== "SECOND" || s.transient)) return; // taking over, or no longer secondary
      if (this.membership && !this.peerInView()) return; // the primary is gone: the failover decides
      this.report(false, `primary's stream ended ${ms} ms ago and the primary is still alive: it goes on without this node`);
    }, ms);
    this.graceTimer.unref?.();
  }

  private cancelGrace(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }

  private peerInView(): boolean {
    const m = this.membership;
    if (!m) return false;
    return m.view.members.some((x) => x.id !== this.options.nodeId);
  }

  private async stopPrimary(why: string): Promise<void> {
    const p = this.prim;
    if (!p) return;
    this.lastMetrics = p.metrics();
    this.prim = undefined;
    this.stopPermitRenewal();
    await p.stop();
    p.removeAllListeners();
    this.note(`primary: unmounted (${why})`);
    if (!this.sec) this.emit("role", { role: "none", reason: why });
  }

  private async stopSecondary(why: string): Promise<void> {
    const s = this.sec;
    if (!s) return;
    this.cancelGrace();
    this.sec = undefined;
    await s.stop();
    s.removeAllListeners();
    this.note(`secondary: stopped (${why})`);
    if (!this.prim) this.emit("role", { role: "none", reason: why });
  }

  private async stopAll(why: string): Promise<void> {
    await this.stopPrimary(why);
    await this.stopSecondary(why);
    this.guard(false);
  }

  /** Whether the primary's mount lives in the helper's private namespace (the replicator's default). */
  private privateNs(): boolean {
    const t = this.options.replicator ?? {};
    return (t.mountNamespace ?? (t.extra?.mountNamespace as string | undefined) ?? "private") === "private";
  }

  /** Puts the read-only marker over the mount point in this namespace (`on`) or removes it ({@link MirrorDriverOptions.marker}). */
  private guard(on: boolean): void {
    if (this.options.marker !== true) return;
    const path = this.options.mountPoint;
    try {
      if (!on) {
        const n = removeMarkers(path);
        this.markerUp = false;
        if (n > 0) this.note(`marker removed: ${path} is an ordinary directory again`);
        return;
      }
      if (this.markerUp && markerAt(path)) return;
      const stale = removeMarkers(path);
      mountMarker(path, markerText(this.module?.name ?? basename(path), path));
      this.markerUp = true;
      this.note(`marker: ${path} is read-only outside the mount's namespace (${MARKER_FILE})${stale > 0 ? `; ${stale} stale marker(s) removed` : ""}`);
    } catch (e) {
      this.fail(new Error(`marker over ${path}: ${(e as Error).message}`, { cause: e }));
    }
  }

  private create(options: FileReplicatorOptions): ReplicatorLike {
    if (this.options.createReplicator) return this.options.createReplicator(options);
    // the engine is the primary's choice: the secondary is always the compiled helper
    const engine = options.role === "primary" ? (this.options.engine ?? "auto") : "auto";
    return createFileReplicator({ ...options, engine, log: (line) => this.note(line) });
  }

  private stateFile(): string {
    return this.options.replicator?.stateFile ?? sideFile(this.options.backingDir, "hfstate");
  }

  /**
   * The helper reports every handshake that did not complete as `authFailed`. A peer that proved the wrong key
   * (or is no holdfast peer: `refused`) is an error; a handshake cut short (a peer killed or a link cut
   * mid-handshake) is ordinary weather and only logged, as is an `encrypt` mismatch (its reason says so).
   */
  private onHandshakeFailed(e: { reason: string; refused: boolean }): void {
    if (e.refused) this.fail(new Error(`replication peer refused: ${e.reason}`));
    else this.note(`replication handshake did not complete: ${e.reason}`);
  }

  private discardExtentLog(): void {
    const f = this.options.replicator?.extentLog ?? sideFile(this.options.backingDir, "hfextents");
    if (existsSync(f) && statSync(f).size > 0) {
      truncateSync(f, 0);
      this.note(`extent log of this node's time as primary discarded (${f}): the peer's copy wins`);
    }
  }

  private writeLocalCopy(state: "consistent"): void {
    const f = this.stateFile();
    writeFileSync(`${f}.tmp`, `${state}\n`);
    renameSync(`${f}.tmp`, f);
  }

  private requirePrimary(what: string): ReplicatorLike {
    if (!this.prim) throw new MirrorError("HOLDFAST_MIRROR_NOT_PRIMARY", `${what}: this node is not primary (data path role: ${this.role})`);
    return this.prim;
  }

  /** Runs helper operations one at a time, in order. */
  private serial(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private note(line: string): void {
    this.options.log?.(line);
    this.emit("log", line);
  }

  private fail(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.note(`error: ${e.message}`);
    if (this.listenerCount("error") > 0) this.emit("error", e);
  }
}
