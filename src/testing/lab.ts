/**
 * The network-namespace lab: several "machines" on one Linux host, with the real kernel network stack.
 *
 * Layout (test layers: docs/architecture.md): one network namespace per node (`<prefix>n0`, `<prefix>n1`, ...) and per
 * client (`<prefix>c0`, ...), and a switch namespace `<prefix>sw` holding one Linux bridge per network
 * (`<prefix>br0`, ...; multicast snooping off, no STP). Each host has one veth pair per network: `eth<net>` in
 * the host, `<host ns>e<net>` on the bridge. Addresses come only from 198.18.0.0/15 and fd00:4844::/64:
 *
 * | what            | IPv4                | IPv6                     | MAC (hex)         |
 * |-----------------|---------------------|--------------------------|-------------------|
 * | node i, net k   | 198.18.k.(10+i)/24  | fd00:4844::k:(10+i)/112  | 02:48:46:kk:00:ii |
 * | client i, net k | 198.18.k.(200+i)/24 | fd00:4844::k:(200+i)/112 | 02:48:46:kk:01:ii |
 * | spare j (VIPs)  | 198.18.k.(100+j)    | fd00:4844::k:(100+j)     | (none)            |
 *
 * In IPv6 the decimal host number is written as hex digits, so node 3 on net 1 is `fd00:4844::1:13`. Each
 * network is a /112 inside fd00:4844::/64: with one /64 on every interface the kernel would route all IPv6
 * traffic out of the first interface, and the networks would not be independent.
 *
 * Processes run with `nsenter --net=/run/netns/<ns>` (not `ip netns exec`, which remounts /sys and hides
 * /sys/fs/bpf), each in its own process group so that a signal reaches it and its children, as a crash would.
 * Caveat of that choice: such a process sees the host's /sys, so /sys/class/net lists the *host's* interfaces,
 * not the namespace's. Read interface state through netlink (`ip -j link`) or /proc/net/* (per namespace),
 * or pass `{ ownSysfs: true }` to exec/spawn (a private mount namespace with the namespace's sysfs and the
 * host's /sys/fs/bpf kept). Namespaces share the file system and the process table: {@link Lab.dir} gives each
 * host a scratch directory, and `binds` can mount it at the same path for every node.
 * Faults: link down/up (host or switch side), nftables drops (one-way or both, per network or all),
 * SIGSTOP/SIGCONT/SIGKILL of a process group or of everything in a host ({@link Lab.signalHost}), restart
 * ({@link Lab.respawn}).
 *
 * Teardown: {@link Lab.destroy} in a `finally`; an exit/SIGINT/SIGTERM handler deletes the namespaces of a lab
 * still alive when the process ends; a marker `/run/holdfast-lab/<prefix>.pid` lets {@link cleanStaleLabs}
 * (and `scripts/lab-clean.sh`) delete the labs of processes that died without either. Hook-unit cgroups
 * (src/runtime/containment.ts) that the lab's killed daemons left go too, by rmdir only (the kernel refuses it for a
 * cgroup that still has processes): those named `holdfast.*.lab-<prefix>` (exec and spawn set `HOLDFAST_LAB_PREFIX`
 * for the processes they start, and a host marks its units' names with it) and those recorded in a state directory
 * under the lab's scratch directory.
 *
 * Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2, nftables, util-linux (nsenter), procps (sysctl).
 *
 * @example
 * const lab = await Lab.create({ nodes: 3, networks: 2 });
 * try {
 *   const p = lab.spawn(lab.nodes[0]!, ["node", "daemon.js"]);
 *   await p.waitForLine(/ready/, 5_000);
 *   await lab.drop(lab.nodes[0]!, lab.nodes[1]!, { oneWay: true });
 * } finally {
 *   await lab.destroy();
 * }
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, NotSupportedError, type ConfigProblem } from "../core/errors.js";
import {
  NETNS_DIR,
  SCRATCH_ROOT,
  cleanStaleLabsSync,
  deleteNamespacesSync,
  isLabNamespaceOf,
  killNamespaceProcesses,
  pidsInNamespaces,
  processGroupOf,
  registerLive,
  removeLabCgroups,
  removeScratchAndMarker,
  unregisterLive,
  writeMarker,
  type Teardown,
} from "./lab-cleanup.js";
import { LAB_ENV } from "../runtime/containment.js";
import { LabError, TrackedProcess, mustRun, runCommand, signalGroup, type ExecResult, type LabHost, type LabProcess } from "./lab-process.js";

export { LabError, MAX_RETAINED_LINES } from "./lab-process.js";
export type { ExecResult, LabHost, LabProcess } from "./lab-process.js";

/** Options of {@link Lab.create}. */
export interface LabOptions {
  /** Node namespaces `n0..n{N-1}`: 1 to {@link LAB_LIMITS}.nodes. */
  nodes: number;
  /** Client namespaces `c0..`: 0 to {@link LAB_LIMITS}.clients. Default 1. */
  clients?: number;
  /**
   * Independent L2 networks (one bridge each, e.g. a LAN and a dedicated heartbeat link); every node and
   * client is on each, as `eth0`, `eth1`, ... Default 1, at most {@link LAB_LIMITS}.networks.
   */
  networks?: number;
  /**
   * Also give every host an IPv6 address on each network (`nodad`: usable at once), in fd00:4844::net:0/112.
   * Default true.
   */
  ipv6?: boolean;
  /**
   * Prefix of every namespace and host-visible link name: 2 to 8 of `[a-z0-9]`, starting with a letter.
   * Default `"hf"` + 6 random base-36 characters (the form {@link cleanStaleLabs} recognises without a marker).
   */
  prefix?: string;
  /** Delete abandoned labs of dead processes before creating this one ({@link cleanStaleLabs}). Default true. */
  cleanStale?: boolean;
  /**
   * Mount a bpf filesystem on /sys/fs/bpf when none is mounted there, so that processes in the lab can pin
   * BPF objects. The mount is left in place (it is the standard location). Default true.
   */
  mountBpffs?: boolean;
}

