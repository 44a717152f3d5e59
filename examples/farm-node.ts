#!/usr/bin/env node
// One node of a farm, built with the SDK's Host: membership + the module engine (kind farm) + the VIP on every
// node + the in-kernel packet filter, serving a small HTTP app started by the module's start_both hook. Prints
// JSON lines.
//
//   tsx examples/farm-node.ts --config cluster.json --node n0 --iface eth0 --vip 198.18.0.100 \
//       --mac 02:bf:00:00:00:64 [--port 80] [--by address+port|address] [--backend auto|ebpf|nftables|userspace]
//
// cluster.json: `{ clusterId, key, port?, preset?, timing?, nodes: [{ id, addresses }] }`. The app answers `GET /`
// with this node's id, and `GET /stream?ms=N` with one line every 100 ms for N ms (a long-lived connection).
// SIGTERM stops the module (stop_both, buckets released, VIP and filter removed) and leaves the cluster; SIGUSR2
// prints the filter counters. Module state and event logs live under $TMPDIR/holdfast-farm-node/<cluster>/<node>.
import { createServer, type Server } from "node:http";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Host, farmOf, traceHost } from "holdfast";

const { values: a } = parseArgs({
  options: {
    config: { type: "string" },
    node: { type: "string" },
    iface: { type: "string", default: "eth0" },
    vip: { type: "string" },
    mac: { type: "string", default: "02:bf:00:00:00:64" },
    port: { type: "string", default: "80" },
    /** More balanced TCP ports besides --port: `PORT[:address|address+port]`, comma-separated (e.g. iperf3, which
     *  opens several connections per test, needs `5201:address`). */
    "extra-ports": { type: "string", default: "" },
    /** "http" (default): the app below, started by start_both; "none": the app runs on its own. */
    app: { type: "string", default: "http" },
    by: { type: "string", default: "address+port" },
    backend: { type: "string", default: "auto" },
    avoid: { type: "string" },
  },
});
if (!a.config || !a.node || !a.vip) {
  console.error("usage: farm-node --config FILE --node ID --vip ADDR [--iface IF] [--mac MAC] [--port N] [--by address|address+port] [--backend NAME]");
  process.exit(2);
}
const now = () => performance.timeOrigin + performance.now();
const out = (o: object) => process.stdout.write(JSON.stringify({ t: Math.round(now() * 10) / 10, ...o }) + "\n");
const nodeId = a.node;
const port = Number(a.port);

// ---- the app ------------------------------------------------------------------------------------
let server: Server | null = null;
const startApp = () =>
  new Promise<void>((resolve, reject) => {
    const s = createServer((req, res) => {
      const u = new URL(req.url ?? "/", "http://x");
      if (u.pathname === "/stream") {
        const ms = Math.min(60_000, Number(u.searchParams.get("ms") ?? 3000));
        res.writeHead(200, { "content-type": "text/plain" });
        res.write(`${nodeId}\n`);
        const end = Date.now() + ms;
        const timer = setInterval(() => {
          if (Date.now() >= end) {
            clearInterval(timer);
            res.end(`done ${nodeId}\n`);
          } else res.write(".\n");
        }, 100);
        req.on("close", () => clearInterval(timer));
        return;
      }
      res.writeHead(200, { "content-type": "text/plain", connection: "close" });
      res.end(`${nodeId}\n`);
    });
    s.once("error", reject);
    s.listen(port, "0.0.0.0", () => {
      server = s;
      resolve();
    });
  });
const stopApp = () =>
  new Promise<void>((resolve) => {
    if (!server) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
    server = null;
  });

// ---- HA: one farm module on a Host ----------------------------------------------------------------
const c = JSON.parse(readFileSync(a.config, "utf8")) as { clusterId: string; key: string; port?: number; preset?: "lan"; timing?: object; nodes: { id: string; addresses: string[] }[] };
const dir = join(tmpdir(), "holdfast-farm-node", c.clusterId, nodeId);
const rules = [`${port}`, ...(a["extra-ports"] ? a["extra-ports"].split(",") : [])].map((spec) => {
  const [p, by] = spec.split(":");
  return { protocol: "tcp" as const, port: Number(p), by: (by ?? a.by) as "address" | "address+port" };
});
const host = new Host({
  cluster: { id: c.clusterId, key: c.key, nodes: c.nodes, ...(c.port ? { port: c.port } : {}), ...(c.preset ? { preset: c.preset } : {}), ...(c.timing ? { timing: c.timing } : {}) },
  node: nodeId,
  modules: [{ name: "web", kind: "farm", vips: [`${a.vip}/32`], hooks: a.app === "none" ? {} : { start_both: { fn: startApp, timeout: 10_000 }, stop_both: { fn: stopApp, timeout: 10_000 } } }],
  farm: { web: { iface: a.iface, mac: a.mac, rules, backend: a.backend as "auto", ...(a.avoid ? { avoid: a.avoid.split(",") as "ebpf"[] } : {}) } },
  stateDir: join(dir, "state"),
  logDir: join(dir, "log"),
});
traceHost(host, out); // every membership, module and farm event as a JSON line
await host.start();
out({ type: "ready", node: nodeId, pid: process.pid });

// ---- the lab's hooks: filter counters on SIGUSR2, a line once stopped -----------------------------
process.on("SIGUSR2", () => {
  void farmOf(host, "web")!.filter.counters().then(
    (c) => out({ type: "counters", ...c, perBucket: undefined }),
    (e: Error) => out({ type: "error", message: e.message }),
  );
});
const bye = async () => {
  await host.stop();
  out({ type: "stopped" });
  process.exit(0);
};
process.on("SIGTERM", () => void bye());
process.on("SIGINT", () => void bye());
