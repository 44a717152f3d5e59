/**
 * Containment of a module's hook processes: everything a module's script hooks start (the hook, and whatever it
 * forks, daemonised or not) runs in one unit per module that the next run of the host can find and stop, so that
 * an application left behind by a crashed daemon never answers again on a node that reports itself SECOND or adds
 * the VIP back.
 *
 * - `cgroup` mode (preferred): a cgroup v2 directory per module, a child of the host's own cgroup (from
 *   /proc/self/cgroup's `0::` line, under the cgroup2 mount found in /proc/self/mountinfo). A script joins it
 *   before it can fork (`sh -c 'echo $$ > cgroup.procs && exec "$@"'`); no controller is enabled, only membership
 *   and `cgroup.kill` are used. Under systemd, give the service `Delegate=yes` so that systemd leaves the child
 *   cgroups alone.
 * - `pgroup` mode (no writable cgroup2): each hook's process group is recorded in the state directory and killed
 *   the same way. A process that leaves its group (`setsid`) is not found in this mode.
 *
 * The unit's name is stable per (cluster, node, module, state directory), and the state directory records where
 * the unit lives (`<module>.hooks-unit.json`), so a run started in another cgroup still finds the previous one.
 * A host started by the namespace lab (`HOLDFAST_LAB_PREFIX` in its environment) adds `.lab-<prefix>` to the name,
 * so that the lab can remove the empty cgroups its killed daemons left (src/testing/lab-cleanup.ts).
 *
 * While the host runs, a guard ({@link HookUnit.guard}) kills the unit the moment the host's process dies (SIGKILL,
 * OOM kill, crash): an application its hooks started must not outlive it and answer from a mount that is gone or
 * from its own caches while the peer takes over. The next run's cleaning stays for the case the guard died too.
 *
 * The host hands the unit to the hook runner through the hooks' environment (`HOLDFAST_CGROUP`, or
 * `HOLDFAST_PGROUP_RECORD` in pgroup mode), which {@link runHook} reads; function hooks run in the host's own
 * process and are not contained, but script hooks they run through {@link runHook} inherit their unit.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Environment variable naming the module's cgroup directory (cgroup mode). */
export const CGROUP_ENV = "HOLDFAST_CGROUP";
/** Environment variable naming the file where hook process groups are recorded (pgroup mode). */
export const PGROUP_ENV = "HOLDFAST_PGROUP_RECORD";
/** Set by the namespace lab (src/testing/lab.ts) for the processes it starts: the lab's prefix. */
export const LAB_ENV = "HOLDFAST_LAB_PREFIX";
/** A lab prefix (the lab's own rule): anything else in {@link LAB_ENV} is ignored. */
const LAB_PREFIX_RE = /^[a-z][a-z0-9]{1,7}$/;

/** True when `name` is a unit's cgroup directory named for the lab `prefix` (see {@link unitName}). */
export function isLabUnitOf(prefix: string, name: string): boolean {
  return name.startsWith("holdfast.") && name.endsWith(`.lab-${prefix}`);
}

/** Undoes mountinfo's octal escapes (`\040` for a space). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The first cgroup2 mount in a /proc/self/mountinfo text: its mount point and the cgroup path it shows (root). */
export function findCgroup2Mount(mountinfo: string): { mountPoint: string; root: string } | undefined {
  for (const line of mountinfo.split("\n")) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const fstype = line.slice(sep + 3).split(" ")[0];
    if (fstype !== "cgroup2") continue;
    const f = line.slice(0, sep).split(" ");
    if (f.length < 5) continue;
    return { root: unescapeMount(f[3] as string), mountPoint: unescapeMount(f[4] as string) };
  }
  return undefined;
}

/** The cgroup v2 path of a /proc/<pid>/cgroup text (its `0::` line), e.g. `/system.slice/holdfast.service`. */
export function ownCgroupPath(procCgroup: string): string | undefined {
  for (const line of procCgroup.split("\n")) if (line.startsWith("0::")) return line.slice(3).trim() || "/";
  return undefined;
}

