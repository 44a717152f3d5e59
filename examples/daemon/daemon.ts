/**
 * The reference daemon's core: runs the modules of a {@link DaemonConfig} on this node exactly as an SDK
 * user would (the module engine's {@link Module}, the checkers' {@link CheckerGroup}, {@link Membership}),
 * and wires them together:
 *
 * - each module's report (`advertise`) goes into this node's heartbeats (`membership.setMeta`), in an
 *   envelope `{ r: { <module>: report }, x: { <module>: { t: transient, why: reason } } }` (the `x` part only
 *   feeds the other nodes' state pages; modules read `r`);
 * - each agreed view goes to every module (`module.view`), then the latest report of every member in it
 *   (the engine forgets reports of nodes that left a view, so they are fed again after each view);
 * - each peer's new metadata goes to the modules (`module.peerReport`);
 * - checker verdicts go to their module; the checkers run while the module is not STOP, and are
 *   re-created when the module asks for a reset (`resetCheckers`: the runner has no reset of its own);
 * - extensions (the farm and mirror wiring, later) attach to modules and add details and metrics.
 *
 * Shutdown ({@link Daemon.stop}): every module is stopped (its stop hooks run), bounded in time, then
 * force-stopped if still running; checkers are stopped; the membership leaves (peers see `left` at once).
 */
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { CheckerGroup } from "../../src/checkers/group.js";
import { CommandRefusedError, HoldfastError } from "../../src/core/errors.js";
import type { View } from "../../src/core/membership/membership.js";
import type { ResolvedModule } from "../../src/core/module/config.js";
import type { ModuleCommand, ModuleReport, ModuleState, ModuleStatus } from "../../src/core/module/types.js";
import { FileModuleStore, MemoryVipDriver, Module, type VipDriver } from "../../src/runtime/module.js";
import { Membership } from "../../src/runtime/membership.js";
import { requireNodeId, type DaemonConfig } from "./config.js";
import { BUILTIN_EXTENSIONS } from "./extensions.js";
import { IpCommandVipDriver } from "./vip.js";

