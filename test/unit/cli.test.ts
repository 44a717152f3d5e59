/**
 * The holdfast CLI: argument parsing (usage errors exit 64), token and node resolution, exit codes per
 * state, `config check` output, the snapshot archive format, and sd_notify's datagram.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { EXIT, parseCli, resolveNodes, resolveToken, runCli, stateExitCode, UsageError, type CliIO } from "../../examples/daemon/commands.js";
import { sdNotify, sockaddrUn } from "../../examples/daemon/sdnotify.js";
import { tarGz } from "../../examples/daemon/tar.js";
import { tempSetup } from "./daemon-helpers.js";

function io(env: Record<string, string> = {}): CliIO & { stdout: string; stderr: string } {
  const o = { stdout: "", stderr: "", env, out: (s: string) => void (o.stdout += s), err: (s: string) => void (o.stderr += s) };
  return o;
}

describe("CLI parsing", () => {
  it("parses each command", () => {
    expect(parseCli(["state", "--json"])).toMatchObject({ kind: "state", json: true, target: { all: false } });
    expect(parseCli(["state", "web", "--node", "http://x:1"])).toMatchObject({ kind: "state", module: "web", target: { node: "http://x:1" } });
    expect(parseCli(["prim", "db", "--force"])).toMatchObject({ kind: "command", command: "prim", module: "db", force: true });
    expect(parseCli(["swap", "db", "--all", "--config", "c.yaml"])).toMatchObject({ kind: "command", command: "swap", target: { all: true, config: "c.yaml" } });
    expect(parseCli(["logs", "web", "-f", "-n", "20"])).toMatchObject({ kind: "logs", module: "web", follow: true, n: 20 });
    expect(parseCli(["config", "check", "f.yaml", "--node-id", "n2"])).toEqual({ kind: "config-check", file: "f.yaml", nodeId: "n2" });
    expect(parseCli(["daemon", "--config", "f.yaml"], { HOLDFAST_NODE: "n1" })).toEqual({ kind: "daemon", config: "f.yaml", nodeId: "n1" });
    expect(parseCli(["snapshot", "-o", "s.tgz"])).toMatchObject({ kind: "snapshot", output: "s.tgz" });
    expect(parseCli(["token", "new", "monitor", "grafana"])).toEqual({ kind: "token-new", role: "monitor", name: "grafana" });
    expect(parseCli([])).toEqual({ kind: "help" });
  });

  it("refuses what makes no sense, with a reason", () => {
    const bad: [string[], RegExp][] = [
      [["stop"], /stop MODULE/],
      [["stop", "a", "b"], /stop MODULE/],
      [["frobnicate"], /unknown command/],
      [["state", "--nope"], /Unknown option/],
      [["stop", "web", "--force"], /--force only applies to prim/],
      [["state", "--all"], /--all needs --config/],
      [["state", "--all", "--node", "x", "--config", "c"], /exclude each other/],
      [["daemon"], /--config FILE is required/],
      [["logs", "web", "-n", "0"], /positive integer/],
      [["token", "new", "root"], /role must be/],
    ];
    for (const [argv, re] of bad) expect(() => parseCli(argv), argv.join(" ")).toThrow(re);
    expect(() => parseCli(["stop"])).toThrow(UsageError);
  });

  it("exits 64 with the usage on a usage error", async () => {
    const o = io();
    expect(await runCli(["stop"], o)).toBe(EXIT.usage);
    expect(o.stderr).toContain("usage: holdfast");
  });

  it("takes the token from --token, then --token-file, then HOLDFAST_TOKEN, then HOLDFAST_TOKEN_FILE", () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-cli-"));
    writeFileSync(join(dir, "t"), "from-file\n");
    const t = (argv: string[]) => (parseCli(["state", ...argv]) as { target: Parameters<typeof resolveToken>[0] }).target;
    expect(resolveToken(t(["--token", "x"]), { HOLDFAST_TOKEN: "env" })).toBe("x");
    expect(resolveToken(t(["--token-file", join(dir, "t")]), { HOLDFAST_TOKEN: "env" })).toBe("from-file");
    expect(resolveToken(t([]), { HOLDFAST_TOKEN: "env", HOLDFAST_TOKEN_FILE: join(dir, "t") })).toBe("env");
    expect(resolveToken(t([]), { HOLDFAST_TOKEN_FILE: join(dir, "t") })).toBe("from-file");
    expect(resolveToken(t([]), {})).toBeUndefined();
    expect(() => resolveToken(t(["--token-file", join(dir, "missing")]), {})).toThrow(/cannot read the token file/);
  });

  it("finds the nodes: a URL, an id from the config, every node, or the default", () => {
    const { file } = tempSetup();
    const t = (argv: string[]) => (parseCli(["state", ...argv]) as { target: Parameters<typeof resolveNodes>[0] }).target;
    expect(resolveNodes(t(["--node", "https://h:1"]), {})).toEqual([{ label: "https://h:1", url: "https://h:1" }]);
    expect(resolveNodes(t(["--node", "a", "--config", file]), {})).toEqual([{ label: "a", url: "http://127.0.0.1:9453" }]);
    expect(resolveNodes(t(["--all", "--config", file]), {})).toEqual([{ label: "a", url: "http://127.0.0.1:9453" }]);
    expect(resolveNodes(t([]), { HOLDFAST_URL: "http://u:2" })).toEqual([{ label: "http://u:2", url: "http://u:2" }]);
    expect(() => resolveNodes(t(["--node", "zz", "--config", file]), {})).toThrow(/no node "zz"/);
  });

  it("maps states to exit codes", () => {
    expect(stateExitCode({ state: "UP", ready: true, transient: false })).toBe(0);
    expect(stateExitCode({ state: "PRIM", ready: true, transient: false })).toBe(0);
    expect(stateExitCode({ state: "ALONE", ready: true, transient: false })).toBe(0);
    expect(stateExitCode({ state: "SECOND", ready: true, transient: false })).toBe(1);
    expect(stateExitCode({ state: "SECOND", ready: false, transient: false })).toBe(2);
    expect(stateExitCode({ state: "WAIT", ready: false, transient: false })).toBe(2);
    expect(stateExitCode({ state: "UP", ready: false, transient: true })).toBe(2);
    expect(stateExitCode({ state: "STOP", ready: false, transient: true })).toBe(2);
    expect(stateExitCode({ state: "STOP", ready: false, transient: false })).toBe(3);
  });

  it("config check prints OK (exit 0) or each problem with path and value (exit 1)", async () => {
    const { dir, file } = tempSetup();
    const ok = io();
    expect(await runCli(["config", "check", file], ok)).toBe(0);
    expect(ok.stdout).toBe(`OK ${file}\n`);
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ cluster: { id: "x", keyFile: "cluster.key", nodes: [{ id: "a", addresses: ["1.2.3"] }] }, node: "a", api: { port: 0 } }));
    const ko = io();
    expect(await runCli(["config", "check", bad], ko)).toBe(1);
    expect(ko.stdout).toContain(`${bad}: api.port: expected a port number in 1..65535, got 0`);
  });

  it("reports an unreachable node as a failure (exit 10) with the URL", async () => {
    const o = io({ HOLDFAST_TOKEN: "t" });
    expect(await runCli(["state", "--node", "http://127.0.0.1:9"], o)).toBe(EXIT.failure);
    expect(o.stderr).toMatch(/http:\/\/127\.0\.0\.1:9: not reachable/);
  });
});

describe("snapshot archive", () => {
  it("is a tar.gz that tar lists and extracts", () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-tar-"));
    const long = `snap/${"d".repeat(90)}/${"f".repeat(60)}.txt`;
    writeFileSync(join(dir, "s.tgz"), tarGz({ "snap/a.txt": "hello\n", [long]: "x".repeat(1000) }));
    expect(execFileSync("tar", ["tzf", join(dir, "s.tgz")], { encoding: "utf8" }).trim().split("\n")).toEqual(["snap/a.txt", long]);
    execFileSync("tar", ["xzf", join(dir, "s.tgz"), "-C", dir]);
    expect(readFileSync(join(dir, "snap/a.txt"), "utf8")).toBe("hello\n");
    expect(readFileSync(join(dir, long), "utf8")).toHaveLength(1000);
  });
});

describe("sd_notify", () => {
  it("does nothing without NOTIFY_SOCKET", () => {
    expect(sdNotify("READY=1", "")).toBe(false);
  });

  it("builds sockaddr_un for paths and abstract names", () => {
    expect(sockaddrUn("/run/x").subarray(2).toString()).toBe("/run/x\0");
    expect(sockaddrUn("@abs").subarray(2)).toEqual(Buffer.from("\0abs"));
  });

  it.skipIf(!hasPython())("delivers READY=1 to a unix datagram socket", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-notify-"));
    const path = join(dir, "notify.sock");
    const py = spawn("python3", ["-c", `import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(path)})\nprint("bound",flush=True)\ns.settimeout(10)\nprint(s.recv(4096).decode(),flush=True)`]);
    let out = "";
    py.stdout.on("data", (d) => (out += String(d)));
    const end = Date.now() + 10_000;
    while (!out.includes("bound") && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(sdNotify("READY=1\nSTATUS=test", path)).toBe(true);
    await new Promise((r) => py.on("exit", r));
    expect(out).toContain("READY=1\nSTATUS=test");
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
