/**
 * FileReplicator: supervises the compiled replication helper (src/native/replicator) for one replicated
 * directory, on one node, in one role.
 *
 * - **primary**: the helper mounts a FUSE passthrough of `backingDir` at `mountPoint`. The application uses the
 *   mount. Every mutating operation is applied to `backingDir` and to the secondary's copy before the
 *   application's call returns. What a reply means, exactly:
 *   - `write`, `create`, `mkdir`, `rename`, `unlink`, `chmod`, `chown`, `truncate`, `utimens`, `link`,
 *     `symlink`, `setxattr`, `fallocate`: returned once the operation is applied on this node **and** applied
 *     by the secondary (in its page cache; not yet on its disk).
 *   - `fsync` / `fdatasync` (and `fsyncdir`): returned once this node's flush **and** the secondary's flush of
 *     the same file are both done (DRBD "protocol C"). So anything an application made durable with fsync is on
 *     both disks: RPO = 0 for fsync'd data.
 *   - If the secondary does not answer within `ackTimeoutMs`, the primary goes **degraded** (module state ALONE):
 *     it stops waiting, records the operation in the extent log (appended and fdatasync'd before the reply),
 *     and carries on locally. When the secondary is back, the helper **resyncs** from that log while new writes
 *     keep replicating synchronously, then reports `synced`.
 *   - **Permit (fencing)**: a reply without the secondary's ack (degraded) is given only while a permit holds,
 *     a deadline the supervisor renews with {@link FileReplicator.renewPermit} (the helper computes it on
 *     receipt from its monotonic clock). Past it, data changes (write, truncate, fallocate) wait before they
 *     touch the backing file, other operations are applied and logged, and all their callers wait until the
 *     next renewal or reconnection (or get EIO when the helper stops). There is no permit at start. A supervisor that
 *     freezes or leaves the primary role stops renewing, so a primary that lost its role cannot acknowledge
 *     writes alone for longer than one permit. `permit: "always"` (standalone use, tests) disables the check.
 * - **secondary**: the helper listens on `listen`, authenticates the primary (HMAC-SHA256, shared key), applies
 *   its operations in sequence to `backingDir` and acks. It reports whether its copy is consistent (a resync
 *   finished) or not (a resync is under way): a node whose copy is inconsistent must not become primary.
 *
 * Control surface for the module engine: {@link start}, {@link stop}, {@link resync}, the `state` /
 * `consistent` getters, typed events and {@link metrics}.
 *
 * Mount namespace: by default the primary's mount lives in a **private mount namespace** created for the helper
 * (`unshare --mount --propagation private`). Other processes started meanwhile (e.g. `ip netns exec`) would
 * otherwise inherit a copy of the mount, and a later unmount would leave the helper hanging. Run the
 * application inside it with {@link commandInMount}; reach files from outside with {@link mountPath}
 * (`/proc/<pid>/root/<mountPoint>`).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { statSync } from "node:fs";
import { dirname, basename, join } from "node:path";
import { createInterface } from "node:readline";
import { EventEmitter } from "eventemitter3";
import * as t from "io-ts";
import { decodeOrThrow } from "../core/decode.js";
import { ConfigError } from "../core/errors.js";
import { PathFilter } from "./pathFilter.js";
import { ReplicatorError } from "./errors.js";
import { helperPath, parseHelperLine, type HelperEvent } from "./helper.js";

/** How a resync pass decides what to send. */
export type ResyncMode = "log" | "verify" | "checksum" | "full";

/** Replication state of a primary (`sync` = PRIM with a secondary, `degraded`/`resyncing` = ALONE). */
export type PrimaryReplicationState = "starting" | "degraded" | "resyncing" | "sync" | "stopped";

const Endpoint = t.type({ host: t.string, port: t.number });