/** One Prometheus sample an extension exposes. */
export interface MetricSample {
  readonly name: string;
  readonly help: string;
  readonly type: "gauge" | "counter";
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

/** What an extension adds to one module. */
export interface ModuleExtension {
  /**
   * Extra data for the state API and the console, e.g. `replication: { state, percent, bytes }` (the
   * console shows it as the resync progress) or `buckets: { owned: number[], total: 256 }` (the farm map).
   */
  details?(): Record<string, unknown>;
  /** Extra Prometheus samples. */
  metrics?(): MetricSample[];
  /** Called at daemon shutdown, after the module is stopped. */
  close?(): Promise<void>;
  /** Takes over the module's VIPs (e.g. the farm: VIP on every node + filter), instead of the daemon's driver. */
  readonly vip?: VipDriver;
  /**
   * Runs an extension command (e.g. the mirror's `resync`): returns a line for the module's log, throws a
   * {@link CommandRefusedError} when it cannot run here. Absent: the command is refused for this module.
   */
  command?(cmd: ExtensionCommand): string;
}

export interface ExtensionContext {
  readonly daemon: Daemon;
  readonly module: Module;
  readonly nodeId: string;
  readonly config: DaemonConfig;
}

/** What {@link DaemonExtension.prepare} gets: a module's definition before the module exists. */
export interface PrepareContext {
  readonly daemon: Daemon;
  readonly definition: ResolvedModule;
  readonly nodeId: string;
  readonly config: DaemonConfig;
}

/**
 * Wires a capability into modules (e.g. farm: VIP + filter + buckets; mirror: replication). `prepare` (optional)
 * is called once per module before the module is created and may return a changed definition (e.g. the mirror
 * wiring weaves its data path into the hooks); each extension sees the previous one's result. `attach` is called
 * once per module, after it is created and before anything starts. Return undefined from either when the module
 * is not yours.
 */
export interface DaemonExtension {
  readonly name: string;
  prepare?(ctx: PrepareContext): ResolvedModule | undefined | Promise<ResolvedModule | undefined>;
  attach(ctx: ExtensionContext): ModuleExtension | undefined | Promise<ModuleExtension | undefined>;
}

export interface DaemonOptions {
  /** Capabilities that attach to modules. */
  readonly extensions?: readonly DaemonExtension[];
  /** VIP driver of every module. Default: iproute2 (`ip addr`) + gratuitous ARP; tests may pass a memory one. */
  readonly vip?: VipDriver;
  /** Membership incarnation (must grow at each start). Default: wall-clock ms. */
  readonly incarnation?: number;
}

/** A module as the daemon runs it. */
export interface ModuleHost {
  readonly module: Module;
  checkers: CheckerGroup | undefined;
  readonly extensions: ModuleExtension[];
  /** Counters for /metrics. */
  readonly counts: { transitions: Map<string, number>; failovers: number; commands: Map<string, number> };
}

/** One node's view of one module, as the state API shows it. */
export interface ModuleView {
  readonly state: ModuleState;
  readonly ready: boolean;
  readonly transient: boolean;
  readonly next?: ModuleState;
  readonly reason: string;
  readonly details?: Record<string, unknown>;
}

/** What `GET /api/v1/state` returns. */
export interface ClusterState {
  readonly cluster: string;
  readonly node: string;
  readonly time: string;
  readonly view: { readonly epoch: number; readonly agreed: boolean; readonly members: readonly string[] };
  readonly nodes: readonly {
    readonly id: string;
    readonly self: boolean;
    /** In this node's agreed view. */
    readonly up: boolean;
    readonly apiUrl: string;
    readonly modules: Readonly<Record<string, ModuleView>>;
  }[];
  readonly modules: readonly {
    readonly name: string;
    readonly kind: "farm" | "mirror";
    readonly vips: readonly string[];
    readonly checkers: readonly { checker: string; kind: string; state: string; reason: string | undefined }[];
  }[];
}

interface MetaEnvelope {
  r?: Record<string, ModuleReport>;
  x?: Record<string, { t?: boolean; why?: string }>;
}

export interface DaemonEvents {
  /** A membership event, already written to `membership.jsonl`. */
  membership: (line: Record<string, unknown>) => void;
  /** A module's status changed. */
  moduleState: (module: string, status: ModuleStatus) => void;
  error: (err: Error) => void;
}

/**
 * Module commands the API and CLI accept. `resync` (a checksum pass: blocks that differ) and `fullsync` (the whole
 * tree) go to the module's extension (a mirror with replicated data, on its primary); the others to the module.
 */
export const COMMANDS = ["start", "stop", "restart", "stopstart", "swap", "prim", "second", "forcestop", "resync", "fullsync"] as const;
/** The commands an extension handles instead of the module engine. */
export type ExtensionCommand = "resync" | "fullsync";
export type CommandName = (typeof COMMANDS)[number];

export class Daemon extends EventEmitter<DaemonEvents> {
  readonly config: DaemonConfig;
  readonly nodeId: string;
  readonly membership: Membership;
  readonly modules = new Map<string, ModuleHost>();
  readonly startedAt = Date.now();
  private readonly opts: DaemonOptions;
  private readonly reports = new Map<string, ModuleReport>();
  private readonly extras = new Map<string, { t?: boolean; why?: string }>();
  private running = false;
  private stopping: Promise<void> | undefined;
  private lastView: { epoch: number; agreed: boolean; members: string[] };

  constructor(config: DaemonConfig, opts: DaemonOptions = {}) {
    super();
    this.config = config;
    this.nodeId = requireNodeId(config);
    this.opts = opts;
    const key = readFileSync(config.keyFile, "utf8");
    this.membership = new Membership({
      clusterId: config.clusterId,
      nodeId: this.nodeId,
      nodes: config.nodes.map((n) => ({ id: n.id, addresses: [...n.addresses], weight: n.weight })),
      preset: config.preset,
      timing: config.timing,
      key,
      port: config.heartbeatPort,
      ...(opts.incarnation !== undefined ? { incarnation: opts.incarnation } : {}),
    });
    this.lastView = { epoch: 0, agreed: false, members: [this.nodeId] };
  }

