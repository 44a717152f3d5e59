/**
 * eBPF backend: the tc ingress program src/native/farm.bpf.o loaded through libbpf (koffi), attached with
 * the clsact hook at a fixed (handle, priority), configured through its maps (layouts in
 * src/native/farm_shared.h).
 */
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import koffi from "koffi";
import { readFileSync } from "node:fs";
import { packageFile } from "../../native/self.js";
import { BUCKET_COUNT, parseIp } from "../../core/buckets.js";
import { NotSupportedError } from "../../core/errors.js";
import {
  BpfError, BpfObject, ifIndex, mapLookup, mapUpdate, possibleCpus, tcAttach, tcDetach, tcHookCreate, tcQuery, withNetns,
} from "../../native/libbpf.js";
import type { FilterBackend, FilterBackendOptions, FilterCounters } from "./backend.js";
import { compileFilter, tcpConnectionBucket, type FilterConfig } from "./decision.js";

/** tc filter handle and priority of the farm program (fixed, so a restarted run finds a stale one). */
export const FARM_TC_HANDLE = 0x4846; // "HF"
export const FARM_TC_PRIORITY = 1;

const FARM_MODE_ADDR = 1;
const FARM_MODE_ADDR_PORT = 2;
const FARM_F_STRICT_TCP = 1;
const FARM_F_LEASE = 2;
const FARM_F_SYN_LISTENER = 4;
const FARM_OWNED = 1;
const FARM_OWNED_SOLE = 2;

/** `struct farm_config` (16 bytes). */
function encodeConfig(seed: number, flags: number, leaseUntilNs: bigint): Uint8Array {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(seed >>> 0, 0);
  b.writeUInt32LE(flags >>> 0, 4);
  b.writeBigUInt64LE(leaseUntilNs, 8);
  return b;
}

/**
 * libbpf's batch calls for the per-bucket `farm_mayhold` array (one syscall for all 4096 entries instead of one
 * each: ~0.2 ms instead of 5-130 ms on a busy machine, and it runs after every table change and every prune).
 * Undefined when libbpf lacks them; callers then go entry by entry.
 */
type BatchFn = ReturnType<ReturnType<typeof koffi.load>["func"]>;
let batchApi: { lookup: BatchFn; update: BatchFn } | null | undefined;
function batch(): { lookup: BatchFn; update: BatchFn } | undefined {
  if (batchApi === undefined) {
    try {
      const lib = koffi.load("libbpf.so.1");
      batchApi = {
        lookup: lib.func("int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, void *opts)"),
        update: lib.func("int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, void *opts)"),
      };
    } catch {
      batchApi = null;
    }
  }
  return batchApi ?? undefined;
}

/** Reads entries 0..n-1 of an array map of u32 values in one batch; undefined if the batch call failed. */
function lookupU32Array(fd: number, n: number): Uint32Array | undefined {
  const api = batch();
  if (!api) return undefined;
  const keys = Buffer.alloc(4 * n);
  const values = Buffer.alloc(4 * n);
  const count = [n];
  const rc = Number(api.lookup(fd, null, Buffer.alloc(4), keys, values, count, null));
  if ((rc !== 0 && rc !== -2) || count[0] !== n) return undefined; // -ENOENT: the end was reached (all read)
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[keys.readUInt32LE(4 * i)] = values.readUInt32LE(4 * i);
  return out;
}

/** Writes the given entries of an array map of u32 values in one batch; false if the batch call failed. */
function updateU32Entries(fd: number, entries: readonly [number, number][]): boolean {
  const api = batch();
  if (!api || entries.length === 0) return !!api;
  const keys = Buffer.alloc(4 * entries.length);
  const values = Buffer.alloc(4 * entries.length);
  entries.forEach(([k, v], i) => (keys.writeUInt32LE(k, 4 * i), values.writeUInt32LE(v >>> 0, 4 * i)));
  const count = [entries.length];
  return Number(api.update(fd, keys, values, count, null)) === 0 && count[0] === entries.length;
}

