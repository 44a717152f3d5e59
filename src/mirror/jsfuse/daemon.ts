/**
 * The JavaScript engine's process: the same command line and the same control channel as the C helper's
 * primary (src/native/replicator/README.md), so that {@link FileReplicator}'s supervision, events and restart
 * policy apply unchanged. It runs in a process of its own (started by {@link JsFuseReplicator}, inside
 * `unshare --mount` like the helper): the FUSE loop then never shares an event loop with the caller (a
 * synchronous fs call on the mount from the same thread would deadlock) and a crash takes only the mount.
 *
 * Data path: fuse-native (libfuse2) -> {@link passthroughOps} -> {@link ApiReplicator} (the stream, acks,
 * degrade with the extent log, log resync) + {@link fullSync} when the log cannot be trusted (unclean start,
 * `--initial verify|checksum|full`, `resync verify|checksum|full`). Control: JSON lines on stdout (`ready`,
 * `connecting`, `connected`, `degraded`, `resync-start`, `resync-progress`, `synced`, `stats`, `error`,
 * `stopped`, `permit-expired`); commands on stdin (`stats`, `resync MODE`, `permit MS`, `stop`; end of stdin =
 * stop). Permit (fencing): as the helper's, see ApiReplicator `permit` (`--permit renewed|always`).
 */
import { closeSync, constants, existsSync, fstatSync, lstatSync, openSync, readSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import type FuseClass from "fuse-native";
import { ApiReplicator } from "../ApiReplicator.js";
import { readExtentLog } from "../extentLog.js";
import { PathFilter } from "../pathFilter.js";
import { Op } from "../wire.js";
import { fullSync, type FullSyncStream } from "./fullsync.js";
import { passthroughOps, type Replicate } from "./passthrough.js";
import { selfUrl } from "../../native/self.js";

/** The parsed command line (the helper's `primary` options; `--threads` is accepted and ignored). */
export interface DaemonArgs {
  backing: string;
  mount: string;
  peer: { host: string; port: number } | undefined;
  keyFile: string | undefined;
  log: string;
  ackTimeoutMs: number;
  reconnectMs: number;
  initial: string;
  standalone: boolean;
  /** Include/exclude patterns (src/mirror/pathFilter.ts), as the helper's `--include`/`--exclude`. */
  include: string[];
  exclude: string[];
  /** `--encrypt`: AES-256-GCM stream (ApiReplicator `encrypt`); the secondary must run with it too. */
  encrypt: boolean;
  /**
   * `--permit renewed|always` (default renewed): replies without the secondary's ack need a permit renewed by
   * `permit <ms>` on stdin (ApiReplicator `permit`), as the helper's.
   */
  permit: "renewed" | "always";
  /** `--guard`: a read-only mount under the FUSE mount (private mount namespace only), as the helper's. */
  guard: boolean;
}

/** Parses the helper's `primary` command line. Throws a RangeError naming what is wrong. */
export function parseDaemonArgs(argv: readonly string[]): DaemonArgs {
  if (argv[0] !== "primary") throw new RangeError(`the JavaScript engine runs the primary only (got ${JSON.stringify(argv[0])})`);
  const v = new Map<string, string>();
  const include: string[] = [];
  const exclude: string[] = [];
  let standalone = false;
  let guard = false;
  let encrypt = false;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--standalone") {
      standalone = true;
      continue;
    }
    if (a === "--encrypt") {
      encrypt = true;
      continue;
    }
    if (a === "--guard") {
      guard = true;
      continue;
    }
    if (a === "--include" || a === "--exclude") {
      const p = argv[++i];
      if (p === undefined) throw new RangeError(`option ${a} needs a value`);
      (a === "--include" ? include : exclude).push(p);
      continue;
    }
    if (!["--backing", "--mount", "--peer", "--key-file", "--log", "--ack-timeout-ms", "--reconnect-ms", "--initial", "--threads", "--permit"].includes(a)) {
      throw new RangeError(`option ${a} is not supported by the JavaScript engine`);
    }
    const val = argv[++i];
    if (val === undefined) throw new RangeError(`option ${a} needs a value`);
    v.set(a, val);
  }
  const need = (k: string): string => {
    const x = v.get(k);
    if (x === undefined) throw new RangeError(`option ${k} is required`);
    return x;
  };
  const int = (k: string, d: number): number => {
    const x = v.get(k);
    if (x === undefined) return d;
    const n = Number(x);
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`option ${k}: not a non-negative integer: ${x}`);
    return n;
  };
  let peer: DaemonArgs["peer"];
  if (!standalone) {
    const p = need("--peer");
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(p) ?? /^([^:]+):(\d+)$/.exec(p);
    if (!m) throw new RangeError(`option --peer: expected HOST:PORT or [V6]:PORT, got ${p}`);
    peer = { host: m[1] as string, port: Number(m[2]) };
  }
  new PathFilter(include, exclude); // throws a RangeError naming a bad pattern
  const initial = v.get("--initial") ?? "log";
  if (!["log", "verify", "checksum", "full"].includes(initial)) throw new RangeError(`option --initial: unknown mode ${initial}`);
  const permit = v.get("--permit") ?? "renewed";
  if (permit !== "renewed" && permit !== "always") throw new RangeError(`option --permit: expected renewed or always, got ${permit}`);
  return {
    backing: need("--backing"),
    mount: need("--mount"),
    peer,
    keyFile: standalone ? v.get("--key-file") : need("--key-file"),
    log: need("--log"),
    ackTimeoutMs: int("--ack-timeout-ms", 2000),
    reconnectMs: int("--reconnect-ms", 500),
    initial,
    standalone,
    include,
    exclude,
    encrypt,
    permit,
    guard,
  };
}

