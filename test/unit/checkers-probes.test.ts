// Probes that need no network traffic: process (/proc), custom (functions and scripts), module (function
// source), and read-only netlink queries of interface/ip on this namespace's loopback. The network probes
// (tcp, ping, split-brain, module over HTTP) and the fault injections run in namespaces: test/lab/checkers.test.ts.
import { afterEach, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, read, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProcessProbe } from "../../src/checkers/process.js";
import { CustomProbe } from "../../src/checkers/custom.js";
import { ModuleProbe } from "../../src/checkers/module.js";
import { InterfaceProbe } from "../../src/checkers/interface.js";
import { IpProbe, canonicalAddress } from "../../src/checkers/ip.js";
import { CheckerRunner } from "../../src/checkers/runner.js";
import type { Probe, ProbeResult } from "../../src/checkers/probe.js";
import { runUnprivileged } from "./helpers/unprivileged.js";

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

function sleeper(marker: string): ChildProcess {
  // `sleep` with a unique argument so the command-line regex matches only these processes.
  const c = spawn("sleep", [`30.${marker}`], { stdio: "ignore" });
  children.push(c);
  return c;
}

function once(p: Probe, ms = 2000): Promise<ProbeResult> {
  return p.run(AbortSignal.timeout(ms));
}

async function exited(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  await new Promise((r) => c.once("exit", r));
}

