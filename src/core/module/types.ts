/**
 * Vocabulary of the module engine: states, commands, the per-module report carried in heartbeats,
 * the persisted state, and the effects/events the pure core emits. No I/O here.
 */

/** The states of a module on one node (meanings and kinds: the "States" table of src/core/module/README.md). */
export type ModuleState = "STOP" | "WAIT" | "UP" | "ALONE" | "PRIM" | "SECOND";

export const MODULE_STATES: readonly ModuleState[] = ["STOP", "WAIT", "UP", "ALONE", "PRIM", "SECOND"];

/** True for the two primary states of a mirror (the node that runs the app and holds the VIP). */
export function isPrimaryState(s: ModuleState | undefined): boolean {
  return s === "PRIM" || s === "ALONE";
}

/** The hooks a module may define. */
export type HookName =
  | "prestart"
  | "start_prim"
  | "stop_prim"
  | "start_second"
  | "stop_second"
  | "start_both"
  | "stop_both"
  | "poststop";

export const HOOK_NAMES: readonly HookName[] = [
  "prestart",
  "start_prim",
  "stop_prim",
  "start_second",
  "stop_second",
  "start_both",
  "stop_both",
  "poststop",
];

/** The state of a module as users see it: the state, whether it serves, whether a transition runs. */
export interface ModuleStatus {
  readonly module: string;
  readonly state: ModuleState;
  /**
   * Ready to serve: PRIM/ALONE/UP once the start hook succeeded and no transition runs;
   * SECOND once replication reports the copy in sync. Never for STOP and WAIT.
   */
  readonly ready: boolean;
  /** A transition is in progress (a hook is running); `next` is where it goes. */
  readonly transient: boolean;
  readonly next?: ModuleState;
  /** Why the module is in this state (the cause of the last transition, or what it waits for). */
  readonly reason: string;
}

/**
 * What one node says about one of its modules, carried in its heartbeats by the membership layer
 * (JSON-serialisable, a few dozen bytes). Peers use it to decide roles.
 */
export interface ModuleReport {
  readonly module: string;
  readonly state: ModuleState;
  readonly ready: boolean;
  /** Target of the transition in progress, if any (e.g. WAIT -> PRIM while start_prim runs). */
  readonly next?: ModuleState;
  /** Mirror: this node's copy of the data is known to be current. */
  readonly upToDate: boolean;
  /** Mirror: data epoch; bumped each time a node becomes primary with no in-sync secondary. */
  readonly generation: number;
  /** Mirror: this node is willing to become primary now. */
  readonly candidate: boolean;
  /** Mirror: this node claims the primary role explicitly (`prim` command or `defaultPrimary` on first start). */
  readonly claim?: boolean;
  /** Mirror: this secondary asks the primary to hand the role over (`swap` typed on the secondary). */
  readonly swap?: boolean;
  /**
   * Mirror: this node may hold writes it acknowledged while ALONE that its peer has not received (see
   * {@link PersistedModuleState.aloneWrites}). Two primaries: such a side wins; both: a split brain.
   */
  readonly aloneWrites?: boolean;
  /** Mirror: this node detected a split brain (both sides acknowledged writes alone) and waits for an operator. */
  readonly splitBrain?: boolean;
  /** Mirror: this primary was made primary by `prim --force` (an operator decision, e.g. ending a split brain). */
  readonly forced?: boolean;
  /**
   * Mirror: this secondary was primary on a line of changes the peer has not seen (its own changes were
   * discarded): the primary must resync it by `checksum`, never by its extent log alone.
   */
  readonly diverged?: boolean;
}

