/**
 * Process probe (SafeKit's `errd`): the application's processes exist, at least `min` and at most `max`
 * of them. Reads `/proc` directly (no `ps` output to parse). Zombies do not count: a killed process that
 * its parent has not reaped yet is dead for us. The probing process itself is never counted (its own
 * command line may contain the pattern).
 */
import { readdirSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
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
function isLive(root: string, pid: number): boolean {
  try {
    const stat = readFileSync(`${root}/${pid}/stat`, "utf8");
    // Format: "pid (comm) S ...": comm may hold spaces and parentheses, so look after the last ')'.
    const close = stat.lastIndexOf(")");
    const state = stat.slice(close + 2, close + 3);
    return state !== "Z" && state !== "X" && state !== "x";
  } catch {
    return false; // gone meanwhile
  }
}

/** `/proc/PID/comm` without its newline, or undefined when the process is gone. */
function readComm(root: string, pid: number): string | undefined {
  try {
    return readFileSync(`${root}/${pid}/comm`, "utf8").replace(/\n$/, "");
  } catch {
    return undefined;
  }
}

/** The command line, arguments joined by spaces ("" for kernel threads and zombies). */
function readCmdline(root: string, pid: number): string | undefined {
  try {
    return readFileSync(`${root}/${pid}/cmdline`, "utf8").replace(/\0+$/, "").split("\0").join(" ");
  } catch {
    return undefined;
  }
}

/**
 * Processes examined between two yields to the event loop. /proc files live in memory: a synchronous read
 * takes about 10-20 us, against 100+ us through the libuv thread pool (shared with every other file and DNS
 * operation of the daemon). Reading in slices keeps each event-loop block near 1 ms, so heartbeats sent by
 * the same process are not delayed, while a scan of a few hundred processes takes a few ms instead of tens.
 */
const SLICE = 64;

/** The pids for which `test` holds, examined in slices with a yield between slices; throws when aborted. */
async function filterSliced(pids: readonly number[], signal: AbortSignal, test: (pid: number) => boolean): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < pids.length; i += SLICE) {
    if (i > 0) await new Promise<void>((r) => setImmediate(r));
    if (signal.aborted) throw signal.reason;
    for (let j = i; j < Math.min(i + SLICE, pids.length); j++) {
      const pid = pids[j] as number;
      if (test(pid)) out.push(pid);
    }
  }
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
      pids = readdirSync(root).filter((d) => /^\d+$/.test(d)).map(Number).sort((a, b) => a - b);
    }
    // First filter on one small file (comm or cmdline), then check that the hits are alive.
    const candidates = pids.filter((pid) => pid !== process.pid);
    const hits = await filterSliced(candidates, signal, (pid) => {
      if (this.#opts.name !== undefined) return readComm(root, pid) === this.#opts.name;
      if (this.#re !== undefined) {
        const cmd = readCmdline(root, pid);
        return cmd !== undefined && this.#re.test(cmd);
      }
      return true;
    });
    const alive = await filterSliced(hits, signal, (pid) => isLive(root, pid));
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
