/**
 * Per-module, per-node event log: every decision of the module engine as one JSON line (for tools) in
 * `<dir>/<module>.jsonl` and one readable line (for people) in `<dir>/<module>.log`, e.g.
 * `2026-11-22T01:02:03.456Z n1 db checker tcp:app:8080 failed (connect refused (3/3)) -> restart (2 of 3 in 24h)`.
 * Hook output lines are logged too. The last `keep` records stay in memory for the `logs` command.
 */
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { formatEvent, type HookName, type ModuleEvent } from "../core/module/index.js";

/** Mode of a log directory the event log creates (owner only). */
export const LOG_DIR_MODE = 0o700;
/** Mode of the log files the event log creates (owner only). */
export const LOG_FILE_MODE = 0o600;

/** One record of the event log. */
export type ModuleLogRecord =
  | {
      readonly ts: string;
      readonly node: string;
      readonly module: string;
      readonly kind: "event";
      readonly event: ModuleEvent;
      readonly text: string;
    }
  | {
      readonly ts: string;
      readonly node: string;
      readonly module: string;
      readonly kind: "output";
      readonly hook: HookName;
      readonly stream: "stdout" | "stderr";
      readonly line: string;
      readonly text: string;
    };

export interface EventLogOptions {
  /** Directory for the `.jsonl` and `.log` files; omit for an in-memory log only. */
  readonly dir?: string;
  /** Records kept in memory. Default 1000. */
  readonly keep?: number;
  /** Wall clock for timestamps. Default `Date.now`. */
  readonly now?: () => number;
}

/** The readable line of a record. */
export function formatLogLine(r: ModuleLogRecord): string {
  return `${r.ts} ${r.node} ${r.module} ${r.text}`;
}

export class EventLog {
  private readonly records: ModuleLogRecord[] = [];
  private readonly keep: number;
  private readonly now: () => number;
  private readonly jsonPath: string | undefined;
  private readonly textPath: string | undefined;

  constructor(
    readonly node: string,
    readonly module: string,
    opts: EventLogOptions = {},
  ) {
    this.keep = opts.keep ?? 1000;
    this.now = opts.now ?? Date.now;
    if (opts.dir) {
      // Owner only, set at creation (not chmod'ed after); an existing directory is left as it is.
      mkdirSync(opts.dir, { recursive: true, mode: LOG_DIR_MODE });
      this.jsonPath = join(opts.dir, `${module}.jsonl`);
      this.textPath = join(opts.dir, `${module}.log`);
    }
  }

  event(event: ModuleEvent): ModuleLogRecord {
    return this.append({
      ts: new Date(this.now()).toISOString(),
      node: this.node,
      module: this.module,
      kind: "event",
      event,
      text: formatEvent(event),
    });
  }

  output(hook: HookName, stream: "stdout" | "stderr", line: string): ModuleLogRecord {
    return this.append({
      ts: new Date(this.now()).toISOString(),
      node: this.node,
      module: this.module,
      kind: "output",
      hook,
      stream,
      line,
      text: `hook ${hook} ${stream}: ${line}`,
    });
  }

  /** The last `n` records (all kept ones by default), oldest first. */
  recent(n?: number): readonly ModuleLogRecord[] {
    return n === undefined ? [...this.records] : this.records.slice(-n);
  }

  private append(r: ModuleLogRecord): ModuleLogRecord {
    this.records.push(r);
    if (this.records.length > this.keep) this.records.shift();
    // Synchronous appends keep the files in decision order; the volume is a few lines per decision.
    // The mode applies when the append creates the file: hook output may hold anything, so owner only.
    if (this.jsonPath) appendFileSync(this.jsonPath, JSON.stringify(r) + "\n", { mode: LOG_FILE_MODE });
    if (this.textPath) appendFileSync(this.textPath, formatLogLine(r) + "\n", { mode: LOG_FILE_MODE });
    return r;
  }
}
