/* global process, setInterval, clearInterval, URL */
// A small HTTP app for farm demos and lab tests (plain Node, no build step), started by a farm module's
// start_both hook on every node:
//   GET /            this node's id ($HOLDFAST_NODE)
//   GET /stream?ms=N this node's id, then one line every 100 ms for N ms (at most 60 s): a long-lived connection
// Usage: node web-app.mjs PORT
import { createServer } from "node:http";

const node = process.env.HOLDFAST_NODE ?? "?";
const port = Number(process.argv[2] ?? 8080);
createServer((req, res) => {
  const u = new URL(req.url ?? "/", "http://x");
  if (u.pathname === "/stream") {
    const ms = Math.min(60_000, Number(u.searchParams.get("ms") ?? 3000));
    res.writeHead(200, { "content-type": "text/plain" });
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
  res.writeHead(200, { "content-type": "text/plain", connection: "close" });
  res.end(`${node}\n`);
}).listen(port, "0.0.0.0");
