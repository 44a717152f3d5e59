/**
 * The daemon's wiring of checkers (verdicts to the module, checkers re-created at each restart, stopped in
 * STOP), and the daemon as a process: sd_notify READY=1 / STOPPING=1 to NOTIFY_SOCKET and a clean exit on
 * SIGTERM with the stop hook run.
 */
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../examples/daemon/config.js";
import { Daemon } from "../../examples/daemon/daemon.js";
import { MemoryVipDriver } from "../../src/runtime/module.js";
import { tempSetup } from "./daemon-helpers.js";

const REPO = resolve(import.meta.dirname, "../..");

describe("daemon: checkers", () => {
  it("feeds verdicts to the module, re-creates the checkers after a restart, and stops them in STOP", async () => {
    const s = tempSetup();
    const fail = join(s.dir, "fail");
    const file = join(s.dir, "checker.json");
    const raw = JSON.parse(readFileSync(s.file, "utf8")) as { modules: Record<string, unknown>[] };
    raw.modules = raw.modules.map((m) => ({
      ...m,
      restart: { maxloop: 1, loopInterval: "1m" },
      checkers: [{ type: "custom", name: "flag", shell: `test ! -e ${fail}`, interval: 100, timeout: 2000, fall: 2, rise: 1, action: "restart" }],
    }));
    writeFileSync(file, JSON.stringify(raw));
    const d = new Daemon(loadConfig(file), { vip: new MemoryVipDriver() });
    try {
      await d.start();
      const m = d.host("web").module;
      await m.waitFor("UP");
      await until(() => d.state().modules[0]?.checkers[0]?.state === "ok");
      writeFileSync(fail, "");
      // First failure: one local restart (the budget), then the re-created checker fails again: STOP.
      const stopped = await m.waitFor("STOP", 20_000);
      expect(stopped.reason).toMatch(/flag/);
      const log = readFileSync(join(s.dir, "logs", "web.log"), "utf8");
      expect(log.match(/hook start_both stdout/g)?.length).toBe(2);
      expect(d.host("web").checkers).toBeUndefined();
      rmSync(fail);
      await d.command("web", "start");
      await m.waitFor("UP");
      await until(() => d.state().modules[0]?.checkers[0]?.state === "ok");
    } finally {
      await d.stop(5_000);
    }
  });
});

function hasPython(): boolean {
  try {
    execFileSync("python3", ["-c", "pass"]);
    return true;
  } catch {
    return false;
  }
}

async function until(pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("daemon: process", () => {
  it.skipIf(!hasPython())("tells systemd READY=1 once up, STOPPING=1 on SIGTERM, runs the stop hook and exits 0", async () => {
    const s = tempSetup({ api: { port: 20000 + Math.floor(Math.random() * 20000), tokens: [] } });
    const sock = join(s.dir, "notify.sock");
    const py = spawn("python3", ["-u", "-c", `import socket\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(sock)})\nprint("bound")\ns.settimeout(30)\nfor i in range(2):\n  print(repr(s.recv(4096).decode()))`]);
    let got = "";
    py.stdout.on("data", (c) => (got += String(c)));
    await until(() => got.includes("bound"));
    const d = spawn(process.execPath, ["--import", "tsx", join(REPO, "examples/daemon/cli.ts"), "daemon", "--config", s.file], { cwd: REPO, env: { ...process.env, NOTIFY_SOCKET: sock } });
    let out = "";
    d.stdout.on("data", (c) => (out += String(c)));
    d.stderr.on("data", (c) => (out += String(c)));
    try {
      await until(() => got.includes("READY=1"), 30_000);
      expect(out).toMatch(/"event":"ready"/);
      expect(out).toMatch(/no API token configured/);
      await until(() => out.includes('"state":"UP"'));
      d.kill("SIGTERM");
      const code = await new Promise<number | null>((r) => d.on("exit", r));
      expect(code).toBe(0);
      await until(() => got.includes("STOPPING=1"));
      expect(readFileSync(join(s.dir, "logs", "web.log"), "utf8")).toMatch(/hook stop_both stdout: stop.sh UP -> STOP/);
    } finally {
      d.kill("SIGKILL");
      py.kill();
    }
  });
});
