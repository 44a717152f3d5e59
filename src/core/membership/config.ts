import * as t from "io-ts";
import { decodeOrThrow } from "../decode.js";
import { ConfigError } from "../errors.js";
import { strict } from "../module/config.js";
import { optional } from "../module/codec-util.js";

/**
 * Membership timing. Every timeout is derived from the pulse; the formulas are documented here once and
 * reused by the presets, the simulator's invariant bounds and the docs.
 *
 * - A node sends a heartbeat to every peer on every heartbeat network every `pulseMs`.
 * - Each heartbeat echoes the sequence number of the newest heartbeat it received from its recipient on that
 *   network. A peer is alive on a network when a heartbeat from it echoes one of *our* heartbeats sent within
 *   the last `lossTimeoutMs` (so liveness proves both directions and a replayed message proves nothing).
 * - A peer is lost when it proves nothing on **every** network for `lossTimeoutMs × localHealth` ms, where
 *   `localHealth` (1..`maxLocalHealth`) grows when this node's own event loop is late (Lifeguard, Dadgar et al.
 *   2018, "local health multiplier") and decays by one every `healthDecayMs` of punctual ticks.
 * - After a stall of our own longer than `stallMs` (SIGSTOP, a GC pause, a frozen VM), nobody is declared lost
 *   until a full `lossTimeoutMs` has passed since we resumed: the silence was ours.
 *
 * Detection time of a crashed peer ≈ lossTimeoutMs + U(0, pulseMs) + U(0, tickMs) - U(0, pulseMs) - one-way delay:
 * between `lossTimeoutMs - pulseMs` and `lossTimeoutMs + tickMs` on an idle LAN.
 * Bound for agreement once faults stop (used by the simulator):
 * `convergenceBoundMs = 2 × lossTimeoutMs × maxLocalHealth + 4 × pulseMs + 4 × maxDelay`.
 */
export interface MembershipTiming {
  /** Interval between heartbeats to each peer on each network, in ms. */
  readonly pulseMs: number;
  /** How often the core is ticked to check deadlines, in ms (<= pulseMs; pulseMs/2 gives 50 ms resolution on LAN). */
  readonly tickMs: number;
  /** A peer silent (no fresh proof of two-way contact) on every network this long is lost, in ms. */
  readonly lossTimeoutMs: number;
  /** A gap between two ticks longer than this is a stall of our own, in ms. */
  readonly stallMs: number;
  /** Upper bound of the local health multiplier (1 = never adapt). */
  readonly maxLocalHealth: number;
  /** Punctual time needed to decrease the local health multiplier by one, in ms. */
  readonly healthDecayMs: number;
}

/**
 * LAN (default): pulse 100 ms, loss after 600 ms of silence (6 pulses): detection in about 0.5–0.75 s, which
 * beats SafeKit's ~30 s mirror default and Corosync's 3 s token timeout, while tolerating 5 consecutive lost
 * heartbeats on every network at once.
 */
export const LAN: MembershipTiming = {
  pulseMs: 100,
  tickMs: 50,
  lossTimeoutMs: 600,
  stallMs: 250,
  maxLocalHealth: 4,
  healthDecayMs: 5_000,
};

/** WAN: pulse 500 ms, loss after 5 s (10 pulses) for links with jitter and bursts of loss. */
export const WAN: MembershipTiming = {
  pulseMs: 500,
  tickMs: 250,
  lossTimeoutMs: 5_000,
  stallMs: 1_500,
  maxLocalHealth: 4,
  healthDecayMs: 30_000,
};

/** SLOW: SafeKit-compatible (mirror heartbeat 700 ms, timeout 30 s) for very busy or very distant nodes. */
export const SLOW: MembershipTiming = {
  pulseMs: 700,
  tickMs: 350,
  lossTimeoutMs: 30_000,
  stallMs: 3_000,
  maxLocalHealth: 2,
  healthDecayMs: 60_000,
};

export const PRESETS = { lan: LAN, wan: WAN, slow: SLOW } as const;
export type PresetName = keyof typeof PRESETS;

/** Upper bound on the time all connected nodes need to agree on a view once faults stop (see formula above). */
export function convergenceBoundMs(timing: MembershipTiming, maxDelayMs: number): number {
  return 2 * timing.lossTimeoutMs * timing.maxLocalHealth + 4 * timing.pulseMs + 4 * maxDelayMs;
}

const NodeIdC = new t.Type<string, string, unknown>(
  "a node id (1-64 chars of letters, digits, '.', '_', '-')",
  (u): u is string => typeof u === "string" && /^[A-Za-z0-9._-]{1,64}$/.test(u),
  (u, c) => (typeof u === "string" && /^[A-Za-z0-9._-]{1,64}$/.test(u) ? t.success(u) : t.failure(u, c)),
  t.identity,
);

const PositiveInt = (what: string, max: number) =>
  new t.Type<number, number, unknown>(
    what,
    (u): u is number => typeof u === "number" && Number.isInteger(u) && u > 0 && u <= max,
    (u, c) => (typeof u === "number" && Number.isInteger(u) && u > 0 && u <= max ? t.success(u) : t.failure(u, c)),
    t.identity,
  );