const Common = {
  /** Directory holding the real files on this node (any path, any file system that supports xattrs if used). */
  backingDir: t.string,
  /** File with the shared key (raw bytes, >= 16; e.g. 32 random bytes, mode 0600). Same content on both nodes. */
  keyFile: t.string,
};
const CommonOptional = {
  /** Path of the helper binary. Default: the committed prebuilt for this platform. */
  helperPath: t.string,
  /** Wait for the helper's ready/listening line, ms. Default 10000. */
  startTimeoutMs: t.number,
  /**
   * Restart the helper when it dies unexpectedly: at most `maxRestarts` within `windowMs` (default 3 in 60000),
   * then give up with an `error` event. `false` disables restarts (e.g. when the module engine prefers a failover).
   */
  restart: t.union([t.literal(false), t.type({ maxRestarts: t.number, windowMs: t.number })]),
  /**
   * Encrypt the replication stream: every frame sealed with AES-256-GCM (keys derived per connection and
   * direction from the shared key and both nonces; the frame counter is the nonce), so the data is unreadable
   * on the wire, and altered, replayed or reordered frames end the connection. Default false: frames are
   * authenticated (HMAC-SHA256) but readable, for a dedicated link. Both sides must agree (a mismatch fails the
   * handshake with an "encryption mismatch" `authFailed`). Needs libcrypto.so.3 on both nodes (the helper
   * refuses to start without it). Cost: see src/native/replicator/README.md.
   */
  encrypt: t.boolean,
};

const PrimaryOptions = t.intersection([
  t.type({
    role: t.literal("primary"),
    ...Common,
    /** Where the application sees the replicated directory (an existing empty directory). */
    mountPoint: t.string,
    /** The secondary's replication endpoint (IPv4 or IPv6 literal + port). */
    peer: Endpoint,
  }),
  t.partial({
    ...CommonOptional,
    /**
     * The crash-safe log of extents modified while degraded. Default: `<dirname(backingDir)>/.<name>.hfextents`.
     * Must survive reboots and must not be inside `backingDir`.
     */
    extentLog: t.string,
    /**
     * Bounded wait for the secondary's ack before going degraded, ms. Default 2000: long enough for a busy
     * secondary's fsync, short enough that the application stalls at most this long when the secondary dies.
     */
    ackTimeoutMs: t.number,
    /** Delay between connection attempts while degraded, ms. Default 500. */
    reconnectMs: t.number,
    /**
     * The first resync pass after start (later reconnections use `log`).
     * - `log` (default): send what the extent log names. Right when this node was primary before and its
     *   secondary was in sync with it (a link or secondary-helper outage).
     * - `verify`: `log`, then rsync's quick check over the tree (size/mtime differ, or named by the log ->
     *   block comparison). Use it when a failed primary returns as secondary (it may hold writes it applied but
     *   never got acked), or after a crash of the secondary's machine. Chosen automatically after an unclean
     *   start of this helper. Sends about what changed; reads the compared files on both sides.
     * - `checksum`: compare every file block by block (64 KiB), send what differs.
     * - `full`: the secondary empties its directory and receives the whole tree.
     */
    initialSync: t.union([t.literal("log"), t.literal("verify"), t.literal("checksum"), t.literal("full")]),
    /** `private` (default): mount in a private mount namespace. `host`: mount in the caller's namespace. */
    mountNamespace: t.union([t.literal("private"), t.literal("host")]),
    /** FUSE worker threads. Default 16: enough for PostgreSQL's backends and WAL writer in flight at once. */
    threads: t.number,
    /**
     * Experimental, default false: writes carry no mtime, the file's mtime follows on close, full fsync, a
     * rename/unlink/link or within 1 s (halves the inode writes of write + fdatasync on Linux >= 6.13; see
     * src/native/replicator/README.md, "lazy mtimes"). Not yet validated by the module's link-flap lab test.
     */
    lazyMtime: t.boolean,
    /** Interval of the metrics poll, ms. Default 1000; 0 disables it. */
    statsIntervalMs: t.number,
    /**
     * Patterns of paths NOT replicated (relative to the replicated directory; gitignore-like, see
     * {@link PathFilter}: `*.tmp` at any depth, `cache/**` everything under cache, `pg_stat_tmp/` directories
     * only, `/core` anchored). Excluded paths are served by the mount as usual but never sent, logged, resynced
     * or compared, and the secondary's copy of them is left alone (except by a `full` pass, which empties the
     * secondary first). A rename across the boundary: excluded -> included sends the file's content (a
     * directory or symlink moved in triggers a `verify` pass); included -> excluded removes the file from the
     * secondary (a directory is renamed there and then left alone); a hard link from an excluded name sends a
     * copy. Default: none (everything replicated).
     */
    exclude: t.array(t.string),
    /**
     * When given, only files matching one of these patterns (or under a matching directory) are replicated;
     * directories are always replicated unless excluded, so included files have a place. `exclude` wins.
     * Default: everything.
     */
    include: t.array(t.string),
    /**
     * `renewed` (default): replies without the secondary's ack (degraded) need a permit the supervisor renews
     * ({@link FileReplicator.renewPermit}); none at start. `always`: a standing permit, the pre-fencing behaviour,
     * for standalone use and tests: **unsafe for HA** (a primary that lost its role, e.g. frozen while its peer
     * took over, would acknowledge writes the new primary never sees).
     */
    permit: t.union([t.literal("renewed"), t.literal("always")]),
  }),
]);

