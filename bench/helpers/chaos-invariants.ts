// The chaos suite's invariant checkers: pure functions over what the run observed (state samples, the writer's
// acknowledgements, the farm client's requests, the packets the client captured, the nodes' last bucket tables),
// so that they can be tested on synthetic event streams (test/unit/chaos-invariants.test.ts) as well as run on a
// real lab. Times are epoch milliseconds.

export interface Violation {
  invariant: string;
  /** Epoch ms when it was seen. */
  at: number;
  detail: string;
}

/** A period during which a node is under a fault (from injection to heal plus a grace period). */
export interface FaultWindow {
  node: string;
  from: number;
  to: number;
  label: string;
  /**
   * The fault cuts the node off from its peers while it keeps running (partition, one-way drop, link down): both
   * sides then serve every bucket, as the farm allows (each side owns every bucket of its own view until the views merge), so a connection the cut-off node
   * answers too (after its link comes back, before the views merge) is reset by whichever node's socket does not
   * know it. Resets from any node, and two nodes answering one connection, are excused during such a window (the runner ends it
   * once every node applies the merged bucket table again, and no sooner than `graceMs` after the heal). A frozen
   * node (SIGSTOP) is not a split: it was not cut off, and its return must not disturb the survivors.
   */
  split?: boolean;
}

// ---- mirror: at most one primary ------------------------------------------------------------------

/** One sample of both mirror nodes: each node's role as seen through its control socket ("primary" = PRIM or
 *  ALONE and not leaving the role), or undefined when it did not answer (down, frozen, restarting). */
export interface RoleSample {
  t: number;
  states: (string | undefined)[];
}

/**
 * Milliseconds during which both nodes were primary: each sample where both say "primary" counts until the next
 * sample (at most `capMs`, so that a stalled sampler cannot inflate it), plus the episodes, for the report.
 */
export function dualPrimary(samples: readonly RoleSample[], capMs = 100): { ms: number; episodes: { from: number; to: number; samples: number }[] } {
  let ms = 0;
  const episodes: { from: number; to: number; samples: number }[] = [];
  let cur: { from: number; to: number; samples: number } | null = null;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i] as RoleSample;
    const both = s.states.length >= 2 && s.states.every((x) => x === "primary");
    if (!both) {
      cur = null;
      continue;
    }
    const next = samples[i + 1];
    const span = next ? Math.min(capMs, Math.max(0, next.t - s.t)) : 0;
    ms += span;
    if (!cur) {
      cur = { from: s.t, to: s.t + span, samples: 0 };
      episodes.push(cur);
    }
    cur.to = s.t + span;
    cur.samples++;
  }
  return { ms, episodes };
}

// ---- mirror: no acknowledged write lost --------------------------------------------------------------

/** The acknowledged ids missing from `present` (the current primary's copy), in ack order. */
export function lostWrites(acked: readonly number[], present: ReadonlySet<number>): number[] {
  return acked.filter((id) => !present.has(id));
}

/** The record ids in a records file of examples/mirror-node.ts (`ID NODE PADDING` per line). */
export function idsOf(text: string): Set<number> {
  const ids = new Set<number>();
  for (const line of text.split("\n")) {
    if (line.length === 0) continue;
    const id = Number(line.slice(0, line.indexOf(" ")));
    if (Number.isInteger(id)) ids.add(id);
  }
  return ids;
}

// ---- farm: every request answered once, failures only from failed nodes ---------------------------

const inWindow = (windows: readonly FaultWindow[], t: number, node?: string) =>
  windows.find((w) => t >= w.from && t <= w.to && (node === undefined || w.node === node));

/** A short request of the farm client (one new connection each). */
export interface ProbeRecord {
  t: number;
  /** When it was answered or failed (absent in records of older runs: taken as `t`). */
  end?: number;
  ok: boolean;
  node?: string;
  err?: string;
  addr?: string;
  port?: number;
  /** The answering process (`PID START`, the demo app's header), when it answered. */
  app?: string;
  /** When that process answered (its x-holdfast-at header, epoch ms): a late arrival does not make it late. */
  at?: number;
}

/**
 * A failed short request is a violation unless a farm node was under a fault when it was made (its serving node
 * is unknown: a failed request never says who should have answered, so any farm fault excuses it). An answer that
 * is not exactly one node id is a violation whatever the time.
 */
export function checkProbes(probes: readonly ProbeRecord[], windows: readonly FaultWindow[], nodes: readonly string[]): Violation[] {
  const v: Violation[] = [];
  for (const p of probes) {
    if (p.ok) {
      if (p.node === undefined || !nodes.includes(p.node)) v.push({ invariant: "farm-answer", at: p.t, detail: `request from ${p.addr}:${p.port} answered ${JSON.stringify(p.node)}, not one node id` });
      continue;
    }
    // Excused when a fault was under way at some point of its life: a request in flight when a node is stopped or
    // killed (the next fault may begin a few ms after the client sent it) fails because of that fault.
    const end = p.end ?? p.t;
    if (!windows.some((w) => w.from <= end && w.to >= p.t)) v.push({ invariant: "farm-request-failed", at: p.t, detail: `request from ${p.addr}:${p.port} failed (${p.err}) while no farm node was under a fault` });
  }
  return v;
}

