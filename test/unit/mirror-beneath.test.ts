/**
 * Paths resolved beneath the replicated directory on the TypeScript side: ApiReplicator's `beneath` (fd walk,
 * O_NOFOLLOW) and `checkBeneath` (lstat walk), and the JS FUSE engine's operations, which refuse (ELOOP) a path
 * with a symlink as a directory component and so never write outside the backing directory.
 */
import { mkdirSync, mkdtempSync, existsSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { beneath, checkBeneath } from "../../src/mirror/ApiReplicator.js";
import { passthroughOps } from "../../src/mirror/jsfuse/passthrough.js";

const ELOOP = 40;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tree(): { base: string; outside: string } {
  const root = mkdtempSync(join(tmpdir(), "hf-beneath-"));
  dirs.push(root);
  const base = join(root, "base");
  const outside = join(root, "outside");
  mkdirSync(join(base, "d"), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, "victim"), "orig");
  symlinkSync(outside, join(base, "link")); // absolute
  symlinkSync("../outside", join(base, "d", "rel")); // relative, leads out too
  symlinkSync("d", join(base, "inside")); // stays beneath, still refused as a directory component
  symlinkSync(join(outside, "victim"), join(base, "fin")); // a last component pointing out
  return { base, outside };
}

describe("beneath / checkBeneath", () => {
  it("refuse a symlink as any directory component, naming it; accept it as the last component", () => {
    const { base } = tree();
    for (const p of ["/link/x", "/d/rel/victim", "/inside/x", "/link/a/b"]) {
      expect(() => beneath(base, p)).toThrow(/is a symlink; a path through a symlink is refused/);
      expect(() => checkBeneath(base, p)).toThrow(expect.objectContaining({ code: "ELOOP" }));
    }
    expect(() => beneath(base, "/d/../x")).toThrow(/escapes/);
    const b = beneath(base, "/d/rel"); // the last component may be a symlink (callers do not follow it)
    expect(b.at).toMatch(/^\/proc\/self\/fd\/\d+\/rel$/);
    b.release();
    const r = beneath(base, "/");
    expect(r.at).toBe(base);
    expect(() => checkBeneath(base, "/d/missing/x")).not.toThrow(); // the operation itself says ENOENT
  });
});

describe("JS FUSE engine operations", () => {
  const call = <T extends unknown[]>(fn: (...a: [...T, (code: number) => void]) => void, ...args: T): Promise<number> =>
    new Promise((res) => fn(...args, (code: number) => res(code)));

  it("refuse (ELOOP) creates, writes, renames and lookups through a symlinked directory; nothing outside changes", async () => {
    const { base, outside } = tree();
    const sent: string[] = [];
    const ops = passthroughOps(base, async (_op, _ino, _a, path, path2) => void sent.push(path2 ? `${path} ${path2}` : path), false);
    expect(await call(ops.create!, "/link/pwned", 0o644)).toBe(-ELOOP);
    expect(await call(ops.mkdir!, "/d/rel/dir", 0o755)).toBe(-ELOOP);
    expect(await call(ops.truncate!, "/link/victim", 0)).toBe(-ELOOP);
    expect(await call(ops.unlink!, "/link/victim")).toBe(-ELOOP);
    expect(await call(ops.symlink!, "/", "/link/l")).toBe(-ELOOP);
    expect(await call(ops.getattr!, "/link/victim")).toBe(-ELOOP);
    expect(await call(ops.truncate!, "/fin", 0)).toBe(-ELOOP); // a last-component symlink is not followed
    writeFileSync(join(base, "x"), "x");
    expect(await call(ops.rename!, "/x", "/link/x")).toBe(-ELOOP);
    expect(sent).toEqual([]);
    expect(readFileSync(join(outside, "victim"), "utf8")).toBe("orig");
    for (const n of ["pwned", "dir", "l", "x"]) expect(existsSync(join(outside, n))).toBe(false);
    // ordinary paths, and a symlink as the last component, still work and are replicated
    expect(await call(ops.create!, "/d/f", 0o644)).toBe(0);
    expect(await call(ops.symlink!, "/elsewhere", "/d/s")).toBe(0);
    expect(await call(ops.rename!, "/x", "/d/x")).toBe(0);
    expect(sent).toEqual(["/d/f", "/d/s /elsewhere", "/x /d/x"]);
  });
});
