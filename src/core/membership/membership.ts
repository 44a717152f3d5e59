import type { MembershipSettings } from "./config.js";
import { decodeHeartbeat, encodeHeartbeatFast, MAX_DATAGRAM_BYTES, type DropReason, type Heartbeat, type MacFn } from "./wire.js";

/** A member of an agreed view. */
export interface ViewMember {
  readonly id: string;
  readonly incarnation: number;
  /** Farm weight, as advertised by the member itself. */
  readonly weight: number;
}

/** The set of nodes this node considers alive and in two-way contact (itself included), with an epoch. */
export interface View {
  /** Increases at every membership change; connected nodes converge to the same epoch. */
  readonly epoch: number;
  /** Sorted by id. */
  readonly members: readonly ViewMember[];
  /** Short hash of the members (ids, incarnations, weights). */
  readonly hash: string;
}

/** Events of the membership protocol. Every change carries a human-readable reason. */
export type MembershipEvent =
  | { readonly type: "nodeUp"; readonly at: number; readonly node: string; readonly incarnation: number; readonly reason: string }
  | { readonly type: "nodeDown"; readonly at: number; readonly node: string; readonly reason: string; readonly cause: "silence" | "oneWay" | "left" | "restarted" }
  | { readonly type: "viewChange"; readonly at: number; readonly view: View; readonly agreed: boolean; readonly reason: string }
  | { readonly type: "networkDown"; readonly at: number; readonly node: string; readonly network: number; readonly reason: string }
  | { readonly type: "networkUp"; readonly at: number; readonly node: string; readonly network: number; readonly reason: string }
  | { readonly type: "peerMeta"; readonly at: number; readonly node: string; readonly meta: unknown }
  | { readonly type: "localStall"; readonly at: number; readonly gapMs: number; readonly localHealth: number; readonly reason: string }
  /**
   * A peer kept proving live two-way contact under an incarnation lower than the one recorded (a forged
   * heartbeat, or a restart after its clock stepped back): the lower one is its incarnation again.
   */
  | { readonly type: "incarnationRecovered"; readonly at: number; readonly node: string; readonly from: number; readonly to: number; readonly reason: string };

/**
 * Effects the driver carries out, in array order: `send` datagrams (best effort, UDP), then deliver `event`s
 * to listeners. Sends and events of one call never depend on each other's outcome.
 */
export type MembershipEffect =
  | { readonly type: "send"; readonly to: string; readonly network: number; readonly bytes: Uint8Array }
  | { readonly type: "event"; readonly event: MembershipEvent };

export type MembershipCounters = {
  sent: number;
  received: number;
  accepted: number;
  dropped: Record<DropReason, number>;
};

interface Peer {
  readonly id: string;
  readonly index: number;
  incarnation: number;
  /** When (our clock) `incarnation` was recorded: only our heartbeats sent after it can vouch for a lower one. */
  incarnationAt: number;
  /** A lower incarnation proving two-way contact now, and its progress towards replacing `incarnation`. */
  lower: LowerIncarnation | undefined;
  up: boolean;
  /** Newest sequence number accepted from this peer, per network (replay filter). */
  lastSeq: number[];
  /** When (our clock) the newest sequence number of each network was received: the echo's hold time. */
  lastSeqAt: number[];
  /** Heartbeat round-trip time per network, ms (EWMA, 1/8 as TCP's SRTT); NaN until measured. */
  rtt: number[];
  /** Newest sequence number accepted on any network (state updates). */
  lastSeqAny: number;
  /** Send time (our clock) of our newest heartbeat this peer echoed, per network: two-way proof. */
  proof: number[];
  /** Per network as last reported (networkDown/networkUp); all true at join. */
  netUp: boolean[];
  /** When the peer came up: a network that never proved anything is reported down only a timeout later. */
  upSince: number;
  lastRecvAt: number;
  weight: number;
  viewEpoch: number;
  viewHash: string;
  metaJson: string;
}

interface LowerIncarnation {
  readonly incarnation: number;
  /** Newest sequence number of the sender and newest echo of ours counted: each proof must be new on both. */
  lastSeq: number;
  lastEcho: number;
  proofs: number;
}

const NEVER = Number.NEGATIVE_INFINITY;

/**
 * Heartbeats from a lower incarnation, each echoing a distinct fresh heartbeat of ours, that make it the peer's
 * incarnation again. 3 = three of our rounds (about 3 x pulseMs on a working link): a forged or clock-stepped
 * incarnation locks a live node out for about that long, not until it restarts.
 */
