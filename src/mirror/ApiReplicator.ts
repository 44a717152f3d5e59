/**
 * API mode: synchronous replication without FUSE, for vendors who call it directly (or run where /dev/fuse is
 * missing). `open(path)` gives a handle whose `write`/`fsync`/`truncate` apply locally and replicate to the
 * same compiled secondary as the FUSE helper (src/native/replicator), over the same authenticated stream.
 *
 * Semantics (the same as the FUSE mode): a `write` resolves once applied here and by the secondary (its page
 * cache); `fsync`/`datasync` resolve once both flushes are done. The local part of each operation runs
 * synchronously, in call order, and takes its sequence number in the same tick, so the secondary applies
 * operations in exactly the local order; the waits for acks overlap (pipelining).
 *
 * Degraded: when the secondary does not ack within `ackTimeoutMs` or the link drops, unacked operations and
 * every later one go to the extent log (same format as the helper's, fdatasync'd before the promise
 * resolves). On reconnection the log is replayed (namespace operations in order, data extents re-read from
 * the files' current content) while new operations keep replicating, then `synced` is emitted.
 *
 * Permit (fencing, as the helper's): an operation resolves without the secondary's ack (degraded) only while a
 * permit holds, a deadline renewed by {@link ApiReplicator.renewPermit} (monotonic clock). Past it the
 * operation is applied and logged, and its promise waits for the next renewal (or rejects with EIO on stop).
 * None at start with `permit: "renewed"` (default); `permit: "always"` for standalone use (unsafe for HA).
 */
import { fstatSync, ftruncateSync, fsync as fsyncCb, fdatasync as fdatasyncCb, lstatSync, mkdirSync, openSync, closeSync, readSync, readdirSync, renameSync, unlinkSync, writeSync, readFileSync, constants } from "node:fs";
import { connect } from "node:net";
import { dirname, basename, join } from "node:path";
import { EventEmitter } from "eventemitter3";
import * as t from "io-ts";
import { decodeOrThrow } from "../core/decode.js";
import { ReplicatorError } from "./errors.js";
import { ExtentLogWriter, readExtentLog } from "./extentLog.js";
import { encodeOp, F_RESYNC, HandshakeError, Op, type Frame, type OpArgs, WireConnection, wirePath } from "./wire.js";
import type { ResyncMode } from "./FileReplicator.js";

/** Linux O_PATH (not in `fs.constants`): an fd that only names a directory entry, for the walk below. */
const O_PATH = 0o10000000;

/**
 * Resolves `path` (a {@link wirePath}, "/a/b/c") beneath `baseDir` without following a symlink in any directory
 * component: each directory is opened from the previous one's fd, with O_NOFOLLOW, through `/proc/self/fd/N/name`
 * (Node has no openat). Returns `at`, a path that names the last component inside the last directory fd (the
 * magic link names exactly that directory, so a component swapped for a symlink after the walk cannot redirect
 * the operation), and `release`, to call once the operation is done. The last component itself is not
 * followed by the walk: callers pass O_NOFOLLOW or use an l*() call on it. A symlink as a directory component
 * throws ELOOP with a message saying which one: `open("link/file")` with `link -> /elsewhere` would otherwise
 * write outside `baseDir` (and the secondary, which refuses the same path, would end the stream).
 * Linux only (/proc). The root itself ("/") is `baseDir`.
 */
