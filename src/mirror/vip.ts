/**
 * The VIP of a mirror module: held by the primary alone, moved on failover, swap and failback.
 *
 * `add(VIP/len)`: `ip addr replace VIP/len dev IF` (IPv6 with `nodad`: the address must answer at once, and the
 * other node has already dropped it), then the announcements that make clients switch at once instead of waiting
 * for their neighbour cache to expire:
 * - IPv4: gratuitous ARP, both forms, as keepalived does (`garp_master_repeat` / `garp_master_delay`): an RFC 5227
 *   ARP announcement (what `arping -U` sends: a broadcast request whose sender and target are the VIP) and an
 *   unsolicited ARP reply (what `arping -A` sends; some stacks only update on replies), each `count` times
 *   `intervalMs` apart, and once more `repeatAfterMs` later for a client that missed the first burst (a switch
 *   port still coming up). The frames are built here and sent on an AF_PACKET socket rather than by running
 *   arping, which waits a second for answers that never come: the first announcement leaves within a
 *   millisecond of the address, and the failover budget is 1.5 s.
 * - IPv6: an unsolicited neighbour advertisement (RFC 4861 section 7.2.6: to all-nodes, Override flag set,
 *   target link-layer address = this interface's MAC), sent the same number of times on an AF_PACKET socket
 *   (the kernel sends none for a `nodad` address; `ndisc6` only solicits).
 * `add` resolves once the address is in place and the first announcement went out; the repetitions run in the
 * background and stop when the VIP is removed.
 *
 * `remove(VIP/len)`: `ip addr del` on every interface that holds the address (idempotent).
 *
 * IPv4: before the first VIP on an interface, `arp_announce=2` on that interface (kept when the VIP goes: it
 * matters most after a crash, when nobody would restore it), so the node never names the VIP as the sender of its
 * own ARP requests. Without it, a node killed with its link down (kernel alive, VIP still configured) that comes
 * back resolves the clients again for the FIN retransmissions of its orphaned sockets, whose source is the VIP:
 * those requests overwrite the clients' neighbour entry for the VIP with this node's MAC, after the other node
 * took the VIP over, and the clients' connections to the VIP time out for ~8 s (seen in the PostgreSQL lab).
 *
 * The kernel's own dead man's switch (`leaseS`, default 3): the address is added with that lifetime
 * (`valid_lft`/`preferred_lft`) and renewed every leaseS/3 s (`ip addr change`). A process that is killed or frozen
 * stops renewing, and the kernel removes the VIP by itself within leaseS (measured here: 2.1 s for a 2 s lifetime),
 * so a node whose daemon died (OOM kill, SIGKILL) while its kernel lives on does not keep answering ARP for the
 * address the other node has taken over (the two would fight over clients' neighbour caches until someone removed
 * it by hand). By then the peer has long detected the loss (under 1 s). A renewal that finds the address gone
 * (the process stalled longer than the lease, or `ip` itself was that slow) puts it back without announcements:
 * clients that still resolve it to this node keep working, and clients that moved to the peer are not pulled
 * back; the engine steps a stalled primary down anyway. 0: a permanent address, as before.
 *
 * `removeStale(vips)`: removes VIPs a crashed earlier run left on this node; call it before the module starts
 * (the {@link MirrorDriver} does when it binds the module): a node that comes back after a crash must not answer
 * for an address the other node now holds.
 */
import { execFile } from "node:child_process";
import { isIP } from "node:net";
import { ConfigError } from "../core/errors.js";
import { parseIp } from "../core/buckets.js";
import { unsolicitedNa } from "../farm/vip.js";
import { FrameSender } from "../farm/filter/inject.js";
import type { VipDriver } from "../runtime/module.js";

/** Runs a command; resolves with stdout, rejects with stderr in the message. */
export type CommandRunner = (argv: readonly string[]) => Promise<string>;

/**
 * Announces `addr` on `iface` as held by `mac`: for IPv4 a gratuitous ARP request and reply, for IPv6 an
 * unsolicited neighbour advertisement.
 */
export type NeighbourAdvertiser = (iface: string, mac: string, addr: string) => void;