/**
 * Mount options of {@link Lab.exec} and {@link Lab.spawn}. Either one runs the command in a private mount
 * namespace of its own (`unshare --mount --propagation slave`: the host's later mounts still show inside,
 * nothing mounted inside leaks out).
 */
export interface LabMountOptions {
  /**
   * Mount a sysfs of the host's network namespace on /sys, so that /sys/class/net shows the namespace's
   * interfaces (as `ip netns exec` does), and put the host's /sys/fs/bpf back on top of it so that BPF pins
   * stay shared. Other mounts under /sys (cgroups) are hidden. Default false.
   */
  ownSysfs?: boolean;
  /**
   * Bind mounts, target path (inside) -> source path (on the host), both absolute and existing: e.g. give
   * each node its own data directory at the same path. Default none.
   */
  binds?: Record<string, string>;
}

/** Options of {@link Lab.spawn}. */
export interface LabSpawnOptions extends LabMountOptions {
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** Working directory; default this process's. */
  cwd?: string;
}

/** Options of {@link Lab.exec} and {@link Lab.sh}. */
export interface LabExecOptions extends LabSpawnOptions {
  /** Kill the command's process group after this long and report code 124. Default 30 000 ms. */
  timeoutMs?: number;
  /** Written to the command's stdin (then closed). Default: stdin is /dev/null. */
  input?: string;
}

/**
 * Run by `sh -c` inside a fresh mount namespace: `$1` = 1 to mount the namespace's own sysfs, `$2` = number of
 * bind pairs, then the pairs (source, target), then the command. Keeps the pid (every step `exec`s).
 */
const PRIVATE_MOUNTS_SCRIPT = `set -e
own=$1; n=$2; shift 2
while [ "$n" -gt 0 ]; do mount --bind "$1" "$2"; shift 2; n=$((n - 1)); done
if [ "$own" = 1 ]; then
  keep=
  if mountpoint -q /sys/fs/bpf; then keep=$(mktemp -d /tmp/holdfast-lab-bpf.XXXXXX); mount --bind /sys/fs/bpf "$keep"; fi
  mount -t sysfs sysfs /sys
  if [ -n "$keep" ]; then mount --move "$keep" /sys/fs/bpf; rmdir "$keep"; fi
fi
exec "$@"`;

/** Bounds of {@link LabOptions}, set by the address plan (see the table in the module comment). */
export const LAB_LIMITS = { nodes: 90, clients: 55, networks: 16 } as const;

const KNOWN_OPTIONS = new Set(["nodes", "clients", "networks", "ipv6", "prefix", "cleanStale", "mountBpffs"]);

interface ResolvedLabOptions {
  nodes: number;
  clients: number;
  networks: number;
  ipv6: boolean;
  prefix: string;
  cleanStale: boolean;
  mountBpffs: boolean;
}

function randomPrefix(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return "hf" + [...randomBytes(6)].map((b) => alphabet[b % 36]).join("");
}

