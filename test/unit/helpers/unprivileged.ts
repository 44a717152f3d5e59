// Runs an ES module snippet (tsx) as nobody with no capabilities, from the repository root; resolves with its last
// stdout line (rejects with its stderr when it printed nothing). For tests of what an unprivileged caller gets.
import { spawn } from "node:child_process";
import { join } from "node:path";

export function runUnprivileged(code: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const c = spawn(
      "setpriv",
      ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", process.execPath, "--import", "tsx", "--input-type=module", "-e", code],
      { cwd: join(import.meta.dirname, "../../.."), env: { ...process.env, HOME: "/tmp" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let s = "";
    let e = "";
    c.stdout.on("data", (d: Buffer) => (s += d.toString()));
    c.stderr.on("data", (d: Buffer) => (e += d.toString()));
    c.once("error", reject);
    c.once("exit", () => (s.trim() === "" ? reject(new Error(e)) : resolve(s.trim().split("\n").pop() ?? "")));
  });
}
