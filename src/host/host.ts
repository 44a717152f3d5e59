/**
 * `Host`: one node of a holdfast cluster, composed. It owns what every program running modules needs, wired
 * once and in one order:
 *
 * - the {@link Membership} (heartbeats, views) and one registry of this node's heartbeat metadata: the modules'
 *   reports (`modules`), each module's transient flag and reason for other nodes' state pages (`x`), and the
 *   fields module kinds publish (the farm's held sets under `held`);
 * - every module bound to it through {@link bindMembership}: views, peers' reports (validated), this node's
 *   stalls (a mirror primary steps down) and peers' silence (a cut-off primary steps down);
 * - the checkers of each module, running while the module is not STOP, re-fed after a (re)start
 *   ({@link Module.attachCheckers});
 * - the VIPs: a module kind's driver (farm: the VIP on every node + the packet filter; mirror: the VIP on the
 *   primary), else a {@link MirrorVip}; a VIP left by a crashed run is removed before anything starts;
 * - the persistent module store ({@link FileModuleStore} under `stateDir`) and the event logs under `logDir`;
 * - the module kinds ({@link HostExtension}: farm, mirror with replicated data, mirror without), which may weave
 *   their data path into a module's hooks before it exists (`prepare`) and attach drivers to it (`attach`);
 * - the ordered start (modules created, kinds attached, membership started, then the modules) and shutdown
 *   (each module stopped within a bound, then force-stopped; checkers stopped; kinds closed; membership left),
 *   and optionally SIGTERM/SIGINT handling.
 *
 * The same {@link HostConfigInput} comes from code or from the reference daemon's YAML file.
 *
 * @example
 * const host = new Host({
 *   cluster: { id: "shop", keyFile: "/etc/holdfast/cluster.key", nodes: [{ id: "n1", addresses: ["198.18.0.10"] }, { id: "n2", addresses: ["198.18.0.11"] }] },
 *   node: "n1",
 *   modules: [{ name: "web", kind: "farm", vips: ["198.18.0.100/32"], hooks: { start_both: { fn: startApp }, stop_both: { fn: stopApp } } }],
 *   farm: { web: { iface: "eth0" } },
 *   stateDir: "/var/lib/myapp/holdfast", logDir: "/var/log/myapp",
 * }, { signals: true });
 * await host.start();
 */
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { CheckerGroup } from "../checkers/group.js";
import type { CheckerVerdict } from "../core/checker.js";
import { CommandRefusedError, HoldfastError } from "../core/errors.js";
import type { ResolvedModule } from "../core/module/config.js";
import type { ModuleCommand, ModuleState, ModuleStatus } from "../core/module/types.js";
import { withMetaFields, type MetaFields } from "../farm/meta.js";
import { MirrorVip } from "../mirror/vip.js";
import { HookUnit, killLeftovers, type HookGuard } from "../runtime/containment.js";
import { nextIncarnation } from "../runtime/incarnation.js";
import { Membership } from "../runtime/membership.js";
import { bindMembership, FileModuleStore, Module, type ModuleStateStore, type VipDriver } from "../runtime/module.js";
import { decodeHostConfig, isHostConfig, requireNodeId, type HostConfig, type HostConfigInput } from "./config.js";
import { BUILTIN_EXTENSIONS } from "./kinds.js";

