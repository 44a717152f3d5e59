/**
 * Shared vocabulary between checkers (probes in `src/checkers`, hysteresis in the core) and the
 * module state machine. A checker turns probe results into a verdict; the module engine turns a
 * verdict into a transition according to its policy.
 */

/** What a module does when a checker fails. */
export type CheckerAction =
  | "restart" // run the stop hooks then the start hooks locally, bounded by maxloop/loop_interval
  | "stopstart" // leave the role (mirror: fail over to the peer), then start again
  | "failover" // alias kept for readability in configs: same as stopstart for a mirror primary
  | "stop" // stop the module on this node
  | "wait"; // go to WAIT until the checker succeeds again, then resume

/**
 * What a witness arbiter's probe knew of the lease (`src/checkers/arbiter.ts`). Present on all its results but
 * `witness unreachable` (and a run that threw or timed out); `holder` only when the witness recently denied this
 * node's claim and named the node that holds the lease.
 */
export interface LeaseView {
  /** The node that holds the lease, as named by the witness in a recent denial of this node's claim. */
  readonly holder?: string;
  /** How long the holder's lease still ran, according to that denial, ms. */
  readonly remainingMs?: number;
}

/** One checker's verdict changed (after hysteresis). Fed into the module core as an input. */
export interface CheckerVerdict {
  readonly type: "checker";
  /** The checker's name, unique within its module, e.g. `tcp:app:8080`. */
  readonly checker: string;
  readonly ok: boolean;
  readonly action: CheckerAction;
  /** Human-readable reason, e.g. `connect 198.18.0.1:8080 refused (3/3 failures)`. */
  readonly reason: string;
  /**
   * The probe type that produced the verdict (`process`, `interface`, `ip`, `tcp`, `ping`, `custom`,
   * `module`, `split-brain`), when known. Lets the module engine tell a split-brain checker (which gates
   * going ALONE) from the others.
   */
  readonly kind?: string;
  /**
   * Set by a witness-arbiter checker (see {@link LeaseView}): the module engine reads who holds the lease here (a
   * failover waits for a lease that names the lost primary to lapse), never in {@link reason}.
   */
  readonly lease?: LeaseView;
}
