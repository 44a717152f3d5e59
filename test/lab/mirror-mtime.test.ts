/**
 * Lazy mtimes (src/native/replicator/README.md, "Semantics"): a write's frame carries no mtime; the file's
 * current mtime follows on close (before close() returns), before a rename/unlink/link, before a full fsync,
 * and at most ~1 s after the first unsent write while the file stays open. Data is never lazy. Needs root and
 * /dev/fuse.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, utimesSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { pollUntil, startLoopbackPair, type LoopbackPair } from "../../src/mirror/testing.js";

const canRun = process.getuid?.() === 0 && existsSync("/dev/fuse");
const pairs: LoopbackPair[] = [];
afterEach(async () => {
  await Promise.allSettled(pairs.splice(0).map((p) => p.close()));
});
async function pair(tag: string): Promise<LoopbackPair> {
  const p = await startLoopbackPair(tag, { permit: "always" });
  pairs.push(p);
  return p;
}
const mtime = (path: string): bigint => statSync(path, { bigint: true }).mtimeNs;

describe.skipIf(!canRun)("mirror: lazy mtimes", () => {
  it("the mtime is on the secondary when close() returns, after a full fsync, and within the bound while open", async () => {
    const p = await pair("mtime");
    const degraded: string[] = [];
    p.primary.on("degraded", (e) => degraded.push(e.reason));
    // on one machine the secondary's own write time often equals the primary's (same coarse clock tick), so the
    // secondary's copy gets another mtime behind its back first: only a note sent in time makes them equal again
    const old = new Date(1_000_000_000_000);
    // close: several writes, then close; the secondary has the primary's exact mtime at once
    for (let round = 0; round < 5; round++) {
      const fd = openSync(p.primary.mountPath(`f${round}`), "w");
      for (let i = 0; i < 20; i++) writeSync(fd, Buffer.alloc(8192, i), 0, 8192, i * 8192);
      utimesSync(join(p.b, `f${round}`), old, old);
      closeSync(fd);
      expect(mtime(join(p.b, `f${round}`))).toBe(mtime(join(p.a, `f${round}`)));
    }
    // open file: the data at once (every write), the mtime by a full fsync, or within the bound
    const fd = openSync(p.primary.mountPath("open"), "w");
    writeSync(fd, "a".repeat(5000), 0);
    expect(readFileSync(join(p.b, "open"), "utf8")).toBe("a".repeat(5000));
    utimesSync(join(p.b, "open"), old, old);
    fsyncSync(fd);
    expect(mtime(join(p.b, "open"))).toBe(mtime(join(p.a, "open")));
    writeSync(fd, "b".repeat(100), 5000);
    expect(readFileSync(join(p.b, "open"), "utf8")).toBe("a".repeat(5000) + "b".repeat(100));
    utimesSync(join(p.b, "open"), old, old); /* only the timer's note can repair it now */
    expect(mtime(join(p.b, "open"))).not.toBe(mtime(join(p.a, "open")));
    const t0 = Date.now();
    await pollUntil(() => mtime(join(p.b, "open")) === mtime(join(p.a, "open")), 3000, "the lazy mtime of an open file");
    console.info(`lazy mtime of an open file on the secondary after ${Date.now() - t0} ms`);
    // a rename of a written, still open file: the note goes first, under its old name; nothing fails
    writeSync(fd, "c", 0);
    renameSync(p.primary.mountPath("open"), p.primary.mountPath("moved"));
    writeSync(fd, "d", 1);
    utimesSync(join(p.b, "moved"), old, old);
    closeSync(fd);
    expect(mtime(join(p.b, "moved"))).toBe(mtime(join(p.a, "moved")));
    expect(readFileSync(join(p.b, "moved"))).toEqual(readFileSync(join(p.a, "moved")));
    expect(degraded).toEqual([]);
    expect(p.secondary.consistent).toBe(true);
  });
});
