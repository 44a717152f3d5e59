/**
 * The FUSE operations of the JavaScript engine: a passthrough over the backing directory where every mutating
 * operation is applied locally, synchronously, and handed to `replicate` in the same tick (so the stream order
 * is the local order, as under the C helper's ordering lock), and the kernel's reply waits for `replicate`'s
 * promise (the secondary's ack, or a durable extent-log record when degraded). `fsync`/`fdatasync`/`fsyncdir`
 * wait for the local flush and the secondary's flush (DRBD protocol C). Reads and lookups go straight to the
 * backing directory (asynchronous: they need no ordering).
 *
 * Ownership: fuse-native 2.2.6 does not pass the caller's uid/gid to JavaScript, so an inode created through
 * the mount by a root daemon takes the owner of its parent directory (the way a setgid directory hands down
 * its group). An application running as one user in its own directory (PostgreSQL in a data directory owned
 * by postgres) gets its files with the right owner; a root caller creating files in another user's directory
 * gets them owned by that user. Explicit chown/chmod are replicated as given.
 */
import {
  chmodSync,
  closeSync,
  constants as C,
  fchmodSync,
  fchownSync,
  fdatasync,
  fstatSync,
  fsync,
  ftruncateSync,
  lchownSync,
  linkSync,
  lstat,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  read,
  readdir,
  readlink,
  renameSync,
  rmdirSync,
  statfs,
  symlinkSync,
  unlinkSync,
  writeSync,
  type BigIntStats,
} from "node:fs";
import { spawnSync } from "node:child_process";
import { constants as osConstants } from "node:os";
import { dirname, join } from "node:path";
import type { FuseOps, FuseStat } from "fuse-native";
import { checkBeneath } from "../ApiReplicator.js";
import { Op, type OpArgs } from "../wire.js";

/** Hands one locally applied operation to the stream; resolves when acked (or durably logged). */
export type Replicate = (op: number, ino: number, args: OpArgs, path: string, path2?: string, data?: Uint8Array) => Promise<void>;

const EIO = osConstants.errno.EIO;

/** Negative errno for a Node fs error (what fuse-native expects), EIO when it carries none. */
export function fuseErrno(err: unknown): number {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const n = code !== undefined ? (osConstants.errno as Record<string, number>)[code] : undefined;
  return -(n ?? EIO);
}

/** Open flags the backing file must not get: the kernel already resolved creation, appends and alignment. */
export function backingOpenFlags(flags: number): { flags: number; truncate: boolean } {
  const drop = C.O_APPEND | C.O_DIRECT | C.O_CREAT | C.O_EXCL | C.O_NOCTTY | C.O_TRUNC;
  return { flags: flags & ~drop, truncate: (flags & C.O_TRUNC) !== 0 };
}

function mtimeArgs(st: BigIntStats): { mtimeS: number; mtimeNs: number } {
  return { mtimeS: Number(st.mtimeNs / 1_000_000_000n), mtimeNs: Number(st.mtimeNs % 1_000_000_000n) };
}

/**
 * Builds the operations. `backing` is the backing directory; `replicate` the stream. `isRoot` decides whether
 * created inodes are chowned to their parent directory's owner (see the file comment).
 */
