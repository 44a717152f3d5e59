import { convergenceBoundMs, LAN, type MembershipSettings, type MembershipTiming } from "../../core/membership/config.js";
import { MembershipCore, type MembershipEffect, type MembershipEvent } from "../../core/membership/membership.js";
import type { MacFn } from "../../core/membership/wire.js";
import { FakeClock } from "./clock.js";
import { FakeNetwork } from "./network.js";
import { Rng } from "./rng.js";

/**
 * A keyed, non-cryptographic 256-bit MAC for the simulator (thousands of schedules per test run). It has the
 * property the protocol logic relies on: a datagram signed with another key, or altered, does not verify.
 * Real HMAC-SHA256 is exercised by the unit tests and every real run.
 */
export function simMac(key: string): MacFn {
  let k1 = 0x811c9dc5;
  let k2 = 0x9747b28c;
  for (let i = 0; i < key.length; i++) {
    k1 = Math.imul(k1 ^ key.charCodeAt(i), 0x01000193) >>> 0;
    k2 = Math.imul(k2 ^ key.charCodeAt(i), 0x5bd1e995) >>> 0;
  }
  return (...parts) => {
    let h1 = k1;
    let h2 = k2;
    for (const data of parts) {
      h2 = (h2 ^ data.length) >>> 0;
      for (let i = 0; i < data.length; i++) {
        const c = data[i] as number;
        h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
        h2 = Math.imul(h2 ^ c, 0x5bd1e995) >>> 0;
        h2 = (h2 ^ (h2 >>> 15)) >>> 0;
      }
    }
    const out = new Uint8Array(32);
    let a = h1;
    let b = h2;
    for (let i = 0; i < 32; i += 4) {
      a = Math.imul(a ^ (b >>> 13), 0x85ebca6b) >>> 0;
      b = Math.imul(b ^ (a >>> 16), 0xc2b2ae35) >>> 0;
      out[i] = a & 0xff;
      out[i + 1] = (a >>> 8) & 0xff;
      out[i + 2] = b & 0xff;
      out[i + 3] = (b >>> 8) & 0xff;
    }
    return out;
  };
}

/** A fault of the schedule, with the interval during which it holds. */
export type SimFault =
  | { kind: "crash"; node: number; at: number; restartAt: number | null }
  | { kind: "stall"; node: number; at: number; until: number }
  | { kind: "leave"; node: number; at: number; rejoinAt: number | null }
  | { kind: "linkDown"; node: number; network: number; at: number; until: number }
  | { kind: "partition"; a: number[]; b: number[]; networks: number[]; oneWay: boolean; at: number; until: number }
  | { kind: "loss"; from: number; to: number; network: number; rate: number; at: number; until: number };

export interface MembershipSchedule {
  seed: number;
  nodes: number;
  networks: number;
  timing: MembershipTiming;
  minDelayMs: number;
  maxDelayMs: number;
  duplicate: number;
  /** Faults happen in [0, chaosMs); at chaosMs every fault stops. */
  chaosMs: number;
  faults: SimFault[];
  /** Nodes restarted at chaosMs (those crashed or left without a rejoin in the schedule may stay down). */
  restartAtEnd: number[];
  adversary: boolean;
}

