// Runs a program on each lab node and follows its JSON event lines: examples/membership-node.ts by default, an
// example node (`program`), or the shipped daemon (`daemon`: dist/cli.js with a config file per node and --trace,
// whose lines carry the same `type`s). Shared by the lab tests, the demo and the benches.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { generateKey } from "../../../src/runtime/crypto.js";
import type { Lab, LabHost, LabProcess } from "../../../src/testing/lab.js";
import { daemonApi } from "../../../bench/helpers/mirror-control.js";

export const REPO = resolve(import.meta.dirname, "../../..");

export interface NodeLine {
  t: number;
  type: string;
  node?: string;
  cause?: string;
  reason?: string;
  members?: string[];
  agreed?: boolean;
  epoch?: number;
  incarnation?: number;
  [k: string]: unknown;
}

export class ClusterNode {
  lines: NodeLine[] = [];
  proc: LabProcess | null = null;
  private waiters: { pred: (l: NodeLine) => boolean; from: number; resolve: (l: NodeLine) => void }[] = [];
  constructor(
    readonly id: string,
    readonly host: LabHost,
  ) {}

  attach(proc: LabProcess): void {
    this.proc = proc;
    void (async () => {
      for await (const raw of proc.lines()) {
        let l: NodeLine;
        try {
          l = JSON.parse(raw) as NodeLine;
        } catch {
          continue;
        }
        // The daemon's own lines (kind "daemon") say `event`; its ready line is every program's `ready`.
        if (l.type === undefined && (l as { kind?: unknown }).kind === "daemon" && (l as { event?: unknown }).event === "ready") l.type = "ready";
        this.lines.push(l);
        const idx = this.lines.length - 1;
        this.waiters = this.waiters.filter((w) => {
          if (idx >= w.from && w.pred(l)) {
            w.resolve(l);
            return false;
          }
          return true;
        });
      }
    })();
  }

  /** Resolves with the first line from index `from` on that matches; rejects after `timeoutMs`. */
  waitFor(pred: (l: NodeLine) => boolean, timeoutMs: number, from = 0, what = "event"): Promise<NodeLine> {
    const found = this.lines.slice(from).find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((res, rej) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        rej(new Error(`${this.id}: no ${what} within ${timeoutMs} ms; last lines:\n${this.lines.slice(-8).map((l) => JSON.stringify(l)).join("\n")}`));
      }, timeoutMs);
      const done = (l: NodeLine) => {
        clearTimeout(timer);
        res(l);
      };
      this.waiters.push({ pred, from, resolve: done });
    });
  }

  mark(): number {
    return this.lines.length;
  }
}

export interface ClusterOptions {
  networks?: number;
  preset?: "lan" | "wan" | "slow";
  port?: number;
  /** Use the lab's nodes [0, count). Default all. */
  count?: number;
  /** Program to run on each node (path relative to the repository). Default examples/membership-node.ts. */
  program?: string;
  /** Extra arguments for a node's program. */
  args?: (host: LabHost) => string[];
  /**
   * Run the shipped daemon (`node dist/cli.js daemon --config FILE --trace`; build with `npx tsup` first) instead
   * of a program: this gives each node's configuration beyond `cluster` and `node` (modules, farm, replication,
   * directories, api), which the harness fills in from the cluster it made (id, key file, port, preset, nodes).
   */
  daemon?: (host: LabHost) => Record<string, unknown>;
}

/** A membership cluster of real processes, one per lab node. */
export class MembershipCluster {
  readonly nodes: ClusterNode[];
  readonly dir: string;
  readonly configPath: string;
  private readonly cluster: { clusterId: string; key: string; port: number; preset: string; nodes: { id: string; addresses: string[] }[] };
  /** Daemon mode: the admin token of every node's control API (127.0.0.1:9453 in its namespace). */
  readonly token = randomBytes(16).toString("hex");

  private constructor(
    readonly lab: Lab,
    hosts: readonly LabHost[],
    readonly opts: ClusterOptions,
  ) {
    const networks = opts.networks ?? 1;
    this.dir = mkdtempSync(join(tmpdir(), "holdfast-cluster-"));
    this.configPath = join(this.dir, "cluster.json");
    const cfg = {
      clusterId: `lab-${lab.prefix}`,
      key: generateKey(),
      port: opts.port ?? 4844,
      preset: opts.preset ?? "lan",
      nodes: hosts.map((h) => ({ id: h.name, addresses: [...Array(networks).keys()].map((n) => lab.addr(h, n)) })),
    };
    writeFileSync(this.configPath, JSON.stringify(cfg, null, 2), { mode: 0o600 });
    writeFileSync(join(this.dir, "cluster.key"), cfg.key + "\n", { mode: 0o600 });
    this.cluster = cfg;
    this.nodes = hosts.map((h) => new ClusterNode(h.name, h));
  }

