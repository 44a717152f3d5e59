/**
 * Hook scripts as real processes: arguments and environment, output captured into the module's log, a
 * failing script, and a hanging script (which started a background child and ignores SIGTERM) killed at
 * its timeout with its whole process group — no leftover process — and the module reacting as its restart
 * policy says. No namespaces needed; runs in the lab project because it spawns real processes.
 */
import { chmodSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Module, generateKey, runHook } from "holdfast";
import { groupAlive } from "holdfast/internals";
import { Lab } from "../../src/testing/lab.js";
import { MemoryModuleStore, MemoryVipDriver } from "../../src/testing/index.js";

const dir = mkdtempSync(join(tmpdir(), "hf-hooks-"));
const marker = `hfhook${process.pid}x${Date.now().toString(36)}`;

function script(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

/** Live (non-zombie) processes whose command line or environment carries the marker. */
function leftovers(): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
      if (state === "Z" || state === "X") continue;
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8");
      const env = readFileSync(`/proc/${name}/environ`, "utf8");
      if (cmd.includes(marker) || env.includes(marker)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe("hook scripts", () => {
  it("get state, next state and reason as arguments and environment; output is captured", async () => {
    const p = script("args.sh", 'echo "args: $1|$2|$3|$4"; echo "env: $HOLDFAST_MODULE $HOLDFAST_HOOK $HOLDFAST_STATE $HOLDFAST_NEXT_STATE $HOLDFAST_REASON"; echo "to stderr" >&2');
    const lines: string[] = [];
    const r = await runHook({
      module: "db",
      hook: "start_prim",
      spec: { path: p, args: ["--first"] },
      state: "WAIT",
      nextState: "ALONE",
      reason: "command prim",
      defaultTimeout: 5000,
      onOutput: (l, s) => lines.push(`${s}: ${l}`),
    });
    expect(r.ok).toBe(true);
    expect(r.detail).toMatch(/^exit 0 after \d+ms$/);
    expect(lines).toContain("stdout: args: --first|WAIT|ALONE|command prim");
    expect(lines).toContain("stdout: env: db start_prim WAIT ALONE command prim");
    expect(lines).toContain("stderr: to stderr");
  });

  it("a failing script reports its exit code and last line; a missing one is a failure too", async () => {
    const p = script("fail.sh", 'echo "cannot bind port 5432" >&2; exit 3');
    const r = await runHook({ module: "db", hook: "start_prim", spec: p, state: "WAIT", nextState: "ALONE", reason: "x", defaultTimeout: 5000 });
    expect(r).toMatchObject({ ok: false, code: 3, timedOut: false, detail: "exit code 3: cannot bind port 5432" });
    const m = await runHook({ module: "db", hook: "start_prim", spec: join(dir, "nope.sh"), state: "WAIT", nextState: "ALONE", reason: "x", defaultTimeout: 5000 });
    expect(m.ok).toBe(false);
    expect(m.detail).toContain("ENOENT");
  });

  it("a hanging script is killed at its timeout with its whole process group (even a child ignoring SIGTERM)", async () => {
    const p = script("hang.sh", `trap '' TERM; sleep 300 & echo "child $!"; MARK=${marker} sleep 301; echo never`);
    const started = performance.now();
    const r = await runHook({
      module: "db",
      hook: "start_prim",
      spec: { path: p, timeout: 400 },
      state: "WAIT",
      nextState: "ALONE",
      reason: "x",
      defaultTimeout: 60_000,
      killGraceMs: 300,
      env: { HF_MARK: marker },
    });
    const elapsed = performance.now() - started;
    expect(r.ok).toBe(false);
    expect(r.timedOut).toBe(true);
    expect(r.detail).toBe("timed out after 400ms (process group killed)");
    expect(elapsed).toBeGreaterThanOrEqual(400);
    expect(elapsed).toBeLessThan(4000);
    const child = Number(/child (\d+)/.exec(r.output.join("\n"))?.[1]);
    expect(child).toBeGreaterThan(0);
    expect(groupAlive(r.pid!)).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it("a module whose start hook hangs: killed at the timeout, restarted per policy, then stopped; output in the log", async () => {
    const hang = script("start-hang.sh", `echo "starting app"; sleep 300 & sleep 302`);
    const stop = script("stop.sh", 'echo "stopping app"');
    const logDir = mkdtempSync(join(tmpdir(), "hf-hooklog-"));
    const m = await Module.create(
      {
        name: "web",
        kind: "farm",
        hooks: { start_both: { path: hang, timeout: 300 }, stop_both: stop },
        restart: { maxloop: 1, loopInterval: 60_000 },
      },
      { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore(), logDir, killGraceMs: 200, hookEnv: { HF_MARK: marker } },
    );
    const hookResults: string[] = [];
    m.on("hook", (h, r) => hookResults.push(`${h} ${r.ok ? "ok" : r.detail}`));
    await m.start();
    const s = await m.waitFor("STOP", 15_000);
    expect(s.reason).toBe(
      "start_both failed: timed out after 300ms (process group killed); restart budget exhausted (1 of 1 in 1m) -> stop",
    );
    expect(hookResults).toEqual([
      "start_both timed out after 300ms (process group killed)",
      "stop_both ok",
      "start_both timed out after 300ms (process group killed)",
      "stop_both ok",
    ]);
    expect(leftovers()).toEqual([]);
    const log = readFileSync(join(logDir, "web.log"), "utf8");
    expect(log).toContain("hook start_both stdout: starting app");
    expect(log).toContain("hook stop_both stdout: stopping app");
    expect(log).toContain("hook start_both failed (timed out after 300ms (process group killed)) -> restart (1 of 1 in 1m)");
    await m.close();
  });
});

// ---- A module in a node namespace reacting to real faults -------------------------------------------
// The module runs inside lab node n0 (a small program spawned with lab.spawn), with script hooks that start
// and stop a real app process, an interface checker on eth0 (action wait) and a process checker on the app
// (action restart, maxloop 1). Faults: the link goes down (module -> WAIT, app stopped; back UP when the link
// returns), then the app is killed twice (restart, then budget exhausted -> STOP).
const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
const repo = join(import.meta.dirname, "..", "..");

describe.skipIf(!isRoot)("module in a namespace, real faults", () => {
  it("link down -> WAIT -> UP; app killed -> restart; killed again -> stop", async () => {
    const lab = await Lab.create({ nodes: 1, clients: 1 });
    try {
      const n0 = lab.nodes[0]!;
      const work = mkdtempSync(join(tmpdir(), "hf-modlab-"));
      const appTag = `hfapp-${marker}`;
      const pidFile = join(work, "app.pid");
      const start = script("lab-start.sh", `sh -c 'while :; do sleep 1; done' ${appTag} >/dev/null 2>&1 &\necho $! > ${pidFile}\necho "app started $!"`);
      const stop = script("lab-stop.sh", `[ -f ${pidFile} ] && kill $(cat ${pidFile}) 2>/dev/null; rm -f ${pidFile}; echo "app stopped"`);
      const program = join(work, "node.mts");
      writeFileSync(
        program,
        `import { Module, CheckerGroup } from ${JSON.stringify(join(repo, "src", "index.ts"))};
import { MemoryModuleStore, MemoryVipDriver } from ${JSON.stringify(join(repo, "src", "testing", "index.ts"))};
const m = await Module.create({
  name: "web", kind: "farm",
  hooks: { start_both: ${JSON.stringify(start)}, stop_both: ${JSON.stringify(stop)} },
  restart: { maxloop: 1, loopInterval: 600000 },
  checkers: [
    { type: "interface", name: "intf:eth0", interface: "eth0", action: "wait", interval: 100, timeout: 500, rise: 2, fall: 2 },
    { type: "process", name: "proc:app", cmdline: ${JSON.stringify(appTag)}, action: "restart", interval: 100, timeout: 500, rise: 1, fall: 2 },
  ],
}, { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
const group = new CheckerGroup(m.definition.checkers, "module web");
m.attachCheckers(group);
m.on("record", (r) => console.log("LOG " + r.text));
m.on("state", (s) => console.log("STATE " + s.state + (s.transient ? "->" + s.next : "") + " | " + s.reason));
group.start();
await m.start();
process.on("SIGTERM", async () => { await group.stop(); await m.close(); process.exit(0); });
`,
      );
      const p = lab.spawn(n0, [process.execPath, "--import", "tsx", program], { cwd: repo, env: { HF_MARK: marker } });
      await p.waitForLine(/^STATE UP \|/, 20_000);

      await lab.linkDown(n0);
      await p.waitForLine(/^LOG checker intf:eth0 failed .* -> wait$/, 10_000);
      await p.waitForLine(/^LOG hook stop_both stdout: app stopped$/, 10_000);
      await p.waitForLine(/^STATE WAIT \| intf:eth0 failed/, 10_000);
      await lab.linkUp(n0);
      await p.waitForLine(/^STATE UP \| checkers ok -> start$/, 10_000);

      const pid1 = Number(readFileSync(pidFile, "utf8").trim());
      process.kill(pid1, "SIGKILL");
      await p.waitForLine(/^LOG checker proc:app failed .* -> restart \(1 of 1 in 10m\)$/, 10_000);
      await p.waitForLine(/^STATE UP \| proc:app failed/, 10_000);
      const pid2 = Number(readFileSync(pidFile, "utf8").trim());
      expect(pid2).not.toBe(pid1);
      process.kill(pid2, "SIGKILL");
      await p.waitForLine(/^LOG checker proc:app failed .* -> stop \(restart budget exhausted: 1 of 1 in 10m\)$/, 10_000);
      await p.waitForLine(/^STATE STOP \| proc:app failed/, 10_000);
      p.kill("SIGTERM");
      await p.exited;
    } finally {
      await lab.destroy();
    }
    expect(leftovers()).toEqual([]);
  }, 90_000);
});

// ---- Two nodes in namespaces: membership over UDP + a mirror module; the primary's node crashes ----------
describe.skipIf(!isRoot)("mirror module over real membership in namespaces", () => {
  it("n0 primary, n1 in-sync secondary; kill -9 of n0's process: n1 ALONE and ready in < 1.5 s", async () => {
    const lab = await Lab.create({ nodes: 2, clients: 0 });
    try {
      const [n0, n1] = [lab.nodes[0]!, lab.nodes[1]!];
      const work = mkdtempSync(join(tmpdir(), "hf-mirlab-"));
      const hook = script("mir-hook.sh", 'echo "$HOLDFAST_HOOK $HOLDFAST_STATE -> $HOLDFAST_NEXT_STATE"');
      const program = join(work, "node.mts");
      writeFileSync(
        program,
        `import { Membership, Module, bindMembership } from ${JSON.stringify(join(repo, "src", "index.ts"))};
import { MemoryModuleStore, MemoryVipDriver } from ${JSON.stringify(join(repo, "src", "testing", "index.ts"))};
const id = process.env.NODE_ID!;
const membership = new Membership({
  clusterId: "modlab", nodeId: id, key: process.env.KEY!,
  nodes: [{ id: "n0", addresses: [${JSON.stringify(lab.addr(n0))}] }, { id: "n1", addresses: [${JSON.stringify(lab.addr(n1))}] }],
});
const hook = ${JSON.stringify(hook)};
const m = await Module.create({
  name: "db", kind: "mirror",
  hooks: { start_prim: hook, stop_prim: hook, start_second: hook, stop_second: hook },
  mirror: { defaultPrimary: "n0" },
}, { nodeId: id, vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
bindMembership(membership, [m]);
m.on("state", (s) => {
  console.log("STATE " + s.state + " " + (s.ready ? "ready" : "-") + (s.transient ? " transient" : "") + " " + Date.now() + " | " + s.reason);
  // No replication layer in this test: the secondary reports itself in sync shortly after it starts.
  if (s.state === "SECOND" && !s.transient) setTimeout(() => m.replication({ inSync: true }), 100);
});
await membership.start();
await m.start();
`,
      );
      const key = generateKey();
      const p0 = lab.spawn(n0, [process.execPath, "--import", "tsx", program], { cwd: repo, env: { NODE_ID: "n0", KEY: key, HF_MARK: marker } });
      const p1 = lab.spawn(n1, [process.execPath, "--import", "tsx", program], { cwd: repo, env: { NODE_ID: "n1", KEY: key, HF_MARK: marker } });
      await p0.waitForLine(/^STATE PRIM ready \d+/, 30_000);
      await p1.waitForLine(/^STATE SECOND ready \d+/, 30_000);

      const killedAt = Date.now();
      p0.kill("SIGKILL");
      const m = await p1.waitForLine(/^STATE ALONE ready (\d+) \| (.*)$/, 10_000);
      const failoverMs = Number(m[1]) - killedAt;
      console.log(`real failover (detection + hooks, LAN preset, namespaces): ${failoverMs} ms; cause: ${m[2]}`);
      expect(m[2]).toBe("primary lost -> failover");
      expect(failoverMs).toBeGreaterThan(0);
      expect(failoverMs).toBeLessThan(1500);
      p1.kill("SIGKILL");
      await p1.exited;
    } finally {
      await lab.destroy();
    }
    expect(leftovers()).toEqual([]);
  }, 90_000);
});

// ---- Split brain: the secondary that loses the network reaches no witness and does not go ALONE ------------
describe.skipIf(!isRoot)("split-brain witness in namespaces", () => {
  it("n1 (secondary) has its link cut: it loses n0 and the witness; it never goes ALONE, marks its copy outdated (WAIT) while n0 carries on ALONE", async () => {
    const lab = await Lab.create({ nodes: 2, clients: 1 });
    try {
      const [n0, n1, c0] = [lab.nodes[0]!, lab.nodes[1]!, lab.clients[0]!];
      const work = mkdtempSync(join(tmpdir(), "hf-sblab-"));
      const program = join(work, "node.mts");
      writeFileSync(
        program,
        `import { CheckerGroup, Membership, Module, bindMembership } from ${JSON.stringify(join(repo, "src", "index.ts"))};
import { MemoryModuleStore, MemoryVipDriver } from ${JSON.stringify(join(repo, "src", "testing", "index.ts"))};
const id = process.env.NODE_ID!;
const membership = new Membership({
  clusterId: "sblab", nodeId: id, key: process.env.KEY!,
  nodes: [{ id: "n0", addresses: [${JSON.stringify(lab.addr(n0))}] }, { id: "n1", addresses: [${JSON.stringify(lab.addr(n1))}] }],
});
const m = await Module.create({
  name: "db", kind: "mirror",
  hooks: { start_prim: async () => {}, start_second: async () => {} },
  checkers: [{ type: "split-brain", name: "split-brain:witness", witnesses: [${JSON.stringify(lab.addr(c0))}], interval: 100, timeout: 90, rise: 1, fall: 2 }],
  mirror: { defaultPrimary: "n0" },
}, { nodeId: id, vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
const group = new CheckerGroup(m.definition.checkers, "module db");
m.attachCheckers(group);
bindMembership(membership, [m]);
m.on("record", (r) => console.log("LOG " + r.text));
m.on("state", (s) => {
  console.log("STATE " + s.state + " " + (s.ready ? "ready" : "-") + (s.transient ? " transient" : "") + " | " + s.reason);
  if (s.state === "SECOND" && !s.transient) setTimeout(() => m.replication({ inSync: true }), 100);
});
group.start();
await membership.start();
await m.start();
`,
      );
      const key = generateKey();
      const p0 = lab.spawn(n0, [process.execPath, "--import", "tsx", program], { cwd: repo, env: { NODE_ID: "n0", KEY: key, HF_MARK: marker } });
      const p1 = lab.spawn(n1, [process.execPath, "--import", "tsx", program], { cwd: repo, env: { NODE_ID: "n1", KEY: key, HF_MARK: marker } });
      await p0.waitForLine(/^STATE PRIM ready/, 30_000);
      await p1.waitForLine(/^LOG checker split-brain:witness ok .* split-brain witness confirmed$/, 30_000);
      await p1.waitForLine(/^STATE SECOND ready/, 30_000);

      await lab.linkDown(n1);
      await p1.waitForLine(/^LOG checker split-brain:witness failed .* this node will not go ALONE$/, 10_000);
      await p1.waitForLine(/^LOG WARN: primary lost; split-brain witness unreachable .*: the primary may go on alone -> this copy is outdated /, 10_000);
      await p1.waitForLine(/^STATE WAIT /, 10_000);
      await p0.waitForLine(/^STATE ALONE ready \| secondary lost -> alone$/, 10_000);
      // An observation window well past membership's loss detection (about 0.6 s): n1 must not move.
      await new Promise((r) => setTimeout(r, 2000));
      p1.kill("SIGKILL");
      await p1.exited;
      const lines: string[] = [];
      for await (const l of p1.lines()) lines.push(l);
      const cut = lines.findIndex((l) => l.includes("this node will not go ALONE"));
      expect(cut).toBeGreaterThan(0);
      const after = lines.slice(cut);
      // DRBD's "outdated": n0 may go on alone on the other side of the cut, so n1 leaves the SECOND role for WAIT and
      // must never become primary (ALONE or PRIM) on its copy.
      const states = after.filter((l) => l.startsWith("STATE "));
      expect(states.some((l) => l.startsWith("STATE WAIT "))).toBe(true);
      expect(states.filter((l) => /^STATE (ALONE|PRIM) /.test(l))).toEqual([]);
      expect(after.some((l) => /ALONE \[|-> ALONE\]|transient -> ALONE/.test(l))).toBe(false);
      await lab.linkUp(n1);
      p0.kill("SIGKILL");
      await p0.exited;
    } finally {
      await lab.destroy();
    }
    expect(leftovers()).toEqual([]);
  }, 90_000);
});
