import { linkSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fullSync, type FullSyncStream } from "../../src/mirror/jsfuse/fullsync.js";
import type { MirrorDriverOptions } from "../../src/mirror/mirror.js";
import { createFileReplicator } from "../../src/mirror/jsfuse/index.js";
import { PathFilter } from "../../src/mirror/pathFilter.js";
import { Op, type OpArgs } from "../../src/mirror/wire.js";

const name = Object.fromEntries(Object.entries(Op).map(([k, v]) => [v, k]));
interface Sent {
  op: string;
  path: string;
  path2: string;
  args: OpArgs;
  data?: Buffer;
}

/** A stream that records frames; `onFrame` may act on the tree between frames (a live application). */
function recorder(opts: { dieAfter?: number; onSubmit?: () => void } = {}): FullSyncStream & { sent: Sent[] } {
  const sent: Sent[] = [];
  let alive = true;
  return {
    sent,
    sendRaw(op, args, path, path2 = "", data) {
      if (!alive) return false;
      sent.push({ op: name[op] as string, path, path2, args, ...(data ? { data: Buffer.from(data) } : {}) });
      if (opts.dieAfter !== undefined && sent.length >= opts.dieAfter) alive = false;
      return true;
    },
    async submit(op, _ino, args, path) {
      opts.onSubmit?.();
      if (alive) sent.push({ op: name[op] as string, path, path2: "", args });
    },
    alive: () => alive,
  };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tree(): string {
  const d = mkdtempSync(join(tmpdir(), "hf-fullsync-"));
  dirs.push(d);
  mkdirSync(join(d, "a/b"), { recursive: true });
  writeFileSync(join(d, "a/b/f"), Buffer.alloc(3 * (1 << 20) + 5, 7));
  writeFileSync(join(d, "small"), "hello");
  chmodSync(join(d, "small"), 0o600);
  symlinkSync("a/b/f", join(d, "sl"));
  linkSync(join(d, "small"), join(d, "a/hard"));
  return d;
}

describe("fullSync (the JS engine's full resync pass)", () => {
  it("sends BEGIN, RESET, the whole namespace (parents first, hard links as links), then data, then DONE", async () => {
    const d = tree();
    const s = recorder();
    const sent = await fullSync(d, s);
    const ops = s.sent.map((x) => x.op);
    expect(ops.slice(0, 2)).toEqual(["RESYNC_BEGIN", "RESET"]);
    expect(ops.at(-1)).toBe("RESYNC_DONE");
    const firstWrite = ops.indexOf("WRITE");
    // namespace entirely before any data
    for (const k of ["MKDIR", "CREATE", "SYMLINK", "LINK"]) expect(ops.lastIndexOf(k)).toBeLessThan(firstWrite);
    const paths = s.sent.filter((x) => x.op === "MKDIR").map((x) => x.path);
    expect(paths.indexOf("/a")).toBeLessThan(paths.indexOf("/a/b"));
    expect(s.sent.find((x) => x.op === "SYMLINK")).toMatchObject({ path: "/sl", path2: "a/b/f" });
    // one CREATE per inode; the second name is a LINK to the first
    const creates = s.sent.filter((x) => x.op === "CREATE").map((x) => x.path).sort();
    expect(creates).toHaveLength(2);
    const link = s.sent.find((x) => x.op === "LINK");
    expect([link?.path, link?.path2].sort()).toEqual(["/a/hard", "/small"]);
    expect((s.sent.find((x) => x.op === "CREATE" && x.args.mode !== undefined && (x.args.mode & 0o777) === 0o600))?.path).toMatch(/small|hard/);
    // every byte once, in <= 1 MiB chunks, then the size
    const writes = s.sent.filter((x) => x.op === "WRITE");
    expect(writes.every((w) => (w.data?.length ?? 0) <= 1 << 20)).toBe(true);
    expect(sent).toBe(3 * (1 << 20) + 5 + 5);
    expect(writes.reduce((n, w) => n + (w.data?.length ?? 0), 0)).toBe(sent);
    const trunc = s.sent.filter((x) => x.op === "TRUNCATE").map((x) => [x.path, x.args.off]);
    expect(trunc).toContainEqual(["/a/b/f", 3 * (1 << 20) + 5]);
  });

  it("follows a file renamed during the data phase (by inode)", async () => {
    const d = tree();
    // 16 MiB + : a barrier (submit) comes between chunks; the application renames the file there
    writeFileSync(join(d, "big"), Buffer.alloc(20 << 20, 1));
    let renamed = false;
    const s = recorder({
      onSubmit: () => {
        if (!renamed) {
          renamed = true;
          renameSync(join(d, "big"), join(d, "a/moved"));
        }
      },
    });
    await fullSync(d, s);
    expect(renamed).toBe(true);
    const bigWrites = s.sent.filter((x) => x.op === "WRITE" && (x.path === "/big" || x.path === "/a/moved"));
    expect(bigWrites.reduce((n, w) => n + (w.data?.length ?? 0), 0)).toBe(20 << 20);
    expect(bigWrites.at(-1)?.path).toBe("/a/moved");
    expect(s.sent.filter((x) => x.op === "TRUNCATE").map((x) => x.path)).toContain("/a/moved");
  });

  it("a link that drops mid-pass ends it without RESYNC_DONE (it runs again on the next connection)", async () => {
    const d = tree();
    const s = recorder({ dieAfter: 8 });
    expect(await fullSync(d, s)).toBeUndefined();
    expect(s.sent.map((x) => x.op)).not.toContain("RESYNC_DONE");
  });
});

describe("fullSync with include/exclude patterns", () => {
  it("never sends an excluded path nor anything under an excluded directory", async () => {
    const d = tree();
    mkdirSync(join(d, "cache/deep"), { recursive: true });
    writeFileSync(join(d, "cache/deep/x"), "x");
    writeFileSync(join(d, "a/scratch.tmp"), "t");
    const s = recorder();
    await fullSync(d, s, new PathFilter([], ["*.tmp", "cache/"]));
    const paths = s.sent.flatMap((x) => [x.path, x.path2]).filter((p) => p !== "");
    expect(paths.some((p) => p.startsWith("/cache") || p.endsWith(".tmp"))).toBe(false);
    expect(paths).toContain("/a/b/f");
  });
});

describe("createFileReplicator fits MirrorDriver's factory", () => {
  it("type-checks as createReplicator", () => {
    const f: NonNullable<MirrorDriverOptions["createReplicator"]> = (o) => createFileReplicator({ ...o, engine: "auto", log: () => undefined });
    expect(typeof f).toBe("function");
  });
});