/** A long-lived stream of the farm client: which node served it, when it started and ended, whether it completed. */
export interface StreamRecord {
  node?: string;
  addr?: string;
  port?: number;
  start: number;
  end: number;
  complete: boolean;
  err?: string;
  /** The serving process (`PID START`, the demo app's header). */
  app?: string;
  /** The last time that process wrote to the stream (its ". MS" lines, epoch ms). */
  at?: number;
}

/** A stream that did not complete is a violation unless the node serving it was under a fault during its life. */
export function checkStreams(streams: readonly StreamRecord[], windows: readonly FaultWindow[]): Violation[] {
  const v: Violation[] = [];
  for (const s of streams) {
    if (s.complete) continue;
    if (s.node === undefined) {
      // Never got its first line: the connection itself failed, judged like a short request.
      if (!inWindow(windows, s.start) && !inWindow(windows, s.end)) v.push({ invariant: "farm-stream-failed", at: s.end, detail: `stream opened at ${s.start} never answered (${s.err}) while no farm node was under a fault` });
      continue;
    }
    const excused = windows.some((w) => w.node === s.node && w.from <= s.end && w.to >= s.start);
    if (!excused) v.push({ invariant: "farm-stream-broken", at: s.end, detail: `stream on survivor ${s.node} (${s.start}..${s.end}) broken: ${s.err ?? "incomplete"}` });
  }
  return v;
}

/** A TCP packet from the VIP seen by the client: the node is known by its source MAC. */
export interface PacketRecord {
  t: number;
  node: string;
  /** "SA" for a SYN-ACK, "R" for a reset. */
  kind: "SA" | "R";
  /** The client's address:port it was sent to. */
  client: string;
}

/**
 * - A reset from a node is a violation unless that node is under a fault (a killed process's sockets reset; a
 *   survivor never does), or a split (partition, one-way drop) is under way (see {@link FaultWindow.split}), or
 *   the connection it resets was held by a node under a fault (`heldBy`: client address.port -> serving node,
 *   from the client's records): a failed node's connection may die, whoever finishes it off.
 * - Two different nodes answering the same connection attempt (SYN-ACKs to the same client address:port within
 *   `dupMs`) is a violation unless some farm node is under a fault then (during a partition each side may serve
 *   every bucket, as the design allows).
 */
export function checkPackets(packets: readonly PacketRecord[], windows: readonly FaultWindow[], dupMs = 2_000, heldBy: ReadonlyMap<string, string> = new Map()): Violation[] {
  const v: Violation[] = [];
  const lastSynAck = new Map<string, { t: number; node: string }>();
  for (const p of packets) {
    if (p.kind === "R") {
      const holder = heldBy.get(p.client);
      const holderFailed = holder !== undefined && holder !== p.node && windows.some((w) => w.node === holder && p.t >= w.from && p.t <= w.to);
      if (!inWindow(windows, p.t, p.node) && !windows.some((w) => w.split && p.t >= w.from && p.t <= w.to) && !holderFailed) v.push({ invariant: "farm-survivor-reset", at: p.t, detail: `reset from ${p.node} to ${p.client} (a connection of ${holder ?? "unknown"}) while ${p.node} was not under a fault` });
      continue;
    }
    const prev = lastSynAck.get(p.client);
    if (prev && prev.node !== p.node && p.t - prev.t <= dupMs && !inWindow(windows, p.t)) {
      v.push({ invariant: "farm-answered-twice", at: p.t, detail: `connection from ${p.client} answered by ${prev.node} and ${p.node}` });
    }
    lastSynAck.set(p.client, { t: p.t, node: p.node });
  }
  return v;
}

/** Client `address.port` (as tcpdump prints it) -> the node that served it, from the client's records. */
export function connectionHolders(probes: readonly ProbeRecord[], streams: readonly StreamRecord[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const x of [...probes, ...streams]) if (x.addr && x.port && x.node) m.set(`${x.addr}.${x.port}`, x.node);
  return m;
}

