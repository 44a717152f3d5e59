/**
 * The JavaScript FUSE fallback for real: a JsFuseReplicator primary (fuse-native over libfuse2, in its own Node
 * process and mount namespace) replicating to the compiled helper's secondary on loopback. Needs root,
 * /dev/fuse and libfuse2.
 */
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  fdatasyncSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { summarizeExtentLog } from "../../src/mirror/extentLog.js";
import { FileReplicator, type PrimaryReplicatorOptions } from "../../src/mirror/FileReplicator.js";
import { createFileReplicator, JsFuseReplicator, probeEngines } from "../../src/mirror/jsfuse/index.js";
import { PathFilter } from "../../src/mirror/pathFilter.js";
import { killMountNamespace, makePairDirs, mountNamespaceOf, pollUntil, snapshotTree, treeDiff } from "../../src/mirror/testing.js";
import { settledWithin } from "./helpers/settled.js";

const probe = probeEngines();
const canRun = process.getuid?.() === 0 && probe.devFuse && probe.js === true && probe.helperRuns;

interface Pair {
  root: string;
  a: string;
  b: string;
  mnt: string;
  key: string;
  primary: FileReplicator;
  secondary: FileReplicator;
  startSecondary(): Promise<FileReplicator>;
}
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** A native secondary on loopback and a primary on `engine` over a fresh pair of directories, in sync. */
async function pair(tag: string, engine: "js" | "native" = "js", extra: Partial<PrimaryReplicatorOptions> = {}): Promise<Pair> {
  const d = makePairDirs(`js-${tag}`);
  let port = 0;
  const p: Pair = {
    ...d,
    primary: undefined as unknown as FileReplicator,
    secondary: undefined as unknown as FileReplicator,
    async startSecondary() {
      const s = new FileReplicator({ role: "secondary", backingDir: d.b, keyFile: d.key, listen: { host: "127.0.0.1", port }, restart: false, ...(extra.encrypt ? { encrypt: true } : {}) });
      await s.start();
      port = s.port ?? 0;
      p.secondary = s;
      return s;
    },
  };
  cleanups.push(async () => {
    await Promise.allSettled([p.primary?.stop(), p.secondary?.stop()]);
    rmSync(d.root, { recursive: true, force: true });
  });
  await p.startSecondary();
  const opts: PrimaryReplicatorOptions = {
    role: "primary",
    backingDir: d.a,
    mountPoint: d.mnt,
    keyFile: d.key,
    peer: { host: "127.0.0.1", port },
    restart: false,
    statsIntervalMs: 200,
    // the data path without a supervisor that renews permits: a standing one (the permit tests pass "renewed")
    permit: "always",
    ...extra,
  };
  p.primary = engine === "js" ? new JsFuseReplicator(opts) : new FileReplicator(opts);
  const synced = p.primary.waitFor("synced", 20_000);
  await p.primary.start();
  await synced;
  return p;
}