/** Alive = exists and is not a zombie (a killed orphan may wait a while for its reaper). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

describe("ProcessProbe", () => {
  it("counts processes by command line, with at least / at most bounds", async () => {
    const marker = `${process.pid}${Date.now() % 100000}`;
    const re = `^sleep 30\\.${marker}$`;
    expect(await once(new ProcessProbe({ cmdline: re }))).toMatchObject({ ok: false, detail: expect.stringContaining("0 running") });
    const a = sleeper(marker);
    const b = sleeper(marker);
    expect(await once(new ProcessProbe({ cmdline: re }))).toMatchObject({ ok: true, detail: expect.stringContaining("2 running") });
    expect((await once(new ProcessProbe({ cmdline: re, min: 3 }))).ok).toBe(false);
    expect((await once(new ProcessProbe({ cmdline: re, max: 1 }))).detail).toMatch(/2 running .*expected 1 to 1|2 running .*expected exactly 1/);
    a.kill("SIGKILL");
    await exited(a);
    const r = await once(new ProcessProbe({ cmdline: re, min: 1, max: 1 }));
    expect(r).toMatchObject({ ok: true });
    expect(r.detail).toContain(`[${b.pid}]`);
  });

  it("watches a pid and a pid file, and by comm name", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-proc-"));
    try {
      const c = sleeper(`${Date.now()}`);
      const pid = c.pid as number;
      const pidFile = join(dir, "app.pid");
      writeFileSync(pidFile, `${pid}\n`);
      expect((await once(new ProcessProbe({ pid }))).ok).toBe(true);
      expect((await once(new ProcessProbe({ pidFile }))).ok).toBe(true);
      const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      expect((await once(new ProcessProbe({ name: comm }))).ok).toBe(true);
      c.kill("SIGKILL");
      await exited(c);
      expect(await once(new ProcessProbe({ pid }))).toMatchObject({ ok: false, detail: expect.stringContaining("0 running") });
      expect((await once(new ProcessProbe({ pidFile }))).ok).toBe(false);
      expect((await once(new ProcessProbe({ pidFile: join(dir, "missing.pid") }))).detail).toContain("unreadable (ENOENT)");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("does not count a zombie (killed, not yet reaped)", async () => {
    // A shell whose child is killed while the shell is stopped: the child stays a zombie until reaped.
    const marker = `${Date.now() % 1000000}9`;
    const sh = spawn("sh", ["-c", `sleep 30.${marker} & echo $!; kill -STOP $$; wait`], { stdio: ["ignore", "pipe", "ignore"] });
    children.push(sh);
    const pid = Number((await new Promise<Buffer>((r) => sh.stdout?.once("data", r))).toString().trim());
    const re = `^sleep 30\\.${marker}$`;
    expect(await until(() => readFileSync(`/proc/${sh.pid}/stat`, "utf8").includes(") T "), 2000)).toBe(true);
    // The background child may not have exec'd sleep yet (still a forked sh): wait for its command line.
    expect(await until(() => readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("sleep\0"), 2000)).toBe(true);
    expect((await once(new ProcessProbe({ cmdline: re }))).ok).toBe(true);
    process.kill(pid, "SIGKILL");
    expect(await until(() => readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z "), 2000)).toBe(true);
    expect((await once(new ProcessProbe({ pid }))).ok).toBe(false);
    sh.kill("SIGKILL");
  });
});

describe("ProcessProbe on a synthetic /proc", () => {
  it("counts exactly among 3000 processes, with odd names, zombies excluded, pids listed in order", async () => {
    const root = mkdtempSync(join(tmpdir(), "hf-fakeproc-"));
    try {
      for (let pid = 1; pid <= 3000; pid++) {
        const mine = pid % 30 === 0; // 100 processes
        const zombie = mine && pid % 300 === 0; // 10 of them
        const comm = mine ? "my app) (x" : `worker${pid}`;
        const dir = join(root, String(pid));
        mkdirSync(dir);
        writeFileSync(join(dir, "stat"), `${pid} (${comm}) ${zombie ? "Z" : "S"} 1 ${pid} ${pid} 0 -1`);
        writeFileSync(join(dir, "comm"), `${comm}\n`);
        writeFileSync(join(dir, "cmdline"), zombie ? "" : mine ? "/usr/bin/my-app\x00--port\x008080\x00" : `/usr/bin/worker\x00${pid}\x00`);
      }
      const byName = await once(new ProcessProbe({ name: "my app) (x", procRoot: root }), 10_000);
      expect(byName.detail).toMatch(/^process name=my app\) \(x: 90 running \[30,60,90,120,150,\.\.\.\], expected at least 1$/);
      const byCmd = await once(new ProcessProbe({ cmdline: "^/usr/bin/my-app --port 8080$", procRoot: root, max: 89 }), 10_000);
      expect(byCmd).toMatchObject({ ok: false, detail: expect.stringContaining("90 running") });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("CustomProbe", () => {
  it("a function's boolean, result or throw decides", async () => {
    expect(await once(new CustomProbe({ run: async () => true }))).toMatchObject({ ok: true });
    expect(await once(new CustomProbe({ run: () => false, label: "db" }))).toEqual({ ok: false, detail: "custom:db returned false" });
    expect(await once(new CustomProbe({ run: () => ({ ok: false, detail: "3 replicas lagging" }) }))).toEqual({ ok: false, detail: "3 replicas lagging" });
    const thrower = new CustomProbe({
      run: async () => {
        throw new Error("connection pool exhausted");
      },
    });
    expect((await once(thrower)).detail).toContain("threw: connection pool exhausted");
  });

  it("a script's exit code decides and its last output line is the detail", async () => {
    expect(await once(new CustomProbe({ shell: "echo fine; exit 0" }))).toMatchObject({ ok: true, detail: expect.stringContaining("exited with 0: fine") });
    expect(await once(new CustomProbe({ shell: "echo disk full >&2; exit 3" }))).toMatchObject({ ok: false, detail: expect.stringContaining("exited with 3: disk full") });
    expect(await once(new CustomProbe({ script: "/bin/sh", args: ["-c", "exit $CODE"], env: { CODE: "0" } }))).toMatchObject({ ok: true });
    expect((await once(new CustomProbe({ script: "/nonexistent/check" }))).detail).toContain("could not start");
  });

  it("a hanging script is killed at the runner's timeout, with every process of its group", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-custom-"));
    try {
      const pids = join(dir, "pids");
      // The script starts a background child, records both pids, then hangs.
      const probe = new CustomProbe({ shell: `sleep 60 & echo $$ $! > ${pids}; sleep 60` });
      const runner = new CheckerRunner({ probe, action: "restart", interval: 10_000, timeout: 300, rise: 1, fall: 1, initial: "ok" });
      const started = Date.now();
      const result = await runner.runOnce();
      const took = Date.now() - started;
      expect(result).toMatchObject({ ok: false, timedOut: true });
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(2000);
      expect(runner.lastVerdict).toMatchObject({ ok: false, reason: expect.stringContaining("timed out after 300 ms (1/1)") });
      const [shPid, childPid] = readFileSync(pids, "utf8").trim().split(" ").map(Number) as [number, number];
      expect(await until(() => !alive(shPid) && !alive(childPid), 2000)).toBe(true);
      await runner.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("ModuleProbe (function source)", () => {
  it("is ok when the state is in the set, and ready when required", async () => {
    let status = { state: "PRIM", ready: true };
    const p = new ModuleProbe({ module: "db", states: ["PRIM", "ALONE"], source: () => status });
    expect(await once(p)).toEqual({ ok: true, detail: "module db is PRIM ready, as required PRIM|ALONE" });
    status = { state: "SECOND", ready: true };
    expect(await once(p)).toEqual({ ok: false, detail: "module db is SECOND ready, expected PRIM|ALONE" });
    const r = new ModuleProbe({ module: "db", states: ["UP"], ready: true, source: async () => ({ state: "UP", ready: false }) });
    expect((await once(r)).ok).toBe(false);
    const broken = new ModuleProbe({
      module: "db",
      states: ["UP"],
      source: () => {
        throw new Error("no such module");
      },
    });
    expect((await once(broken)).detail).toBe("module db: source failed: no such module");
  });
});

describe("InterfaceProbe and IpProbe (read-only, loopback of this namespace)", () => {
  it("sees lo up and a missing interface as failed", async () => {
    // lo has no carrier notion but reports LOWER_UP when up.
    expect(await once(new InterfaceProbe({ interface: "lo" }))).toMatchObject({ ok: true, detail: expect.stringContaining("interface lo up") });
    expect(await once(new InterfaceProbe({ interface: "hfnope0" }))).toMatchObject({ ok: false, detail: expect.stringContaining("does not exist") });
  });

  it("finds 127.0.0.1 and ::1, not an absent address", async () => {
    expect((await once(new IpProbe({ address: "127.0.0.1" }))).ok).toBe(true);
    expect((await once(new IpProbe({ address: "0:0::1", interface: "lo" }))).ok).toBe(true);
    expect(await once(new IpProbe({ address: "198.19.255.254" }))).toEqual({ ok: false, detail: "address 198.19.255.254 absent" });
  });

  it("canonicalises IPv6 text", () => {
    expect(canonicalAddress("FD00:4844:0:0::0A")).toBe("fd00:4844::a");
    expect(canonicalAddress("fe80:0::1%eth0")).toBe("fe80::1");
    expect(() => canonicalAddress("nope")).toThrow(TypeError);
  });
});

describe("PingProbe without CAP_NET_RAW", () => {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  it.skipIf(!isRoot)("fails with a NotSupportedError that names the missing capability (no packet sent)", async () => {
    // Run the probe in a child that dropped root (uid nobody, no capabilities): opening the raw socket fails.
    const code = [
      `import { PingProbe } from ${JSON.stringify(join(import.meta.dirname, "../../src/checkers/ping.ts"))};`,
      `const p = new PingProbe({ host: "198.18.0.1" });`,
      `try { await p.run(AbortSignal.timeout(1000)); console.log("no error"); }`,
      `catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, feature: e.feature, message: e.message })); }`,
    ].join("\n");
    const out = await runUnprivileged(code);
    expect(JSON.parse(out)).toMatchObject({
      name: "NotSupportedError",
      code: "HOLDFAST_NOT_SUPPORTED",
      feature: "raw ICMP socket",
      message: expect.stringContaining("needs CAP_NET_RAW"),
    });
  });
});

describe("CheckerRunner when this process stalls", () => {
  it("does not fail a probe whose answer arrived while the event loop was blocked past the timeout", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-stall-"));
    try {
      const file = join(dir, "status");
      writeFileSync(file, "ok");
      const fd = openSync(file, "r");
      // The probe's answer comes from real I/O (one read on the thread pool), done within a millisecond...
      const probe: Probe = {
        name: "file",
        run: () =>
          new Promise((resolve, reject) => {
            const buf = Buffer.alloc(2);
            read(fd, buf, 0, 2, 0, (err) => (err ? reject(err) : resolve({ ok: buf.toString() === "ok", detail: "read" })));
          }),
      };
      const r = new CheckerRunner({ probe, action: "restart", interval: 10_000, timeout: 50, rise: 1, fall: 1, initial: "ok" });
      const run = r.runOnce();
      // ... but this process is frozen for 150 ms (3x the timeout) before it can look at it.
      const until = performance.now() + 150;
      while (performance.now() < until) {
        /* busy: a stalled event loop */
      }
      const result = await run;
      expect(result).toMatchObject({ ok: true, timedOut: false });
      expect(result.durationMs).toBeGreaterThanOrEqual(150);
      expect(r.lastVerdict).toBeUndefined();
      await r.stop();
      closeSync(fd);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("still times out a probe that really hangs, even after a stall", async () => {
    const probe: Probe = { name: "hung", run: (signal) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason))) };
    const r = new CheckerRunner({ probe, action: "restart", interval: 10_000, timeout: 50, rise: 1, fall: 1, initial: "ok" });
    const run = r.runOnce();
    const until = performance.now() + 150;
    while (performance.now() < until) {
      /* busy */
    }
    expect(await run).toMatchObject({ ok: false, timedOut: true, detail: "hung timed out after 50 ms" });
    await r.stop();
  });
});
