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

interface ProcInfo {
  readonly pid: number;
  readonly comm: string;
  readonly cmdline: string;
}

async function readProc(root: string, pid: number): Promise<ProcInfo | undefined> {
  try {
    const stat = await readFile(`${root}/${pid}/stat`, "utf8");
    // Format: "pid (comm) S ...": comm may hold spaces and parentheses, so split on the last ')'.
    const close = stat.lastIndexOf(")");
    const state = stat.slice(close + 2, close + 3);
    if (state === "Z" || state === "X" || state === "x") return undefined;
    const comm = stat.slice(stat.indexOf("(") + 1, close);
    const raw = await readFile(`${root}/${pid}/cmdline`, "utf8");
    const cmdline = raw.replace(/\0+$/, "").split("\0").join(" ");
    return { pid, comm, cmdline };
  } catch {
    return undefined; // gone meanwhile, or not readable
  }
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
      pids = (await readdir(root)).filter((d) => /^\d+$/.test(d)).map(Number);
    }
    let count = 0;
    const matched: number[] = [];
    for (const pid of pids) {
      if (signal.aborted) throw signal.reason;
      if (pid === process.pid) continue;
      const info = await readProc(root, pid);
      if (info === undefined) continue;
      const hit =
        this.#opts.name !== undefined ? info.comm === this.#opts.name : this.#re !== undefined ? this.#re.test(info.cmdline) : true;
      if (hit) {
        count++;
        if (matched.length < 5) matched.push(pid);
      }
    }
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