/** Checks and fills the options; throws a {@link ConfigError} naming every wrong field (nothing is created yet). */
export function resolveLabOptions(opts: LabOptions): ResolvedLabOptions {
  const problems: ConfigProblem[] = [];
  if (typeof opts !== "object" || opts === null) {
    throw new ConfigError("lab options", [{ path: "", value: opts, expected: "an object like { nodes: 3 }" }]);
  }
  const int = (path: keyof LabOptions, min: number, max: number, dflt: number | undefined): number => {
    const v = (opts as unknown as Record<string, unknown>)[path] ?? dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      problems.push({ path, value: (opts as unknown as Record<string, unknown>)[path], expected: `an integer from ${min} to ${max}` });
      return min;
    }
    return v;
  };
  const bool = (path: keyof LabOptions, dflt: boolean): boolean => {
    const v = (opts as unknown as Record<string, unknown>)[path] ?? dflt;
    if (typeof v !== "boolean") {
      problems.push({ path, value: v, expected: "a boolean" });
      return dflt;
    }
    return v;
  };
  const nodes = int("nodes", 1, LAB_LIMITS.nodes, undefined);
  const clients = int("clients", 0, LAB_LIMITS.clients, 1);
  const networks = int("networks", 1, LAB_LIMITS.networks, 1);
  const ipv6 = bool("ipv6", true);
  const cleanStale = bool("cleanStale", true);
  const mountBpffs = bool("mountBpffs", true);
  let prefix = opts.prefix ?? randomPrefix();
  if (typeof prefix !== "string" || !/^[a-z][a-z0-9]{1,7}$/.test(prefix)) {
    problems.push({ path: "prefix", value: opts.prefix, expected: "2 to 8 characters of [a-z0-9] starting with a letter" });
    prefix = "invalid";
  }
  for (const k of Object.keys(opts)) {
    if (!KNOWN_OPTIONS.has(k)) {
      problems.push({ path: k, value: (opts as unknown as Record<string, unknown>)[k], expected: `no such option (known: ${[...KNOWN_OPTIONS].join(", ")})` });
    }
  }
  if (problems.length > 0) throw new ConfigError("lab options", problems);
  return { nodes, clients, networks, ipv6, prefix, cleanStale, mountBpffs };
}

/** Deletes the namespaces of abandoned labs (creator process dead, or no marker); returns their names. */
export async function cleanStaleLabs(opts: { prefix?: string } = {}): Promise<string[]> {
  return cleanStaleLabsSync(opts);
}