export const LOWER_INCARNATION_PROOFS = 3;

/**
 * The membership protocol as a pure state machine (no I/O, no clock, no randomness).
 *
 * Inputs: `start(now)`, `tick(now)` every `timing.tickMs`, `receive(now, network, bytes)` for each datagram,
 * `setMeta(now, meta)`, `leave(now)`. Outputs: {@link MembershipEffect}s.
 *
 * Protocol (heartbeats with echo, in the spirit of SWIM's direct probes, Das et al. 2002, and Lifeguard's
 * local health, Dadgar et al. 2018): every `pulseMs` each node sends each peer, on each network, a signed
 * heartbeat echoing the newest sequence number it heard from that peer on that network. An echo of one of our
 * own recent heartbeats proves two-way contact at the time we sent it; a peer with no such proof on any network
 * for the loss timeout is down. Replays (old sequence numbers, another recipient or network) prove nothing
 * and are dropped; so are forged datagrams (bad MAC). A one-way cut is detected on both sides: one side stops
 * hearing, the other stops being echoed.
 *
 * View agreement: the view is this node plus every peer that is up. On a change the epoch becomes
 * 1 + the largest epoch known among the members; a node adopts a larger epoch advertised for the same
 * membership. The view is *agreed* when every member advertises the same membership hash.
 *
 * Incarnations: a heartbeat with a larger incarnation than recorded is a restart (the SWIM/Lifeguard rule: the
 * larger incarnation supersedes); smaller ones are stale and dropped. That rule alone lets one forged heartbeat
 * with a huge incarnation (or a restart after the node's clock stepped back, with wall-clock incarnations) lock
 * a live node out until it restarts. So a lower incarnation is accepted again after
 * {@link LOWER_INCARNATION_PROOFS} authenticated heartbeats that each echo a distinct heartbeat of ours sent
 * *after* we recorded the higher incarnation and within the loss timeout: proof that the sender is alive and
 * talks to us now. A replay of a dead predecessor's heartbeats cannot do that (it died before its successor's
 * first heartbeat reached us, so it never saw our later sequence numbers); a fresh proof under the recorded
 * incarnation cancels the count.
 */
export class MembershipCore {
  readonly settings: MembershipSettings;
  readonly incarnation: number;
  private readonly mac: MacFn;
  private readonly peers = new Map<string, Peer>();
  private readonly sentAt = new Map<number, number>();
  private seq = 0;
  private lastSendAt = NEVER;
  private lastTick = NEVER;
  private graceUntil = NEVER;
  private localHealth = 1;
  private healthChangedAt = 0;
  private started = false;
  private stopped = false;
  private weight: number;
  private metaJson = "null";
  private meta: unknown = null;
  private currentView: View;
  private agreed = true;
  /** Set when something the view is made of (who is up, incarnations, weights) may have changed. */
  private viewDirty = false;
  readonly counters: MembershipCounters = {
    sent: 0,
    received: 0,
    accepted: 0,
    dropped: {
      tooLarge: 0,
      malformed: 0,
      badMac: 0,
      wrongCluster: 0,
      wrongRecipient: 0,
      wrongNetwork: 0,
      unknownSender: 0,
      staleIncarnation: 0,
      replay: 0,
    },
  };

  /**
   * @param incarnation must grow at every start of this node (e.g. a persisted counter or start time in ms),
   *   so that peers tell a restart from a replay.
   * @param mac keyed MAC over datagrams (HMAC-SHA256 with the cluster key; see `hmacSha256`).
   */
  constructor(settings: MembershipSettings, incarnation: number, mac: MacFn) {
    this.settings = settings;
    this.incarnation = incarnation;
    this.mac = mac;
    const self = settings.nodes.find((n) => n.id === settings.nodeId);
    this.weight = self?.weight ?? 1;
    settings.nodes.forEach((n, index) => {
      if (n.id === settings.nodeId) return;
      const nets = settings.networks;
      this.peers.set(n.id, {
        id: n.id,
        index,
        incarnation: 0,
        incarnationAt: NEVER,
        lower: undefined,
        up: false,
        lastSeq: new Array<number>(nets).fill(0),
        lastSeqAt: new Array<number>(nets).fill(NEVER),
        rtt: new Array<number>(nets).fill(Number.NaN),
        lastSeqAny: 0,
        proof: new Array<number>(nets).fill(NEVER),
        netUp: new Array<boolean>(nets).fill(false),
        upSince: NEVER,
        lastRecvAt: NEVER,
        weight: n.weight,
        viewEpoch: 0,
        viewHash: "",
        metaJson: "null",
      });
    });
    this.currentView = this.computeView(0);
  }