  /** Creates the modules (loading their persisted state), starts membership, then (autostart) the modules. */
  async start(): Promise<void> {
    if (this.running) return;
    mkdirSync(this.config.logDir, { recursive: true });
    mkdirSync(this.config.stateDir, { recursive: true });
    const store = new FileModuleStore(this.config.stateDir);
    const fallbackVip = this.opts.vip ?? (this.config.modules.some((m) => m.vips.length > 0) ? new IpCommandVipDriver() : new MemoryVipDriver());
    // Extensions may take over a module's VIPs (the farm); the others use the daemon's driver.
    const vipOf = new Map<string, VipDriver>();
    const vip: VipDriver = {
      add: (v, m) => (vipOf.get(m) ?? fallbackVip).add(v, m),
      remove: (v, m) => (vipOf.get(m) ?? fallbackVip).remove(v, m),
    };
    const extensions = [...BUILTIN_EXTENSIONS, ...(this.opts.extensions ?? [])];
    for (const configured of this.config.modules) {
      // A VIP left behind by a crashed run of this daemon would answer for a node that is not primary:
      // every module starts in STOP, so none of its VIPs may be here yet.
      for (const v of configured.vips) await vip.remove(v, configured.name).catch((e: unknown) => this.fail(e));
      let def = configured;
      for (const ext of extensions) def = (await ext.prepare?.({ daemon: this, definition: def, nodeId: this.nodeId, config: this.config })) ?? def;
      const module = await Module.create(def, {
        nodeId: this.nodeId,
        store,
        vip,
        logDir: this.config.logDir,
        hookEnv: { HOLDFAST_NODE: this.nodeId, HOLDFAST_CLUSTER: this.config.clusterId },
      });
      const host: ModuleHost = { module, checkers: undefined, extensions: [], counts: { transitions: new Map(), failovers: 0, commands: new Map() } };
      this.modules.set(def.name, host);
      this.wireModule(host);
      for (const ext of extensions) {
        const x = await ext.attach({ daemon: this, module, nodeId: this.nodeId, config: this.config });
        if (x) host.extensions.push(x);
        if (x?.vip) vipOf.set(def.name, x.vip);
      }
      this.reports.set(def.name, module.report);
      this.extras.set(def.name, { t: module.status.transient, why: short(module.status.reason) });
    }
    this.wireMembership();
    this.publish();
    await this.membership.start();
    this.running = true;
    this.onView(this.membership.view, this.membership.agreed);
    if (this.config.autostart) {
      for (const h of this.modules.values()) {
        await h.module.start().catch((e: unknown) => this.fail(e));
      }
    }
  }

  /** Runs a command on a module. Throws a HoldfastError with code HOLDFAST_NO_SUCH_MODULE, or CommandRefusedError. */
  async command(moduleName: string, cmd: CommandName, opts: { force?: boolean; by?: string } = {}): Promise<ModuleStatus> {
    const h = this.host(moduleName);
    try {
      if (cmd === "resync" || cmd === "fullsync") {
        const x = h.extensions.find((e) => e.command);
        if (!x?.command) throw new CommandRefusedError(`${cmd}: module ${moduleName} has no replicated data (replication mode sync) on node ${this.nodeId}`);
        h.module.note("info", `command ${cmd}${opts.by ? ` (by ${opts.by})` : ""}: ${x.command(cmd)}`);
      } else {
        const c: ModuleCommand = cmd === "prim" ? { type: "prim", force: opts.force === true } : { type: cmd };
        await h.module.command(c);
      }
      h.counts.commands.set(`${cmd} ok`, (h.counts.commands.get(`${cmd} ok`) ?? 0) + 1);
    } catch (e) {
      h.counts.commands.set(`${cmd} refused`, (h.counts.commands.get(`${cmd} refused`) ?? 0) + 1);
      throw e;
    }
    return h.module.status;
  }