function emit(ev: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(ev)}\n`);
}

/** Detaches the mount (lazily; fusermount3 works for a libfuse2 mount too), falling back to umount -l. */
export function detachMount(mount: string): void {
  const r = spawnSync("fusermount3", ["-uz", mount], { stdio: "ignore" });
  if (r.status !== 0) spawnSync("umount", ["-l", mount], { stdio: "ignore" });
}

/** Runs the daemon until `stop` (or the end of stdin). */
export async function runJsFuseDaemon(argv: readonly string[]): Promise<void> {
  let args: DaemonArgs;
  try {
    args = parseDaemonArgs(argv);
  } catch (err) {
    process.stderr.write(`holdfast-jsfuse: ${(err as Error).message}\n`);
    process.exit(2);
  }
  process.umask(0);
  const require = createRequire(selfUrl(import.meta.url));
  const Fuse = require("fuse-native") as typeof FuseClass;

  const marker = `${args.log}.running`;
  const uncleanStart = existsSync(marker);
  writeFileSync(marker, String(process.pid));

  let state: "degraded" | "resyncing" | "sync" = "degraded";
  let acks = 0;
  let ackUsSum = 0;
  let ackUsMax = 0;
  let inflight = 0;
  let degradedCount = 0;
  let stopping = false;
  // verify/checksum/full, or an unclean start: the log cannot be trusted, a full pass follows the log pass
  let fullPending = uncleanStart || args.initial !== "log";
  let fullRunning = false;
  let fullBytes = 0;
  let linkGen = 0;

  const rep = args.standalone || !args.peer || !args.keyFile
    ? undefined
    : new ApiReplicator({ baseDir: args.backing, peer: args.peer, keyFile: args.keyFile, extentLog: args.log, ackTimeoutMs: args.ackTimeoutMs, reconnectMs: args.reconnectMs, permit: args.permit, ...(args.encrypt ? { encrypt: true } : {}) });
  if (rep) {
    rep.on("connected", () => {
      state = "resyncing";
      emit({ event: "connected" });
      let records = 0;
      let total = 0;
      try {
        const log = readExtentLog(args.log).records;
        records = log.length;
        total = log.filter((r) => r.op === 2).reduce((s, r) => s + r.args.len, 0);
      } catch {
        /* unreadable: the resync reports its own failure */
      }
      emit({ event: "resync-start", mode: "log", files: records, total });
    });
    rep.on("degraded", (e) => {
      state = "degraded";
      linkGen++;
      degradedCount++;
      emit({ event: "degraded", reason: e.reason, logged: e.logged });
    });
    rep.on("resyncProgress", (e) => emit({ event: "resync-progress", bytes: e.bytes, total: e.totalBytes, percent: e.percent }));
    rep.on("synced", (e) => {
      if (fullPending) {
        runFull();
        return;
      }
      state = "sync";
      emit({ event: "synced", mode: e.mode });
    });
    rep.on("authFailed", (e) => emit({ event: "auth-failed", reason: e.reason, refused: e.refused }));
    rep.on("permitExpired", (e) => emit({ event: "permit-expired", waiting: e.waiting }));
  }

  const send: Replicate = (op, ino, a, path, path2, data) => {
    if (!rep) return Promise.resolve();
    if (stopping) return Promise.reject(Object.assign(new Error("stopping"), { code: "EIO" }));
    const t0 = process.hrtime.bigint();
    const live = state !== "degraded";
    inflight++;
    return rep.submit(op, ino, a, path, path2, data).then(() => {
      inflight--;
      if (!live) return;
      acks++;
      const us = Number((process.hrtime.bigint() - t0) / 1000n);
      ackUsSum += us;
      if (us > ackUsMax) ackUsMax = us;
    });
  };

  /** The full pass (see fullsync.ts), after the log pass; re-run on the next connection if the link drops. */
  const runFull = (): void => {
    if (!rep || fullRunning) return;
    const raw = (rep as unknown as { sendRaw?: FullSyncStream["sendRaw"] }).sendRaw;
    if (typeof raw !== "function") {
      fullPending = false;
      emit({ event: "error", message: "this ApiReplicator has no resync primitives: the JavaScript engine resyncs from the extent log only" });
      state = "sync";
      emit({ event: "synced", mode: "log" });
      return;
    }
    fullRunning = true;
    state = "resyncing";
    const gen = linkGen;
    emit({ event: "resync-start", mode: "full", files: 0, total: 0 });
    const stream: FullSyncStream = {
      sendRaw: (op, a, path, path2, data) => gen === linkGen && raw.call(rep, op, a, path, path2, data),
      submit: (op, ino, a, path) => rep.submit(op, ino, a, path),
      alive: () => gen === linkGen,
    };
    fullSync(args.backing, stream, filter, (bytes, total) => emit({ event: "resync-progress", bytes, total, percent: total ? (100 * bytes) / total : 100 })).then(
      (sent) => {
        fullRunning = false;
        if (sent === undefined) return; // link dropped: the next connection runs it again
        fullBytes += sent;
        fullPending = false;
        state = "sync";
        emit({ event: "synced", mode: "full" });
      },
      (err: unknown) => {
        fullRunning = false;
        emit({ event: "error", message: `full resync failed: ${(err as Error).message}` });
      },
    );
  };

  /**
   * Include/exclude, as the helper's filter_op (src/native/replicator/README.md): an excluded path is served
   * but never sent nor logged; a file renamed out is unlinked on the secondary, a directory renamed out is
   * renamed there and left alone; a regular file renamed or linked in has its content sent at once (the
   * rename waits for it), anything else moved in (or a link loss meanwhile) makes a full pass follow.
   */
  const filter = new PathFilter(args.include, args.exclude);
  const isDirAt = (p: string): boolean => {
    try {
      return lstatSync(join(args.backing, p)).isDirectory();
    } catch {
      return false;
    }
  };
  const needFull = (): void => {
    fullPending = true;
    if (state === "sync") runFull();
  };
  const sendInto = (path2: string): Promise<void> => {
    const raw = rep ? (rep as unknown as { sendRaw?: FullSyncStream["sendRaw"] }).sendRaw : undefined;
    let fd: number | undefined;
    try {
      fd = openSync(join(args.backing, path2), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      fd = undefined;
    }
    const st = fd === undefined ? undefined : fstatSync(fd, { bigint: true });
    if (!rep || !raw || state === "degraded" || fd === undefined || !st?.isFile()) {
      if (fd !== undefined) closeSync(fd);
      needFull();
      return Promise.resolve();
    }
    const gen = linkGen;
    let ok = raw.call(rep, Op.CREATE, { mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), flags: constants.O_TRUNC }, path2);
    const size = Number(st.size);
    const buf = Buffer.alloc(Math.min(size, 1 << 20));
    for (let off = 0; ok && off < size; ) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, size - off), off);
      if (n <= 0) break;
      ok = raw.call(rep, Op.WRITE, { off, len: n }, path2, "", buf.subarray(0, n));
      off += n;
    }
    closeSync(fd);
    const mt = { mtimeS: Number(st.mtimeNs / 1_000_000_000n), mtimeNs: Number(st.mtimeNs % 1_000_000_000n) };
    if (!ok) {
      needFull();
      return Promise.resolve();
    }
    return send(Op.TRUNCATE, Number(st.ino), { off: size, ...mt }, path2).then(() => {
      if (gen !== linkGen) fullPending = true; // the content may not have arrived: repair by a full pass
    });
  };
  const replicate: Replicate = (op, ino, a, path, path2 = "", data) => {
    if (!filter.active) return send(op, ino, a, path, path2, data);
    let dir = false;
    if (op === Op.MKDIR || op === Op.RMDIR || op === Op.FSYNCDIR) dir = true;
    else if (op === Op.CHMOD || op === Op.CHOWN || op === Op.UTIMENS) dir = isDirAt(path);
    else if (op === Op.RENAME) dir = isDirAt(path2); // already renamed: the object is at path2
    if (op !== Op.RENAME && op !== Op.LINK) return filter.replicated(path, dir) ? send(op, ino, a, path, path2, data) : Promise.resolve();
    const from = filter.replicated(path, dir);
    const to = filter.replicated(path2, dir);
    if (from && to) return send(op, ino, a, path, path2, data);
    if (!to) {
      if (!from || op === Op.LINK) return Promise.resolve();
      if (dir) return send(op, ino, a, path, path2, data);
      return send(Op.UNLINK, 0, {}, path);
    }
    return sendInto(path2);
  };

  const beforeChange = (): Promise<void> | undefined =>
    stopping ? Promise.reject(Object.assign(new Error("stopping"), { code: "EIO" })) : rep?.beforeChange();
  const fuse = new Fuse(args.mount, passthroughOps(args.backing, replicate, undefined, beforeChange), {
    timeout: false,
    force: true,
    allowOther: true,
    defaultPermissions: true,
    // fuse-native has no option for these: they ride in fsname's -o string (without them libfuse 2 sends 4 KiB write requests: ~10x slower)
    fsname: "holdfast-js,big_writes,max_write=131072",
  });

  const stats = (): void => {
    let logRecords = 0;
    if (state !== "sync") {
      try {
        if (statSync(args.log).size < 64 << 20) logRecords = readExtentLog(args.log).records.length;
      } catch {
        /* no log yet */
      }
    }
    emit({
      event: "stats",
      state,
      bytesReplicated: rep?.bytesReplicated ?? 0,
      acks,
      ackUsSum,
      ackUsMax,
      inflight,
      logRecords,
      resyncBytes: (rep?.resyncBytes ?? 0) + fullBytes,
      degradedCount,
      ...(rep ? rep.permitStats() : { permitWaits: 0, permitWaiting: 0, permitMs: -1 }),
    });
    ackUsMax = 0;
  };

  // `stop` (orderly: the stop hook ran) detaches the mount. When the supervisor is gone (end of stdin, a signal)
  // the mount is left dead instead (this process exits, the kernel aborts the connection: ENOTCONN), as the C
  // helper does: an application it started may still run, and a detached mount would let its next open()
  // resolve to the directory underneath, where writes are never replicated.
  const stop = (detach: boolean): void => {
    if (stopping) return;
    stopping = true;
    if (detach) detachMount(args.mount);
    rep?.stop();
    rmSync(marker, { force: true });
    emit({ event: "stopped", rc: 0 });
    process.exit(0);
  };

  if (args.guard) {
    // The mount point bound onto itself read-only (the C helper mounts an empty tmpfs; fuse-native refuses a mount
    // point on another device than its parent, and a bind keeps the device).
    for (const a of [["--bind", args.mount, args.mount], ["-o", "remount,bind,ro,nosuid,nodev,noexec", args.mount]]) {
      const g = spawnSync("mount", a, { encoding: "utf8" });
      if (g.status !== 0) {
        emit({ event: "error", message: `cannot mount the read-only guard on ${args.mount}: ${(g.stderr || g.error?.message || "").trim()}` });
        rmSync(marker, { force: true });
        process.exit(2);
      }
    }
  }
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve()))).catch((err: Error) => {
    emit({ event: "error", message: `mount failed: ${err.message}` });
    rmSync(marker, { force: true });
    process.exit(1);
  });
  let logBytes = 0;
  try {
    logBytes = statSync(args.log).size;
  } catch {
    /* no log */
  }
  emit({ event: "ready", mount: args.mount, pid: process.pid, logBytes, uncleanStart });
  if (rep && args.peer) {
    emit({ event: "connecting", peer: `${args.peer.host}:${args.peer.port}` });
    rep.start();
  }

  createInterface({ input: process.stdin })
    .on("line", (line) => {
      const cmd = line.trim();
      if (cmd === "stats") stats();
      else if (cmd === "stop") stop(true);
      else if (/^permit \d+$/.test(cmd)) rep?.renewPermit(Number(cmd.slice(7)));
      else if (cmd === "resync log") {
        if (state === "sync") emit({ event: "synced", mode: "log" });
      } else if (/^resync (verify|checksum|full)$/.test(cmd)) {
        // verify and checksum need block comparisons the JS engine does not do: it sends the whole tree instead
        fullPending = true;
        if (state === "sync") runFull();
      }
    })
    .on("close", () => stop(false));
  process.on("SIGTERM", () => stop(false));
  process.on("SIGINT", () => stop(false));
}