/**
 * The directory of the host's own cgroup: `mountPoint` + its path relative to the mount's root. Undefined when
 * the own cgroup is not visible through that mount.
 */
export function cgroupDirOf(mount: { mountPoint: string; root: string }, own: string): string | undefined {
  const root = mount.root === "/" ? "" : mount.root.replace(/\/$/, "");
  if (own !== root && !own.startsWith(`${root}/`)) return undefined;
  const rel = own.slice(root.length).replace(/^\/+/, "");
  return rel === "" ? mount.mountPoint : join(mount.mountPoint, rel);
}

/**
 * The unit's name: `holdfast.<cluster>.<node>.<module>.<hash of the state directory>` (characters other than
 * letters, digits, `_` and `-` become `_`): the same for every run of one host, distinct for two hosts of the same
 * node id on one machine (labs) with different state directories. With `lab` (a lab prefix), `.lab-<lab>` is
 * appended: the lab removes such cgroups when it is destroyed.
 */
export function unitName(cluster: string, node: string, module: string, stateDir: string, lab?: string): string {
  const clean = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 40);
  const hash = createHash("sha256").update(stateDir).digest("hex").slice(0, 8);
  const marker = lab !== undefined && LAB_PREFIX_RE.test(lab) ? `.lab-${lab}` : "";
  return `holdfast.${clean(cluster)}.${clean(node)}.${clean(module)}.${hash}${marker}`;
}

/** A process left in a module's unit. */
export interface Leftover {
  readonly pid: number;
  /** Its command line (`[comm]` when it has none). */
  readonly cmd: string;
}

export function describeLeftovers(list: readonly Leftover[]): string {
  return list.map((p) => `${p.pid} (${p.cmd})`).join(", ");
}

function commandLine(pid: number): string {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0+$/, "").split("\0").join(" ");
    if (raw) return raw.length > 200 ? `${raw.slice(0, 197)}...` : raw;
    return `[${readFileSync(`/proc/${pid}/comm`, "utf8").trim()}]`;
  } catch {
    return "?";
  }
}

/** State and process group of a live process (undefined when gone). */
function statOf(pid: number): { state: string; pgrp: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { state: rest[0] ?? "", pgrp: Number(rest[2]) };
  } catch {
    return undefined;
  }
}

const alive = (pid: number) => {
  const s = statOf(pid);
  return s !== undefined && s.state !== "Z" && s.state !== "X";
};

function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "unknown";
  }
}

/** Where a unit lives, as recorded in the state directory. */
interface UnitRecord {
  mode: "cgroup" | "pgroup";
  cgroup?: string;
}

export interface HookUnitOptions {
  readonly cluster: string;
  readonly node: string;
  readonly module: string;
  readonly stateDir: string;
  /** Overrides for tests: the texts of /proc/self/mountinfo and /proc/self/cgroup. */
  readonly mountinfo?: string;
  readonly procCgroup?: string;
  /** Force pgroup mode (tests, or hosts where cgroups must not be touched). */
  readonly noCgroup?: boolean;
  /** The namespace lab's prefix, marked in the unit's name. Default: `HOLDFAST_LAB_PREFIX` from the environment. */
  readonly lab?: string;
}

/** One module's unit: where its hook processes run, found again by the next run. */
export class HookUnit {
  /** Directories (this run's and a previous run's, when it lived elsewhere) whose processes are this module's. */
  private readonly cgroups: string[] = [];

  private constructor(
    readonly mode: "cgroup" | "pgroup",
    /** This run's cgroup directory (cgroup mode). */
    readonly cgroup: string | undefined,
    /** The pgroup record file (in the state directory; also read in cgroup mode for a previous pgroup run). */
    readonly pgroupFile: string,
    /** Why cgroup mode is not used (pgroup mode). */
    readonly why: string,
  ) {}

