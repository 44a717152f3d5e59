#!/usr/bin/env node
// One node of a mirror: membership + the module engine (kind mirror) + MirrorDriver (replicated directory)
// + MirrorVip + a small app started by start_prim that appends fsync'd records to a file in the replicated
// directory and serves them over HTTP. Prints JSON lines.
//
//   tsx examples/mirror-node.ts --config cluster.json --node n0 --dir /srv/n0 --vip 198.18.0.100/24 \
//       --listen 198.18.0.10:7790 --peer 198.18.0.11:7790 --key repl.key [--default-primary n0] \
//       [--iface eth0] [--port 80] [--witness 198.18.0.200] [--record-bytes 4096]
//
// Layout under --dir: data/ (backing directory), mnt/ (mount point), state/ (module state), log/ (event log),
// control.sock (a unix socket: `POST /command {"type":"swap"}`, `POST /resync {"mode":"full"}`, `GET /status`).
// The app: `POST /append?id=N` appends one record (`N <node> <padding>\n`, --record-bytes long), fdatasyncs it and
// answers `ok N <node>` only then; `POST /blob?mib=N` writes N MiB to blob.bin (fdatasync'd); `GET /records` lists
// the ids present; `GET /` answers the node id.
// SIGTERM stops the module (app stopped, VIP removed, unmounted) and leaves the cluster.
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Membership, type MembershipOptions } from "../src/runtime/membership.js";
import { FileModuleStore, Module, bindMembership } from "../src/runtime/module.js";
import { CheckerGroup } from "../src/checkers/group.js";
import { MirrorDriver } from "../src/mirror/mirror.js";
import { MirrorVip } from "../src/mirror/vip.js";
import type { ModuleCommand } from "../src/core/module/types.js";
import type { ResyncMode } from "../src/mirror/FileReplicator.js";

const { values: a } = parseArgs({
  options: {
    config: { type: "string" },
    node: { type: "string" },
    dir: { type: "string" },
    vip: { type: "string" },
    iface: { type: "string", default: "eth0" },
    listen: { type: "string" },
    peer: { type: "string" },
    key: { type: "string" },
    "default-primary": { type: "string" },
    port: { type: "string", default: "80" },
    witness: { type: "string" },
    "record-bytes": { type: "string", default: "256" },
    "ack-timeout-ms": { type: "string", default: "1000" },
  },
});
if (!a.config || !a.node || !a.dir || !a.vip || !a.listen || !a.peer || !a.key) {
  console.error("usage: mirror-node --config FILE --node ID --dir DIR --vip ADDR/LEN --listen HOST:PORT --peer HOST:PORT --key FILE [--default-primary ID] [--witness ADDR]");
  process.exit(2);
}
const now = () => performance.timeOrigin + performance.now();
const out = (o: object) => process.stdout.write(JSON.stringify({ t: Math.round(now() * 10) / 10, ...o }) + "\n");
const nodeId = a.node;
const port = Number(a.port);
const recordBytes = Math.max(32, Number(a["record-bytes"]));
const endpoint = (s: string) => {
  const i = s.lastIndexOf(":");
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(s.slice(i + 1)) };
};
const dir = a.dir;
for (const d of ["data", "mnt", "state", "log"]) mkdirSync(join(dir, d), { recursive: true });

const cfg = JSON.parse(readFileSync(a.config, "utf8")) as Record<string, unknown>;
const membership = new Membership({ ...cfg, nodeId } as unknown as MembershipOptions);

const driver = new MirrorDriver({
  nodeId,
  backingDir: join(dir, "data"),
  mountPoint: join(dir, "mnt"),
  keyFile: a.key,
  listen: endpoint(a.listen),
  peer: endpoint(a.peer),
  replicator: { statsIntervalMs: 500, ackTimeoutMs: Number(a["ack-timeout-ms"]) },
  // With a witness: the peer's isolation check runs every 50 ms; 300 ms covers it and the spread of detection.
  ...(a.witness ? { failoverFenceMs: 300 } : {}),
  log: (line) => out({ type: "log", line }),
});
driver.on("role", (e) => out({ type: "role", ...e }));
driver.on("sync", (e) => out({ type: "sync", ...e }));
driver.on("degraded", (e) => out({ type: "degraded", ...e }));
driver.on("resyncStart", (e) => out({ type: "resyncStart", ...e }));
driver.on("resyncProgress", (e) => out({ type: "resyncProgress", ...e }));
driver.on("synced", (e) => out({ type: "synced", ...e }));
driver.on("metrics", (m) => out({ type: "metrics", ...m }));
driver.on("error", (e) => out({ type: "error", message: e.message }));