const SecondaryOptions = t.intersection([
  t.type({
    role: t.literal("secondary"),
    ...Common,
    /** Address and port to listen on for the primary (port 0: any free port, see {@link FileReplicator.port}). */
    listen: Endpoint,
  }),
  t.partial({
    ...CommonOptional,
    /** File where the secondary records `consistent`/`inconsistent` (fsync'd). Default `<dirname>/.<name>.hfstate`. */
    stateFile: t.string,
  }),
]);

export const FileReplicatorOptions = t.union([PrimaryOptions, SecondaryOptions]);
export type FileReplicatorOptions = t.TypeOf<typeof FileReplicatorOptions>;
export type PrimaryReplicatorOptions = t.TypeOf<typeof PrimaryOptions>;
export type SecondaryReplicatorOptions = t.TypeOf<typeof SecondaryOptions>;

/** Replication counters (primary). Latency figures cover the last stats interval. */
export interface ReplicatorMetrics {
  /** Data bytes sent to the secondary (live writes and resync). */
  bytesReplicated: number;
  /** Acks received since start. */
  acks: number;
  /** Mean ack latency over the last interval, microseconds (0 when there was no ack). */
  ackLatencyAvgUs: number;
  /** Max ack latency over the last interval, microseconds. */
  ackLatencyMaxUs: number;
  /** Operations sent and not yet acked (the replication queue depth) at the last poll. */
  queueDepth: number;
  /** Records in the extent log (0 when in sync). */
  logRecords: number;
  /** Data bytes sent by resync passes since start. */
  resyncBytes: number;
  /** Times the primary went degraded since start. */
  degradedCount: number;
  /** Operations that waited for a permit (degraded, past the deadline) since start (optional: fakes may omit the permit counters). */
  permitWaits?: number;
  /** Operations waiting for a permit at the last poll. */
  permitWaiting?: number;
  /** What the permit still held at the last poll, ms (0: none or expired, -1: standing permit). */
  permitMs?: number;
  /**
   * Secondary: connections to the replication port whose handshake failed since start (wrong key, no holdfast
   * peer, cut at the 2 s handshake deadline, or turned away when all handshake slots were busy). Carried by
   * the secondary's stats line, sent at most once a second when it changes.
   */
  handshakeFailures?: number;
  /** Secondary: handshakes in progress at that line (at most 64). */
  handshakesPending?: number;
}

