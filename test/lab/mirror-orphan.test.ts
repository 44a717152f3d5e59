/**
 * The C helper must not outlive its supervisor (issue "Mirror: after the daemon dies, nothing it started may serve
 * again"): SIGKILL of the Node process that spawned a pair, with the mount idle and an application holding its
 * cwd in the mount, ends both helpers within 1 s, takes the mount away from that application and frees the
 * extent-log lock at once. And no write reaches the backing directory once the helper is stopping, nor (data
 * writes) while it is degraded without a permit. Needs root and /dev/fuse.
 */
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { open as openP } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { helperPath } from "../../src/mirror/helper.js";
import { makePairDirs, pollUntil, startLoopbackPair, type LoopbackPair } from "../../src/mirror/testing.js";
import { settledWithin } from "./helpers/settled.js";

const canRun = process.getuid?.() === 0 && existsSync("/dev/fuse");
const pairs: LoopbackPair[] = [];
afterEach(async () => {
  await Promise.allSettled(pairs.splice(0).map((p) => p.close()));
});

const gone = (pid: number): boolean => {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").startsWith("Z");
  } catch {
    return true;
  }
};
/** Mount points (field 5 of mountinfo) of FUSE holdfast mounts that process `pid` sees. */
const holdfastMounts = (pid: number): string[] =>
  readFileSync(`/proc/${pid}/mountinfo`, "utf8")
    .split("\n")
    .filter((l) => / - fuse\.holdfast /.test(l))
    .map((l) => l.split(" ")[4] as string);
const errCode = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
};

