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
}