export interface FileReplicatorEvents {
  /**
   * The helper is up: mounted (primary) or listening (secondary). `uncleanStart` (primary): the previous run
   * crashed, so the first resync is a `verify` pass when `initialSync` was `log`.
   */
  ready: [{ pid: number; port?: number; uncleanStart?: boolean }];
  /** Primary: the link to the secondary is up (a resync follows). Secondary: a primary connected. */
  connected: [];
  /** Secondary: the primary's stream ended. */
  disconnected: [{ reason: string }];
  /** Primary: no secondary (or it stopped answering); changes now go to the extent log. */
  degraded: [{ reason: string; logged: number }];
  /** Primary: a resync pass starts sending data. */
  resyncStart: [{ mode: ResyncMode; files: number; totalBytes: number }];
  /** Primary: resync progress. */
  resyncProgress: [{ bytes: number; totalBytes: number; percent: number }];
  /** Primary: the secondary is consistent and every operation is replicated synchronously again. */
  synced: [{ mode: ResyncMode }];
  /** Secondary: its copy became consistent (true) or a resync started (false). */
  consistency: [{ consistent: boolean }];
  /**
   * A handshake did not complete (either side). `refused`: the peer is no holdfast peer or failed authentication (a
   * wrong key); otherwise it was cut short (I/O) or the `encrypt` settings differ. `reason` is for logs.
   */
  authFailed: [{ reason: string; refused: boolean }];
  /**
   * Primary: an operation completed alone (degraded) found no valid permit: it waits for a renewal. Said once
   * per expiry.
   */
  permitExpired: [{ waiting: number }];
  /** Primary: fresh counters (every `statsIntervalMs`). */
  metrics: [ReplicatorMetrics];
  /** Something went wrong; the replicator keeps running unless an `exit` follows. */
  error: [ReplicatorError];
  /**
   * The helper exited. `expected` is true after {@link FileReplicator.stop}; `restarting` when the restart
   * policy brings it back (a `restarted` event follows).
   */
  exit: [{ code: number | null; signal: string | null; expected: boolean; restarting: boolean }];
  /** The helper was restarted after an unexpected exit. */
  restarted: [{ attempt: number }];
}

const DEFAULT_RESTART = { maxRestarts: 3, windowMs: 60_000 };

export class FileReplicator extends EventEmitter<FileReplicatorEvents> {
  readonly options: FileReplicatorOptions;
  private child: ChildProcess | undefined;
  private stopping = false;
  private stderrTail: string[] = [];
  private restarts: number[] = [];
  private statsTimer: ReturnType<typeof setInterval> | undefined;
  private _state: PrimaryReplicationState = "starting";
  private _consistent: boolean | undefined;
  private _port: number | undefined;
  private _pid: number | undefined;
  private _metrics: ReplicatorMetrics = {
    bytesReplicated: 0,
    acks: 0,
    ackLatencyAvgUs: 0,
    ackLatencyMaxUs: 0,
    queueDepth: 0,
    logRecords: 0,
    resyncBytes: 0,
    degradedCount: 0,
  };
  private lastAcks = 0;
  private lastAckUs = 0;

  constructor(options: FileReplicatorOptions) {
    super();
    this.options = decodeOrThrow(FileReplicatorOptions, options, "FileReplicator options");
    if (this.options.role === "primary") {
      const o = this.options;
      for (const key of ["include", "exclude"] as const) {
        (o[key] ?? []).forEach((p, i) => {
          try {
            new PathFilter([p]);
          } catch {
            throw new ConfigError("FileReplicator options", [{ path: `${key}.${i}`, expected: "a non-empty pattern (not only '/', no NUL or newline)", value: p }]);
          }
        });
      }
    }
  }

  /** Primary: the replication state. Secondary: `sync` while a primary is connected, else `degraded`. */
  get state(): PrimaryReplicationState {
    return this._state;
  }
  /** Secondary: whether its copy is consistent (undefined until the helper said so). */
  get consistent(): boolean | undefined {
    return this._consistent;
  }
  /** Secondary: the port it listens on (useful with `listen.port: 0`). */
  get port(): number | undefined {
    return this._port;
  }
  /** The helper's process id (the holder of the private mount namespace). */
  get pid(): number | undefined {
    return this._pid;
  }
  /** Latest counters. */
  metrics(): ReplicatorMetrics {
    return { ...this._metrics };
  }

