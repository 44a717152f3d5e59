/**
 * Restart policy: local restarts bounded by `maxloop` within a sliding `loopInterval` window
 * (SafeKit's maxloop / loop_interval). Pure: the caller gives `now`.
 */
import type { RestartPolicy } from "./config.js";

/** Restarts still inside the window at `now`. */
export function restartsInWindow(history: readonly number[], policy: RestartPolicy, now: number): number[] {
  return history.filter((t) => now - t < policy.loopInterval);
}

/** The budget decision: may we restart once more, and how to describe the count. */
export interface RestartDecision {
  readonly allowed: boolean;
  /** Restarts in the window, counting this one when allowed. */
  readonly count: number;
  readonly history: number[];
  /** e.g. `2 of 3 in 24h`. */
  readonly text: string;
}

export function decideRestart(history: readonly number[], policy: RestartPolicy, now: number): RestartDecision {
  const kept = restartsInWindow(history, policy, now);
  const allowed = kept.length < policy.maxloop;
  const next = allowed ? [...kept, now] : kept;
  return {
    allowed,
    count: next.length,
    history: next,
    text: `${allowed ? next.length : kept.length} of ${policy.maxloop} in ${formatDuration(policy.loopInterval)}`,
  };
}

/** `86400000` -> `24h`, `90000` -> `90s`, `1500` -> `1500ms`. */
export function formatDuration(ms: number): string {
  if (ms >= 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000 && ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
