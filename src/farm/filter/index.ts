/**
 * PacketFilter: keeps, on this node, only the VIP packets of the buckets this node owns.
 *
 * @example
 * const filter = new PacketFilter({
 *   iface: "eth0",
 *   vips: ["198.18.0.100"],
 *   rules: [{ protocol: "tcp", port: 80, by: "address+port" }],
 * });
 * await filter.start();                    // "filter: using ebpf (...)"
 * await filter.setOwned(ownedMask(assignBuckets(members), myId));
 * ...
 * await filter.stop();
 *
 * Fail closed: the table holds only under a lease that this object renews from a timer every `leaseMs / 4`
 * (see {@link PacketFilterOptions.leaseMs}). When the process dies or freezes, the kernel stops accepting
 * new flows for this node's buckets within `leaseMs`, before the peers (which detect the loss after the
 * membership loss timeout) take them over.
 */
import * as t from "io-ts";
import { EventEmitter } from "eventemitter3";
import { BUCKET_COUNT, toMask } from "../../core/buckets.js";
import { decodeOrThrow } from "../../core/decode.js";
import { ConfigError, NotSupportedError } from "../../core/errors.js";
import { DEFAULT_LEASE_MS, type FilterBackend, type FilterBackendName, type FilterBackendOptions, type FilterCounters } from "./backend.js";
import { compileFilter, type FilterConfig } from "./decision.js";
import { EbpfBackend } from "./ebpf.js";
import { NftablesBackend } from "./nftables.js";
import { UserspaceBackend } from "./userspace.js";

export type { FilterBackend, FilterBackendName, FilterBackendOptions, FilterCounters } from "./backend.js";
export { DEFAULT_LEASE_MS } from "./backend.js";
export type { FilterConfig, FilterRule, FilterDecision, PacketFlow, DecideInputs } from "./decision.js";
export { compileFilter, decide } from "./decision.js";
export { MemoryFilterBackend } from "./memory.js";
export { EbpfBackend, FarmProgram } from "./ebpf.js";
export { NftablesBackend, nftRuleset } from "./nftables.js";
export { UserspaceBackend } from "./userspace.js";
export { craftPacket, type PacketSpec } from "./packets.js";
export { FrameSender } from "./inject.js";

/** Options of a {@link PacketFilter}. */
export interface PacketFilterOptions extends FilterConfig {
  /** The interface that receives the VIP traffic (e.g. `eth0`). */
  readonly iface: string;
  /**
   * Which implementation: `"auto"` (default) tries `ebpf`, then `nftables`, then `userspace`, and logs
   * which one it took and why; a name forces that backend (start fails with NotSupportedError when it
   * cannot run). Or a {@link FilterBackend} object (e.g. a MemoryFilterBackend in tests).
   */
  readonly backend?: "auto" | "ebpf" | "nftables" | "userspace" | FilterBackend;
  /** Kernel set-up inside this network namespace (path like `/run/netns/NAME`); for labs and tests. */
  readonly netns?: string;
  /**
   * Distinguishes the kernel objects of several filters on one host (nftables table and iptables chain
   * names, NFQUEUE number). Letters, digits, `_`. Default `"holdfast"`.
   */
  readonly instance?: string;
  /** NFQUEUE number for the userspace backend (0-65535, unique on the host). Default 0x4846 (18502). */
  readonly queueNum?: number;
  /**
   * Backends that `"auto"` must not use, e.g. `["ebpf"]` where BPF is disabled by policy. Each skip is
   * logged. Default: none.
   */
  readonly avoid?: readonly ("ebpf" | "nftables" | "userspace")[];
  /** Sink for one-line log messages (backend choice, stale state removed). Default: none. */
  readonly log?: (line: string) => void;
  /**
   * Lease on the ownership table, in ms. Default 400. `0` disables it (not recommended: a dead or frozen
   * process then leaves its last table in the kernel, and the node answers its buckets' new SYNs with RST,
   * or holds them, while the peers serve the same buckets).
   *
   * The filter renews the lease every `leaseMs / 4` from a timer in this process; the kernel (eBPF:
   * the monotonic clock against a deadline; nftables: a set element with a timeout; userspace: the queue
   * dies with the process) treats every bucket as foreign once the lease has run out. A dead process, or a
   * frozen event loop (SIGSTOP, a hung synchronous call), stops renewing: that is the point. Formula: when
   * the process dies or freezes at time F, its renewals and its heartbeats stop together; the node stops
   * accepting by `F + leaseMs` (the last renewal was at most F), while its peers take its buckets no earlier
   * than `lossTimeoutMs` after its last heartbeat, which left at `F - pulseMs` at the earliest. So choose
   * `leaseMs <= lossTimeoutMs - pulseMs - margin`: with the LAN preset (pulse 100 ms, loss 600 ms), 400 ms
   * leaves a 100 ms margin for timer jitter and the heartbeat's own delay (the farm's settle time, when
   * there is one, adds to it). The other side of the trade-off: an event loop blocked for more than
   * `leaseMs - leaseMs / 4` (300 ms) lets the lease lapse for the rest of the block (a `lease-lapsed` event
   * and a log line tell), although peers will not have taken over yet; raise `leaseMs` together with the
   * loss timeout for slower presets (WAN).
   * Integer, 0 or 20..600000.
   */
  readonly leaseMs?: number;
  /**
   * When the lease had run out (a freeze: SIGSTOP, a stopped VM, a blocked event loop), release every bucket
   * (an empty table) before renewing it, instead of bringing the old table back, and let the `lease-lapsed` event
   * tell the owner (FarmDriver.stalled) to take buckets again once it has heard its peers. Without it, the first
   * renewal after a freeze revives a stale table: the peers took this node's buckets meanwhile and hold
   * connections there, which this node would then accept (and reset) before it learns of them. Default false (the
   * table is kept; right for a filter driven by hand).
   */
  readonly releaseOnLapse?: boolean;
}

