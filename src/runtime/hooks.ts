/**
 * The hook runner: runs one module hook, either an async function or a script, with a timeout.
 *
 * Scripts are started in their own process group (`detached`), with the current state, the next state
 * and the reason appended to their arguments and set in the environment (`HOLDFAST_MODULE`,
 * `HOLDFAST_HOOK`, `HOLDFAST_STATE`, `HOLDFAST_NEXT_STATE`, `HOLDFAST_REASON`).
 *
 * A script's environment is built, never inherited whole (see {@link hookEnvironment}): the fixed list
 * {@link HOOK_ENV_KEEP} from this process's environment, the variables the module's `hookEnv` passes or sets, the
 * request's `env` (the host's `HOLDFAST_NODE`, `HOLDFAST_CLUSTER` and containment variable, the mirror kind's
 * `HOLDFAST_MOUNT`), and the five above. So a secret of the daemon (`HOLDFAST_TOKEN`) never reaches a hook.
 * A script run through `runHook` from inside a function hook gets the function hook's environment too.
 *
 * At the timeout (or on
 * cancel) the whole group gets SIGTERM, then SIGKILL after `killGraceMs`, so that children the script
 * started (an app launched in the background by a start script that then hangs) go too. Every output
 * line is passed to `onOutput` (the module's event log) and the last lines are kept in the result.
 *
 * Containment (see containment.ts): when the environment names the module's cgroup (`HOLDFAST_CGROUP`), a script
 * joins it before it runs (`sh -c 'echo $$ > cgroup.procs && exec "$@"'`), so everything it forks, daemonised or
 * not, stays findable after a crash of the host; with `HOLDFAST_PGROUP_RECORD` its process group is recorded
 * there instead. A function hook runs in the host's own process (not contained: the host dies with it); script
 * hooks it runs through `runHook` inherit its unit.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { spawn } from "node:child_process";
import { accessSync, constants, readFileSync, readdirSync } from "node:fs";
import { CGROUP_ENV, PGROUP_ENV, recordGroup } from "./containment.js";
import type { HookEnv, HookName, HookSpec, ModuleState } from "../core/module/index.js";

export interface HookRunRequest {
  readonly module: string;
  readonly hook: HookName;
  readonly spec: HookSpec;
  readonly state: ModuleState;
  readonly nextState: ModuleState;
  readonly reason: string;
  /** Timeout, ms, when the spec has none. */
  readonly defaultTimeout: number;
  /** SIGTERM -> SIGKILL delay, ms. Default 1000. */
  readonly killGraceMs?: number;
  /** Variables set for scripts on purpose (the host's `HOLDFAST_NODE`, ...); the rest is built by {@link hookEnvironment}. */
  readonly env?: Readonly<Record<string, string>>;
  /** Aborting cancels the hook (forcestop): the process group is killed. */
  readonly signal?: AbortSignal;
  readonly onOutput?: (line: string, stream: "stdout" | "stderr") => void;
}

export interface HookResult {
  readonly ok: boolean;
  /** e.g. `exit 0 after 12ms`, `exit code 3: <last line>`, `timed out after 5000ms (process group killed)`. */
  readonly detail: string;
  readonly timedOut: boolean;
  readonly cancelled: boolean;
  /** Exit code of a script, when it exited. */
  readonly code: number | null;
  readonly durationMs: number;
  /** The last output lines (at most 50). */
  readonly output: readonly string[];
  /** Process id of a script (its process group id too). */
  readonly pid?: number;
}

const KEEP_LINES = 50;
const MAX_LINE = 2000;

/** The unit of the hook being run: a script joins it (cgroup) or records its process group in it (pgroup). */
type Unit = { readonly cgroup: string } | { readonly pgroupFile: string };
/** What the script hooks a function hook runs inherit from it: its unit, its request's env, its module's hookEnv. */
interface Outer {
  readonly unit: Unit | undefined;
  readonly env: Readonly<Record<string, string>>;
  readonly hookEnv: HookEnv | undefined;
}
/** The function hook in progress, for the script hooks it runs (the mirror kind's script hooks). */
const outerHook = new AsyncLocalStorage<Outer | undefined>();

function unitOf(req: HookRunRequest): Unit | undefined {
  const cg = req.env?.[CGROUP_ENV];
  if (cg) return { cgroup: cg };
  const pg = req.env?.[PGROUP_ENV];
  if (pg) return { pgroupFile: pg };
  return outerHook.getStore()?.unit;
}

/**
 * The variables every script hook gets from this process's environment (when set there): what a shell script needs
 * to find its commands and to read and print text the way the machine is set up. `LC_*` is every locale variable.
 */
export const HOOK_ENV_KEEP: readonly string[] = ["PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_*"];
/** PATH when this process has none (as a login shell of root would have). */
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const matches = (pattern: string, name: string) => (pattern.endsWith("*") ? name.startsWith(pattern.slice(0, -1)) : name === pattern);

