/**
 * Userspace fallback: the filter's decision taken in this process, once per new flow, for hosts where the
 * eBPF program cannot load and the nftables ruleset cannot be used.
 *
 * How: iptables / ip6tables rules in the `mangle` PREROUTING chain (after conntrack) send VIP packets to
 * NFQUEUE (the xt target; the `nft queue` expression is not in every kernel), where {@link decide} runs:
 * - TCP: only packets that conntrack does not know as ESTABLISHED are queued (the SYN of a new connection,
 *   or a mid-flow packet of a flow this node never accepted). Established flows therefore never leave the
 *   kernel, and they survive a bucket move (conntrack keeps them). A queued mid-flow packet belongs to no
 *   local flow, so it is decided with "no socket" (owned: dropped as an orphan; foreign: dropped).
 * - UDP and everything else to a VIP: every packet is queued (UDP has no connection to keep, and a bucket
 *   move must move UDP clients at once).
 * - Conntrack reassembles fragments before mangle PREROUTING: a fragmented datagram is decided whole, by its
 *   rule (the kernel backends decide each fragment on the client address). Documented difference.
 * - Packets to the VIP on a shared MAC arrive as OTHERHOST; the stack drops them before iptables sees them.
 *   The pkttype fix needs nftables (`meta pkttype set host` at netdev ingress); when `nft` fails, the
 *   backend logs that only frames addressed to the node's own MAC can be served.
 * The lease (fail closed), without any timer in the kernel:
 * - process dead (SIGKILL, crash): the queue has no listener and the kernel drops what the rules queue (the
 *   rules never use `--queue-bypass`, which would accept instead, and the queue is not opened with
 *   NFQA_CFG_F_FAIL_OPEN): no new flow is taken, no SYN answered, established TCP flows (not queued) go on.
 * - process frozen (SIGSTOP, a stuck event loop): queued packets wait unanswered in the kernel queue (up to
 *   4096, then the kernel drops). When the process runs again, packets are decided against the lease as
 *   `renewLease` last set it: a packet handled after the lease's end is decided with no bucket owned, and the
 *   first renewal after a lapse first drains the queue with the expired lease, so SYNs that waited through the
 *   freeze (whose clients the peers have served meanwhile) are dropped, not answered late.
 * Cost: one user-kernel round trip per queued packet (see the report in the lab test for a measurement).
 */
import { execFile } from "node:child_process";
import { BUCKET_COUNT, parseIp, formatIp } from "../../core/buckets.js";
import { NotSupportedError } from "../../core/errors.js";
import type { FilterBackend, FilterBackendOptions, FilterCounters } from "./backend.js";
import { compileFilter, decide } from "./decision.js";
import { NfQueue } from "./nfqueue.js";
import { nftTableName, runNft } from "./nftables.js";

