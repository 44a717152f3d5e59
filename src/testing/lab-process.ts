// Running commands and long-lived processes for the namespace lab (see lab.ts): one-shot commands with a
// timeout, and tracked processes in their own process group so that a signal reaches the process and
// every child it started, as a real machine crash or freeze would.
import { spawn } from "node:child_process";
import { constants as osConstants } from "node:os";
import { HoldfastError } from "../core/errors.js";

/** The outcome of a one-shot command. `code` is the exit status, `128 + n` when killed by signal n, 124 on timeout. */
export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** A lab host as the process layer needs it (the full type lives in lab.ts). */
export interface LabHost {
  /** Short name inside the lab: `n0`, `n1`, ... for nodes, `c0`, ... for clients. */
  readonly name: string;
  /** The network namespace's name (`<prefix><name>`), as listed by `ip netns list`. */
  readonly ns: string;
  readonly kind: "node" | "client";
  /** Index among hosts of the same kind (n3 has index 3). */
  readonly index: number;
}

/** A process running inside a lab host, in its own process group. */
export interface LabProcess {
  readonly pid: number;
  readonly host: LabHost;
  /** The command as given to `spawn` (without the `nsenter` wrapper), e.g. to start it again after a kill. */
  readonly argv: readonly string[];
  /** Settles when the process (the group leader) exits; never rejects. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Raw output streams. They are already flowing (the lab reads stdout into lines): attach `data` listeners. */
  stdout: NodeJS.ReadableStream;
  stderr: NodeJS.ReadableStream;
  /**
   * Every stdout line from the start of the process (the last {@link MAX_RETAINED_LINES} are retained), then
   * live lines; ends when stdout closes. Each call starts its own iteration.
   */
  lines(): AsyncIterable<string>;
  /**
   * Resolves with the first stdout line matching `re` that no earlier `waitForLine` call consumed (lines that
   * arrived before the call count too, so there is no race with a fast process). Rejects with a
   * {@link LabError} that quotes the tail of stdout and stderr on timeout or when stdout ends without a match.
   */
  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /**
   * Resolves once the leader exited and no process of its group is left (polled; rejects with a
   * {@link LabError} after `timeoutMs`, default 10 s). `exited` alone is not "gone": a killed leader is reaped
   * before the group members that still hold its sockets (e.g. `tsx` runs the script in a child process).
   */
  gone(timeoutMs?: number): Promise<void>;
  /** Signals the whole process group (default SIGKILL, a crash). No-op once the group is gone. */
  kill(signal?: NodeJS.Signals): void;
  /** SIGSTOP to the whole process group: the process freezes (a hung node) but keeps its sockets. */
  stop(): void;
  /** SIGCONT to the whole process group. */
  cont(): void;
}

/** A lab operation that failed: a setup command, a wait that timed out, a process that exited too early. */
export class LabError extends HoldfastError {
  constructor(code: `HOLDFAST_LAB_${string}`, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** How many stdout lines a {@link LabProcess} keeps for `lines()` and `waitForLine`. */
export const MAX_RETAINED_LINES = 10_000;
const TAIL_CHARS = 2_000;

function signalNumber(signal: NodeJS.Signals): number {
  return osConstants.signals[signal] ?? 0;
}

/** Sends `signal` to process group `pgid`; false when the group no longer exists. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  if (pgid <= 0) return false;
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/** How long {@link runCommand} waits for the output pipes to close after the command exited. */
const EXIT_GRACE_MS = 200;

/**
 * Runs `cmd args` to completion in its own process group, collecting output. Never throws or rejects:
 * a command that cannot start yields code 127, a timeout kills the whole group and yields code 124.
 * Background jobs the command leaves behind do not delay the result (see EXIT_GRACE_MS) and keep running.
 */
export function runCommand(
  cmd: string,
  args: readonly string[],
  opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let settled = false;
    const child = spawn(cmd, args, {
      detached: true,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            if (child.pid !== undefined) signalGroup(child.pid, "SIGKILL");
          }, opts.timeoutMs);
    const finish = (code: number, extra = ""): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") + extra, code });
    };
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) => finish(127, `${cmd}: ${e.message}\n`));
    const conclude = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (timedOut) finish(124, `[lab] ${cmd} timed out after ${opts.timeoutMs} ms\n`);
      else finish(code ?? (signal ? 128 + signalNumber(signal) : 1));
    };
    child.on("close", conclude);
    // A background job started by the command (`daemon &`) may keep the output pipes open: do not wait for
    // it. Shortly after the command itself exits, report what it wrote and let the job run on.
    child.on("exit", (code, signal) => {
      setTimeout(() => {
        if (settled) return;
        child.stdout?.destroy();
        child.stderr?.destroy();
        conclude(code, signal);
      }, EXIT_GRACE_MS).unref();
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on("error", () => undefined); // EPIPE when the command does not read its input
      child.stdin.end(opts.input);
    }
  });
}