/** Generates a random schedule from a seed: same seed, same schedule. */
export function randomSchedule(seed: number, timing: MembershipTiming = LAN): MembershipSchedule {
  const rng = new Rng(seed);
  const nodes = rng.int(2, 5);
  const networks = rng.int(1, 2);
  const chaosMs = rng.int(1_000, 5_000);
  const faults: SimFault[] = [];
  const nFaults = rng.int(0, 6);
  const within = (at: number, max: number) => Math.min(chaosMs, at + rng.int(50, max));
  const down = new Set<number>();
  for (let f = 0; f < nFaults; f++) {
    const at = rng.int(0, chaosMs - 1);
    const node = rng.int(0, nodes - 1);
    const r = rng.next();
    if (r < 0.15) {
      if (down.has(node)) continue;
      down.add(node);
      const restartAt = rng.chance(0.6) ? within(at, 3_000) : null;
      faults.push({ kind: "crash", node, at, restartAt: restartAt !== null && restartAt < chaosMs ? restartAt : null });
    } else if (r < 0.3) {
      faults.push({ kind: "stall", node, at, until: within(at, 2_500) });
    } else if (r < 0.38) {
      if (down.has(node)) continue;
      down.add(node);
      const rejoinAt = rng.chance(0.6) ? within(at, 3_000) : null;
      faults.push({ kind: "leave", node, at, rejoinAt: rejoinAt !== null && rejoinAt < chaosMs ? rejoinAt : null });
    } else if (r < 0.55) {
      faults.push({ kind: "linkDown", node, network: rng.int(0, networks - 1), at, until: within(at, 3_000) });
    } else if (r < 0.8) {
      const ids = rng.shuffle([...Array(nodes).keys()]);
      const cut = rng.int(1, Math.max(1, nodes - 1));
      const nets = rng.chance(0.5) ? [...Array(networks).keys()] : [rng.int(0, networks - 1)];
      faults.push({ kind: "partition", a: ids.slice(0, cut), b: ids.slice(cut), networks: nets, oneWay: rng.chance(0.4), at, until: within(at, 3_000) });
    } else {
      const to = (node + rng.int(1, nodes - 1)) % nodes;
      faults.push({ kind: "loss", from: node, to, network: rng.int(0, networks - 1), rate: rng.pick([0.1, 0.3, 0.6, 1]), at, until: within(at, 3_000) });
    }
  }
  const restartAtEnd = [...down].filter(() => rng.chance(0.5));
  return {
    seed,
    nodes,
    networks,
    timing,
    minDelayMs: rng.int(0, 2),
    maxDelayMs: rng.int(2, 20),
    duplicate: rng.pick([0, 0, 0.01, 0.05]),
    chaosMs,
    faults,
    restartAtEnd,
    adversary: rng.chance(0.7),
  };
}

export interface SimViolation {
  seed: number;
  at: number;
  invariant: "convergence" | "falseDeath" | "adversary";
  detail: string;
}

export interface SimResult {
  schedule: MembershipSchedule;
  violations: SimViolation[];
  /** Time from the end of faults until every running node agreed on the same view (ms). */
  convergedAfterMs: number | null;
  boundMs: number;
  events: number;
  delivered: number;
  adversarial: number;
  trace: string[];
}

interface SimNode {
  id: string;
  index: number;
  core: MembershipCore | null;
  stalledUntil: number;
  backlog: { network: number; bytes: Uint8Array }[];
  cancelTick: (() => void) | null;
  nextIncarnation: number;
}

/**
 * Runs one schedule of several real {@link MembershipCore}s on a fake network and clock, and checks:
 * - **convergence**: within `convergenceBoundMs` after faults stop, every running node has the same view
 *   (members = exactly the running nodes, same epoch, agreed), and it then stays unchanged;
 * - **no false death**: no node declares a peer down (silence or one-way) while both were running, neither
 *   stalled, and at least one network carried datagrams both ways without loss or block, over the whole
 *   detection window before that moment;
 * - **adversary**: forged, altered and replayed datagrams (to any node, on any network) change no state and
 *   produce no effect.
 */