/** Finds the committed BPF object (source tree or published package layout, ESM or CJS build). */
export function farmObjectPath(): string {
  const p = packageFile("native/farm.bpf.o", import.meta.url);
  if (p !== undefined) return p;
  throw new NotSupportedError("ebpf", "farm.bpf.o not found next to the package (src/native/farm.bpf.o)");
}

/** `struct farm_rule_key` (20 bytes). */
export function encodeRuleKey(address: Uint8Array, proto: number, port: number): Uint8Array {
  const k = new Uint8Array(20);
  k[0] = address.length === 4 ? 4 : 6;
  k[1] = proto;
  k[2] = (port >>> 8) & 0xff;
  k[3] = port & 0xff;
  k.set(address, 4);
  return k;
}

const u32le = (...xs: number[]): Uint8Array => {
  const b = Buffer.alloc(4 * xs.length);
  xs.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i));
  return b;
};

/** One local TCP socket (not a listener), as listed by `ss -Htna`. */
export interface LocalTcpSocket {
  readonly local: Uint8Array;
  readonly localPort: number;
  readonly remote: Uint8Array;
  readonly remotePort: number;
}

/** `198.18.0.1:80`, `[fd00:4844::1]:80`, `[::ffff:198.18.0.1]:80`, `[fe80::1]%eth0:22` -> address bytes and port. */
function parseEndpoint(text: string): { address: Uint8Array; port: number } | undefined {
  const m = /^\[?([^\]%]+?)\]?(?:%[^:]+)?:(\d+)$/.exec(text);
  if (!m) return undefined;
  let host = m[1]!;
  // A dual-stack socket shows an IPv4 peer as IPv4-mapped; the filter sees the IPv4 packet.
  if (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(host)) host = host.slice(7);
  try {
    return { address: parseIp(host), port: Number(m[2]) };
  } catch {
    return undefined;
  }
}

/**
 * Parses the output of `ss -Htna` (no header, numeric, TCP, every state): `State Recv-Q Send-Q Local:Port
 * Peer:Port`. Listeners and lines that do not parse are skipped.
 */
export function parseSsTcp(text: string): LocalTcpSocket[] {
  const out: LocalTcpSocket[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || f[0] === "LISTEN") continue;
    const local = parseEndpoint(f[3]!);
    const remote = parseEndpoint(f[4]!);
    if (local && remote) out.push({ local: local.address, localPort: local.port, remote: remote.address, remotePort: remote.port });
  }
  return out;
}

/**
 * The local TCP sockets of a network namespace (the current one without `netns`), in every state but LISTEN and
 * TIME-WAIT (SYN-RECV included: the handshake's last ACK must reach it), from `ss -Htna exclude time-wait`
 * (iproute2, run through `nsenter --net` for another namespace). TIME-WAIT is left out: the app has closed such a
 * connection, and a retransmitted FIN that another node answers with RST harms nobody, while counting them would
 * keep a moved bucket contested (strict lookups) for 60 s after every move. Chosen over a sock_diag netlink client of our own: one
 * process spawn at start and one per may-hold prune (every 2 s by default, see FarmDriver), and iproute2 is
 * already required (the VIP and lab code use `ip`).
 */
export function listLocalTcpSockets(netns?: string): LocalTcpSocket[] {
  const [cmd, args] = ssCommand(netns);
  return parseSsTcp(execFileSync(cmd, args, { encoding: "utf8", maxBuffer: 256 * 1024 * 1024, timeout: 30_000 }));
}

function ssCommand(netns?: string): [string, string[]] {
  const ss = ["ss", "-Htna", "exclude", "time-wait"];
  return netns ? ["nsenter", [`--net=${netns}`, ...ss]] : [ss[0]!, ss.slice(1)];
}

/** {@link listLocalTcpSockets} without blocking the event loop (heartbeats and lease renewals go on meanwhile). */
export async function listLocalTcpSocketsAsync(netns?: string): Promise<LocalTcpSocket[]> {
  const [cmd, args] = ssCommand(netns);
  const { stdout } = await promisify(execFile)(cmd, args, { encoding: "utf8", maxBuffer: 256 * 1024 * 1024, timeout: 30_000 });
  return parseSsTcp(stdout);
}

