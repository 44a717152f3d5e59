/**
 * The read-only marker over a replicated directory's mount point, in the supervisor's (daemon's) mount namespace.
 *
 * With the default private mount namespace the replicated mount exists only inside the helper's namespace: from
 * anywhere else (an admin's shell, a backup agent, a cron job) the mount point is an ordinary directory whose
 * writes nothing replicates and the application never sees. While the module is primary or secondary on this
 * node, {@link mountMarker} puts a small read-only tmpfs there instead, holding one file, {@link MARKER_FILE},
 * that says where the data is: every write to the path fails with EROFS and `ls` shows why.
 *
 * The tmpfs is filled in a staging directory (named after this process) and bind-mounted read-only onto the
 * mount point, so the path is never writable on the way. Its source is {@link MARKER_SOURCE}: the marker of a
 * crashed run is recognised in /proc/self/mountinfo and removed by {@link removeMarkers} before anything is
 * mounted again. The helper's namespace is created with private propagation, so a marker mounted or removed here
 * never reaches it (it sees its own FUSE mount); a marker present when the compiled helper starts is copied
 * beneath its FUSE mount, invisible while the mount is up (the JS engine's fuse-native refuses such a mount
 * point: MirrorDriver mounts the marker after that engine's mount is up).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The one file in the marker. */
export const MARKER_FILE = "HOLDFAST-NOT-HERE";
/** The tmpfs source name that identifies a marker in /proc/self/mountinfo. */
export const MARKER_SOURCE = "holdfast-marker";
const STAGING_PREFIX = "holdfast-marker-";

/** What {@link MARKER_FILE} says for module `module` whose replicated directory is `mountPoint`. */
export function markerText(module: string, mountPoint: string): string {
  return `This directory (${mountPoint}) is replicated by holdfast module ${module}.
It is read-only here because nothing written here would be replicated or seen by the application.

- On the primary node the replicated files are visible only inside the module's mount namespace. Run a
  command there (a shell, a restore, a backup) with:
      holdfast exec ${module} -- CMD [ARGS...]
  e.g. holdfast exec ${module} -- sh -c 'ls -l "$HOLDFAST_MOUNT"'
- On the secondary node the data is written by the primary only: run the command on the primary's node.
- Stopped (holdfast stop ${module}), the module removes this marker and the directory is an ordinary one again.
`;
}

interface MountEntry {
  readonly id: string;
  readonly parent: string;
  readonly mountPoint: string;
  readonly fstype: string;
  readonly source: string;
}

/** Mount points in mountinfo escape space, tab, newline and backslash as octal. */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function mounts(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0) continue;
    out.push({ id: f[0] ?? "", parent: f[1] ?? "", mountPoint: unescapeMountinfo(f[4] ?? ""), fstype: f[sep + 1] ?? "", source: f[sep + 2] ?? "" });
  }
  return out;
}

function canonical(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

/** The topmost mount at `path` (the one no other mount at the same point sits on), if any. */
function topMountAt(path: string): MountEntry | undefined {
  const at = mounts().filter((m) => m.mountPoint === path);
  return at.find((m) => !at.some((o) => o.parent === m.id)) ?? at[at.length - 1];
}

const isMarker = (m: MountEntry | undefined): boolean => m !== undefined && m.fstype === "tmpfs" && m.source === MARKER_SOURCE;

/** Whether the topmost mount at `path` (in this process's mount namespace) is a marker. */
export function markerAt(path: string): boolean {
  const p = canonical(path);
  return p !== undefined && isMarker(topMountAt(p));
}

function run(cmd: string, args: readonly string[]): void {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
  if (r.error) throw new Error(`${cmd} ${args.join(" ")}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}: ${(r.stderr || r.stdout).trim()}`);
}

/**
 * Mounts a read-only marker holding {@link MARKER_FILE} (`text`) over `path` in this process's mount namespace.
 * Needs CAP_SYS_ADMIN; throws with the failing command's message.
 */
export function mountMarker(path: string, text: string): void {
  const target = realpathSync(path);
  const stage = mkdtempSync(join(tmpdir(), `${STAGING_PREFIX}${process.pid}-`));
  try {
    run("mount", ["-t", "tmpfs", "-o", "size=64k,nr_inodes=16,mode=0555", MARKER_SOURCE, stage]);
    try {
      writeFileSync(join(stage, MARKER_FILE), text, { mode: 0o444 });
      // The superblock read-only first: the bind below is read-only whatever its own flags.
      run("mount", ["-o", "remount,ro", stage]);
      run("mount", ["--bind", "-o", "ro", stage, target]);
    } finally {
      spawnSync("umount", ["-l", stage], { stdio: "ignore" });
    }
  } finally {
    try {
      rmdirSync(stage);
    } catch {
      // still mounted (umount failed): removeMarkers() of a later run finds it by its name
    }
  }
}

/**
 * Unmounts every marker stacked on top of `path` (a crashed run's included), and the staging mounts that dead
 * processes left in the temporary directory. Never unmounts anything else: a FUSE mount above a marker stays
 * (and so does the marker below it). Returns the number of markers removed at `path`.
 */
export function removeMarkers(path: string): number {
  removeStaleStaging();
  const target = canonical(path);
  if (target === undefined) return 0;
  let n = 0;
  for (let i = 0; i < 32 && isMarker(topMountAt(target)); i++) {
    run("umount", ["-l", target]);
    n++;
  }
  return n;
}

/**
 * Unmounts every marker at or below `dir` (test and lab teardown: a daemon killed and not restarted leaves its
 * marker, and a recursive removal of its directories would stop there). Returns how many were unmounted.
 */
export function removeMarkersUnder(dir: string): number {
  const root = canonical(dir);
  if (root === undefined) return 0;
  const found = mounts().filter((m) => isMarker(m) && (m.mountPoint === root || m.mountPoint.startsWith(`${root}/`)));
  for (const m of found.reverse()) spawnSync("umount", ["-l", m.mountPoint], { stdio: "ignore" });
  return found.length;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Staging directories of processes that died while mounting a marker. */
function removeStaleStaging(): void {
  const dir = tmpdir();
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.startsWith(STAGING_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^holdfast-marker-(\d+)-/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid || alive(pid)) continue;
    const p = join(dir, name);
    const c = canonical(p);
    if (c !== undefined && isMarker(topMountAt(c))) spawnSync("umount", ["-l", p], { stdio: "ignore" });
    try {
      rmdirSync(p);
    } catch {
      // not empty or still mounted: not ours to force
    }
  }
}
