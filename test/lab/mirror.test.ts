/**
 * The mirror's data path for real: the compiled helper, a FUSE mount, two backing directories ("nodes"), the
 * secondary on loopback. Needs root and /dev/fuse.
 */
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  chmodSync,
  existsSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { open as openP } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { summarizeExtentLog } from "../../src/mirror/extentLog.js";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { helperPath } from "../../src/mirror/helper.js";
import { PathFilter } from "../../src/mirror/pathFilter.js";
import { makePairDirs, pollUntil, snapshotTree, startLoopbackPair, treeDiff, type LoopbackPair } from "../../src/mirror/testing.js";
import { settledWithin } from "./helpers/settled.js";

const canRun = process.getuid?.() === 0 && existsSync("/dev/fuse");
const pairs: LoopbackPair[] = [];
const others: FileReplicator[] = [];
afterEach(async () => {
  await Promise.allSettled(others.splice(0).map((r) => r.stop()));
  await Promise.allSettled(pairs.splice(0).map((p) => p.close()));
});
async function pair(tag: string, extra: Parameters<typeof startLoopbackPair>[1] = {}): Promise<LoopbackPair> {
  // these tests exercise the data path without a supervisor that renews permits: a standing one
  const p = await startLoopbackPair(tag, { permit: "always", ...extra });
  pairs.push(p);
  return p;
}

/** Union length of [off, off+len) extents. */
function unionBytes(extents: Array<[number, number]>): number {
  const s = [...extents].sort((x, y) => x[0] - y[0]);
  let total = 0;
  let curS = -1;
  let curE = -1;
  for (const [o, l] of s) {
    if (o > curE) {
      if (curE > curS) total += curE - curS;
      curS = o;
      curE = o + l;
    } else curE = Math.max(curE, o + l);
  }
  if (curE > curS) total += curE - curS;
  return total;
}