  /** The path under which this process reaches `rel` inside the mount (primary). */
  mountPath(rel = ""): string {
    const o = this.primaryOptions("mountPath");
    const base = this.privateNs() ? `/proc/${this.requirePid()}/root${o.mountPoint}` : o.mountPoint;
    return rel === "" ? base : join(base, rel);
  }

  /**
   * The argv that runs `argv` inside the mount's namespace (primary), e.g. to start the application:
   * `spawn(...rep.commandInMount(["pg_ctl", "start", ...]))`. In `host` mode it returns `argv` unchanged.
   */
  commandInMount(argv: readonly string[]): [string, ...string[]] {
    this.primaryOptions("commandInMount");
    if (!this.privateNs()) return [...argv] as [string, ...string[]];
    return ["nsenter", `--mount=/proc/${this.requirePid()}/ns/mnt`, "--", ...argv];
  }

  /** Starts the helper; resolves once it is mounted (primary) or listening (secondary). */
  async start(): Promise<void> {
    if (this.child) throw new TypeError("FileReplicator already started");
    this.stopping = false;
    await this.spawnHelper();
    if (this.options.role === "primary") {
      const every = this.options.statsIntervalMs ?? 1000;
      if (every > 0) {
        this.statsTimer = setInterval(() => this.send("stats"), every);
        this.statsTimer.unref();
      }
    }
  }

  /**
   * Primary: runs a resync pass now (`verify`, `checksum` or `full` when the extent log cannot be trusted).
   * The link is cycled to start it: expect a short `degraded` (changes go to the log meanwhile), then
   * `connected`, `resyncStart`, `resyncProgress`... and `synced`.
   */
  resync(mode: ResyncMode): void {
    this.primaryOptions("resync");
    this.send(`resync ${mode}`);
  }