  get view(): View {
    return this.currentView;
  }
  get isAgreed(): boolean {
    return this.agreed;
  }
  get localHealthMultiplier(): number {
    return this.localHealth;
  }
  /** Effective loss timeout in ms (lossTimeoutMs × local health). */
  get effectiveTimeoutMs(): number {
    return this.settings.timing.lossTimeoutMs * this.localHealth;
  }
  /** Ids of peers currently up. */
  upPeers(): string[] {
    return [...this.peers.values()].filter((p) => p.up).map((p) => p.id);
  }
  /**
   * Heartbeat round-trip time to a peer per network, ms (smoothed; NaN until measured): our send time of the
   * echoed heartbeat to its arrival back, minus the time the peer held it before replying.
   */
  heartbeatRtt(id: string): number[] {
    return [...(this.peers.get(id)?.rtt ?? [])];
  }

  /** How long ago anything authenticated arrived from a peer, ms (Infinity if never heard, or not a configured node). */
  peerSilenceMs(id: string, now: number): number {
    const p = this.peers.get(id);
    return p === undefined || p.lastRecvAt === NEVER ? Number.POSITIVE_INFINITY : now - p.lastRecvAt;
  }

  /** Latest metadata advertised by a peer (undefined if never heard). */
  peerMeta(id: string): unknown {
    const p = this.peers.get(id);
    return p && p.metaJson !== "null" ? JSON.parse(p.metaJson) : undefined;
  }
  get localMeta(): unknown {
    return this.meta;
  }

  /** Starts the protocol: sends the first round of heartbeats. */
  start(now: number): MembershipEffect[] {
    this.started = true;
    this.lastTick = now;
    this.healthChangedAt = now;
    const out: MembershipEffect[] = [];
    this.sendRound(now, "hb", out);
    return out;
  }

  /** Sets this node's module metadata (JSON) and sends it at once. Throws RangeError if too large. */
  setMeta(now: number, meta: unknown): MembershipEffect[] {
    const json = JSON.stringify(meta ?? null);
    if (json.length > MAX_DATAGRAM_BYTES / 2) throw new RangeError(`membership metadata too large: ${json.length} bytes (max ${MAX_DATAGRAM_BYTES / 2})`);
    if (json === this.metaJson) return [];
    this.metaJson = json;
    this.meta = JSON.parse(json);
    const out: MembershipEffect[] = [];
    if (this.started && !this.stopped) this.sendRound(now, "hb", out);
    return out;
  }

  /** Changes this node's farm weight (advertised with the next heartbeat; the view changes everywhere). */
  setWeight(now: number, weight: number): MembershipEffect[] {
    if (!(weight >= 0 && weight <= 1000)) throw new RangeError(`weight must be in 0..1000, got ${weight}`);
    this.weight = weight;
    this.viewDirty = true;
    const out: MembershipEffect[] = [];
    this.reconcileView(now, `own weight changed to ${weight}`, out);
    if (this.started && !this.stopped) this.sendRound(now, "hb", out);
    return out;
  }

  /** Graceful leave: tells every peer on every network, then stops sending. */
  leave(now: number): MembershipEffect[] {
    const out: MembershipEffect[] = [];
    if (this.started && !this.stopped) this.sendRound(now, "leave", out);
    this.stopped = true;
    return out;
  }

