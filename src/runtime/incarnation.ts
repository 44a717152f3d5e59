/**
 * A node's membership incarnation, monotonic across restarts and clock steps.
 *
 * Peers treat a heartbeat with a larger incarnation as a restart and a smaller one as stale (SWIM, Das et al.
 * 2002; Lifeguard, Dadgar et al. 2018): a node that restarts with a smaller incarnation than its previous run
 * is ignored by its peers until they give it up. The old default, the wall-clock time in ms, gives exactly that
 * after the clock stepped backwards across a restart (NTP correction, RTC reset, a VM restored).
 *
 * {@link nextIncarnation} returns max(persisted + 1, Date.now()) and persists it (write + fsync + rename + fsync
 * of the directory) before returning, under a lock file so that two processes never get the same value.
 * Why max(counter + 1, wall clock) rather than a boot id + counter: it stays in the same range as the
 * wall-clock incarnations of earlier versions, so a node upgraded in place, or one whose state directory was
 * lost, still presents a larger incarnation than its previous run did (a fresh counter would start far below
 * a wall-clock value and be locked out); and the persisted counter carries it over a clock stepped back.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

/** File name of the counter under the state directory. */
export const INCARNATION_FILE = "incarnation";

export interface IncarnationOptions {
  /** Wall-clock source, ms. Default `Date.now`. */
  readonly now?: () => number;
  /** Longest wait for another process's lock, ms. Default 5000. */
  readonly lockTimeoutMs?: number;
}

/** A lock older than this is taken over even if its owner looks alive (pid reuse): the critical section takes ms. */
const STALE_LOCK_MS = 30_000;

/**
 * The incarnation for this start of the node whose state directory is `stateDir` (created if missing): larger
 * than every value returned before for the same directory, and not below the wall-clock time in ms. Persisted
 * before it returns. Throws if the counter file is corrupt (naming the file: a silent reset could go backwards),
 * or if it cannot be written.
 */
export function nextIncarnation(stateDir: string, opts: IncarnationOptions = {}): number {
  const now = opts.now ?? Date.now;
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = join(stateDir, INCARNATION_FILE);
  const release = lock(`${file}.lock`, opts.lockTimeoutMs ?? 5000);
  try {
    const persisted = readCounter(file);
    const next = Math.max(persisted + 1, Math.floor(now()));
    if (!Number.isSafeInteger(next)) throw new RangeError(`${file}: incarnation overflow (${persisted})`);
    writeDurably(file, `${next}\n`, stateDir);
    return next;
  } finally {
    release();
  }
}

/** The persisted counter; 0 when the file does not exist (first start). */
function readCounter(file: string): number {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw e;
  }
  const m = /^(\d{1,16})\n?$/.exec(text);
  const n = m ? Number(m[1]) : Number.NaN;
  if (!Number.isSafeInteger(n)) {
    throw new Error(
      `${file}: corrupt incarnation counter (expected a decimal integer, got ${JSON.stringify(text.slice(0, 40))}); ` +
        `fix or remove it by hand (removing it falls back to the wall-clock time, safe only if the clock did not step back)`,
    );
  }
  return n;
}

/** write + fsync a temporary file, rename it over `file`, fsync the directory: the file is the old or the new value. */
function writeDurably(file: string, text: string, dir: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dfd = openSync(dir, "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * An exclusive lock file (O_EXCL) holding the owner's pid; a lock of a dead process (or older than STALE_LOCK_MS)
 * is taken over. Limit: two processes that find the same dead owner's lock at the same instant could both take
 * it over (unlink + create is not atomic); that needs a crash inside this few-ms critical section and two
 * starts of the same node racing, and the heartbeat sockets (no SO_REUSEADDR) let only one of them run anyway.
 */
function lock(path: string, timeoutMs: number): () => void {
  const deadline = Date.now() + timeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      const fd = openSync(path, "wx", 0o644);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      return () => unlinkSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    if (lockIsStale(path)) {
      try {
        unlinkSync(path);
      } catch {
        // another process took it over first
      }
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${path}: incarnation lock held by another process for over ${timeoutMs} ms`);
    Atomics.wait(pause, 0, 0, 2 + Math.floor(Math.random() * 5));
  }
}

function lockIsStale(path: string): boolean {
  let pid: number;
  let mtime: number;
  try {
    pid = Number(readFileSync(path, "utf8").trim());
    mtime = statSync(path).mtimeMs;
  } catch {
    return false; // gone already (retry), or unreadable for now
  }
  if (Date.now() - mtime > STALE_LOCK_MS) return true;
  // Empty: its owner is between create and write (or died there: then the age above takes it over).
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}