/**
 * The initial `farm_mayhold` flags: set for the bucket of every socket whose local address is a VIP (each hashed
 * with the rule of its local port), clear elsewhere.
 */
export function mayHoldFromSockets(cfg: FilterConfig, sockets: readonly LocalTcpSocket[]): Uint8Array {
  const filter = compileFilter(cfg);
  const mask = new Uint8Array(BUCKET_COUNT);
  for (const s of sockets) {
    if (s.local.length !== s.remote.length) continue;
    const b = tcpConnectionBucket(filter, s.local, s.localPort, s.remote, s.remotePort);
    if (b !== undefined) mask[b] = 1;
  }
  return mask;
}

/** The rules map content for a configuration: [key, mode] pairs. */
export function ruleEntries(cfg: FilterConfig): [Uint8Array, number][] {
  const mode = (by: string): number => (by === "address+port" ? FARM_MODE_ADDR_PORT : FARM_MODE_ADDR);
  const out: [Uint8Array, number][] = [];
  const vips = cfg.vips.map((v) => parseIp(v));
  for (const a of vips) out.push([encodeRuleKey(a, 0, 0), mode(cfg.defaultBy ?? "address")]);
  for (const r of cfg.rules) {
    const targets = r.vip === undefined ? vips : [parseIp(r.vip)];
    for (const a of targets) out.push([encodeRuleKey(a, r.protocol === "tcp" ? 6 : 17, r.port), mode(r.by)]);
  }
  return out;
}

/**
 * A loaded (not necessarily attached) farm program with typed access to its maps. Used by the backend and
 * by BPF_PROG_TEST_RUN tests.
 */