/** Events of a {@link PacketFilter}. */
export interface PacketFilterEvents {
  /** The backend that start() chose, with the reasons the earlier candidates were passed over. */
  backend: (e: { type: "backend"; name: FilterBackendName; reason: string }) => void;
  /** A new ownership table is in force. */
  owned: (e: { type: "owned"; count: number }) => void;
  /**
   * The lease is back after it had run out: for `lapsedMs` the node accepted no new flow (the event loop
   * was frozen or blocked for longer than 3/4 of leaseMs, or renewals failed). Once per lapse.
   */
  "lease-lapsed": (e: { type: "lease-lapsed"; lapsedMs: number }) => void;
}

const BACKENDS = ["ebpf", "nftables", "userspace"] as const;
const balanceBy = t.union([t.literal("address"), t.literal("address+port")]);
const OptionsCodec = t.intersection([
  t.type({
    iface: t.string,
    vips: t.array(t.string),
    rules: t.array(
      t.intersection([
        t.type({ protocol: t.union([t.literal("tcp"), t.literal("udp")]), port: t.number, by: balanceBy }),
        t.partial({ vip: t.string }),
      ]),
    ),
  }),
  t.partial({
    defaultBy: balanceBy,
    seed: t.number,
    strictTcp: t.boolean,
    dropSynWithoutListener: t.boolean,
    netns: t.string,
    instance: t.string,
    queueNum: t.number,
    avoid: t.array(t.union([t.literal("ebpf"), t.literal("nftables"), t.literal("userspace")])),
    leaseMs: t.number,
    releaseOnLapse: t.boolean,
  }),
]);

/**
 * The farm's packet filter. Calls are serialised: each method waits for the previous one to finish.
 */
export class PacketFilter extends EventEmitter<PacketFilterEvents> {
  readonly options: PacketFilterOptions;
  #backend: FilterBackend | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #leaseTimer: ReturnType<typeof setInterval> | undefined;
  #leaseUntil: bigint | undefined;
  #renewing = false;
  #renewFailing = false;

  /** Validates the options (ConfigError naming the path and value that are wrong). Touches nothing yet. */
  constructor(options: PacketFilterOptions) {
    super();
    const { backend, log: _log, ...plain } = options;
    decodeOrThrow(OptionsCodec, plain, "packet filter options");
    if (typeof backend === "string" && !BACKENDS.includes(backend as (typeof BACKENDS)[number]) && backend !== "auto") {
      throw new ConfigError("packet filter options", [{ path: "backend", value: backend, expected: `"auto", ${BACKENDS.map((b) => `"${b}"`).join(", ")} or a FilterBackend` }]);
    }
    compileFilter(options); // addresses, ports, rule VIPs (RangeError with the culprit)
    if (options.instance !== undefined && !/^[A-Za-z0-9_]{1,20}$/.test(options.instance)) {
      throw new RangeError(`instance must be 1-20 letters, digits or _: ${JSON.stringify(options.instance)}`);
    }
    const lease = options.leaseMs;
    if (lease !== undefined && !(Number.isInteger(lease) && (lease === 0 || (lease >= 20 && lease <= 600_000)))) {
      throw new ConfigError("packet filter options", [{ path: "leaseMs", value: lease, expected: "an integer number of ms: 0 (no lease) or 20..600000" }]);
    }
    this.options = options;
  }

