/**
 * The checker driver: runs one probe every `interval`, aborts it at `timeout`, feeds each result to the
 * pure rise/fall {@link Hysteresis} and emits a {@link CheckerVerdict} when the decision changes.
 *
 * Scheduling: the first run starts at `start()`; each next run starts `interval` ms after the previous one
 * *started*, or at once when the previous run took longer than that. Runs never overlap. A probe that
 * ignores its abort signal is still counted as failed at its timeout (its late answer is dropped).
 *
 * Stalls of this process (CPU starvation, a long GC pause, SIGSTOP) are not blamed on the checked thing: when
 * the timeout timer itself fires late, answers that arrived meanwhile are delivered first (a few event-loop
 * turns) before the timeout counts. A daemon starved of CPU must not restart a healthy application.
 *
 * Events (typed, eventemitter3), in this order for each run: `result` (every probe run), then `verdict`
 * (when the hysteresis flips; for split-brain checkers, whose last verdict the module reads, also when the reason
 * changes while the decision stays, e.g. a witness arbiter's denial going from `witness unreachable` to `lease held
 * by n0`, with `lease.holder` n0: see {@link CheckerRunnerOptions.reasonChanges}). Listeners run synchronously; a
 * throwing listener does not stop the schedule (the error is re-emitted as `error` when there is a listener for it).
 */
import { EventEmitter } from "eventemitter3";
import type { CheckerAction, CheckerVerdict, LeaseView } from "../core/checker.js";
import { Hysteresis, type HysteresisState } from "../core/hysteresis.js";
import { systemClock, type Clock } from "../runtime/clock.js";
import { messageOf, type Probe } from "./probe.js";
import { iterate } from "../runtime/iterate.js";

export interface CheckerRunnerOptions {
  /** The probe to run. */
  readonly probe: Probe;
  /** Checker name in verdicts, unique within its module. Default: the probe's name. */
  readonly name?: string;
  /** Probe type copied into verdicts (`tcp`, `split-brain`, ...). */
  readonly kind?: string;
  /** What the module does when this checker fails. */
  readonly action: CheckerAction;
  /** Milliseconds between the starts of two runs. */
  readonly interval: number;
  /** Milliseconds after which a run is aborted and counted as a failure. */
  readonly timeout: number;
  /** Consecutive successes to turn ok again. */
  readonly rise: number;
  /** Consecutive failures to turn failed. */
  readonly fall: number;
  /** State before the first verdict. Default `unknown` (see {@link Hysteresis}). */
  readonly initial?: HysteresisState;
  /** Time source for the schedule, the timeouts and the durations. Default: the system clock (a fake in tests). */
  readonly clock?: Clock;
  /**
   * Also emit a verdict (same ok, new reason) when the decision stays but the probe's detail changes in kind (numbers
   * in it, such as `for 1840 ms`, are ignored for the comparison). Default: true for the `split-brain` kind, whose
   * last verdict the module keeps as a state and reads (witness unreachable, or the lease held by a named node: the
   * verdict's `lease`); false otherwise: for an app checker the module counts each failed verdict as a fresh failure
   * (a restart), and a `wait` checker's reason is only logged. The new verdict carries the new result's `lease`.
   */
  readonly reasonChanges?: boolean;
}

/** A probe detail with its numbers blanked: what a reason change is judged on (`lease held by n0 for # ms`). */
export function reasonClass(detail: string): string {
  return detail.replace(/\b\d+(?:\.\d+)?\b/g, "#");
}

/** One probe run, as emitted by the runner. */
export interface CheckerResult {
  readonly type: "result";
  readonly checker: string;
  readonly ok: boolean;
  readonly detail: string;
  /** Wall time of the run in milliseconds. */
  readonly durationMs: number;
  /** The run hit its timeout. */
  readonly timedOut: boolean;
  /** The current streak of identical results after this one. */
  readonly streak: { readonly ok: boolean; readonly count: number };
}

/** Typed events of a {@link CheckerRunner}. */
export interface CheckerRunnerEvents {
  result: (result: CheckerResult) => void;
  verdict: (verdict: CheckerVerdict) => void;
  error: (error: unknown) => void;
}

