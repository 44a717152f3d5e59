import type { FakeClock } from "./clock.js";
import type { Rng } from "./rng.js";

/** State of one directed link (from -> to) on one network. */
export interface LinkState {
  blocked: boolean;
  /** Probability that a datagram is lost, 0..1. */
  loss: number;
}

export interface FakeNetworkOptions {
  networks: number;
  /** One-way delay is uniform in [minDelayMs, maxDelayMs]: different delays reorder datagrams. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Probability that a datagram is delivered twice. */
  duplicate: number;
}

/**
 * A fake datagram network between named endpoints over several independent networks, on a {@link FakeClock}
 * and a seeded {@link Rng}: loss, delay, reordering, duplication and partitions, including one-way ones.
 */
export class FakeNetwork {
  readonly options: FakeNetworkOptions;
  private readonly links = new Map<string, LinkState>();
  private readonly handlers = new Map<string, (network: number, from: string, bytes: Uint8Array) => void>();
  /** Every datagram delivered, for adversaries that replay (bounded ring). */
  readonly captured: { from: string; to: string; network: number; bytes: Uint8Array }[] = [];
  captureLimit = 256;
  delivered = 0;
  lost = 0;

  constructor(
    private readonly clock: FakeClock,
    private readonly rng: Rng,
    options: FakeNetworkOptions,
  ) {
    this.options = { ...options };
  }

  attach(id: string, handler: (network: number, from: string, bytes: Uint8Array) => void): void {
    this.handlers.set(id, handler);
  }
  detach(id: string): void {
    this.handlers.delete(id);
  }

  link(from: string, to: string, network: number): LinkState {
    const k = `${from}>${to}#${network}`;
    let l = this.links.get(k);
    if (!l) {
      l = { blocked: false, loss: 0 };
      this.links.set(k, l);
    }
    return l;
  }

  /** Clears every block and loss (the "faults stop" moment). */
  healAll(): void {
    for (const l of this.links.values()) {
      l.blocked = false;
      l.loss = 0;
    }
  }

  send(from: string, to: string, network: number, bytes: Uint8Array): void {
    const l = this.link(from, to, network);
    if (l.blocked || (l.loss > 0 && this.rng.chance(l.loss))) {
      this.lost++;
      return;
    }
    const copies = this.options.duplicate > 0 && this.rng.chance(this.options.duplicate) ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      const delay = this.options.minDelayMs + this.rng.next() * (this.options.maxDelayMs - this.options.minDelayMs);
      this.clock.setTimer(delay, () => {
        // A link cut while the datagram is in flight loses it (as a cable pulled mid-transfer).
        if (this.link(from, to, network).blocked) return;
        const h = this.handlers.get(to);
        if (!h) return;
        this.delivered++;
        if (this.captured.length >= this.captureLimit) this.captured.splice(0, this.captured.length - this.captureLimit + 1);
        this.captured.push({ from, to, network, bytes });
        h(network, from, bytes);
      });
    }
  }
}