/** Options of a {@link MirrorVip}. */
export interface MirrorVipOptions {
  /**
   * The interface that carries the VIP. Default: the one the kernel routes the VIP's subnet through
   * (`ip -j route get VIP`), i.e. the interface whose own address is on the VIP's subnet.
   */
  readonly iface?: string;
  /**
   * Announcements sent when the VIP is added. Defaults: `count` 5 (keepalived's `garp_master_repeat`),
   * `intervalMs` 100 (a burst that is over well inside the 1.5 s failover budget), `repeatAfterMs` 5000
   * (keepalived's `garp_master_delay`: one more burst for clients that missed the first); 0 disables the
   * repeat, `count` 0 disables announcements altogether (for tests that show what they buy).
   */
  readonly announce?: { readonly count?: number; readonly intervalMs?: number; readonly repeatAfterMs?: number };
  /**
   * Lifetime of the address in seconds, renewed every leaseS/3 while held (see the file comment): the kernel
   * removes the VIP of a dead or frozen process by itself. Default 3; 0 = a permanent address.
   */
  readonly leaseS?: number;
  /** Run everything in this network namespace (a path such as `/run/netns/NAME`); for labs and tests. */
  readonly netns?: string;
  /** Sink for one-line log messages. */
  readonly log?: (line: string) => void;
  /** Command runner (tests). Default: `execFile` with a 10 s timeout (under `nsenter` with `netns`). */
  readonly run?: CommandRunner;
  /** Announcer (tests). Default: frames built by {@link garpFrames} / {@link unsolicitedNa} on an AF_PACKET socket. */
  readonly advertise?: NeighbourAdvertiser;
}