export function passthroughOps(backing: string, replicate: Replicate, isRoot = process.getuid?.() === 0, beforeChange: () => Promise<void> | undefined = () => undefined): FuseOps {
  // The kernel resolved symlinks before asking, so a path with a symlink as a directory component can only come
  // from a race (a directory swapped for a symlink meanwhile): refused (ELOOP), so that no operation lands
  // outside the backing directory. Checked by lstat (checkBeneath): a swap between the check and the
  // operation is still followed (the compiled helper has no such window: openat2 RESOLVE_BENEATH).
  const abs = (p: string): string => {
    if (p === "/") return backing;
    checkBeneath(backing, p);
    return join(backing, p);
  };
  /** abs(p) for the asynchronous calls: a refusal is their callback's error, not a throw. */
  const absOr = (p: string, cb: (code: number) => void, fn: (a: string) => void): void => {
    let a: string;
    try {
      a = abs(p);
    } catch (err) {
      return cb(fuseErrno(err));
    }
    fn(a);
  };
  const owner = (p: string): { uid: number; gid: number } => {
    if (!isRoot) return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    const st = lstatSync(dirname(abs(p)));
    return { uid: st.uid, gid: st.gid };
  };
  type Local = () => { ino: number; args: OpArgs; path: string; path2?: string; data?: Uint8Array; reply?: number };
  /**
   * Runs the local part of `op`; on success hands the record to the stream in the same tick and replies (with
   * `reply`, default 0) when the stream resolves. A local failure replies its errno and sends nothing.
   */
  const withOp = (op: number, cb: (code: number) => void, local: Local): void => {
    // Degraded without a permit: the change waits before it touches the backing directory (beforeChange).
    const wait = beforeChange();
    if (wait) {
      wait.then(
        () => withOp(op, cb, local),
        (err: unknown) => cb(fuseErrno(err)),
      );
      return;
    }
    let p: Promise<void>;
    let reply = 0;
    try {
      const r = local();
      reply = r.reply ?? 0;
      p = replicate(op, r.ino, r.args, r.path, r.path2, r.data);
    } catch (err) {
      cb(fuseErrno(err));
      return;
    }
    p.then(
      () => cb(reply),
      (err: unknown) => cb(fuseErrno(err)),
    );
  };

  return {
    init: (cb) => cb(0),
    access: (_p, _m, cb) => cb(0),
    statfs: (p, cb) =>
      absOr(p, cb, (a) =>
        statfs(a, (err, s) => {
          if (err) return cb(fuseErrno(err));
          cb(0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 });
        }),
      ),
    getattr: (p, cb) => absOr(p, cb, (a) => lstat(a, (err, st) => (err ? cb(fuseErrno(err)) : cb(0, st as unknown as FuseStat)))),
    readdir: (p, cb) => absOr(p, cb, (a) => readdir(a, (err, names) => (err ? cb(fuseErrno(err)) : cb(0, names)))),
    readlink: (p, cb) => absOr(p, cb, (a) => readlink(a, (err, target) => (err ? cb(fuseErrno(err)) : cb(0, target)))),
    open: (p, flags, cb) => {
      const f = backingOpenFlags(flags);
      let fd: number;
      try {
        fd = openSync(abs(p), f.flags | C.O_NOFOLLOW);
      } catch (err) {
        return cb(fuseErrno(err));
      }
      if (!f.truncate) return cb(0, fd);
      withOp(Op.TRUNCATE, (code) => (code < 0 ? (closeSync(fd), cb(code)) : cb(0, fd)), () => {
        ftruncateSync(fd, 0);
        const st = fstatSync(fd, { bigint: true });
        return { ino: Number(st.ino), args: { off: 0, ...mtimeArgs(st) }, path: p };
      });
    },
    create: (p, mode, cb) => {
      let fd = -1;
      withOp(
        Op.CREATE,
        (code) => (code < 0 ? cb(code) : cb(0, fd)),
        () => {
          const own = owner(p);
          fd = openSync(abs(p), C.O_RDWR | C.O_CREAT | C.O_NOFOLLOW, mode & 0o7777);
          if (isRoot) fchownSync(fd, own.uid, own.gid);
          fchmodSync(fd, mode & 0o7777);
          const st = fstatSync(fd, { bigint: true });
          return { ino: Number(st.ino), args: { mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), flags: 0, ...mtimeArgs(st) }, path: p };
        },
      );
    },
    read: (_p, fd, buf, len, pos, cb) => read(fd, buf, 0, len, pos, (err, n) => cb(err ? fuseErrno(err) : n)),
    write: (p, fd, buf, len, pos, cb) => {
      withOp(Op.WRITE, cb, () => {
        const n = writeSync(fd, buf, 0, len, pos);
        const st = fstatSync(fd, { bigint: true });
        return { ino: Number(st.ino), args: { off: pos, len: n, ...mtimeArgs(st) }, path: p, data: buf.subarray(0, n), reply: n };
      });
    },
    flush: (_p, _fd, cb) => cb(0),
    release: (_p, fd, cb) => {
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
      cb(0);
    },
    fsync: (p, datasync, fd, cb) => {
      const local = new Promise<void>((resolve, reject) => (datasync ? fdatasync : fsync)(fd, (e) => (e ? reject(e) : resolve())));
      let remote: Promise<void>;
      try {
        remote = replicate(Op.FSYNC, 0, { flags: datasync ? 1 : 0 }, p);
      } catch (err) {
        return cb(fuseErrno(err));
      }
      Promise.all([local, remote]).then(
        () => cb(0),
        (err: unknown) => cb(fuseErrno(err)),
      );
    },
    fsyncdir: (p, datasync, _fd, cb) => {
      let dfd: number;
      try {
        dfd = openSync(abs(p), C.O_RDONLY | C.O_DIRECTORY);
      } catch (err) {
        return cb(fuseErrno(err));
      }
      const local = new Promise<void>((resolve, reject) =>
        fsync(dfd, (e) => {
          closeSync(dfd);
          if (e) reject(e);
          else resolve();
        }),
      );
      let remote: Promise<void>;
      try {
        remote = replicate(Op.FSYNCDIR, 0, { flags: datasync ? 1 : 0 }, p);
      } catch (err) {
        return cb(fuseErrno(err));
      }
      Promise.all([local, remote]).then(
        () => cb(0),
        (err: unknown) => cb(fuseErrno(err)),
      );
    },
    truncate: (p, size, cb) =>
      withOp(Op.TRUNCATE, cb, () => {
        const tfd = openSync(abs(p), C.O_WRONLY | C.O_NOFOLLOW); // never a symlink's target
        try {
          ftruncateSync(tfd, size);
        } finally {
          closeSync(tfd);
        }
        const st = lstatSync(abs(p), { bigint: true });
        return { ino: Number(st.ino), args: { off: size, ...mtimeArgs(st) }, path: p };
      }),
    ftruncate: (p, fd, size, cb) =>
      withOp(Op.TRUNCATE, cb, () => {
        ftruncateSync(fd, size);
        const st = fstatSync(fd, { bigint: true });
        return { ino: Number(st.ino), args: { off: size, ...mtimeArgs(st) }, path: p };
      }),
    // fuse-native 2.2.6 passes times in milliseconds and hands the access time in both arguments; libfuse2
    // turns UTIME_NOW into the current time and drops a call that omits one of the times (`touch -m`).
    // What is replicated is what the backing file then holds, to the nanosecond.
    utimens: (p, atime, mtime, cb) =>
      withOp(Op.UTIMENS, cb, () => {
        lutimesSync(abs(p), atime / 1000, mtime / 1000);
        const st = lstatSync(abs(p), { bigint: true });
        const s = (ns: bigint): number => Number(ns / 1_000_000_000n);
        const n = (ns: bigint): number => Number(ns % 1_000_000_000n);
        return { ino: Number(st.ino), args: { atimeS: s(st.atimeNs), atimeNs: n(st.atimeNs), mtimeS: s(st.mtimeNs), mtimeNs: n(st.mtimeNs) }, path: p };
      }),
    chmod: (p, mode, cb) =>
      withOp(Op.CHMOD, cb, () => {
        chmodSync(abs(p), mode & 0o7777);
        const st = lstatSync(abs(p));
        return { ino: st.ino, args: { mode: st.mode }, path: p };
      }),
    chown: (p, uid, gid, cb) =>
      withOp(Op.CHOWN, cb, () => {
        lchownSync(abs(p), uid, gid);
        const st = lstatSync(abs(p));
        return { ino: st.ino, args: { uid: st.uid, gid: st.gid }, path: p };
      }),
    mknod: (p, mode, dev, cb) =>
      withOp(Op.MKNOD, cb, () => {
        const own = owner(p);
        const type = mode & C.S_IFMT;
        if (type === C.S_IFIFO) {
          const r = spawnSync("mkfifo", ["-m", (mode & 0o7777).toString(8), abs(p)], { stdio: "ignore" });
          if (r.status !== 0) throw Object.assign(new Error("mkfifo failed"), { code: "EIO" });
        } else if (type === C.S_IFREG || type === 0) {
          closeSync(openSync(abs(p), C.O_WRONLY | C.O_CREAT | C.O_EXCL, mode & 0o7777));
        } else {
          throw Object.assign(new Error("device nodes are not supported by the JavaScript engine"), { code: "EPERM" });
        }
        if (isRoot) lchownSync(abs(p), own.uid, own.gid);
        const st = lstatSync(abs(p));
        return { ino: st.ino, args: { mode: st.mode, off: dev, uid: st.uid, gid: st.gid }, path: p };
      }),
    mkdir: (p, mode, cb) =>
      withOp(Op.MKDIR, cb, () => {
        const own = owner(p);
        mkdirSync(abs(p), mode & 0o7777);
        if (isRoot) lchownSync(abs(p), own.uid, own.gid);
        chmodSync(abs(p), mode & 0o7777);
        const st = lstatSync(abs(p));
        return { ino: st.ino, args: { mode: st.mode, uid: st.uid, gid: st.gid }, path: p };
      }),
    unlink: (p, cb) =>
      withOp(Op.UNLINK, cb, () => {
        unlinkSync(abs(p));
        return { ino: 0, args: {}, path: p };
      }),
    rmdir: (p, cb) =>
      withOp(Op.RMDIR, cb, () => {
        rmdirSync(abs(p));
        return { ino: 0, args: {}, path: p };
      }),
    symlink: (target, p, cb) =>
      withOp(Op.SYMLINK, cb, () => {
        const own = owner(p);
        symlinkSync(target, abs(p));
        if (isRoot) lchownSync(abs(p), own.uid, own.gid);
        const st = lstatSync(abs(p));
        return { ino: st.ino, args: { uid: st.uid, gid: st.gid }, path: p, path2: target };
      }),
    link: (src, dest, cb) =>
      withOp(Op.LINK, cb, () => {
        linkSync(abs(src), abs(dest));
        return { ino: 0, args: {}, path: src, path2: dest };
      }),
    rename: (src, dest, cb) =>
      withOp(Op.RENAME, cb, () => {
        renameSync(abs(src), abs(dest));
        return { ino: 0, args: { flags: 0 }, path: src, path2: dest };
      }),
  };
}