  tick(now: number): MembershipEffect[] {
    const out: MembershipEffect[] = [];
    if (!this.started || this.stopped) return out;
    const t = this.settings.timing;
    const gap = now - this.lastTick;
    this.lastTick = now;
    if (gap > t.stallMs) {
      // Our own silence (stall): nobody is blamed until a full timeout has passed since we resumed.
      this.graceUntil = now + t.lossTimeoutMs * this.localHealth;
      this.bumpHealth(now);
      out.push(ev({ type: "localStall", at: now, gapMs: gap, localHealth: this.localHealth, reason: `own event loop stalled ${Math.round(gap)} ms (> ${t.stallMs} ms): peers get ${Math.round(this.graceUntil - now)} ms of grace` }));
    } else if (gap > t.tickMs + t.stallMs / 2) {
      this.bumpHealth(now);
    } else if (this.localHealth > 1 && now - this.healthChangedAt >= t.healthDecayMs) {
      this.localHealth--;
      this.healthChangedAt = now;
    }

    const timeout = this.effectiveTimeoutMs;
    for (const p of this.peers.values()) {
      if (!p.up) continue;
      const fresh = p.proof.map((pr) => now - pr <= timeout);
      if (fresh.some((f) => f)) {
        const settled = now - p.upSince > timeout;
        fresh.forEach((f, n) => {
          if (f === p.netUp[n] || (!f && !settled)) return;
          p.netUp[n] = f;
          out.push(ev(f
            ? { type: "networkUp", at: now, node: p.id, network: n, reason: `heartbeats from ${p.id} on network ${n} again` }
            : { type: "networkDown", at: now, node: p.id, network: n, reason: `no heartbeat echoed by ${p.id} on network ${n} for over ${timeout} ms (other networks still up)` }));
        });
        continue;
      }
      if (now < this.graceUntil) continue;
      const silentMs = Math.round(now - Math.max(...p.proof));
      const recvAgo = now - p.lastRecvAt;
      const oneWay = recvAgo <= 2 * t.pulseMs + t.tickMs; // its heartbeats still arrive: it is our echo that is missing
      this.markDown(p, now, oneWay ? "oneWay" : "silence",
        oneWay
          ? `${p.id}'s heartbeats arrive but it has not heard us for ${silentMs} ms (one-way loss, timeout ${timeout} ms)`
          : `${p.id} silent on all ${this.settings.networks} heartbeat network(s) for ${silentMs} ms (timeout ${timeout} ms)`,
        out);
    }
    if (now - this.lastSendAt >= t.pulseMs) this.sendRound(now, "hb", out);
    this.reconcileView(now, "tick", out);
    return out;
  }