// ---- the app: fsync'd appends in the replicated directory ---------------------------------------
let server: Server | null = null;
let appends: Promise<unknown> = Promise.resolve();
const recordsFile = () => driver.mountPath("records.log");

function appendRecord(id: string): Promise<void> {
  const head = `${id} ${nodeId} `;
  const line = head + "x".repeat(recordBytes - head.length - 1) + "\n";
  const run = async () => {
    const fh = await open(recordsFile(), "a");
    try {
      await fh.write(line);
      await fh.datasync();
    } finally {
      await fh.close();
    }
  };
  const p = appends.then(run, run);
  appends = p.catch(() => undefined);
  return p;
}

async function writeBlob(mib: number): Promise<void> {
  const chunk = randomBytes(1 << 20);
  const fh = await open(driver.mountPath("blob.bin"), "w");
  try {
    for (let i = 0; i < mib; i++) {
      chunk.writeUInt32LE(i, 0); // every MiB differs
      await fh.write(chunk, 0, chunk.length, i << 20);
    }
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

async function listRecords(): Promise<string> {
  let text = "";
  try {
    text = await readFile(recordsFile(), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  return text
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => l.split(" ")[0])
    .join("\n");
}

const startApp = () =>
  new Promise<void>((resolve, reject) => {
    const s = createServer((req, res) => {
      const u = new URL(req.url ?? "/", "http://x");
      const reply = (code: number, body: string) => {
        res.writeHead(code, { "content-type": "text/plain", connection: "close" });
        res.end(body);
      };
      if (req.method === "POST" && u.pathname === "/append") {
        const id = u.searchParams.get("id") ?? "";
        if (!/^[0-9A-Za-z_-]{1,40}$/.test(id)) return reply(400, "bad id\n");
        appendRecord(id).then(
          () => reply(200, `ok ${id} ${nodeId}\n`),
          (e: Error) => reply(500, `error ${e.message}\n`),
        );
        return;
      }
      if (req.method === "POST" && u.pathname === "/blob") {
        // A bulk write (N MiB into blob.bin, fdatasync'd): gives a resync something to chew on in fault tests.
        const mib = Math.min(512, Math.max(1, Number(u.searchParams.get("mib") ?? 1)));
        writeBlob(mib).then(
          () => reply(200, `ok blob ${mib} ${nodeId}\n`),
          (e: Error) => reply(500, `error ${e.message}\n`),
        );
        return;
      }
      if (u.pathname === "/records") {
        listRecords().then(
          (ids) => reply(200, `${nodeId}\n${ids}\n`),
          (e: Error) => reply(500, `error ${e.message}\n`),
        );
        return;
      }
      reply(200, `${nodeId}\n`);
    });
    s.once("error", reject);
    s.listen(port, "0.0.0.0", () => {
      server = s;
      out({ type: "app", state: "started", mount: driver.mountPath() });
      resolve();
    });
  });
const stopApp = () =>
  new Promise<void>((resolve) => {
    if (!server) return resolve();
    const s = server;
    server = null;
    s.close(() => {
      void appends.then(() => {
        out({ type: "app", state: "stopped" });
        resolve();
      });
    });
    s.closeAllConnections();
  });

// ---- module ------------------------------------------------------------------------------------
const vip = new MirrorVip({ iface: a.iface, log: (line) => out({ type: "log", line }) });
const stale = await vip.removeStale([a.vip]);
if (stale.length > 0) out({ type: "staleVip", removed: stale });

// With a witness: the split-brain checker (a secondary that lost its primary and the witness does not go ALONE) and
// an `isolation` checker (action wait) for the other half of the rule: a node that sees neither its peer nor the
// witness is the one cut off, so even a primary leaves the role (app stopped, VIP removed) and waits. It keeps
// waiting until it sees its peer again (then it becomes its secondary): the witness answering again is not enough,
// since the peer has most likely taken over meanwhile (the engine would otherwise let a last sole primary go
// ALONE again after peerWait, with data older than the peer's).
let witness: "unknown" | "ok" | "failed" = "unknown";
let cutOff = false;
const isolation = () => {
  if (membership.view.members.some((m) => m.id !== nodeId)) {
    cutOff = false;
    return true;
  }
  if (cutOff) return { ok: false, detail: "cut off from the peer and the witness: waiting for the peer" };
  if (witness === "failed") {
    cutOff = true;
    return { ok: false, detail: "neither the peer nor the witness answers: this node is cut off" };
  }
  return true;
};
const checkers = a.witness
  ? [
      // Judged within 300 ms of a cut, before membership declares the peer lost (0.5-0.75 s on the LAN preset):
      // the witness's verdict must be known when the failover is decided.
      { type: "split-brain", name: "witness", witnesses: [a.witness], interval: 100, timeout: 200, rise: 1, fall: 1 },
      { type: "custom", name: "isolation", run: isolation, action: "wait" as const, interval: 50, timeout: 100, rise: 1, fall: 1 },
    ]
  : [];
const module = await Module.create(
  {
    name: "db",
    kind: "mirror",
    vips: [a.vip],
    hooks: driver.hooks({ start_prim: { fn: startApp, timeout: 10_000 }, stop_prim: { fn: stopApp, timeout: 10_000 } }),
    checkers,
    mirror: { ...(a["default-primary"] ? { defaultPrimary: a["default-primary"] } : {}), peerWait: 3000 },
  },
  { nodeId, vip, store: new FileModuleStore(join(dir, "state")), logDir: join(dir, "log") },
);
module.on("state", (s) => out({ type: "state", state: s.state, ready: s.ready, transient: s.transient, next: s.next, reason: s.reason }));
module.on("record", (r) => {
  const ev = (r as { event?: { type?: string; level?: string; cause?: string } }).event;
  if (ev && ev.type === "decision") out({ type: "decision", level: ev.level, cause: ev.cause });
});
module.on("error", (e) => out({ type: "error", message: e.message }));
membership.on("event", (e) => {
  if (e.type === "nodeDown" || e.type === "nodeUp") out({ type: e.type, node: e.node, reason: e.reason });
  else if (e.type === "viewChange") out({ type: "viewChange", members: e.view.members.map((m) => m.id), agreed: e.agreed });
});

let group: CheckerGroup | undefined;
if (checkers.length > 0) {
  group = new CheckerGroup(checkers, "module db");
  module.attachCheckers(group);
  group.on("verdict", (v) => {
    if (v.checker === "witness") witness = v.ok ? "ok" : "failed";
    out({ type: "checker", checker: v.checker, ok: v.ok, reason: v.reason });
  });
}

bindMembership(membership, [module]);
driver.bind(module, membership);
await membership.start();
group?.start();
await module.start();

// ---- control socket ----------------------------------------------------------------------------
const body = (req: IncomingMessage) =>
  new Promise<string>((resolve) => {
    let s = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => (s += d));
    req.on("end", () => resolve(s));
  });
const sock = join(dir, "control.sock");
rmSync(sock, { force: true });
const control = createServer((req, res) => {
  const send = (code: number, o: object) => {
    res.writeHead(code, { "content-type": "application/json" });
    res.end(JSON.stringify(o));
  };
  void (async () => {
    try {
      if (req.url === "/status") {
        return send(200, { status: module.status, role: driver.role, localCopy: driver.localCopy(), metrics: driver.metrics() ?? null, persisted: module.persisted });
      }
      if (req.method === "POST" && req.url === "/command") {
        const cmd = JSON.parse(await body(req)) as ModuleCommand;
        out({ type: "command", command: cmd.type });
        await module.command(cmd);
        return send(200, { ok: true, status: module.status });
      }
      if (req.method === "POST" && req.url === "/resync") {
        const { mode } = JSON.parse(await body(req)) as { mode: ResyncMode };
        driver.resync(mode);
        return send(200, { ok: true });
      }
      send(404, { error: "not found" });
    } catch (e) {
      send(409, { error: (e as Error).message, code: (e as { code?: string }).code });
    }
  })();
});
await new Promise<void>((r) => control.listen(sock, r));
out({ type: "ready", node: nodeId, pid: process.pid, control: sock });

const bye = async () => {
  await module.stop();
  await module.waitFor("STOP", 30_000).catch(() => undefined);
  await group?.stop();
  await driver.close();
  vip.close();
  await membership.stop();
  control.close();
  out({ type: "stopped" });
  process.exit(0);
};
process.on("SIGTERM", () => void bye());
process.on("SIGINT", () => void bye());