/** Like {@link runCommand} but throws a {@link LabError} (with the command and its stderr) on a non-zero exit. */
export async function mustRun(
  cmd: string,
  args: readonly string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<string> {
  const r = await runCommand(cmd, args, { timeoutMs: 30_000, ...opts });
  if (r.code !== 0) {
    const inputNote = opts.input ? `\n--- input ---\n${opts.input.slice(0, 2_000)}` : "";
    throw new LabError(
      "HOLDFAST_LAB_COMMAND_FAILED",
      `lab set-up command failed (exit ${r.code}): ${[cmd, ...args].join(" ")}\n${r.stderr.trim()}${inputNote}`,
    );
  }
  return r.stdout;
}

/** Implementation of {@link LabProcess}; created by `Lab.spawn`. */
export class TrackedProcess implements LabProcess {
  readonly pid: number;
  readonly host: LabHost;
  readonly argv: readonly string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout: NodeJS.ReadableStream;
  stderr: NodeJS.ReadableStream;
  /** True once the leader exited and both output pipes closed (no group member holds them any more). */
  done = false;

  private readonly buf: string[] = [];
  /** Absolute index of buf[0] (lines dropped from the front so far). */
  private base = 0;
  private partial = "";
  private stdoutEnded = false;
  private cursor = 0;
  private errTail = "";
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private wakers = new Set<() => void>();

  constructor(host: LabHost, argv: readonly string[], cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string }) {
    this.host = host;
    this.argv = [...argv];
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", "pipe", "pipe"], env: opts.env, cwd: opts.cwd });
    this.pid = child.pid ?? -1;
    this.stdout = child.stdout;
    this.stderr = child.stderr;
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (s: string) => this.onStdout(s));
    child.stdout.on("end", () => this.onStdoutEnd());
    child.stdout.on("error", () => this.onStdoutEnd());
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (s: string) => {
      this.errTail = (this.errTail + s).slice(-TAIL_CHARS);
    });
    this.exited = new Promise((resolve) => {
      child.on("error", (e) => {
        this.errTail += `[lab] spawn failed: ${e.message}\n`;
        this.exitInfo = { code: null, signal: null };
        this.onStdoutEnd();
        this.done = true;
        resolve(this.exitInfo);
      });
      child.on("exit", (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
        this.wake();
      });
      child.on("close", () => {
        this.done = true;
      });
    });
  }

  private wake(): void {
    const w = [...this.wakers];
    this.wakers.clear();
    for (const f of w) f();
  }

  private push(line: string): void {
    this.buf.push(line);
    if (this.buf.length > MAX_RETAINED_LINES * 2) {
      const drop = this.buf.length - MAX_RETAINED_LINES;
      this.buf.splice(0, drop);
      this.base += drop;
    }
  }

  private onStdout(s: string): void {
    const parts = (this.partial + s).split("\n");
    this.partial = parts.pop() ?? "";
    for (const p of parts) this.push(p.endsWith("\r") ? p.slice(0, -1) : p);
    this.wake();
  }

  private onStdoutEnd(): void {
    if (this.stdoutEnded) return;
    if (this.partial !== "") this.push(this.partial);
    this.partial = "";
    this.stdoutEnded = true;
    this.wake();
  }

  private next(): Promise<void> {
    return new Promise((r) => this.wakers.add(r));
  }

  lines(): AsyncIterable<string> {
    return {
      [Symbol.asyncIterator]: async function* (this: TrackedProcess) {
        let i = this.base;
        for (;;) {
          if (i < this.base) i = this.base;
          const idx = i - this.base;
          if (idx < this.buf.length) {
            i++;
            yield this.buf[idx] as string;
            continue;
          }
          if (this.stdoutEnded) return;
          await this.next();
        }
      }.bind(this),
    };
  }

  /** The last lines of stdout and stderr, for error messages. */
  tail(lines = 20): string {
    const out = this.buf.slice(-lines).join("\n") + (this.partial ? `\n${this.partial}` : "");
    return `--- stdout (tail) ---\n${out}\n--- stderr (tail) ---\n${this.errTail}`;
  }

  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const plain = new RegExp(re.source, re.flags.replace(/[gy]/g, ""));
    return new Promise((resolve, reject) => {
      let over = false;
      const timer = setTimeout(() => {
        over = true;
        this.wake();
      }, timeoutMs);
      const what = `${this.host.name} [${this.argv.join(" ").slice(0, 120)}] (pid ${this.pid})`;
      const loop = async (): Promise<void> => {
        for (;;) {
          if (this.cursor < this.base) this.cursor = this.base;
          while (this.cursor - this.base < this.buf.length) {
            const line = this.buf[this.cursor - this.base] as string;
            this.cursor++;
            const m = plain.exec(line);
            if (m) {
              clearTimeout(timer);
              resolve(m);
              return;
            }
          }
          if (over) {
            reject(new LabError("HOLDFAST_LAB_WAIT_TIMEOUT", `no line matching ${re} from ${what} within ${timeoutMs} ms\n${this.tail()}`));
            return;
          }
          if (this.stdoutEnded) {
            clearTimeout(timer);
            const ex = this.exitInfo ?? (await this.exited);
            reject(
              new LabError(
                "HOLDFAST_LAB_PROCESS_EXITED",
                `${what} ended (code ${ex.code}, signal ${ex.signal}) without a line matching ${re}\n${this.tail()}`,
              ),
            );
            return;
          }
          await this.next();
        }
      };
      void loop();
    });
  }

  async gone(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await this.exited;
    // Signal 0 probes the group without touching it: false (ESRCH) once every member has been reaped.
    while (signalGroup(this.pid, 0 as unknown as NodeJS.Signals)) {
      if (Date.now() > deadline) throw new LabError("HOLDFAST_LAB_WAIT", `process group ${this.pid} (${this.argv.join(" ")}) still has members ${timeoutMs} ms after its leader exited`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    signalGroup(this.pid, signal);
  }

  stop(): void {
    signalGroup(this.pid, "SIGSTOP");
  }

  cont(): void {
    signalGroup(this.pid, "SIGCONT");
  }
}
