/**
 * `traceHost`: every event of a host as one flat JSON-able object per event — membership (nodeUp, nodeDown,
 * viewChange, stall), each module (state, decision, checker, hook: one ended) and each kind's driver (farm: backend, buckets,
 * contested, held; mirror: role, sync, degraded, resyncStart, resyncProgress, synced, metrics). Programs print it
 * as JSON lines (the example nodes, `holdfast daemon --trace`), tests and benches read those lines. Call it before
 * `host.start()`, so that no module's first events are missed.
 */
import type { Host, HostedModule } from "./host.js";
import { farmOf } from "../farm/kind.js";
import { mirrorDriverOf } from "../mirror/kind.js";

/** One traced event: `type` names it, `module` the module it belongs to (absent for membership events). */
export type TraceLine = { readonly type: string; readonly module?: string } & Record<string, unknown>;

export interface TraceOptions {
  /** Also trace the replication counters (`metrics`, every statsIntervalMs). Default true. */
  readonly metrics?: boolean;
}

/** Sends every event of `host` to `write`; returns a function that stops tracing new modules. */
export function traceHost(host: Host, write: (line: TraceLine) => void, opts: TraceOptions = {}): () => void {
  const metrics = opts.metrics ?? true;
  const onAttached = ({ module }: HostedModule) => {
    const m = module.name;
    const farm = farmOf(host, m);
    if (farm) {
      farm.filter.on("backend", (e) => write({ type: "backend", module: m, name: e.name, reason: e.reason }));
      farm.driver.on("buckets", (e) => write({ type: "buckets", module: m, owned: e.owned, sole: e.sole, owners: e.owners, reason: e.reason }));
      farm.driver.on("contested", (e) => write({ type: "contested", module: m, owned: e.owned, sole: e.sole, reason: e.reason }));
      farm.driver.on("held", (e) => write({ type: "held", module: m, held: e.held, cleared: e.cleared }));
      farm.driver.on("error", (e) => write({ type: "error", module: m, message: e.message }));
    }
    const mirror = mirrorDriverOf(host, m);
    if (mirror) {
      for (const t of ["role", "sync", "degraded", "resyncStart", "resyncProgress", "synced"] as const) mirror.on(t, (e: object) => write({ type: t, module: m, ...e }));
      if (metrics) mirror.on("metrics", (e) => write({ type: "metrics", module: m, ...e }));
      mirror.on("error", (e) => write({ type: "error", module: m, message: e.message }));
    }
    module.on("state", (s) => write({ type: "state", module: m, state: s.state, ready: s.ready, transient: s.transient, next: s.next, reason: s.reason }));
    module.on("hook", (hook, r) => write({ type: "hook", module: m, hook, ok: r.ok, ms: r.durationMs, detail: r.detail }));
    module.on("record", (r) => {
      if (r.kind === "event" && r.event.type === "decision") write({ type: "decision", module: m, level: r.event.level, cause: r.event.cause });
    });
  };
  const onVerdict = (m: string, v: { checker: string; ok: boolean; reason: string }) => write({ type: "checker", module: m, checker: v.checker, ok: v.ok, reason: v.reason });
  const onError = (e: Error) => write({ type: "error", message: e.message });
  const onStall = (e: { gapMs: number }) => write({ type: "stall", gapMs: Math.round(e.gapMs) });
  const onEvent = (e: { type: string } & Record<string, unknown>) => {
    if (e.type === "nodeDown" || e.type === "nodeUp") write({ type: e.type, node: e.node, reason: e.reason });
    else if (e.type === "viewChange") {
      const v = e as unknown as { view: { members: { id: string }[] }; agreed: boolean };
      write({ type: "viewChange", members: v.view.members.map((x) => x.id), agreed: v.agreed });
    }
  };
  host.on("attached", onAttached);
  host.on("verdict", onVerdict);
  host.on("error", onError);
  host.membership.on("localStall", onStall);
  host.membership.on("event", onEvent);
  return () => {
    host.off("attached", onAttached);
    host.off("verdict", onVerdict);
    host.off("error", onError);
    host.membership.off("localStall", onStall);
    host.membership.off("event", onEvent);
  };
}