describe.skipIf(!canRun)("mirror: the C helper after its supervisor dies", () => {
  it("SIGKILL of the supervisor with the mount idle: both helpers gone within 1 s, the mount dead (ENOTCONN, never the directory underneath), the lock free", async () => {
    const { root, a, b, mnt, key } = makePairDirs("orphan");
    const src = new URL("../../src/mirror/FileReplicator.ts", import.meta.url).pathname;
    const script = join(root, "supervisor.mts");
    // the supervisor: a synced pair (secondary on loopback), then an "application" with its cwd in the mount,
    // started in the mount's namespace as a daemon would start it, in a process group of its own
    writeFileSync(
      script,
      `import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { FileReplicator } from ${JSON.stringify(src)};
const s = new FileReplicator({ role: "secondary", backingDir: ${JSON.stringify(b)}, keyFile: ${JSON.stringify(key)}, listen: { host: "127.0.0.1", port: 0 }, restart: false });
await s.start();
const p = new FileReplicator({ role: "primary", backingDir: ${JSON.stringify(a)}, mountPoint: ${JSON.stringify(mnt)}, keyFile: ${JSON.stringify(key)},
  peer: { host: "127.0.0.1", port: s.port }, restart: false, statsIntervalMs: 0, permit: "renewed" });
const synced = p.waitFor("synced", 15000);
await p.start();
await synced;
setInterval(() => p.renewPermit(2000), 200);
writeFileSync(p.mountPath("data.txt"), "replicated");
const [cmd, ...args] = p.commandInMount(["sh", "-c", "cd ${mnt} && exec sleep 60"]);
const app = spawn(cmd, args, { stdio: "ignore", detached: true });
console.log(JSON.stringify({ primary: p.pid, secondary: s.pid, app: app.pid }));
process.stdin.resume();
`,
    );
    const sup = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["pipe", "pipe", "inherit"], cwd: new URL("../..", import.meta.url).pathname });
    let app = 0;
    const others: FileReplicator[] = [];
    try {
      const pids = await new Promise<{ primary: number; secondary: number; app: number }>((resolve, reject) => {
        createInterface({ input: sup.stdout }).on("line", (l) => {
          if (l.startsWith("{")) resolve(JSON.parse(l) as { primary: number; secondary: number; app: number });
        });
        sup.once("exit", () => reject(new Error("supervisor exited")));
      });
      app = pids.app;
      // the application sees the mount and reads through it (its cwd is in it)
      await pollUntil(() => readlinkSync(`/proc/${app}/cwd`) === mnt, 5000, "the application's cwd in the mount");
      expect(holdfastMounts(app)).toContain(mnt);
      expect(readFileSync(`/proc/${app}/cwd/data.txt`, "utf8")).toBe("replicated");
      // idle mount: no request comes; SIGKILL of the supervisor alone (the helpers and the application live on)
      const t0 = performance.now();
      sup.kill("SIGKILL");
      await pollUntil(() => gone(pids.primary) && gone(pids.secondary), 3000, "both helpers to exit");
      const took = performance.now() - t0;
      console.log(`orphan lab: helpers gone ${Math.round(took)} ms after the supervisor's SIGKILL`);
      expect(took).toBeLessThan(1000);
      expect(gone(app)).toBe(false);
      // The mount stays in the application's namespace, dead: neither its cwd nor a fresh open by path serves
      // anything. Detached, the path would resolve to the directory underneath, and a write there would
      // succeed without ever being replicated.
      expect(holdfastMounts(app)).toContain(mnt);
      expect(errCode(() => statSync(`/proc/${app}/cwd/data.txt`))).toBe("ENOTCONN");
      expect(errCode(() => readFileSync(`/proc/${app}/cwd/data.txt`))).toBe("ENOTCONN");
      expect(errCode(() => writeFileSync(`/proc/${app}/root${mnt}/after.txt`, "lost"))).toBe("ENOTCONN");
      expect(existsSync(join(mnt, "after.txt"))).toBe(false);
      // a clean stop: the next helper takes the extent-log lock at once and needs no verify pass
      const next = new FileReplicator({ role: "primary", backingDir: a, mountPoint: mnt, keyFile: key, peer: { host: "127.0.0.1", port: 1 }, restart: false, statsIntervalMs: 0, permit: "always", startTimeoutMs: 3000 });
      others.push(next);
      const ready = next.waitFor("ready", 3000);
      await next.start();
      expect((await ready).uncleanStart).toBe(false);
      expect(readFileSync(next.mountPath("data.txt"), "utf8")).toBe("replicated");
      expect(readFileSync(join(b, "data.txt"), "utf8")).toBe("replicated");
    } finally {
      sup.kill("SIGKILL");
      if (app) {
        try {
          process.kill(-app, "SIGKILL");
        } catch {
          /* gone */
        }
      }
      await Promise.allSettled(others.map((r) => r.stop()));
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("a write issued after stop, or waiting when it comes, gets EIO and leaves the backing file unchanged", async () => {
    const p = await startLoopbackPair("stopw", { permit: "renewed", ackTimeoutMs: 500 });
    pairs.push(p);
    writeFileSync(p.primary.mountPath("f.txt"), "before");
    writeFileSync(p.primary.mountPath("g.txt"), "before");
    const pid = p.primary.pid as number;
    // open files keep the detached mount (and the helper, for its grace) alive after the stop
    const fd = openSync(p.primary.mountPath("f.txt"), "r+");
    const fh = await openP(p.primary.mountPath("g.txt"), "r+");
    try {
      const degraded = p.primary.waitFor("degraded", 5000);
      await p.secondary.stop();
      await degraded;
      // degraded and never granted a permit: this write waits (before its local apply) when the stop comes
      const held = fh.write("waiting", 0);
      expect(await settledWithin(held, 500)).toBeUndefined();
      const stopped = p.primary.stop();
      await expect(held).rejects.toMatchObject({ code: "EIO" });
      // the mount leaves the helper's namespace after the stop state is set: a write issued now fails too
      await pollUntil(() => gone(pid) || !holdfastMounts(pid).includes(p.mnt), 3000, "the stop to be processed");
      expect(errCode(() => writeSync(fd, "after stop", 0))).toMatch(/^(EIO|ENOTCONN|ECONNABORTED)$/);
      await stopped;
    } finally {
      errCode(() => closeSync(fd)); // ENOTCONN once the helper is gone
      await fh.close().catch(() => undefined);
    }
    expect(readFileSync(join(p.a, "f.txt"), "utf8")).toBe("before");
    expect(readFileSync(join(p.a, "g.txt"), "utf8")).toBe("before");
  });

  it("SIGTERM, SIGINT and SIGHUP to the primary helper end nothing: the mount keeps serving and replicating", async () => {
    // A service manager stopping the service signals all its processes at once, while the daemon's stop hook
    // still needs the mount: only the supervisor (`stop`, or its death) or SIGKILL ends the helper.
    const p = await startLoopbackPair("sigterm", { permit: "always" });
    pairs.push(p);
    const pid = p.primary.pid as number;
    for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.kill(pid, sig);
    writeFileSync(p.primary.mountPath("after-signals.txt"), "still replicated");
    expect(gone(pid)).toBe(false);
    expect(holdfastMounts(pid)).toContain(p.mnt);
    expect(readFileSync(join(p.b, "after-signals.txt"), "utf8")).toBe("still replicated");
  });

  it("in the private namespace, a detached mount reveals a read-only guard, never the writable directory underneath", async () => {
    const p = await startLoopbackPair("guard", { permit: "always" });
    pairs.push(p);
    writeFileSync(p.primary.mountPath("f.txt"), "replicated");
    // An application in the mount's namespace that outlives an orderly stop (or anyone's umount) sees this; it
    // also keeps the namespace alive once the helper, its mount detached and unused, exits.
    const [hc, ...ha] = p.primary.commandInMount(["sleep", "30"]);
    const holder = spawn(hc, ha, { stdio: "ignore" });
    try {
      await pollUntil(() => readlinkSync(`/proc/${holder.pid}/exe`).endsWith("/sleep"), 3000, "the holder in the namespace");
      const inNs = (script: string) => spawnSync("nsenter", [`--mount=/proc/${holder.pid}/ns/mnt`, "--", "sh", "-c", script], { encoding: "utf8" });
      expect(inNs(`cat ${p.mnt}/f.txt`).stdout).toBe("replicated");
      expect(inNs(`umount -l ${p.mnt}`).status).toBe(0);
      const w = inNs(`echo lost > ${p.mnt}/g.txt`);
      expect(w.status).not.toBe(0);
      expect(w.stderr).toMatch(/Read-only file system/);
      expect(inNs(`grep -c holdfast-guard /proc/self/mountinfo`).stdout.trim()).toBe("1");
    } finally {
      holder.kill("SIGKILL");
    }
    // nothing landed anywhere: not in the directory under the mount point, not in the backing directory
    expect(existsSync(join(p.mnt, "g.txt"))).toBe(false);
    expect(existsSync(join(p.a, "g.txt"))).toBe(false);
    // the host namespace never sees the guard (private propagation)
    expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain("holdfast-guard");
  });

  it("degraded without a permit, a data write waits before it reaches the backing file; a renewal applies it", async () => {
    const p = await startLoopbackPair("permitw", { permit: "renewed", ackTimeoutMs: 500 });
    pairs.push(p);
    writeFileSync(p.primary.mountPath("f.txt"), "");
    const fh = await openP(p.primary.mountPath("f.txt"), "r+");
    try {
      const degraded = p.primary.waitFor("degraded", 5000);
      await p.secondary.stop();
      await degraded;
      // never granted a permit: the write waits, and the backing file does not change meanwhile
      const w = fh.write("held back", 0);
      expect(await settledWithin(w, 800)).toBeUndefined();
      expect(readFileSync(join(p.a, "f.txt"), "utf8")).toBe("");
      p.primary.renewPermit(2000);
      expect(await settledWithin(w, 3000)).toBeDefined();
      await w;
      expect(readFileSync(join(p.a, "f.txt"), "utf8")).toBe("held back");
    } finally {
      p.primary.renewPermit(2000); // a write still held (a failed check above) must not hang the close
      await fh.close();
    }
  });
  it.each(["primary", "secondary"] as const)("%s: the parent-death signal alone (stdin still open elsewhere) ends the helper within 1 s", async (role) => {
    const { root, a, b, mnt, key } = makePairDirs(`pdeath-${role}`);
    const log = join(root, "log");
    const args =
      role === "primary"
        ? ["unshare", "--mount", "--propagation", "private", "--", helperPath(), "primary", "--backing", a, "--mount", mnt, "--peer", "127.0.0.1:1", "--key-file", key, "--log", log, "--permit", "always"]
        : [helperPath(), "secondary", "--backing", b, "--listen", "127.0.0.1:0", "--key-file", key];
    // the parent is this shell; the helper's stdin is the shell's (through fd 3: sh gives a background job
    // /dev/null), a pipe whose write end this process keeps open, so only the parent-death signal can tell the
    // helper (unshare execs: the shell stays its parent)
    const sh = spawn("sh", ["-c", `exec 3<&0; ${args.map((x) => `'${x}'`).join(" ")} <&3 3<&- & echo '{"helper":'$!'}'; wait`], { stdio: ["pipe", "pipe", "inherit"] });
    const lines: string[] = [];
    createInterface({ input: sh.stdout }).on("line", (l) => lines.push(l));
    try {
      await pollUntil(() => lines.some((l) => l.startsWith('{"helper"')) && lines.some((l) => /"event":"(ready|listening)"/.test(l)), 10_000, "the helper to start");
      const pid = (JSON.parse(lines.find((l) => l.startsWith('{"helper"')) as string) as { helper: number }).helper;
      expect(Number(readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[1])).toBe(sh.pid);
      expect(readlinkSync(`/proc/${pid}/fd/0`)).toMatch(/^(pipe|socket):/); // still open here: no end of stdin
      const t0 = performance.now();
      sh.kill("SIGKILL");
      await pollUntil(() => gone(pid), 3000, "the helper to exit");
      expect(performance.now() - t0).toBeLessThan(1000);
      if (role === "primary") expect(spawnSync("flock", ["-n", log, "true"]).status).toBe(0); // the extent-log lock is free
    } finally {
      sh.kill("SIGKILL");
      sh.stdin.destroy();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("a helper whose supervisor (HOLDFAST_PARENT_PID) died before it could ask for the signal exits at once", () => {
    const { root, b, key } = makePairDirs("pdeath-early");
    try {
      const dead = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" }).stdout.trim();
      const r = spawnSync(helperPath(), ["secondary", "--backing", b, "--listen", "127.0.0.1:0", "--key-file", key], {
        encoding: "utf8",
        timeout: 5000,
        env: { ...process.env, HOLDFAST_PARENT_PID: dead },
      });
      expect(r.status).toBe(3);
      expect(r.stderr).toContain("parent gone before start");
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
