/**
 * The mirror module kinds. With replicated data: for each mirror module with `replication: { <module>: { mode:
 * sync, ... } }` in the config, a {@link MirrorDriver} (the FUSE replication helper as primary or secondary,
 * following the module's states) and a {@link MirrorVip} (the VIP on the primary alone, announced by
 * gratuitous ARP / unsolicited NA).
 *
 * - `prepare` (before the module exists): creates the driver and weaves it into the module's hooks. The
 *   module's script hooks run inside the mount's namespace while this node is primary, so the application that
 *   `start_prim` launches sees the replicated directory at its `path` (scripts also get `HOLDFAST_MOUNT`).
 *   Order on the primary: VIP added (engine) -> mount -> `start_prim`; on the way out: `stop_prim` -> VIP removed
 *   -> unmount.
 * - `attach`: binds the driver to the module and the membership, takes over the module's VIP, and exposes the
 *   replication state (details for `holdfast state --json`, the module's `GET`, the console) and metrics.
 * - `command`: `resync` (`holdfast resync db`) (a checksum pass: only blocks that differ are sent; when the extent log
 *   cannot be trusted) and `holdfast fullsync db` (the whole tree), on the primary; the app keeps running.
 * - `close` (host shutdown, after the module stopped): stops the helpers (unmounts) and the VIP announcer.
 * - the mount point in the daemon's namespace carries a read-only marker (`HOLDFAST-NOT-HERE`) while this node is
 *   secondary, or primary with the mount in the helper's private namespace: nothing written there would be
 *   replicated (`MirrorDriverOptions.marker`). A crashed run's marker is removed at `prepare`, before any mount.
 * - split-brain checkers (a witness, or the witness arbiter's lease) wired to the driver by the SDK's
 *   `mirrorSplitBrain` (src/mirror/splitBrain.ts): the lease bounds the replication permit, a SECOND with its
 *   primary in view hands a lease it holds back, and a failover waits `failoverFenceMs` (default 300 with any
 *   split-brain checker) after the peer left the view for a cut-off primary to leave the role.
 *
 * Replication states in the details (`replication.state`): primary `sync` (every write acked by the secondary),
 * `degraded` (no secondary: changes go to the extent log), `resyncing` (the secondary catches up: `percent`,
 * `resync.bytes` / `resync.totalBytes`), `starting`; secondary `in sync`, `resyncing` (receiving),
 * `waiting for the primary`; `idle` when neither.
 */
import { mkdirSync } from "node:fs";
import { CommandRefusedError } from "../core/errors.js";
import { isPrimaryState } from "../core/module/types.js";
import type { ReplicationSyncEntry } from "../host/config.js";
import type { HostExtension, MetricSample, ModuleExtension } from "../host/host.js";
import type { Module } from "../runtime/module.js";
import type { ReplicatorMetrics, ResyncMode } from "./FileReplicator.js";
import { MirrorDriver } from "./mirror.js";
import { mirrorSplitBrain } from "./splitBrain.js";
import { MirrorVip } from "./vip.js";

/** What the state API shows of the last (or current) resync pass, on the primary. */
export interface ResyncInfo {
  readonly mode: ResyncMode;
  active: boolean;
  /** Bytes of the pass done so far, of `totalBytes` to examine (the helper's progress). */
  bytes: number;
  totalBytes: number;
  percent: number;
  /** Data bytes sent to the secondary by this pass (known when it finished). */
  sentBytes?: number;
  readonly startedAt: string;
  finishedAt?: string;
  durationMs?: number;
}

interface Wiring {
  readonly entry: ReplicationSyncEntry;
  readonly driver: MirrorDriver;
  /** Where the driver's log lines go: the module, once it exists. */
  readonly sink: { module?: Pick<Module, "note" | "status"> };
  /** What the start's stale-marker removal did, for the module's log. */
  readonly stale?: string;
}

const wirings = new WeakMap<object, Map<string, Wiring>>();

/** The replication driver the mirror kind made for module `module` of `host` (sync replication on this node). */
export function mirrorDriverOf(host: object, module: string): MirrorDriver | undefined {
  return wirings.get(host)?.get(module)?.driver;
}

