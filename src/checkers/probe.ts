/**
 * The probe side of a checker: one small interface, one file per probe type (`process.ts`, `tcp.ts`, ...).
 * A probe only looks; the rise/fall hysteresis (`src/core/hysteresis.ts`) decides, and the
 * {@link CheckerRunner} (`runner.ts`) schedules probes, enforces their timeout and emits verdicts.
 */
import { execFile } from "node:child_process";
import type { LeaseView } from "../core/checker.js";

/** The outcome of one probe run. */
export interface ProbeResult {
  /** `true` when the checked thing is healthy. */
  readonly ok: boolean;
  /** What was seen, in a few words, e.g. `connect 198.18.0.10:8080 refused`. Ends up in verdict reasons. */
  readonly detail: string;
  /** Witness arbiter probes only: what the witness said of the lease; becomes the verdict's `lease`. */
  readonly lease?: LeaseView;
}

/** One health probe. */
export interface Probe {
  /** A stable, readable name, e.g. `tcp:198.18.0.10:8080`; the default checker name. */
  readonly name: string;
  /**
   * Runs the probe once. Must settle soon after `signal` aborts (the runner aborts it at its timeout and
   * counts it as a failure anyway). May throw: a throw counts as a failure with the error's message.
   */
  run(signal: AbortSignal): Promise<ProbeResult>;
  /** Releases resources held between runs (sockets). Optional; called by the runner's `stop()`. */
  close?(): void;
}

/** The message of an unknown thrown value. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}

/** Result of running a short command. */
export interface CommandOutput {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a short command (`ip -j ...`) with no shell, abortable. Never throws for a non-zero exit; throws
 * when the command cannot be started or is aborted.
 */
export function runCommand(argv: readonly string[], signal: AbortSignal): Promise<CommandOutput> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error("empty command"));
  return new Promise((resolve, reject) => {
    execFile(file, args, { signal, maxBuffer: 4 * 1024 * 1024, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== "number") {
        reject(err);
        return;
      }
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
  });
}

/** Rejects when `signal` aborts; the returned cleanup removes the listener. */
export function abortPromise(signal: AbortSignal): { promise: Promise<never>; cleanup: () => void } {
  let cleanup = (): void => {};
  const promise = new Promise<never>((_, reject) => {
    if (signal.aborted) {
      reject(signal.reason ?? new Error("aborted"));
      return;
    }
    const onAbort = (): void => reject(signal.reason ?? new Error("aborted"));
    signal.addEventListener("abort", onAbort, { once: true });
    cleanup = () => signal.removeEventListener("abort", onAbort);
  });
  promise.catch(() => {});
  return { promise, cleanup };
}
