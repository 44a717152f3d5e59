/**
 * The port between the PacketFilter and its implementations (eBPF, nftables, userspace, in-memory).
 */
import type { FilterConfig } from "./decision.js";

/** The backends, in the automatic choice order. */
export type FilterBackendName = "ebpf" | "nftables" | "userspace" | "memory";

/** Per-bucket counters (index = bucket) and whole-filter counters. Monotonic since the backend started. */
export interface FilterCounters {
  /** VIP packets passed, per bucket (owned, or kept because a local socket has the flow). */
  readonly accepted: readonly number[];
  /** VIP packets dropped, per bucket. */
  readonly dropped: readonly number[];
  /** ICMP errors / IPv6 neighbour discovery to a VIP, passed on every node (when the backend counts them). */
  readonly broadcast?: number;
  /** Foreign-bucket packets passed because a local socket has the flow (eBPF, userspace). */
  readonly keptSocket?: number;
  /** Owned-bucket mid-flow TCP packets without a local socket, dropped (eBPF, userspace). */
  readonly droppedOrphan?: number;
  /**
   * nftables only: mid-flow TCP of a foreign bucket with no local socket, dropped in prerouting (these are
   * counted as accepted in the per-bucket counters, which are taken at netdev ingress before the decision).
   */
  readonly droppedDeferred?: number;
  /** Packets of owned buckets decided as foreign because the lease had expired (see `renewLease`). */
  readonly leaseExpired?: number;
  /** Owned-bucket SYNs with no local listener, dropped instead of reset (eBPF, `dropSynWithoutListener`). */
  readonly droppedNoListener?: number;
}

/** Where and what to filter. */
export interface FilterBackendOptions {
  /** The interface that receives the VIP traffic (e.g. `eth0`). */
  readonly iface: string;
  /** VIPs, rules, seed. */
  readonly config: FilterConfig;
  /**
   * Run the backend's kernel set-up inside this network namespace (a path such as `/run/netns/NAME`).
   * For tests and labs; a daemon runs in its own namespace and leaves this unset.
   */
  readonly netns?: string;
  /** A name that makes this filter's kernel objects unique on the host (default `holdfast`). */
  readonly instance?: string;
  /** Log sink for one-line messages. */
  readonly log?: (line: string) => void;
  /**
   * The lease length the PacketFilter renews (ms; see PacketFilterOptions.leaseMs), for backends that
   * build it into kernel rules (nftables). Default 400.
   */
  readonly leaseMs?: number;
}

/** Default lease (ms): shorter than the LAN membership loss timeout (600 ms); see PacketFilterOptions.leaseMs. */
export const DEFAULT_LEASE_MS = 400;

/** One filter implementation. Methods are called one at a time (the PacketFilter serialises them). */
export interface FilterBackend {
  readonly name: FilterBackendName;
  /**
   * Installs the filter with no bucket owned (every VIP packet of a bucket is dropped until
   * {@link setOwned}); removes stale state left by a crashed earlier run of the same instance first.
   * Throws NotSupportedError when the backend cannot run here.
   */
  start(): Promise<void>;
  /**
   * Replaces the whole ownership table atomically: a packet sees the old table or the new one. `contested`
   * (BUCKET_COUNT entries, default: every bucket) marks the buckets where another live node may still hold TCP
   * connections: only there does an owned bucket need the strict socket lookup for mid-flow TCP. Backends that
   * do not use it (nftables, userspace) stay strict in every owned bucket.
   */
  setOwned(mask: Uint8Array, contested?: Uint8Array): Promise<void>;
  /**
   * Clears the "may hold connections" flag of foreign buckets where no local socket is left, and returns the
   * flags after that (1 = this node may hold TCP connections of the bucket). Only backends that keep such
   * flags (eBPF) have it; for the others every bucket counts as possibly held.
   */
  pruneMayHold?(): { cleared: number[]; flags: Uint8Array } | Promise<{ cleared: number[]; flags: Uint8Array }>;
  counters(): Promise<FilterCounters>;
  /**
   * Extends the lease to `untilNs` (CLOCK_MONOTONIC nanoseconds, the clock of `process.hrtime.bigint()`):
   * the ownership table holds only until then; afterwards every bucket counts as foreign (new flows are
   * dropped; established flows with a local socket still pass), enforced without this process (in the kernel,
   * or by the kernel dropping what a dead process no longer reads). Touches only the lease, never the
   * ownership table, so it commutes with {@link setOwned}. May be called at any time after start, also while
   * another method runs; must be cheap (it runs every leaseMs/4). Backends without it have no lease.
   */
  renewLease?(untilNs: bigint): void | Promise<void>;
  /** Removes everything the backend added. Idempotent. */
  stop(): Promise<void>;
}
