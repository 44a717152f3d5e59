// Teardown machinery of the namespace lab (see lab.ts): ownership markers, finding the processes that
// live in a namespace, deleting namespaces, process-exit handlers, and the clean-up of abandoned labs.
import { execFileSync } from "node:child_process";
import { type Dirent, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, rmdirSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve, sep } from "node:path";
import { findCgroup2Mount, isLabUnitOf } from "../runtime/containment.js";
import { removeMarkersUnder } from "../mirror/marker.js";

/** Where each lab writes `<prefix>.pid` ("<creator pid> <creator start time>") while it exists. */
export const MARKER_DIR = "/run/holdfast-lab";
/** Where `ip netns add` keeps the namespace handles. */
export const NETNS_DIR = "/run/netns";
/** Per-host scratch directories of each lab live under `<tmpdir>/holdfast-lab/<prefix>/`. */
export const SCRATCH_ROOT = join(tmpdir(), "holdfast-lab");

/** Namespace names a lab with this prefix creates: `<prefix>sw`, `<prefix>n<i>`, `<prefix>c<i>`. */
export function isLabNamespaceOf(prefix: string, ns: string): boolean {
  if (!ns.startsWith(prefix)) return false;
  return /^(sw|n\d+|c\d+)$/.test(ns.slice(prefix.length));
}

export function markerPath(prefix: string): string {
  return join(MARKER_DIR, `${prefix}.pid`);
}

/** Start time of a process (field 22 of /proc/PID/stat, clock ticks since boot): tells a pid reused from a dead one. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return rest[19]; // field 22 overall = index 19 after the 3rd field
  } catch {
    return undefined;
  }
}

/** Process group of a process (field 5 of /proc/PID/stat), or undefined if it is gone. */
export function processGroupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
  } catch {
    return undefined;
  }
}

