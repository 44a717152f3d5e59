/* global process, console, URL, performance */
// A small replicated application for the daemon's demo and lab tests (plain Node, no build step). Started by
// a mirror module's start_prim hook inside the replication mount's namespace; keeps its data in the replicated
// directory ($HOLDFAST_MOUNT):
//   POST /append?id=N      appends one record `N <node> <padding>\n` (RECORD_BYTES long) to records.log,
//                          fdatasyncs it, and only then answers `ok N <node>` (an acknowledged record is durable
//                          on both nodes: the replication's fsync returns when the secondary's fsync is done)
//   POST /blob?mib=N&at=M  writes N MiB (fresh bytes) into blob.bin at offset M MiB, fdatasync'd: a known amount
//                          of modified data for the resync to carry
//   GET  /records          this node's id, then the ids present in records.log, one a line
//   GET  /                 this node's id
// Every answer names the process that gave it: header `x-holdfast-app: PID START` (START = this process's start,
// epoch ms), so a client can tell an answer of a process left from an earlier role; `x-holdfast-at`: when it
// answered (epoch ms), whenever the client happens to receive it.
// Usage: node records-app.mjs PORT [RECORD_BYTES]
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";

const dir = process.env.HOLDFAST_MOUNT;
const node = process.env.HOLDFAST_NODE ?? "?";
const port = Number(process.argv[2] ?? 8090);
const size = Math.max(32, Number(process.argv[3] ?? 256));
if (!dir) {
  console.error("records-app: HOLDFAST_MOUNT is not set (run it from a mirror module's start_prim hook)");
  process.exit(2);
}
const records = join(dir, "records.log");
const me = `${process.pid} ${Math.round(performance.timeOrigin)}`;
let chain = Promise.resolve();
const serial = (fn) => {
  const p = chain.then(fn, fn);
  chain = p.catch(() => undefined);
  return p;
};

async function append(id) {
  const head = `${id} ${node} `;
  const line = head + "x".repeat(Math.max(0, size - head.length - 1)) + "\n";
  const fh = await open(records, "a");
  try {
    await fh.write(line);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

async function blob(mib, at) {
  const fh = await open(join(dir, "blob.bin"), constants.O_RDWR | constants.O_CREAT, 0o644);
  try {
    for (let i = 0; i < mib; i++) await fh.write(randomBytes(1 << 20), 0, 1 << 20, (at + i) * (1 << 20));
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

async function list() {
  let text = "";
  try {
    text = await readFile(records, "utf8");
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  return text.split("\n").filter((l) => l.length > 0).map((l) => l.split(" ")[0]);
}

const server = createServer((req, res) => {
  const u = new URL(req.url ?? "/", "http://x");
  const reply = (code, body) => {
    res.writeHead(code, { "content-type": "text/plain", connection: "close", "x-holdfast-app": me, "x-holdfast-at": String(Date.now()) });
    res.end(body);
  };
  const fail = (e) => reply(500, `error ${e.message}\n`);
  if (req.method === "POST" && u.pathname === "/append") {
    const id = u.searchParams.get("id") ?? "";
    if (!/^[0-9A-Za-z_-]{1,40}$/.test(id)) return reply(400, "bad id\n");
    return void serial(() => append(id)).then(() => reply(200, `ok ${id} ${node}\n`), fail);
  }
  if (req.method === "POST" && u.pathname === "/blob") {
    const mib = Math.min(256, Math.max(1, Number(u.searchParams.get("mib") ?? 1)));
    const at = Math.min(1024, Math.max(0, Number(u.searchParams.get("at") ?? 0)));
    return void serial(() => blob(mib, at)).then(() => reply(200, `ok blob ${mib} ${node}\n`), fail);
  }
  if (u.pathname === "/records") return void list().then((ids) => reply(200, `${node}\n${ids.join("\n")}\n`), fail);
  reply(200, `${node}\n`);
});
server.listen(port, "0.0.0.0", () => console.log(`records-app on ${node}: port ${port}, data in ${dir}`));
const bye = () => server.close(() => void chain.then(() => process.exit(0)));
process.on("SIGTERM", bye);
process.on("SIGINT", bye);