/** Mounts bpffs on /sys/fs/bpf unless one is mounted there; returns true if it mounted it now. */
export async function ensureBpffs(): Promise<boolean> {
  const mounted = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .some((l) => {
      const f = l.split(" ");
      const sep = f.indexOf("-");
      return f[4] === "/sys/fs/bpf" && sep > 0 && f[sep + 1] === "bpf";
    });
  if (mounted) return false;
  await mustRun("mount", ["-t", "bpf", "bpf", "/sys/fs/bpf"]);
  return true;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

interface Cut {
  /** Namespace where the rule lives (the receiving host). */
  readonly at: LabHost;
  /** Host whose frames are dropped. */
  readonly from: LabHost;
  readonly net: number;
  /** Share of the frames dropped, in percent: 100 for a cut, less for a lossy link. */
  readonly pct: number;
}

/** A running lab. Create with {@link Lab.create}; always {@link Lab.destroy} it in a `finally`. */
export class Lab implements Teardown {
  readonly prefix: string;
  readonly nodes: readonly LabHost[];
  readonly clients: readonly LabHost[];
  /** Number of networks (bridges); valid `net` arguments are 0 to networks-1. */
  readonly networks: number;
  readonly ipv6: boolean;
  /** The switch namespace holding the bridges. */
  readonly switchNs: string;

  private readonly procs = new Set<TrackedProcess>();
  private readonly created: string[] = [];
  private cuts: Cut[] = [];
  private nftQueue: Promise<void> = Promise.resolve();
  private readonly spawnOptions = new WeakMap<LabProcess, LabSpawnOptions>();
  private destroyed = false;
  private ownsMarker = false;

  private constructor(o: ResolvedLabOptions) {
    this.prefix = o.prefix;
    this.networks = o.networks;
    this.ipv6 = o.ipv6;
    this.switchNs = `${o.prefix}sw`;
    const mk = (kind: "node" | "client", index: number): LabHost =>
      Object.freeze({ name: `${kind === "node" ? "n" : "c"}${index}`, ns: `${o.prefix}${kind === "node" ? "n" : "c"}${index}`, kind, index });
    this.nodes = Object.freeze(Array.from({ length: o.nodes }, (_, i) => mk("node", i)));
    this.clients = Object.freeze(Array.from({ length: o.clients }, (_, i) => mk("client", i)));
  }

  /**
   * Builds the whole lab. Options are checked first ({@link ConfigError}, nothing created); on any later failure
   * everything created so far is torn down and the error is rethrown.
   */
  static async create(opts: LabOptions): Promise<Lab> {
    const o = resolveLabOptions(opts);
    if (typeof process.getuid === "function" && process.getuid() !== 0) {
      throw new NotSupportedError("network namespaces", "the lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)");
    }
    if (o.cleanStale) cleanStaleLabsSync();
    const lab = new Lab(o);
    try {
      await lab.build(o);
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  /** Every host: nodes then clients. */
  get hosts(): readonly LabHost[] {
    return [...this.nodes, ...this.clients];
  }

  /** The host with this short name (`"n2"`, `"c0"`); throws a RangeError if there is none. */
  host(name: string): LabHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new RangeError(`lab ${this.prefix} has no host named ${JSON.stringify(name)}`);
    return h;
  }

  private async build(o: ResolvedLabOptions): Promise<void> {
    if (!writeMarker(this.prefix)) {
      throw new ConfigError("lab options", [{ path: "prefix", value: this.prefix, expected: "a prefix no other lab uses" }]);
    }
    this.ownsMarker = true;
    registerLive(this);
    const names = [this.switchNs, ...this.hosts.map((h) => h.ns)];
    const taken = names.filter((n) => existsSync(join(NETNS_DIR, n)));
    if (taken.length > 0) {
      throw new ConfigError("lab options", [{ path: "prefix", value: this.prefix, expected: `a prefix no namespace uses (found ${taken.join(", ")})` }]);
    }
    if (o.mountBpffs) {
      // Not fatal: everything but BPF pinning works without it, and BPF tests report what is missing.
      await ensureBpffs().catch(() => false);
    }
    for (const h of this.hosts) mkdirSync(this.dir(h), { recursive: true });

    // 1. All namespaces in one ip process.
    this.created.push(...names);
    await mustRun("ip", ["-batch", "-"], { input: names.map((n) => `netns add ${n}\n`).join("") });

    // 2. The switch: no IPv6 on it (no noise from the bridge itself), bridges, and every veth pair, created
    //    from here with the host end moved straight into its namespace under its final name.
    const sw: string[] = ["link set lo up"];
    for (let k = 0; k < this.networks; k++) {
      const br = this.bridge(k);
      sw.push(`link add ${br} type bridge stp_state 0 forward_delay 0 mcast_snooping 0`, `link set ${br} up`);
      for (const h of this.hosts) {
        const port = this.switchPort(h, k);
        sw.push(`link add ${port} type veth peer name ${this.iface(h, k)} address ${this.mac(h, k)} netns ${h.ns}`);
        sw.push(`link set ${port} master ${br} up`);
      }
    }
    await this.nsScript(
      this.switchNs,
      "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.keep_addr_on_down=1 && ip -batch -",
      sw.join("\n") + "\n",
    );

    // 3. Every host in parallel: sysctls first (no DAD, keep addresses on link down), then addresses and up.
    await Promise.all(
      this.hosts.map((h) => {
        const sysctls = ["net.ipv6.conf.all.keep_addr_on_down=1", "net.ipv6.conf.default.keep_addr_on_down=1", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"];
        const cmds = ["link set lo up"];
        for (let k = 0; k < this.networks; k++) {
          const dev = this.iface(h, k);
          sysctls.push(`net.ipv6.conf.${dev}.accept_dad=0`, `net.ipv6.conf.${dev}.keep_addr_on_down=1`);
          cmds.push(`addr add ${this.addr(h, k)}/${Lab.PREFIX_LEN4} dev ${dev}`);
          if (this.ipv6) cmds.push(`addr add ${this.addr6(h, k)}/${Lab.PREFIX_LEN6} dev ${dev} nodad`);
          cmds.push(`link set ${dev} up`);
        }
        return this.nsScript(h.ns, `sysctl -qw ${sysctls.join(" ")} && ip -batch -`, cmds.join("\n") + "\n");
      }),
    );
  }

  /** Runs `sh -c script` inside `ns`, failing with a LabError on a non-zero exit. */
  private async nsScript(ns: string, script: string, input?: string): Promise<string> {
    return mustRun("nsenter", [`--net=${join(NETNS_DIR, ns)}`, "--", "sh", "-c", script], input === undefined ? {} : { input });
  }

  private check(host: LabHost, net: number | undefined): number {
    if (this.destroyed) throw new LabError("HOLDFAST_LAB_DESTROYED", `lab ${this.prefix} is destroyed`);
    if (!isLabNamespaceOf(this.prefix, host.ns) || !this.hosts.some((h) => h.ns === host.ns)) {
      throw new RangeError(`host ${host.name} (${host.ns}) is not part of lab ${this.prefix}`);
    }
    const k = net ?? 0;
    if (!Number.isInteger(k) || k < 0 || k >= this.networks) {
      throw new RangeError(`net must be an integer from 0 to ${this.networks - 1} in lab ${this.prefix}, got ${net}`);
    }
    return k;
  }

  private hostNumber(host: LabHost): number {
    return host.kind === "node" ? 10 + host.index : 200 + host.index;
  }

  /** The bridge of network `net` inside the switch namespace. */
  bridge(net = 0): string {
    return `${this.prefix}br${net}`;
  }

  /** The switch-side end of the host's veth pair for `net` (inside the switch namespace). */
  switchPort(host: LabHost, net = 0): string {
    return `${host.ns}e${net}`;
  }

  /** Prefix length of each network's IPv4 subnet 198.18.net.0/24. */
  static readonly PREFIX_LEN4 = 24;
  /** Prefix length of each network's IPv6 subnet fd00:4844::net:0/112 (all inside fd00:4844::/64). */
  static readonly PREFIX_LEN6 = 112;

  /** IPv4 subnet of network `net`, with its length: `198.18.<net>.0/24`. */
  subnet(net = 0): string {
    this.checkSpare(0, net);
    return `198.18.${net}.0/${Lab.PREFIX_LEN4}`;
  }

  /** IPv6 subnet of network `net`, with its length: `fd00:4844::<net>:0/112`. */
  subnet6(net = 0): string {
    this.checkSpare(0, net);
    return `${net === 0 ? "fd00:4844::" : `fd00:4844::${net}:0`}/${Lab.PREFIX_LEN6}`;
  }

  /** IPv4 address (no length; see {@link subnet}) of `host` on network `net` (default 0). */
  addr(host: LabHost, net?: number): string {
    const k = this.checkAddr(host, net);
    return `198.18.${k}.${this.hostNumber(host)}`;
  }

  /** IPv6 address (no length; see {@link subnet6}) of `host` on `net` (default 0), in canonical text form. */
  addr6(host: LabHost, net?: number): string {
    const k = this.checkAddr(host, net);
    return k === 0 ? `fd00:4844::${this.hostNumber(host)}` : `fd00:4844::${k}:${this.hostNumber(host)}`;
  }

  /** MAC address of `host`'s interface on `net` (fixed by the lab, so that rules can name it in advance). */
  mac(host: LabHost, net?: number): string {
    const k = this.checkAddr(host, net);
    return `02:48:46:${hex2(k)}:${host.kind === "node" ? "00" : "01"}:${hex2(host.index)}`;
  }

  /**
   * A spare IPv4 address on `net` that no host uses (198.18.net.(100+index)), for VIPs. `index` 0 to 99.
   */
  spareAddr(index: number, net = 0): string {
    this.checkSpare(index, net);
    return `198.18.${net}.${100 + index}`;
  }

  /** A spare IPv6 address on `net` that no host uses (fd00:4844::net:(100+index) in hex digits), for VIPs. */
  spareAddr6(index: number, net = 0): string {
    this.checkSpare(index, net);
    return net === 0 ? `fd00:4844::${100 + index}` : `fd00:4844::${net}:${100 + index}`;
  }

  private checkSpare(index: number, net: number): void {
    if (!Number.isInteger(index) || index < 0 || index > 99) throw new RangeError(`spare address index must be 0..99, got ${index}`);
    if (!Number.isInteger(net) || net < 0 || net >= this.networks) throw new RangeError(`net must be 0..${this.networks - 1}, got ${net}`);
  }

  private checkAddr(host: LabHost, net: number | undefined): number {
    const k = net ?? 0;
    if (!this.hosts.some((h) => h.ns === host.ns)) throw new RangeError(`host ${host.name} (${host.ns}) is not part of lab ${this.prefix}`);
    if (!Number.isInteger(k) || k < 0 || k >= this.networks) throw new RangeError(`net must be an integer from 0 to ${this.networks - 1}, got ${net}`);
    return k;
  }

  /** Interface name inside the host's namespace for network `net`: `eth<net>`. */
  iface(_host: LabHost, net?: number): string {
    return `eth${net ?? 0}`;
  }

  /** A scratch directory for this host (created with the lab, deleted by destroy): give each node its own files. */
  dir(host: LabHost): string {
    return join(SCRATCH_ROOT, this.prefix, host.name);
  }

  /** The `nsenter` argv prefix that runs a command in `host`'s network namespace (for tools of your own). */
  nsenterArgs(host: LabHost): string[] {
    return ["nsenter", `--net=${join(NETNS_DIR, host.ns)}`, "--"];
  }

  /** The full argv (nsenter, and unshare when mounts are asked for) that runs `argv` in `host`. */
  private wrap(host: LabHost, argv: readonly string[], opts: LabMountOptions): string[] {
    const binds = Object.entries(opts.binds ?? {});
    if (!opts.ownSysfs && binds.length === 0) return [...this.nsenterArgs(host), ...argv];
    for (const [target, source] of binds) {
      if (!target.startsWith("/") || !source.startsWith("/")) {
        throw new RangeError(`binds need absolute paths, got ${JSON.stringify(target)} -> ${JSON.stringify(source)}`);
      }
    }
    return [
      ...this.nsenterArgs(host),
      "unshare",
      "--mount",
      "--propagation",
      "slave",
      "--",
      "sh",
      "-c",
      PRIVATE_MOUNTS_SCRIPT,
      "lab-mounts",
      opts.ownSysfs ? "1" : "0",
      String(binds.length),
      ...binds.flatMap(([target, source]) => [source, target]),
      ...argv,
    ];
  }

  /**
   * Runs `argv` to completion inside the host's namespace. Never throws on a non-zero exit: the code is in the
   * result (124 on timeout, default 30 s, after killing the command's process group). A background job it
   * starts (`sh(host, "daemon &")`) does not delay the result; it keeps running untracked until it ends,
   * {@link signalHost} or {@link destroy} (which kills everything in the lab's namespaces).
   */
  async exec(host: LabHost, argv: string[], opts: LabExecOptions = {}): Promise<ExecResult> {
    this.check(host, 0);
    if (argv.length === 0) throw new RangeError("exec needs a command");
    const [cmd, ...args] = this.wrap(host, argv, opts);
    return runCommand(cmd as string, args, {
      timeoutMs: opts.timeoutMs ?? 30_000,
      env: { ...process.env, [LAB_ENV]: this.prefix, ...opts.env },
      ...(opts.input === undefined ? {} : { input: opts.input }),
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    });
  }

  /** `bash -c script` inside the host's namespace (see {@link exec}). */
  sh(host: LabHost, script: string, opts: LabExecOptions = {}): Promise<ExecResult> {
    return this.exec(host, ["bash", "-c", script], opts);
  }

  /**
   * Starts `argv` inside the host's namespace, detached in its own process group, and tracks it until
   * {@link destroy}. `env` is added to this process's environment; `cwd` defaults to this process's.
   */
  spawn(host: LabHost, argv: string[], opts: LabSpawnOptions = {}): LabProcess {
    this.check(host, 0);
    if (argv.length === 0) throw new RangeError("spawn needs a command");
    const [cmd, ...args] = this.wrap(host, argv, opts);
    const p = new TrackedProcess(host, argv, cmd as string, args, { env: { ...process.env, [LAB_ENV]: this.prefix, ...opts.env }, ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }) });
    this.procs.add(p);
    this.spawnOptions.set(p, { ...opts });
    void p.exited.then(() => {
      // Forget it once it is gone for good (leader exited and no group member holds its pipes).
      const forget = (): void => {
        if (p.done) this.procs.delete(p);
        else setTimeout(forget, 1_000).unref();
      };
      forget();
    });
    return p;
  }

  /**
   * Starts `p`'s command again on the same host with the same options (a node restarting after a crash).
   * Kills what is left of `p`'s process group first.
   */
  respawn(p: LabProcess): LabProcess {
    signalGroup(p.pid, "SIGKILL");
    return this.spawn(p.host, [...p.argv], this.spawnOptions.get(p) ?? {});
  }

  /** The processes spawned in `host` (or in the whole lab) that are still tracked. */
  processes(host?: LabHost): LabProcess[] {
    return [...this.procs].filter((p) => host === undefined || p.host.ns === host.ns);
  }

  /**
   * Signals every process inside the host's namespace, spawned by the lab or not (default SIGKILL: the
   * machine crashed; SIGSTOP: it froze). Returns the pids signalled.
   */
  signalHost(host: LabHost, signal: NodeJS.Signals = "SIGKILL"): number[] {
    this.check(host, 0);
    // Who is inside (and in which group) is read before anything is signalled: a killed process leaves /proc.
    const inside = pidsInNamespaces([host.ns]).map((pid) => ({ pid, pgid: processGroupOf(pid) }));
    // The lab's own process groups too: a process spawned a moment ago may not have entered the namespace yet.
    const groups = [...this.procs].filter((p) => p.host.ns === host.ns && !p.done && signalGroup(p.pid, signal)).map((p) => p.pid);
    const pids = inside.filter((x) => x.pgid !== undefined && !groups.includes(x.pgid)).map((x) => x.pid);
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
      } catch {
        // gone meanwhile
      }
    }
    return [...groups, ...pids];
  }

  /**
   * Sets the host's interface on `net` down (default) — the node sees its own link down — or, with
   * `side: "switch"`, the switch port: the cable is pulled and the host sees NO-CARRIER. Addresses stay
   * (keep_addr_on_down).
   */
  async linkDown(host: LabHost, net?: number, opts: { side?: "host" | "switch" } = {}): Promise<void> {
    await this.setLink(host, net, opts.side ?? "host", "down");
  }

  /** Undoes {@link linkDown} (same `side`). */
  async linkUp(host: LabHost, net?: number, opts: { side?: "host" | "switch" } = {}): Promise<void> {
    await this.setLink(host, net, opts.side ?? "host", "up");
  }

  private async setLink(host: LabHost, net: number | undefined, side: "host" | "switch", state: "up" | "down"): Promise<void> {
    const k = this.check(host, net);
    if (side === "switch") await mustRun("ip", ["-n", this.switchNs, "link", "set", this.switchPort(host, k), state]);
    else await mustRun("ip", ["-n", host.ns, "link", "set", this.iface(host, k), state]);
  }

  /**
   * Drops every packet from `from` to `to` (IPv4 and IPv6, to any address of `to` including VIPs; IPv6
   * neighbour discovery passes and ARP is not affected) with an nftables rule on the input hook of `to`'s
   * namespace (table `inet holdfast_lab`), matching `from`'s MAC on `to`'s interface: the packets leave
   * `from` normally and are lost on the way, as on a faulty link. Also
   * `to` -> `from` unless `oneWay`. `net`: one network, or every network when omitted (a full cut between
   * the two hosts). Idempotent.
   */
  async drop(from: LabHost, to: LabHost, opts: { net?: number; oneWay?: boolean } = {}): Promise<void> {
    await this.setLoss(from, to, 100, opts, "drop");
  }

  /**
   * Like {@link drop} but loses only `percent` of the frames, each independently at random (nftables `numgen
   * random`; this kernel has no netem, so there is no delay emulation). `percent` 0 removes the loss, 100 is
   * a drop. Replaces any earlier drop or loss of the same direction and network.
   */
  async loss(from: LabHost, to: LabHost, percent: number, opts: { net?: number; oneWay?: boolean } = {}): Promise<void> {
    if (!Number.isInteger(percent) || percent < 0 || percent > 100) throw new RangeError(`loss percent must be an integer from 0 to 100, got ${percent}`);
    await this.setLoss(from, to, percent, opts, "loss");
  }

  private async setLoss(from: LabHost, to: LabHost, pct: number, opts: { net?: number; oneWay?: boolean }, what: string): Promise<void> {
    this.check(from, opts.net);
    this.check(to, opts.net);
    if (from.ns === to.ns) throw new RangeError(`${what} needs two different hosts, got ${from.name} twice`);
    const nets = opts.net === undefined ? [...Array(this.networks).keys()] : [opts.net];
    const set: Cut[] = [];
    for (const net of nets) {
      set.push({ at: to, from, net, pct });
      if (!opts.oneWay) set.push({ at: from, from: to, net, pct });
    }
    const same = (x: Cut, c: Cut): boolean => x.at.ns === c.at.ns && x.from.ns === c.from.ns && x.net === c.net;
    await this.changeCuts((cuts) => [...cuts.filter((x) => !set.some((c) => same(x, c))), ...set.filter((c) => c.pct > 0)]);
  }

  /** Cuts every pair across the two groups, both ways, on every network (or on `net`). */
  async partition(a: readonly LabHost[], b: readonly LabHost[], opts: { net?: number } = {}): Promise<void> {
    for (const x of a) for (const y of b) await this.drop(x, y, opts);
  }

  /**
   * Removes drops and losses: all of them without arguments; every drop to or from `from` with one argument; the drops
   * between `from` and `to` (both directions, every network) with two.
   */
  async heal(from?: LabHost, to?: LabHost): Promise<void> {
    if (from) this.check(from, 0);
    if (to) this.check(to, 0);
    const involves = (c: Cut, h: LabHost): boolean => c.at.ns === h.ns || c.from.ns === h.ns;
    await this.changeCuts((cuts) =>
      cuts.filter((c) => {
        if (!from) return false;
        if (!to) return !involves(c, from);
        return !(involves(c, from) && involves(c, to));
      }),
    );
  }

  /** The drops and losses in force, as `from->to@net` strings (`from->to@net 25%` for a loss), for logs and assertions. */
  drops(): string[] {
    return this.cuts.map((c) => `${c.from.name}->${c.at.name}@${c.net}${c.pct < 100 ? ` ${c.pct}%` : ""}`);
  }

  /** Applies a change to the set of cuts, rewriting (atomically, per namespace) every namespace whose set changed. */
  private changeCuts(change: (cuts: Cut[]) => Cut[]): Promise<void> {
    const run = async (): Promise<void> => {
      const before = this.cuts;
      const after = change([...before]);
      const key = (c: Cut): string => `${c.at.ns}|${c.from.ns}|${c.net}|${c.pct}`;
      const beforeKeys = new Set(before.map(key));
      const afterKeys = new Set(after.map(key));
      const touched = new Set<string>();
      for (const c of before) if (!afterKeys.has(key(c))) touched.add(c.at.ns);
      for (const c of after) if (!beforeKeys.has(key(c))) touched.add(c.at.ns);
      await Promise.all(
        [...touched].map((ns) => {
          const host = this.hosts.find((h) => h.ns === ns) as LabHost;
          const mine = after.filter((c) => c.at.ns === ns);
          return this.applyCuts(host, mine);
        }),
      );
      this.cuts = after;
    };
    const next = this.nftQueue.then(run, run);
    this.nftQueue = next.catch(() => undefined);
    return next;
  }

  private async applyCuts(host: LabHost, cuts: readonly Cut[]): Promise<void> {
    // Declared again on every change (the `add` forms are idempotent) and the chain rewritten, all in one
    // nft transaction: correct even if something in the namespace flushed the ruleset meanwhile. The rules
    // sit on the receiver's input hook, not the sender's output hook: a packet dropped on output fails the
    // sender's send() with EPERM, which a real faulty link never does.
    const lines = [
      "add table inet holdfast_lab",
      "add set inet holdfast_lab cut { type ifname . ether_addr; }",
      "add chain inet holdfast_lab input { type filter hook input priority -300; policy accept; }",
      "flush chain inet holdfast_lab input",
      // Neighbour discovery passes, as ARP does (not seen by the inet family): a one-way cut must not stop
      // the other direction from resolving addresses.
      "add rule inet holdfast_lab input icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept",
      "add rule inet holdfast_lab input iifname . ether saddr @cut counter drop",
      "flush set inet holdfast_lab cut",
    ];
    const full = cuts.filter((c) => c.pct >= 100);
    if (full.length > 0) {
      const elems = full.map((c) => `"${this.iface(host, c.net)}" . ${this.mac(c.from, c.net)}`);
      lines.push(`add element inet holdfast_lab cut { ${elems.join(", ")} }`);
    }
    for (const c of cuts.filter((x) => x.pct < 100)) {
      lines.push(`add rule inet holdfast_lab input iifname "${this.iface(host, c.net)}" ether saddr ${this.mac(c.from, c.net)} numgen random mod 100 < ${c.pct} counter drop`);
    }
    await this.nsScript(host.ns, "nft -f -", lines.join("\n") + "\n");
  }

  /**
   * Kills every spawned process group and every other process left in the lab's namespaces, then deletes
   * the namespaces (with every link and rule in them), the lab's empty hook-unit cgroups, the scratch directories
   * and the marker. Idempotent, never throws.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      const waits: Promise<unknown>[] = [];
      for (const p of this.procs) {
        signalGroup(p.pid, "SIGKILL");
        waits.push(p.exited);
      }
      killNamespaceProcesses(this.created);
      await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 3_000).unref())]);
      // A killed process leaves its cgroup a moment after SIGKILL: retry the rmdir of the lab's hook units briefly.
      for (let i = 0; i < 20 && this.ownsMarker && removeLabCgroups(this.prefix).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    } catch {
      // carry on: the namespaces must go whatever happened
    }
    this.teardownSync();
  }

  /** Synchronous teardown (also run from the exit handler). Idempotent, never throws. */
  teardownSync(): void {
    this.destroyed = true;
    try {
      for (const p of this.procs) if (!p.done) signalGroup(p.pid, "SIGKILL");
      this.procs.clear();
      // Only what this lab created (names are recorded before `ip netns add` runs, so a failure halfway
      // leaves nothing behind): never a namespace that merely shares the prefix.
      killNamespaceProcesses(this.created);
      deleteNamespacesSync(this.created);
      // Before the scratch directory goes: its state directories record where their units live.
      if (this.ownsMarker) removeLabCgroups(this.prefix);
      if (this.ownsMarker) removeScratchAndMarker(this.prefix);
      this.ownsMarker = false;
    } catch {
      // never throw from teardown
    }
    unregisterLive(this);
  }
}