describe.skipIf(!canRun)("mirror: JavaScript FUSE primary + compiled secondary", () => {
  it("the factory picks the compiled helper here and the JS engine when asked; both start", async () => {
    const lines: string[] = [];
    const d = makePairDirs("js-factory");
    cleanups.push(async () => rmSync(d.root, { recursive: true, force: true }));
    const common = { role: "primary" as const, backingDir: d.a, mountPoint: d.mnt, keyFile: d.key, peer: { host: "127.0.0.1", port: 9 }, permit: "always" as const, log: (l: string) => lines.push(l) };
    const n = createFileReplicator(common);
    expect(n.engine).toBe("native");
    const j = createFileReplicator({ ...common, engine: "js" });
    expect(j.engine).toBe("js");
    expect(j).toBeInstanceOf(JsFuseReplicator);
    expect(lines).toEqual([expect.stringContaining("= native (auto: the compiled helper runs here)"), expect.stringContaining("= js (engine js requested)")]);
    // a helper that cannot run makes auto fall back to the JS engine
    const broken = join(d.root, "not-a-helper");
    writeFileSync(broken, "not executable");
    const f = createFileReplicator({ ...common, helperPath: broken });
    expect(f.engine).toBe("js");
    expect(f.engineReason).toMatch(/does not run here/);
    // the JS engine mounts and serves (degraded: nobody listens on port 9)
    await j.start();
    cleanups.push(() => j.stop());
    writeFileSync(j.mountPath("hello"), "hi");
    expect(readFileSync(join(d.a, "hello"), "utf8")).toBe("hi");
    expect(j.state).toBe("degraded");
  });

  it("every operation kind is mirrored; a write is on the secondary when it returns; many files end identical", async () => {
    const p = await pair("ops");
    const m = (r: string): string => p.primary.mountPath(r);
    // appends: each returned write is applied by the secondary
    const fd = openSync(m("log.txt"), "a");
    let expected = "";
    for (let i = 0; i < 100; i++) {
      const rec = `record ${i} ${randomBytes(8).toString("hex")}\n`;
      writeSync(fd, rec);
      expected += rec;
      expect(readFileSync(join(p.b, "log.txt"), "utf8")).toBe(expected);
      if (i % 10 === 9) fsyncSync(fd);
    }
    closeSync(fd);
    mkdirSync(m("dir/sub"), { recursive: true });
    writeFileSync(m("dir/sub/a"), randomBytes(300_000));
    writeFileSync(m("dir/b"), "bbbb");
    renameSync(m("dir/b"), m("dir/sub/b2"));
    symlinkSync("sub/a", m("dir/link"));
    linkSync(m("dir/sub/a"), m("dir/hard"));
    chmodSync(m("dir/sub/a"), 0o640);
    truncateSync(m("dir/sub/a"), 1234);
    spawnSync("chown", ["1234:4321", m("dir/sub/b2")]);
    utimesSync(m("dir/sub/b2"), 1_000_000, 1_000_000);
    // touch = utimensat(UTIME_NOW): a recent mtime on both sides
    writeFileSync(m("touched"), "t");
    utimesSync(m("touched"), 1_000_000, 1_000_000);
    expect(spawnSync("touch", [m("touched")]).status).toBe(0);
    expect(Math.abs(lstatSync(join(p.b, "touched")).mtimeMs - Date.now())).toBeLessThan(60_000);
    writeFileSync(m("gone"), "x");
    unlinkSync(m("gone"));
    mkdirSync(m("rmme"));
    rmdirSync(m("rmme"));
    // a many-file workload: 20 directories x 25 files, some rewritten, renamed, removed
    for (let d = 0; d < 20; d++) {
      mkdirSync(m(`many/d${d}`), { recursive: true });
      for (let f = 0; f < 25; f++) writeFileSync(m(`many/d${d}/f${f}`), randomBytes(1 + ((d * 25 + f) % 7) * 1500));
    }
    for (let d = 0; d < 20; d += 3) {
      renameSync(m(`many/d${d}/f0`), m(`many/d${d}/renamed`));
      unlinkSync(m(`many/d${d}/f1`));
      writeFileSync(m(`many/d${d}/f2`), "rewritten");
    }
    expect(lstatSync(join(p.b, "dir/sub/a")).size).toBe(1234);
    expect(lstatSync(join(p.b, "dir/sub/a")).mode & 0o7777).toBe(0o640);
    expect(lstatSync(join(p.b, "dir/sub/b2")).uid).toBe(1234);
    expect(lstatSync(join(p.b, "dir/sub/b2")).mtimeMs).toBe(1_000_000_000);
    expect(readlinkSync(join(p.b, "dir/link"))).toBe("sub/a");
    expect(lstatSync(join(p.b, "dir/hard")).ino).toBe(lstatSync(join(p.b, "dir/sub/a")).ino);
    expect(existsSync(join(p.b, "gone"))).toBe(false);
    expect(existsSync(join(p.b, "rmme"))).toBe(false);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
    expect(snapshotTree(p.b).size).toBeGreaterThan(500);
    const met = await p.primary.waitFor("metrics", 5000);
    expect(met.acks).toBeGreaterThan(600);
    expect(met.bytesReplicated).toBeGreaterThan(300_000);
  });

  it("files created by an unprivileged user in their directory are theirs on both sides", async () => {
    const p = await pair("owner");
    mkdirSync(p.primary.mountPath("pgdata"), { mode: 0o700 });
    spawnSync("chown", ["1000:1000", p.primary.mountPath("pgdata")]);
    const script = `umask 077 && cd ${p.mnt}/pgdata && echo hi > f && mkdir sub && echo x > sub/g && ln -s f sl && chmod 0640 f && mkfifo fifo`;
    const [cmd, ...args] = p.primary.commandInMount(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", script]);
    const r = spawnSync(cmd, args, { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    for (const side of [p.a, p.b]) {
      for (const n of ["f", "sub", "sub/g", "sl", "fifo"]) {
        const st = lstatSync(join(side, "pgdata", n));
        expect([n, st.uid, st.gid]).toEqual([n, 1000, 1000]);
      }
      expect(lstatSync(join(side, "pgdata/f")).mode & 0o7777).toBe(0o640);
      expect(lstatSync(join(side, "pgdata/sub")).mode & 0o7777).toBe(0o700);
      expect(lstatSync(join(side, "pgdata/fifo")).isFIFO()).toBe(true);
    }
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b))).toEqual([]);
  });

  it("kill -9 of the Node daemon during fsync'd appends: every fsync'd record is on the secondary", async () => {
    const p = await pair("crash");
    const file = p.primary.mountPath("wal.log");
    const code = `const fs=require("fs");const fd=fs.openSync(process.argv[1],"a");for(let i=0;;i++){try{fs.writeSync(fd,"rec "+i+" "+"x".repeat(100)+"\\n");fs.fdatasyncSync(fd);}catch(e){process.exit(0)}process.stdout.write(i+"\\n");}`;
    const writer = spawn(process.execPath, ["-e", code, file], { stdio: ["ignore", "pipe", "inherit"] });
    let acked = -1;
    createInterface({ input: writer.stdout }).on("line", (l) => {
      acked = Number(l);
    });
    await pollUntil(() => acked >= 200, 30_000, "200 fsync'd records");
    const pid = p.primary.pid as number;
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toContain("runJsFuseDaemon");
    process.kill(pid, "SIGKILL");
    await new Promise((r) => writer.once("exit", r));
    console.info(`jsfuse crash: daemon killed after ${acked + 1} fsync'd records`);
    const lines = readFileSync(join(p.b, "wal.log"), "utf8").split("\n");
    for (let i = 0; i <= acked; i++) expect(lines[i]?.startsWith(`rec ${i} `)).toBe(true);
  });

  it("secondary gone: degraded with the extent log, writes go on, secondary back: log resync to equality", async () => {
    const p = await pair("resync", "js", { ackTimeoutMs: 500 });
    const m = (r: string): string => p.primary.mountPath(r);
    const size = 4 << 20;
    writeFileSync(m("data.bin"), randomBytes(size));
    mkdirSync(m("keep"));
    for (let i = 0; i < 10; i++) writeFileSync(m(`keep/f${i}`), randomBytes(5000));
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b))).toEqual([]);

    const degraded = p.primary.waitFor("degraded", 5000);
    await p.secondary.stop();
    await degraded;
    expect(p.primary.state).toBe("degraded");
    const fd = openSync(m("data.bin"), "r+");
    for (let i = 0; i < 64; i++) writeSync(fd, randomBytes(4096), 0, 4096, Math.floor(Math.random() * (size / 4096)) * 4096);
    fdatasyncSync(fd);
    closeSync(fd);
    writeFileSync(m("keep/new.bin"), randomBytes(100_000));
    renameSync(m("keep/f1"), m("keep/f1-renamed"));
    unlinkSync(m("keep/f2"));
    chmodSync(m("keep/f3"), 0o600);
    symlinkSync("f4", m("keep/s"));
    expect(existsSync(join(p.b, "keep/new.bin"))).toBe(false);
    // the same log format as the helper's, read by the TS codec
    const logged = summarizeExtentLog(join(p.root, ".a.hfextents"));
    expect(logged.dataBytes).toBeGreaterThanOrEqual(64 * 4096 + 100_000);
    expect(logged.records).toBeGreaterThan(logged.dataRecords);

    const synced = p.primary.waitFor("synced", 30_000);
    await p.startSecondary();
    // the application keeps writing during the resync
    const live = openSync(m("keep/f5"), "r+");
    for (let i = 0; i < 20; i++) writeSync(live, randomBytes(512), 0, 512, i * 512);
    closeSync(live);
    await synced;
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
    expect(summarizeExtentLog(join(p.root, ".a.hfextents")).records).toBe(0);
    await pollUntil(() => p.secondary.consistent === true, 5000, "secondary consistent");
  });

  it("a secondary that stops answering: the write waits at most ackTimeoutMs, then degraded; back: resynced", async () => {
    const p = await pair("hang", "js", { ackTimeoutMs: 700 });
    const m = (r: string): string => p.primary.mountPath(r);
    writeFileSync(m("before"), "b");
    const pid = p.secondary.pid as number;
    process.kill(pid, "SIGSTOP");
    try {
      const degraded = p.primary.waitFor("degraded", 10_000);
      const t0 = Date.now();
      writeFileSync(m("during"), randomBytes(10_000));
      const waited = Date.now() - t0;
      expect((await degraded).reason).toMatch(/timeout/);
      console.info(`jsfuse: write blocked ${waited} ms by a frozen secondary (ackTimeoutMs 700)`);
      expect(waited).toBeGreaterThanOrEqual(600);
      expect(waited).toBeLessThan(5000);
      // degraded: writes no longer wait
      const t1 = Date.now();
      for (let i = 0; i < 20; i++) writeFileSync(m(`alone${i}`), "x");
      expect(Date.now() - t1).toBeLessThan(2000);
    } finally {
      process.kill(pid, "SIGCONT");
    }
    // the thawed secondary's old stream was dropped; the primary reconnects and resyncs from the log
    await p.primary.waitFor("synced", 30_000);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
  });

  it("host mount namespace: a killed daemon is restarted by the supervisor over its dead mount, then a full pass", async () => {
    const p = await pair("restart", "js", { mountNamespace: "host", restart: { maxRestarts: 2, windowMs: 60_000 } });
    writeFileSync(join(p.mnt, "one"), "1");
    const restarted = p.primary.waitFor("restarted", 20_000);
    const modes: string[] = [];
    p.primary.on("resyncStart", (e) => modes.push(e.mode));
    const synced = new Promise<string>((resolve) => p.primary.on("synced", (e) => e.mode === "full" && resolve(e.mode)));
    process.kill(p.primary.pid as number, "SIGKILL");
    await restarted;
    await synced;
    expect(modes).toContain("full");
    writeFileSync(join(p.mnt, "two"), "2");
    expect(readFileSync(join(p.b, "two"), "utf8")).toBe("2");
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b))).toEqual([]);
    await p.primary.stop();
    expect(readFileSync("/proc/mounts", "utf8")).not.toContain(p.mnt);
  });

  it("include/exclude: excluded paths are served, never sent; renames across the boundary move content", async () => {
    const p = await pair("filter", "js", { exclude: ["*.tmp", "cache/"] });
    const m = (r: string): string => p.primary.mountPath(r);
    const filter = new PathFilter([], ["*.tmp", "cache/"]);
    mkdirSync(m("cache/deep"), { recursive: true });
    writeFileSync(m("cache/deep/x"), "cached");
    writeFileSync(m("keep.dat"), "keep");
    writeFileSync(m("scratch.tmp"), randomBytes(200_000));
    expect(readFileSync(m("scratch.tmp")).length).toBe(200_000); // served by the mount
    expect(existsSync(join(p.b, "scratch.tmp"))).toBe(false);
    expect(existsSync(join(p.b, "cache"))).toBe(false);
    // a file renamed into the set: its content goes over before the rename returns
    renameSync(m("scratch.tmp"), m("scratch.dat"));
    expect(readFileSync(join(p.b, "scratch.dat"))).toEqual(readFileSync(join(p.a, "scratch.dat")));
    // a file renamed out of the set: gone from the secondary
    renameSync(m("keep.dat"), m("keep.tmp"));
    expect(existsSync(join(p.b, "keep.dat"))).toBe(false);
    expect(existsSync(join(p.b, "keep.tmp"))).toBe(false);
    // a directory renamed into the set: a full pass brings its subtree
    const full = new Promise<void>((resolve) => p.primary.on("synced", (e) => e.mode === "full" && resolve()));
    renameSync(m("cache"), m("was-cache"));
    await full;
    expect(readFileSync(join(p.b, "was-cache/deep/x"), "utf8")).toBe("cached");
    const replicatedOnly = (t: ReturnType<typeof snapshotTree>): ReturnType<typeof snapshotTree> =>
      new Map([...t].filter(([k, e]) => filter.replicated(k, e.type === "dir")));
    expect(treeDiff(replicatedOnly(snapshotTree(p.a)), snapshotTree(p.b))).toEqual([]);
  });

  it("encrypted stream (encrypt: true on both sides) mirrors as the plain one", async () => {
    const p = await pair("encrypt", "js", { encrypt: true });
    writeFileSync(p.primary.mountPath("secret"), "marker-in-the-clear");
    const fd = openSync(p.primary.mountPath("secret"), "r+");
    fsyncSync(fd);
    closeSync(fd);
    expect(readFileSync(join(p.b, "secret"), "utf8")).toBe("marker-in-the-clear");
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b))).toEqual([]);
  });

  it("unclean start: a full pass (the log cannot be trusted) repairs what the log never saw; resync(checksum) too", async () => {
    const p = await pair("full");
    const m = (r: string): string => p.primary.mountPath(r);
    mkdirSync(m("d/e"), { recursive: true });
    writeFileSync(m("d/x"), randomBytes(3 << 20));
    writeFileSync(m("d/e/y"), "yyy");
    symlinkSync("x", m("d/sx"));
    linkSync(m("d/x"), m("d/hx"));
    process.kill(p.primary.pid as number, "SIGKILL");
    await p.primary.waitFor("exit", 5000);
    // divergence behind the log's back: junk on the secondary, a changed and a missing file
    writeFileSync(join(p.b, "junk"), "not on the primary");
    writeFileSync(join(p.b, "d/e/y"), "zzz");
    unlinkSync(join(p.b, "d/sx"));
    const again = new JsFuseReplicator({ role: "primary", backingDir: p.a, mountPoint: p.mnt, keyFile: p.key, peer: p.primary.options.role === "primary" ? p.primary.options.peer : { host: "", port: 0 }, restart: false, statsIntervalMs: 200, permit: "always" });
    p.primary = again;
    const ready = again.waitFor("ready", 20_000);
    const modes: string[] = [];
    again.on("resyncStart", (e) => modes.push(e.mode));
    const synced = again.waitFor("synced", 30_000);
    await again.start();
    expect((await ready).uncleanStart).toBe(true);
    // the log pass first, then the full pass; `synced` only after the full one
    expect((await synced).mode).toBe("full");
    expect(modes).toEqual(["log", "full"]);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
    expect(lstatSync(join(p.b, "d/hx")).ino).toBe(lstatSync(join(p.b, "d/x")).ino);
    await pollUntil(() => p.secondary.consistent === true, 5000, "secondary consistent");
    // on command, while the application writes
    writeFileSync(join(p.b, "junk2"), "again behind its back");
    const synced2 = again.waitFor("synced", 30_000);
    again.resync("checksum");
    const fd = openSync(m("d/x"), "r+");
    for (let i = 0; i < 50; i++) writeSync(fd, randomBytes(4096), 0, 4096, i * 40_000);
    closeSync(fd);
    expect((await synced2).mode).toBe("full");
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
  });

  it("measures the JS engine against the compiled helper (1 MiB sequential writes, 4 KiB write+fdatasync)", async () => {
    const SEQ_MIB = 32;
    const SYNC_OPS = 200;
    const measure = (dir: string): { seqMiBs: number; syncP50Us: number; syncAvgUs: number } => {
      const buf = randomBytes(1 << 20);
      let fd = openSync(join(dir, "seq.bin"), "w");
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < SEQ_MIB; i++) writeSync(fd, buf);
      fsyncSync(fd);
      const seqS = Number(process.hrtime.bigint() - t0) / 1e9;
      closeSync(fd);
      fd = openSync(join(dir, "sync.bin"), "w");
      const page = randomBytes(4096);
      const lat: number[] = [];
      for (let i = 0; i < SYNC_OPS; i++) {
        const s0 = process.hrtime.bigint();
        writeSync(fd, page, 0, 4096, i * 4096);
        fdatasyncSync(fd);
        lat.push(Number(process.hrtime.bigint() - s0) / 1000);
      }
      closeSync(fd);
      lat.sort((x, y) => x - y);
      return { seqMiBs: SEQ_MIB / seqS, syncP50Us: lat[Math.floor(lat.length / 2)] as number, syncAvgUs: lat.reduce((x, y) => x + y, 0) / lat.length };
    };
    const local = makePairDirs("js-local");
    cleanups.push(async () => rmSync(local.root, { recursive: true, force: true }));
    const pairs = { native: await pair("bench-native", "native"), js: await pair("bench-js", "js") };
    const dirs: Record<"local" | "native" | "js", string> = { local: local.a, native: pairs.native.primary.mountPath(), js: pairs.js.primary.mountPath() };
    // interleaved rounds (the machine is shared): the median of each figure over the rounds
    const ROUNDS = 3;
    const runs: Record<string, Array<ReturnType<typeof measure>>> = { local: [], native: [], js: [] };
    for (let i = 0; i < ROUNDS; i++) for (const k of ["local", "native", "js"] as const) runs[k]?.push(measure(dirs[k]));
    const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
    const results: Record<string, ReturnType<typeof measure>> = {};
    for (const [k, v] of Object.entries(runs)) {
      results[k] = { seqMiBs: med(v.map((x) => x.seqMiBs)), syncP50Us: med(v.map((x) => x.syncP50Us)), syncAvgUs: med(v.map((x) => x.syncAvgUs)) };
    }
    for (const engine of ["native", "js"] as const) {
      const p = pairs[engine];
      expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b))).toEqual([]);
    }
    const r = results as Record<"local" | "native" | "js", ReturnType<typeof measure>>;
    for (const [k, v] of Object.entries(r)) {
      console.info(`${k.padEnd(7)} seq ${v.seqMiBs.toFixed(1).padStart(7)} MiB/s   4k write+fdatasync p50 ${v.syncP50Us.toFixed(0).padStart(6)} us avg ${v.syncAvgUs.toFixed(0).padStart(6)} us`);
    }
    console.info(
      JSON.stringify({
        bench: "mirror-jsfuse",
        js_over_native_seq: +(r.js.seqMiBs / r.native.seqMiBs).toFixed(3),
        js_over_native_fsync_lat: +(r.js.syncP50Us / r.native.syncP50Us).toFixed(3),
        ...Object.fromEntries(Object.entries(r).flatMap(([k, v]) => [[`${k}_seq_MiBs`, +v.seqMiBs.toFixed(1)], [`${k}_fsync_p50_us`, Math.round(v.syncP50Us)]])),
      }),
    );
    expect(r.js.seqMiBs).toBeGreaterThan(0);
  });

  const PG = "/usr/lib/postgresql/15/bin";
  it.skipIf(!existsSync(`${PG}/postgres`))("PostgreSQL on the JS mount: kill -9 of the node (daemon + postgres) mid-commits, every acknowledged commit on the secondary", async () => {
    const id = (flag: string): number => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout);
    const [pgUid, pgGid] = [id("-u"), id("-g")];
    const p = await pair("pg", "js", { ackTimeoutMs: 5000 });
    chmodSync(p.root, 0o755);
    const sock = join(p.root, "sock");
    mkdirSync(sock);
    chmodSync(sock, 0o777);
    mkdirSync(p.primary.mountPath("pgdata"), { mode: 0o700 });
    chownSync(p.primary.mountPath("pgdata"), pgUid, pgGid);
    const inNs = (argv: string[]): string[] => p.primary.commandInMount(["runuser", "-u", "postgres", "--", ...argv]);
    const run = (argv: string[]): void => {
      const [cmd, ...args] = argv;
      const r = spawnSync(cmd as string, args, { encoding: "utf8", timeout: 120_000 });
      if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
    };
    run(inNs([`${PG}/initdb`, "-D", join(p.mnt, "pgdata"), "-A", "trust", "-U", "postgres", "-E", "UTF8"]));
    const ns = mountNamespaceOf(p.primary.pid as number);
    cleanups.push(async () => void killMountNamespace(ns));
    const startPg = async (argv: string[], port: number): Promise<void> => {
      const [cmd, ...args] = argv;
      const child = spawn(cmd as string, args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
      await pollUntil(() => spawnSync(`${PG}/pg_isready`, ["-q", "-h", sock, "-p", String(port)]).status === 0 || child.exitCode !== null, 60_000, "postgres ready");
      expect(child.exitCode, err).toBeNull();
    };
    await startPg(inNs([`${PG}/postgres`, "-D", join(p.mnt, "pgdata"), "-k", sock, "-p", "55432", "-c", "listen_addresses="]), 55432);
    const psql = (port: number, sql: string): string => {
      const r = spawnSync(`${PG}/psql`, ["-h", sock, "-p", String(port), "-U", "postgres", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
      return r.stdout.trim();
    };
    psql(55432, "create table t (n bigint primary key)");
    // one client, one commit per line; "ok N" is printed once commit N returned
    const client = spawn(`${PG}/psql`, ["-h", sock, "-p", "55432", "-U", "postgres", "-At", "-q"], { stdio: ["pipe", "pipe", "ignore"] });
    let acked = -1;
    createInterface({ input: client.stdout }).on("line", (l) => {
      const m = /^ok (\d+)$/.exec(l);
      if (m) acked = Number(m[1]);
    });
    client.stdin.on("error", () => undefined);
    for (let n = 0; n < 5000; n++) client.stdin.write(`insert into t values (${n});\n\\echo ok ${n}\n`);
    await pollUntil(() => acked >= 300, 60_000, "300 commits");
    const killed = killMountNamespace(ns);
    const lastSeen = acked;
    await new Promise((r) => client.once("exit", r));
    // reaped (a recovering postmaster refuses to start while the old one's pid exists)
    await pollUntil(() => killed.every((pid) => !existsSync(`/proc/${pid}`)), 10_000, "killed processes reaped");
    console.info(`jsfuse postgres: node killed (${killed.length} processes) after ${lastSeen + 1} acknowledged commits (${acked + 1} seen in all)`);
    // recovery on the secondary's copy
    const copy = join(p.b, "pgdata");
    expect(lstatSync(copy).uid).toBe(pgUid);
    await startPg(["runuser", "-u", "postgres", "--", `${PG}/postgres`, "-D", copy, "-k", sock, "-p", "55433", "-c", "listen_addresses="], 55433);
    try {
      expect(Number(psql(55433, `select count(*) from t where n <= ${acked}`))).toBe(acked + 1);
    } finally {
      spawnSync("runuser", ["-u", "postgres", "--", `${PG}/pg_ctl`, "-D", copy, "-m", "immediate", "-w", "stop"], { stdio: "ignore", timeout: 30_000 });
    }
  });

  it.skipIf(!existsSync(`${PG}/pgbench`))("pgbench TPS: local directory vs the helper's mount vs the JS mount (measurement)", async () => {
    const id = (flag: string): number => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout);
    const [pgUid, pgGid] = [id("-u"), id("-g")];
    const local = makePairDirs("js-pglocal");
    cleanups.push(async () => rmSync(local.root, { recursive: true, force: true }));
    /** `made`: where this process creates the data directory (the mount seen from here); `dataDir`: as the server sees it. */
    const tps = async (made: string, dataDir: string, wrap: (a: string[]) => string[], sock: string, port: number): Promise<number> => {
      const run = (argv: string[]): string => {
        const [cmd, ...args] = wrap(argv);
        const r = spawnSync(cmd as string, args, { encoding: "utf8", timeout: 180_000 });
        if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
        return r.stdout;
      };
      mkdirSync(made, { mode: 0o700 });
      chownSync(made, pgUid, pgGid);
      mkdirSync(sock, { recursive: true });
      chmodSync(sock, 0o777);
      const pg = ["runuser", "-u", "postgres", "--"];
      run([...pg, `${PG}/initdb`, "-D", dataDir, "-A", "trust", "-U", "postgres", "-E", "UTF8"]);
      const [cmd, ...args] = wrap([...pg, `${PG}/postgres`, "-D", dataDir, "-k", sock, "-p", String(port), "-c", "listen_addresses="]);
      const child = spawn(cmd as string, args, { detached: true, stdio: "ignore" });
      try {
        await pollUntil(() => spawnSync(`${PG}/pg_isready`, ["-q", "-h", sock, "-p", String(port)]).status === 0 || child.exitCode !== null, 60_000, "postgres ready");
        const bench = (a: string[]): string => {
          const r = spawnSync(`${PG}/pgbench`, ["-h", sock, "-p", String(port), "-U", "postgres", ...a, "postgres"], { encoding: "utf8", timeout: 120_000 });
          if (r.status !== 0) throw new Error(`pgbench: ${r.stderr}`);
          return r.stdout;
        };
        bench(["-i", "-s", "2", "-q"]);
        const out = bench(["-c", "4", "-j", "2", "-T", "8"]);
        const m = /tps = ([\d.]+)/.exec(out);
        return Number(m?.[1] ?? 0);
      } finally {
        run([...pg, `${PG}/pg_ctl`, "-D", dataDir, "-m", "fast", "-w", "stop"]);
      }
    };
    chmodSync(local.root, 0o755);
    const result: Record<string, number> = { local: await tps(join(local.a, "pgdata"), join(local.a, "pgdata"), (a) => a, join(local.root, "sock"), 5432) };
    for (const engine of ["native", "js"] as const) {
      const p = await pair(`pgb-${engine}`, engine, { ackTimeoutMs: 5000 });
      chmodSync(p.root, 0o755);
      result[engine] = await tps(p.primary.mountPath("pgdata"), join(p.mnt, "pgdata"), (a) => p.primary.commandInMount(a), join(p.root, "sock"), 5432);
      await p.primary.stop();
    }
    const r = result as Record<"local" | "native" | "js", number>;
    console.info(`pgbench -c4 -j2 -T8 -s2: local ${r.local.toFixed(0)} tps, helper ${r.native.toFixed(0)} tps (${(r.native / r.local).toFixed(2)}x), JS ${r.js.toFixed(0)} tps (${(r.js / r.local).toFixed(2)}x local, ${(r.js / r.native).toFixed(2)}x helper)`);
    expect(r.js).toBeGreaterThan(0);
  });
});