  /**
   * Finds or creates the module's unit: a cgroup when a writable cgroup2 is mounted, else a pgroup record. Keeps the
   * previous run's place (recorded in the state directory) among the places to clean.
   */
  static open(o: HookUnitOptions): HookUnit {
    mkdirSync(o.stateDir, { recursive: true });
    const base = join(o.stateDir, `${o.module.replace(/[^A-Za-z0-9_.-]/g, "_")}.hooks-unit`);
    const recordPath = `${base}.json`;
    let previous: UnitRecord | undefined;
    try {
      previous = JSON.parse(readFileSync(recordPath, "utf8")) as UnitRecord;
    } catch {
      previous = undefined;
    }
    let dir: string | undefined;
    let why = "";
    if (o.noCgroup) why = "cgroups not used (noCgroup)";
    else {
      try {
        const mount = findCgroup2Mount(o.mountinfo ?? readFileSync("/proc/self/mountinfo", "utf8"));
        const own = ownCgroupPath(o.procCgroup ?? readFileSync("/proc/self/cgroup", "utf8"));
        const parent = mount && own !== undefined ? cgroupDirOf(mount, own) : undefined;
        if (!mount) why = "no cgroup2 mount in /proc/self/mountinfo";
        else if (!parent) why = `own cgroup ${own ?? "(no 0:: line)"} not under the cgroup2 mount ${mount.mountPoint}`;
        else {
          dir = join(parent, unitName(o.cluster, o.node, o.module, o.stateDir, o.lab ?? process.env[LAB_ENV]));
          mkdirSync(dir, { recursive: true });
          if (!existsSync(join(dir, "cgroup.procs"))) throw new Error(`${dir} is not a cgroup`);
        }
      } catch (e) {
        why = `cannot use cgroup2: ${(e as Error).message}`;
        dir = undefined;
      }
    }
    const unit = new HookUnit(dir ? "cgroup" : "pgroup", dir, `${base}.pgroups`, why);
    if (dir) unit.cgroups.push(dir);
    if (previous?.mode === "cgroup" && previous.cgroup && previous.cgroup !== dir && existsSync(join(previous.cgroup, "cgroup.procs"))) unit.cgroups.push(previous.cgroup);
    const record: UnitRecord = dir ? { mode: "cgroup", cgroup: dir } : { mode: "pgroup" };
    writeFileSync(recordPath, JSON.stringify(record) + "\n");
    return unit;
  }

  /** One line for the module's log: which mode is in use. */
  describe(): string {
    return this.mode === "cgroup"
      ? `hook processes are contained in cgroup ${this.cgroup}`
      : `hook processes are tracked by process group (recorded in ${this.pgroupFile}; a process that calls setsid escapes): ${this.why}`;
  }

  /** The hooks' environment that puts their scripts into this unit (read by the hook runner). */
  env(): Record<string, string> {
    return this.mode === "cgroup" ? { [CGROUP_ENV]: this.cgroup as string } : { [PGROUP_ENV]: this.pgroupFile };
  }

  /** The live processes of the unit (never this process). */
  leftovers(): Leftover[] {
    const pids = new Set<number>();
    for (const dir of this.cgroups) for (const pid of cgroupPids(dir)) pids.add(pid);
    const groups = recordedGroups(this.pgroupFile);
    if (groups.size > 0) for (const pid of groupMembers(groups)) pids.add(pid);
    pids.delete(process.pid);
    return [...pids].filter(alive).map((pid) => ({ pid, cmd: commandLine(pid) }));
  }

  /** SIGKILLs every process of the unit (`cgroup.kill` when there is one). */
  kill(): void {
    for (const dir of this.cgroups) {
      const own = cgroupPids(dir).includes(process.pid);
      if (!own && existsSync(join(dir, "cgroup.kill"))) {
        try {
          writeFileSync(join(dir, "cgroup.kill"), "1");
          continue;
        } catch {
          // fall through: one by one
        }
      }
      for (const pid of cgroupPids(dir)) if (pid !== process.pid) sigkill(pid);
    }
    for (const g of recordedGroups(this.pgroupFile)) if (g !== process.pid && g !== getpgid()) sigkill(-g);
  }

