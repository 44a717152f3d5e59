/**
 * Process probe (SafeKit's `errd`): the application's processes exist, at least `min` and at most `max`
 * of them. Reads `/proc` directly (no `ps` output to parse). Zombies do not count: a killed process that
 * its parent has not reaped yet is dead for us. The probing process itself is never counted (its own
 * command line may contain the pattern).
 */
import { readdir, readFile } from "node:fs/promises";
import type { Probe, ProbeResult } from "./probe.js";

/** Which processes to count. Exactly one of `name`, `cmdline`, `pid`, `pidFile`. */
export interface ProcessProbeOptions {
  /** Exact executable name as the kernel reports it in `/proc/PID/comm` (at most 15 characters). */
  readonly name?: string;
  /** A regular expression (JavaScript syntax) tested on the command line, arguments joined by spaces. */
  readonly cmdline?: string;
  /** One process id. */
  readonly pid?: number;
  /** A file holding a process id (e.g. `/run/nginx.pid`), read at every run. */
  readonly pidFile?: string;
  /** Fewest matching processes for ok. Default 1. */
  readonly min?: number;
  /** Most matching processes for ok (e.g. 1 for "exactly one instance"). Default unbounded. */
  readonly max?: number;
  /** Root of the proc file system. Default `/proc` (tests may point elsewhere). */
  readonly procRoot?: string;
}

/** Whether the process is alive (not a zombie or dead), from `/proc/PID/stat`. */
async function isLive(root: string, pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`${root}/${pid}/stat`, "utf8");
    // Format: "pid (comm) S ...": comm may hold spaces and parentheses, so look after the last ')'.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X" && state !== "x";
  } catch {
    return false; // gone meanwhile
  }
}

/** `/proc/PID/comm` without its newline, or undefined when the process is gone. */
async function readComm(root: string, pid: number): Promise<string | undefined> {
  try {
    return (await readFile(`${root}/${pid}/comm`, "utf8")).replace(/\n$/, "");
  } catch {
    return undefined;
  }
}

/** The command line, arguments joined by spaces ("" for kernel threads and zombies). */
async function readCmdline(root: string, pid: number): Promise<string | undefined> {
  try {
    const raw = await readFile(`${root}/${pid}/cmdline`, "utf8");
    return raw.replace(/\0+$/, "").split("\0").join(" ");
  } catch {
    return undefined;
  }
}

/**
 * Files read at once. Enough to hide the latency of each read, far below the usual 1024 open-file limit:
 * reading thousands of /proc files at once could hit EMFILE, and a read that fails looks like a process that
 * is gone, which would be a false failure.
 */
const READ_CONCURRENCY = 32;

/** `Promise.all(items.map(fn))` with at most `limit` calls in flight; throws the abort reason when aborted. */
async function mapBounded<T, R>(items: readonly T[], limit: number, signal: AbortSignal, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      if (signal.aborted) throw signal.reason;
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Counts live processes matching a name, a command-line pattern or a pid. See {@link ProcessProbeOptions}. */
export class ProcessProbe implements Probe {
  readonly name: string;
  readonly #opts: ProcessProbeOptions;
  readonly #re: RegExp | undefined;
  readonly #min: number;
  readonly #max: number;
  readonly #what: string;

  constructor(opts: ProcessProbeOptions) {
    const given = (["name", "cmdline", "pid", "pidFile"] as const).filter((k) => opts[k] !== undefined);
    if (given.length !== 1) {
      throw new TypeError(`process probe needs exactly one of name, cmdline, pid, pidFile (got ${given.join(", ") || "none"})`);
    }
    this.#opts = opts;
    this.#re = opts.cmdline === undefined ? undefined : new RegExp(opts.cmdline);
    this.#min = opts.min ?? 1;
    this.#max = opts.max ?? Number.POSITIVE_INFINITY;
    const key = given[0] as string;
    this.#what = `${key}=${String(opts[key as keyof ProcessProbeOptions])}`;
    this.name = `process:${String(opts[key as keyof ProcessProbeOptions])}`;
  }

  async run(signal: AbortSignal): Promise<ProbeResult> {
    const root = this.#opts.procRoot ?? "/proc";
    let pids: number[];
    if (this.#opts.pid !== undefined) {
      pids = [this.#opts.pid];
    } else if (this.#opts.pidFile !== undefined) {
      let text: string;
      try {
        text = await readFile(this.#opts.pidFile, { encoding: "utf8", signal });
      } catch (err) {
        return { ok: false, detail: `pid file ${this.#opts.pidFile} unreadable (${(err as NodeJS.ErrnoException).code ?? "error"})` };
      }
      const pid = Number.parseInt(text.trim(), 10);
      if (!Number.isInteger(pid) || pid <= 0) return { ok: false, detail: `pid file ${this.#opts.pidFile} holds no pid` };
      pids = [pid];
    } else {
      pids = (await readdir(root)).filter((d) => /^\d+$/.test(d)).map(Number).sort((a, b) => a - b);
    }
    // Filter every candidate in parallel on one small file (comm or cmdline), then check liveness of the hits.
    const candidates = pids.filter((pid) => pid !== process.pid);
    const matches = await mapBounded(candidates, READ_CONCURRENCY, signal, async (pid) => {
      if (this.#opts.name !== undefined) return (await readComm(root, pid)) === this.#opts.name;
      if (this.#re !== undefined) {
        const cmd = await readCmdline(root, pid);
        return cmd !== undefined && this.#re.test(cmd);
      }
      return true;
    });
    const hits = candidates.filter((_, i) => matches[i] === true);
    const live = await mapBounded(hits, READ_CONCURRENCY, signal, (pid) => isLive(root, pid));
    const alive = hits.filter((_, i) => live[i] === true);
    const count = alive.length;
    const matched = alive.slice(0, 5);
    const ok = count >= this.#min && count <= this.#max;
    const bounds =
      this.#max === Number.POSITIVE_INFINITY
        ? `at least ${this.#min}`
        : this.#min === this.#max
          ? `exactly ${this.#min}`
          : `${this.#min} to ${this.#max}`;
    const pidList = matched.length > 0 ? ` [${matched.join(",")}${count > matched.length ? ",..." : ""}]` : "";
    return { ok, detail: `process ${this.#what}: ${count} running${pidList}, expected ${bounds}` };
  }
}
