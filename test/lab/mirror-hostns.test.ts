/**
 * `mountNamespace: "host"`: the helper mounts in the caller's namespace, so a killed helper leaves a dead mount
 * (ENOTCONN) that the supervisor must detach (`fusermount3 -uz`) before mounting again. The scenario runs in a
 * child process inside its own private mount namespace so that nothing on this machine sees the mount.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const canRun = process.getuid?.() === 0 && existsSync("/dev/fuse");
const src = fileURLToPath(new URL("../../src/mirror/", import.meta.url));

const scenario = (root: string): string => `
import { statSync, writeFileSync, readFileSync, mkdirSync } from "node:fs";
import { FileReplicator } from ${JSON.stringify(join(src, "FileReplicator.ts"))};
const root = ${JSON.stringify(root)};
for (const d of ["a", "b", "mnt"]) mkdirSync(root + "/" + d);
const out = {};
const sec = new FileReplicator({ role: "secondary", backingDir: root + "/b", keyFile: root + "/key", listen: { host: "127.0.0.1", port: 0 }, restart: false });
await sec.start();
const pri = new FileReplicator({ role: "primary", backingDir: root + "/a", mountPoint: root + "/mnt", keyFile: root + "/key",
  peer: { host: "127.0.0.1", port: sec.port }, mountNamespace: "host", restart: { maxRestarts: 1, windowMs: 60000 } });
let synced = pri.waitFor("synced", 10000);
await pri.start();
await synced;
writeFileSync(root + "/mnt/one", "1");
out.mountPath = pri.mountPath("one");
const restarted = pri.waitFor("restarted", 10000);
synced = pri.waitFor("synced", 10000);
process.kill(pri.pid, "SIGKILL");
// the dead mount, as the application sees it until the supervisor detaches it
// (polled synchronously: the restart can only run once this tick yields)
const until = Date.now() + 2000;
for (;;) {
  try { statSync(root + "/mnt"); out.deadMount = "ok"; } catch (e) { out.deadMount = e.code; }
  if (out.deadMount === "ENOTCONN" || Date.now() > until) break;
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
}
await restarted;
await synced;
writeFileSync(root + "/mnt/two", "2");
out.afterRestart = readFileSync(root + "/b/two", "utf8");
const exited = pri.waitFor("exit", 10000);
process.kill(pri.pid, "SIGKILL");
await exited;
await pri.stop(); // no helper left: detaches the dead mount
try { statSync(root + "/mnt"); out.afterStop = "ok"; } catch (e) { out.afterStop = e.code; }
out.mounted = readFileSync("/proc/self/mountinfo", "utf8").includes(root + "/mnt");
await sec.stop();
console.log(JSON.stringify(out));
`;

describe.skipIf(!canRun)("mirror: host mount namespace mode", () => {
  it("a killed helper's dead mount is detached before the restart and on stop", () => {
    const root = mkdtempSync("/tmp/hf-hostns-");
    try {
      writeFileSync(join(root, "key"), randomBytes(32), { mode: 0o600 });
      const script = join(root, "scenario.mts");
      writeFileSync(script, scenario(root));
      const r = spawnSync("unshare", ["--mount", "--propagation", "private", "--", process.execPath, "--import", "tsx", script], {
        encoding: "utf8",
        timeout: 60_000,
        cwd: fileURLToPath(new URL("../..", import.meta.url)),
      });
      expect(r.stderr).not.toMatch(/Error/);
      const out = JSON.parse(r.stdout.trim().split("\n").at(-1) as string) as Record<string, unknown>;
      expect(out).toEqual({ mountPath: join(root, "mnt/one"), deadMount: "ENOTCONN", afterRestart: "2", afterStop: "ok", mounted: false });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
