// The chaos suite's fault schedules: a pure function of (seed, minutes), written to JSON and read back, so that
// `npm run chaos -- --seed S` (or `--replay FILE`) runs the very same sequence of faults again.
//
// Two tracks run side by side, one per system (the farm's lab and the mirror's lab are independent): each is a
// list of faults executed one after the other. Before each fault the runner waits until that system has
// converged, then waits `gapMs`, injects the fault, holds it `holdMs`, and heals it. Mirror faults name a role
// (primary/secondary), resolved when the fault is injected: which node holds it depends on earlier failovers.
import { Rng } from "../../src/testing/sim/rng.js";

export const FARM_NODES = ["n0", "n1", "n2"] as const;
export type FarmNode = (typeof FARM_NODES)[number];

/**
 * - kill: SIGKILL of every process of the node, restarted after the hold.
 * - killDaemon: SIGKILL of the holdfast daemon alone (the host, the replication helper and the application it
 *   started stay alive), the daemon restarted after the hold: nothing of its role may answer meanwhile.
 * - stop: SIGSTOP of every process of the node (a frozen machine), SIGCONT after the hold.
 * - linkDown: the node's interface down, up after the hold.
 * - oneWay: the node's frames to its peers dropped (`out`) or its peers' frames to it (`in`); clients unaffected.
 * - partition: the node cut from its peers both ways (clients still reach everyone).
 * - restartDuringResync (mirror only): the secondary killed, a bulk write on the lone primary, the secondary
 *   restarted and killed again as soon as its resync has started, then restarted for good after the hold.
 */
export type FaultKind = "kill" | "killDaemon" | "stop" | "linkDown" | "oneWay" | "partition" | "restartDuringResync";

export interface FarmFault {
  system: "farm";
  kind: Exclude<FaultKind, "restartDuringResync">;
  node: FarmNode;
  /** How long the fault lasts before it is healed (ms). */
  holdMs: number;
  /** Quiet time after convergence before the fault is injected (ms). */
  gapMs: number;
  /** oneWay only: which direction is dropped. */
  direction?: "in" | "out";
}

export interface MirrorFault {
  system: "mirror";
  kind: FaultKind;
  role: "primary" | "secondary";
  holdMs: number;
  gapMs: number;
  direction?: "in" | "out";
  /** restartDuringResync only: MiB written while the secondary is away (what the resync has to send). */
  mib?: number;
}

export type Fault = FarmFault | MirrorFault;

export interface Schedule {
  version: 1;
  seed: number;
  minutes: number;
  farm: FarmFault[];
  mirror: MirrorFault[];
}

/** Bounds of every generated fault (ms). A fault is always healed after at most `holdMax`. */
export const SCHEDULE_BOUNDS = { holdMin: 1_000, holdMax: 5_000, gapMin: 500, gapMax: 3_000, mibMin: 64, mibMax: 160 } as const;

const FARM_KINDS: FarmFault["kind"][] = ["kill", "killDaemon", "stop", "linkDown", "oneWay", "partition"];
const MIRROR_KINDS: FaultKind[] = ["kill", "killDaemon", "stop", "linkDown", "oneWay", "partition", "restartDuringResync"];

/**
 * The schedule for `seed`: more faults than `minutes` can hold (the runner stops injecting when the time is up),
 * at least one of each kind per track when the run is long enough for them.
 */
export function makeSchedule(seed: number, minutes: number): Schedule {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an integer from 0 to 2^32-1, got ${seed}`);
  if (!(minutes > 0 && minutes <= 600)) throw new RangeError(`minutes must be in (0, 600], got ${minutes}`);
  const rng = new Rng(seed);
  const b = SCHEDULE_BOUNDS;
  // A fault cycle is at least gap + hold + ~2 s of recovery: generous upper bound on how many fit.
  const count = Math.ceil((minutes * 60_000) / (b.gapMin + b.holdMin + 2_000)) + FARM_KINDS.length;
  const timing = () => ({ holdMs: rng.int(b.holdMin, b.holdMax), gapMs: rng.int(b.gapMin, b.gapMax) });
  // Kinds are dealt in shuffled rounds so that every kind comes up early, whatever the seed.
  const dealer = <K>(kinds: readonly K[]) => {
    let deck: K[] = [];
    return (): K => {
      if (deck.length === 0) deck = rng.shuffle([...kinds]);
      return deck.pop() as K;
    };
  };
  const farmKind = dealer(FARM_KINDS);
  const mirrorKind = dealer(MIRROR_KINDS);
  const farm: FarmFault[] = [];
  const mirror: MirrorFault[] = [];
  for (let i = 0; i < count; i++) {
    const fk = farmKind();
    farm.push({ system: "farm", kind: fk, node: rng.pick(FARM_NODES), ...timing(), ...(fk === "oneWay" ? { direction: rng.pick(["in", "out"] as const) } : {}) });
    const mk = mirrorKind();
    mirror.push({
      system: "mirror",
      kind: mk,
      role: mk === "restartDuringResync" ? "secondary" : rng.pick(["primary", "secondary"] as const),
      ...timing(),
      ...(mk === "oneWay" ? { direction: rng.pick(["in", "out"] as const) } : {}),
      ...(mk === "restartDuringResync" ? { mib: rng.int(b.mibMin, b.mibMax) } : {}),
    });
  }
  return { version: 1, seed, minutes, farm, mirror };
}

/** Reads a schedule written by {@link makeSchedule} (JSON), checking its shape; throws a TypeError naming the first problem. */
export function parseSchedule(text: string): Schedule {
  const s = JSON.parse(text) as Partial<Schedule>;
  const fail = (what: string): never => {
    throw new TypeError(`not a chaos schedule: ${what}`);
  };
  if (s.version !== 1) fail("version must be 1");
  if (typeof s.seed !== "number" || typeof s.minutes !== "number") fail("seed and minutes must be numbers");
  if (!Array.isArray(s.farm) || !Array.isArray(s.mirror)) fail("farm and mirror must be lists");
  const check = (f: Fault, i: number, system: string) => {
    const kinds: readonly string[] = system === "farm" ? FARM_KINDS : MIRROR_KINDS;
    if (f.system !== system || !kinds.includes(f.kind)) fail(`${system}[${i}]: kind ${JSON.stringify(f.kind)}`);
    if (!(f.holdMs >= 0 && f.holdMs <= 60_000) || !(f.gapMs >= 0 && f.gapMs <= 60_000)) fail(`${system}[${i}]: holdMs/gapMs out of 0..60000`);
    if (f.system === "farm" && !FARM_NODES.includes(f.node)) fail(`farm[${i}]: node ${JSON.stringify(f.node)}`);
    if (f.system === "mirror" && f.role !== "primary" && f.role !== "secondary") fail(`mirror[${i}]: role ${JSON.stringify(f.role)}`);
  };
  (s.farm as Fault[]).forEach((f, i) => check(f, i, "farm"));
  (s.mirror as Fault[]).forEach((f, i) => check(f, i, "mirror"));
  return s as Schedule;
}

/** One line per fault, for logs: `farm#3 oneWay(out) n1 hold 2100 ms`. */
export function describeFault(f: Fault, index: number): string {
  const who = f.system === "farm" ? f.node : f.role;
  const dir = f.direction ? `(${f.direction})` : "";
  const mib = f.system === "mirror" && f.mib ? ` ${f.mib} MiB` : "";
  return `${f.system}#${index} ${f.kind}${dir} ${who}${mib} hold ${f.holdMs} ms`;
}