/**
 * A script hook's whole environment: from `from` (the daemon's environment) only the {@link HOOK_ENV_KEEP} variables
 * and those `hookEnv.pass` names (never a `HOLDFAST_*` one), then `hookEnv.set`, then `holdfast` (holdfast's own
 * variables, set on purpose by the runner, the host and the kinds).
 */
export function hookEnvironment(
  from: NodeJS.ProcessEnv,
  hookEnv: HookEnv | undefined,
  holdfast: Readonly<Record<string, string>>,
): Record<string, string> {
  const out: Record<string, string> = {};
  const patterns = [...HOOK_ENV_KEEP, ...(hookEnv?.pass ?? [])];
  for (const [k, v] of Object.entries(from)) {
    if (v === undefined || k.startsWith("HOLDFAST_")) continue;
    if (patterns.some((p) => matches(p, k))) out[k] = v;
  }
  out.PATH ??= DEFAULT_PATH;
  return { ...out, ...(hookEnv?.set ?? {}), ...holdfast };
}

const envOf = (spec: HookSpec): HookEnv | undefined => (typeof spec === "object" ? spec.env : undefined);

/**
 * Joins the cgroup directory $0 (made again if something removed it), then runs the hook; a failed join fails the
 * hook rather than run it uncontained.
 */
const JOIN_CGROUP = 'mkdir -p "$0" 2>/dev/null; echo $$ > "$0/cgroup.procs" || { echo "holdfast: cannot join cgroup $0" >&2; exit 126; }; exec "$@"';

/** Runs one hook. Never throws: every failure is a result with `ok: false`. */
export async function runHook(req: HookRunRequest): Promise<HookResult> {
  const spec = req.spec;
  const unit = unitOf(req);
  const outer = outerHook.getStore();
  // The enclosing function hook's variables and hookEnv, unless this request names its own.
  const env = { ...(outer?.env ?? {}), ...(req.env ?? {}) };
  const hookEnv = envOf(spec) ?? outer?.hookEnv;
  const inner: Outer = { unit, env, hookEnv };
  if (typeof spec === "function") return outerHook.run(inner, () => runFunction(req, spec, req.defaultTimeout));
  if (typeof spec === "string") return runScript(req, spec, [], req.defaultTimeout, inner);
  if ("fn" in spec) return outerHook.run(inner, () => runFunction(req, spec.fn, spec.timeout ?? req.defaultTimeout));
  return runScript(req, spec.path, spec.args ?? [], spec.timeout ?? req.defaultTimeout, inner);
}