const defaultRun: CommandRunner = (argv) =>
  new Promise((resolve, reject) => {
    execFile(argv[0] as string, argv.slice(1), { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(" ")}: ${String(stderr).trim() || err.message}`, { cause: err }));
      else resolve(String(stdout));
    });
  });

/**
 * The two gratuitous ARP frames (RFC 5227 section 3 and RFC 826), both broadcast from `mac` for `ip`: the
 * announcement (request, sender IP = target IP = the VIP, target MAC zero; `arping -U`) and the unsolicited reply
 * (`arping -A`: opcode 2, target MAC broadcast).
 */
export function garpFrames(mac: Uint8Array, ip: Uint8Array): [Uint8Array, Uint8Array] {
  const bc = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
  const head = [...bc, ...mac, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4];
  return [
    Uint8Array.from([...head, 0, 1, ...mac, ...ip, 0, 0, 0, 0, 0, 0, ...ip]),
    Uint8Array.from([...head, 0, 2, ...mac, ...ip, ...bc, ...ip]),
  ];
}

const advertiseIn = (netns: string | undefined): NeighbourAdvertiser => (iface, mac, addr) => {
  const own = Uint8Array.from(mac.split(":").map((h) => parseInt(h, 16)));
  const ip = parseIp(addr);
  const sender = new FrameSender(iface, netns);
  try {
    if (ip.length === 16) sender.send(unsolicitedNa(own, own, ip));
    else for (const f of garpFrames(own, ip)) sender.send(f);
  } finally {
    sender.close();
  }
};

interface ParsedVip {
  readonly cidr: string;
  readonly addr: string;
  readonly len: number;
  readonly v6: boolean;
}

function parseVip(vip: string): ParsedVip {
  const [addr, lenText] = vip.split("/");
  const v = isIP(addr ?? "");
  const len = Number(lenText);
  if (v === 0 || lenText === undefined || !Number.isInteger(len) || len < 0 || len > (v === 6 ? 128 : 32)) {
    throw new ConfigError("mirror VIP", [{ path: "vip", value: vip, expected: "an address with its prefix length, e.g. 198.18.0.100/24 or fd00:4844::100/112" }]);
  }
  return { cidr: `${addr}/${len}`, addr: addr as string, len, v6: v === 6 };
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/** The mirror module's VIP driver (see the file comment). */
export class MirrorVip implements VipDriver {
  readonly options: MirrorVipOptions;
  readonly #run: CommandRunner;
  readonly #advertise: NeighbourAdvertiser;
  /** Background announcement bursts per address, aborted on removal. */
  readonly #bursts = new Map<string, AbortController>();
  /** Addresses held (added and not removed), renewed while the lease runs. */
  readonly #held = new Map<string, { v: ParsedVip; dev: string }>();
  readonly #leaseS: number;
  #renewTimer: ReturnType<typeof setInterval> | undefined;
  /** Interfaces whose `arp_announce` this instance already set to 2. */
  readonly #arpAnnounce = new Set<string>();
  /** Address changes run one at a time: a renewal must not put back an address that `remove` is taking away. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: MirrorVipOptions = {}) {
    const a = options.announce ?? {};
    const problems = (["count", "intervalMs", "repeatAfterMs"] as const)
      .filter((k) => a[k] !== undefined && !(Number.isInteger(a[k]) && (a[k] as number) >= 0))
      .map((k) => ({ path: `announce.${k}`, value: a[k], expected: "a non-negative integer" }));
    if (options.leaseS !== undefined && !(Number.isInteger(options.leaseS) && options.leaseS >= 0)) {
      problems.push({ path: "leaseS", value: options.leaseS, expected: "a whole number of seconds >= 0 (0: a permanent address)" });
    }
    if (problems.length > 0) throw new ConfigError("mirror VIP options", problems);
    this.#leaseS = options.leaseS ?? 3;
    this.options = options;
    const ns = options.netns;
    this.#run = options.run ?? (ns ? (argv) => defaultRun(["nsenter", `--net=${ns}`, "--", ...argv]) : defaultRun);
    this.#advertise = options.advertise ?? advertiseIn(ns);
  }

  /** The interface that carries `addr`. */
  async device(addr: string): Promise<string> {
    if (this.options.iface) return this.options.iface;
    const routes = JSON.parse(await this.#run(["ip", "-j", "route", "get", addr])) as { dev?: string; type?: string }[];
    const r = routes[0];
    if (!r?.dev || r.dev === "lo") throw new Error(`no interface routes ${addr}: set the mirror VIP's iface`);
    return r.dev;
  }

  /** Interfaces that hold `addr` now (with the prefix length each holds it with). */
  async holders(addr: string): Promise<{ dev: string; len: number }[]> {
    const links = JSON.parse(await this.#run(["ip", "-j", "addr", "show"])) as { ifname: string; addr_info?: { local: string; prefixlen: number }[] }[];
    const out: { dev: string; len: number }[] = [];
    for (const l of links) for (const x of l.addr_info ?? []) if (x.local === addr) out.push({ dev: l.ifname, len: x.prefixlen });
    return out;
  }

  async add(vip: string, module = ""): Promise<void> {
    const v = parseVip(vip);
    const dev = await this.device(v.addr);
    if (!v.v6 && !this.#arpAnnounce.has(dev)) {
      // Once per interface (one more command on the first failover only); a failure is logged, the VIP still works.
      await this.#run(["sysctl", "-qw", `net/ipv4/conf/${dev}/arp_announce=2`]).then(
        () => this.#arpAnnounce.add(dev),
        (e: Error) => this.options.log?.(`vip: setting arp_announce=2 on ${dev} failed: ${e.message}`),
      );
    }
    await this.#exclusive(() => this.#run(["ip", "addr", "replace", ...this.#addrArgs(v, dev)]));
    this.#held.set(v.addr, { v, dev });
    this.#armRenewal();
    this.options.log?.(`vip: ${v.cidr} added on ${dev}${this.#leaseS > 0 ? ` (lifetime ${this.#leaseS} s, renewed)` : ""}${module ? ` (module ${module})` : ""}`);
    const mac = await this.#mac(dev);
    this.#bursts.get(v.addr)?.abort();
    const ac = new AbortController();
    this.#bursts.set(v.addr, ac);
    const { count = 5, intervalMs = 100, repeatAfterMs = 5000 } = this.options.announce ?? {};
    if (count === 0) return;
    // The first announcement goes out before add() resolves: the app starts next and clients must reach it.
    this.#announceOnce(v, dev, mac);
    void this.#burst(v, dev, mac, count - 1, intervalMs, repeatAfterMs > 0 ? { after: repeatAfterMs, count } : null, ac.signal);
  }

  async remove(vip: string, module = ""): Promise<void> {
    const v = parseVip(vip);
    this.#bursts.get(v.addr)?.abort();
    this.#bursts.delete(v.addr);
    this.#held.delete(v.addr);
    this.#armRenewal();
    // Deleted with the prefix length it is held with (a stale one may come from an earlier configuration).
    await this.#exclusive(async () => {
      for (const h of await this.holders(v.addr)) {
        try {
          await this.#run(["ip", "addr", "del", `${v.addr}/${h.len}`, "dev", h.dev]);
        } catch (e) {
          // Gone between the look and the delete: its lifetime ran out (a stale VIP of a killed run) or someone
          // else removed it. Removal is idempotent; anything else is an error.
          if ((await this.holders(v.addr)).some((x) => x.dev === h.dev)) throw e;
          this.options.log?.(`vip: ${v.addr}/${h.len} was already gone from ${h.dev}`);
          continue;
        }
        this.options.log?.(`vip: ${v.addr}/${h.len} removed from ${h.dev}${module ? ` (module ${module})` : ""}`);
      }
    });
  }

  /** Removes `vips` from every interface of this node (left by a crashed earlier run). Returns those found. */
  async removeStale(vips: readonly string[]): Promise<string[]> {
    const found: string[] = [];
    for (const vip of vips) {
      const v = parseVip(vip);
      if ((await this.holders(v.addr)).length === 0) continue;
      found.push(vip);
      this.options.log?.(`vip: removing stale ${v.cidr} left by an earlier run`);
      await this.remove(vip);
    }
    return found;
  }

  /**
   * Stops the background announcements and the lease renewal: the addresses stay, for at most leaseS seconds
   * (for ever with leaseS 0).
   */
  close(): void {
    for (const ac of this.#bursts.values()) ac.abort();
    this.#bursts.clear();
    this.#held.clear();
    this.#armRenewal();
  }

  /** `ip addr replace|change` arguments: the address, its device, its lifetime (and `nodad` for IPv6). */
  #addrArgs(v: ParsedVip, dev: string): string[] {
    const lft = this.#leaseS > 0 ? String(this.#leaseS) : "forever";
    return [v.cidr, "dev", dev, ...(v.v6 ? ["nodad"] : []), "valid_lft", lft, "preferred_lft", lft];
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Renews while an address is held and the lease is on; stops otherwise. */
  #armRenewal(): void {
    const want = this.#leaseS > 0 && this.#held.size > 0;
    if (want && this.#renewTimer === undefined) {
      this.#renewTimer = setInterval(() => void this.#renew(), (this.#leaseS * 1000) / 3);
      this.#renewTimer.unref?.();
    } else if (!want && this.#renewTimer !== undefined) {
      clearInterval(this.#renewTimer);
      this.#renewTimer = undefined;
    }
  }

  async #renew(): Promise<void> {
    for (const [addr, { v, dev }] of [...this.#held]) {
      await this.#exclusive(async () => {
        if (this.#held.get(addr)?.dev !== dev) return; // removed (or moved) meanwhile
        try {
          // `ip addr change` creates a missing address as well: look first, to say when the lease had lapsed (this
          // process or `ip` itself stalled for leaseS, or someone removed it). It goes back without announcements.
          if (!(await this.holders(v.addr)).some((h) => h.dev === dev)) {
            this.options.log?.(`vip: ${v.cidr} was gone from ${dev} at renewal (lease lapsed or removed by hand): adding it back, without announcements`);
          }
          await this.#run(["ip", "addr", "change", ...this.#addrArgs(v, dev)]);
        } catch (e) {
          this.options.log?.(`vip: renewing ${v.cidr} on ${dev} failed (retried at the next renewal): ${(e as Error).message.split("\n")[0]}`);
        }
      });
    }
  }

  async #mac(dev: string): Promise<string> {
    const link = JSON.parse(await this.#run(["ip", "-j", "link", "show", "dev", dev])) as { address?: string }[];
    return link[0]?.address ?? "00:00:00:00:00:00";
  }

  #announceOnce(v: ParsedVip, dev: string, mac: string): void {
    try {
      this.#advertise(dev, mac, v.addr);
    } catch (e) {
      // Best effort: without it clients switch when their neighbour entry expires, the VIP still works.
      this.options.log?.(`vip: announcement of ${v.addr} on ${dev} failed: ${(e as Error).message}`);
    }
  }

  async #burst(
    v: ParsedVip,
    dev: string,
    mac: string,
    more: number,
    intervalMs: number,
    repeat: { after: number; count: number } | null,
    signal: AbortSignal,
  ): Promise<void> {
    for (let i = 0; i < more && !signal.aborted; i++) {
      await sleep(intervalMs, signal);
      if (!signal.aborted) this.#announceOnce(v, dev, mac);
    }
    if (!repeat || signal.aborted) return;
    await sleep(repeat.after, signal);
    if (!signal.aborted) await this.#burst(v, dev, mac, repeat.count, intervalMs, null, signal);
  }
}
