#!/usr/bin/env node
// One node of a farm: membership + the module engine (kind farm) + the VIP on every node + the in-kernel
// packet filter, serving a small HTTP app started by the module's start_both hook. Prints JSON lines.
//
//   tsx examples/farm-node.ts --config cluster.json --node n0 --iface eth0 --vip 198.18.0.100 \
//       --mac 02:bf:00:00:00:64 [--port 80] [--by address+port|address] [--backend auto|ebpf|nftables|userspace]
//
// The app answers `GET /` with this node's id, and `GET /stream?ms=N` with one line every 100 ms for N ms
// (a long-lived connection). SIGTERM stops the module (stop_both, buckets released, VIP and filter removed)
// and leaves the cluster; SIGUSR2 prints the filter counters.
import { createServer, type Server } from "node:http";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Membership, type MembershipOptions } from "../src/runtime/membership.js";
import { Module, bindMembership } from "../src/runtime/module.js";
import { FarmVip } from "../src/farm/vip.js";
import { DEFAULT_LEASE_MS, PacketFilter } from "../src/farm/filter/index.js";
import { FarmDriver } from "../src/farm/farm.js";
import { withMetaFields } from "../src/farm/meta.js";

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

const cfg = JSON.parse(readFileSync(a.config, "utf8")) as Record<string, unknown>;
const membership = new Membership({ ...cfg, nodeId } as unknown as MembershipOptions);

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

const filter = new PacketFilter({
  iface: a.iface,
  vips: [a.vip],
  rules: [`${port}`, ...(a["extra-ports"] ? a["extra-ports"].split(",") : [])].map((spec) => {
    const [p, by] = spec.split(":");
    return { protocol: "tcp" as const, port: Number(p), by: (by ?? a.by) as "address" | "address+port" };
  }),
  backend: a.backend as "auto",
  ...(a.avoid ? { avoid: a.avoid.split(",") as ("ebpf" | "nftables" | "userspace")[] } : {}),
  log: (line) => out({ type: "log", line }),
  // After a freeze the old table must not come back with the lease: the peers took these buckets meanwhile.
  releaseOnLapse: true,
});
filter.on("backend", (e) => out({ type: "backend", name: e.name, reason: e.reason }));
const vip = new FarmVip({ iface: a.iface, addresses: [a.vip], mac: a.mac, log: (line) => out({ type: "log", line }) });
// The heartbeat metadata carries the module reports (bindMembership) and this node's held set (the farm driver:
// buckets it owns or may still hold connections in), so that each owner knows where it needs strict lookups.
const meta = withMetaFields(membership);
// `nodes`: the configured farm; a bucket is applied as sole (no strict lookup) only while all of them are in the agreed view.
// `stallMinMs`: a stall shorter than this cannot have let the peers take this node's buckets (see FarmDriver).
const timing = membership.settings.timing;
const farm = new FarmDriver({ module: "web", nodeId, vip, filter, nodes: membership.settings.nodes.map((n) => n.id), stallMinMs: timing.lossTimeoutMs - timing.pulseMs, publishHeld: (held) => meta.set("held", { web: held }) });
const leaseMs = filter.options.leaseMs ?? DEFAULT_LEASE_MS;
filter.on("lease-lapsed", (e) => farm.stalled(`filter lease lapsed for ${e.lapsedMs} ms`, e.lapsedMs + leaseMs));
farm.on("buckets", (e) => out({ type: "buckets", owned: e.owned, sole: e.sole, owners: e.owners, reason: e.reason }));
farm.on("contested", (e) => out({ type: "contested", owned: e.owned, sole: e.sole, reason: e.reason }));
farm.on("held", (e) => out({ type: "held", held: e.held, cleared: e.cleared }));
membership.on("localStall", (e) => out({ type: "stall", gapMs: Math.round(e.gapMs) }));
farm.on("error", (e) => out({ type: "error", message: e.message }));

const module = await Module.create(
  {
    name: "web",
    kind: "farm",
    vips: [`${a.vip}/32`],
    hooks: a.app === "none" ? {} : { start_both: { fn: startApp, timeout: 10_000 }, stop_both: { fn: stopApp, timeout: 10_000 } },
  },
  { nodeId, vip: farm },
);
module.on("state", (s) => out({ type: "state", state: s.state, ready: s.ready, transient: s.transient, reason: s.reason }));
module.on("error", (e) => out({ type: "error", message: e.message }));
membership.on("event", (e) => {
  if (e.type === "nodeDown" || e.type === "nodeUp") out({ type: e.type, node: e.node, reason: e.reason });
  else if (e.type === "viewChange") out({ type: "viewChange", members: e.view.members.map((m) => m.id), agreed: e.agreed });
});

bindMembership(meta.membership, [module]);
farm.bind(module, membership);
await membership.start();
await module.start();
out({ type: "ready", node: nodeId, pid: process.pid });

process.on("SIGUSR2", () => {
  void filter.counters().then(
    (c) => out({ type: "counters", ...c, perBucket: undefined }),
    (e: Error) => out({ type: "error", message: e.message }),
  );
});
const bye = async () => {
  await module.stop();
  await farm.remove();
  await membership.stop();
  out({ type: "stopped" });
  process.exit(0);
};
process.on("SIGTERM", () => void bye());
process.on("SIGINT", () => void bye());