/** Single timing overrides; exact, so that a misspelt one (`pulsems`) is an error instead of the preset's value. */
export const MembershipTimingOverridesC = strict({
  pulseMs: optional(PositiveInt("an integer number of ms in 1..60000", 60_000)),
  tickMs: optional(PositiveInt("an integer number of ms in 1..60000", 60_000)),
  lossTimeoutMs: optional(PositiveInt("an integer number of ms in 1..600000", 600_000)),
  stallMs: optional(PositiveInt("an integer number of ms in 1..600000", 600_000)),
  maxLocalHealth: optional(PositiveInt("an integer in 1..16", 16)),
  healthDecayMs: optional(PositiveInt("an integer number of ms in 1..3600000", 3_600_000)),
});

/** One cluster node as every member knows it (static configuration, as SafeKit's node list). Exact. */
export const ClusterNodeC = strict(
  {
    id: NodeIdC,
    /** One address per heartbeat network, in the same order on every node (IPv4 or IPv6). */
    addresses: t.array(t.string),
    /** Relative share of farm buckets, default 1. 0 = member that takes no farm load. */
    weight: optional(
      new t.Type<number, number, unknown>(
        "a number in 0..1000",
        (u): u is number => typeof u === "number" && u >= 0 && u <= 1000,
        (u, c) => (typeof u === "number" && u >= 0 && u <= 1000 ? t.success(u) : t.failure(u, c)),
        t.identity,
      ),
    ),
  },
  "cluster node",
);
export type ClusterNode = t.TypeOf<typeof ClusterNodeC>;

/** Exact (a misspelt option is an error), and one object type, so that error paths carry no intersection index. */
export const MembershipOptionsC = strict(
  {
    /** Cluster name; messages of another cluster are dropped. */
    clusterId: t.string,
    /** This node's id: must be one of `nodes`. */
    nodeId: NodeIdC,
    /** All nodes of the cluster, this one included. */
    nodes: t.array(ClusterNodeC),
    /** Timing preset, default "lan". */
    preset: optional(t.keyof({ lan: null, wan: null, slow: null })),
    /** Overrides of single timings (ms). */
    timing: optional(MembershipTimingOverridesC),
  },
  "membership options",
);
export type MembershipOptionsInput = t.TypeOf<typeof MembershipOptionsC>;

/** Validated membership options with every default filled in. */
export interface MembershipSettings {
  readonly clusterId: string;
  readonly nodeId: string;
  readonly nodes: readonly { readonly id: string; readonly addresses: readonly string[]; readonly weight: number }[];
  readonly networks: number;
  readonly timing: MembershipTiming;
}

/**
 * Decodes and checks membership options (path-precise {@link ConfigError} on failure) and fills defaults:
 * the single place where options are validated.
 */
export function validateMembershipOptions(input: unknown): MembershipSettings {
  const o = decodeOrThrow(MembershipOptionsC, input, "membership options");
  const problems: { path: string; value: unknown; expected: string }[] = [];
  const ids = new Set<string>();
  o.nodes.forEach((n, i) => {
    if (ids.has(n.id)) problems.push({ path: `nodes.${i}.id`, value: n.id, expected: "a unique node id" });
    ids.add(n.id);
  });
  if (!ids.has(o.nodeId)) problems.push({ path: "nodeId", value: o.nodeId, expected: "the id of one of `nodes`" });
  const networks = o.nodes[0]?.addresses.length ?? 0;
  if (o.nodes.length === 0) problems.push({ path: "nodes", value: o.nodes, expected: "at least one node" });
  if (networks < 1 || networks > 8)
    problems.push({ path: "nodes.0.addresses", value: o.nodes[0]?.addresses, expected: "1 to 8 addresses (one per heartbeat network)" });
  o.nodes.forEach((n, i) => {
    if (n.addresses.length !== networks)
      problems.push({ path: `nodes.${i}.addresses`, value: n.addresses, expected: `${networks} addresses, as nodes.0` });
    n.addresses.forEach((a, j) => {
      if (!isIpLiteral(a)) problems.push({ path: `nodes.${i}.addresses.${j}`, value: a, expected: "an IPv4 or IPv6 address" });
    });
  });
  const timing = { ...PRESETS[o.preset ?? "lan"], ...(o.timing ?? {}) };
  if (timing.tickMs > timing.pulseMs)
    problems.push({ path: "timing.tickMs", value: timing.tickMs, expected: `at most pulseMs (${timing.pulseMs})` });
  if (timing.lossTimeoutMs < 3 * timing.pulseMs)
    problems.push({ path: "timing.lossTimeoutMs", value: timing.lossTimeoutMs, expected: `at least 3 × pulseMs (${3 * timing.pulseMs})` });
  if (problems.length > 0) throw new ConfigError("membership options", problems);
  return {
    clusterId: o.clusterId,
    nodeId: o.nodeId,
    nodes: o.nodes.map((n) => ({ id: n.id, addresses: n.addresses, weight: n.weight ?? 1 })),
    networks,
    timing,
  };
}



/** True for a dotted-quad IPv4 literal or an IPv6 literal (no zone ids). Pure, no DNS. */
export function isIpLiteral(s: string): boolean {
  if (/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(s)) return true;
  if (!/^[0-9a-fA-F:.]+$/.test(s) || !s.includes(":")) return false;
  const parts = s.split("::");
  if (parts.length > 2) return false;
  const groups = parts.flatMap((p) => (p === "" ? [] : p.split(":")));
  if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g) || /^\d+\.\d+\.\d+\.\d+$/.test(g))) return false;
  return parts.length === 2 ? groups.length < 8 : groups.length === 8;
}
