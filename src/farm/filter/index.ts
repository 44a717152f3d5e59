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
 */
import * as t from "io-ts";
import { EventEmitter } from "eventemitter3";
import { toMask } from "../../core/buckets.js";
import { decodeOrThrow } from "../../core/decode.js";
import { ConfigError, NotSupportedError } from "../../core/errors.js";
import type { FilterBackend, FilterBackendName, FilterBackendOptions, FilterCounters } from "./backend.js";
import { compileFilter, type FilterConfig } from "./decision.js";
import { EbpfBackend } from "./ebpf.js";
import { NftablesBackend } from "./nftables.js";
import { UserspaceBackend } from "./userspace.js";

export type { FilterBackend, FilterBackendName, FilterBackendOptions, FilterCounters } from "./backend.js";
export type { FilterConfig, FilterRule, FilterDecision, PacketFlow } from "./decision.js";
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
}

/** Events of a {@link PacketFilter}. */
export interface PacketFilterEvents {
  /** The backend that start() chose, with the reasons the earlier candidates were passed over. */
  backend: (e: { type: "backend"; name: FilterBackendName; reason: string }) => void;
  /** A new ownership table is in force. */
  owned: (e: { type: "owned"; count: number }) => void;
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
    netns: t.string,
    instance: t.string,
    queueNum: t.number,
    avoid: t.array(t.union([t.literal("ebpf"), t.literal("nftables"), t.literal("userspace")])),
  }),
]);

/**
 * The farm's packet filter. Calls are serialised: each method waits for the previous one to finish.
 */
export class PacketFilter extends EventEmitter<PacketFilterEvents> {
  readonly options: PacketFilterOptions;
  #backend: FilterBackend | undefined;
  #queue: Promise<unknown> = Promise.resolve();

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
    const bo: FilterBackendOptions = { iface: o.iface, config: o, netns: o.netns, instance: o.instance, log: o.log };
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
        return;
      }
      throw new NotSupportedError("packet filter", `no backend can run on ${this.options.iface}: ${skipped.join("; ")}`);
    });
  }

  /** Replaces the owned buckets (a BUCKET_COUNT-entry (4096) mask, a set or a list of bucket numbers) atomically. */
  setOwned(buckets: Uint8Array | ReadonlySet<number> | readonly number[]): Promise<void> {
    const mask = toMask(buckets);
    return this.#serial(async () => {
      if (!this.#backend) throw new Error("PacketFilter.setOwned before start");
      await this.#backend.setOwned(mask);
      this.emit("owned", { type: "owned", count: mask.reduce((s, v) => s + v, 0) });
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
      const b = this.#backend;
      this.#backend = undefined;
      await b?.stop();
    });
  }
}
