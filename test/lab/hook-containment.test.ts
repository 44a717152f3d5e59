/**
 * Hook containment with real processes (root: cgroups): a start hook daemonises a `sleep` (double fork, its own
 * session). When the host is SIGKILLed, its hook guard kills the sleep at once (cgroup and process-group modes); when
 * the guard is killed too, the sleep is left behind and the next Host on the same state directory kills it before
 * `start()` resolves and names it in the module's log. Also: an orderly stop kills a child the stop hook forgot
 * (and ends the guard without killing), and the process-group fallback finds a daemonised child that stayed in its
 * group. No namespaces needed.
 */
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Host, generateKey, runHook } from "holdfast";
import { HookUnit } from "../../src/runtime/containment.js";
import { hookGuardsOf } from "./helpers/hook-guards.js";

const isRoot = process.getuid?.() === 0;
const REPO = resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(join(tmpdir(), "hf-contain-"));
const tag = `${process.pid % 10000}${Date.now() % 100000}`;

function script(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

/** Live (non-zombie) processes whose command line is exactly `argv`. */
function find(argv: string[]): number[] {
  const want = argv.join("\0") + "\0";
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
      if (state === "Z" || state === "X") continue;
      if (readFileSync(`/proc/${name}/cmdline`, "utf8") === want) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function until<T>(what: string, f: () => T | undefined, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/**
 * Runs test/lab/helpers/containment-host.ts with `config` (module "app") in a child process and waits until its
 * start_prim hook's app (`appArgv`) runs; on a timeout the host is killed and its output quoted.
 */
async function startHost(config: object, appArgv: string[]): Promise<{ child: ReturnType<typeof spawn>; exited: Promise<unknown> }> {
  const child = spawn(process.execPath, ["--import", "tsx", join(REPO, "test/lab/helpers/containment-host.ts"), JSON.stringify(config), "app"], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr?.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise((r) => child.once("exit", r));
  try {
    await until("the app started by start_prim", () => (find(appArgv).length === 1 ? true : undefined), 30_000);
  } catch (e) {
    child.kill("SIGKILL");
    throw new Error(`${(e as Error).message}; host output: ${out}`, { cause: e });
  }
  return { child, exited };
}


/** Polls until none of `pids` is alive (zombies count as gone); the ms it took, or undefined after `ms`. */
async function goneWithin(pids: number[], ms: number): Promise<number | undefined> {
  const t0 = performance.now();
  for (;;) {
    const live = pids.filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        return !["Z", "X"].includes(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] as string);
      } catch {
        return false;
      }
    });
    if (live.length === 0) return performance.now() - t0;
    if (performance.now() - t0 > ms) return undefined;
    await new Promise((r) => setTimeout(r, 5));
  }
}

const logOf = (logDir: string, module: string) => (existsSync(join(logDir, `${module}.log`)) ? readFileSync(join(logDir, `${module}.log`), "utf8") : "");

