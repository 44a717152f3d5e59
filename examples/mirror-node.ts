#!/usr/bin/env node
// One node of a mirror, built with the SDK's Host (membership + the module engine, kind mirror, + the replicated
// directory + the VIP on the primary), running a small app started by start_prim that appends fsync'd records to a
// file in the replicated directory and serves them over HTTP. Prints JSON lines.
//
// cluster.json: `{ clusterId, key, port?, preset?, timing?, nodes: [{ id, addresses }] }` (two nodes).
//
//   tsx examples/mirror-node.ts --config cluster.json --node n0 --dir /srv/n0 --vip 198.18.0.100/24 \
//       --listen 198.18.0.10:7790 --peer 198.18.0.11:7790 --key repl.key [--default-primary n0] \
//       [--iface eth0] [--port 80] [--witness 198.18.0.200 | --arbiter 198.18.0.200:7799] [--record-bytes 4096] \
//       [--app records|postgres] [--pg-port 5432] [--pg-bin /usr/lib/postgresql/15/bin] [--pg-allow CIDR]
//
// Layout under --dir: data/ (backing directory), mnt/ (mount point), state/ (module state), log/ (event log),
// control.sock (a unix socket: `POST /command {"type":"swap"}`, `POST /resync {"mode":"full"}`, `GET /status`).
// The app: `POST /append?id=N` appends one record (`N <node> <padding>\n`, --record-bytes long), fdatasyncs it and
// answers `ok N <node>` only then; `POST /blob?mib=N` writes N MiB to blob.bin (fdatasync'd); `GET /records` lists
// the ids present; `GET /` answers the node id.
// `--app postgres` runs Debian's PostgreSQL instead (see the postgres section below): its data directory is
// pgdata/ in the replicated directory (initdb'ed by the first primary), it listens on the VIP and on loopback,
// and it dies with this process (a parent-death signal), as it would with the machine.
// SIGTERM stops the module (app stopped, VIP removed, unmounted) and leaves the cluster.
import { randomBytes } from "node:crypto";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { join, resolve as resolvePath } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Host, mirrorDriverOf, traceHost, type CheckerEntry, type MirrorDriver, type ModuleCommand, type ResyncMode } from "holdfast";

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
    arbiter: { type: "string" },
    "record-bytes": { type: "string", default: "256" },
    "ack-timeout-ms": { type: "string", default: "1000" },
    app: { type: "string", default: "records" },
    "pg-port": { type: "string", default: "5432" },
    "pg-bin": { type: "string", default: "/usr/lib/postgresql/15/bin" },
    "pg-allow": { type: "string" },
  },
});
if (!a.config || !a.node || !a.dir || !a.vip || !a.listen || !a.peer || !a.key) {
  console.error("usage: mirror-node --config FILE --node ID --dir DIR --vip ADDR/LEN --listen HOST:PORT --peer HOST:PORT --key FILE [--default-primary ID] [--witness ADDR | --arbiter HOST:PORT]");
  process.exit(2);
}
if (a.app !== "records" && a.app !== "postgres") {
  console.error(`mirror-node: --app must be records or postgres, not ${a.app}`);
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

const c = JSON.parse(readFileSync(a.config, "utf8")) as { clusterId: string; key: string; port?: number; preset?: "lan"; timing?: object; nodes: { id: string; addresses: string[] }[] };
/** The module's replication driver (the mount, the helper), known once the Host attached the module. */
let driver: MirrorDriver;

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

const startRecords = () =>
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
const stopRecords = () =>
  new Promise<void>((resolve) => {
    if (!server) return resolve();
    const s = server;
    server = null;
    s.close(() => {
      // Every connection is closed: nothing more can be acknowledged. An append still in flight is waited for a
      // moment only: on a primary leaving the role while cut off, it is blocked in the mount (the helper holds writes
      // it may not acknowledge alone: no permit) until the mount goes or the role comes back, and waiting for it
      // would hold the step-down for the whole stop_prim timeout (10 s) and the pair's convergence with it.
      const settled = appends.then(() => true);
      const bound = new Promise<boolean>((r) => setTimeout(() => r(false), 1000).unref());
      void Promise.race([settled, bound]).then((done) => {
        out({ type: "app", state: "stopped", ...(done ? {} : { pendingWrite: "blocked in the mount, its client gone" }) });
        resolve();
      });
    });
    s.closeAllConnections();
  });

// ---- the app, --app postgres: Debian's PostgreSQL on the replicated directory --------------------------
// start_prim (the mount is up, the VIP is on this node): initdb pgdata/ if the replicated directory has none yet
// (the very first primary), remove the postmaster.pid that the copy carries (it was written by whichever node ran
// PostgreSQL last, and this node's own postmaster never outlives this process: see below), then start the
// postmaster inside the mount's namespace as user postgres, listening on the VIP and on loopback. Ready when it
// logs "ready to accept connections" (after crash recovery, on a failover).
// stop_prim: fast shutdown (SIGINT: sessions ended, checkpoint), bounded; then SIGKILL.
// Dying with this process: PostgreSQL's backends and workers run in sessions of their own, and after the
// postmaster's death a backend waiting on a lock held by a dead one waits forever (seen in the lab), so a parent-
// death signal on the postmaster alone is not enough. The postmaster runs as PID 1 of a PID namespace of its own
// (`unshare --pid --fork --kill-child`): when it dies, the kernel kills everything in that namespace. The chain
// node -> setpriv --pdeathsig (unshare dies with the node) -> unshare --kill-child (the postmaster dies with
// unshare) -> setpriv --reuid=postgres --pdeathsig (set again after the switch of user, which clears it).
// pg_hba.conf gets `host all all <--pg-allow> trust` (default: the VIP's subnet): a lab setting, not a
// production one (use scram-sha-256 and a password file there).
const pgBin = a["pg-bin"];
const pgPort = Number(a["pg-port"]);
const vipHost = a.vip.split("/")[0] as string;
const pgAllow = a["pg-allow"] ?? a.vip;
const pgDataInside = join(resolvePath(dir), "mnt", "pgdata"); // the data directory's path inside the mount's namespace
const pgSock = join(resolvePath(dir), "pgsock");
const pgUser = (() => {
  if (a.app !== "postgres") return { uid: 0, gid: 0 };
  const id = (flag: string) => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout.trim());
  const ids = { uid: id("-u"), gid: id("-g") };
  if (!Number.isInteger(ids.uid) || ids.uid <= 0) {
    console.error("mirror-node: --app postgres needs a postgres user (Debian package postgresql)");
    process.exit(2);
  }
  return ids;
})();
/** The `unshare` process holding the postmaster's PID namespace, and the postmaster's pid as this process sees it. */
let postmaster: { unshare: ChildProcess; pid: number } | null = null;