/** Resolves with the time (performance.now) at which `p` settled, or undefined if it has not within `ms`. */

describe.skipIf(!canRun)("mirror: the permit (fencing) of the JavaScript engine", () => {
  it("with the secondary gone and no renewal a write waits past the deadline and returns at the renewal; with renewals it acks alone", async () => {
    const p = await pair("permit", "js", { permit: "renewed", ackTimeoutMs: 500 });
    const { writeFile } = await import("node:fs/promises");
    await writeFile(p.primary.mountPath("in-sync.txt"), "acked by the secondary"); // no permit needed
    expect(readFileSync(join(p.b, "in-sync.txt"), "utf8")).toBe("acked by the secondary");
    p.primary.renewPermit(1500);
    const degraded = p.primary.waitFor("degraded", 5000);
    await p.secondary.stop();
    const t0 = performance.now();
    await writeFile(p.primary.mountPath("alone-1.txt"), "logged under the permit");
    await degraded;
    expect(performance.now() - t0).toBeLessThan(1500);
    await pollUntil(() => (p.primary.metrics().permitMs ?? 0) > 0, 3000, "the permit in the engine's stats");
    await pollUntil(() => p.primary.metrics().permitMs === 0, 5000, "the permit to run out (stats)");
    const expired = p.primary.waitFor("permitExpired", 5000);
    const blocked = writeFile(p.primary.mountPath("alone-2.txt"), "waits for a permit");
    expect((await expired).waiting).toBeGreaterThanOrEqual(1);
    expect(await settledWithin(blocked, 1500)).toBeUndefined();
    expect(existsSync(join(p.a, "alone-2.txt"))).toBe(false); // nothing applied before a permit (as the compiled helper)
    const renewedAt = performance.now();
    p.primary.renewPermit(1000);
    const doneAt = await settledWithin(blocked, 3000);
    expect(doneAt).toBeDefined();
    expect((doneAt as number) - renewedAt).toBeLessThan(1000);
    await blocked;
    expect(readFileSync(join(p.a, "alone-2.txt"), "utf8")).toBe("waits for a permit");
    const timer = setInterval(() => p.primary.renewPermit(400), 100);
    try {
      const start = performance.now();
      let n = 0;
      while (performance.now() - start < 1500) {
        const w0 = performance.now();
        await writeFile(p.primary.mountPath(`renewed-${n++}.txt`), "x");
        expect(performance.now() - w0).toBeLessThan(400);
      }
      expect(n).toBeGreaterThan(5);
    } finally {
      clearInterval(timer);
    }
  });

  it("SIGSTOP of the supervisor alone: acks alone stop within the permit; SIGCONT renews and the waiting write returns", async () => {
    const d = makePairDirs("js-permit-stop");
    cleanups.push(async () => rmSync(d.root, { recursive: true, force: true }));
    const src = new URL("../../src/mirror/jsfuse/index.ts", import.meta.url).pathname;
    const script = join(d.root, "supervisor.mts");
    writeFileSync(
      script,
      `import { JsFuseReplicator } from ${JSON.stringify(src)};
const r = new JsFuseReplicator({ role: "primary", backingDir: ${JSON.stringify(d.a)}, mountPoint: ${JSON.stringify(d.mnt)}, keyFile: ${JSON.stringify(d.key)},
  peer: { host: "127.0.0.1", port: 9 }, restart: false, statsIntervalMs: 0, permit: "renewed" });
await r.start();
setInterval(() => r.renewPermit(600), 150);
r.renewPermit(600);
console.log(JSON.stringify({ pid: r.pid }));
process.stdin.on("end", () => void r.stop().then(() => process.exit(0)));
process.stdin.resume();
`,
    );
    const sup = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["pipe", "pipe", "inherit"], cwd: new URL("../..", import.meta.url).pathname });
    cleanups.push(async () => {
      sup.kill("SIGCONT");
      sup.kill("SIGKILL");
    });
    const { writeFile } = await import("node:fs/promises");
    const helperPid = await new Promise<number>((resolve, reject) => {
      createInterface({ input: sup.stdout }).on("line", (l) => {
        const m = /"pid":(\d+)/.exec(l);
        if (m) resolve(Number(m[1]));
      });
      sup.once("exit", () => reject(new Error("supervisor exited")));
    });
    const path = (n: string): string => `/proc/${helperPid}/root${d.mnt}/${n}`;
    for (let i = 0; i < 5; i++) await writeFile(path(`before-${i}`), "x");
    sup.kill("SIGSTOP");
    const stoppedAt = performance.now();
    let lastAck = stoppedAt;
    let pending: Promise<void> | undefined;
    for (let i = 0; performance.now() - stoppedAt < 2000; i++) {
      pending = writeFile(path(`during-${i}`), "x");
      const at = await settledWithin(pending, 2000 - (performance.now() - stoppedAt));
      if (at === undefined) break;
      lastAck = at;
      pending = undefined;
    }
    const window = lastAck - stoppedAt;
    console.log(`permit lab (JS engine): last ack alone ${Math.round(window)} ms after the supervisor's SIGSTOP (permit 600 ms)`);
    expect(window).toBeLessThan(600 + 100);
    expect(pending).toBeDefined();
    const contAt = performance.now();
    sup.kill("SIGCONT");
    const doneAt = await settledWithin(pending as Promise<void>, 3000);
    expect(doneAt).toBeDefined();
    expect((doneAt as number) - contAt).toBeLessThan(1000);
    sup.stdin.end();
    await new Promise((r) => sup.once("exit", r));
  });
});