async function runFunction(
  req: HookRunRequest,
  fn: Extract<HookSpec, (...a: never[]) => unknown>,
  timeout: number,
): Promise<HookResult> {
  const started = performance.now();
  const ac = new AbortController();
  const output: string[] = [];
  const log = (line: string) => {
    keep(output, line);
    req.onOutput?.(line, "stdout");
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const outcome = await new Promise<{ kind: "ok" | "error" | "timeout" | "cancel"; message?: string }>((resolve) => {
    timer = setTimeout(() => {
      ac.abort(new Error(`hook ${req.hook} timed out after ${timeout}ms`));
      resolve({ kind: "timeout" });
    }, timeout);
    onAbort = () => {
      ac.abort(new Error(`hook ${req.hook} cancelled`));
      resolve({ kind: "cancel" });
    };
    if (req.signal?.aborted) onAbort();
    req.signal?.addEventListener("abort", onAbort, { once: true });
    Promise.resolve()
      .then(() =>
        fn({
          module: req.module,
          hook: req.hook,
          state: req.state,
          nextState: req.nextState,
          reason: req.reason,
          signal: ac.signal,
          log,
        }),
      )
      .then(
        () => resolve({ kind: "ok" }),
        (e: unknown) => resolve({ kind: "error", message: e instanceof Error ? e.message : String(e) }),
      );
  });
  clearTimeout(timer);
  if (onAbort) req.signal?.removeEventListener("abort", onAbort);
  const durationMs = Math.round(performance.now() - started);
  const base = { code: null, durationMs, output };
  switch (outcome.kind) {
    case "ok":
      return { ...base, ok: true, detail: `returned after ${durationMs}ms`, timedOut: false, cancelled: false };
    case "error":
      return { ...base, ok: false, detail: `threw: ${outcome.message}`, timedOut: false, cancelled: false };
    case "timeout":
      return { ...base, ok: false, detail: `timed out after ${timeout}ms (signal aborted)`, timedOut: true, cancelled: false };
    case "cancel":
      return { ...base, ok: false, detail: "cancelled", timedOut: false, cancelled: true };
  }
}

function keep(lines: string[], line: string): void {
  lines.push(line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}...` : line);
  if (lines.length > KEEP_LINES) lines.shift();
}

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // the group is gone already
  }
}

/**
 * True while any live process of the group `pgid` exists. Zombies do not count: a killed grandchild
 * waits for its new parent (PID 1 or a subreaper) to reap it, which may never happen in a container.
 */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return true; // no procfs: trust kill(0)
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue;
    }
    // pid (comm) state ppid pgrp ...: comm may contain spaces and parentheses, so parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(rest[2]) === pgid && rest[0] !== "Z" && rest[0] !== "X") return true;
  }
  return false;
}

async function runScript(req: HookRunRequest, path: string, args: readonly string[], timeout: number, ctx: Outer): Promise<HookResult> {
  const started = performance.now();
  const output: string[] = [];
  const grace = req.killGraceMs ?? 1000;
  const unit = ctx.unit;
  const env = hookEnvironment(process.env, ctx.hookEnv, {
    // The unit the script runs in, also when inherited from an enclosing function hook.
    ...(unit ? ("cgroup" in unit ? { [CGROUP_ENV]: unit.cgroup } : { [PGROUP_ENV]: unit.pgroupFile }) : {}),
    ...ctx.env,
    HOLDFAST_MODULE: req.module,
    HOLDFAST_HOOK: req.hook,
    HOLDFAST_STATE: req.state,
    HOLDFAST_NEXT_STATE: req.nextState,
    HOLDFAST_REASON: req.reason,
  });
  return new Promise<HookResult>((resolve) => {
    let settled = false;
    let timedOut = false;
    let cancelled = false;
    let exitCode: number | null = null;
    let exitSignal: NodeJS.Signals | null = null;
    let killTimer: ReturnType<typeof setTimeout> | undefined;
    let spawnError: Error | undefined;
    const argv = [...args, req.state, req.nextState, req.reason];
    let cmd = path;
    if (unit && "cgroup" in unit) {
      // Through sh, a missing script would be sh's exit 127: say it as a direct spawn would.
      if (path.includes("/")) {
        try {
          accessSync(path, constants.X_OK);
        } catch (e) {
          spawnError = e as Error;
        }
      }
      cmd = "/bin/sh";
      argv.unshift("-c", JOIN_CGROUP, unit.cgroup, path);
    }
    const child = spawnError
      ? undefined
      : spawn(cmd, argv, {
          detached: true,
          stdio: ["ignore", "pipe", "pipe"],
          env,
        });
    const pid = child?.pid;
    if (pid !== undefined && unit && "pgroupFile" in unit) recordGroup(unit.pgroupFile, pid);
    const partial = { stdout: "", stderr: "" };
    const onData = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
      const text = partial[stream] + chunk.toString("utf8");
      const parts = text.split("\n");
      partial[stream] = parts.pop() ?? "";
      for (const line of parts) {
        keep(output, line);
        req.onOutput?.(line, stream);
      }
    };
    child?.stdout?.on("data", onData("stdout"));
    child?.stderr?.on("data", onData("stderr"));

    const terminate = () => {
      if (pid === undefined) return;
      killGroup(pid, "SIGTERM");
      killTimer = setTimeout(() => killGroup(pid, "SIGKILL"), grace);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      terminate();
    }, timeout);
    const onAbort = () => {
      cancelled = true;
      terminate();
    };
    if (req.signal?.aborted) onAbort();
    req.signal?.addEventListener("abort", onAbort, { once: true });

    const finish = async () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal?.removeEventListener("abort", onAbort);
      for (const s of ["stdout", "stderr"] as const) {
        if (partial[s]) {
          keep(output, partial[s]);
          req.onOutput?.(partial[s], s);
          partial[s] = "";
        }
      }
      // A timed-out or cancelled script's group must be gone before we report (no leftover process).
      if ((timedOut || cancelled) && pid !== undefined) {
        const deadline = performance.now() + grace + 2000;
        while (groupAlive(pid) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        if (groupAlive(pid)) killGroup(pid, "SIGKILL");
      }
      clearTimeout(killTimer);
      const durationMs = Math.round(performance.now() - started);
      const last = output.length > 0 ? `: ${output[output.length - 1]}` : "";
      let detail: string;
      if (spawnError) detail = `cannot run ${path}: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`;
      else if (timedOut) detail = `timed out after ${timeout}ms (process group killed)`;
      else if (cancelled) detail = "cancelled (process group killed)";
      else if (exitCode === 0) detail = `exit 0 after ${durationMs}ms`;
      else if (exitSignal) detail = `killed by ${exitSignal}${last}`;
      else detail = `exit code ${exitCode}${last}`;
      resolve({
        ok: !spawnError && !timedOut && !cancelled && exitCode === 0,
        detail,
        timedOut,
        cancelled,
        code: exitCode,
        durationMs,
        output,
        ...(pid !== undefined ? { pid } : {}),
      });
    };
    if (!child) {
      queueMicrotask(() => void finish());
      return;
    }
    child.on("error", (e) => {
      spawnError = e;
      void finish();
    });
    child.on("exit", (code, signal) => {
      exitCode = code;
      exitSignal = signal;
      // Give the pipes a moment to drain; a grandchild that escaped the group must not hold us forever.
      const drain = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        void finish();
      }, 200);
      child.on("close", () => {
        clearTimeout(drain);
        void finish();
      });
    });
  });
}