  host(name: string): ModuleHost {
    const h = this.modules.get(name);
    if (!h) throw new HoldfastError("HOLDFAST_NO_SUCH_MODULE", `no module "${name}" on node ${this.nodeId} (modules: ${[...this.modules.keys()].join(", ") || "none"})`);
    return h;
  }

  /** The whole cluster as this node sees it (own modules in full, peers' from their heartbeats). */
  state(): ClusterState {
    const members = new Set(this.lastView.members);
    const nodes = this.config.nodes.map((n) => {
      const self = n.id === this.nodeId;
      const modules: Record<string, ModuleView> = {};
      if (self) {
        for (const [name, h] of this.modules) modules[name] = { ...h.module.status, ...detailsOf(h) };
      } else if (members.has(n.id)) {
        const meta = this.membership.peerMeta(n.id) as MetaEnvelope | undefined;
        for (const [name, r] of Object.entries(meta?.r ?? {})) {
          const x = meta?.x?.[name];
          modules[name] = { state: r.state, ready: r.ready, transient: x?.t ?? r.next !== undefined, ...(r.next ? { next: r.next } : {}), reason: x?.why ?? "" };
        }
      } else {
        // Down: its modules as it last advertised them (else ours), shown as STOP.
        const last = this.membership.peerMeta(n.id) as MetaEnvelope | undefined;
        for (const name of last?.r ? Object.keys(last.r) : this.modules.keys()) modules[name] = { state: "STOP", ready: false, transient: false, reason: `node ${n.id} not in this node's view` };
      }
      return { id: n.id, self, up: members.has(n.id), apiUrl: n.apiUrl, modules };
    });
    return {
      cluster: this.config.clusterId,
      node: this.nodeId,
      time: new Date().toISOString(),
      view: this.lastView,
      nodes,
      modules: [...this.modules.values()].map((h) => ({
        name: h.module.name,
        kind: h.module.definition.kind,
        vips: h.module.definition.vips,
        checkers: (h.checkers?.status() ?? []).map((c) => ({ checker: c.checker, kind: c.kind, state: c.state, reason: c.reason })),
      })),
    };
  }

  /** Stops every module (stop hooks run), bounded by `timeoutMs` overall, then leaves the cluster. */
  stop(timeoutMs = 30_000): Promise<void> {
    this.stopping ??= this.doStop(timeoutMs);
    return this.stopping;
  }

  private async doStop(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await Promise.all(
      [...this.modules.values()].map(async (h) => {
        const m = h.module;
        try {
          if (m.status.state !== "STOP" || m.status.transient) {
            if (m.status.state !== "STOP") await m.stop().catch(() => undefined);
            await m.waitFor((s) => s.state === "STOP" && !s.transient, Math.max(1, deadline - Date.now()));
          }
        } catch {
          this.fail(new Error(`module ${m.name}: not stopped within ${timeoutMs} ms at shutdown: force-stopping`));
          await m.forcestop().catch(() => undefined);
        }
        await h.checkers?.stop();
        h.checkers = undefined;
        for (const x of h.extensions) await x.close?.().catch((e: unknown) => this.fail(e));
        await m.close();
      }),
    );
    if (this.running) await this.membership.stop();
    this.running = false;
  }

  // ---- wiring ---------------------------------------------------------------------------------

  private wireModule(h: ModuleHost): void {
    const m = h.module;
    let lastStatus = "";
    m.on("advertise", (report) => {
      this.reports.set(m.name, report);
      this.publish();
    });
    m.on("state", (status, ev) => {
      const key = `${ev.from}>${ev.to}`;
      if (ev.from !== ev.to && !ev.transient) h.counts.transitions.set(key, (h.counts.transitions.get(key) ?? 0) + 1);
      if (ev.to === "ALONE" && ev.from === "SECOND" && !ev.transient) h.counts.failovers++;
      this.extras.set(m.name, { t: status.transient, why: short(status.reason) });
      this.publish();
      this.syncCheckers(h);
      // Several state events of one decision batch are delivered with the batch's final status: report it once.
      const json = JSON.stringify(status);
      if (json === lastStatus) return;
      lastStatus = json;
      this.emit("moduleState", m.name, status);
    });
    m.on("resetCheckers", () => {
      void this.recreateCheckers(h);
    });
    m.on("error", (e) => this.fail(e));
  }

