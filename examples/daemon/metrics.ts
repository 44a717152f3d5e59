/**
 * Prometheus text exposition (format 0.0.4) of the daemon: module states, transitions, failovers,
 * commands, checker states, membership counters (heartbeats sent/received/accepted, drops by reason),
 * view size, and whatever the modules' extensions expose. Written by hand: the format is a few lines
 * and prom-client's registry would only mirror state the daemon already holds.
 */
import { MODULE_STATES } from "holdfast";
import type { Daemon, MetricSample } from "./daemon.js";

function esc(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labels(l: Readonly<Record<string, string>> | undefined): string {
  const e = Object.entries(l ?? {});
  return e.length === 0 ? "" : `{${e.map(([k, v]) => `${k}="${esc(v)}"`).join(",")}}`;
}

/** Renders samples grouped by metric name (one HELP/TYPE per name). */
export function renderSamples(samples: readonly MetricSample[]): string {
  const byName = new Map<string, MetricSample[]>();
  for (const s of samples) byName.set(s.name, [...(byName.get(s.name) ?? []), s]);
  const out: string[] = [];
  for (const [name, list] of byName) {
    const first = list[0] as MetricSample;
    out.push(`# HELP ${name} ${first.help}`, `# TYPE ${name} ${first.type}`);
    for (const s of list) out.push(`${name}${labels(s.labels)} ${Number.isFinite(s.value) ? s.value : 0}`);
  }
  return out.join("\n") + "\n";
}

export function daemonSamples(d: Daemon): MetricSample[] {
  const s: MetricSample[] = [];
  const node = d.nodeId;
  for (const [name, h] of d.modules) {
    const st = h.module.status;
    for (const state of MODULE_STATES) {
      s.push({ name: "holdfast_module_state", help: "1 for the module's current state on this node, 0 for the others", type: "gauge", labels: { node, module: name, state }, value: st.state === state ? 1 : 0 });
    }
    s.push({ name: "holdfast_module_ready", help: "1 when the module is ready to serve in its state", type: "gauge", labels: { node, module: name }, value: st.ready ? 1 : 0 });
    s.push({ name: "holdfast_module_transient", help: "1 while a transition (hook) runs", type: "gauge", labels: { node, module: name }, value: st.transient ? 1 : 0 });
    s.push({ name: "holdfast_module_failovers_total", help: "Times this node took over as primary after losing its peer (SECOND -> ALONE)", type: "counter", labels: { node, module: name }, value: h.counts.failovers });
    for (const [k, v] of h.counts.transitions) {
      const [from, to] = k.split(">") as [string, string];
      s.push({ name: "holdfast_module_transitions_total", help: "State changes by from/to state", type: "counter", labels: { node, module: name, from, to }, value: v });
    }
    for (const [k, v] of h.counts.commands) {
      const [command, result] = k.split(" ") as [string, string];
      s.push({ name: "holdfast_module_commands_total", help: "Administrator commands by result", type: "counter", labels: { node, module: name, command, result }, value: v });
    }
    s.push({ name: "holdfast_module_restarts_in_window", help: "Local restarts still inside the restart window (maxloop budget used)", type: "gauge", labels: { node, module: name }, value: h.module.persisted.restarts.length });
    for (const c of h.checkers?.status() ?? []) {
      s.push({ name: "holdfast_checker_ok", help: "1 when the checker's decided state is ok, 0 when failed, -1 when unknown", type: "gauge", labels: { node, module: name, checker: c.checker, kind: c.kind }, value: c.state === "ok" ? 1 : c.state === "failed" ? 0 : -1 });
    }
    for (const x of h.extensions) s.push(...(x.metrics?.() ?? []).map((m) => ({ ...m, labels: { node, module: name, ...(m.labels ?? {}) } })));
  }
  const c = d.membership.counters;
  s.push({ name: "holdfast_heartbeats_sent_total", help: "Heartbeat datagrams sent (all peers, all networks)", type: "counter", labels: { node }, value: c.sent });
  s.push({ name: "holdfast_heartbeats_received_total", help: "Heartbeat datagrams received", type: "counter", labels: { node }, value: c.received });
  s.push({ name: "holdfast_heartbeats_accepted_total", help: "Heartbeat datagrams accepted (authentic, fresh)", type: "counter", labels: { node }, value: c.accepted });
  for (const [reason, n] of Object.entries(c.dropped)) {
    s.push({ name: "holdfast_heartbeats_dropped_total", help: "Heartbeat datagrams dropped, by reason (forged, replayed, malformed, ...)", type: "counter", labels: { node, reason }, value: n });
  }
  const st = d.state();
  s.push({ name: "holdfast_view_members", help: "Nodes in this node's membership view, itself included", type: "gauge", labels: { node }, value: st.view.members.length });
  s.push({ name: "holdfast_view_epoch", help: "Epoch of this node's membership view", type: "gauge", labels: { node }, value: st.view.epoch });
  s.push({ name: "holdfast_view_agreed", help: "1 when every member advertises the same view", type: "gauge", labels: { node }, value: st.view.agreed ? 1 : 0 });
  for (const n of st.nodes) s.push({ name: "holdfast_node_up", help: "1 when the node is in this node's view", type: "gauge", labels: { node, peer: n.id }, value: n.up ? 1 : 0 });
  for (const n of st.nodes) {
    if (n.id === node) continue;
    d.membership.heartbeatRtt(n.id).forEach((ms, network) => {
      if (Number.isNaN(ms)) return;
      s.push({ name: "holdfast_heartbeat_rtt_seconds", help: "Smoothed heartbeat round-trip time to a peer, per heartbeat network", type: "gauge", labels: { node, peer: n.id, network: String(network) }, value: ms / 1000 });
    });
  }
  s.push({ name: "holdfast_daemon_start_time_seconds", help: "Start time of the daemon, Unix seconds", type: "gauge", labels: { node }, value: Math.round(d.startedAt / 1000) });
  return s;
}

export function renderMetrics(d: Daemon): string {
  return renderSamples(daemonSamples(d));
}
