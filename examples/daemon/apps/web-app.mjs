/* global process, setInterval, clearInterval, URL, performance */
// A small HTTP app for farm demos and lab tests (plain Node, no build step), started by a farm module's
// start_both hook on every node:
//   GET /            this node's id ($HOLDFAST_NODE)
//   GET /stream?ms=N this node's id, then one line every 100 ms for N ms (at most 60 s): a long-lived connection
// Every answer names the process that gave it: header `x-holdfast-app: PID START` (START = this process's start,
// epoch ms), so a client can tell an answer of a process left from an earlier role.
// Usage: node web-app.mjs PORT
import { createServer } from "node:http";

const node = process.env.HOLDFAST_NODE ?? "?";
const me = `${process.pid} ${Math.round(performance.timeOrigin)}`;
const port = Number(process.argv[2] ?? 8080);
createServer((req, res) => {
  const u = new URL(req.url ?? "/", "http://x");
  if (u.pathname === "/stream") {
    const ms = Math.min(60_000, Number(u.searchParams.get("ms") ?? 3000));
    res.writeHead(200, { "content-type": "text/plain", "x-holdfast-app": me });
    res.write(`${node}\n`);
    const end = Date.now() + ms;
    const timer = setInterval(() => {
      if (Date.now() >= end) {
        clearInterval(timer);
        res.end(`done ${node}\n`);
      } else res.write(".\n");
    }, 100);
    req.on("close", () => clearInterval(timer));
    return;
  }
  res.writeHead(200, { "content-type": "text/plain", connection: "close", "x-holdfast-app": me });
  res.end(`${node}\n`);
}).listen(port, "0.0.0.0");