function syncEntry(config: { replication: Readonly<Record<string, { mode: string }>> }, name: string): ReplicationSyncEntry | undefined {
  const r = config.replication[name];
  return r?.mode === "sync" ? (r as ReplicationSyncEntry) : undefined;
}

export const mirrorKind: HostExtension = {
  name: "mirror",
  prepare({ host, definition, nodeId, config }) {
    const entry = syncEntry(config, definition.name);
    if (definition.kind !== "mirror" || !entry) return undefined;
    const self = entry.nodes[nodeId];
    const peerId = Object.keys(entry.nodes).find((id) => id !== nodeId);
    const peer = peerId === undefined ? undefined : entry.nodes[peerId];
    if (!self || !peer) throw new Error(`module ${definition.name}: node ${nodeId} is not one of replication.${definition.name}.nodes (${Object.keys(entry.nodes).join(", ")})`);
    const dir = entry.directories[0] as { path: string; backing: string };
    mkdirSync(dir.path, { recursive: true });
    // The backing directory holds the real files: only root may read them behind the mount (an existing one is left as it is).
    mkdirSync(dir.backing, { recursive: true, mode: 0o700 });
    const sink: Wiring["sink"] = {};
    const splitBrain = mirrorSplitBrain(definition.checkers ?? [], {
      secondWithPeer: () => sink.module?.status.state === "SECOND" && host.membership.view.members.some((m) => m.id !== nodeId),
      ...(entry.failoverFenceMs !== undefined ? { failoverFenceMs: entry.failoverFenceMs } : {}),
    });
    const driver = new MirrorDriver({
      nodeId,
      backingDir: dir.backing,
      mountPoint: dir.path,
      keyFile: entry.keyFile,
      listen: self,
      peer,
      replicator: {
        statsIntervalMs: entry.statsIntervalMs ?? 1000,
        ...(entry.ackTimeoutMs !== undefined ? { ackTimeoutMs: entry.ackTimeoutMs } : {}),
        ...(entry.reconnectMs !== undefined ? { reconnectMs: entry.reconnectMs } : {}),
        ...(entry.threads !== undefined ? { threads: entry.threads } : {}),
        ...(entry.mountNamespace !== undefined ? { mountNamespace: entry.mountNamespace } : {}),
        ...(entry.helperPath !== undefined ? { helperPath: entry.helperPath } : {}),
        ...(entry.options !== undefined ? { extra: entry.options } : {}),
      },
      ...(entry.disconnectGraceMs !== undefined ? { disconnectGraceMs: entry.disconnectGraceMs } : {}),
      ...splitBrain.driver,
      hookEnv: { HOLDFAST_NODE: nodeId, HOLDFAST_CLUSTER: config.clusterId },
      log: (line) => sink.module?.note(/^error|degraded/.test(line) ? "warn" : "info", `replication: ${line}`),
      marker: true,
    });
    // A marker a crashed run left over the path goes before anything is mounted (said in the log at attach).
    let stale: string | undefined;
    try {
      const n = driver.removeStaleMarker();
      if (n > 0) stale = `replication: removed ${n} stale read-only marker(s) over ${dir.path} (left by a previous run)`;
    } catch (e) {
      stale = `replication: could not remove the stale marker over ${dir.path}: ${(e as Error).message}`;
    }
    let map = wirings.get(host);
    if (!map) wirings.set(host, (map = new Map()));
    map.set(definition.name, { entry, driver, sink, ...(stale !== undefined ? { stale } : {}) });
    return { ...definition, checkers: splitBrain.checkers, hooks: driver.hooks(definition.hooks, definition.hookTimeout) };
  },

  attach({ host, module }): ModuleExtension | undefined {
    const w = wirings.get(host)?.get(module.name);
    if (!w) return undefined;
    const { driver, entry } = w;
    w.sink.module = module;
    if (w.stale !== undefined) module.note(w.stale.includes("could not") ? "error" : "warn", w.stale);
    const vip = new MirrorVip({ ...(entry.iface !== undefined ? { iface: entry.iface } : {}), log: (line) => module.note("info", line) });
    let resync: ResyncInfo | undefined;
    let resyncBase = 0;
    let secondaryInSync = false;
    let lastDegraded: { reason: string; at: string } | undefined;
    driver.on("resyncStart", (e) => {
      resyncBase = driver.metrics()?.resyncBytes ?? 0;
      resync = { mode: e.mode, active: true, bytes: 0, totalBytes: e.totalBytes, percent: e.totalBytes === 0 ? 100 : 0, startedAt: new Date().toISOString() };
    });
    driver.on("resyncProgress", (e) => {
      if (!resync) return;
      resync.bytes = e.bytes;
      resync.totalBytes = e.totalBytes;
      resync.percent = e.percent;
    });
    driver.on("synced", (e) => {
      if (!resync) return;
      resync.active = false;
      resync.percent = 100;
      resync.bytes = resync.totalBytes;
      resync.sentBytes = Math.max(0, e.resyncBytes - resyncBase);
      resync.finishedAt = new Date().toISOString();
      resync.durationMs = Date.parse(resync.finishedAt) - Date.parse(resync.startedAt);
      module.note("info", `replication: resync ${e.mode} finished: ${resync.sentBytes} bytes sent in ${resync.durationMs} ms`);
    });
    driver.on("degraded", (e) => {
      lastDegraded = { reason: e.reason, at: new Date().toISOString() };
      if (resync?.active) resync.active = false;
    });
    driver.on("sync", (e) => (secondaryInSync = e.inSync));
    driver.on("role", (e) => {
      if (e.role !== "secondary") secondaryInSync = false;
    });
    driver.on("error", (e) => module.note("error", `replication: ${e.message}`));
    const unbind = driver.bind(module, host.membership);

    const state = (): string => {
      if (driver.role === "primary") {
        const s = driver.primary?.state ?? "starting";
        return s === "stopped" ? "idle" : s;
      }
      if (driver.role === "secondary") {
        if (secondaryInSync && module.status.ready) return "in sync";
        return driver.secondary?.state === "sync" ? "resyncing" : "waiting for the primary";
      }
      return "idle";
    };
    const percent = (st: string): number | undefined => {
      if (st === "resyncing" && driver.role === "primary") return resync?.active ? resync.percent : 0;
      if (st === "sync" || st === "in sync") return 100;
      if (driver.role === "secondary") return 0;
      return undefined;
    };
    const metricsNow = (): ReplicatorMetrics | undefined => (driver.role === "primary" ? driver.metrics() : undefined);

    return {
      vip,
      driver,
      command: (cmd) => {
        const mode: ResyncMode = cmd === "fullsync" ? "full" : "checksum";
        try {
          driver.resync(mode);
        } catch (e) {
          throw new CommandRefusedError(`${cmd}: ${(e as Error).message} (run it on the primary)`, { cause: e });
        }
        return `resync ${mode} of the secondary requested (writes are logged while the link cycles, then ${mode === "full" ? "the whole tree" : "every block that differs"} is sent)`;
      },
      details: () => {
        const st = state();
        const m = metricsNow();
        const pct = percent(st);
        const dir = entry.directories[0];
        return {
          replication: {
            mode: "sync",
            role: driver.role,
            state: st,
            ...(pct !== undefined ? { percent: pct } : {}),
            ...(dir ? { path: dir.path, backing: dir.backing } : {}),
            ...(m
              ? {
                  bytes: m.bytesReplicated,
                  ackLatencyAvgUs: Math.round(m.ackLatencyAvgUs),
                  ackLatencyMaxUs: m.ackLatencyMaxUs,
                  queueDepth: m.queueDepth,
                  logRecords: m.logRecords,
                  resyncBytes: m.resyncBytes,
                  degradedCount: m.degradedCount,
                }
              : {}),
            // The helper says `synced` before the byte count of the pass arrives (with its next stats line).
            ...(resync ? { resync: { ...resync, ...(resync.active && st === "sync" ? { active: false, percent: 100 } : {}) } } : {}),
            ...(lastDegraded ? { lastDegraded } : {}),
            localCopy: driver.localCopy(),
          },
        };
      },
      metrics: () => {
        const st = state();
        const out: MetricSample[] = [];
        const g = (name: string, help: string, value: number, type: "gauge" | "counter" = "gauge", labels?: Record<string, string>) =>
          out.push({ name, help, type, value, ...(labels ? { labels } : {}) });
        for (const s of ["sync", "degraded", "resyncing", "starting", "in sync", "waiting for the primary", "idle"]) {
          g("holdfast_replication_state", "1 for the replication state of the module on this node, 0 for the others", st === s ? 1 : 0, "gauge", { state: s });
        }
        g("holdfast_replication_in_sync", "1 when every write is replicated synchronously (primary: sync; secondary: in sync)", st === "sync" || st === "in sync" ? 1 : 0);
        const pct = percent(st);
        if (pct !== undefined) g("holdfast_replication_resync_percent", "Progress of the resync towards the secondary, percent (100 when in sync)", pct);
        if (resync) {
          g("holdfast_replication_resync_active", "1 while a resync pass runs (primary)", resync.active ? 1 : 0);
          g("holdfast_replication_resync_remaining_bytes", "Bytes of the current resync pass still to examine (primary)", resync.active ? Math.max(0, resync.totalBytes - resync.bytes) : 0);
        }
        const m = driver.metrics();
        if (m) {
          g("holdfast_replication_bytes_total", "Data bytes sent to the secondary (live writes and resync) by this node's current or last primary helper", m.bytesReplicated, "counter");
          g("holdfast_replication_resync_bytes_total", "Data bytes sent by resync passes by this node's current or last primary helper", m.resyncBytes, "counter");
          g("holdfast_replication_acks_total", "Acks received from the secondary", m.acks, "counter");
          g("holdfast_replication_ack_latency_seconds", "Mean ack latency over the last stats interval", m.ackLatencyAvgUs / 1e6);
          g("holdfast_replication_ack_latency_max_seconds", "Max ack latency over the last stats interval", m.ackLatencyMaxUs / 1e6);
          g("holdfast_replication_queue_depth", "Operations sent and not yet acked", m.queueDepth);
          g("holdfast_replication_log_records", "Records in the extent log (changes the secondary has not got)", m.logRecords);
          g("holdfast_replication_degraded_total", "Times the primary went degraded", m.degradedCount, "counter");
        }
        return out;
      },
      close: async () => {
        unbind();
        await driver.close().catch((e: unknown) => module.note("error", `replication: close: ${(e as Error).message}`));
        vip.close();
        wirings.get(host)?.delete(module.name);
      },
    };
  },
};

