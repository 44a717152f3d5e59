/**
 * `holdfast daemon --config FILE`: loads the config, starts the {@link Daemon} and its {@link ApiServer},
 * tells systemd it is ready (`READY=1` when `NOTIFY_SOCKET` is set), prints one JSON line per membership
 * event and module state change on stdout (the journal keeps them), and on SIGTERM/SIGINT stops cleanly:
 * modules stopped (stop hooks run, VIPs removed), membership left, API closed, within `stopTimeoutMs`
 * (then exit code 1), as systemd's `TimeoutStopSec` expects.
 */
import { traceHost } from "holdfast";
import { loadConfig } from "./config.js";
import { ApiServer } from "./api.js";
import { Daemon } from "./daemon.js";
import { sdNotify } from "./sdnotify.js";

export interface RunOptions {
  readonly config: string;
  readonly nodeId?: string;
  /** Overall bound of a clean shutdown, ms. Default 30 000 (below systemd's default TimeoutStopSec of 90 s). */
  readonly stopTimeoutMs?: number;
  /** Print every event of the host (`traceHost`) as a JSON line of kind "trace" (labs, benches, debugging). */
  readonly trace?: boolean;
}

export async function runDaemon(opts: RunOptions): Promise<void> {
  const out = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ ts: new Date().toISOString(), ...o }) + "\n");
  const cfg = loadConfig(opts.config, { ...(opts.nodeId !== undefined ? { nodeId: opts.nodeId } : {}) });
  const daemon = new Daemon(cfg);
  daemon.on("membership", (l) => out({ kind: "membership", ...l, ts: undefined }));
  daemon.on("moduleState", (m, s) => out({ kind: "module", node: daemon.nodeId, ...s, module: m }));
  daemon.on("error", (e) => out({ kind: "error", node: daemon.nodeId, error: e.message }));
  // Trace lines also carry `t` (ms since the epoch, sub-ms), for tools that time events against each other.
  if (opts.trace) traceHost(daemon, (l) => out({ kind: "trace", node: daemon.nodeId, t: Math.round((performance.timeOrigin + performance.now()) * 10) / 10, ...l }));
  const api = new ApiServer({ daemon });
  const stopTimeoutMs = opts.stopTimeoutMs ?? 30_000;

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    out({ kind: "daemon", node: daemon.nodeId, event: "stopping", signal });
    try {
      sdNotify("STOPPING=1");
    } catch {
      /* systemd gone: nothing to tell */
    }
    const timer = setTimeout(() => {
      out({ kind: "daemon", node: daemon.nodeId, event: "stop timeout", ms: stopTimeoutMs });
      process.exit(1);
    }, stopTimeoutMs + 2_000);
    await daemon.stop(stopTimeoutMs);
    await api.close();
    clearTimeout(timer);
    out({ kind: "daemon", node: daemon.nodeId, event: "stopped" });
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  const addr = await api.listen();
  await daemon.start();
  const scheme = cfg.api.tls ? "https" : "http";
  const host = addr.address.includes(":") ? `[${addr.address}]` : addr.address;
  out({
    kind: "daemon",
    event: "ready",
    node: daemon.nodeId,
    pid: process.pid,
    api: `${scheme}://${host}:${addr.port}`,
    modules: [...daemon.modules.keys()],
    tokens: api.auth.size,
  });
  if (api.auth.size === 0) out({ kind: "daemon", node: daemon.nodeId, event: "warning", warning: "no API token configured: every API call except /health will be refused (401)" });
  sdNotify(`READY=1\nSTATUS=holdfast ${daemon.nodeId}: ${daemon.modules.size} module(s), API on ${addr.address}:${addr.port}\nMAINPID=${process.pid}`);
}