/** argv that runs `argv` as postgres inside the mount's namespace. */
const asPostgres = (argv: string[]): [string, ...string[]] =>
  driver.commandInMount(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", ...argv]);

/** argv that runs `argv` as postgres inside the mount's namespace, as PID 1 of a PID namespace tied to this process. */
const asPostgresTied = (argv: string[]): [string, ...string[]] =>
  driver.commandInMount([
    "setpriv", "--pdeathsig", "KILL", "--",
    "unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--",
    "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig", "KILL", "--", ...argv,
  ]);

function runChecked(argv: [string, ...string[]], what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    const child = spawn(cmd, args, { cwd: "/", stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", reject);
    child.once("exit", (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${what} failed (${code ?? sig}): ${err.trim().split("\n").slice(-3).join(" / ")}`));
    });
  });
}

/** Pids whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) kids.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

async function startPostgres(): Promise<void> {
  if (postmaster) throw new Error(`postgres already running (pid ${postmaster.pid})`); // never two on one copy
  const outside = driver.mountPath("pgdata");
  mkdirSync(pgSock, { recursive: true });
  chownSync(pgSock, pgUser.uid, pgUser.gid);
  if (!existsSync(join(outside, "PG_VERSION"))) {
    mkdirSync(outside, { recursive: true, mode: 0o700 });
    chownSync(outside, pgUser.uid, pgUser.gid);
    chmodSync(outside, 0o700); // PostgreSQL refuses a data directory others can read
    const t0 = now();
    await runChecked(asPostgres([`${pgBin}/initdb`, "-D", pgDataInside, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]), "initdb", 120_000);
    appendFileSync(join(outside, "pg_hba.conf"), `host all all ${pgAllow} trust\n`);
    out({ type: "app", state: "initdb", ms: Math.round(now() - t0) });
  }
  if (existsSync(join(outside, "postmaster.pid"))) {
    rmSync(join(outside, "postmaster.pid"));
    out({ type: "log", line: "postgres: removed the postmaster.pid of the copy (its postmaster is dead or on the other node)" });
  }
  const t0 = now();
  // Crash recovery first makes every file of the data directory durable. Its default (fsync of each file, through
  // the FUSE mount) took 1-4 s here; the data is this node's backing directory, so one syncfs of that file system
  // does the same at once, and PostgreSQL's own syncfs pass (recovery_init_sync_method) then finds nothing to do.
  await runChecked(["sync", "-f", join(dir, "data")], "sync -f of the backing file system", 60_000);
  const synced = now();
  const [cmd, ...args] = asPostgresTied([
    `${pgBin}/postgres`, "-D", pgDataInside, "-k", pgSock, "-p", String(pgPort),
    "-c", `listen_addresses=${vipHost},127.0.0.1`, "-c", "recovery_init_sync_method=syncfs",
  ]);
  const child = spawn(cmd, args, { cwd: "/", stdio: ["ignore", "ignore", "pipe"] });
  const pm = { unshare: child, pid: 0 };
  postmaster = pm;
  await new Promise<void>((resolve, reject) => {
    let ready = false;
    createInterface({ input: child.stderr }).on("line", (line) => {
      out({ type: "pg", line });
      if (!ready && line.includes("ready to accept connections")) {
        ready = true;
        pm.pid = childrenOf(child.pid as number)[0] ?? 0; // unshare's only child
        resolve();
      }
    });
    child.once("error", reject);
    child.once("exit", (code, sig) => {
      if (postmaster === pm) postmaster = null;
      out({ type: "app", state: "exited", code, signal: sig });
      if (!ready) reject(new Error(`postgres exited (${code ?? sig}) before it was ready`));
    });
  });
  out({ type: "app", state: "started", pid: pm.pid, ms: Math.round(now() - t0), syncMs: Math.round(synced - t0), mount: driver.mountPath() });
}

async function stopPostgres(): Promise<void> {
  const pm = postmaster;
  const child = pm?.unshare;
  if (!pm || !child || child.exitCode !== null || child.signalCode !== null) {
    postmaster = null;
    return;
  }
  const exited = new Promise<boolean>((r) => child.once("exit", () => r(true)));
  const within = (ms: number) => Promise.race([exited, new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  const signal = (pid: number, sig: NodeJS.Signals) => {
    try {
      if (pid > 0) process.kill(pid, sig);
    } catch {
      // gone meanwhile
    }
  };
  signal(pm.pid, "SIGINT"); // fast shutdown (unshare does not pass signals on)
  if (!(await within(15_000))) {
    // The postmaster is PID 1 of its namespace: SIGKILL to it takes every backend and worker with it.
    out({ type: "log", line: "postgres: no fast shutdown within 15 s: SIGKILL" });
    signal(pm.pid, "SIGKILL");
    child.kill("SIGKILL");
    await within(5_000);
  }
  postmaster = null;
  out({ type: "app", state: "stopped" });
}

const app =
  a.app === "postgres"
    ? { start: startPostgres, stop: stopPostgres, startMs: 120_000, stopMs: 30_000 }
    : { start: startRecords, stop: stopRecords, startMs: 10_000, stopMs: 10_000 };

// ---- HA: one mirror module on a Host ------------------------------------------------------------
// With --witness ADDR: a split-brain checker that pings it, judged within 300 ms of a cut (before membership
// declares the peer lost: 0.5-0.75 s on the LAN preset). With --arbiter HOST:PORT (examples/witness.ts, same --key):
// the checker holds the witness arbiter's lease instead, so two nodes cut from each other that both reach the
// witness never both go ALONE (the SDK's defaults; the mirror kind bounds the replication permit by the lease).
const witness: CheckerEntry[] = a.arbiter
  ? [{ type: "split-brain", name: "witness", arbiter: a.arbiter, keyFile: a.key, node: nodeId, lease: "mirror-db" }]
  : a.witness ? [{ type: "split-brain", name: "witness", witnesses: [a.witness], interval: 100, timeout: 200, rise: 1, fall: 1 }] : [];
const peerId = c.nodes.find((n) => n.id !== nodeId)?.id as string;
const host = new Host({
  cluster: { id: c.clusterId, key: c.key, nodes: c.nodes, ...(c.port ? { port: c.port } : {}), ...(c.preset ? { preset: c.preset } : {}), ...(c.timing ? { timing: c.timing } : {}) },
  node: nodeId,
  modules: [{
    name: "db", kind: "mirror", vips: [a.vip], checkers: witness,
    hooks: { start_prim: { fn: app.start, timeout: app.startMs }, stop_prim: { fn: app.stop, timeout: app.stopMs } },
    mirror: { ...(a["default-primary"] ? { defaultPrimary: a["default-primary"] } : {}), peerWait: 3000 },
  }],
  replication: {
    db: {
      mode: "sync", directories: [{ path: join(dir, "mnt"), backing: join(dir, "data") }], keyFile: a.key, iface: a.iface,
      nodes: { [nodeId]: { address: endpoint(a.listen).host, port: endpoint(a.listen).port }, [peerId]: { address: endpoint(a.peer).host, port: endpoint(a.peer).port } },
      ackTimeoutMs: Number(a["ack-timeout-ms"]), statsIntervalMs: 500,
    },
  },
  stateDir: join(dir, "state"),
  logDir: join(dir, "log"),
});
host.on("attached", ({ module }) => (driver = mirrorDriverOf(host, module.name)!));
traceHost(host, out); // every membership, module, checker and replication event as a JSON line
await host.start();
const module = host.module("db");

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
  await host.stop();
  control.close();
  out({ type: "stopped" });
  process.exit(0);
};
process.on("SIGTERM", () => void bye());
process.on("SIGINT", () => void bye());
