/**
 * A deterministic harness running one or more module cores with a fake clock and a perfect in-memory
 * exchange of module reports (what the membership layer carries in heartbeats). Used by the scenario
 * scripts (golden output) and the property tests.
 *
 * Script language (one directive per line, `#` starts a comment):
 *   mirror a b [maxloop=N] [interval=MS] [peerWait=MS] [defaultPrimary=a] [splitbrain] [vips=0] [nohooks=h1,h2]
 *   farm a b [maxloop=N] [interval=MS]
 *   cmd <node> <start|stop|restart|stopstart|swap|prim|second|forcestop> [--force]
 *   hook <node> <hook> ok|fail|timeout [detail...]   complete the hook that node is running
 *   hooks ok                                         complete every running hook with success, repeatedly
 *   tick <ms>                                        advance the clock
 *   lose <a> <b> | heal <a> <b>                      cut / restore connectivity between two nodes
 *   crash <node>... | boot <node>                    kill nodes at once (persisted state kept) / start one again
 *   checker <node> <name> ok [lease=H] [reason...] | checker <node> <name> fail <action> [lease=H] [reason...]
 *                                                    lease=H: a witness arbiter's verdict, whose lease H holds
 *                                                    (as the witness named it in a denial); lease=- names none
 *   sync <node> | unsync <node>                      replication reports in sync / not in sync
 *   freeze <node> | resume <node> <gapMs>            SIGSTOP / SIGCONT: a frozen node gets no input and its peers
 *                                                    lose it; on resume it first learns of its stall (hold 1000 ms),
 *                                                    then gets the current view and the peers' latest reports
 *   status                                           print every node's status
 */
import { CommandRefusedError } from "../../src/core/errors.js";
import type { CheckerAction, LeaseView } from "../../src/core/checker.js";
import {
  ModuleCore,
  formatEffect,
  isPrimaryState,
  resolveModule,
  type HookName,
  type ModuleCommand,
  type ModuleEffect,
  type ModuleReport,
  type PersistedModuleState,
  type ResolvedModule,
} from "../../src/core/module/index.js";

export interface HarnessNode {
  readonly id: string;
  core: ModuleCore;
  alive: boolean;
  persisted: PersistedModuleState | undefined;
  lastReport: ModuleReport | undefined;
  /** Persisted state just before the input being processed (for property checks). */
  before?: PersistedModuleState;
}

/** Called for every effect (after it is printed): property tests put their checks here. */
export type EffectObserver = (node: HarnessNode, effect: ModuleEffect, h: Harness) => void;

export class Harness {
  readonly nodes = new Map<string, HarnessNode>();
  readonly lines: string[] = [];
  now = 0;
  epoch = 0;
  module!: ResolvedModule;
  private readonly cut = new Set<string>();
  /** Nodes stopped (SIGSTOP): no input reaches them, their peers do not see them. */
  private readonly frozen = new Set<string>();
  private readonly queue: { to: string; from: string; report: ModuleReport }[] = [];
  /** delivered.get(`${to}<${from}`): the last report of `from` that `to` received. */
  readonly delivered = new Map<string, ModuleReport>();
  observer: EffectObserver | undefined;
  /** The input being processed, for observers (e.g. `cmd a prim --force`). */
  currentInput = "";
  quiet = false;

  constructor(observer?: EffectObserver) {
    this.observer = observer;
  }

  private log(line: string): void {
    if (!this.quiet) this.lines.push(line);
  }

