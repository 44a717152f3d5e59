// The stand-alone checker host (src/checkers/cli.ts) as a user runs it: JSON lines out, exit code 2 on a bad
// configuration. Only /proc-based checkers here (no network traffic outside namespaces).
import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { join } from "node:path";

const repo = join(import.meta.dirname, "..", "..");

function runCli(env: Record<string, string>, untilLines: number, timeoutMs = 15_000): Promise<{ lines: string[]; code: number | null }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ["--import", "tsx", "src/checkers/cli.ts"], { cwd: repo, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const lines: string[] = [];
    let buf = "";
    let err = "";
    const timer = setTimeout(() => {
      c.kill("SIGKILL");
      reject(new Error(`cli timed out; stdout: ${lines.join("\n")} stderr: ${err}`));
    }, timeoutMs);
    c.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split("\n");
      buf = parts.pop() ?? "";
      lines.push(...parts);
      if (lines.length >= untilLines) c.kill("SIGTERM");
    });
    c.stderr.on("data", (d: Buffer) => (err += d.toString()));
    c.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ lines, code });
    });
  });
}

describe("checker host CLI", () => {
  it("prints ready, then verdicts as JSON lines, and exits 0 on SIGTERM", async () => {
    const checkers = [{ type: "process", name: "nothing", cmdline: "^no-such-process-anywhere$", interval: 100, fall: 2 }];
    const { lines, code } = await runCli({ HOLDFAST_CHECKERS: JSON.stringify(checkers) }, 2);
    const [ready, verdict] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(ready).toMatchObject({ event: "ready", checkers: ["nothing"] });
    expect(verdict).toMatchObject({
      event: "verdict",
      type: "checker",
      checker: "nothing",
      ok: false,
      action: "restart",
      kind: "process",
      reason: "process cmdline=^no-such-process-anywhere$: 0 running, expected at least 1 (2/2)",
    });
    expect(code).toBe(0);
  });

  it("rejects a bad configuration with the path and value, exit code 2", async () => {
    const { lines, code } = await runCli({ HOLDFAST_CHECKERS: JSON.stringify([{ type: "process", process: "x" }, { type: "process", pid: -4 }]) }, Number.POSITIVE_INFINITY);
    expect(code).toBe(2);
    expect(JSON.parse(lines[0] ?? "")).toEqual({ event: "error", message: "invalid checker 1: pid: expected integer >= 1, got -4" });
  });
});
