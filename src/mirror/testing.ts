/**
 * Test helpers for the mirror (exported from holdfast/testing): two "nodes" on one machine (two backing
 * directories, the secondary on loopback), a tree snapshot/comparison, and a deadline poll.
 */
import { createHash, randomBytes } from "node:crypto";
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FileReplicator, type PrimaryReplicatorOptions, type SecondaryReplicatorOptions } from "./FileReplicator.js";

export interface LoopbackPair {
  root: string;
  a: string;
  b: string;
  mnt: string;
  key: string;
  secondary: FileReplicator;
  primary: FileReplicator;
  /** Starts (again) a secondary on the same port. */
  startSecondary(): Promise<FileReplicator>;
  close(): Promise<void>;
}

/**
 * The directories of a two-node pair on this machine: `a` (primary backing), `b` (secondary backing), `mnt`
 * (the primary's mount point) and a fresh 32-byte replication `key` file, all under a unique `root` in /tmp.
 */
export function makePairDirs(tag: string): { root: string; a: string; b: string; mnt: string; key: string } {
  const root = join("/tmp", `hf-mirror-${tag}-${process.pid}-${randomBytes(3).toString("hex")}`);
  const a = join(root, "a");
  const b = join(root, "b");
  const mnt = join(root, "mnt");
  for (const d of [a, b, mnt]) mkdirSync(d, { recursive: true });
  const key = join(root, "key");
  writeFileSync(key, randomBytes(32), { mode: 0o600 });
  return { root, a, b, mnt, key };
}

/**
 * A primary and a secondary on this machine (secondary on 127.0.0.1, any free port), started and synced.
 * `encrypt` in `primaryExtra` is applied to the secondary too unless `secondaryExtra` says otherwise.
 */
export async function startLoopbackPair(
  tag: string,
  primaryExtra: Partial<PrimaryReplicatorOptions> = {},
  secondaryExtra: Partial<SecondaryReplicatorOptions> = {},
): Promise<LoopbackPair> {
  const { root, a, b, mnt, key } = makePairDirs(tag);
  let port = 0;
  const pair: LoopbackPair = {
    root,
    a,
    b,
    mnt,
    key,
    secondary: undefined as unknown as FileReplicator,
    primary: undefined as unknown as FileReplicator,
    async startSecondary() {
      const s = new FileReplicator({
        role: "secondary",
        backingDir: b,
        keyFile: key,
        listen: { host: "127.0.0.1", port },
        restart: false,
        ...(primaryExtra.encrypt !== undefined ? { encrypt: primaryExtra.encrypt } : {}),
        ...secondaryExtra,
      });
      await s.start();
      port = s.port ?? 0;
      pair.secondary = s;
      return s;
    },
    async close() {
      await Promise.allSettled([pair.primary?.stop(), pair.secondary?.stop()]);
      rmSync(root, { recursive: true, force: true });
    },
  };
  await pair.startSecondary();
  pair.primary = new FileReplicator({
    role: "primary",
    backingDir: a,
    mountPoint: mnt,
    keyFile: key,
    peer: { host: "127.0.0.1", port },
    restart: false,
    statsIntervalMs: 200,
    ...primaryExtra,
  });
  const synced = pair.primary.waitFor("synced", 15_000);
  await pair.primary.start();
  await synced;
  return pair;
}

export interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha?: string;
  target?: string;
  mtimeMs?: number;
}

/** Every entry under `dir` (relative path -> type, permission bits, owner, size, content hash, link target). */
export function snapshotTree(dir: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const p = join(dir, r);
      const st = lstatSync(p);
      const e: Entry = { type: "other", mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: 0 };
      if (st.isDirectory()) e.type = "dir";
      else if (st.isSymbolicLink()) {
        e.type = "symlink";
        e.target = readlinkSync(p);
        e.mode = 0;
      } else if (st.isFile()) {
        e.type = "file";
        e.size = st.size;
        e.sha = createHash("sha256").update(readFileSync(p)).digest("hex");
        e.mtimeMs = st.mtimeMs;
      }
      out.set(r, e);
      if (st.isDirectory()) walk(r);
    }
  };
  walk("");
  return out;
}

/** Differences between two snapshots, as readable lines (empty when identical). */
export function treeDiff(x: Map<string, Entry>, y: Map<string, Entry>, opts: { mtimes?: boolean } = {}): string[] {
  const diffs: string[] = [];
  for (const [k, e] of x) {
    const f = y.get(k);
    if (!f) {
      diffs.push(`${k}: only on the primary`);
      continue;
    }
    const strip = (v: Entry): Entry => (opts.mtimes ? v : { ...v, mtimeMs: undefined });
    const s1 = JSON.stringify(strip(e));
    const s2 = JSON.stringify(strip(f));
    if (s1 !== s2) diffs.push(`${k}: ${s1} != ${s2}`);
  }
  for (const k of y.keys()) if (!x.has(k)) diffs.push(`${k}: only on the secondary`);
  return diffs;
}

/** Polls `cond` every 20 ms until it holds or `ms` pass. */
export async function pollUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Pids of the processes whose mount namespace is `ns` (the text of a `/proc/<pid>/ns/mnt` link). */
export function processesInMountNamespace(ns: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/ns/mnt`) === ns && Number(name) !== process.pid) pids.push(Number(name));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return pids;
}

/**
 * Crashes a "node" whose processes share the primary helper's private mount namespace (the helper and the
 * application started with `commandInMount`): SIGKILL to every process in that namespace at once. Process groups
 * are not enough: PostgreSQL's backends run in sessions of their own. `ns` comes from {@link mountNamespaceOf}
 * (taken while the helper is alive). Returns the pids killed.
 */
export function killMountNamespace(ns: string): number[] {
  const pids = processesInMountNamespace(ns);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  return pids;
}

/** The mount namespace of `pid` (e.g. `mnt:[4026532712]`), for {@link killMountNamespace}. */
export function mountNamespaceOf(pid: number): string {
  return readlinkSync(`/proc/${pid}/ns/mnt`);
}