  receive(now: number, network: number, bytes: Uint8Array): MembershipEffect[] {
    const out: MembershipEffect[] = [];
    this.counters.received++;
    if (!this.started || this.stopped) return out;
    const d = decodeHeartbeat(bytes, this.mac);
    if (!d.ok) return this.drop(d.reason, out);
    const hb = d.hb;
    if (hb.c !== this.settings.clusterId) return this.drop("wrongCluster", out);
    if (hb.to !== this.settings.nodeId) return this.drop("wrongRecipient", out);
    if (hb.n !== network || network >= this.settings.networks) return this.drop("wrongNetwork", out);
    const p = this.peers.get(hb.f);
    if (!p) return this.drop("unknownSender", out);
    const recovered = hb.i < p.incarnation && this.lowerIncarnationProven(now, hb, p);
    if (hb.i < p.incarnation && !recovered) return this.drop("staleIncarnation", out);
    if (hb.i === p.incarnation && hb.s <= (p.lastSeq[network] ?? 0)) return this.drop("replay", out);
    this.counters.accepted++;

    // Echo bookkeeping (what we will echo back) follows any authenticated, non-replayed datagram: it is how a
    // peer that has not heard us yet gets its first echo. Everything else needs a fresh two-way proof: the
    // datagram must echo one of our own recent heartbeats, which no replay can do.
    const restarted = hb.i !== p.incarnation && p.up;
    if (hb.i !== p.incarnation) {
      if (recovered) {
        const why = `${p.id} proved two-way contact ${LOWER_INCARNATION_PROOFS} times under incarnation ${hb.i}, lower than the recorded ${p.incarnation} (forged heartbeat or clock stepped back): ${hb.i} is its incarnation again`;
        if (p.up) this.markDown(p, now, "restarted", why, out);
        out.push(ev({ type: "incarnationRecovered", at: now, node: p.id, from: p.incarnation, to: hb.i, reason: why }));
      } else if (p.up) this.markDown(p, now, "restarted", `${p.id} restarted (incarnation ${p.incarnation} -> ${hb.i})`, out);
      p.incarnation = hb.i;
      p.incarnationAt = now;
      p.lower = undefined;
      p.lastSeq.fill(0);
      p.lastSeqAt.fill(NEVER);
      p.lastSeqAny = 0;
      p.proof.fill(NEVER);
      p.netUp.fill(false);
    }
    p.lastSeq[network] = hb.s;
    p.lastSeqAt[network] = now;
    p.lastRecvAt = now;
    const proofTime = hb.ai === this.incarnation ? this.sentAt.get(hb.a) : undefined;
    if (proofTime === undefined) {
      if (restarted) this.reconcileView(now, `${p.id} restarted`, out);
      return out;
    }
    if (proofTime > (p.proof[network] ?? NEVER)) p.proof[network] = proofTime;
    p.lower = undefined; // the recorded incarnation is alive: a lower one's count starts over
    if (hb.ah !== undefined) {
      const sample = now - proofTime - hb.ah;
      if (sample >= 0 && sample <= this.settings.timing.lossTimeoutMs) {
        const prev = p.rtt[network] ?? Number.NaN;
        p.rtt[network] = Number.isNaN(prev) ? sample : prev + (sample - prev) / 8;
      }
    }
    if (hb.s > p.lastSeqAny) {
      p.lastSeqAny = hb.s;
      if (p.weight !== hb.w) this.viewDirty = true;
      p.weight = hb.w;
      p.viewEpoch = hb.ve;
      p.viewHash = hb.vh;
      const mj = JSON.stringify(hb.m ?? null);
      if (mj !== p.metaJson) {
        p.metaJson = mj;
        out.push(ev({ type: "peerMeta", at: now, node: p.id, meta: hb.m ?? null }));
      }
    }
    if (hb.k === "leave") {
      // In-flight heartbeats sent before the leave carry smaller sequence numbers: make them replays everywhere.
      p.lastSeq.fill(hb.s);
      p.proof.fill(NEVER);
      if (p.up) this.markDown(p, now, "left", `${p.id} left the cluster`, out);
      this.reconcileView(now, `${p.id} left`, out);
      return out;
    }
    const timeout = this.effectiveTimeoutMs;
    if (!p.up && p.proof.some((pr) => now - pr <= timeout)) {
      p.up = true;
      this.viewDirty = true;
      p.upSince = now;
      p.netUp.fill(true);
      out.push(ev({ type: "nodeUp", at: now, node: p.id, incarnation: p.incarnation, reason: `two-way heartbeats with ${p.id} (incarnation ${p.incarnation}) on network ${network}` }));
    } else if (p.up && !p.netUp[network] && now - (p.proof[network] ?? NEVER) <= timeout) {
      p.netUp[network] = true;
      out.push(ev({ type: "networkUp", at: now, node: p.id, network, reason: `heartbeats from ${p.id} on network ${network} again` }));
    }
    this.reconcileView(now, `heartbeat from ${p.id}`, out);
    return out;
  }

  /**
   * Counts `hb` (authenticated, incarnation lower than recorded) towards that incarnation's recovery; true when
   * it is the {@link LOWER_INCARNATION_PROOFS}th proof. A proof echoes our incarnation and a heartbeat of ours
   * sent after the recorded incarnation was adopted and within the loss timeout, with a newer sequence number
   * and a newer echo than the previous proof. No state changes unless it is such a proof.
   */
  private lowerIncarnationProven(now: number, hb: Heartbeat, p: Peer): boolean {
    if (hb.k !== "hb" || hb.ai !== this.incarnation) return false;
    const sent = this.sentAt.get(hb.a);
    if (sent === undefined || sent <= p.incarnationAt || now - sent > this.effectiveTimeoutMs) return false;
    let c = p.lower;
    if (c === undefined || c.incarnation !== hb.i) c = { incarnation: hb.i, lastSeq: 0, lastEcho: 0, proofs: 0 };
    if (hb.s <= c.lastSeq || hb.a <= c.lastEcho) return false;
    c.lastSeq = hb.s;
    c.lastEcho = hb.a;
    c.proofs++;
    p.lower = c;
    return c.proofs >= LOWER_INCARNATION_PROOFS;
  }

  private drop(reason: DropReason, out: MembershipEffect[]): MembershipEffect[] {
    this.counters.dropped[reason]++;
    return out;
  }

  private bumpHealth(now: number): void {
    this.localHealth = Math.min(this.settings.timing.maxLocalHealth, this.localHealth + 1);
    this.healthChangedAt = now;
  }

  private markDown(p: Peer, now: number, cause: "silence" | "oneWay" | "left" | "restarted", reason: string, out: MembershipEffect[]): void {
    p.up = false;
    this.viewDirty = true;
    p.netUp.fill(false);
    out.push(ev({ type: "nodeDown", at: now, node: p.id, reason, cause }));
  }