  private makeCheckers(h: ModuleHost): CheckerGroup | undefined {
    const entries = h.module.definition.checkers;
    if (entries.length === 0) return undefined;
    const g = new CheckerGroup(entries, `module ${h.module.name}`);
    g.on("verdict", (v) => h.module.checker(v));
    g.on("error", (e) => this.fail(e));
    return g;
  }

  /** Checkers run while the module is not STOP. */
  private syncCheckers(h: ModuleHost): void {
    const s = h.module.status;
    const want = !(s.state === "STOP" && !s.transient) && this.stopping === undefined;
    if (want && !h.checkers) {
      h.checkers = this.makeCheckers(h);
      h.checkers?.start();
    } else if (!want && h.checkers) {
      const g = h.checkers;
      h.checkers = undefined;
      void g.stop();
    }
  }

  private async recreateCheckers(h: ModuleHost): Promise<void> {
    const old = h.checkers;
    h.checkers = undefined;
    await old?.stop();
    this.syncCheckers(h);
  }

  private wireMembership(): void {
    const m = this.membership;
    const logPath = join(this.config.logDir, "membership.jsonl");
    m.on("event", (e) => {
      const line: Record<string, unknown> =
        e.type === "viewChange"
          ? { ts: new Date().toISOString(), node: this.nodeId, type: e.type, epoch: e.view.epoch, members: e.view.members.map((x) => x.id), agreed: e.agreed, reason: e.reason }
          : e.type === "peerMeta"
            ? { ts: new Date().toISOString(), node: this.nodeId, type: e.type, from: e.node }
            : { ts: new Date().toISOString(), node: this.nodeId, ...e, at: undefined };
      if (e.type !== "peerMeta") {
        try {
          appendFileSync(logPath, JSON.stringify(line) + "\n");
        } catch (err) {
          this.fail(err);
        }
      }
      this.emit("membership", line);
    });
    m.on("viewChange", (e) => this.onView(e.view, e.agreed));
    m.on("peerMeta", (e) => this.feedPeer(e.node, e.meta as MetaEnvelope | null));
  }

  private onView(view: View, agreed: boolean): void {
    this.lastView = { epoch: view.epoch, agreed, members: view.members.map((x) => x.id) };
    const mv = { epoch: view.epoch, members: view.members.map((x) => ({ id: x.id, weight: x.weight })) };
    for (const h of this.modules.values()) h.module.view(mv);
    for (const x of view.members) if (x.id !== this.nodeId) this.feedPeer(x.id, this.membership.peerMeta(x.id) as MetaEnvelope | undefined);
  }

  private feedPeer(node: string, meta: MetaEnvelope | null | undefined): void {
    if (!meta?.r) return;
    for (const [name, report] of Object.entries(meta.r)) this.modules.get(name)?.module.peerReport(node, report);
  }

  private publish(): void {
    try {
      this.membership.setMeta({ r: Object.fromEntries(this.reports), x: Object.fromEntries(this.extras) } satisfies MetaEnvelope);
    } catch (e) {
      this.fail(e);
    }
  }

  private fail(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    if (this.listenerCount("error") > 0) this.emit("error", e);
  }
}

function short(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

function detailsOf(h: ModuleHost): { details?: Record<string, unknown> } {
  if (h.extensions.length === 0) return {};
  const d: Record<string, unknown> = {};
  for (const x of h.extensions) Object.assign(d, x.details?.() ?? {});
  return { details: d };
}

export { CommandRefusedError };