export function runMembershipSchedule(s: MembershipSchedule, opts: { trace?: boolean; mac?: (key: string) => MacFn } = {}): SimResult {
  const clock = new FakeClock(1_000);
  const rng = new Rng(s.seed ^ 0x5eed);
  const net = new FakeNetwork(clock, rng, { networks: s.networks, minDelayMs: s.minDelayMs, maxDelayMs: s.maxDelayMs, duplicate: s.duplicate });
  const makeMac = opts.mac ?? simMac;
  const mac = makeMac("cluster-key");
  const wrongMac = makeMac("not-the-key");
  const t0 = clock.now();
  const ids = [...Array(s.nodes).keys()].map((i) => `n${i}`);
  const settings = (id: string): MembershipSettings => ({
    clusterId: "sim",
    nodeId: id,
    nodes: ids.map((nid) => ({ id: nid, addresses: [...Array(s.networks).keys()].map((n) => `198.18.${n}.${ids.indexOf(nid) + 10}`), weight: 1 })),
    networks: s.networks,
    timing: s.timing,
  });
  const violations: SimViolation[] = [];
  const trace: string[] = [];
  const log = (line: string) => {
    if (opts.trace) trace.push(`${String(Math.round(clock.now() - t0)).padStart(6)} ${line}`);
  };
  let events = 0;
  let adversarial = 0;
  const end = s.chaosMs + convergenceBoundMs(s.timing, s.maxDelayMs);
  const boundMs = convergenceBoundMs(s.timing, s.maxDelayMs);

  const nodes: SimNode[] = ids.map((id, index) => ({ id, index, core: null, stalledUntil: 0, backlog: [], cancelTick: null, nextIncarnation: 1 }));

  // ---- fault bookkeeping for the false-death invariant
  const nodeFaults: { node: number; from: number; to: number }[] = [];
  const linkFaults: { from: number; to: number; network: number; start: number; end: number }[] = [];
  for (const f of s.faults) {
    const A = t0 + f.at;
    switch (f.kind) {
      case "crash":
        nodeFaults.push({ node: f.node, from: A, to: t0 + (f.restartAt ?? s.chaosMs) });
        break;
      case "leave":
        nodeFaults.push({ node: f.node, from: A, to: t0 + (f.rejoinAt ?? s.chaosMs) });
        break;
      case "stall":
        nodeFaults.push({ node: f.node, from: A, to: t0 + f.until });
        break;
      case "linkDown":
        for (let o = 0; o < s.nodes; o++) {
          if (o === f.node) continue;
          linkFaults.push({ from: f.node, to: o, network: f.network, start: A, end: t0 + f.until });
          linkFaults.push({ from: o, to: f.node, network: f.network, start: A, end: t0 + f.until });
        }
        break;
      case "partition":
        for (const a of f.a)
          for (const b of f.b)
            for (const n of f.networks) {
              linkFaults.push({ from: a, to: b, network: n, start: A, end: t0 + f.until });
              if (!f.oneWay) linkFaults.push({ from: b, to: a, network: n, start: A, end: t0 + f.until });
            }
        break;
      case "loss":
        linkFaults.push({ from: f.from, to: f.to, network: f.network, start: A, end: t0 + f.until });
        break;
    }
  }
  const overlaps = (a0: number, a1: number, b0: number, b1: number) => a0 <= b1 && b0 <= a1;
  const pairClean = (x: number, y: number, from: number, to: number): boolean => {
    if (nodeFaults.some((f) => (f.node === x || f.node === y) && overlaps(f.from, f.to, from, to))) return false;
    for (let n = 0; n < s.networks; n++) {
      const bad = linkFaults.some(
        (f) => f.network === n && ((f.from === x && f.to === y) || (f.from === y && f.to === x)) && overlaps(f.start, f.end, from, to),
      );
      if (!bad) return true;
    }
    return false;
  };
  const runningSince = new Map<number, number>();

  // ---- node lifecycle
  const apply = (node: SimNode, effects: MembershipEffect[]) => {
    for (const e of effects) {
      if (e.type === "send") {
        net.send(node.id, e.to, e.network, e.bytes);
      } else {
        events++;
        onEvent(node, e.event);
      }
    }
  };
  const onEvent = (node: SimNode, e: MembershipEvent) => {
    if (e.type === "viewChange") log(`${node.id} view e${e.view.epoch} [${e.view.members.map((m) => m.id).join(",")}] agreed=${e.agreed} (${e.reason})`);
    else if (e.type === "nodeDown" || e.type === "nodeUp" || e.type === "networkDown" || e.type === "networkUp" || e.type === "localStall")
      log(`${node.id} ${e.type} ${"node" in e ? e.node : ""} ${e.reason}`);
    if (e.type === "nodeDown" && (e.cause === "silence" || e.cause === "oneWay") && node.core) {
      const x = ids.indexOf(e.node);
      const since = Math.max(runningSince.get(x) ?? Infinity, runningSince.get(node.index) ?? Infinity);
      const window = node.core.effectiveTimeoutMs + s.timing.tickMs + s.timing.pulseMs + 2 * s.maxDelayMs;
      const from = e.at - window;
      if (since <= from && pairClean(x, node.index, from, e.at))
        violations.push({ seed: s.seed, at: e.at - t0, invariant: "falseDeath", detail: `${node.id} declared ${e.node} down (${e.reason}) although both were running and connected since ${Math.round(from - t0)} ms` });
    }
  };
  const scheduleTick = (node: SimNode, delay: number) => {
    node.cancelTick = clock.setTimer(delay, () => {
      node.cancelTick = null;
      if (!node.core) return;
      if (clock.now() < node.stalledUntil) return; // resumed by the stall's end
      apply(node, node.core.tick(clock.now()));
      scheduleTick(node, s.timing.tickMs + rng.int(0, 2));
    });
  };
  const startNode = (node: SimNode) => {
    const inc = Math.max(node.nextIncarnation, clock.now());
    node.nextIncarnation = inc + 1;
    node.core = new MembershipCore(settings(node.id), inc, mac);
    node.stalledUntil = 0;
    node.backlog = [];
    runningSince.set(node.index, clock.now());
    log(`${node.id} start incarnation ${inc}`);
    apply(node, node.core.start(clock.now()));
    scheduleTick(node, rng.int(1, s.timing.tickMs));
  };
  const stopNode = (node: SimNode, how: "crash" | "leave") => {
    if (!node.core) return;
    log(`${node.id} ${how}`);
    if (how === "leave") apply(node, node.core.leave(clock.now()));
    node.core = null;
    node.cancelTick?.();
    node.cancelTick = null;
    node.backlog = [];
    runningSince.delete(node.index);
  };
  for (const node of nodes) {
    net.attach(node.id, (network, _from, bytes) => {
      if (!node.core) return;
      if (clock.now() < node.stalledUntil) {
        node.backlog.push({ network, bytes });
        return;
      }
      apply(node, node.core.receive(clock.now(), network, bytes));
    });
  }

  // ---- faults
  const links = (a: number, b: number, n: number) => net.link(ids[a] as string, ids[b] as string, n);
  for (const f of s.faults) {
    clock.at(t0 + f.at, () => {
      const node = nodes[("node" in f ? f.node : 0) as number] as SimNode;
      switch (f.kind) {
        case "crash":
          stopNode(node, "crash");
          if (f.restartAt !== null) clock.at(t0 + f.restartAt, () => !node.core && startNode(node));
          break;
        case "leave":
          stopNode(node, "leave");
          if (f.rejoinAt !== null) clock.at(t0 + f.rejoinAt, () => !node.core && startNode(node));
          break;
        case "stall": {
          if (!node.core || clock.now() < node.stalledUntil) break;
          log(`${node.id} stall until ${f.until}`);
          node.stalledUntil = t0 + f.until;
          node.cancelTick?.();
          node.cancelTick = null;
          const stalledCore = node.core;
          clock.at(t0 + f.until, () => {
            if (!node.core || node.core !== stalledCore) return;
            // As Node's event loop: the timer phase (our tick) runs first, then the queued I/O.
            apply(node, node.core.tick(clock.now()));
            const backlog = node.backlog;
            node.backlog = [];
            for (const d of backlog) if (node.core) apply(node, node.core.receive(clock.now(), d.network, d.bytes));
            if (node.core) scheduleTick(node, s.timing.tickMs);
          });
          break;
        }
        case "linkDown":
          log(`${node.id} link down on network ${f.network}`);
          for (let o = 0; o < s.nodes; o++) {
            if (o === f.node) continue;
            links(f.node, o, f.network).blocked = true;
            links(o, f.node, f.network).blocked = true;
          }
          clock.at(t0 + f.until, () => {
            for (let o = 0; o < s.nodes; o++) {
              if (o === f.node) continue;
              links(f.node, o, f.network).blocked = false;
              links(o, f.node, f.network).blocked = false;
            }
          });
          break;
        case "partition":
          log(`partition [${f.a.map((i) => ids[i]).join(",")}] ${f.oneWay ? "->" : "<->"} [${f.b.map((i) => ids[i]).join(",")}] on networks ${f.networks.join(",")}`);
          for (const a of f.a)
            for (const b of f.b)
              for (const n of f.networks) {
                links(a, b, n).blocked = true;
                if (!f.oneWay) links(b, a, n).blocked = true;
              }
          clock.at(t0 + f.until, () => {
            for (const a of f.a)
              for (const b of f.b)
                for (const n of f.networks) {
                  links(a, b, n).blocked = false;
                  links(b, a, n).blocked = false;
                }
          });
          break;
        case "loss":
          links(f.from, f.to, f.network).loss = f.rate;
          clock.at(t0 + f.until, () => (links(f.from, f.to, f.network).loss = 0));
          break;
      }
    });
  }
  clock.at(t0 + s.chaosMs, () => {
    log("faults stop");
    net.healAll();
    for (const i of s.restartAtEnd) {
      const node = nodes[i] as SimNode;
      if (!node.core) startNode(node);
    }
  });

  // ---- adversary: replays and forgeries at random moments, each checked to change nothing
  if (s.adversary) {
    const attack = () => {
      const victims = nodes.filter((n) => n.core && clock.now() >= n.stalledUntil);
      if (victims.length > 0 && net.captured.length > 0) {
        const victim = rng.pick(victims);
        const core = victim.core as MembershipCore;
        const cap = rng.pick(net.captured);
        let bytes = cap.bytes;
        let network = cap.network;
        const kind = rng.int(0, 4);
        if (kind === 1) {
          bytes = bytes.slice();
          const i = rng.int(0, bytes.length - 1);
          bytes[i] = (bytes[i] as number) ^ (1 << rng.int(0, 7));
        } else if (kind === 2) {
          bytes = bytes.slice();
          bytes.set(wrongMac(Uint8Array.from([...bytes.subarray(0, 3), ...bytes.subarray(35)])), 3);
        } else if (kind === 3) {
          network = rng.int(0, s.networks - 1);
        } else if (kind === 4) {
          bytes = Uint8Array.from({ length: rng.int(0, 80) }, () => rng.int(0, 255));
        }
        // A replay to a node that restarted since the capture is not a replay for it (it never saw that
        // datagram): legit echo bookkeeping may advance, but nothing visible may change.
        const before = core.stateDigest();
        const effects = core.receive(clock.now(), network, bytes);
        adversarial++;
        const after = core.stateDigest();
        if (effects.length > 0 || before !== after)
          violations.push({ seed: s.seed, at: clock.now() - t0, invariant: "adversary", detail: `datagram (attack kind ${kind}) from ${cap.from} to ${cap.to} replayed to ${victim.id} on network ${network} changed state or produced ${effects.length} effect(s)` });
      }
      if (clock.now() - t0 < end) clock.setTimer(rng.int(5, 120), attack);
    };
    clock.setTimer(rng.int(100, 300), attack);
  }

  for (const node of nodes) startNode(node);

  // ---- run, then check convergence
  let convergedAt: number | null = null;
  const checkConverged = (): boolean => {
    const running = nodes.filter((n) => n.core);
    const expect = running.map((n) => n.id).sort().join(",");
    const first = running[0]?.core;
    if (!first) return true;
    return running.every((n) => {
      const c = n.core as MembershipCore;
      return c.isAgreed && c.view.members.map((m) => m.id).join(",") === expect && c.view.epoch === first.view.epoch && c.view.hash === first.view.hash;
    });
  };
  const step = 10;
  clock.runUntil(t0 + s.chaosMs);
  for (let t = t0 + s.chaosMs; t <= t0 + end; t += step) {
    clock.runUntil(t);
    if (checkConverged()) {
      if (convergedAt === null) convergedAt = t;
    } else {
      convergedAt = null;
    }
  }
  if (convergedAt === null) {
    const views = nodes.filter((n) => n.core).map((n) => `${n.id}: e${n.core?.view.epoch} [${n.core?.view.members.map((m) => m.id).join(",")}] agreed=${n.core?.isAgreed}`);
    violations.push({ seed: s.seed, at: end, invariant: "convergence", detail: `no agreement ${boundMs} ms after faults stopped: ${views.join("; ")}` });
  } else {
    // Stability: the agreed view must hold with no further change for another two loss timeouts.
    const stable = clock.now() + 2 * s.timing.lossTimeoutMs;
    const snapshot = nodes.map((n) => n.core?.view.hash ?? "-").join("|");
    clock.runUntil(stable);
    if (nodes.map((n) => n.core?.view.hash ?? "-").join("|") !== snapshot || !checkConverged())
      violations.push({ seed: s.seed, at: stable - t0, invariant: "convergence", detail: "agreed view changed again with no fault" });
  }
  return {
    schedule: s,
    violations,
    convergedAfterMs: convergedAt === null ? null : convergedAt - (t0 + s.chaosMs),
    boundMs,
    events,
    delivered: net.delivered,
    adversarial,
    trace,
  };
}