/** One Prometheus sample a module kind exposes. */
export interface MetricSample {
  readonly name: string;
  readonly help: string;
  readonly type: "gauge" | "counter";
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

/** The commands a module kind handles instead of the module engine. */
export type ExtensionCommand = "resync" | "fullsync";

/** What a module kind adds to one module. */
export interface ModuleExtension {
  /**
   * Extra data for state pages, e.g. `replication: { state, percent, bytes }` (the resync progress) or
   * `buckets: { owned: number[], total: 256 }` (the farm map).
   */
  details?(): Record<string, unknown>;
  /** Extra Prometheus samples. */
  metrics?(): MetricSample[];
  /** Called at shutdown, after the module is stopped. */
  close?(): Promise<void>;
  /** Takes over the module's VIPs (e.g. the farm: VIP on every node + filter), instead of the host's driver. */
  readonly vip?: VipDriver;
  /**
   * Runs a kind command (e.g. the mirror's `resync`): returns a line for the module's log, throws a
   * {@link CommandRefusedError} when it cannot run here. Absent: the command is refused for this module.
   */
  command?(cmd: ExtensionCommand): string;
  /** The kind's driver (FarmDriver, MirrorDriver), for programs that follow its events. */
  readonly driver?: unknown;
}

export interface ExtensionContext {
  readonly host: Host;
  readonly module: Module;
  readonly nodeId: string;
  readonly config: HostConfig;
  /** Publishes `value` as this module's entry of the heartbeat metadata field `field` (undefined removes it). */
  publish(field: string, value: unknown): void;
}

/** What {@link HostExtension.prepare} gets: a module's definition before the module exists. */
export interface PrepareContext {
  readonly host: Host;
  readonly definition: ResolvedModule;
  readonly nodeId: string;
  readonly config: HostConfig;
}

/**
 * A module kind: wires a capability into modules (farm: VIP + filter + buckets; mirror: replication). `prepare`
 * (optional) is called once per module before the module is created and may return a changed definition (the
 * mirror weaves its data path into the hooks); each kind sees the previous one's result. `attach` is called once
 * per module, after it is created and before anything starts. Return undefined from either when the module is
 * not yours.
 */
export interface HostExtension {
  readonly name: string;
  prepare?(ctx: PrepareContext): ResolvedModule | undefined | Promise<ResolvedModule | undefined>;
  attach(ctx: ExtensionContext): ModuleExtension | undefined | Promise<ModuleExtension | undefined>;
}

export interface HostOptions {
  /** Module kinds beyond the built-in ones (farm, mirror with and without replicated data), attached after them. */
  readonly extensions?: readonly HostExtension[];
  /** VIP driver of modules whose kind brings none. Default: a {@link MirrorVip} (iproute2 + announcements). */
  readonly vip?: VipDriver;
  /** Where module states persist. Default: a {@link FileModuleStore} in the configuration's `stateDir`. */
  readonly store?: ModuleStateStore;
  /**
   * Membership incarnation (must grow at each start). Default: {@link nextIncarnation} on the configuration's
   * `stateDir`: max(the last one + 1, wall-clock ms), persisted before use, so that a restart after a clock step
   * backwards is still a restart to the peers.
   */
  readonly incarnation?: number;
  /** This node's id, overriding the configuration's `node`. */
  readonly nodeId?: string;
  /**
   * Stop cleanly on SIGTERM and SIGINT (modules stopped, membership left), then exit with 0 (1 when the stop
   * did not finish within `stopTimeoutMs`). Default false: the program handles its signals.
   */
  readonly signals?: boolean;
  /** Bound of a clean stop, ms (signals, and {@link Host.stop}'s default). Default 30 000. */
  readonly stopTimeoutMs?: number;
}

/** A module as the host runs it. */
export interface HostedModule {
  readonly module: Module;
  checkers: CheckerGroup | undefined;
  readonly extensions: ModuleExtension[];
  /** Counters for metrics. */
  readonly counts: { transitions: Map<string, number>; failovers: number; commands: Map<string, number> };
}

/** One node's view of one module, as state pages show it. */
export interface ModuleView {
  readonly state: ModuleState;
  readonly ready: boolean;
  readonly transient: boolean;
  readonly next?: ModuleState;
  readonly reason: string;
  readonly details?: Record<string, unknown>;
}

/** The cluster as this node sees it. */
export interface HostState {
  readonly cluster: string;
  readonly node: string;
  readonly time: string;
  readonly view: { readonly epoch: number; readonly agreed: boolean; readonly members: readonly string[] };
  readonly nodes: readonly {
    readonly id: string;
    readonly self: boolean;
    /** In this node's agreed view. */
    readonly up: boolean;
    readonly modules: Readonly<Record<string, ModuleView>>;
  }[];
  readonly modules: readonly {
    readonly name: string;
    readonly kind: "farm" | "mirror";
    readonly vips: readonly string[];
    readonly checkers: readonly { checker: string; kind: string; state: string; reason: string | undefined }[];
  }[];
}

export interface HostEvents {
  /**
   * A module was created and its kinds attached, before membership and the module start: the moment to follow
   * its events and its kinds' drivers (e.g. `farmOf(host, name)`, `mirrorDriverOf(host, name)`).
   */
  attached: (hosted: HostedModule) => void;
  /** A membership event (also appended to `membership.jsonl` in the log directory). */
  membership: (line: Record<string, unknown>) => void;
  /** A module's status changed. */
  moduleState: (module: string, status: ModuleStatus) => void;
  /** A checker of a module changed its verdict (it goes to the module too). */
  verdict: (module: string, verdict: CheckerVerdict) => void;
  error: (err: Error) => void;
}

/**
 * Module commands. `resync` (a checksum pass: blocks that differ) and `fullsync` (the whole tree) go to the
 * module's kind (a mirror with replicated data, on its primary); the others to the module engine.
 */
export const COMMANDS = ["start", "stop", "restart", "stopstart", "swap", "prim", "second", "forcestop", "resync", "fullsync"] as const;
export type CommandName = (typeof COMMANDS)[number];

/** The peer metadata this host publishes (and reads from its peers). */
interface HostMeta {
  modules?: Record<string, { state: ModuleState; ready: boolean; next?: ModuleState }>;
  x?: Record<string, { t?: boolean; why?: string }>;
}

export class Host extends EventEmitter<HostEvents> {
  readonly config: HostConfig;
  readonly nodeId: string;
  readonly membership: Membership;
  readonly modules = new Map<string, HostedModule>();
  readonly startedAt = Date.now();
  private readonly opts: HostOptions;
  private readonly meta: MetaFields;
  private readonly fields = new Map<string, Record<string, unknown>>();
  private unbind: (() => void) | undefined;
  private readonly detachCheckers = new Map<string, () => void>();
  private readonly closers: (() => void)[] = [];
  /** Each module's hook-process unit (cgroup or recorded process groups). */
  private readonly units = new Map<string, HookUnit>();
  /** Each module's guard: kills its unit if this process dies without an orderly stop. */
  private readonly guards = new Map<string, HookGuard>();
  private running = false;
  private stopping: Promise<void> | undefined;