  /** The backend in use (after start). */
  get backend(): FilterBackendName | undefined {
    return this.#backend?.name;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  #make(name: "ebpf" | "nftables" | "userspace"): FilterBackend {
    const o = this.options;
    const bo: FilterBackendOptions = { iface: o.iface, config: o, netns: o.netns, instance: o.instance, log: o.log, leaseMs: o.leaseMs ?? DEFAULT_LEASE_MS };
    if (name === "ebpf") return new EbpfBackend(bo);
    if (name === "nftables") return new NftablesBackend(bo);
    return new UserspaceBackend(bo, o.queueNum);
  }

  /**
   * Installs the filter with no bucket owned (VIP packets are dropped until {@link setOwned}); removes
   * stale state of a crashed earlier run of the same instance. With `backend: "auto"`, falls back from
   * ebpf to nftables to userspace, logging the choice and why.
   */
  start(): Promise<void> {
    return this.#serial(async () => {
      if (this.#backend) return;
      const choice = this.options.backend ?? "auto";
      const log = this.options.log ?? (() => undefined);
      if (typeof choice === "object") {
        await choice.start();
        this.#backend = choice;
        this.emit("backend", { type: "backend", name: choice.name, reason: "given by the caller" });
        await this.#startLease(choice);
        return;
      }
      const order = choice === "auto" ? (["ebpf", "nftables", "userspace"] as const) : ([choice] as const);
      const skipped: string[] = [];
      for (const name of order) {
        if (choice === "auto" && this.options.avoid?.includes(name)) {
          skipped.push(`${name}: disabled by the avoid option`);
          log(`filter: ${name} backend skipped (disabled by the avoid option)`);
          continue;
        }
        const b = this.#make(name);
        try {
          await b.start();
        } catch (err) {
          if (!(err instanceof NotSupportedError) || choice !== "auto") throw err;
          skipped.push(`${name}: ${err.message}`);
          log(`filter: ${name} backend not available on ${this.options.iface} (${err.message})`);
          continue;
        }
        this.#backend = b;
        const reason =
          choice !== "auto" ? `forced by the backend option` : skipped.length === 0 ? "first choice, available" : `fallback after ${skipped.join("; ")}`;
        log(`filter: using the ${name} backend on ${this.options.iface} (${reason})`);
        this.emit("backend", { type: "backend", name, reason });
        await this.#startLease(b);
        return;
      }
      throw new NotSupportedError("packet filter", `no backend can run on ${this.options.iface}: ${skipped.join("; ")}`);
    });
  }

  /** Grants the first lease (before start() returns), then renews it every leaseMs/4 from a timer. */
  async #startLease(backend: FilterBackend): Promise<void> {
    const ms = this.options.leaseMs ?? DEFAULT_LEASE_MS;
    const log = this.options.log ?? (() => undefined);
    if (ms === 0) {
      log(`filter: no lease (leaseMs 0): if this process dies, its last ownership table stays in force`);
      return;
    }
    if (!backend.renewLease) {
      log(`filter: the ${backend.name} backend has no lease: if this process dies, its last ownership table stays in force`);
      return;
    }
    this.#leaseUntil = undefined;
    this.#renewFailing = false;
    const until = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
    try {
      await backend.renewLease(until); // the first lease must be granted, or start fails
    } catch (err) {
      this.#backend = undefined;
      await backend.stop().catch(() => undefined);
      throw err;
    }
    this.#leaseUntil = until;
    // Not serialised with setOwned and counters: a renewal touches only the lease (a deadline, or one set
    // element), never the ownership table, so the two commute; and a renewal must not wait behind a slow
    // counters() read. Unref'd: the lease is about this process being alive, not a reason to keep it alive.
    this.#leaseTimer = setInterval(() => void this.#renew(backend, ms), Math.max(1, Math.floor(ms / 4)));
    this.#leaseTimer.unref();
  }

  async #renew(backend: FilterBackend, ms: number): Promise<void> {
    if (this.#renewing || this.#backend !== backend || !backend.renewLease) return; // one at a time; not after stop
    this.#renewing = true;
    const log = this.options.log ?? (() => undefined);
    try {
      const now = process.hrtime.bigint();
      const lapsed = this.#leaseUntil !== undefined && now >= this.#leaseUntil;
      if (lapsed && this.options.releaseOnLapse) {
        // Every bucket is still foreign in the kernel (the lease ran out): empty the table before the lease is back.
        await this.#serial(async () => {
          if (this.#backend !== backend) return;
          await backend.setOwned(new Uint8Array(BUCKET_COUNT));
          this.emit("owned", { type: "owned", count: 0 });
        });
        if (this.#backend !== backend) return;
        log(`filter: the lease had run out: every bucket released before renewing it (releaseOnLapse)`);
      }
      const until = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
      await backend.renewLease(until);
      // Reported once per lapse, when the lease is back (failed renewals in between do not repeat it).
      if (lapsed && this.#leaseUntil !== undefined) {
        const lapsedMs = Math.round(Number(now - this.#leaseUntil) / 1e6);
        log(`filter: the lease had run out for ${lapsedMs} ms (event loop frozen or blocked, or renewals failing): no new flow was accepted meanwhile`);
        this.emit("lease-lapsed", { type: "lease-lapsed", lapsedMs });
      }
      this.#leaseUntil = until;
      if (this.#renewFailing) log(`filter: lease renewal works again`);
      this.#renewFailing = false;
    } catch (err) {
      if (!this.#renewFailing) log(`filter: lease renewal failed (${(err as Error).message}): new flows stop being accepted when the lease runs out`);
      this.#renewFailing = true;
    } finally {
      this.#renewing = false;
    }
  }

  /**
   * Replaces the owned buckets (a BUCKET_COUNT-entry (4096) mask, a set or a list of bucket numbers) atomically.
   * `contested` (same forms; default every bucket): the buckets where another live node may still hold TCP
   * connections (see ContestTracker in src/core/farm.ts). In an owned bucket outside it the eBPF backend skips the
   * strict socket lookup of mid-flow packets (no other node's flow can arrive there); the other backends ignore it.
   */
  setOwned(buckets: Uint8Array | ReadonlySet<number> | readonly number[], contested?: Uint8Array | ReadonlySet<number> | readonly number[]): Promise<void> {
    const mask = toMask(buckets);
    const cmask = contested === undefined ? undefined : toMask(contested);
    return this.#serial(async () => {
      if (!this.#backend) throw new Error("PacketFilter.setOwned before start");
      await this.#backend.setOwned(mask, cmask);
      this.emit("owned", { type: "owned", count: mask.reduce((s, v) => s + v, 0) });
    });
  }

  /**
   * Clears the "may hold connections" flags of foreign buckets where no local socket is left and returns the
   * flags after that (1 = this node may hold TCP connections of the bucket), or undefined when the backend keeps
   * no such flags (nftables, userspace: every bucket may be held). Serialised with setOwned.
   */
  pruneMayHold(): Promise<{ cleared: number[]; flags: Uint8Array } | undefined> {
    return this.#serial(async () => {
      if (!this.#backend) throw new Error("PacketFilter.pruneMayHold before start");
      return this.#backend.pruneMayHold ? await this.#backend.pruneMayHold() : undefined;
    });
  }

  /** Per-bucket accepted/dropped counters since start, with the backend's name. */
  counters(): Promise<FilterCounters & { backend: FilterBackendName }> {
    return this.#serial(async () => {
      if (!this.#backend) throw new Error("PacketFilter.counters before start");
      return { ...(await this.#backend.counters()), backend: this.#backend.name };
    });
  }

  /** Removes everything the filter added. Idempotent. */
  stop(): Promise<void> {
    return this.#serial(async () => {
      clearInterval(this.#leaseTimer);
      this.#leaseTimer = undefined;
      this.#leaseUntil = undefined;
      const b = this.#backend;
      this.#backend = undefined;
      await b?.stop();
    });
  }
}
