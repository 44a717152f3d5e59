/* global process, setInterval, clearInterval, URL, performance */
// A small HTTP app for farm demos and lab tests (plain Node, no build step), started by a farm module's
// start_both hook on every node:
//   GET /            this node's id ($HOLDFAST_NODE)
//   GET /stream?ms=N this node's id, then one line every 100 ms for N ms (at most 60 s), then `done ID`: a
//                    long-lived connection
// Every answer names the process that gave it: header `x-holdfast-app: PID START` (START = this process's start,
// epoch ms), so a client can tell an answer of a process left from an earlier role; `x-holdfast-at` and each
// stream line (". MS") say when this process wrote it (epoch ms), whenever the client happens to receive it.
// Usage: node web-app.mjs PORT
import { createServer } from "node:http";

const node = process.env.HOLDFAST_NODE ?? "?";
const me = `${process.pid} ${Math.round(performance.timeOrigin)}`;
const port = Number(process.argv[2] ?? 8080);
createServer((req, res) => {
  const u = new URL(req.url ?? "/", "http://x");
  if (u.pathname === "/stream") {
    const ms = Math.min(60_000, Number(u.searchParams.get("ms") ?? 3000));
    res.writeHead(200, { "content-type": "text/plain", "x-holdfast-app": me, "x-holdfast-at": String(Date.now()) });
    res.write(`${node}\n`);
    const end = Date.now() + ms;
    const timer = setInterval(() => {
      if (Date.now() >= end) {
        clearInterval(timer);
        res.end(`done ${node}\n`);
      } else res.write(`. ${Date.now()}\n`);
    }, 100);
    req.on("close", () => clearInterval(timer));
    return;
  }
  res.writeHead(200, { "content-type": "text/plain", connection: "close", "x-holdfast-app": me, "x-holdfast-at": String(Date.now()) });
  res.end(`${node}\n`);
}).listen(port, "0.0.0.0");