  /**
   * Kills what is left in the unit and waits (at most `timeoutMs`) until nothing is: `note` gets one warning naming
   * the processes (pid and command line) first. Resolves with the processes found; rejects when some are still
   * alive at the bound (the caller must not go on as if none could answer).
   */
  async clean(note: (level: "info" | "warn" | "error", line: string) => void, why: string, timeoutMs = 5000): Promise<Leftover[]> {
    const found = this.leftovers();
    if (found.length === 0) {
      this.forgetGroups();
      return found;
    }
    note("warn", `${why}: killing ${found.length} leftover hook process${found.length === 1 ? "" : "es"}: ${describeLeftovers(found)}`);
    const end = Date.now() + timeoutMs;
    for (;;) {
      this.kill();
      await new Promise((r) => setTimeout(r, 20));
      const left = this.leftovers();
      if (left.length === 0) break;
      if (Date.now() >= end) {
        const msg = `${why}: still alive ${timeoutMs} ms after SIGKILL: ${describeLeftovers(left)}`;
        note("error", msg);
        throw new Error(msg);
      }
    }
    note("info", `${why}: leftover hook processes gone`);
    this.forgetGroups();
    return found;
  }

  /**
   * Starts the unit's guard: a small shell, outside the unit and in a process group of its own, whose stdin is a
   * pipe that only this process holds (libuv opens it close-on-exec, so hooks and helpers do not inherit it). When
   * this process dies the pipe ends and the guard kills the unit at once (`cgroup.kill`, or the recorded process
   * groups); {@link HookGuard.release} ends it without killing (an orderly shutdown, after the module stopped). A
   * guard that dies while this process runs is started again (at most once a second), with a warning.
   */
  guard(note: (level: "warn" | "error", line: string) => void): HookGuard {
    let released = false;
    let child: ReturnType<typeof spawn> | undefined;
    let lastStart = 0;
    const start = (): void => {
      lastStart = Date.now();
      const args = this.mode === "cgroup" ? ["cgroup", ...this.cgroups] : ["pgroup", this.pgroupFile];
      const c = spawn("/bin/sh", ["-c", GUARD_SCRIPT, GUARD_NAME, ...args], { stdio: ["pipe", "ignore", "ignore"], detached: true });
      child = c;
      c.on("error", (e) => note("error", `hook guard: cannot run /bin/sh: ${e.message}: an application the hooks start outlives a killed daemon until its next start`));
      c.stdin?.on("error", () => undefined); // EPIPE when it is gone: said by its exit
      c.on("exit", (code, signal) => {
        if (released || child !== c) return;
        child = undefined;
        note("warn", `hook guard ${c.pid ?? "?"} ended (${signal ?? `code ${code}`}): started again`);
        const wait = Math.max(0, lastStart + 1000 - Date.now());
        setTimeout(() => {
          if (!released) start();
        }, wait).unref();
      });
      c.unref();
      (c.stdin as { unref?: () => void } | null)?.unref?.();
    };
    start();
    return {
      get pid() {
        return child?.pid;
      },
      release: () => {
        if (released) return;
        released = true;
        child?.stdin?.end("release\n");
        child = undefined;
      },
    };
  }

  /** Removes this run's cgroup once empty (an orderly shutdown of the host). */
  remove(): void {
    if (!this.cgroup) return;
    try {
      rmdirSync(this.cgroup);
    } catch {
      // not empty or gone: the next run cleans it
    }
  }

  /** Drops the previous runs' cgroups (once empty) and the pgroup record. */
  private forgetGroups(): void {
    for (const dir of this.cgroups.slice(1)) {
      try {
        rmdirSync(dir);
        this.cgroups.splice(this.cgroups.indexOf(dir), 1);
      } catch {
        // still busy or gone: kept among the places to clean
      }
    }
    try {
      writeFileSync(this.pgroupFile, "");
    } catch {
      // state directory gone
    }
  }
}

