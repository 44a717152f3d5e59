/**
 * Lazy mtimes (opt-in `lazyMtime`, src/native/replicator/README.md, "Semantics"): a write's frame carries no mtime; the file's
 * current mtime follows on close (before close() returns), before a rename/unlink/link, before a full fsync,
 * and at most ~1 s after the first unsent write while the file stays open. Data is never lazy. Also the page
 * cache the mount keeps across opens (keep_cache, no auto_inval_data): reads through the mount see every change
 * made through it. Needs root and /dev/fuse.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, truncateSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { pollUntil, startLoopbackPair, type LoopbackPair } from "../../src/mirror/testing.js";

const canRun = process.getuid?.() === 0 && existsSync("/dev/fuse");
const pairs: LoopbackPair[] = [];
afterEach(async () => {
  await Promise.allSettled(pairs.splice(0).map((p) => p.close()));
});
async function pair(tag: string): Promise<LoopbackPair> {
  // a long ack timeout: a load spike on a shared machine must not degrade the link (a degrade drops the notes)
  const p = await startLoopbackPair(tag, { permit: "always", ackTimeoutMs: 20_000, lazyMtime: true });
  pairs.push(p);
  return p;
}
const mtime = (path: string): bigint => statSync(path, { bigint: true }).mtimeNs;

describe.skipIf(!canRun)("mirror: lazy mtimes", () => {
  it("the mtime is on the secondary when close() returns, after a full fsync, and within the bound while open", async () => {
    const p = await pair("mtime");
    const degraded: string[] = [];
    p.primary.on("degraded", (e) => degraded.push(e.reason));
    // On one machine the secondary's own write time often equals the primary's (same coarse clock tick), so the
    // secondary's copy gets another mtime behind its back first: only a note sent in time makes them equal
    // again. The timer may send a note 1 s after the file's first unsent write; an attempt where that much time
    // passed before the change behind the back (a loaded machine) proves nothing and is repeated.
    const old = new Date(1_000_000_000_000);
    const pages = (fd: number): void => {
      for (let k = 0; k < 20; k++) writeSync(fd, Buffer.alloc(8192, k), 0, 8192, k * 8192);
    };
    // the secondary has the primary's exact mtime when close() returns, and when a full fsync returns
    for (const [what, done] of [
      ["close", (fd: number) => closeSync(fd)],
      ["fsync", (fd: number) => fsyncSync(fd)],
    ] as const) {
      let checked = 0;
      for (let i = 0; i < 40 && checked < 5; i++) {
        const name = `${what}${i}`;
        const fd = openSync(p.primary.mountPath(name), "w");
        const t0 = Date.now();
        pages(fd);
        utimesSync(join(p.b, name), old, old);
        const quick = Date.now() - t0 < 800;
        done(fd);
        if (quick) {
          expect(mtime(join(p.b, name)), `${name}, degraded: ${degraded.join()}`).toBe(mtime(join(p.a, name)));
          checked++;
        }
        if (what === "fsync") closeSync(fd);
      }
      expect(checked, what).toBe(5);
    }
    // open file: the data at once (every write), the mtime within the bound
    const fd = openSync(p.primary.mountPath("open"), "w");
    writeSync(fd, "a".repeat(5000), 0);
    expect(readFileSync(join(p.b, "open"), "utf8")).toBe("a".repeat(5000));
    utimesSync(join(p.b, "open"), old, old);
    const t0 = Date.now();
    await pollUntil(() => mtime(join(p.b, "open")) === mtime(join(p.a, "open")), 3000, "the lazy mtime of an open file");
    console.info(`lazy mtime of an open file on the secondary after ${Date.now() - t0} ms`);
    // a rename of a written, still open file: the note goes first, under its old name; nothing fails
    writeSync(fd, "c", 0);
    renameSync(p.primary.mountPath("open"), p.primary.mountPath("moved"));
    writeSync(fd, "d", 1);
    closeSync(fd);
    await pollUntil(() => mtime(join(p.b, "moved")) === mtime(join(p.a, "moved")), 3000, "the mtime after a rename");
    expect(readFileSync(join(p.b, "moved"))).toEqual(readFileSync(join(p.a, "moved")));
    expect(degraded).toEqual([]);
    expect(p.secondary.consistent).toBe(true);
  });

  it("the page cache kept across opens: reads through the mount see writes, truncates and punched holes", async () => {
    const p = await pair("cache");
    const f = p.primary.mountPath("data");
    const content = randomBytes(1 << 20);
    writeFileSync(f, content);
    expect(readFileSync(f).equals(content)).toBe(true); // cached now
    for (let i = 0; i < 20; i++) {
      const fd = openSync(f, "r+"); // another open: the cached pages stay
      const patch = randomBytes(100);
      const off = (i * 40_000) % (content.length - 100);
      writeSync(fd, patch, 0, 100, off);
      patch.copy(content, off);
      closeSync(fd);
      expect(readFileSync(f).equals(content)).toBe(true);
    }
    truncateSync(f, 300_000);
    expect(readFileSync(f).equals(content.subarray(0, 300_000))).toBe(true);
    const punched = Buffer.from(content.subarray(0, 300_000));
    punched.fill(0, 8192, 16384);
    const [cmd, ...args] = p.primary.commandInMount(["fallocate", "--punch-hole", "--offset", "8192", "--length", "8192", `${p.mnt}/data`]);
    const r = spawnSync(cmd, args);
    expect(r.status).toBe(0);
    expect(readFileSync(f).equals(punched)).toBe(true);
    expect(readFileSync(join(p.a, "data")).equals(punched)).toBe(true);
    expect(readFileSync(join(p.b, "data")).equals(punched)).toBe(true);
  });
});