  /**
   * Primary: grants the helper a permit to acknowledge writes alone (degraded) for `ms` from the moment it reads
   * the command (its monotonic clock); 0 revokes it. Renew well before it ends (e.g. every `ms / 4`). A helper
   * restarted by the restart policy starts with no permit: the next renewal gives it one. No effect with
   * `permit: "always"`.
   */
  renewPermit(ms: number): void {
    this.primaryOptions("renewPermit");
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`renewPermit: ms must be a finite number >= 0, got ${ms}`);
    this.send(`permit ${Math.floor(ms)}`);
  }

  /** Resolves when the primary reports `synced` (or is already in sync); rejects after `timeoutMs`. */
  waitForSync(timeoutMs: number): Promise<void> {
    if (this._state === "sync") return Promise.resolve();
    return this.waitFor("synced", timeoutMs).then(() => undefined);
  }

  /**
   * Resolves on the next occurrence of `event`; rejects after `timeoutMs`, or if the helper exits for good
   * first (not when a restart follows).
   */
  waitFor<E extends keyof FileReplicatorEvents>(event: E, timeoutMs: number): Promise<FileReplicatorEvents[E][0]> {
    return new Promise((resolve, reject) => {
      const onEvent = ((arg: FileReplicatorEvents[E][0]) => {
        cleanup();
        resolve(arg);
      }) as never;
      const onExit = (e: { restarting: boolean }): void => {
        if (e.restarting) return;
        cleanup();
        reject(new ReplicatorError("HOLDFAST_MIRROR_HELPER_DIED", `helper exited while waiting for ${event}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new ReplicatorError("HOLDFAST_MIRROR_TIMEOUT", `no ${event} within ${timeoutMs} ms`));
      }, timeoutMs);
      // waiting for "exit" or "error" (which follows a fatal exit) must not be cut short by the exit itself
      const watchExit = event !== "exit" && event !== "error";
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off(event, onEvent);
        if (watchExit) this.off("exit", onExit);
      };
      this.on(event, onEvent);
      if (watchExit) this.on("exit", onExit);
    });
  }

  /**
   * Stops the helper: the primary unmounts (lazily: open files keep working until closed, then the mount is
   * gone) and exits; the secondary exits. After `timeoutMs` (default 5000) the helper is killed and a dead
   * mount is detached with `fusermount3 -uz`.
   */
  async stop(timeoutMs = 5000): Promise<void> {
    this.stopping = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = undefined;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.cleanupDeadMount();
      return;
    }
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    if (this.options.role === "primary") this.send("stop");
    else child.kill("SIGTERM");
    const timer = setTimeout(() => killGroup(child), timeoutMs);
    await exited;
    clearTimeout(timer);
    this.cleanupDeadMount();
    this._state = "stopped";
  }

  // ---- internals ----

  private privateNs(): boolean {
    return this.options.role === "primary" && (this.options.mountNamespace ?? "private") === "private";
  }

  private requirePid(): number {
    if (this._pid === undefined) throw new ReplicatorError("HOLDFAST_MIRROR_HELPER_DIED", "the helper is not running");
    return this._pid;
  }

  private primaryOptions(what: string): PrimaryReplicatorOptions {
    if (this.options.role !== "primary") throw new TypeError(`${what}() is for a primary replicator`);
    return this.options;
  }

  private send(line: string): void {
    const stdin = this.child?.stdin;
    if (stdin && !stdin.destroyed) stdin.write(`${line}\n`);
  }

  /** In host mode, a helper that died leaves a dead mount (ENOTCONN): detach it. */
  private cleanupDeadMount(): void {
    if (this.options.role !== "primary" || this.privateNs()) return;
    const mp = this.options.mountPoint;
    try {
      statSync(mp);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOTCONN") spawnSync("fusermount3", ["-uz", mp], { stdio: "ignore" });
    }
  }

  private helperArgs(): string[] {
    const o = this.options;
    const side = (suffix: string): string => join(dirname(o.backingDir), `.${basename(o.backingDir)}.${suffix}`);
    const ep = (e: { host: string; port: number }): string => (e.host.includes(":") ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`);
    if (o.role === "primary") {
      return [
        "primary",
        "--backing", o.backingDir,
        "--mount", o.mountPoint,
        "--peer", ep(o.peer),
        "--key-file", o.keyFile,
        "--log", o.extentLog ?? side("hfextents"),
        "--ack-timeout-ms", String(o.ackTimeoutMs ?? 2000),
        "--reconnect-ms", String(o.reconnectMs ?? 500),
        "--initial", o.initialSync ?? "log",
        "--threads", String(o.threads ?? 16),
        ...(o.encrypt === true ? ["--encrypt"] : []),
        ...(o.include ?? []).flatMap((p) => ["--include", p]),
        ...(o.exclude ?? []).flatMap((p) => ["--exclude", p]),
        // renewed is the helper's default: said only when "always" (so a pre-permit helper still starts)
        ...(o.permit === "always" ? ["--permit", "always"] : []),
        ...(o.lazyMtime === true ? ["--lazy-mtime"] : []),
        // in its private namespace, a read-only empty tmpfs under the FUSE mount: the mount point never resolves
        // to a writable directory there, even once the FUSE mount is detached while an application still runs
        ...(this.privateNs() ? ["--guard"] : []),
      ];
    }
    return [
      "secondary", "--backing", o.backingDir, "--listen", ep(o.listen), "--key-file", o.keyFile, "--state-file", o.stateFile ?? side("hfstate"),
      ...(o.encrypt === true ? ["--encrypt"] : []),
    ];
  }

  private spawnHelper(): Promise<void> {
    this.cleanupDeadMount();
    const bin = this.options.helperPath ?? helperPath();
    const args = this.helperArgs();
    const argv = this.privateNs() ? ["unshare", "--mount", "--propagation", "private", "--", bin, ...args] : [bin, ...args];
    // Its own process group (detached): a Ctrl-C in the daemon's terminal (SIGINT to the foreground group) must not
    // reach the helper before the application is stopped. The supervisor still owns it: when this process dies
    // (its stdin ends, and the parent-death signal the helper asks for fires) the helper stops applying writes
    // and exits at once, leaving the mount dead (ENOTCONN) for whatever the hooks started; stop() kills its whole
    // group after the timeout. HOLDFAST_PARENT_PID lets it notice a death that came before it could ask for that signal.
    const child = spawn(argv[0] as string, argv.slice(1), {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      env: { ...process.env, HOLDFAST_PARENT_PID: String(process.pid) },
    });
    this.child = child;
    // A command written just as the helper dies fails with EPIPE: the exit handler deals with the death, the
    // lost command (stats, resync, stop) has no one left to act on it.
    child.stdin.on("error", () => undefined);
    this._pid = child.pid;
    this._state = "starting";
    this.stderrTail = [];
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (l) => {
      this.stderrTail.push(l);
      if (this.stderrTail.length > 20) this.stderrTail.shift();
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    return new Promise<void>((resolve, reject) => {
      let started = false;
      const timer = setTimeout(() => {
        if (started) return;
        child.kill("SIGKILL");
        reject(new ReplicatorError("HOLDFAST_MIRROR_START_FAILED", "helper did not report ready in time", { stderr: this.stderrTail.join("\n") }));
      }, this.options.startTimeoutMs ?? 10_000);
      lines.on("line", (line) => {
        if (line.startsWith('{"event":"permit-expired"')) {
          const w = (JSON.parse(line) as { waiting?: unknown }).waiting;
          this.emit("permitExpired", { waiting: typeof w === "number" ? w : 0 });
          return;
        }
        const ev = parseHelperLine(line);
        if (ev instanceof Error) {
          this.emit("error", new ReplicatorError("HOLDFAST_MIRROR_PEER", ev.message));
          return;
        }
        if (!ev) return;
        if (!started && (ev.event === "ready" || ev.event === "listening")) {
          started = true;
          clearTimeout(timer);
          this.onHelperEvent(ev);
          resolve();
          return;
        }
        this.onHelperEvent(ev);
      });
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        this._pid = undefined;
        const expected = this.stopping;
        if (!started) {
          reject(
            new ReplicatorError("HOLDFAST_MIRROR_START_FAILED", `helper exited (code ${code}, signal ${signal}) before it was ready`, {
              stderr: this.stderrTail.join("\n"),
            }),
          );
        }
        if (this.child === child) this.child = undefined;
        this._state = "stopped";
        const restarting = started && !expected && this.restartAllowed();
        this.emit("exit", { code, signal, expected, restarting });
        if (started && !expected) this.afterUnexpectedExit(code, signal, restarting);
      });
    });
  }

  /** Applies the restart policy's window; true when one more restart is allowed now (and counts it). */
  private restartAllowed(): boolean {
    const policy = this.options.restart ?? DEFAULT_RESTART;
    if (policy === false) return false;
    const now = Date.now();
    this.restarts = this.restarts.filter((t0) => now - t0 < policy.windowMs);
    if (this.restarts.length >= policy.maxRestarts) return false;
    this.restarts.push(now);
    return true;
  }

  private afterUnexpectedExit(code: number | null, signal: string | null, restarting: boolean): void {
    const died = new ReplicatorError("HOLDFAST_MIRROR_HELPER_DIED", `helper exited unexpectedly (code ${code}, signal ${signal})`, {
      stderr: this.stderrTail.join("\n"),
    });
    if (!restarting) {
      this.emit("error", died);
      return;
    }
    const attempt = this.restarts.length;
    this.spawnHelper().then(
      () => this.emit("restarted", { attempt }),
      (err: unknown) => this.emit("error", err instanceof ReplicatorError ? err : died),
    );
  }

  private onHelperEvent(ev: HelperEvent): void {
    switch (ev.event) {
      case "ready":
        this._state = "degraded";
        this.emit("ready", { pid: ev.pid, uncleanStart: ev.uncleanStart });
        break;
      case "listening":
        this._port = ev.port;
        this._state = "degraded";
        this.emit("ready", { pid: this._pid ?? -1, port: ev.port });
        break;
      case "connected":
        this._state = this.options.role === "primary" ? "resyncing" : "sync";
        this.emit("connected");
        break;
      case "peer":
        if (ev.state === "connected") {
          this._state = "sync";
          this.emit("connected");
        } else {
          this._state = "degraded";
          this.emit("disconnected", { reason: (ev as { reason?: string }).reason ?? "closed" });
        }
        break;
      case "degraded":
        this._state = "degraded";
        this.emit("degraded", { reason: ev.reason, logged: ev.logged });
        break;
      case "resync-start":
        this._state = "resyncing";
        this.emit("resyncStart", { mode: ev.mode as ResyncMode, files: ev.files, totalBytes: ev.total });
        break;
      case "resync-progress":
        this.emit("resyncProgress", { bytes: ev.bytes, totalBytes: ev.total, percent: ev.percent });
        break;
      case "synced":
        this._state = "sync";
        this.emit("synced", { mode: ev.mode as ResyncMode });
        break;
      case "consistent":
      case "inconsistent":
        this._consistent = ev.event === "consistent";
        this.emit("consistency", { consistent: this._consistent });
        break;
      case "auth-failed":
        this.emit("authFailed", { reason: ev.reason, refused: ev.refused });
        break;
      case "apply-error":
        this.emit("error", new ReplicatorError("HOLDFAST_MIRROR_PEER", `secondary could not apply op ${ev.op} (seq ${ev.seq}): ${ev.message}`));
        break;
      case "error":
        this.emit("error", new ReplicatorError("HOLDFAST_MIRROR_PEER", ev.message));
        break;
      case "stats": {
        // the secondary's line (role "secondary") carries the primary's fields too; only its own counters count
        const sec = ev as { role?: unknown; handshakeFailures?: unknown; handshakesPending?: unknown };
        if (sec.role === "secondary") {
          if (typeof sec.handshakeFailures === "number") this._metrics.handshakeFailures = sec.handshakeFailures;
          if (typeof sec.handshakesPending === "number") this._metrics.handshakesPending = sec.handshakesPending;
          this.emit("metrics", this.metrics());
          break;
        }
        const dAcks = ev.acks - this.lastAcks;
        const dUs = ev.ackUsSum - this.lastAckUs;
        this.lastAcks = ev.acks;
        this.lastAckUs = ev.ackUsSum;
        this._metrics = {
          bytesReplicated: ev.bytesReplicated,
          acks: ev.acks,
          ackLatencyAvgUs: dAcks > 0 ? dUs / dAcks : 0,
          ackLatencyMaxUs: ev.ackUsMax,
          queueDepth: ev.inflight,
          logRecords: ev.logRecords,
          resyncBytes: ev.resyncBytes,
          degradedCount: ev.degradedCount,
          ...permitStats(ev),
        };
        this.emit("metrics", this.metrics());
        break;
      }
      default:
        break;
    }
  }
}

/** The permit counters of a helper stats line (absent from helpers that predate the permit). */
function permitStats(ev: object): Pick<ReplicatorMetrics, "permitWaits" | "permitWaiting" | "permitMs"> {
  const e = ev as { permitWaits?: unknown; permitWaiting?: unknown; permitMs?: unknown };
  const out: { permitWaits?: number; permitWaiting?: number; permitMs?: number } = {};
  if (typeof e.permitWaits === "number") out.permitWaits = e.permitWaits;
  if (typeof e.permitWaiting === "number") out.permitWaiting = e.permitWaiting;
  if (typeof e.permitMs === "number") out.permitMs = e.permitMs;
  return out;
}

/** SIGKILL to the helper's process group (it leads one: spawned detached), or to the helper alone. */
function killGroup(child: ChildProcess): void {
  try {
    if (child.pid === undefined) throw new Error("no pid");
    process.kill(-child.pid, "SIGKILL");
  } catch {
    child.kill("SIGKILL");
  }
}