/** A running guard of a unit ({@link HookUnit.guard}). */
export interface HookGuard {
  /** The guard's pid (while it runs). */
  readonly pid: number | undefined;
  /** Ends the guard without killing anything. */
  release(): void;
}

/** `$0` of the guard's shell: how it shows in `ps`. */
export const GUARD_NAME = "holdfast-hook-guard";
/**
 * The guard: waits for a line or the end of stdin; `release` ends it quietly, anything else (this process died)
 * kills the unit: `cgroup DIR...` writes each directory's cgroup.kill (kernels before 5.14: SIGKILL to its
 * processes), `pgroup FILE` SIGKILLs the process groups recorded in FILE (first field of each line).
 */
const GUARD_SCRIPT = `read -r line; [ "$line" = release ] && exit 0
mode=$1; shift
if [ "$mode" = cgroup ]; then for d in "$@"; do echo 1 > "$d/cgroup.kill" || kill -9 $(cat "$d/cgroup.procs"); done 2>/dev/null
else while read -r g _; do [ "$g" -gt 1 ] 2>/dev/null && kill -9 "-$g"; done < "$1" 2>/dev/null; fi
exit 0`;

function sigkill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone
  }
}

function getpgid(): number {
  return statOf(process.pid)?.pgrp ?? -1;
}

/** The pids in a cgroup and its descendants. */
function cgroupPids(dir: string): number[] {
  const out: number[] = [];
  const walk = (d: string, depth: number) => {
    try {
      for (const l of readFileSync(join(d, "cgroup.procs"), "utf8").split("\n")) if (/^\d+$/.test(l)) out.push(Number(l));
    } catch {
      return;
    }
    if (depth > 8) return;
    try {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name), depth + 1);
    } catch {
      // unreadable: its processes are found through cgroup.kill all the same
    }
  };
  walk(dir, 0);
  return out;
}

/** Process groups recorded in this boot (a record of an earlier boot names nothing). */
function recordedGroups(file: string): Set<number> {
  const out = new Set<number>();
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return out;
  }
  const boot = bootId();
  for (const line of text.split("\n")) {
    const [g, b] = line.trim().split(" ");
    if (g && /^\d+$/.test(g) && b === boot && Number(g) > 1) out.add(Number(g));
  }
  return out;
}

/** Live pids whose process group is one of `groups`. */
function groupMembers(groups: ReadonlySet<number>): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    const s = statOf(Number(name));
    if (s && groups.has(s.pgrp)) out.push(Number(name));
  }
  return out;
}

/**
 * Pgroup mode: records a hook's process group (its leader's pid) in `file`, dropping groups that have no live
 * member any more so the file stays short.
 */
export function recordGroup(file: string, pgid: number): void {
  const groups = recordedGroups(file);
  const live = new Set(groupMembers(groups).map((pid) => statOf(pid)?.pgrp));
  const boot = bootId();
  const keep = [...groups].filter((g) => live.has(g)).map((g) => `${g} ${boot}\n`);
  try {
    writeFileSync(file, keep.join(""));
    appendFileSync(file, `${pgid} ${boot}\n`);
  } catch {
    // state directory gone: nothing to record into
  }
}

/**
 * Kills at once (no wait) whatever is left in `unit`, with one warning naming it: after an orderly stop of the module
 * (its stop hooks ran), for a child a stop hook forgot. Synchronous, so that a start right after is not hit.
 */
export function killLeftovers(unit: HookUnit, note: (level: "warn", line: string) => void, why: string): void {
  const left = unit.leftovers();
  if (left.length === 0) return;
  note("warn", `${why}: killing ${left.length} leftover hook process${left.length === 1 ? "" : "es"}: ${describeLeftovers(left)}`);
  unit.kill();
}
