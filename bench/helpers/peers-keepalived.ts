// bench:peers — keepalived (Debian's) VRRP failover in lab namespaces: n0 (priority 150) and n1 (priority 100)
// hold one VRRP instance for the VIP; both run the same HTTP app (bench/helpers/app.mts, answers the node id).
// Each trial kills the master n0 (SIGKILL of every process in its namespace: keepalived and the app, the machine
// dies) or sets its link down, and measures the time until the client's probes are answered by n1. The master is
// then restored (preemption gives the VIP back to n0) before the next trial.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabHost, LabProcess } from "../../src/testing/lab.js";
import { measureFailover, until } from "./peers-failover.js";

export type Fault = "kill" | "link";

export interface KeepalivedVariant {
  /** Label in the table. */
  name: string;
  /** advert_int in seconds. */
  advertInt: number;
  /** VRRP protocol version: 2 accepts whole seconds only; 3 accepts centiseconds. */
  version: 2 | 3;
}

export interface KeepalivedTrials {
  variant: KeepalivedVariant;
  kill: number[];
  link: number[];
}

function conf(host: LabHost, v: KeepalivedVariant, vip: string, priority: number): string {
  return `global_defs {
  router_id ${host.name}
  vrrp_version ${v.version}
  enable_script_security
}
vrrp_instance HF {
  state BACKUP
  interface eth0
  virtual_router_id 77
  priority ${priority}
  advert_int ${v.advertInt}
  virtual_ipaddress {
    ${vip}/24 dev eth0
  }
}
`;
}

export class KeepalivedPair {
  private readonly procs = new Map<LabHost, { keepalived: LabProcess; app: LabProcess }>();
  private readonly lines = new Map<LabHost, string[]>();

  constructor(
    private readonly lab: Lab,
    private readonly repo: string,
    private readonly vip: string,
    private readonly variant: KeepalivedVariant,
  ) {}

  private get nodes(): [LabHost, LabHost] {
    return this.lab.nodes as [LabHost, LabHost];
  }

  private dir(h: LabHost): string {
    return join(this.lab.dir(h), "keepalived");
  }

  /** Starts the app and keepalived on `h`. */
  startNode(h: LabHost): void {
    const d = this.dir(h);
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
    const cfg = join(d, "keepalived.conf");
    writeFileSync(cfg, conf(h, this.variant, this.vip, h === this.nodes[0] ? 150 : 100));
    const app = this.lab.spawn(h, [process.execPath, "--import", "tsx", join(this.repo, "bench/helpers/app.mts"), h.name, "80"], { cwd: this.repo });
    const keepalived = this.lab.spawn(h, [
      "keepalived", "--dont-fork", "--log-console", "--vrrp", "--use-file", cfg,
      "--pid", join(d, "keepalived.pid"), "--vrrp_pid", join(d, "vrrp.pid"), "--checkers_pid", join(d, "checkers.pid"),
    ]);
    const lines: string[] = [];
    this.lines.set(h, lines);
    const collect = (s: NodeJS.ReadableStream) => s.on("data", (b: Buffer) => lines.push(...b.toString().split("\n").filter((l) => l.length > 0)));
    collect(keepalived.stdout);
    collect(keepalived.stderr);
    this.procs.set(h, { keepalived, app });
  }

  /** keepalived's own log lines on `h` (stdout and stderr), e.g. for the state transitions. */
  log(h: LabHost): readonly string[] {
    return this.lines.get(h) ?? [];
  }

  private async hasVip(h: LabHost): Promise<boolean> {
    const r = await this.lab.exec(h, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    return r.stdout.includes(` ${this.vip}/`);
  }

  private async clientReaches(node: string): Promise<boolean> {
    const r = await this.lab.exec(this.lab.clients[0] as LabHost, ["curl", "-s", "-m", "0.5", `http://${this.vip}/`]);
    return r.code === 0 && r.stdout.trim() === node;
  }

  /** Waits until n0 alone holds the VIP and the client reaches n0 through it. */
  async settled(timeoutMs = 30_000): Promise<void> {
    const [n0, n1] = this.nodes;
    const client = this.lab.clients[0] as LabHost;
    await until(async () => (await this.hasVip(n0)) && !(await this.hasVip(n1)), timeoutMs, `keepalived: VIP on ${n0.name} only`);
    // A master that was master all along does not announce itself again when the other one steps down: the
    // client's neighbour entry may still name n1 (a restoring step between trials, not part of any measurement).
    await this.lab.exec(client, ["ip", "neigh", "flush", "to", this.vip]);
    await until(() => this.clientReaches(n0.name), timeoutMs, `keepalived: client reaches ${n0.name} through the VIP`);
  }

  async start(): Promise<void> {
    for (const h of this.nodes) this.startNode(h);
    await this.settled(60_000);
  }

  /** One trial: fault on the master n0, time until n1 answers, then n0 restored as master. */
  async trial(fault: Fault): Promise<number> {
    const [n0, n1] = this.nodes;
    const { ms } = await measureFailover({
      lab: this.lab,
      repo: this.repo,
      client: this.lab.clients[0] as LabHost,
      vip: this.vip,
      port: 80,
      from: n0.name,
      to: n1.name,
      limitMs: 20_000,
      fault: async () => {
        if (fault === "kill") this.lab.signalHost(n0, "SIGKILL");
        else await this.lab.linkDown(n0);
      },
    });
    if (fault === "kill") {
      const p = this.procs.get(n0);
      await Promise.all([p?.keepalived.exited, p?.app.exited]);
      // SIGKILL leaves the VIP on the dead master's interface (as on a machine that hangs); a reboot clears it.
      await this.lab.exec(n0, ["ip", "addr", "del", `${this.vip}/24`, "dev", "eth0"]);
      this.startNode(n0);
    } else {
      await this.lab.linkUp(n0);
    }
    await this.settled();
    return ms;
  }

  async stop(): Promise<void> {
    for (const [h, p] of this.procs) {
      p.keepalived.kill("SIGTERM");
      p.app.kill("SIGKILL");
      await Promise.all([p.keepalived.exited, p.app.exited]);
      await this.lab.exec(h, ["ip", "addr", "del", `${this.vip}/24`, "dev", "eth0"]);
    }
    this.procs.clear();
  }
}

/** `trials` of each fault for one variant. */
export async function keepalivedTrials(lab: Lab, repo: string, vip: string, variant: KeepalivedVariant, trials: number, log: (s: string) => void): Promise<KeepalivedTrials> {
  const pair = new KeepalivedPair(lab, repo, vip, variant);
  const out: KeepalivedTrials = { variant, kill: [], link: [] };
  try {
    await pair.start();
    for (const fault of ["kill", "link"] as const) {
      for (let t = 0; t < trials; t++) {
        const ms = await pair.trial(fault);
        out[fault].push(ms);
        log(`  keepalived ${variant.name} ${fault} ${t + 1}/${trials}: ${ms} ms`);
      }
    }
  } finally {
    await pair.stop();
  }
  return out;
}
