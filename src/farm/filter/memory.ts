/**
 * In-memory filter backend: the reference decision with no kernel, for tests of code built on a
 * PacketFilter (the farm module, simulations). Feed it frames with {@link MemoryFilterBackend.deliver}.
 */
import { BUCKET_COUNT } from "../../core/buckets.js";
import type { FilterBackend, FilterBackendOptions, FilterCounters } from "./backend.js";
import { compileFilter, decide, type CompiledFilter, type FilterDecision, type PacketFlow } from "./decision.js";

export class MemoryFilterBackend implements FilterBackend {
  readonly name = "memory" as const;
  readonly #filter: CompiledFilter;
  #owned = new Uint8Array(BUCKET_COUNT);
  #contested = new Uint8Array(BUCKET_COUNT).fill(1);
  #running = false;
  readonly #accepted = new Array<number>(BUCKET_COUNT).fill(0);
  readonly #dropped = new Array<number>(BUCKET_COUNT).fill(0);
  #broadcast = 0;
  #kept = 0;
  #orphan = 0;
  #expired = 0;
  #noListener = 0;
  #leaseUntil: bigint | undefined;
  readonly #now: () => bigint;

  /**
   * `now`: the clock the lease is checked against, CLOCK_MONOTONIC ns (default `process.hrtime.bigint`,
   * the clock PacketFilter computes leases with); a fake clock for tests.
   */
  constructor(opts: Pick<FilterBackendOptions, "config"> & { now?: () => bigint }) {
    this.#filter = compileFilter(opts.config);
    this.#now = opts.now ?? (() => process.hrtime.bigint());
  }

  /** The lease's end (CLOCK_MONOTONIC ns), or undefined before the first renewal (no lease: the table holds). */
  get leaseUntil(): bigint | undefined {
    return this.#leaseUntil;
  }

  renewLease(untilNs: bigint): void {
    this.#leaseUntil = untilNs;
  }

  get running(): boolean {
    return this.#running;
  }

  /** The ownership mask currently applied (a copy). */
  get owned(): Uint8Array {
    return Uint8Array.from(this.#owned);
  }

  async start(): Promise<void> {
    this.#running = true;
  }

  /** The contested mask applied with the ownership table (a copy; every bucket when none was given). */
  get contested(): Uint8Array {
    return Uint8Array.from(this.#contested);
  }

  async setOwned(mask: Uint8Array, contested?: Uint8Array): Promise<void> {
    this.#owned = Uint8Array.from(mask, (v) => (v ? 1 : 0));
    this.#contested = contested ? Uint8Array.from(contested, (v) => (v ? 1 : 0)) : new Uint8Array(BUCKET_COUNT).fill(1);
  }

  /**
   * Decides one Ethernet frame as the kernel backends would (with an expired lease every bucket is foreign), and counts it. `hasSocket` stands for the
   * local socket lookup, `hasListener` for the listener lookup of a SYN (default: a listener exists). A stopped
   * backend passes everything (as a node without a filter would).
   */
  deliver(frame: Uint8Array, hasSocket: (flow: PacketFlow) => boolean = () => false, hasListener?: (flow: PacketFlow) => boolean): FilterDecision {
    if (!this.#running) return { verdict: "pass", kind: "not-vip" };
    const leased = this.#leaseUntil === undefined || this.#now() < this.#leaseUntil;
    const contested = this.#contested;
    const d = decide(frame, this.#filter, leased ? this.#owned : new Uint8Array(BUCKET_COUNT), hasSocket, undefined, {
      contested: (b) => contested[b] !== 0,
      ...(hasListener ? { hasListener } : {}),
    });
    if (d.kind === "broadcast") this.#broadcast++;
    if (d.kind === "bucket") {
      if (!leased && this.#owned[d.bucket]) this.#expired++;
      if (d.verdict === "pass") this.#accepted[d.bucket]!++;
      else this.#dropped[d.bucket]!++;
      if (d.reason === "kept-socket") this.#kept++;
      if (d.reason === "orphan") this.#orphan++;
      if (d.reason === "no-listener") this.#noListener++;
    }
    return d;
  }

  async counters(): Promise<FilterCounters> {
    return { accepted: [...this.#accepted], dropped: [...this.#dropped], broadcast: this.#broadcast, keptSocket: this.#kept, droppedOrphan: this.#orphan, leaseExpired: this.#expired, droppedNoListener: this.#noListener };
  }

  async stop(): Promise<void> {
    this.#running = false;
  }
}