describe.skipIf(!canRun)("mirror: FUSE helper with synchronous replication", () => {
  it("every write is on the secondary when the call returns; every operation kind is mirrored", async () => {
    const p = await pair("sync");
    const f = p.primary.mountPath("log.txt");
    const fd = openSync(f, "a");
    let expected = "";
    for (let i = 0; i < 200; i++) {
      const rec = `record ${i} ${randomBytes(8).toString("hex")}\n`;
      writeSync(fd, rec);
      expected += rec;
      // a plain write returned: the secondary applied it (its page cache)
      expect(readFileSync(join(p.b, "log.txt"), "utf8")).toBe(expected);
      if (i % 10 === 9) {
        fsyncSync(fd);
        expect(readFileSync(join(p.b, "log.txt"), "utf8")).toBe(expected);
      }
    }
    closeSync(fd);
    // one large write (split by the kernel into 1 MiB FUSE writes), then every namespace/metadata operation
    const big = randomBytes(3 << 20);
    writeFileSync(p.primary.mountPath("big.bin"), big);
    expect(readFileSync(join(p.b, "big.bin")).equals(big)).toBe(true);
    mkdirSync(p.primary.mountPath("d/e"), { recursive: true, mode: 0o750 });
    writeFileSync(p.primary.mountPath("d/e/x"), "x");
    renameSync(p.primary.mountPath("d/e/x"), p.primary.mountPath("d/y"));
    symlinkSync("../big.bin", p.primary.mountPath("d/link"));
    linkSync(p.primary.mountPath("big.bin"), p.primary.mountPath("d/hard"));
    chmodSync(p.primary.mountPath("d/y"), 0o640);
    truncateSync(p.primary.mountPath("big.bin"), 1000);
    utimesSync(p.primary.mountPath("d/y"), new Date(1_000_000_000_000), new Date(1_200_000_000_000));
    writeFileSync(p.primary.mountPath("gone"), "bye");
    unlinkSync(p.primary.mountPath("gone"));
    const sa = snapshotTree(p.a);
    expect(sa.get("d/link")?.target).toBe("../big.bin");
    expect(statSync(join(p.b, "d/hard")).ino).toBe(statSync(join(p.b, "big.bin")).ino);
    expect(lstatSync(join(p.b, "d/y")).mtimeMs).toBe(1_200_000_000_000);
    expect(treeDiff(sa, snapshotTree(p.b), { mtimes: true })).toEqual([]);
    const m = await p.primary.waitFor("metrics", 5000);
    expect(m.bytesReplicated).toBeGreaterThanOrEqual(big.length + expected.length);
    expect(m.acks).toBeGreaterThan(200);
    expect(m.ackLatencyMaxUs).toBeGreaterThanOrEqual(0);
  });

  it("kill -9 of the primary helper during fsync'd appends: every fsync'd record is on the secondary", async () => {
    const p = await pair("crash");
    const file = p.primary.mountPath("wal.log");
    // the writer prints the record number after each fsync returned
    const code = `const fs=require("fs");const fd=fs.openSync(process.argv[1],"a");for(let i=0;;i++){try{fs.writeSync(fd,"rec "+i+" "+"x".repeat(100)+"\\n");fs.fdatasyncSync(fd);}catch(e){process.exit(0)}process.stdout.write(i+"\\n");}`;
    const writer = spawn(process.execPath, ["-e", code, file], { stdio: ["ignore", "pipe", "inherit"] });
    let acked = -1;
    createInterface({ input: writer.stdout }).on("line", (l) => {
      acked = Number(l);
    });
    await pollUntil(() => acked >= 300, 30_000, "300 fsync'd records");
    process.kill(p.primary.pid as number, "SIGKILL");
    const lastSeen = acked;
    console.info(`crash: helper killed after ${lastSeen + 1} fsync'd records`);
    await new Promise((r) => writer.once("exit", r));
    expect(acked).toBeGreaterThanOrEqual(lastSeen);
    const lines = readFileSync(join(p.b, "wal.log"), "utf8").split("\n");
    for (let i = 0; i <= acked; i++) expect(lines[i]?.startsWith(`rec ${i} `)).toBe(true);
  });

  it("secondary down -> degraded -> writes go on -> secondary back -> resync sends ~ the modified bytes", async () => {
    const p = await pair("resync", { ackTimeoutMs: 500 });
    const size = 16 << 20;
    writeFileSync(p.primary.mountPath("data.bin"), randomBytes(size));
    mkdirSync(p.primary.mountPath("keep"));
    for (let i = 0; i < 20; i++) writeFileSync(p.primary.mountPath(`keep/f${i}`), randomBytes(10_000));
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b))).toEqual([]);

    const degraded = p.primary.waitFor("degraded", 5000);
    await p.secondary.stop();
    await degraded;
    expect(p.primary.state).toBe("degraded");

    // the known workload, while the secondary is away
    const extents: Array<[number, number]> = [];
    const fd = openSync(p.primary.mountPath("data.bin"), "r+");
    for (let i = 0; i < 256; i++) {
      const off = Math.floor(Math.random() * (size / 4096)) * 4096;
      writeSync(fd, randomBytes(4096), 0, 4096, off);
      extents.push([off, 4096]);
    }
    fsyncSync(fd);
    closeSync(fd);
    writeFileSync(p.primary.mountPath("new.bin"), randomBytes(1 << 20));
    renameSync(p.primary.mountPath("new.bin"), p.primary.mountPath("keep/new.bin"));
    renameSync(p.primary.mountPath("keep/f1"), p.primary.mountPath("keep/f1-renamed"));
    unlinkSync(p.primary.mountPath("keep/f2"));
    chmodSync(p.primary.mountPath("keep/f3"), 0o600);
    mkdirSync(p.primary.mountPath("later"));
    symlinkSync("keep/f4", p.primary.mountPath("later/s"));
    const modified = unionBytes(extents) + (1 << 20);
    expect(p.primary.state).toBe("degraded");
    const before = (await p.primary.waitFor("metrics", 5000)).resyncBytes;
    expect(existsSync(join(p.b, "keep/new.bin"))).toBe(false);
    // the helper's log, read by the TS codec: every write of the outage is there
    const logged = summarizeExtentLog(join(p.root, ".a.hfextents"));
    expect(logged.dataBytes).toBeGreaterThanOrEqual(256 * 4096 + (1 << 20));
    expect(logged.records).toBeGreaterThan(logged.dataRecords);

    // the application keeps writing while the secondary comes back and is resynced
    const synced = p.primary.waitFor("synced", 30_000);
    const progress: number[] = [];
    p.primary.on("resyncProgress", (e) => progress.push(e.percent));
    await p.startSecondary();
    let done = false;
    void synced.then(() => (done = true));
    const live = await openP(p.primary.mountPath("keep/f5"), "r+");
    let liveWrites = 0;
    while (!done || liveWrites < 20) {
      await live.write(randomBytes(512), 0, 512, (liveWrites * 512) % 8192);
      liveWrites++;
    }
    await live.close();
    await synced;
    expect(progress.at(-1)).toBe(100);
    const after = (await p.primary.waitFor("metrics", 5000)).resyncBytes;
    const sent = after - before;
    console.info(`resync: modified ${modified} B, sent ${sent} B (ratio ${(sent / modified).toFixed(3)}), ${liveWrites} live writes during resync`);
    expect(sent).toBeGreaterThanOrEqual(modified);
    expect(sent).toBeLessThanOrEqual(1.2 * modified);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
    expect(p.secondary.consistent).toBe(true);
  });

  it("preserves ownership and permissions of files created by an unprivileged user", async () => {
    const p = await pair("owner");
    mkdirSync(p.primary.mountPath("pgdata"), { mode: 0o700 });
    spawnSync("chown", ["1000:1000", p.primary.mountPath("pgdata")]);
    const script = `umask 077 && cd ${p.mnt}/pgdata && echo hi > f && mkdir sub && ln -s f sl && chmod 0640 f && mkfifo fifo`;
    const [cmd, ...args] = p.primary.commandInMount(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", script]);
    const r = spawnSync(cmd, args, { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const sb = snapshotTree(p.b);
    expect(sb.get("pgdata")).toMatchObject({ mode: 0o700, uid: 1000, gid: 1000 });
    expect(sb.get("pgdata/f")).toMatchObject({ mode: 0o640, uid: 1000, gid: 1000 });
    expect(sb.get("pgdata/sub")).toMatchObject({ mode: 0o700, uid: 1000 });
    expect(sb.get("pgdata/sl")).toMatchObject({ type: "symlink", target: "f", uid: 1000 });
    expect(sb.get("pgdata/fifo")).toMatchObject({ type: "other", uid: 1000, mode: 0o600 });
    expect(treeDiff(snapshotTree(p.a), sb)).toEqual([]);
  });

  it("refuses a primary with another key and a forged handshake; nothing is applied", async () => {
    const p = await pair("auth");
    const failures: string[] = [];
    const refused: boolean[] = [];
    p.secondary.on("authFailed", (e) => {
      failures.push(e.reason);
      refused.push(e.refused);
    });
    // a raw client that answers the hello with random bytes
    const port = p.secondary.port as number;
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      let got = 0;
      s.on("data", (d) => {
        got += d.length;
        if (got >= 36) s.write(randomBytes(64));
      });
      s.on("close", () => resolve(true));
      s.on("error", () => resolve(true));
    });
    expect(closed).toBe(true);
    await pollUntil(() => failures.length >= 1, 5000, "secondary authFailed");
    expect(failures[0]).toMatch(/authentication/);
    expect(refused[0]).toBe(true); // what the mirror driver reads (an error, not a handshake cut short)

    // a second primary with a different key (the legitimate one stays connected and in sync)
    const badKey = join(p.root, "badkey");
    writeFileSync(badKey, randomBytes(32), { mode: 0o600 });
    const mnt2 = join(p.root, "mnt2");
    const a2 = join(p.root, "a2");
    mkdirSync(mnt2);
    mkdirSync(a2);
    const rogue = new FileReplicator({ role: "primary", backingDir: a2, mountPoint: mnt2, keyFile: badKey, peer: { host: "127.0.0.1", port }, restart: false, reconnectMs: 100, permit: "always" });
    others.push(rogue);
    const rogueFailed = rogue.waitFor("authFailed", 5000);
    await rogue.start();
    expect((await rogueFailed).reason).toMatch(/refused|authentication/);
    writeFileSync(rogue.mountPath("evil"), "x");
    expect(existsSync(join(p.b, "evil"))).toBe(false);
    await pollUntil(() => failures.length >= 2, 5000, "second authFailed");
    expect(refused[1]).toBe(true);
    // the legitimate stream still works
    writeFileSync(p.primary.mountPath("ok"), "fine");
    expect(readFileSync(join(p.b, "ok"), "utf8")).toBe("fine");
  });

  it("checksum pass repairs a secondary that diverged behind the log's back; full pass copies the tree", async () => {
    const p = await pair("checksum");
    writeFileSync(p.primary.mountPath("db.bin"), randomBytes(4 << 20));
    mkdirSync(p.primary.mountPath("dir"));
    writeFileSync(p.primary.mountPath("dir/small"), "small");
    // damage the secondary directly: one byte in one 64 KiB block, an extra file, a missing file
    const fd = openSync(join(p.b, "db.bin"), "r+");
    writeSync(fd, Buffer.from([0xff ^ readFileSync(join(p.b, "db.bin"))[100_000]!]), 0, 1, 100_000);
    closeSync(fd);
    writeFileSync(join(p.b, "extra"), "not on the primary");
    unlinkSync(join(p.b, "dir/small"));
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b)).length).toBe(3);

    const before = (await p.primary.waitFor("metrics", 5000)).resyncBytes;
    const synced = p.primary.waitFor("synced", 30_000);
    p.primary.resync("checksum");
    expect((await synced).mode).toBe("checksum");
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
    const after = (await p.primary.waitFor("metrics", 5000)).resyncBytes;
    expect(after - before).toBeLessThanOrEqual(64 * 1024 + 5); // one block + "small"
    expect(after - before).toBeGreaterThan(0);

    const synced2 = p.primary.waitFor("synced", 30_000);
    p.primary.resync("full");
    expect((await synced2).mode).toBe("full");
    const after2 = (await p.primary.waitFor("metrics", 5000)).resyncBytes;
    expect(after2 - after).toBe((4 << 20) + 5);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
  });

  it("a killed primary helper is restarted; its unclean start forces a verify pass that repairs unlogged changes", async () => {
    const p = await pair("restart", { restart: { maxRestarts: 2, windowMs: 60_000 } });
    writeFileSync(p.primary.mountPath("before"), "replicated");
    const restarted = p.primary.waitFor("restarted", 20_000);
    const ready = p.primary.waitFor("ready", 20_000);
    const synced = p.primary.waitFor("synced", 30_000);
    process.kill(p.primary.pid as number, "SIGKILL");
    // what a crash can leave behind: a local change that was neither acked nor logged
    writeFileSync(join(p.a, "unlogged"), "applied locally only");
    expect((await restarted).attempt).toBe(1);
    expect((await ready).uncleanStart).toBe(true);
    expect((await synced).mode).toBe("verify");
    expect(readFileSync(join(p.b, "unlogged"), "utf8")).toBe("applied locally only");
    writeFileSync(p.primary.mountPath("after"), "again");
    expect(readFileSync(join(p.b, "after"), "utf8")).toBe("again");
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b))).toEqual([]);
  });

  it("link flapping and a secondary killed mid-resync: ends identical, every acknowledged record kept", async () => {
    const p = await pair("flap", { ackTimeoutMs: 500, reconnectMs: 100 });
    let stop = false;
    let acked = 0;
    const fh = await openP(p.primary.mountPath("journal"), "a");
    const writer = (async () => {
      while (!stop) {
        await fh.write(`rec ${acked}\n`);
        await fh.datasync();
        acked++;
      }
    })();
    let interrupted = 0;
    for (let cycle = 0; cycle < 4; cycle++) {
      const degraded = p.primary.waitFor("degraded", 5000);
      await p.secondary.stop();
      await degraded;
      writeFileSync(p.primary.mountPath(`bulk${cycle}`), randomBytes(16 << 20));
      const resyncStart = p.primary.waitFor("resyncStart", 10_000);
      let synced = p.primary.waitFor("synced", 30_000);
      let syncedEarly = false;
      void synced.then(() => (syncedEarly = true), () => undefined);
      await p.startSecondary();
      await resyncStart;
      if (cycle % 2 === 0) {
        const deg = p.primary.waitFor("degraded", 5000);
        process.kill(p.secondary.pid as number, "SIGKILL");
        await deg;
        if (!syncedEarly) interrupted++;
        synced = p.primary.waitFor("synced", 30_000);
        await p.startSecondary();
      }
      await synced;
      expect(p.primary.state).toBe("sync");
    }
    stop = true;
    await writer;
    await fh.close();
    console.info(`flapping: ${acked} fsync'd records during 4 outages, ${interrupted} resyncs interrupted by a kill`);
    expect(interrupted).toBeGreaterThan(0);
    expect(acked).toBeGreaterThan(10);
    const lines = readFileSync(join(p.b, "journal"), "utf8").split("\n");
    for (let i = 0; i < acked; i++) expect(lines[i]).toBe(`rec ${i}`);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
  });

  it("primary helper killed during a resync: restarted, the verify pass completes it", async () => {
    const p = await pair("primkill", { restart: { maxRestarts: 2, windowMs: 60_000 }, ackTimeoutMs: 500 });
    writeFileSync(p.primary.mountPath("base"), randomBytes(4 << 20));
    const degraded = p.primary.waitFor("degraded", 5000);
    await p.secondary.stop();
    await degraded;
    for (let i = 0; i < 4; i++) writeFileSync(p.primary.mountPath(`outage${i}`), randomBytes(8 << 20));
    const resyncStart = p.primary.waitFor("resyncStart", 10_000);
    await p.startSecondary();
    await resyncStart;
    const restarted = p.primary.waitFor("restarted", 20_000);
    const synced = p.primary.waitFor("synced", 60_000);
    process.kill(p.primary.pid as number, "SIGKILL");
    await restarted;
    expect((await synced).mode).toBe("verify");
    expect(p.secondary.consistent).toBe(true);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
  });

  it("secondary disk full: the primary goes degraded and keeps every write; when space is back the resync completes", async () => {
    const { root, a, b, mnt, key } = makePairDirs("full");
    // the secondary in its own mount namespace, its backing directory an 8 MiB tmpfs
    const sec = spawn("unshare", ["--mount", "--propagation", "private", "--", "sh", "-c", `mount -t tmpfs -o size=8m hf-full ${b} && exec ${helperPath()} secondary --backing ${b} --listen 127.0.0.1:0 --key-file ${key}`], { stdio: ["ignore", "pipe", "inherit"] });
    let primary: FileReplicator | undefined;
    const secLines: string[] = [];
    try {
      const port = await new Promise<number>((resolve, reject) => {
        createInterface({ input: sec.stdout }).on("line", (l) => {
          secLines.push(l);
          const m = /"port":(\d+)/.exec(l);
          if (m) resolve(Number(m[1]));
        });
        sec.once("exit", () => reject(new Error("secondary exited")));
      });
      primary = new FileReplicator({ role: "primary", backingDir: a, mountPoint: mnt, keyFile: key, peer: { host: "127.0.0.1", port }, restart: false, ackTimeoutMs: 1000, permit: "always" });
      const synced = primary.waitFor("synced", 10_000);
      await primary.start();
      await synced;
      const degraded = primary.waitFor("degraded", 10_000);
      const data = randomBytes(12 << 20);
      writeFileSync(primary.mountPath("big"), data); // larger than the secondary's disk: must still succeed here
      expect((await degraded).reason).toMatch(/apply error/);
      expect(readFileSync(join(a, "big")).equals(data)).toBe(true);
      // The secondary, on an apply error, marks its copy inconsistent (before saying so) and applies nothing more
      // from that stream: no frame in flight (a RESYNC_DONE among them) may make it claim a consistent copy it lacks.
      await pollUntil(() => secLines.some((l) => l.includes('"event":"apply-error"')), 5000, "the secondary's apply error");
      secLines.forEach((l, i) => {
        if (!l.includes('"event":"apply-error"')) return;
        expect(secLines[i - 1]).toBe('{"event":"inconsistent"}');
        const next = secLines.findIndex((x, j) => j > i && x.includes('"state":"connected"'));
        expect(secLines.slice(i, next < 0 ? undefined : next)).not.toContain('{"event":"consistent"}');
      });
      // space comes back on the secondary
      const again = primary.waitFor("synced", 30_000);
      const r = spawnSync("nsenter", [`--mount=/proc/${sec.pid}/ns/mnt`, "--", "mount", "-o", "remount,size=64m", b]);
      expect(r.status).toBe(0);
      await again;
      const remote = `/proc/${sec.pid}/root${b}`;
      expect(readFileSync(join(remote, "big")).equals(data)).toBe(true);
      expect(treeDiff(snapshotTree(a), snapshotTree(remote), { mtimes: true })).toEqual([]);
    } finally {
      await primary?.stop();
      sec.kill("SIGKILL");
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("verify pass after a crash while degraded: sends the logged extents plus only the unlogged divergence", async () => {
    const p = await pair("verify", { restart: { maxRestarts: 2, windowMs: 60_000 }, ackTimeoutMs: 500 });
    const size = 8 << 20;
    writeFileSync(p.primary.mountPath("db"), randomBytes(size));
    writeFileSync(p.primary.mountPath("other"), randomBytes(1 << 20));
    for (let i = 0; i < 50; i++) writeFileSync(p.primary.mountPath(`small${i}`), randomBytes(3000));
    const degraded = p.primary.waitFor("degraded", 5000);
    await p.secondary.stop();
    await degraded;
    const extents: Array<[number, number]> = [];
    const fd = openSync(p.primary.mountPath("db"), "r+");
    for (let i = 0; i < 200; i++) {
      const off = Math.floor(Math.random() * (size / 4096)) * 4096;
      writeSync(fd, randomBytes(4096), 0, 4096, off);
      extents.push([off, 4096]);
    }
    closeSync(fd);
    const restarted = p.primary.waitFor("restarted", 20_000);
    process.kill(p.primary.pid as number, "SIGKILL");
    // a write the crash left applied locally but neither acked nor logged, in a file the log does not name
    const ofd = openSync(join(p.a, "other"), "r+");
    writeSync(ofd, randomBytes(4096), 0, 4096, 300_000);
    closeSync(ofd);
    await restarted;
    const before = (await p.primary.waitFor("metrics", 5000)).resyncBytes;
    const synced = p.primary.waitFor("synced", 30_000);
    await p.startSecondary();
    expect((await synced).mode).toBe("verify");
    const sent = (await p.primary.waitFor("metrics", 5000)).resyncBytes - before;
    const modified = unionBytes(extents) + 4096;
    console.info(`verify: modified ${modified} B (one write unlogged), sent ${sent} B (ratio ${(sent / modified).toFixed(3)})`);
    expect(sent).toBeGreaterThanOrEqual(modified);
    expect(sent).toBeLessThanOrEqual(unionBytes(extents) + 2 * 65536);
    expect(treeDiff(snapshotTree(p.a), snapshotTree(p.b), { mtimes: true })).toEqual([]);
  });

  it("include/exclude: excluded paths are served but never replicated, also across renames, an outage and a checksum pass", async () => {
    const exclude = ["*.tmp", "cache/**", "pg_stat_tmp/"];
    const p = await pair("filter", { exclude, ackTimeoutMs: 500, reconnectMs: 100 });
    const m = (r: string): string => p.primary.mountPath(r);
    const filter = new PathFilter([], exclude);
    /** The snapshot restricted to what the patterns replicate. */
    const replicatedPart = (snap: ReturnType<typeof snapshotTree>): ReturnType<typeof snapshotTree> =>
      new Map([...snap].filter(([k, e]) => filter.replicated(k, e.type === "dir")));
    for (const d of ["sub", "cache/d", "pg_stat_tmp", "data"]) mkdirSync(m(d), { recursive: true });
    const files: Record<string, string> = {
      "keep.txt": "kept",
      "x.tmp": "temporary, then renamed in",
      "sub/y.tmp": "temporary",
      "cache/a": "cached",
      "cache/d/b": "cached deeper",
      "pg_stat_tmp/global.stat": "stats",
      "data/pg_stat_tmp": "a file of that name: the pattern is for directories",
    };
    for (const [k, v] of Object.entries(files)) writeFileSync(m(k), v);
    // served by the mount as usual
    for (const [k, v] of Object.entries(files)) expect(readFileSync(m(k), "utf8")).toBe(v);
    // on the secondary: only the replicated ones (cache/ itself is, its content is not)
    for (const k of ["keep.txt", "data/pg_stat_tmp", "sub", "cache"]) expect([k, existsSync(join(p.b, k))]).toEqual([k, true]);
    for (const k of ["x.tmp", "sub/y.tmp", "cache/a", "cache/d", "pg_stat_tmp"]) expect([k, existsSync(join(p.b, k))]).toEqual([k, false]);
    // the secondary's own file under an excluded name is left alone from now on
    writeFileSync(join(p.b, "own.tmp"), "the secondary's");

    renameSync(m("x.tmp"), m("x.txt")); // excluded -> included: the content goes over
    expect(readFileSync(join(p.b, "x.txt"), "utf8")).toBe(files["x.tmp"]);
    renameSync(m("keep.txt"), m("keep.tmp")); // included -> excluded: gone from the secondary
    expect(existsSync(join(p.b, "keep.txt"))).toBe(false);
    expect(existsSync(join(p.b, "keep.tmp"))).toBe(false);
    linkSync(m("sub/y.tmp"), m("sub/y.txt")); // a link from an excluded name: a copy
    expect(readFileSync(join(p.b, "sub/y.txt"), "utf8")).toBe(files["sub/y.tmp"]);
    // a directory moved in: its subtree is sent by a verify pass
    mkdirSync(m("dir.tmp/inner"), { recursive: true });
    writeFileSync(m("dir.tmp/inner/f"), "in a directory moved in");
    expect(existsSync(join(p.b, "dir.tmp"))).toBe(false);
    const verified = p.primary.waitFor("synced", 15_000);
    renameSync(m("dir.tmp"), m("dir"));
    expect((await verified).mode).toBe("verify");
    expect(readFileSync(join(p.b, "dir/inner/f"), "utf8")).toBe("in a directory moved in");

    // an outage: the extent log holds only replicated paths; the log resync sends them
    const degraded = p.primary.waitFor("degraded", 5000);
    await p.secondary.stop();
    await degraded;
    writeFileSync(m("late.txt"), randomBytes(100_000));
    writeFileSync(m("late.tmp"), randomBytes(100_000));
    writeFileSync(m("cache/a"), "changed while away");
    const synced = p.primary.waitFor("synced", 15_000);
    await p.startSecondary();
    expect((await synced).mode).toBe("log");
    expect(existsSync(join(p.b, "late.txt"))).toBe(true);
    expect(existsSync(join(p.b, "late.tmp"))).toBe(false);
    expect(existsSync(join(p.b, "cache/a"))).toBe(false);
    expect(treeDiff(replicatedPart(snapshotTree(p.a)), replicatedPart(snapshotTree(p.b)), { mtimes: true })).toEqual([]);

    // a checksum pass prunes what the primary lacks, but not the secondary's excluded paths
    writeFileSync(join(p.b, "stray.txt"), "not on the primary");
    const synced2 = p.primary.waitFor("synced", 30_000);
    p.primary.resync("checksum");
    expect((await synced2).mode).toBe("checksum");
    expect(existsSync(join(p.b, "stray.txt"))).toBe(false);
    expect(readFileSync(join(p.b, "own.tmp"), "utf8")).toBe("the secondary's");
    for (const k of ["late.tmp", "x.tmp", "cache/a", "pg_stat_tmp"]) expect([k, existsSync(join(p.b, k))]).toEqual([k, false]);
    expect(treeDiff(replicatedPart(snapshotTree(p.a)), replicatedPart(snapshotTree(p.b)), { mtimes: true })).toEqual([]);
  });
});

/** Resolves with the time (performance.now) at which `p` settled, or undefined if it has not within `ms`. */

describe.skipIf(!canRun)("mirror: the permit (fencing) of the C helper", () => {
  it("with the secondary gone and no renewal a write waits past the deadline and returns at the renewal; with renewals it acks alone", async () => {
    const p = await startLoopbackPair("permit", { permit: "renewed", ackTimeoutMs: 500 });
    pairs.push(p);
    const { writeFile } = await import("node:fs/promises");
    // in sync, never granted a permit: acks come from the secondary and need none
    await writeFile(p.primary.mountPath("in-sync.txt"), "acked by the secondary");
    expect(readFileSync(join(p.b, "in-sync.txt"), "utf8")).toBe("acked by the secondary");
    // the secondary goes away; with a permit the primary degrades and acks alone, as before
    p.primary.renewPermit(1500);
    const degraded = p.primary.waitFor("degraded", 5000);
    await p.secondary.stop();
    const t0 = performance.now();
    await writeFile(p.primary.mountPath("alone-1.txt"), "logged under the permit");
    await degraded;
    expect(performance.now() - t0).toBeLessThan(1500);
    // no renewal: the permit runs out; a new file then waits before its create touches the backing directory
    const expired = p.primary.waitFor("permitExpired", 5000);
    await pollUntil(() => (p.primary.metrics().permitMs ?? 0) > 0, 3000, "the permit in the helper's stats");
    await pollUntil(() => p.primary.metrics().permitMs === 0, 5000, "the permit to run out (stats)");
    const blocked = writeFile(p.primary.mountPath("alone-2.txt"), "waits for a permit");
    expect(await expired).toMatchObject({ waiting: 1 });
    expect(await settledWithin(blocked, 1500)).toBeUndefined();
    expect(existsSync(join(p.a, "alone-2.txt"))).toBe(false); // nothing applied: a primary that lost its role changes nothing
    // a renewal releases it
    const renewedAt = performance.now();
    p.primary.renewPermit(1000);
    const doneAt = await settledWithin(blocked, 3000);
    expect(doneAt).toBeDefined();
    expect((doneAt as number) - renewedAt).toBeLessThan(1000);
    await blocked;
    expect(readFileSync(join(p.a, "alone-2.txt"), "utf8")).toBe("waits for a permit");
    // renewed every permit/4: writes alone keep returning for several permits' worth of time
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
    const { root, a, mnt, key } = makePairDirs("permit-stop");
    const src = new URL("../../src/mirror/FileReplicator.ts", import.meta.url).pathname;
    const script = join(root, "supervisor.mts");
    // a supervisor process: primary helper towards a closed port (degraded from the start), permit 600 ms renewed every 150 ms
    writeFileSync(
      script,
      `import { FileReplicator } from ${JSON.stringify(src)};
const r = new FileReplicator({ role: "primary", backingDir: ${JSON.stringify(a)}, mountPoint: ${JSON.stringify(mnt)}, keyFile: ${JSON.stringify(key)},
  peer: { host: "127.0.0.1", port: 1 }, restart: false, statsIntervalMs: 0, permit: "renewed" });
await r.start();
setInterval(() => r.renewPermit(600), 150);
r.renewPermit(600);
console.log(JSON.stringify({ pid: r.pid }));
process.stdin.on("end", () => void r.stop().then(() => process.exit(0)));
process.stdin.resume();
`,
    );
    const sup = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["pipe", "pipe", "inherit"], cwd: new URL("../..", import.meta.url).pathname });
    const { writeFile } = await import("node:fs/promises");
    try {
      const helperPid = await new Promise<number>((resolve, reject) => {
        createInterface({ input: sup.stdout }).on("line", (l) => {
          const m = /"pid":(\d+)/.exec(l);
          if (m) resolve(Number(m[1]));
        });
        sup.once("exit", () => reject(new Error("supervisor exited")));
      });
      const path = (n: string): string => `/proc/${helperPid}/root${mnt}/${n}`;
      // renewed: writes alone return
      for (let i = 0; i < 5; i++) await writeFile(path(`before-${i}`), "x");
      sup.kill("SIGSTOP");
      const stoppedAt = performance.now();
      // write in a loop: every write that returns does so within the permit of the last renewal
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
      console.log(`permit lab: last ack alone ${Math.round(window)} ms after the supervisor's SIGSTOP (permit 600 ms)`);
      expect(window).toBeLessThan(600 + 100);
      expect(pending).toBeDefined(); // a write is waiting
      const contAt = performance.now();
      sup.kill("SIGCONT");
      const doneAt = await settledWithin(pending as Promise<void>, 3000);
      expect(doneAt).toBeDefined();
      expect((doneAt as number) - contAt).toBeLessThan(1000);
      sup.stdin.end();
      await new Promise((r) => sup.once("exit", r));
    } finally {
      sup.kill("SIGCONT");
      sup.kill("SIGKILL");
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!canRun)("mirror: the helper's process group", () => {
  it("the helper leads its own process group (a terminal's SIGINT to the daemon's group misses it); the supervisor's death still ends it", async () => {
    const { root, a, mnt, key } = makePairDirs("pgrp");
    const src = new URL("../../src/mirror/FileReplicator.ts", import.meta.url).pathname;
    const script = join(root, "supervisor.mts");
    writeFileSync(
      script,
      `import { FileReplicator } from ${JSON.stringify(src)};
const r = new FileReplicator({ role: "primary", backingDir: ${JSON.stringify(a)}, mountPoint: ${JSON.stringify(mnt)}, keyFile: ${JSON.stringify(key)},
  peer: { host: "127.0.0.1", port: 1 }, restart: false, statsIntervalMs: 0, permit: "always" });
await r.start();
console.log(JSON.stringify({ pid: r.pid }));
process.stdin.resume();
`,
    );
    // the supervisor in a process group of its own, as a daemon started from a terminal would be
    const sup = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["pipe", "pipe", "inherit"], detached: true, cwd: new URL("../..", import.meta.url).pathname });
    const pgrp = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[2]);
    try {
      const helperPid = await new Promise<number>((resolve, reject) => {
        createInterface({ input: sup.stdout }).on("line", (l) => {
          const m = /"pid":(\d+)/.exec(l);
          if (m) resolve(Number(m[1]));
        });
        sup.once("exit", () => reject(new Error("supervisor exited")));
      });
      expect(pgrp(sup.pid as number)).toBe(sup.pid);
      expect(pgrp(helperPid)).toBe(helperPid);
      // Ctrl-C to the supervisor's group: the supervisor dies (no handler), the helper is not signalled; it sees
      // the end of its stdin and unmounts and exits by itself
      process.kill(-(sup.pid as number), "SIGINT");
      await pollUntil(() => !existsSync(`/proc/${helperPid}`) || readFileSync(`/proc/${helperPid}/stat`, "utf8").includes(") Z"), 10_000, "the helper to exit after its supervisor");
    } finally {
      try {
        process.kill(-(sup.pid as number), "SIGKILL");
      } catch {
        /* gone */
      }
      rmSync(root, { recursive: true, force: true });
    }
  });
});