  static async start(lab: Lab, opts: ClusterOptions = {}): Promise<MembershipCluster> {
    const hosts = lab.nodes.slice(0, opts.count ?? lab.nodes.length);
    const c = new MembershipCluster(lab, hosts, opts);
    for (const n of c.nodes) c.spawn(n);
    await Promise.all(c.nodes.map((n) => n.waitFor((l) => l.type === "ready", 30_000, 0, "ready")));
    return c;
  }

  spawn(n: ClusterNode): void {
    if (this.opts.daemon) {
      const c = this.cluster;
      const file = join(this.dir, `${n.id}.json`);
      const api = { tokens: [{ name: "lab", role: "admin", sha256: createHash("sha256").update(this.token).digest("hex") }], socket: this.apiSocket(n) };
      const cfg = { cluster: { id: c.clusterId, keyFile: join(this.dir, "cluster.key"), port: c.port, preset: c.preset, nodes: c.nodes }, node: n.id, api, ...this.opts.daemon(n.host) };
      writeFileSync(file, JSON.stringify(cfg, null, 2), { mode: 0o600 });
      n.attach(this.lab.spawn(n.host, [process.execPath, join(REPO, "dist", "cli.js"), "daemon", "--config", file, "--trace"], { cwd: REPO }));
      return;
    }
    // HOLDFAST_PROGRAM_ROOT: run the programs from a vendor's project instead (scripts/vendor-test.sh copies the
    // examples into one where "holdfast" is the installed tarball, and tsx is installed beside it).
    const root = process.env.HOLDFAST_PROGRAM_ROOT ?? REPO;
    const program = join(root, this.opts.program ?? "examples/membership-node.ts");
    const extra = this.opts.args?.(n.host) ?? [];
    const proc = this.lab.spawn(n.host, [process.execPath, "--import", "tsx", program, "--config", this.configPath, "--node", n.id, ...extra], { cwd: root });
    n.attach(proc);
  }

  /** Starts a node again (after a kill) and waits until it is ready. */
  async restart(n: ClusterNode): Promise<number> {
    const from = n.mark();
    this.spawn(n);
    await n.waitFor((l) => l.type === "ready", 30_000, from, "ready after restart");
    return from;
  }

  /** Daemon mode: the unix socket a node's control API is also served on (reachable from outside its namespace). */
  apiSocket(n: ClusterNode): string {
    return join(this.dir, `${n.id}.api.sock`);
  }

  /**
   * Daemon mode: runs a module command through the node's control API (as `holdfast CMD MODULE` would). Resolves
   * with the API's answer; rejects when it refused or did not answer within `timeoutMs`.
   */
  async command(n: ClusterNode, module: string, cmd: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const r = await daemonApi(this.apiSocket(n), this.token, "POST", `/api/v1/modules/${encodeURIComponent(module)}/commands/${encodeURIComponent(cmd)}`, timeoutMs);
    if (r === undefined) throw new Error(`${n.id}: ${cmd} ${module}: no answer within ${timeoutMs} ms`);
    if (r.error !== undefined) throw new Error(`${n.id}: ${cmd} ${module} refused: ${JSON.stringify(r)}`);
    return r;
  }

  node(id: string): ClusterNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Waits until each of `who` reports an agreed view with exactly `members`. */
  async waitView(who: ClusterNode[], members: string[], timeoutMs: number, from?: Map<ClusterNode, number>): Promise<void> {
    const want = [...members].sort().join(",");
    await Promise.all(
      who.map((n) => n.waitFor((l) => l.type === "viewChange" && l.agreed === true && (l.members ?? []).join(",") === want, timeoutMs, from?.get(n) ?? 0, `agreed view [${want}]`)),
    );
  }

  marks(): Map<ClusterNode, number> {
    return new Map(this.nodes.map((n) => [n, n.mark()]));
  }

  /** Stops every node process (SIGKILL) and removes the config directory. */
  async stop(): Promise<void> {
    for (const n of this.nodes) n.proc?.kill("SIGKILL");
    await Promise.all(this.nodes.map((n) => n.proc?.exited));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
