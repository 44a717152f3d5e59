/**
 * Rise/fall hysteresis: turns a stream of probe results into verdict changes.
 *
 * Pure and deterministic (no clock, no timers): the checker driver (`src/checkers/runner.ts`) feeds one
 * result per probe run and forwards the verdicts to the module core. The rule is the one of HAProxy's
 * health checks and keepalived's `rise`/`fall`:
 *
 * - a checker that is **ok** turns **failed** after `fall` consecutive failed probes;
 * - a checker that is **failed** turns **ok** after `rise` consecutive successful probes;
 * - a checker that is **unknown** (nothing decided yet) turns ok after `rise` successes or failed after
 *   `fall` failures, whichever comes first (unless `initial` says otherwise).
 *
 * A verdict is produced only when the decided state changes, so two identical verdicts never follow each
 * other. Any result of the opposite kind resets the streak: one lucky success among failures does not
 * restore a checker, one lost packet among successes does not fail it.
 */
import type { CheckerAction, CheckerVerdict, LeaseView } from "./checker.js";

/** The outcome of one probe run, as the hysteresis sees it. */
export interface ProbeOutcome {
  readonly ok: boolean;
  /** What the probe saw, e.g. `connect 198.18.0.10:8080 refused`. Becomes the verdict's reason. */
  readonly detail: string;
  /** A witness arbiter's view of its lease, copied into the verdict. */
  readonly lease?: LeaseView;
}

/** The decided state of a checker. `unknown` only before the first verdict. */
export type HysteresisState = "unknown" | "ok" | "failed";

export interface HysteresisOptions {
  /** Checker name, copied into verdicts (unique within its module, e.g. `tcp:198.18.0.10:8080`). */
  readonly checker: string;
  /** Action carried by verdicts: what the module does when this checker fails. */
  readonly action: CheckerAction;
  /** Probe type (`tcp`, `ping`, ...), copied into verdicts so the module can tell a split-brain checker. */
  readonly kind?: string;
  /** Consecutive successes needed to turn ok again. Integer >= 1. */
  readonly rise: number;
  /** Consecutive failures needed to turn failed. Integer >= 1. */
  readonly fall: number;
  /**
   * The state before any result. Default `unknown`: the first verdict is emitted after `rise` successes
   * or `fall` failures. `ok` assumes the checked thing is healthy (only a failure verdict can come first);
   * `failed` assumes it is not (only an ok verdict can come first).
   */
  readonly initial?: HysteresisState;
}

/** Rise/fall hysteresis for one checker. See the module comment for the rule. */
export class Hysteresis {
  readonly options: HysteresisOptions;
  #state: HysteresisState;
  /** Length of the current streak of identical results (successes when `#streakOk`). */
  #streak = 0;
  #streakOk = true;

  constructor(options: HysteresisOptions) {
    for (const key of ["rise", "fall"] as const) {
      const v = options[key];
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`hysteresis ${key} must be an integer >= 1, got ${v}`);
    }
    this.options = options;
    this.#state = options.initial ?? "unknown";
  }

  /** The decided state (the last verdict's, or the initial one). */
  get state(): HysteresisState {
    return this.#state;
  }

  /** Length of the current streak of identical results, and their kind. */
  get streak(): { readonly ok: boolean; readonly count: number } {
    return { ok: this.#streakOk, count: this.#streak };
  }

  /**
   * Feeds one probe result. Returns the new verdict when the decided state changes, `undefined` otherwise.
   * The reason is the probe's detail followed by the streak against its threshold, e.g.
   * `connect 198.18.0.10:8080 refused (3/3)`.
   */
  observe(outcome: ProbeOutcome): CheckerVerdict | undefined {
    if (outcome.ok === this.#streakOk) {
      this.#streak += 1;
    } else {
      this.#streakOk = outcome.ok;
      this.#streak = 1;
    }
    const threshold = outcome.ok ? this.options.rise : this.options.fall;
    const target: HysteresisState = outcome.ok ? "ok" : "failed";
    if (this.#state === target || this.#streak < threshold) return undefined;
    this.#state = target;
    const verdict: CheckerVerdict = {
      type: "checker",
      checker: this.options.checker,
      ok: outcome.ok,
      action: this.options.action,
      reason: `${outcome.detail} (${this.#streak}/${threshold})`,
      ...(this.options.kind === undefined ? {} : { kind: this.options.kind }),
      ...(outcome.lease === undefined ? {} : { lease: outcome.lease }),
    };
    return verdict;
  }

  /** Forgets the streak and returns to `initial` (e.g. when the module restarts its checkers). */
  reset(): void {
    this.#state = this.options.initial ?? "unknown";
    this.#streak = 0;
    this.#streakOk = true;
  }
}