/** The state a module persists across restarts of the daemon (per node, per module). */
export interface PersistedModuleState {
  /** Mirror: this node has held a role at least once (a very first start needs `prim`). */
  readonly initialized: boolean;
  /** Mirror: this node's data is current (false while resyncing, or when the peer has newer data). */
  readonly upToDate: boolean;
  /** Mirror: data generation (see {@link ModuleReport.generation}). */
  readonly generation: number;
  /**
   * Mirror: this node was the last primary with no in-sync secondary, so no other node can hold
   * newer data: it may go ALONE on its own after `peerWait` when it starts with no peer in view.
   */
  readonly soleOwner: boolean;
  /** Times (ms, the core's clock) of the local restarts still inside the restart window. */
  readonly restarts: readonly number[];
  /**
   * Mirror: this node was ALONE (acknowledging writes no in-sync secondary stored) since it last had an in-sync
   * secondary: its copy may hold acknowledged writes the peer lacks. Such writes are never discarded without an
   * operator decision (`prim --force` on the other node). Absent: false (state files written before it existed).
   */
  readonly aloneWrites?: boolean;
  /** Mirror: a split brain was detected (both nodes acknowledged writes alone): primary only on `prim --force`. */
  readonly splitBrain?: boolean;
  /** Mirror: this node became primary by `prim --force` and has had no in-sync secondary since. */
  readonly forced?: boolean;
  /** Mirror: this node's copy diverged from the peer's (it was primary on a line the peer did not follow): resync by checksum. */
  readonly diverged?: boolean;
}

export const INITIAL_PERSISTED: PersistedModuleState = {
  initialized: false,
  upToDate: false,
  generation: 0,
  soleOwner: false,
  restarts: [],
};

/** The agreed membership view (from the membership protocol): connected nodes, this one included. */
export interface MembershipView {
  readonly epoch: number;
  readonly members: readonly { readonly id: string; readonly weight: number }[];
}

/** Administrator commands. */
export type ModuleCommand =
  | { readonly type: "start" }
  | { readonly type: "stop" }
  | { readonly type: "restart" }
  | { readonly type: "stopstart" }
  | { readonly type: "swap" }
  | { readonly type: "prim"; readonly force?: boolean }
  | { readonly type: "second" }
  | { readonly type: "forcestop" };

export type ModuleCommandName = ModuleCommand["type"];

/** Events: every decision the core takes, with its cause. Emitted through an `emit` effect. */
export type ModuleEvent =
  | {
      readonly type: "state";
      readonly from: ModuleState;
      readonly to: ModuleState;
      readonly ready: boolean;
      readonly transient: boolean;
      readonly next?: ModuleState;
      readonly cause: string;
      /**
       * The transition was caused by `prim --force` (the operator made this copy win): e.g. the mirror driver then
       * mounts a copy whose resync did not finish. Read this, not `cause`.
       */
      readonly forced?: true;
    }
  | { readonly type: "command"; readonly command: ModuleCommandName; readonly force?: boolean; readonly cause: string }
  | {
      readonly type: "hook";
      readonly hook: HookName;
      readonly ok: boolean;
      readonly detail: string;
      /** What the policy does about it. */
      readonly cause: string;
    }
  | {
      readonly type: "checker";
      readonly checker: string;
      readonly ok: boolean;
      readonly action: string;
      /** The probe's reason, e.g. `connect 198.18.0.1:8080 refused (3/3)`. */
      readonly reason: string;
      /** The decision, e.g. `restart (2 of 3 in 24h)`. */
      readonly cause: string;
    }
  | { readonly type: "decision"; readonly level: "info" | "warn" | "error"; readonly cause: string };

/** Effects: what the driver must carry out, in the order given. */
export type ModuleEffect =
  | {
      readonly type: "runHook";
      readonly hook: HookName;
      /** Passed to the hook (arguments and environment). */
      readonly state: ModuleState;
      readonly nextState: ModuleState;
      readonly reason: string;
    }
  /** Abort the hook in progress (forcestop): kill its process group; do not report it back. */
  | { readonly type: "cancelHook"; readonly hook: HookName }
  /**
   * A (re)start just completed: the core forgot the app checkers' earlier failures; the driver must
   * report again any checker that still fails (verdicts are sent on change only), e.g. by resetting its
   * hysteresis or re-sending its last failed verdict after `interval * fall`.
   */
  | { readonly type: "resetCheckers" }
  | { readonly type: "addVip" }
  | { readonly type: "removeVip" }
  /**
   * Mirror primary: run the next resync pass towards the secondary in this mode (`checksum`: the secondary
   * diverged, so this node's extent log does not describe every difference). The driver asks its replicator.
   */
  | { readonly type: "resync"; readonly mode: "checksum"; readonly cause: string }
  | { readonly type: "advertise"; readonly report: ModuleReport }
  | { readonly type: "persist"; readonly state: PersistedModuleState }
  | { readonly type: "emit"; readonly event: ModuleEvent };