class ProbeTimeout extends Error {}

/** A timeout timer this late (ms) is taken as a sign that the process itself was stalled. */
const LATE_TIMER_MS = 20;
/** Event-loop turns given to I/O that completed during a stall before a late timeout counts. */
const LATE_GRACE_TURNS = 3;

/** Schedules one probe and turns its results into verdicts. See the module comment. */
/** One checker: a probe run on an interval, its outcomes turned into verdicts by hysteresis. */
export type Checker = CheckerRunner;

export class CheckerRunner extends EventEmitter<CheckerRunnerEvents> {
  readonly name: string;
  readonly options: CheckerRunnerOptions;
  readonly #hysteresis: Hysteresis;
  readonly #clock: Clock;
  #cancelTimer: (() => void) | undefined;
  #running: Promise<CheckerResult> | undefined;
  #current: AbortController | undefined;
  #started = false;
  /** Bumped by start/stop so that a run finishing after a stop (and a new start) cannot schedule twice. */
  #generation = 0;
  #last: CheckerVerdict | undefined;
  /** The probe detail behind {@link #last} (its reason without the streak). */
  #lastDetail = "";
  readonly #reasonChanges: boolean;

  constructor(options: CheckerRunnerOptions) {
    super();
    for (const key of ["interval", "timeout"] as const) {
      const v = options[key];
      if (!Number.isFinite(v) || v <= 0) throw new RangeError(`checker ${key} must be a positive number of ms, got ${v}`);
    }
    this.options = options;
    this.#clock = options.clock ?? systemClock;
    this.#reasonChanges = options.reasonChanges ?? (options.kind === "split-brain" || options.kind === "splitbrain");
    this.name = options.name ?? options.probe.name;
    this.#hysteresis = new Hysteresis({
      checker: this.name,
      action: options.action,
      rise: options.rise,
      fall: options.fall,
      ...(options.kind === undefined ? {} : { kind: options.kind }),
      ...(options.initial === undefined ? {} : { initial: options.initial }),
    });
  }

  /** The decided state: `unknown` until the first verdict. */
  get state(): HysteresisState {
    return this.#hysteresis.state;
  }

  /** The last verdict emitted, if any. */
  get lastVerdict(): CheckerVerdict | undefined {
    return this.#last;
  }

  /** Whether the schedule is running. */
  get started(): boolean {
    return this.#started;
  }

  /** Starts the schedule: a first run now, then one every `interval`. Idempotent. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#generation++;
    this.#schedule(0);
  }

  /**
   * Stops the schedule, aborts a run in progress (its result is dropped), and closes the probe's resources.
   * The hysteresis keeps its state: `start()` again resumes from it. Resolves when the run has settled.
   */
  async stop(): Promise<void> {
    this.#started = false;
    this.#generation++;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    this.#current?.abort(new Error("checker stopped"));
    const running = this.#running;
    if (running !== undefined) await running.catch(() => undefined);
    this.options.probe.close?.();
  }

  /**
   * Forgets the hysteresis streak and returns to the `initial` state (`unknown` by default), so that the next
   * `fall` failures (or `rise` successes) produce a fresh verdict even if it equals the last one. For the
   * module driver after a local restart: a checker still failing then reports it again, and the restart
   * counts against the budget. The schedule is not touched.
   */
  reset(): void {
    this.#hysteresis.reset();
  }

  /** Runs the probe once now (outside the schedule when stopped), feeding the hysteresis. */
  runOnce(): Promise<CheckerResult> {
    this.#running ??= this.#run().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** Verdicts as an async iterator (ends when the consumer breaks out). */
  verdicts(): AsyncGenerator<CheckerVerdict> {
    return iterate<CheckerVerdict>((fn) => {
      this.on("verdict", fn);
      return () => this.off("verdict", fn);
    });
  }

  #schedule(delay: number): void {
    const generation = this.#generation;
    this.#cancelTimer = this.#clock.setTimer(delay, () => {
      this.#cancelTimer = undefined;
      const began = this.#clock.now();
      void this.runOnce().finally(() => {
        if (!this.#started || generation !== this.#generation) return;
        this.#schedule(Math.max(0, this.options.interval - (this.#clock.now() - began)));
      });
    });
  }

  async #run(): Promise<CheckerResult> {
    const ac = new AbortController();
    this.#current = ac;
    const { timeout } = this.options;
    const began = this.#clock.now();
    let cancelTimeout: (() => void) | undefined;
    let settled = false;
    const timedOut = new Promise<never>((_, reject) => {
      const fire = (): void => {
        if (settled) return;
        const e = new ProbeTimeout(`timed out after ${timeout} ms`);
        ac.abort(e);
        reject(e);
      };
      cancelTimeout = this.#clock.setTimer(timeout, () => {
        // A timer that fires late means this process was stalled (CPU starvation, a GC pause, SIGSTOP): the
        // probe's answer may be waiting in the event loop's I/O queue, which runs after timers. Give it a few
        // loop turns before declaring a timeout, so a stalled daemon does not fail a healthy application.
        if (this.#clock.now() - began - timeout <= LATE_TIMER_MS) {
          fire();
          return;
        }
        let turns = 0;
        const next = (): void => {
          if (settled || ++turns > LATE_GRACE_TURNS) fire();
          else setImmediate(next);
        };
        setImmediate(next);
      });
    });
    timedOut.catch(() => {});
    let ok: boolean;
    let detail: string;
    let lease: LeaseView | undefined;
    let hitTimeout = false;
    try {
      const r = await Promise.race([this.options.probe.run(ac.signal), timedOut]);
      ok = r.ok;
      detail = r.detail;
      lease = r.lease;
    } catch (err) {
      ok = false;
      hitTimeout = err instanceof ProbeTimeout || ac.signal.reason instanceof ProbeTimeout;
      const probe = this.options.probe.name;
      detail = hitTimeout
        ? `${probe} timed out after ${timeout} ms${err instanceof ProbeTimeout ? "" : ` (${messageOf(err)})`}`
        : `${probe} failed: ${messageOf(err)}`;
    } finally {
      settled = true;
      cancelTimeout?.();
      if (this.#current === ac) this.#current = undefined;
    }
    const durationMs = this.#clock.now() - began;
    const stopped = ac.signal.aborted && !hitTimeout;
    let verdict = stopped ? undefined : this.#hysteresis.observe({ ok, detail, ...(lease === undefined ? {} : { lease }) });
    if (!stopped && verdict === undefined) verdict = this.#reasonChange(ok, detail, lease);
    const result: CheckerResult = {
      type: "result",
      checker: this.name,
      ok,
      detail,
      durationMs,
      timedOut: hitTimeout,
      streak: this.#hysteresis.streak,
    };
    if (stopped) return result;
    this.#emitSafely("result", result);
    if (verdict !== undefined) {
      this.#last = verdict;
      this.#lastDetail = detail;
      this.#emitSafely("verdict", verdict);
    }
    return result;
  }

  /** The decision stays (`ok` agrees with it and with the last verdict) but the detail changed in kind: a new verdict. */
  #reasonChange(ok: boolean, detail: string, lease: LeaseView | undefined): CheckerVerdict | undefined {
    const last = this.#last;
    if (!this.#reasonChanges || last === undefined || last.ok !== ok) return undefined;
    if (this.#hysteresis.state !== (ok ? "ok" : "failed")) return undefined;
    if (reasonClass(detail) === reasonClass(this.#lastDetail)) return undefined;
    const streak = this.#hysteresis.streak;
    const threshold = ok ? this.options.rise : this.options.fall;
    const { lease: _stale, ...rest } = last;
    return { ...rest, reason: `${detail} (${streak.count}/${threshold})`, ...(lease === undefined ? {} : { lease }) };
  }

  #emitSafely<E extends "result" | "verdict">(event: E, arg: Parameters<CheckerRunnerEvents[E]>[0]): void {
    try {
      (this.emit as (e: string, a: unknown) => boolean)(event, arg);
    } catch (err) {
      if (this.listenerCount("error") > 0) this.emit("error", err);
    }
  }
}