/** Creates the marker exclusively; false if a lab with this prefix already claims it. */
export function writeMarker(prefix: string): boolean {
  mkdirSync(MARKER_DIR, { recursive: true });
  try {
    writeFileSync(markerPath(prefix), `${process.pid} ${processStartTime(process.pid) ?? "?"}\n`, { flag: "wx" });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
}

/** True when the marker's creator is still the same running process. */
export function markerOwnerAlive(prefix: string): boolean {
  let text: string;
  try {
    text = readFileSync(markerPath(prefix), "utf8");
  } catch {
    return false;
  }
  const [pidText, start] = text.trim().split(/\s+/);
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const now = processStartTime(pid);
  return now !== undefined && (start === undefined || start === "?" || start === now);
}

export function listNamespaces(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

/**
 * Pids of every process whose network namespace is one of `namespaces` (by inode of the netns handle), found
 * by one scan of /proc. Excludes this process.
 */
export function pidsInNamespaces(namespaces: readonly string[]): number[] {
  const inodes = new Set<string>();
  for (const ns of namespaces) {
    try {
      inodes.add(`net:[${statSync(join(NETNS_DIR, ns)).ino}]`);
    } catch {
      // namespace already gone
    }
  }
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      if (inodes.has(readlinkSync(`/proc/${e}/ns/net`))) pids.push(pid);
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  return pids;
}

/** SIGKILLs every process inside the namespaces (a process left there would keep the namespace alive). */
export function killNamespaceProcesses(namespaces: readonly string[]): number[] {
  const pids = pidsInNamespaces(namespaces);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  return pids;
}

/** Deletes the namespaces (and with them every link and nftables rule inside); synchronous, never throws. */
export function deleteNamespacesSync(namespaces: readonly string[]): void {
  const present = namespaces.filter((ns) => existsSync(join(NETNS_DIR, ns)));
  if (present.length === 0) return;
  try {
    // The switch goes first: deleting it removes every veth pair at once.
    const ordered = [...present].sort((a, b) => Number(b.endsWith("sw")) - Number(a.endsWith("sw")));
    execFileSync("ip", ["-force", "-batch", "-"], {
      input: ordered.map((ns) => `netns del ${ns}\n`).join(""),
      stdio: ["pipe", "ignore", "ignore"],
      timeout: 20_000,
    });
  } catch {
    // -force reports the failures it skipped through the exit code; the caller verifies what is left
  }
}

export function removeScratchAndMarker(prefix: string): void {
  try {
    // A mirror daemon killed with its node leaves a read-only marker over its replicated path (src/mirror/marker.ts).
    removeMarkersUnder(join(SCRATCH_ROOT, prefix));
    rmSync(join(SCRATCH_ROOT, prefix), { recursive: true, force: true });
  } catch {
    // best effort
  }
  try {
    unlinkSync(markerPath(prefix));
  } catch {
    // already gone
  }
}

/** The cgroup2 mount point of this machine (undefined when there is none). */
function cgroup2Mount(): string | undefined {
  try {
    return findCgroup2Mount(readFileSync("/proc/self/mountinfo", "utf8"))?.mountPoint;
  } catch {
    return undefined;
  }
}

/**
 * Walks the tree under `root` to `maxDepth`: `visit` gets each entry and says whether to descend into it (a
 * directory only). Unreadable directories are skipped.
 */
function walk(root: string, maxDepth: number, visit: (path: string, e: Dirent) => boolean): void {
  const go = (d: string, depth: number) => {
    let entries: Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (visit(p, e) && e.isDirectory() && depth < maxDepth) go(p, depth + 1);
    }
  };
  go(root, 0);
}

/** Every `holdfast.*` cgroup directory under `mount` (not inside one: a unit's own subtree is the hook's business). */
function unitCgroups(mount: string): string[] {
  const found: string[] = [];
  walk(mount, 8, (p, e) => {
    if (!e.isDirectory()) return false;
    if (!e.name.startsWith("holdfast.")) return true;
    found.push(p);
    return false;
  });
  return found;
}

/** Lab prefixes named by hook-unit cgroups (`holdfast.*.lab-<prefix>`). */
function unitLabPrefixes(): Set<string> {
  const mount = cgroup2Mount();
  const out = new Set<string>();
  if (mount === undefined) return out;
  for (const d of unitCgroups(mount)) {
    const p = /\.lab-([a-z][a-z0-9]{1,7})$/.exec(basename(d))?.[1];
    if (p !== undefined) out.add(p);
  }
  return out;
}

/**
 * The hook-unit cgroups of the lab `prefix` (src/runtime/containment.ts): directories under the cgroup2 mount named
 * `holdfast.*.lab-<prefix>` (hosts the lab started), and the `holdfast.*` cgroups recorded in a
 * `<module>.hooks-unit.json` under the lab's scratch directory (hosts whose state directory lies there).
 */
export function labCgroups(prefix: string): string[] {
  const mount = cgroup2Mount();
  if (mount === undefined) return [];
  const found = new Set(unitCgroups(mount).filter((d) => isLabUnitOf(prefix, basename(d))));
  walk(join(SCRATCH_ROOT, prefix), 6, (p, e) => {
    if (e.isFile() && e.name.endsWith(".hooks-unit.json")) {
      try {
        const cg = (JSON.parse(readFileSync(p, "utf8")) as { cgroup?: unknown }).cgroup;
        // Only a unit's directory under the cgroup2 mount, whatever the record says.
        if (typeof cg === "string" && basename(cg).startsWith("holdfast.") && resolve(cg).startsWith(mount + sep) && existsSync(cg)) found.add(resolve(cg));
      } catch {
        // unreadable record: nothing to go by
      }
    }
    return true;
  });
  return [...found];
}

/**
 * Removes the lab's empty hook-unit cgroups ({@link labCgroups}) with rmdir, which the kernel refuses for a cgroup
 * that still has processes or child cgroups: nothing is killed here. Returns those still present.
 */
export function removeLabCgroups(prefix: string): string[] {
  const left: string[] = [];
  for (const dir of labCgroups(prefix)) {
    try {
      rmdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") left.push(dir);
    }
  }
  return left;
}

/** Everything a lab must undo, even from a synchronous exit handler. */
export interface Teardown {
  /** Synchronous, idempotent, never throws. */
  teardownSync(): void;
}

const live = new Set<Teardown>();
let handlersInstalled = false;

function onExit(): void {
  for (const lab of [...live]) lab.teardownSync();
  live.clear();
}

type HandledSignal = "SIGINT" | "SIGTERM" | "SIGHUP";

function onSignal(signal: HandledSignal): void {
  onExit();
  process.removeListener(signal, signalHandlers[signal]);
  // Keep the default behaviour (terminate) unless someone else handles the signal.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

const signalHandlers: Record<HandledSignal, () => void> = {
  SIGINT: () => onSignal("SIGINT"),
  SIGTERM: () => onSignal("SIGTERM"),
  SIGHUP: () => onSignal("SIGHUP"),
};

/** Registers a lab for teardown at process exit or on SIGINT/SIGTERM/SIGHUP. */
export function registerLive(lab: Teardown): void {
  live.add(lab);
  if (!handlersInstalled) {
    handlersInstalled = true;
    process.on("exit", onExit);
  }
  for (const [sig, h] of Object.entries(signalHandlers)) {
    if (!process.listeners(sig as NodeJS.Signals).includes(h)) process.on(sig as NodeJS.Signals, h);
  }
}

export function unregisterLive(lab: Teardown): void {
  live.delete(lab);
  if (live.size === 0) {
    for (const [sig, h] of Object.entries(signalHandlers)) process.removeListener(sig as NodeJS.Signals, h);
  }
}

/** Prefix of a namespace named the default way (`hf` + 6 base-36 characters + role), if it is one. */
function defaultPrefixOf(ns: string): string | undefined {
  return /^(hf[a-z0-9]{6})(sw|n\d+|c\d+)$/.exec(ns)?.[1];
}

/**
 * Deletes what abandoned labs left behind and returns the namespaces it deleted. A lab is abandoned when its
 * marker's creator process is dead, or when its namespaces (default-named `hf??????...`) or hook-unit cgroups
 * (`holdfast.*.lab-<prefix>`) have no marker at all (a lab writes its marker before creating anything and removes it
 * last). With `prefix`, only that lab.
 * Labs of live processes are never touched.
 */
export function cleanStaleLabsSync(opts: { prefix?: string } = {}): string[] {
  const stale = new Set<string>();
  // Namespaces first, markers second: a lab writes its marker before its first namespace, so any lab
  // namespace listed here has its marker visible below (no race with a lab being created meanwhile).
  const all = listNamespaces();
  let markers: string[];
  try {
    markers = readdirSync(MARKER_DIR).filter((f) => f.endsWith(".pid"));
  } catch {
    markers = [];
  }
  const marked = new Set(markers.map((f) => f.slice(0, -".pid".length)));
  for (const p of marked) if (!markerOwnerAlive(p)) stale.add(p);
  for (const ns of all) {
    const p = defaultPrefixOf(ns);
    if (p !== undefined && !marked.has(p)) stale.add(p);
  }
  // A lab's processes exist only while its marker does (written first, removed last): a unit cgroup named for a
  // lab without one is a leftover.
  for (const p of unitLabPrefixes()) if (!marked.has(p)) stale.add(p);
  const deleted: string[] = [];
  for (const p of stale) {
    if (opts.prefix !== undefined && p !== opts.prefix) continue;
    const mine = all.filter((ns) => isLabNamespaceOf(p, ns));
    killNamespaceProcesses(mine);
    deleteNamespacesSync(mine);
    for (const ns of mine) if (!existsSync(join(NETNS_DIR, ns))) deleted.push(ns);
    removeLabCgroups(p);
    removeScratchAndMarker(p);
  }
  return deleted;
}
