/**
 * Custom probe: the user decides, with an async function (in code) or a script (in config files).
 *
 * - A function returns `true` (ok) or `false` (failed), or a {@link ProbeResult}; a throw is a failure with
 *   the error's message. It receives the run's `AbortSignal` and should stop when it aborts.
 * - A script (an executable and its arguments, or a shell command line) is ok when it exits with code 0.
 *   It runs in its own process group; at the timeout (the signal aborting) the **whole group** gets SIGKILL,
 *   so a script that started children (`sleep 100 &`) leaves nothing behind. The last line of its output
 *   goes into the failure detail.
 */
import { spawn } from "node:child_process";
import { messageOf, type Probe, type ProbeResult } from "./probe.js";

/** A user check in code. */
export type CustomCheckFunction = (signal: AbortSignal) => boolean | ProbeResult | Promise<boolean | ProbeResult>;

export interface CustomProbeOptions {
  /** The check as a function. Exactly one of `run`, `script`, `shell`. */
  readonly run?: CustomCheckFunction;
  /** The check as an executable (absolute path or a name found in PATH); exit code 0 means ok. */
  readonly script?: string;
  /** Arguments for `script`. */
  readonly args?: readonly string[];
  /** The check as a command line run by `/bin/sh -c`; exit code 0 means ok. */
  readonly shell?: string;
  /** Extra environment variables for `script`/`shell` (added to this process's environment). */
  readonly env?: Readonly<Record<string, string>>;
  /** Working directory for `script`/`shell`. Default: this process's. */
  readonly cwd?: string;
  /** Name of the probe, e.g. `custom:db-health`. Default: derived from the function name or the script. */
  readonly label?: string;
}

const TAIL = 200;

/** A user function or script. See {@link CustomProbeOptions}. */
export class CustomProbe implements Probe {
  readonly name: string;
  readonly #opts: CustomProbeOptions;

  constructor(opts: CustomProbeOptions) {
    const given = (["run", "script", "shell"] as const).filter((k) => opts[k] !== undefined);
    if (given.length !== 1) throw new TypeError(`custom probe needs exactly one of run, script, shell (got ${given.join(", ") || "none"})`);
    this.#opts = opts;
    const what = opts.script ?? opts.shell ?? (opts.run?.name || "function");
    this.name = `custom:${opts.label ?? what}`;
  }

  async run(signal: AbortSignal): Promise<ProbeResult> {
    const fn = this.#opts.run;
    if (fn !== undefined) {
      try {
        const r = await fn(signal);
        if (typeof r === "boolean") return { ok: r, detail: `${this.name} returned ${r}` };
        return r;
      } catch (err) {
        if (signal.aborted) throw err;
        return { ok: false, detail: `${this.name} threw: ${messageOf(err)}` };
      }
    }
    const argv =
      this.#opts.shell !== undefined ? ["/bin/sh", "-c", this.#opts.shell] : [this.#opts.script as string, ...(this.#opts.args ?? [])];
    return runScript(argv, this.#opts, signal, this.name);
  }
}

function runScript(argv: string[], opts: CustomProbeOptions, signal: AbortSignal, name: string): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const [file, ...args] = argv as [string, ...string[]];
    const child = spawn(file, args, {
      detached: true, // own process group: the timeout kills the script and everything it started
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env === undefined ? process.env : { ...process.env, ...opts.env },
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    });
    let tail = "";
    const keep = (chunk: Buffer): void => {
      tail = (tail + chunk.toString("utf8")).slice(-TAIL * 4);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const killGroup = (): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    };
    const onAbort = (): void => {
      killGroup();
      reject(signal.reason ?? new Error("aborted"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    child.once("error", (err) => {
      signal.removeEventListener("abort", onAbort);
      resolve({ ok: false, detail: `${name} could not start: ${messageOf(err)}` });
    });
    // Settle on "exit", not "close": a background child still holding the pipes must not delay the
    // verdict. Kill what is left of the group, then give the pipes a moment to drain the last output.
    child.once("exit", (code, sig) => {
      signal.removeEventListener("abort", onAbort);
      killGroup();
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        clearTimeout(cap);
        child.stdout.destroy();
        child.stderr.destroy();
        const last = tail.trim().split("\n").pop()?.slice(-TAIL) ?? "";
        const how = sig !== null ? `killed by ${sig}` : `exited with ${code}`;
        resolve({ ok: code === 0, detail: `${name} ${how}${last === "" ? "" : `: ${last}`}` });
      };
      const cap = setTimeout(finish, 100);
      child.once("close", finish);
    });
  });
}