afterAll(() => {
  // Whatever a failed test left (bounded: the sleeps are found by their unique arguments).
  for (const pid of [5, 6, 7, 8, 9].flatMap((d) => find(["sleep", `${d}${tag}`]))) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!isRoot)("hook processes are contained per module", () => {
  it("a daemon killed with SIGKILL: the next host kills the app its start hook daemonised before start() resolves", async () => {
    const sleepArgv = ["sleep", `9${tag}`];
    // Double fork into a new session: the app escapes the hook's process group and is reparented.
    const start = script("start.sh", `( setsid sleep 9${tag} >/dev/null 2>&1 </dev/null & ) ; echo "app started"`);
    const stop = script("stop.sh", "echo stop hook: forgets the app");
    const keyFile = join(dir, "cluster.key");
    writeFileSync(keyFile, generateKey() + "\n", { mode: 0o600 });
    const config = {
      cluster: { id: "contain", keyFile, port: 20000 + (process.pid % 20000), nodes: [{ id: "n1", addresses: ["127.0.0.1"] }] },
      node: "n1",
      modules: [{ name: "app", kind: "mirror" as const, hooks: { start_prim: start, stop_prim: stop } }],
      replication: { app: { mode: "none" as const } },
      stateDir: join(dir, "state"),
      logDir: join(dir, "logs"),
    };
    const { child, exited } = await startHost(config, sleepArgv);
    const [app] = find(sleepArgv) as [number];
    const log1 = logOf(config.logDir, "app");
    expect(log1).toMatch(/hook processes are contained in cgroup \/.*holdfast\.contain\.n1\.app\./);
    const cgroup = /contained in cgroup (\S+)/.exec(log1)?.[1] as string;
    expect(readFileSync(join(cgroup, "cgroup.procs"), "utf8").split("\n")).toContain(String(app));

    // The host dies with its guard (frozen first, so that it cannot start the guard again): the app stays.
    child.kill("SIGSTOP");
    const guards = hookGuardsOf(child.pid as number);
    expect(guards.length, "the host's hook guard").toBe(1);
    for (const g of guards) process.kill(g, "SIGKILL");
    child.kill("SIGKILL");
    await exited;
    await new Promise((r) => setTimeout(r, 200));
    expect(find(sleepArgv)).toEqual([app]);

    const host = new Host({ ...config, autostart: false });
    await host.start();
    try {
      // Gone before start() resolved, and named in the module's log.
      expect(find(sleepArgv)).toEqual([]);
      expect(logOf(config.logDir, "app")).toMatch(new RegExp(`left by a previous run: killing 1 leftover hook process: ${app} \\(sleep 9${tag}\\)`));
      expect(host.module("app").status.state).toBe("STOP");

      // An orderly stop: the stop hook forgets the app; what is left in the cgroup is killed.
      await host.module("app").start();
      await host.module("app").waitFor("WAIT", 10_000);
      await host.command("app", "prim", { force: true });
      await until("the app started again", () => (find(sleepArgv).length === 1 ? true : undefined));
      const [again] = find(sleepArgv) as [number];
      await host.module("app").waitFor((s) => s.ready && !s.transient, 20_000);
      await host.module("app").stop();
      await host.module("app").waitFor("STOP", 20_000);
      await until("the forgotten app killed", () => (find(sleepArgv).length === 0 ? true : undefined), 5000);
      expect(logOf(config.logDir, "app")).toMatch(new RegExp(`module stopped: killing 1 leftover hook process: ${again} \\(sleep 9${tag}\\)`));
    } finally {
      await host.stop();
    }
    expect(existsSync(cgroup)).toBe(false); // removed at an orderly shutdown
    // Its guard was released, not fired: it ends by itself.
    await until("the guard ended", () => (hookGuardsOf(process.pid).length === 0 ? true : undefined), 5000);
  });

  it("the guard: the app a start hook daemonised dies with the host (cgroup and process-group modes)", async () => {
    // cgroup mode: a Host in its own process, SIGKILLed.
    const sleepArgv = ["sleep", `6${tag}`];
    const start = script("gstart.sh", `( setsid sleep 6${tag} >/dev/null 2>&1 </dev/null & ) ; echo "app started"`);
    const keyFile = join(dir, "guard.key");
    writeFileSync(keyFile, generateKey() + "\n", { mode: 0o600 });
    const config = {
      cluster: { id: "guard", keyFile, port: 20000 + ((process.pid + 1) % 20000), nodes: [{ id: "n1", addresses: ["127.0.0.1"] }] },
      node: "n1",
      modules: [{ name: "app", kind: "mirror" as const, hooks: { start_prim: start } }],
      replication: { app: { mode: "none" as const } },
      stateDir: join(dir, "gstate"),
      logDir: join(dir, "glogs"),
    };
    const { child, exited } = await startHost(config, sleepArgv);
    expect(hookGuardsOf(child.pid as number).length, "the host's hook guard").toBe(1);
    const app = find(sleepArgv);
    child.kill("SIGKILL");
    const ms = await goneWithin(app, 1000);
    await exited;
    console.info(`hook guard (cgroup): app gone ${ms?.toFixed(0)} ms after the host's SIGKILL`);
    expect(ms, "the app gone within 1 s of the host's death").toBeDefined();
    HookUnit.open({ cluster: config.cluster.id, node: "n1", module: "app", stateDir: config.stateDir }).remove(); // its empty cgroup

    // Process-group mode: a unit without cgroups, its guard and a start hook in a small program, SIGKILLed.
    const prog = join(dir, "pgroup-guard.mts");
    const pgStart = script("pgguard.sh", `( sleep 5${tag} >/dev/null 2>&1 </dev/null & ) ; exit 0`);
    writeFileSync(
      prog,
      `import { HookUnit } from ${JSON.stringify(join(REPO, "src/runtime/containment.ts"))};
import { runHook } from ${JSON.stringify(join(REPO, "src/runtime/hooks.ts"))};
const unit = HookUnit.open({ cluster: "c", node: "n1", module: "pgg", stateDir: ${JSON.stringify(join(dir, "pgguard-state"))}, noCgroup: true });
unit.guard(() => undefined);
const r = await runHook({ module: "pgg", hook: "start_prim", spec: ${JSON.stringify(pgStart)}, state: "WAIT", nextState: "ALONE", reason: "t", defaultTimeout: 5000, env: unit.env() });
console.log(JSON.stringify({ ok: r.ok }));
setInterval(() => undefined, 1000);
`,
    );
    const pgChild = spawn(process.execPath, ["--import", "tsx", prog], { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] });
    const pgExited = new Promise((r) => pgChild.once("exit", r));
    try {
      await until("the sleep of the pgroup hook", () => (find(["sleep", `5${tag}`]).length === 1 ? true : undefined), 30_000);
    } catch (e) {
      pgChild.kill("SIGKILL");
      throw e;
    }
    const pgApp = find(["sleep", `5${tag}`]);
    pgChild.kill("SIGKILL");
    const pgMs = await goneWithin(pgApp, 1000);
    await pgExited;
    console.info(`hook guard (process groups): app gone ${pgMs?.toFixed(0)} ms after the program's SIGKILL`);
    expect(pgMs, "the app gone within 1 s of the program's death").toBeDefined();
  });

  it("a function hook's script hooks (as the mirror kind runs them) join the module's cgroup too", async () => {
    const unit = HookUnit.open({ cluster: "c", node: "n1", module: "fn", stateDir: join(dir, "fnstate") });
    expect(unit.mode).toBe("cgroup");
    const start = script("fnstart.sh", `( sleep 8${tag} >/dev/null 2>&1 </dev/null & ) ; exit 0`);
    const r = await runHook({
      module: "fn",
      hook: "start_prim",
      // A function hook that runs a script through runHook with its own environment (no HOLDFAST_CGROUP in it).
      spec: { fn: async () => void (await runHook({ module: "fn", hook: "start_prim", spec: start, state: "WAIT", nextState: "ALONE", reason: "t", defaultTimeout: 5000, env: { X: "1" } })) },
      state: "WAIT",
      nextState: "ALONE",
      reason: "t",
      defaultTimeout: 5000,
      env: unit.env(),
    });
    expect(r.ok).toBe(true);
    const [pid] = await until("the sleep", () => (find(["sleep", `8${tag}`]).length === 1 ? find(["sleep", `8${tag}`]) : undefined));
    expect(unit.leftovers().map((p) => p.pid)).toEqual([pid]);
    const notes: string[] = [];
    await unit.clean((level, line) => notes.push(`${level} ${line}`), "test");
    expect(find(["sleep", `8${tag}`])).toEqual([]);
    expect(notes[0]).toBe(`warn test: killing 1 leftover hook process: ${pid} (sleep 8${tag})`);
    unit.remove();
  });

  it("without cgroups: a daemonised child that stayed in the hook's process group is found by the next run", async () => {
    const stateDir = join(dir, "pgstate");
    const unit = HookUnit.open({ cluster: "c", node: "n1", module: "pg", stateDir, noCgroup: true });
    const start = script("pgstart.sh", `( sleep 7${tag} >/dev/null 2>&1 </dev/null & ) ; exit 0`);
    const r = await runHook({ module: "pg", hook: "start_prim", spec: start, state: "WAIT", nextState: "ALONE", reason: "t", defaultTimeout: 5000, env: unit.env() });
    expect(r.ok).toBe(true);
    const [pid] = await until("the sleep", () => (find(["sleep", `7${tag}`]).length === 1 ? find(["sleep", `7${tag}`]) : undefined));
    // The next run (a new unit on the same state directory) finds and kills it.
    const next = HookUnit.open({ cluster: "c", node: "n1", module: "pg", stateDir, noCgroup: true });
    const notes: string[] = [];
    const found = await next.clean((level, line) => notes.push(`${level} ${line}`), "left by a previous run");
    expect(found.map((p) => p.pid)).toEqual([pid]);
    expect(find(["sleep", `7${tag}`])).toEqual([]);
    expect(notes[0]).toMatch(/^warn left by a previous run: killing 1 leftover hook process/);
    expect(next.leftovers()).toEqual([]);
  });
});