  constructor(config: HostConfig | HostConfigInput, opts: HostOptions = {}) {
    super();
    this.config = isHostConfig(config) ? config : decodeHostConfig(config, opts.nodeId !== undefined ? { nodeId: opts.nodeId } : {});
    this.nodeId = opts.nodeId ?? requireNodeId(this.config);
    this.opts = opts;
    this.membership = new Membership({
      clusterId: this.config.clusterId,
      nodeId: this.nodeId,
      nodes: this.config.nodes.map((n) => ({ id: n.id, addresses: [...n.addresses], weight: n.weight })),
      preset: this.config.preset,
      timing: this.config.timing,
      key: this.config.key(),
      port: this.config.heartbeatPort,
      incarnation: opts.incarnation ?? this.incarnation(),
    });
    this.meta = withMetaFields(this.membership);
    if (opts.signals) this.handleSignals();
  }

  /** The next persisted incarnation (the state directory is created for it, 0700 like the host's other directories). */
  private incarnation(): number {
    mkdirSync(this.config.stateDir, { recursive: true, mode: 0o700 });
    return nextIncarnation(this.config.stateDir);
  }

  /** The module named `name`. Throws a HoldfastError (HOLDFAST_NO_SUCH_MODULE) when this node runs none. */
  module(name: string): Module {
    return this.hosted(name).module;
  }

  /** The module named `name` with its checkers, kinds and counters. */
  hosted(name: string): HostedModule {
    const h = this.modules.get(name);
    if (!h) throw new HoldfastError("HOLDFAST_NO_SUCH_MODULE", `no module "${name}" on node ${this.nodeId} (modules: ${[...this.modules.keys()].join(", ") || "none"})`);
    return h;
  }

  /** The driver a module kind attached to module `name` (e.g. a FarmDriver or MirrorDriver), if any. */
  driverOf(name: string): unknown {
    return this.modules.get(name)?.extensions.find((x) => x.driver !== undefined)?.driver;
  }

