/**
 * The JavaScript engine's `full` resync pass, for when the extent log cannot be trusted (an unclean start, a
 * failed primary returning as secondary: `verify`/`checksum` requested). The secondary empties its directory
 * (`RESET`) and receives the whole tree, while the application keeps writing:
 * 1. `RESYNC_BEGIN` (the secondary is inconsistent until `RESYNC_DONE`), `RESET`, then the whole namespace
 *    (directories, files, symlinks, hard links, with modes and owners) in **one tick**: no live operation can
 *    come between, so the secondary's namespace is a snapshot that later live operations apply on top of.
 * 2. Each file's data in 1 MiB chunks, each read and sent in one tick (a live write to the same range is
 *    never overtaken by older data), found by inode so that renames since are followed; then its size and
 *    mtime. A barrier every 16 MiB bounds what is in flight.
 * 3. `RESYNC_DONE`: the secondary syncs and records `consistent`.
 * Frames go with the resync flag (the secondary tolerates EEXIST/ENOENT) and are not logged if the link drops:
 * the pass is then simply run again on the next connection.
 */
import { closeSync, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type BigIntStats, type Stats } from "node:fs";
import { join } from "node:path";
import { Op, type OpArgs } from "../wire.js";

/** What the pass needs of the stream (ApiReplicator's resync primitives). */
export interface FullSyncStream {
  /** Sends one resync frame with no waiter; false when the link is down. */
  sendRaw(op: number, args: OpArgs, path: string, path2?: string, data?: Uint8Array): boolean;
  /** Sends `op` and waits for its ack (or for the link to drop). */
  submit(op: number, ino: number, args: OpArgs, path: string): Promise<void>;
  /** False once the link dropped since the pass started. */
  alive(): boolean;
}

const CHUNK = 1 << 20;
const BARRIER_EVERY = 16 << 20;

function mtimeOf(st: BigIntStats): { mtimeS: number; mtimeNs: number } {
  return { mtimeS: Number(st.mtimeNs / 1_000_000_000n), mtimeNs: Number(st.mtimeNs % 1_000_000_000n) };
}

/** What the pass may send (include/exclude patterns: src/mirror/pathFilter.ts). */
export interface ReplicatedSet {
  replicated(path: string, isDir: boolean): boolean;
}
const ALL: ReplicatedSet = { replicated: () => true };

/** Walks `backing`: every replicated entry (parents first) with its lstat; an excluded directory's subtree is skipped. */
function walk(backing: string, set: ReplicatedSet = ALL): Array<{ rel: string; st: Stats }> {
  const out: Array<{ rel: string; st: Stats }> = [];
  const rec = (rel: string): void => {
    let names: string[];
    try {
      names = readdirSync(join(backing, rel));
    } catch {
      return;
    }
    for (const name of names) {
      const r = `${rel}/${name}`;
      let st: Stats;
      try {
        st = lstatSync(join(backing, r));
      } catch {
        continue;
      }
      if (!set.replicated(r, st.isDirectory())) continue;
      out.push({ rel: r, st });
      if (st.isDirectory()) rec(r);
    }
  };
  rec("");
  return out;
}

/**
 * Runs the pass. Resolves with the data bytes sent, or `undefined` when the link dropped (run it again).
 * `progress` gets (bytes sent, total bytes).
 */
export async function fullSync(backing: string, s: FullSyncStream, set: ReplicatedSet = ALL, progress: (bytes: number, total: number) => void = () => undefined): Promise<number | undefined> {
  // 1. namespace, in one tick
  if (!s.sendRaw(Op.RESYNC_BEGIN, {}, "/")) return undefined;
  s.sendRaw(Op.RESET, {}, "/");
  const entries = walk(backing, set);
  const files = new Map<number, { rel: string; size: number }>();
  for (const { rel, st } of entries) {
    const own = { uid: st.uid, gid: st.gid };
    if (st.isDirectory()) s.sendRaw(Op.MKDIR, { mode: st.mode, ...own }, rel);
    else if (st.isSymbolicLink()) {
      let target: string;
      try {
        target = readlinkSync(join(backing, rel));
      } catch {
        continue;
      }
      s.sendRaw(Op.SYMLINK, own, rel, target);
    } else if (st.isFile()) {
      const first = files.get(st.ino);
      if (first && st.nlink > 1) {
        s.sendRaw(Op.LINK, {}, first.rel, rel);
        continue;
      }
      s.sendRaw(Op.CREATE, { mode: st.mode, ...own, flags: 0 }, rel);
      files.set(st.ino, { rel, size: st.size });
    } else if (st.isFIFO()) s.sendRaw(Op.MKNOD, { mode: st.mode, off: 0, ...own }, rel);
  }
  // 2. data, one chunk per tick, files found by inode
  const total = [...files.values()].reduce((n, f) => n + f.size, 0);
  let sent = 0;
  let sinceBarrier = 0;
  const buf = Buffer.alloc(CHUNK);
  let paths: Map<number, string> | undefined;
  const pathOf = (ino: number, guess: string): string | undefined => {
    try {
      if (lstatSync(join(backing, guess)).ino === ino) return guess;
    } catch {
      /* moved or gone */
    }
    paths ??= new Map(walk(backing, set).filter((e) => e.st.isFile()).map((e) => [e.st.ino, e.rel]));
    return paths.get(ino);
  };
  for (const [ino, f] of files) {
    for (let off = 0; ; ) {
      if (!s.alive()) return undefined;
      const rel = pathOf(ino, f.rel);
      if (rel === undefined) break; // deleted meanwhile: its unlink went live
      f.rel = rel;
      let fd: number;
      try {
        fd = openSync(join(backing, rel), "r");
      } catch {
        paths = undefined;
        continue;
      }
      const st = fstatSync(fd, { bigint: true });
      if (Number(st.ino) !== ino) {
        closeSync(fd);
        paths = undefined;
        continue;
      }
      const size = Number(st.size);
      if (off >= size) {
        closeSync(fd);
        s.sendRaw(Op.TRUNCATE, { off: size, ...mtimeOf(st) }, rel);
        break;
      }
      const n = readSync(fd, buf, 0, Math.min(CHUNK, size - off), off);
      closeSync(fd);
      if (n === 0) {
        off = size; // shrunk behind our back: the next round sends the size
        continue;
      }
      s.sendRaw(Op.WRITE, { off, len: n }, rel, "", buf.subarray(0, n));
      off += n;
      sent += n;
      sinceBarrier += n;
      if (sinceBarrier >= BARRIER_EVERY) {
        sinceBarrier = 0;
        await s.submit(Op.BARRIER, 0, {}, "/");
        progress(sent, Math.max(total, sent));
      }
    }
  }
  if (!s.alive()) return undefined;
  progress(sent, Math.max(total, sent));
  // 3. done: the secondary syncs and records consistent
  await s.submit(Op.RESYNC_DONE, 0, {}, "/");
  return s.alive() ? sent : undefined;
}