function run(cmd: string, args: readonly string[], netns: string | undefined, input?: string): Promise<string> {
  const [c, argv] = netns ? ["nsenter", [`--net=${netns}`, cmd, ...args]] : [cmd, [...args]];
  return new Promise((resolve, reject) => {
    const child = execFile(c, argv, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`${cmd} ${args.join(" ")}: ${stderr.trim() || err.message}`), { cause: err }));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** The iptables chain name of an instance (at most 28 characters). */
export function userspaceChain(instance = "holdfast"): string {
  return `HF_${instance.replace(/[^A-Za-z0-9_]/g, "_")}`.slice(0, 28);
}

/** iptables-restore input (`--noflush`) that (re)creates the chain for one family. */
export function iptablesRules(family: 4 | 6, vips: readonly string[], queue: number, instance?: string): string {
  const chain = userspaceChain(instance);
  const L = ["*mangle", `:${chain} - [0:0]`, `-F ${chain}`];
  L.push(`-A ${chain} -p tcp -m conntrack --ctstate ESTABLISHED -j RETURN`);
  for (const v of vips) {
    const a = parseIp(v);
    if ((a.length === 4) !== (family === 4)) continue;
    L.push(`-A ${chain} -d ${formatIp(a)} -j NFQUEUE --queue-num ${queue}`);
  }
  L.push(`-A PREROUTING -j ${chain}`, "COMMIT", "");
  return L.join("\n");
}

/** The userspace (NFQUEUE) backend. */
export class UserspaceBackend implements FilterBackend {
  readonly name = "userspace" as const;
  readonly #opts: FilterBackendOptions;
  readonly #queueNum: number;
  #queue: NfQueue | undefined;
  #owned = new Uint8Array(BUCKET_COUNT);
  #accepted = new Array<number>(BUCKET_COUNT).fill(0);
  #dropped = new Array<number>(BUCKET_COUNT).fill(0);
  #broadcast = 0;
  #orphan = 0;
  #expired = 0;
  /** The lease's end (CLOCK_MONOTONIC ns); undefined = no lease yet (the table holds). */
  #leaseUntil: bigint | undefined;
  #started = false;

  /** `queueNum`: the NFQUEUE number (0-65535), unique per filter on the host. Default 0x4846. */
  constructor(opts: FilterBackendOptions, queueNum = 0x4846) {
    this.#opts = opts;
    this.#queueNum = queueNum;
  }

  async start(): Promise<void> {
    const filter = compileFilter(this.#opts.config);
    await this.#removeRules(true);
    // The decision runs on IP packets: give it an Ethernet header with the right EtherType.
    const frame = (pkt: Uint8Array): Uint8Array => {
      const f = new Uint8Array(14 + pkt.length);
      const v6 = (pkt[0] ?? 0) >> 4 === 6;
      f[12] = v6 ? 0x86 : 0x08;
      f[13] = v6 ? 0xdd : 0x00;
      f.set(pkt, 14);
      return f;
    };
    try {
      const none = new Uint8Array(BUCKET_COUNT);
      this.#queue = new NfQueue(this.#queueNum, (pkt) => {
        const leased = this.#leaseUntil === undefined || process.hrtime.bigint() < this.#leaseUntil;
        const d = decide(frame(pkt), filter, leased ? this.#owned : none);
        if (d.kind === "broadcast") this.#broadcast++;
        if (d.kind !== "bucket") return true;
        if (!leased && this.#owned[d.bucket]) this.#expired++;
        if (d.verdict === "pass") this.#accepted[d.bucket]!++;
        else this.#dropped[d.bucket]!++;
        if (d.reason === "orphan") this.#orphan++;
        return d.verdict === "pass";
      }, this.#opts.netns);
    } catch (err) {
      if (err instanceof NotSupportedError) throw err;
      throw new NotSupportedError("userspace filter", `cannot open NFQUEUE: ${String(err)}`, { cause: err });
    }
    try {
      for (const family of [4, 6] as const) {
        const rules = iptablesRules(family, this.#opts.config.vips, this.#queueNum, this.#opts.instance);
        await run(family === 4 ? "iptables-restore" : "ip6tables-restore", ["--noflush"], this.#opts.netns, rules);
      }
    } catch (err) {
      this.#queue.close();
      this.#queue = undefined;
      throw new NotSupportedError("userspace filter", `cannot install the NFQUEUE rules (iptables): ${(err as Error).message}`, { cause: err });
    }
    await this.#installPkttypeFix();
    this.#started = true;
  }

  async #installPkttypeFix(): Promise<void> {
    const table = `${nftTableName(this.#opts.instance)}_pkttype`;
    const vips = this.#opts.config.vips.map((v) => parseIp(v));
    const v4 = vips.filter((a) => a.length === 4).map(formatIp);
    const v6 = vips.filter((a) => a.length === 16).map(formatIp);
    const text = [
      `table netdev ${table} {}`, `delete table netdev ${table}`,
      `table netdev ${table} {`, `  chain ingress {`, `    type filter hook ingress device "${this.#opts.iface}" priority -500; policy accept;`,
      ...(v4.length ? [`    ip daddr { ${v4.join(", ")} } meta pkttype set host`] : []),
      ...(v6.length ? [`    ip6 daddr { ${v6.join(", ")} } meta pkttype set host`] : []),
      `  }`, `}`, "",
    ].join("\n");
    try {
      await runNft(["-f", "-"], text, this.#opts.netns);
    } catch (err) {
      this.#opts.log?.(`filter: userspace backend without the pkttype fix (${(err as Error).message}): only frames sent to this node's own MAC reach the VIP`);
    }
  }

  async #removeRules(reportStale: boolean): Promise<void> {
    const chain = userspaceChain(this.#opts.instance);
    for (const cmd of ["iptables", "ip6tables"]) {
      let found = false;
      // Remove every jump (a crashed run may have left one), then the chain.
      for (let i = 0; i < 16; i++) {
        try {
          await run(cmd, ["-t", "mangle", "-D", "PREROUTING", "-j", chain], this.#opts.netns);
          found = true;
        } catch {
          break;
        }
      }
      await run(cmd, ["-t", "mangle", "-F", chain], this.#opts.netns).then(() => (found = true), () => undefined);
      await run(cmd, ["-t", "mangle", "-X", chain], this.#opts.netns).catch(() => undefined);
      if (found && reportStale) this.#opts.log?.(`filter: removed stale ${cmd} chain ${chain} left by an earlier run`);
    }
    const table = `${nftTableName(this.#opts.instance)}_pkttype`;
    await runNft(["-f", "-"], `table netdev ${table} {}\ndelete table netdev ${table}\n`, this.#opts.netns).catch(() => undefined);
  }

  async setOwned(mask: Uint8Array): Promise<void> {
    // One reference swap: the next queued packet sees the whole new table.
    this.#owned = Uint8Array.from(mask, (v) => (v ? 1 : 0));
  }

  renewLease(untilNs: bigint): void {
    // After a lapse (the process was frozen or starved), decide what waited in the queue with the lease
    // expired before granting the new one.
    if (this.#leaseUntil !== undefined && process.hrtime.bigint() >= this.#leaseUntil) this.#queue?.drain();
    this.#leaseUntil = untilNs;
  }

  async counters(): Promise<FilterCounters> {
    return { accepted: [...this.#accepted], dropped: [...this.#dropped], broadcast: this.#broadcast, keptSocket: 0, droppedOrphan: this.#orphan, leaseExpired: this.#expired };
  }

  async stop(): Promise<void> {
    if (!this.#started && !this.#queue) return;
    this.#started = false;
    // Rules first (so no packet is queued to a closed queue), then the queue.
    await this.#removeRules(false);
    this.#queue?.close();
    this.#queue = undefined;
  }
}