export class FarmProgram {
  readonly object: BpfObject;
  readonly progFd: number;
  /** The egress program (IPv6 neighbour discovery rewrite for farm VIPs; used by FarmVip). */
  readonly egressFd: number;
  readonly #fd: {
    rules: number; owned: number; active: number; config: number; bstats: number; gstats: number; nd: number; mayhold: number;
  };
  #active = 0;
  #seed = 0;
  #flags = 0;
  readonly #ncpus: number;

  private constructor(object: BpfObject) {
    this.object = object;
    this.progFd = object.programFd("farm_ingress");
    this.egressFd = object.programFd("farm_egress");
    this.#fd = {
      rules: object.mapFd("farm_rules"), owned: object.mapFd("farm_owned"), active: object.mapFd("farm_active"),
      config: object.mapFd("farm_config"), bstats: object.mapFd("farm_bstats"), gstats: object.mapFd("farm_gstats"),
      nd: object.mapFd("farm_nd"), mayhold: object.mapFd("farm_mayhold"),
    };
    this.#ncpus = possibleCpus();
  }

  /** Opens and loads the committed object (needs CAP_BPF + CAP_NET_ADMIN, or root). */
  static load(path = farmObjectPath()): FarmProgram {
    const obj = BpfObject.openMem(readFileSync(path));
    try {
      obj.load();
      return new FarmProgram(obj);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /**
   * Writes seed, flags and rules (the program treats a destination with no default rule as not a VIP).
   * No lease yet: the table holds without one until the first {@link renewLease}.
   */
  configure(cfg: FilterConfig): void {
    this.#seed = (cfg.seed ?? 0) >>> 0;
    this.#flags = ((cfg.strictTcp ?? true) ? FARM_F_STRICT_TCP : 0) | ((cfg.dropSynWithoutListener ?? true) ? FARM_F_SYN_LISTENER : 0);
    mapUpdate(this.#fd.config, u32le(0), encodeConfig(this.#seed, this.#flags, 0n));
    for (const [key, mode] of ruleEntries(cfg)) mapUpdate(this.#fd.rules, key, u32le(mode));
  }

  /**
   * Sets the lease: from now on the ownership table holds only while the kernel's CLOCK_MONOTONIC
   * (`process.hrtime`'s clock; the program reads it with `bpf_ktime_get_coarse_ns`, +2 ns per packet instead of
   * +28 ns for `bpf_ktime_get_ns`, measured with BPF_PROG_TEST_RUN; the coarse clock trails by at most one
   * scheduler tick, so a lease may last a few ms longer) is below `untilNs`; after that every bucket counts as
   * foreign. One map update of the config entry; the ownership tables are not touched.
   */
  renewLease(untilNs: bigint): void {
    mapUpdate(this.#fd.config, u32le(0), encodeConfig(this.#seed, this.#flags | FARM_F_LEASE, untilNs));
  }

  /**
   * Double-buffered swap: write the inactive table, then flip the active index (one 32-bit store). `contested`
   * (default: every bucket): buckets where another live node may hold TCP connections; an owned bucket outside it
   * is written with FARM_OWNED_SOLE, and its mid-flow packets skip the strict socket lookup.
   */
  setOwned(mask: Uint8Array, contested?: Uint8Array): void {
    if (mask.length !== BUCKET_COUNT) throw new RangeError(`ownership mask must have ${BUCKET_COUNT} entries`);
    if (contested && contested.length !== BUCKET_COUNT) throw new RangeError(`contested mask must have ${BUCKET_COUNT} entries`);
    const next = this.#active ^ 1;
    const table = Uint8Array.from(mask, (v, b) => (!v ? 0 : contested && !contested[b] ? FARM_OWNED | FARM_OWNED_SOLE : FARM_OWNED));
    mapUpdate(this.#fd.owned, u32le(next), table);
    mapUpdate(this.#fd.active, u32le(0), u32le(next));
    this.#active = next;
  }

  /**
   * Overwrites the per-bucket "this node may hold connections here" flags (`farm_mayhold`: a foreign mid-flow
   * TCP packet gets a socket lookup only when its bucket's flag is set; the program sets a flag when it passes a
   * SYN there). One map entry per bucket: call it before the program is attached (the backend seeds it at
   * start), or in tests; once attached it could overwrite a flag the program has just set (use
   * {@link clearMayHold} for chosen buckets).
   */
  setMayHold(mask: Uint8Array): void {
    if (mask.length !== BUCKET_COUNT) throw new RangeError(`may-hold mask must have ${BUCKET_COUNT} entries`);
    this.#writeMayHold(Array.from(mask, (v, b): [number, number] => [b, v ? 1 : 0]));
  }

  /** Clears the flags of these buckets only (one entry each: the program's stores to other buckets are kept). */
  clearMayHold(buckets: Iterable<number>): void {
    this.#writeMayHold(Array.from(buckets, (b): [number, number] => [b, 0]));
  }

  /** Sets the flags of these buckets only. */
  addMayHold(buckets: Iterable<number>): void {
    this.#writeMayHold(Array.from(buckets, (b): [number, number] => [b, 1]));
  }

  #writeMayHold(entries: [number, number][]): void {
    if (updateU32Entries(this.#fd.mayhold, entries)) return;
    for (const [b, v] of entries) mapUpdate(this.#fd.mayhold, u32le(b), u32le(v));
  }

  /** The current `farm_mayhold` flags (1 = set): one batch lookup (entry by entry without the batch call). */
  mayHold(): Uint8Array {
    const all = lookupU32Array(this.#fd.mayhold, BUCKET_COUNT);
    if (all) return Uint8Array.from(all, (v) => (v ? 1 : 0));
    const out = new Uint8Array(BUCKET_COUNT);
    const key = Buffer.alloc(4);
    for (let b = 0; b < BUCKET_COUNT; b++) {
      key.writeUInt32LE(b, 0);
      const v = mapLookup(this.#fd.mayhold, key, 4);
      out[b] = v && v.readUInt32LE(0) !== 0 ? 1 : 0;
    }
    return out;
  }

  /** The shared MAC the egress program writes into neighbour discovery for an IPv6 VIP (`struct farm_nd`). */
  setNeighbourMac(vip6: Uint8Array, mac: Uint8Array): void {
    if (vip6.length !== 16 || mac.length !== 6) throw new RangeError("setNeighbourMac: 16-byte IPv6 address and 6-byte MAC");
    const v = new Uint8Array(8);
    v.set(mac, 0);
    mapUpdate(this.#fd.nd, vip6, v);
  }

  counters(): FilterCounters {
    const accepted: number[] = [];
    const dropped: number[] = [];
    for (let b = 0; b < BUCKET_COUNT; b++) {
      const v = mapLookup(this.#fd.bstats, u32le(b), 16 * this.#ncpus);
      let acc = 0n;
      let drp = 0n;
      for (let c = 0; v && c < this.#ncpus; c++) {
        acc += v.readBigUInt64LE(16 * c);
        drp += v.readBigUInt64LE(16 * c + 8);
      }
      accepted.push(Number(acc));
      dropped.push(Number(drp));
    }
    const G = 48; // sizeof(struct farm_global_stats)
    const g = mapLookup(this.#fd.gstats, u32le(0), G * this.#ncpus);
    const sum = (field: number): number => {
      let s = 0n;
      for (let c = 0; g && c < this.#ncpus; c++) s += g.readBigUInt64LE(G * c + 8 * field);
      return Number(s);
    };
    return { accepted, dropped, broadcast: sum(1), keptSocket: sum(2), droppedOrphan: sum(3), leaseExpired: sum(4), droppedNoListener: sum(5) };
  }

  close(): void {
    this.object.close();
  }
}

/**
 * The eBPF backend (the default). stop() detaches the farm filter (handle 0x4846, priority 1) and frees the
 * program and maps; the clsact qdisc itself is left in place, empty, because other tc programs (the farm
 * VIP's egress program, or anyone else's) may share it.
 */
export class EbpfBackend implements FilterBackend {
  readonly name = "ebpf" as const;
  readonly #opts: FilterBackendOptions;
  #prog: FarmProgram | undefined;
  #ifindex = 0;
  #owned = new Uint8Array(BUCKET_COUNT);

  constructor(opts: FilterBackendOptions) {
    this.#opts = opts;
  }

  #inNs<T>(fn: () => T): T {
    return this.#opts.netns ? withNetns(this.#opts.netns, fn) : fn();
  }

  async start(): Promise<void> {
    let prog: FarmProgram;
    try {
      prog = FarmProgram.load();
    } catch (err) {
      if (err instanceof BpfError) {
        throw new NotSupportedError("ebpf", `cannot load the farm tc program: ${err.message}`, { cause: err });
      }
      throw err;
    }
    try {
      prog.configure(this.#opts.config);
      prog.setOwned(new Uint8Array(BUCKET_COUNT));
      prog.setMayHold(this.#seedMayHold());
      this.#inNs(() => {
        this.#ifindex = ifIndex(this.#opts.iface);
        if (this.#ifindex === 0) throw new NotSupportedError("ebpf", `no interface named ${this.#opts.iface}`);
        tcHookCreate(this.#ifindex);
        const stale = tcQuery(this.#ifindex, FARM_TC_HANDLE, FARM_TC_PRIORITY);
        if (stale !== undefined) {
          this.#opts.log?.(`filter: replacing a stale farm tc program (id ${stale}) left on ${this.#opts.iface} by an earlier run`);
        }
        tcAttach(this.#ifindex, prog.progFd, FARM_TC_HANDLE, FARM_TC_PRIORITY, true);
      });
    } catch (err) {
      prog.close();
      if (err instanceof BpfError) {
        throw new NotSupportedError("ebpf", `cannot attach the farm tc program to ${this.#opts.iface}: ${err.message}`, { cause: err });
      }
      throw err;
    }
    this.#prog = prog;
  }

  /**
   * Flags for the buckets of the connections that already exist (a daemon restarted while the app serves):
   * their mid-flow packets must still get the socket lookup. If the sockets cannot be listed, every flag is set
   * (every foreign mid-flow packet looked up, as without the flags): slower, never wrong.
   */
  #seedMayHold(): Uint8Array {
    try {
      const sockets = listLocalTcpSockets(this.#opts.netns);
      const mask = mayHoldFromSockets(this.#opts.config, sockets);
      const n = mask.reduce((s, x) => s + x, 0);
      if (n > 0) this.#opts.log?.(`filter: ${n} bucket(s) flagged for existing connections on a VIP`);
      return mask;
    } catch (err) {
      this.#opts.log?.(`filter: cannot list local TCP sockets (${(err as Error).message}); socket lookups in every bucket`);
      return new Uint8Array(BUCKET_COUNT).fill(1);
    }
  }

  async setOwned(mask: Uint8Array, contested?: Uint8Array): Promise<void> {
    if (!this.#prog) throw new Error("ebpf backend not started");
    this.#prog.setOwned(mask, contested);
    this.#owned = Uint8Array.from(mask, (v) => (v ? 1 : 0));
  }

  renewLease(untilNs: bigint): void {
    this.#prog?.renewLease(untilNs);
  }

  /**
   * The per-bucket "this node may hold connections here" flags (1 = set): seeded at start from the local
   * sockets on a VIP, then set by the program for each bucket where it passes a SYN; cleared by
   * {@link pruneMayHold}.
   */
  mayHold(): Uint8Array {
    if (!this.#prog) throw new Error("ebpf backend not started");
    return this.#prog.mayHold();
  }

  /**
   * Clears the may-hold flag of every foreign bucket (not in the last {@link setOwned} mask) where no local TCP
   * socket on a VIP is left, so that the node's published may-hold set shrinks back after a bucket move. Then
   * lists the sockets again and sets the flag back for any bucket that has one now (a connection opened from the
   * VIP whose SYN+ACK passed between the listing and the clear). Owned buckets are never cleared (the program
   * may be setting them). Must not run concurrently with setOwned or stop (the PacketFilter serialises them);
   * the listing (`ss`, asynchronous) does not block the event loop (heartbeats, lease renewals). Returns the
   * buckets cleared and the flags after the prune; when the sockets cannot be listed nothing is cleared.
   */
  async pruneMayHold(): Promise<{ cleared: number[]; flags: Uint8Array }> {
    const prog = this.#prog;
    if (!prog) throw new Error("ebpf backend not started");
    const flags = prog.mayHold();
    // Usually every flag is in an owned bucket (nothing moved lately): no listing needed.
    if (!flags.some((v, b) => v && !this.#owned[b])) return { cleared: [], flags };
    let before: Uint8Array;
    try {
      before = mayHoldFromSockets(this.#opts.config, await listLocalTcpSocketsAsync(this.#opts.netns));
    } catch (err) {
      this.#opts.log?.(`filter: cannot list local TCP sockets (${(err as Error).message}); may-hold flags kept`);
      return { cleared: [], flags };
    }
    const cleared: number[] = [];
    for (let b = 0; b < BUCKET_COUNT; b++) if (flags[b] && !this.#owned[b] && !before[b]) cleared.push(b);
    if (cleared.length === 0 || this.#prog !== prog) return { cleared: [], flags };
    prog.clearMayHold(cleared);
    let after: Uint8Array;
    try {
      after = mayHoldFromSockets(this.#opts.config, await listLocalTcpSocketsAsync(this.#opts.netns));
    } catch {
      after = new Uint8Array(BUCKET_COUNT).fill(1); // cannot tell: restore every flag just cleared
    }
    const back = cleared.filter((b) => after[b]);
    prog.addMayHold(back);
    return { cleared: cleared.filter((b) => !after[b]), flags: prog.mayHold() };
  }

  async counters(): Promise<FilterCounters> {
    if (!this.#prog) throw new Error("ebpf backend not started");
    return this.#prog.counters();
  }

  async stop(): Promise<void> {
    const prog = this.#prog;
    this.#prog = undefined;
    if (!prog) return;
    try {
      this.#inNs(() => {
        // Detach only if the program there is still ours (another run may have replaced it).
        tcDetach(this.#ifindex, FARM_TC_HANDLE, FARM_TC_PRIORITY);
      });
    } finally {
      prog.close();
    }
  }
}