/**
 * `replication: { <module>: { mode: none } }`: a mirror module with no replicated data. Its secondary is in
 * sync as soon as it is SECOND with a primary in view, which the module engine learns through
 * `module.replication({ inSync: true })` (the input the replication layer feeds otherwise).
 */
export const noReplicationKind: HostExtension = {
  name: "replication-none",
  attach({ host, module, config }): ModuleExtension | undefined {
    if (module.definition.kind !== "mirror" || config.replication[module.name]?.mode !== "none") return undefined;
    const check = () => {
      const s = module.status;
      if (s.state === "SECOND" && !s.transient && !s.ready) queueMicrotask(() => module.replication({ inSync: true }));
    };
    module.on("state", check);
    host.membership.on("peerMeta", check);
    host.membership.on("viewChange", check);
    return {
      details: () => {
        const s = module.status;
        return {
          replication: {
            state: s.state === "SECOND" ? (s.ready ? "in sync (no replicated data)" : "waiting for the primary") : isPrimaryState(s.state) ? "primary (no replicated data)" : "idle",
            ...(s.state === "SECOND" ? { percent: s.ready ? 100 : 0 } : {}),
          },
        };
      },
      close: async () => {
        module.off("state", check);
        host.membership.off("peerMeta", check);
        host.membership.off("viewChange", check);
      },
    };
  },
};
