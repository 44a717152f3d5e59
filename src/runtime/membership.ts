import { EventEmitter } from "eventemitter3";
import { validateMembershipOptions, type MembershipSettings } from "../core/membership/config.js";
import { MembershipCore, type MembershipEffect, type MembershipEvent, type View } from "../core/membership/membership.js";
import type { DropReason } from "../core/membership/wire.js";
import { systemClock, type Clock } from "./clock.js";
import { hmacSha256, parseKey } from "./crypto.js";
import { UdpTransport, type Transport } from "./transport.js";
import { iterate } from "./iterate.js";

/** Default UDP port of the heartbeat protocol on every heartbeat network. */
export const DEFAULT_HEARTBEAT_PORT = 4844;

/** Options of {@link Membership}: the decoded membership options plus the secrets and ports. */
export interface MembershipOptions {
  clusterId: string;
  nodeId: string;
  nodes: { id: string; addresses: string[]; weight?: number }[];
  /** "lan" (default), "wan" or "slow"; see the presets' docs for each timeout's formula. */
  preset?: "lan" | "wan" | "slow";
  timing?: Partial<MembershipSettings["timing"]>;
  /** Cluster key: base64 text from `holdfast keygen` or raw bytes, at least 32 bytes. Never logged. */
  key: string | Uint8Array;
  /** UDP port on every heartbeat network. Default {@link DEFAULT_HEARTBEAT_PORT}. */
  port?: number;
  /**
   * Must grow at each start of this node. Default: the wall-clock time in ms at construction, which goes back
   * when the clock steps back across a restart; pass `nextIncarnation(stateDir)` (./incarnation.ts) instead,
   * monotonic across restarts and clock steps.
   */
  incarnation?: number;
  clock?: Clock;
  transport?: Transport;
}

type Of<T extends MembershipEvent["type"]> = Extract<MembershipEvent, { type: T }>;

/** Typed events of {@link Membership}; listeners of one instance never run concurrently. */
export interface MembershipEvents {
  nodeUp: [Of<"nodeUp">];
  nodeDown: [Of<"nodeDown">];
  viewChange: [Of<"viewChange">];
  networkDown: [Of<"networkDown">];
  networkUp: [Of<"networkUp">];
  peerMeta: [Of<"peerMeta">];
  localStall: [Of<"localStall">];
  /** A peer's lower incarnation was accepted again after it kept proving live two-way contact (see the core). */
  incarnationRecovered: [Of<"incarnationRecovered">];
  /** A datagram was dropped (forged, malformed, replayed, ...); see `counters` for totals. */
  dropped: [{ type: "dropped"; at: number; reason: DropReason; network: number; from: string }];
  /** Every event above, in order, as one stream. */
  event: [MembershipEvent];
}

/**
 * Cluster membership: who is alive, over one or more heartbeat networks, with an agreed view.
 * The protocol itself is the pure {@link MembershipCore}; this class carries its effects out with a
 * {@link Transport} (UDP by default) and a {@link Clock} (real time by default).
 *
 * ```ts
 * const m = new Membership({ clusterId: "shop", nodeId: "a", key, nodes: [
 *   { id: "a", addresses: ["198.18.0.10"] }, { id: "b", addresses: ["198.18.0.11"] }] });
 * m.on("nodeDown", (e) => console.log(e.node, e.reason));
 * await m.start();
 * ```
 */
export class Membership extends EventEmitter<MembershipEvents> {
  readonly settings: MembershipSettings;
  readonly core: MembershipCore;
  readonly port: number;
  private readonly clock: Clock;
  private readonly transport: Transport;
  private cancelTick: (() => void) | null = null;
  private running = false;

  constructor(options: MembershipOptions) {
    super();
    const { key, port, incarnation, clock, transport, ...rest } = options;
    this.settings = validateMembershipOptions(rest);
    const k = parseKey(key);
    this.port = port ?? DEFAULT_HEARTBEAT_PORT;
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) throw new RangeError(`port must be 1..65535, got ${String(port)}`);
    this.clock = clock ?? systemClock;
    this.transport = transport ?? new UdpTransport();
    this.core = new MembershipCore(this.settings, incarnation ?? Date.now(), hmacSha256(k));
  }

  get view(): View {
    return this.core.view;
  }
  get agreed(): boolean {
    return this.core.isAgreed;
  }
  get counters() {
    return this.core.counters;
  }
  get nodeId(): string {
    return this.settings.nodeId;
  }

  /** Binds one socket per heartbeat network and starts the heartbeats. */
  async start(): Promise<void> {
    if (this.running) return;
    const self = this.settings.nodes.find((n) => n.id === this.settings.nodeId);
    if (!self) throw new Error("unreachable: validated options contain this node");
    for (let n = 0; n < this.settings.networks; n++) {
      const network = n;
      await this.transport.bind(network, self.addresses[network] as string, this.port, (bytes, from) => this.onDatagram(network, bytes, from));
    }
    this.running = true;
    this.apply(this.core.start(this.clock.now()));
    this.scheduleTick();
  }

  /** Leaves gracefully (peers see `left` at once, not a failure), then closes the sockets. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.cancelTick?.();
    this.cancelTick = null;
    this.apply(this.core.leave(this.clock.now()));
    await this.transport.close(); // sends the leave datagrams first
  }

  /** Publishes this node's module metadata (small JSON) to every peer at once. */
  setMeta(meta: unknown): void {
    this.apply(this.core.setMeta(this.clock.now(), meta));
  }

  /** Smoothed heartbeat round-trip time to a peer, per heartbeat network, ms (NaN until measured). */
  heartbeatRtt(nodeId: string): number[] {
    return this.core.heartbeatRtt(nodeId);
  }

  /** How long ago anything arrived from a peer, ms (Infinity if never heard). */
  peerSilenceMs(nodeId: string): number {
    return this.core.peerSilenceMs(nodeId, this.clock.now());
  }

  /** Latest metadata a peer published (undefined if never heard). */
  peerMeta(nodeId: string): unknown {
    return this.core.peerMeta(nodeId);
  }

  /** All events as an async iterator (buffered from the moment of the call). */
  events(signal?: AbortSignal): AsyncGenerator<MembershipEvent> {
    return iterate<MembershipEvent>((fn) => {
      this.on("event", fn);
      return () => this.off("event", fn);
    }, signal);
  }

  private scheduleTick(): void {
    this.cancelTick = this.clock.setTimer(this.settings.timing.tickMs, () => {
      if (!this.running) return;
      this.apply(this.core.tick(this.clock.now()));
      this.scheduleTick();
    });
  }

  private onDatagram(network: number, bytes: Uint8Array, from: string): void {
    if (!this.running) return;
    const before = { ...this.core.counters.dropped };
    const effects = this.core.receive(this.clock.now(), network, bytes);
    for (const [reason, n] of Object.entries(this.core.counters.dropped) as [DropReason, number][]) {
      if (n !== before[reason]) this.emit("dropped", { type: "dropped", at: this.clock.now(), reason, network, from });
    }
    this.apply(effects);
  }

  private apply(effects: MembershipEffect[]): void {
    for (const e of effects) {
      if (e.type === "send") {
        const peer = this.settings.nodes.find((n) => n.id === e.to);
        const addr = peer?.addresses[e.network];
        if (addr) this.transport.send(e.network, addr, this.port, e.bytes);
      }
    }
    for (const e of effects) {
      if (e.type !== "event") continue;
      const ev = e.event;
      (this.emit as (name: string, arg: unknown) => boolean)(ev.type, ev);
      this.emit("event", ev);
    }
  }
}