export function beneath(baseDir: string, path: string): { at: string; release: () => void } {
  const comps = path.split("/").filter((c) => c !== "" && c !== ".");
  if (comps.includes("..")) throw Object.assign(new Error(`path escapes the replicated directory: ${path}`), { code: "EPERM" });
  const leaf = comps.pop();
  if (leaf === undefined) return { at: baseDir, release: () => undefined };
  let fd = openSync(baseDir, O_PATH | constants.O_DIRECTORY);
  try {
    for (let i = 0; i < comps.length; i++) {
      let next: number;
      try {
        next = openSync(`/proc/self/fd/${fd}/${comps[i]}`, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // O_PATH | O_NOFOLLOW on a symlink opens the link, then O_DIRECTORY fails: ENOTDIR (ELOOP without O_PATH)
        if ((code === "ENOTDIR" || code === "ELOOP") && lstatSync(`/proc/self/fd/${fd}/${comps[i]}`, { throwIfNoEntry: false })?.isSymbolicLink()) {
          const where = "/" + comps.slice(0, i + 1).join("/");
          throw Object.assign(new Error(`${path}: ${where} is a symlink; a path through a symlink is refused (it could lead outside ${baseDir}): only a last component may be one`), { code: "ELOOP" });
        }
        throw err;
      }
      closeSync(fd);
      fd = next;
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  const dirFd = fd;
  return { at: `/proc/self/fd/${dirFd}/${leaf}`, release: () => closeSync(dirFd) };
}

/**
 * Throws ELOOP (as {@link beneath}) when a directory component of `path` is a symlink, by lstat of each one.
 * For callers that cannot hold fds across their operation (the JS FUSE engine's asynchronous calls). Residual
 * race: a directory swapped for a symlink between this check and the operation is followed by it.
 */
export function checkBeneath(baseDir: string, path: string): void {
  const comps = path.split("/").filter((c) => c !== "" && c !== ".");
  if (comps.includes("..")) throw Object.assign(new Error(`path escapes the replicated directory: ${path}`), { code: "EPERM" });
  let cur = baseDir;
  for (let i = 0; i < comps.length - 1; i++) {
    cur = join(cur, comps[i] as string);
    const st = lstatSync(cur, { throwIfNoEntry: false });
    if (!st) return; // the operation fails with ENOENT
    if (st.isSymbolicLink()) {
      const where = "/" + comps.slice(0, i + 1).join("/");
      throw Object.assign(new Error(`${path}: ${where} is a symlink; a path through a symlink is refused (it could lead outside ${baseDir}): only a last component may be one`), { code: "ELOOP" });
    }
  }
}

/** Runs `fn` on `path` resolved by {@link beneath}, then releases it. */
export function atBeneath<T>(baseDir: string, path: string, fn: (at: string) => T): T {
  const b = beneath(baseDir, path);
  try {
    return fn(b.at);
  } finally {
    b.release();
  }
}

/** `fs.open` string flags as numbers, so that O_NOFOLLOW can be added (the last component is never followed). */
const OPEN_FLAGS = {
  r: constants.O_RDONLY,
  "r+": constants.O_RDWR,
  w: constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC,
  "w+": constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC,
  wx: constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_EXCL,
  a: constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND,
  "a+": constants.O_RDWR | constants.O_CREAT | constants.O_APPEND,
} as const;

export const ApiReplicatorOptions = t.intersection([
  t.type({
    /** The replicated directory on this node; paths given to `open` are relative to it. */
    baseDir: t.string,
    /** The secondary's replication endpoint. */
    peer: t.type({ host: t.string, port: t.number }),
    /** Shared key file (same as the helper's). */
    keyFile: t.string,
  }),
  t.partial({
    /** Extent log path. Default `<dirname(baseDir)>/.<name>.hfextents`. Not inside `baseDir`. */
    extentLog: t.string,
    /** Bounded wait for an ack before going degraded, ms. Default 2000. */
    ackTimeoutMs: t.number,
    /** Delay between connection attempts while degraded, ms. Default 500. */
    reconnectMs: t.number,
    /**
     * Encrypt the stream (AES-256-GCM, as the helper's `--encrypt`); the secondary must run with `--encrypt`
     * (FileReplicator `encrypt: true`) too, else the handshake fails with "encryption mismatch". Default false.
     */
    encrypt: t.boolean,
    /**
     * `renewed` (default): resolving an operation without the secondary's ack (degraded) needs a permit renewed
     * with {@link ApiReplicator.renewPermit}; none at start. `always`: a standing permit (standalone use, tests):
     * unsafe for HA (a primary that lost its role would acknowledge writes its successor never sees).
     */
    permit: t.union([t.literal("renewed"), t.literal("always")]),
  }),
]);
export type ApiReplicatorOptions = t.TypeOf<typeof ApiReplicatorOptions>;

export interface ApiReplicatorEvents {
  connected: [];
  degraded: [{ reason: string; logged: number }];
  resyncProgress: [{ bytes: number; totalBytes: number; percent: number }];
  synced: [{ mode: ResyncMode }];
  /** As FileReplicator's `authFailed`. */
  authFailed: [{ reason: string; refused: boolean }];
  /** An operation completed alone found no valid permit: it waits for a renewal. Once per expiry. */
  permitExpired: [{ waiting: number }];
}

interface Pending {
  seq: bigint;
  op: number;
  ino: number;
  args: OpArgs;
  path: string;
  path2: string;
  data: Uint8Array | undefined;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const CHUNK = 1 << 20;

/** A file opened through {@link ApiReplicator.open}. */
export class ReplicatedFile {
  private pos = 0;
  private closed = false;
  constructor(
    private readonly rep: ApiReplicator,
    readonly fd: number,
    readonly path: string,
    private readonly append: boolean,
  ) {}

  /**
   * Writes `data` at `position` (default: the current position, or the end in append mode). Resolves with the
   * byte count once the secondary has applied it.
   */
  write(data: Uint8Array, position?: number): Promise<number> {
    this.check();
    const off = position ?? (this.append ? fstatSync(this.fd).size : this.pos);
    const n = writeSync(this.fd, data, 0, data.length, off);
    if (position === undefined) this.pos = off + n;
    const st = fstatSync(this.fd, { bigint: true });
    const args: OpArgs = { off, len: n, mtimeS: Number(st.mtimeNs / 1_000_000_000n), mtimeNs: Number(st.mtimeNs % 1_000_000_000n) };
    return this.rep.submit(Op.WRITE, Number(st.ino), args, this.path, "", data.subarray(0, n)).then(() => n);
  }

  /** fsync here and on the secondary; resolves when both are done. */
  fsync(): Promise<void> {
    return this.flush(false);
  }
  /** fdatasync here and on the secondary. */
  datasync(): Promise<void> {
    return this.flush(true);
  }

  truncate(len: number): Promise<void> {
    this.check();
    ftruncateSync(this.fd, len);
    const st = fstatSync(this.fd, { bigint: true });
    return this.rep.submit(Op.TRUNCATE, Number(st.ino), { off: len, mtimeS: Number(st.mtimeNs / 1_000_000_000n), mtimeNs: Number(st.mtimeNs % 1_000_000_000n) }, this.path);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }

  private flush(data: boolean): Promise<void> {
    this.check();
    const remote = this.rep.submit(Op.FSYNC, 0, { flags: data ? 1 : 0 }, this.path);
    const local = new Promise<void>((resolve, reject) => (data ? fdatasyncCb : fsyncCb)(this.fd, (e) => (e ? reject(e) : resolve())));
    return Promise.all([local, remote]).then(() => undefined);
  }

  private check(): void {
    if (this.closed) throw new ReplicatorError("HOLDFAST_MIRROR_PEER", `${this.path} is closed`);
  }
}

export class ApiReplicator extends EventEmitter<ApiReplicatorEvents> {
  readonly options: ApiReplicatorOptions;
  private readonly key: Buffer;
  private readonly log: ExtentLogWriter;
  private conn: WireConnection | undefined;
  private connected = false;
  private gen = 0;
  private seq = 0n;
  private readonly pending = new Map<bigint, Pending>();
  private stopped = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private _state: "degraded" | "resyncing" | "sync" = "degraded";
  private _bytesReplicated = 0;
  private _resyncBytes = 0;
  /** The permit's end (performance.now() ms; 0: none), the operations waiting for one, counters. */
  private permitUntil = 0;
  private permitWaiters: { resolve: () => void; reject: (err: Error) => void; syncs0: number }[] = [];
  /** Resync passes completed: an operation logged before one started is on the secondary once it completes. */
  private syncs = 0;
  /** Changes waiting, before their local apply, for a permit or a connection ({@link beforeChange}). */
  private changeWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private permitExpiredSaid = false;
  private _permitWaits = 0;

  constructor(options: ApiReplicatorOptions) {
    super();
    this.options = decodeOrThrow(ApiReplicatorOptions, options, "ApiReplicator options");
    this.key = readFileSync(this.options.keyFile);
    if (this.key.length < 16) throw new ReplicatorError("HOLDFAST_MIRROR_PEER", "the key file must hold at least 16 bytes");
    const o = this.options;
    this.log = new ExtentLogWriter(o.extentLog ?? join(dirname(o.baseDir), `.${basename(o.baseDir)}.hfextents`));
  }

  get state(): "degraded" | "resyncing" | "sync" {
    return this._state;
  }
  get bytesReplicated(): number {
    return this._bytesReplicated;
  }
  get resyncBytes(): number {
    return this._resyncBytes;
  }

  /**
   * Grants a permit to resolve operations without the secondary's ack for `ms` from now (monotonic); 0 revokes
   * it. Operations waiting for a permit resolve at once.
   */
  renewPermit(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`renewPermit: ms must be a finite number >= 0, got ${ms}`);
    this.permitUntil = ms > 0 ? performance.now() + ms : 0;
    if (ms <= 0) return;
    this.permitExpiredSaid = false;
    for (const w of this.permitWaiters.splice(0)) w.resolve();
    for (const w of this.changeWaiters.splice(0)) w.resolve();
  }

  /** Counters of the permit: operations that waited since start, waiting now, and what the permit still holds (ms; -1 standing). */
  permitStats(): { permitWaits: number; permitWaiting: number; permitMs: number } {
    const left = this.options.permit === "always" ? -1 : Math.max(0, Math.floor(this.permitUntil - performance.now()));
    return { permitWaits: this._permitWaits, permitWaiting: this.permitWaiters.length + this.changeWaiters.length, permitMs: left };
  }

  /** An operation began to wait for a permit: counted; the first one after an expiry is said (permitExpired). */
  private waitStarted(): void {
    this._permitWaits++;
    if (this.permitExpiredSaid) return;
    this.permitExpiredSaid = true;
    this.emit("permitExpired", { waiting: this.permitWaiters.length + this.changeWaiters.length });
  }

  /**
   * Before a change of the replicated tree is applied locally: undefined when it may go now (connected: the
   * secondary will ack it; or a permit covers now), else a promise that resolves at the next renewal or
   * connection and rejects with EIO when stopped first. A primary that lost its role changes nothing its peer
   * never sees (the compiled helper's `op_begin`).
   */
  beforeChange(): Promise<void> | undefined {
    if (this.options.permit === "always" || this.connected || performance.now() < this.permitUntil) return undefined;
    if (this.stopped) return Promise.reject(Object.assign(new Error("stopped while waiting for a permit"), { code: "EIO" }));
    const p = new Promise<void>((resolve, reject) => this.changeWaiters.push({ resolve, reject }));
    this.waitStarted();
    return p;
  }

  /**
   * A logged operation (not acked by the secondary): resolves once a permit covers now, or once a resync pass that
   * started after it was logged has completed (the secondary has it then: the supervisor withholds the permit
   * while its peer still counts as an in-sync secondary, so a write logged across a short break of the stream
   * waits for the reconnection's resync). Rejects with EIO when stopped first.
   */
  private whenPermitted(syncs0: number): Promise<void> {
    if (this.options.permit === "always" || performance.now() < this.permitUntil || this.syncs > syncs0) return Promise.resolve();
    if (this.stopped) return Promise.reject(Object.assign(new Error("stopped while waiting for a permit"), { code: "EIO" }));
    const p = new Promise<void>((resolve, reject) => this.permitWaiters.push({ resolve, reject, syncs0 }));
    this.waitStarted();
    return p;
  }

  /** Starts connecting (and reconnecting) to the secondary. Operations work at once (degraded until synced). */
  start(): void {
    this.stopped = false;
    this.dial();
  }

  /** Stops: closes the link (pending operations are logged, as for any link loss). Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.degrade("stopped");
    this.log.close();
    const eio = Object.assign(new Error("stopped while waiting for a permit"), { code: "EIO" });
    for (const w of this.permitWaiters.splice(0)) w.reject(eio);
    for (const w of this.changeWaiters.splice(0)) w.reject(eio);
  }

  /**
   * Opens (and with `create`, creates) a file under `baseDir`. Flags as for `fs.open` ("r+", "w", "a", "wx"...).
   * Creation and truncation are replicated before the promise resolves.
   */
  async open(rel: string, flags: "r" | "r+" | "w" | "w+" | "wx" | "a" | "a+" = "r+", mode = 0o644): Promise<ReplicatedFile> {
    const path = wirePath(rel);
    // directories walked without following symlinks, the file opened with O_NOFOLLOW: a symlink anywhere in
    // the path is refused (ELOOP), so nothing outside baseDir is written
    const { fd, existed } = atBeneath(this.options.baseDir, path, (at) => {
      const existed = lstatSync(at, { throwIfNoEntry: false }) !== undefined;
      return { fd: openSync(at, OPEN_FLAGS[flags] | constants.O_NOFOLLOW, mode), existed };
    });
    const append = flags.startsWith("a");
    const st = fstatSync(fd, { bigint: true });
    const mt = { mtimeS: Number(st.mtimeNs / 1_000_000_000n), mtimeNs: Number(st.mtimeNs % 1_000_000_000n) };
    const truncates = flags.startsWith("w");
    if (!existed) {
      await this.submit(Op.CREATE, Number(st.ino), { mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), flags: truncates ? constants.O_TRUNC : 0, ...mt }, path);
    } else if (truncates) {
      await this.submit(Op.TRUNCATE, Number(st.ino), { off: 0, ...mt }, path);
    }
    return new ReplicatedFile(this, fd, path, append);
  }

  /** mkdir, replicated. */
  async mkdir(rel: string, mode = 0o755): Promise<void> {
    const path = wirePath(rel);
    const st = atBeneath(this.options.baseDir, path, (at) => {
      mkdirSync(at, mode);
      return lstatSync(at);
    });
    return this.submit(Op.MKDIR, 0, { mode: st.mode, uid: st.uid, gid: st.gid }, path);
  }

  /** rename, replicated. */
  async rename(from: string, to: string): Promise<void> {
    const p1 = wirePath(from);
    const p2 = wirePath(to);
    atBeneath(this.options.baseDir, p1, (a1) => atBeneath(this.options.baseDir, p2, (a2) => renameSync(a1, a2)));
    return this.submit(Op.RENAME, 0, {}, p1, p2);
  }

  /** unlink, replicated. */
  async unlink(rel: string): Promise<void> {
    const path = wirePath(rel);
    atBeneath(this.options.baseDir, path, (at) => unlinkSync(at));
    return this.submit(Op.UNLINK, 0, {}, path);
  }

  /**
   * Replicates an operation whose local part is done. Sends it (connected) or logs it (degraded). Resolves when
   * acked, or when logged durably after the link was lost. @internal
   */
  submit(op: number, ino: number, args: OpArgs, path: string, path2 = "", data?: Uint8Array): Promise<void> {
    if (!this.connected || !this.conn) {
      if (op === Op.FSYNC || op === Op.BARRIER) return Promise.resolve();
      this.log.append(op, 0, ino, { ...args, len: args.len ?? data?.length ?? 0 }, path, path2, data);
      const syncs0 = this.syncs; // a resync that completes from now on started after this record was logged
      return this.log.sync().then(() => this.whenPermitted(syncs0));
    }
    const seq = ++this.seq;
    return new Promise<void>((resolve, reject) => {
      const p: Pending = { seq, op, ino, args, path, path2, data, resolve, reject, timer: undefined };
      p.timer = setTimeout(() => this.degrade("ack timeout"), this.options.ackTimeoutMs ?? 2000);
      this.pending.set(seq, p);
      this.conn?.send(op, 0, seq, encodeOp(args, path, path2, data));
      this._bytesReplicated += data?.length ?? 0;
    });
  }

  private dial(): void {
    if (this.stopped) return;
    const sock = connect(this.options.peer.port, this.options.peer.host);
    sock.setNoDelay(true);
    let retried = false;
    const retry = (): void => {
      if (this.stopped || retried) return;
      retried = true;
      this.reconnectTimer = setTimeout(() => this.dial(), this.options.reconnectMs ?? 500);
    };
    sock.once("error", () => undefined);
    sock.once("connect", () => {
      WireConnection.handshakePrimary(
        sock,
        this.key,
        (f) => this.onFrame(f),
        (reason) => {
          this.degrade(reason);
          retry();
        },
        { encrypt: this.options.encrypt ?? false },
      ).then(
        (conn) => {
          if (this.stopped) {
            conn.close();
            return;
          }
          this.conn = conn;
          this.connected = true;
          this.gen++;
          this._state = "resyncing";
          this.emit("connected");
          void this.resync(this.gen);
          for (const w of this.changeWaiters.splice(0)) w.resolve(); // the secondary acks them now
        },
        (err: Error) => {
          sock.destroy();
          this.emit("authFailed", { reason: err.message, refused: err instanceof HandshakeError && err.refused });
          retry();
        },
      );
    });
    sock.once("close", () => {
      if (!this.conn || this.conn.socket !== sock) retry();
    });
  }

  private onFrame(f: Frame): void {
    if (f.type !== Op.ACK) return this.degrade("unexpected frame from secondary");
    const status = f.payload.readInt32LE(0);
    if (status !== 0) return this.degrade(`secondary failed to apply seq ${f.seq}: errno ${status}`);
    const p = this.pending.get(f.seq);
    if (!p) return;
    this.pending.delete(f.seq);
    if (p.timer) clearTimeout(p.timer);
    p.resolve();
  }

  private degrade(reason: string): void {
    if (!this.connected) return;
    this.connected = false;
    this.gen++;
    this.conn?.close(reason);
    this.conn = undefined;
    const waiting = [...this.pending.values()].sort((a, b) => (a.seq < b.seq ? -1 : 1));
    this.pending.clear();
    let logged = 0;
    for (const p of waiting) {
      if (p.timer) clearTimeout(p.timer);
      if (p.op === Op.FSYNC || p.op === Op.BARRIER || p.op === Op.RESYNC_BEGIN || p.op === Op.RESYNC_DONE) continue;
      this.log.append(p.op, 0, p.ino, { ...p.args, len: p.args.len ?? p.data?.length ?? 0 }, p.path, p.path2, p.data);
      logged++;
    }
    this.log.syncNow();
    // completed without the secondary: under a permit only (resync markers and flushes carry no write)
    for (const p of waiting) {
      const alone = !(p.op === Op.FSYNC || p.op === Op.BARRIER || p.op === Op.RESYNC_BEGIN || p.op === Op.RESYNC_DONE);
      if (alone) this.whenPermitted(this.syncs).then(p.resolve, p.reject);
      else p.resolve();
    }
    this._state = "degraded";
    this.emit("degraded", { reason, logged });
  }

  /** Sends with no waiter (resync frames; their acks are ignored, a failed apply still degrades). */
  private sendRaw(op: number, args: OpArgs, path: string, path2 = "", data?: Uint8Array): boolean {
    if (!this.connected || !this.conn) return false;
    this.conn.send(op, F_RESYNC, ++this.seq, encodeOp(args, path, path2, data));
    return true;
  }

  /** Sends and waits for the ack; false when the link went away (generation changed). */
  private async sendWait(gen: number, op: number): Promise<boolean> {
    if (gen !== this.gen || !this.connected) return false;
    await this.submit(op, 0, {}, "/");
    return gen === this.gen && this.connected;
  }

  /** Log-mode resync (see the helper's resync.c for the ordering argument; here "under the lock" = one tick). */
  private async resync(gen: number): Promise<void> {
    const { records } = readExtentLog(this.log.path);
    const dirty = new Map<number, Array<[number, number]>>();
    this.sendRaw(Op.RESYNC_BEGIN, {}, "/");
    for (const r of records) {
      if (r.op === Op.WRITE) {
        const l = dirty.get(r.ino) ?? [];
        l.push([r.args.off, r.args.len]);
        dirty.set(r.ino, l);
        continue;
      }
      if (r.op === Op.CREATE || r.op === Op.TRUNCATE) dirty.set(r.ino, dirty.get(r.ino) ?? []);
      this.sendRaw(r.op, r.args, r.path, r.path2, r.data);
    }
    // inode -> current path
    const paths = new Map<number, string>();
    if (dirty.size) {
      const walk = (rel: string): void => {
        for (const name of readdirSync(join(this.options.baseDir, rel))) {
          const r = `${rel}/${name}`;
          const st = lstatSync(join(this.options.baseDir, r));
          if (st.isDirectory()) walk(r);
          else if (st.isFile() && dirty.has(st.ino) && !paths.has(st.ino)) paths.set(st.ino, r);
        }
      };
      walk("");
    }
    let total = 0;
    for (const [ino, ex] of dirty) {
      if (!paths.has(ino)) continue;
      ex.sort((a, b) => a[0] - b[0]);
      const merged: Array<[number, number]> = [];
      for (const [o, l] of ex) {
        const last = merged.at(-1);
        if (last && o <= last[0] + last[1]) last[1] = Math.max(last[1], o + l - last[0]);
        else merged.push([o, l]);
      }
      dirty.set(ino, merged);
      total += merged.reduce((s, [, l]) => s + l, 0);
    }
    let done = 0;
    let sinceBarrier = 0;
    const buf = Buffer.alloc(CHUNK);
    for (const [ino, ex] of dirty) {
      const path = paths.get(ino);
      if (path === undefined) continue;
      for (const [o, l] of ex) {
        for (let off = o; off < o + l; ) {
          if (gen !== this.gen) return;
          // read + send in one tick: no live write can come between them
          let fd: number;
          try {
            fd = atBeneath(this.options.baseDir, path, (at) => openSync(at, constants.O_RDONLY | constants.O_NOFOLLOW));
          } catch {
            break;
          }
          const st = fstatSync(fd);
          if (st.ino !== ino || off >= st.size) {
            closeSync(fd);
            break;
          }
          const n = readSync(fd, buf, 0, Math.min(CHUNK, o + l - off, st.size - off), off);
          closeSync(fd);
          this.sendRaw(Op.WRITE, { off, len: n }, path, "", buf.subarray(0, n));
          this._resyncBytes += n;
          this._bytesReplicated += n;
          done += n;
          sinceBarrier += n;
          off += n;
          if (sinceBarrier >= 16 << 20) {
            sinceBarrier = 0;
            if (!(await this.sendWait(gen, Op.BARRIER))) return;
            this.emit("resyncProgress", { bytes: done, totalBytes: total, percent: total ? (100 * done) / total : 100 });
          }
        }
      }
      try {
        const st = atBeneath(this.options.baseDir, path, (at) => lstatSync(at, { bigint: true }));
        if (Number(st.ino) === ino) this.sendRaw(Op.TRUNCATE, { off: Number(st.size), mtimeS: Number(st.mtimeNs / 1_000_000_000n), mtimeNs: Number(st.mtimeNs % 1_000_000_000n) }, path);
      } catch {
        /* deleted meanwhile: its unlink was replicated live */
      }
    }
    this.emit("resyncProgress", { bytes: total, totalBytes: total, percent: 100 });
    if (!(await this.sendWait(gen, Op.RESYNC_DONE))) return;
    this.log.clear();
    this._state = "sync";
    this.syncs++;
    const waiting = this.permitWaiters.splice(0);
    this.permitWaiters.push(...waiting.filter((w) => w.syncs0 >= this.syncs));
    for (const w of waiting) if (w.syncs0 < this.syncs) w.resolve();
    this.emit("synced", { mode: "log" });
  }
}
