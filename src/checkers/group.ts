/**
 * All the checkers of one module, run together: what the module driver holds. Decodes the module's
 * `checkers:` list (errors name the path inside the list, e.g. `checkers.1.port`), makes sure names are
 * unique within the module, starts and stops the runners together, and re-emits their verdicts in one typed
 * stream (also readable as an async iterator).
 *
 * Ordering: verdicts of one checker are emitted in the order of its probe runs; verdicts of different
 * checkers interleave in the order their runs finish. Listeners are called synchronously, one at a time.
 */
import { EventEmitter } from "eventemitter3";
import * as t from "io-ts";
import type { CheckerVerdict } from "../core/checker.js";
import { decodeOrThrow } from "../core/decode.js";
import { ConfigError } from "../core/errors.js";
import type { HysteresisState } from "../core/hysteresis.js";
import type { Clock } from "../runtime/clock.js";
import { CheckerConfigCodec, createProbe, type CheckerConfig } from "./config.js";
import { CheckerRunner, type CheckerResult } from "./runner.js";
import { iterate } from "../runtime/iterate.js";

/** Typed events of a {@link CheckerGroup}. */
export interface CheckerGroupEvents {
  verdict: (verdict: CheckerVerdict) => void;
  result: (result: CheckerResult) => void;
  error: (error: unknown) => void;
}

/** One checker's current view, for status pages and `state` commands. */
export interface CheckerStatus {
  readonly checker: string;
  readonly kind: string;
  readonly action: CheckerVerdict["action"];
  readonly state: HysteresisState;
  /** The last verdict's reason, if any verdict was emitted. */
  readonly reason: string | undefined;
}

/** The checkers of one module. See the module comment. */
export class CheckerGroup extends EventEmitter<CheckerGroupEvents> {
  readonly runners: readonly CheckerRunner[];
  readonly configs: readonly CheckerConfig[];

  /**
   * @param entries the module's `checkers:` list, raw (from code or a file) or already decoded.
   * @param what names the owner in error messages, e.g. `module web`.
   * @param options.clock time source of every runner (default: the system clock; a `FakeClock` in simulations).
   * @throws ConfigError with paths such as `checkers.1.port`, or `checkers.2.name` for a duplicate name.
   */
  constructor(entries: readonly unknown[], what = "module", options: { readonly clock?: Clock } = {}) {
    super();
    const { checkers } = decodeOrThrow(t.type({ checkers: t.array(CheckerConfigCodec) }), { checkers: entries }, `${what} checkers`);
    const runners = checkers.map(
      (c) =>
        new CheckerRunner({
          probe: createProbe(c),
          kind: c.type,
          action: c.action,
          interval: c.interval,
          timeout: c.timeout,
          rise: c.rise,
          fall: c.fall,
          initial: c.initial,
          ...(c.name === undefined ? {} : { name: c.name }),
          ...(options.clock === undefined ? {} : { clock: options.clock }),
        }),
    );
    const seen = new Map<string, number>();
    runners.forEach((r, i) => {
      const first = seen.get(r.name);
      if (first !== undefined) {
        throw new ConfigError(`${what} checkers`, [
          { path: `checkers.${i}.name`, value: r.name, expected: `a checker name unique within the module (checkers.${first} has it; set "name")` },
        ]);
      }
      seen.set(r.name, i);
    });
    this.configs = checkers;
    this.runners = runners;
    for (const r of runners) {
      r.on("verdict", (v) => this.emit("verdict", v));
      r.on("result", (x) => this.emit("result", x));
      r.on("error", (e) => this.emit("error", e));
    }
  }

  /** Starts every checker (each runs its first probe at once). */
  start(): void {
    for (const r of this.runners) r.start();
  }

  /** Stops every checker and releases their sockets. */
  async stop(): Promise<void> {
    await Promise.all(this.runners.map((r) => r.stop()));
  }

  /** Resets every checker's hysteresis (see {@link CheckerRunner.reset}), e.g. after a local restart. */
  reset(): void {
    for (const r of this.runners) r.reset();
  }

  /** Each checker's decided state and last reason. */
  status(): CheckerStatus[] {
    return this.runners.map((r) => ({
      checker: r.name,
      kind: r.options.kind ?? "custom",
      action: r.options.action,
      state: r.state,
      reason: r.lastVerdict?.reason,
    }));
  }

  /**
   * Whether every split-brain checker currently allows going ALONE (ok; `unknown` counts as not ok: no
   * witness seen yet). `true` when the module has no split-brain checker.
   */
  splitBrainAllows(): boolean {
    return this.runners.every((r) => r.options.kind !== "split-brain" || r.state === "ok");
  }

  /** Verdicts of all checkers as an async iterator (ends when the consumer breaks out). */
  verdicts(): AsyncGenerator<CheckerVerdict> {
    return iterate<CheckerVerdict>((fn) => {
      this.on("verdict", fn);
      return () => this.off("verdict", fn);
    });
  }
}