  /** Creates the modules (loading their persisted state), starts membership, then (autostart) the modules. */
  async start(): Promise<void> {
    if (this.running || this.stopping) return;
    // Logs and states are the node's own business: 0700 when created (existing directories keep their mode).
    mkdirSync(this.config.logDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.config.stateDir, { recursive: true, mode: 0o700 });
    const store = this.opts.store ?? new FileModuleStore(this.config.stateDir);
    let fallback = this.opts.vip;
    if (!fallback) {
      const mv = new MirrorVip({ log: (line) => this.emit("membership", { ts: new Date().toISOString(), node: this.nodeId, type: "vip", line }) });
      this.closers.push(() => mv.close());
      fallback = mv;
    }
    const fallbackVip = fallback;
    // Kinds may take over a module's VIPs (the farm); the others use the host's driver.
    const vipOf = new Map<string, VipDriver>();
    const vip: VipDriver = {
      add: (v, m) => (vipOf.get(m) ?? fallbackVip).add(v, m),
      remove: (v, m) => (vipOf.get(m) ?? fallbackVip).remove(v, m),
    };
    const extensions = [...BUILTIN_EXTENSIONS, ...(this.opts.extensions ?? [])];
    for (const configured of this.config.modules) {
      let def = configured;
      for (const ext of extensions) def = (await ext.prepare?.({ host: this, definition: def, nodeId: this.nodeId, config: this.config })) ?? def;
      // The module's script hooks, and all they fork, run in a unit (cgroup) that the next run finds (containment.ts).
      const unit = HookUnit.open({ cluster: this.config.clusterId, node: this.nodeId, module: def.name, stateDir: this.config.stateDir });
      const module = await Module.create(def, {
        nodeId: this.nodeId,
        store,
        vip,
        logDir: this.config.logDir,
        hookEnv: { HOLDFAST_NODE: this.nodeId, HOLDFAST_CLUSTER: this.config.clusterId, ...unit.env() },
        // A shorter own stall cannot have let a peer declare this node lost (the engine's default fits the LAN preset).
        ...(this.config.preset === "lan" ? {} : { stallStepDownMs: this.config.timing.lossTimeoutMs - this.config.timing.pulseMs }),
      });
      const note = (level: "info" | "warn" | "error", line: string) => module.note(level, line);
      note("info", unit.describe());
      // An application a crashed run started may still answer: gone before this node reports anything or adds a VIP.
      await unit.clean(note, "left by a previous run");
      this.units.set(def.name, unit);
      // From now on until an orderly stop, the unit dies with this process (its guard: containment.ts).
      this.guards.set(def.name, unit.guard(note));
      // After an orderly stop (stop hooks ran), nothing the hooks started may stay (a child a stop hook forgot).
      module.on("state", (s) => {
        if (s.state === "STOP" && !s.transient) killLeftovers(unit, note, "module stopped");
      });
      // A VIP left behind by a crashed run would answer for a node that is not primary: every module starts in
      // STOP, so none of its VIPs may be here yet.
      for (const v of configured.vips) await fallbackVip.remove(v, configured.name).catch((e: unknown) => this.fail(e));
      const h: HostedModule = { module, checkers: undefined, extensions: [], counts: { transitions: new Map(), failovers: 0, commands: new Map() } };
      this.modules.set(def.name, h);
      this.wireModule(h);
      for (const ext of extensions) {
        const x = await ext.attach({ host: this, module, nodeId: this.nodeId, config: this.config, publish: (field, value) => this.publishField(field, def.name, value) });
        if (x) h.extensions.push(x);
        if (x?.vip) vipOf.set(def.name, x.vip);
      }
      this.publishField("x", def.name, { t: module.status.transient, why: short(module.status.reason) });
      this.emit("attached", h);
    }
    this.wireMembership();
    this.unbind = bindMembership(this.meta.membership, [...this.modules.values()].map((h) => h.module));
    await this.membership.start();
    this.running = true;
    if (this.config.autostart) {
      for (const h of this.modules.values()) await h.module.start().catch((e: unknown) => this.fail(e));
    }
  }