  /** Runs a whole script; returns the transcript. */
  runScript(text: string): string {
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) {
        this.lines.push(raw);
        continue;
      }
      this.lines.push(`> ${line}`);
      this.exec(line);
    }
    return this.lines.join("\n") + "\n";
  }

  exec(line: string): void {
    this.currentInput = line;
    const [verb, ...args] = line.split(/\s+/);
    switch (verb) {
      case "mirror":
      case "farm":
        return this.setup(verb, args);
      case "cmd":
        return this.command(args[0]!, args.slice(1));
      case "hook":
        return this.hook(args[0]!, args[1] as HookName, args[2]!, args.slice(3).join(" "));
      case "hooks":
        return this.allHooksOk();
      case "tick":
        return this.tick(Number(args[0]));
      case "lose":
        return this.link(args[0]!, args[1]!, false);
      case "heal":
        return this.link(args[0]!, args[1]!, true);
      case "crash":
        return this.crash(...args);
      case "boot":
        return this.boot(args[0]!);
      case "checker": {
        // ok: [lease=H], then every further word is the reason; fail: the action, [lease=H], then the reason.
        const rest = args.slice(args[2] === "ok" ? 3 : 4);
        const lease = rest[0]?.startsWith("lease=") ? rest.shift()!.slice("lease=".length) : undefined;
        return this.checker(args[0]!, args[1]!, args[2]!, args[2] === "ok" ? undefined : args[3], rest.join(" "), lease);
      }
      case "sync":
      case "unsync":
        return this.apply(this.node(args[0]!), (c) => c.replication({ inSync: verb === "sync" }));
      case "freeze":
        this.frozen.add(args[0]!);
        return this.pushViews();
      case "resume": {
        const n = this.node(args[0]!);
        this.frozen.delete(n.id);
        this.apply(n, (c) => c.tick(this.now), false);
        this.apply(n, (c) => c.stalled(Number(args[1]), 1000), false);
        return this.pushViews();
      }
      case "status":
        for (const n of this.nodes.values()) {
          const s = n.core.status;
          this.log(
            `  ${n.id}: ${n.alive ? `${s.state}${s.ready ? " ready" : ""}${s.transient ? ` -> ${s.next}` : ""} (${s.reason})` : "down"}`,
          );
        }
        return;
      default:
        throw new Error(`unknown directive: ${line}`);
    }
  }

  node(id: string): HarnessNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`unknown node ${id}`);
    return n;
  }

  /** Starts a new cluster (a script may hold several): previous nodes, links and messages are dropped. */
  private setup(kind: "mirror" | "farm", args: string[]): void {
    this.nodes.clear();
    this.cut.clear();
    this.queue.length = 0;
    this.delivered.clear();
    const ids = args.filter((a) => !a.includes("=") && a !== "splitbrain");
    const opt = new Map(args.filter((a) => a.includes("=")).map((a) => a.split("=") as [string, string]));
    const noHooks = new Set((opt.get("nohooks") ?? "").split(",").filter(Boolean));
    const hookNames: HookName[] =
      kind === "mirror"
        ? ["prestart", "start_prim", "stop_prim", "start_second", "stop_second", "poststop"]
        : ["prestart", "start_both", "stop_both", "poststop"];
    const hooks: Record<string, string> = {};
    for (const h of hookNames) if (!noHooks.has(h)) hooks[h] = `/bin/${h}`;
    this.module = resolveModule({
      name: "app",
      kind,
      vips: opt.get("vips") === "0" ? [] : ["198.18.0.100/24"],
      hooks,
      restart: { maxloop: Number(opt.get("maxloop") ?? 3), loopInterval: Number(opt.get("interval") ?? 3_600_000) },
      checkers: args.includes("splitbrain") ? [{ type: "split-brain", name: "sb", witness: ["198.18.0.1"] }] : [],
      ...(kind === "mirror"
        ? {
            mirror: {
              peerWait: Number(opt.get("peerWait") ?? 2000),
              ...(opt.has("defaultPrimary") ? { defaultPrimary: opt.get("defaultPrimary") } : {}),
            },
          }
        : {}),
    });
    for (const id of ids) {
      this.nodes.set(id, {
        id,
        core: new ModuleCore({ module: this.module, nodeId: id, now: this.now }),
        alive: true,
        persisted: undefined,
        lastReport: undefined,
      });
    }
    this.pushViews();
  }

  connected(a: string, b: string): boolean {
    const na = this.nodes.get(a);
    const nb = this.nodes.get(b);
    return !!na?.alive && !!nb?.alive && !this.cut.has(pairKey(a, b)) && !this.frozen.has(a) && !this.frozen.has(b);
  }

  private viewOf(id: string): string[] {
    return [...this.nodes.keys()].filter((o) => o === id || this.connected(id, o)).sort();
  }

  private pushViews(): void {
    this.epoch++;
    for (const n of this.nodes.values()) {
      if (!n.alive || this.frozen.has(n.id)) continue;
      const members = this.viewOf(n.id);
      this.apply(n, (c) => c.view({ epoch: this.epoch, members: members.map((id) => ({ id, weight: 1 })) }), false);
    }
    // Membership carries the latest module states with the heartbeats: newly visible peers learn them.
    for (const n of this.nodes.values()) {
      if (!n.alive || !n.lastReport) continue;
      for (const o of this.nodes.values()) if (o.id !== n.id && this.connected(n.id, o.id)) this.queue.push({ to: o.id, from: n.id, report: n.lastReport });
    }
    this.drain();
  }

  /** Feeds one input to a node's core and carries out its effects; then delivers queued reports. */
  apply(n: HarnessNode, input: (c: ModuleCore) => ModuleEffect[], drain = true): void {
    if (!n.alive) {
      this.log(`  ${n.id}: (down)`);
      return;
    }
    n.before = n.core.persisted;
    const effects = input(n.core);
    for (const e of effects) {
      this.log(`  ${n.id}: ${formatEffect(e)}`);
      if (e.type === "persist") n.persisted = e.state;
      if (e.type === "advertise") {
        n.lastReport = e.report;
        for (const o of this.nodes.values()) if (o.id !== n.id && this.connected(n.id, o.id)) this.queue.push({ to: o.id, from: n.id, report: e.report });
      }
      this.observer?.(n, e, this);
    }
    if (drain) this.drain();
  }

  private drain(): void {
    let guard = 0;
    while (this.queue.length > 0) {
      if (++guard > 1000) throw new Error("report exchange does not settle");
      const m = this.queue.shift()!;
      if (!this.connected(m.to, m.from)) continue;
      this.delivered.set(`${m.to}<${m.from}`, m.report);
      this.apply(this.node(m.to), (c) => c.peerReport(m.from, m.report), false);
    }
  }

  private command(id: string, args: string[]): void {
    const type = args[0] as ModuleCommand["type"];
    const cmd = (type === "prim" ? { type, force: args.includes("--force") } : { type }) as ModuleCommand;
    const n = this.node(id);
    try {
      this.apply(n, (c) => c.command(cmd));
    } catch (e) {
      if (e instanceof CommandRefusedError) this.log(`  ${id}: refused: ${e.message}`);
      else throw e;
    }
  }

  private hook(id: string, hook: HookName, result: string, detail: string): void {
    const n = this.node(id);
    if (n.core.runningHook !== hook) {
      this.log(`  ${id}: (no hook ${hook} running; running: ${n.core.runningHook ?? "none"})`);
      return;
    }
    const ok = result === "ok";
    const d = detail || (result === "timeout" ? "timed out" : result === "fail" ? "exit code 1" : "");
    this.apply(n, (c) => c.hookDone(hook, ok, d));
  }

  /** Completes every running hook with success until none runs. */
  allHooksOk(): void {
    this.currentInput = "hooks ok";
    for (let i = 0; i < 100; i++) {
      const n = [...this.nodes.values()].find((x) => x.alive && !this.frozen.has(x.id) && x.core.runningHook);
      if (!n) return;
      const hook = n.core.runningHook!;
      this.apply(n, (c) => c.hookDone(hook, true, ""));
    }
    throw new Error("hooks do not settle");
  }

  tick(ms: number): void {
    this.currentInput = `tick ${ms}`;
    this.now += ms;
    for (const n of this.nodes.values()) if (n.alive && !this.frozen.has(n.id)) this.apply(n, (c) => c.tick(this.now));
  }

  link(a: string, b: string, up: boolean): void {
    if (up) this.cut.delete(pairKey(a, b));
    else this.cut.add(pairKey(a, b));
    this.pushViews();
  }

  /** Crashes one or several nodes at the same instant. */
  crash(...ids: string[]): void {
    for (const id of ids) {
      const n = this.node(id);
      n.alive = false;
      n.lastReport = undefined;
    }
    this.pushViews();
  }

  boot(id: string): void {
    const n = this.node(id);
    n.core = new ModuleCore({ module: this.module, nodeId: id, now: this.now, ...(n.persisted ? { persisted: n.persisted } : {}) });
    n.alive = true;
    this.pushViews();
  }

  private checker(id: string, name: string, result: string, action: string | undefined, reason: string, holder: string | undefined): void {
    const ok = result === "ok";
    const act = (action ?? (this.module.checkers.some((c) => c.name === name && c.type === "split-brain") ? "wait" : "restart")) as CheckerAction;
    const lease: LeaseView | undefined = holder === undefined ? undefined : holder === "-" ? {} : { holder };
    this.apply(this.node(id), (c) =>
      c.checker({ type: "checker", checker: name, ok, action: act, reason: reason || (ok ? "ok" : "failed"), ...(lease ? { lease } : {}) }),
    );
  }

  /** Both alive, not cut, and each has received the other's latest report. */
  inContact(a: string, b: string): boolean {
    if (!this.connected(a, b)) return false;
    const na = this.node(a);
    const nb = this.node(b);
    return this.delivered.get(`${a}<${b}`) === nb.lastReport && this.delivered.get(`${b}<${a}`) === na.lastReport;
  }

  /** Nodes that are primary (PRIM/ALONE) and not already stepping down. */
  primaries(): HarnessNode[] {
    return [...this.nodes.values()].filter(
      (n) => n.alive && isPrimaryState(n.core.status.state) && !(n.core.status.transient && !isPrimaryState(n.core.status.next)),
    );
  }
}

function pairKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}