/** Parses one `tcpdump -e -tt -n -l` line of a packet from the VIP; undefined for anything else. */
export function parseTcpdump(line: string, macToNode: ReadonlyMap<string, string>): PacketRecord | undefined {
  // 1763790000.123456 02:48:46:00:00:01 > 02:48:46:00:01:00, ethertype IPv4 (0x0800), length 74: 198.18.0.100.80 > 198.18.0.140.41234: Flags [S.], ...
  const m = /^(\d+\.\d+) ([0-9a-f:]{17}) > [0-9a-f:]{17}, .*?: \S+ > (\S+?): Flags \[([^\]]*)\]/.exec(line);
  if (!m) return undefined;
  const flags = m[4] as string;
  const kind = flags.includes("R") ? "R" : flags.includes("S") && flags.includes(".") ? "SA" : undefined;
  if (!kind) return undefined;
  return { t: Math.round(Number(m[1]) * 1000), node: macToNode.get(m[2] as string) ?? (m[2] as string), kind, client: m[3] as string };
}

// ---- convergence ------------------------------------------------------------------------------------

/** The last bucket table each farm node applied (its `buckets` line). */
export interface BucketTable {
  owners: string[];
  owned: number;
}

/** Null when every node applies a table over exactly `nodes` and the tables cover `total` buckets; else why not. */
export function farmConverged(tables: ReadonlyMap<string, BucketTable | undefined>, nodes: readonly string[], total: number): string | null {
  const want = [...nodes].sort().join(",");
  let sum = 0;
  for (const n of nodes) {
    const t = tables.get(n);
    if (!t) return `${n} has no bucket table`;
    const owners = [...t.owners].sort().join(",");
    if (owners !== want) return `${n} owners [${owners}], want [${want}]`;
    sum += t.owned;
  }
  return sum === total ? null : `buckets owned add up to ${sum}, want ${total}`;
}

/** What a mirror node's control socket says (`GET /status`). */
export interface MirrorStatus {
  state?: string;
  ready?: boolean;
  transient?: boolean;
  upToDate?: boolean;
}

/** Null when one node is PRIM and the other SECOND, both ready and settled, the secondary up to date; else why not. */
export function mirrorConverged(statuses: readonly (MirrorStatus | undefined)[]): string | null {
  if (statuses.some((s) => s === undefined)) return "a node does not answer";
  const ss = statuses as MirrorStatus[];
  const prim = ss.filter((s) => s.state === "PRIM" && s.ready && !s.transient);
  const second = ss.filter((s) => s.state === "SECOND" && s.ready && !s.transient && s.upToDate);
  if (prim.length === 1 && second.length === 1 && ss.length === 2) return null;
  return `states ${ss.map((s) => `${s.state}${s.ready ? "" : "(not ready)"}${s.transient ? "(transient)" : ""}${s.state === "SECOND" && !s.upToDate ? "(behind)" : ""}`).join(" / ")}`;
}

// ---- both: no answer from a process of a previous role -------------------------------------------------

/** An answer that names the process that gave it (the demo apps' `x-holdfast-app: PID START` header). */
export interface ProcessAnswer {
  /**
   * When the process gave the answer, by its own clock (the demo apps say it: x-holdfast-at, a stream's ". MS"
   * lines); only when it does not, when the client saw it. An answer written before the role ended may arrive
   * seconds later (TCP retransmissions after a link came back): the arrival would blame the process wrongly.
   */
  t: number;
  app: string;
  what: string;
}

/** A process a node's daemon had started (through its hooks) when that daemon was killed alone (`killDaemon`). */
export interface PreviousRoleProcess {
  node: string;
  pid: number;
  /** The process's start, epoch ms (from /proc: 10 ms resolution). */
  start: number;
  /** When its daemon was killed: from then on its role is over. */
  from: number;
  label: string;
}

/** `PID START` (the header) names `p` when the pid matches and the two start times agree within `slackMs`. */
export function sameProcess(app: string, p: Pick<PreviousRoleProcess, "pid" | "start">, slackMs = 1_000): boolean {
  const [pid, start] = app.split(" ").map(Number);
  return pid === p.pid && start !== undefined && Number.isFinite(start) && Math.abs(start - p.start) <= slackMs;
}

/**
 * "No answer from a process of a previous role": once a node's daemon is dead, what its hooks started is an orphan
 * and must be gone within `graceMs` (the peer takes over meanwhile); an answer from it later than that is a
 * violation, one per process (its first such answer). Processes are matched by pid and start time, so a pid
 * reused later in the run does not count.
 */
export function checkPreviousRoles(answers: readonly ProcessAnswer[], previous: readonly PreviousRoleProcess[], graceMs = 1_000): Violation[] {
  const v: Violation[] = [];
  for (const p of previous) {
    const late = answers.filter((a) => a.t > p.from + graceMs && sameProcess(a.app, p)).sort((a, b) => a.t - b.t)[0];
    if (late) {
      v.push({ invariant: "previous-role-answer", at: late.t, detail: `${p.node}: process ${p.pid} started by the daemon killed at ${p.from} (${p.label}) answered ${late.t - p.from} ms later (${late.what})` });
    }
  }
  return v;
}