  /** Runs a command on a module. Throws a HoldfastError with code HOLDFAST_NO_SUCH_MODULE, or CommandRefusedError. */
  async command(moduleName: string, cmd: CommandName, opts: { force?: boolean; by?: string } = {}): Promise<ModuleStatus> {
    const h = this.hosted(moduleName);
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

  /** The whole cluster as this node sees it (own modules in full, peers' from their heartbeats). */
  state(): HostState {
    const view = this.membership.view;
    const members = new Set(view.members.map((x) => x.id));
    const nodes = this.config.nodes.map((n) => {
      const self = n.id === this.nodeId;
      const modules: Record<string, ModuleView> = {};
      if (self) {
        for (const [name, h] of this.modules) modules[name] = { ...h.module.status, ...detailsOf(h) };
      } else if (members.has(n.id)) {
        const meta = this.membership.peerMeta(n.id) as HostMeta | undefined;
        for (const [name, r] of Object.entries(meta?.modules ?? {})) {
          const x = meta?.x?.[name];
          modules[name] = { state: r.state, ready: r.ready, transient: x?.t ?? r.next !== undefined, ...(r.next ? { next: r.next } : {}), reason: x?.why ?? "" };
        }
      } else {
        // Down: its modules as it last advertised them (else ours), shown as STOP.
        const last = this.membership.peerMeta(n.id) as HostMeta | undefined;
        for (const name of last?.modules ? Object.keys(last.modules) : this.modules.keys()) modules[name] = { state: "STOP", ready: false, transient: false, reason: `node ${n.id} not in this node's view` };
      }
      return { id: n.id, self, up: members.has(n.id), modules };
    });
    return {
      cluster: this.config.clusterId,
      node: this.nodeId,
      time: new Date().toISOString(),
      view: { epoch: view.epoch, agreed: this.membership.agreed, members: view.members.map((x) => x.id) },
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
  stop(timeoutMs = this.opts.stopTimeoutMs ?? 30_000): Promise<void> {
    this.stopping ??= this.doStop(timeoutMs);
    return this.stopping;
  }

  /** Stops cleanly on SIGTERM / SIGINT, then exits (0, or 1 when the stop took longer than its bound). */
  handleSignals(): void {
    const bound = this.opts.stopTimeoutMs ?? 30_000;
    const onSignal = () => {
      const timer = setTimeout(() => process.exit(1), bound + 2_000);
      void this.stop(bound).then(
        () => {
          clearTimeout(timer);
          process.exit(0);
        },
        (e: unknown) => {
          this.fail(e);
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
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
        this.stopCheckers(h);
        // Before the kinds close (the mirror unmounts): nothing the hooks started may hold the data or answer.
        const unit = this.units.get(m.name);
        await unit?.clean((level, line) => m.note(level, line), "module stopped at shutdown").catch((e: unknown) => this.fail(e));
        for (const x of h.extensions) await x.close?.().catch((e: unknown) => this.fail(e));
        await m.close();
        this.guards.get(m.name)?.release();
        this.guards.delete(m.name);
        unit?.remove();
      }),
    );
    this.unbind?.();
    this.unbind = undefined;
    if (this.running) await this.membership.stop();
    this.running = false;
    for (const c of this.closers.splice(0)) c();
  }

  // ---- wiring ---------------------------------------------------------------------------------

  private publishField(field: string, module: string, value: unknown): void {
    const f = { ...(this.fields.get(field) ?? {}) };
    if (value === undefined) delete f[module];
    else f[module] = value;
    this.fields.set(field, f);
    try {
      this.meta.set(field, f);
    } catch (e) {
      this.fail(e);
    }
  }

  private wireModule(h: HostedModule): void {
    const m = h.module;
    let lastStatus = "";
    m.on("state", (status, ev) => {
      const key = `${ev.from}>${ev.to}`;
      if (ev.from !== ev.to && !ev.transient) h.counts.transitions.set(key, (h.counts.transitions.get(key) ?? 0) + 1);
      if (ev.to === "ALONE" && ev.from === "SECOND" && !ev.transient) h.counts.failovers++;
      this.publishField("x", m.name, { t: status.transient, why: short(status.reason) });
      this.syncCheckers(h);
      // Several state events of one decision batch are delivered with the batch's final status: report it once.
      const json = JSON.stringify(status);
      if (json === lastStatus) return;
      lastStatus = json;
      this.emit("moduleState", m.name, status);
    });
    m.on("error", (e) => this.fail(e));
  }

  /** Checkers run while the module is not STOP (and the host is not stopping). */
  private syncCheckers(h: HostedModule): void {
    const s = h.module.status;
    const want = !(s.state === "STOP" && !s.transient) && this.stopping === undefined;
    if (want && !h.checkers) {
      const entries = h.module.definition.checkers;
      if (entries.length === 0) return;
      const g = new CheckerGroup(entries, `module ${h.module.name}`);
      g.on("error", (e) => this.fail(e));
      g.on("verdict", (v) => this.emit("verdict", h.module.name, v));
      h.checkers = g;
      this.detachCheckers.set(h.module.name, h.module.attachCheckers(g));
      g.start();
    } else if (!want && h.checkers) this.stopCheckers(h);
  }

  private stopCheckers(h: HostedModule): void {
    const g = h.checkers;
    h.checkers = undefined;
    this.detachCheckers.get(h.module.name)?.();
    this.detachCheckers.delete(h.module.name);
    void g?.stop();
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
          appendFileSync(logPath, JSON.stringify(line) + "\n", { mode: 0o600 });
        } catch (err) {
          this.fail(err);
        }
      }
      this.emit("membership", line);
    });
  }

  protected fail(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    if (this.listenerCount("error") > 0) this.emit("error", e);
  }
}

function short(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

function detailsOf(h: HostedModule): { details?: Record<string, unknown> } {
  if (h.extensions.length === 0) return {};
  const d: Record<string, unknown> = {};
  for (const x of h.extensions) Object.assign(d, x.details?.() ?? {});
  return { details: d };
}