  private sendRound(now: number, kind: "hb" | "leave", out: MembershipEffect[]): void {
    const s = ++this.seq;
    this.sentAt.set(s, now);
    this.lastSendAt = now;
    const horizon = now - this.settings.timing.lossTimeoutMs * this.settings.timing.maxLocalHealth - this.settings.timing.pulseMs;
    for (const [k, at] of this.sentAt) {
      if (at >= horizon) break; // Map iterates in insertion order = increasing time
      this.sentAt.delete(k);
    }
    const v = this.currentView;
    const shared = JSON.stringify({ k: kind, c: this.settings.clusterId, f: this.settings.nodeId, i: this.incarnation, s, w: this.weight, ve: v.epoch, vh: v.hash, m: this.meta });
    for (const p of this.peers.values()) {
      for (let n = 0; n < this.settings.networks; n++) {
        this.counters.sent++;
        const heldAt = p.lastSeqAt[n] ?? NEVER;
        const ah = heldAt === NEVER ? undefined : Math.max(0, Math.round(now - heldAt));
        const bytes = encodeHeartbeatFast({ to: p.id, n, a: p.lastSeq[n] ?? 0, ai: p.incarnation, ...(ah !== undefined ? { ah } : {}) }, shared, this.mac);
        out.push({ type: "send", to: p.id, network: n, bytes });
      }
    }
  }

  private computeView(epoch: number): View {
    const members: ViewMember[] = [{ id: this.settings.nodeId, incarnation: this.incarnation, weight: this.weight }];
    for (const p of this.peers.values()) if (p.up) members.push({ id: p.id, incarnation: p.incarnation, weight: p.weight });
    members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return { epoch, members, hash: viewHash(members) };
  }

  private reconcileView(now: number, reason: string, out: MembershipEffect[]): void {
    const next = this.viewDirty ? this.computeView(this.currentView.epoch) : this.currentView;
    this.viewDirty = false;
    const members = next.members.map((m) => this.peers.get(m.id)).filter((p): p is Peer => p !== undefined);
    let changed = false;
    let why = reason;
    if (next.hash !== this.currentView.hash) {
      const maxSeen = Math.max(this.currentView.epoch, ...members.map((p) => p.viewEpoch));
      this.currentView = { ...next, epoch: maxSeen + 1 };
      changed = true;
      why = describeChange(this.currentView.members.map((m) => m.id), reason);
    } else {
      const higher = members.filter((p) => p.viewHash === next.hash && p.viewEpoch > this.currentView.epoch);
      if (higher.length > 0) {
        const top = higher.reduce((a, b) => (b.viewEpoch > a.viewEpoch ? b : a));
        this.currentView = { ...this.currentView, epoch: top.viewEpoch };
        changed = true;
        why = `epoch ${top.viewEpoch} adopted from ${top.id}`;
      }
    }
    const agreed = members.every((p) => p.viewHash === this.currentView.hash);
    if (changed || agreed !== this.agreed) {
      this.agreed = agreed;
      out.push(ev({ type: "viewChange", at: now, view: this.currentView, agreed, reason: changed ? why : agreed ? "all members agree" : "members disagree" }));
    }
  }

  /**
   * A digest of the state that decisions and users see: view, agreement, which peers are up on which
   * network, with what incarnation, weight, advertised view and metadata, and the two-way proofs.
   * (Not in it: counters, and the echo bookkeeping that any authenticated datagram may advance.)
   * Tests use it: a forged or replayed datagram must leave it unchanged.
   */
  stateDigest(): string {
    return JSON.stringify({
      v: this.currentView,
      a: this.agreed,
      p: [...this.peers.values()].map((p) => [p.id, p.up ? p.incarnation : -1, p.up, p.proof, p.netUp, p.weight, p.viewEpoch, p.viewHash, p.metaJson]),
    });
  }
}

function ev(event: MembershipEvent): MembershipEffect {
  return { type: "event", event };
}

function describeChange(ids: string[], reason: string): string {
  return `members now [${ids.join(", ")}] (${reason})`;
}

/** 64-bit FNV-1a (as two 32-bit halves) of the members, hex. Pure and stable across versions. */
export function viewHash(members: readonly ViewMember[]): string {
  const s = members.map((m) => `${m.id}@${m.incarnation}/${m.weight}`).join(",");
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x5bd1e995) >>> 0;
  }
  return h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0");
}
