// The benchmark's application on each node: HTTP on PORT answering this node's id (keep-alive allowed), and
// `/stream?ms=N`, a long-lived response (one line every 100 ms, then `done ID`), so every configuration
// (direct, flooded, farm backends, HAProxy) serves the very same app.
//   node --import tsx app.mts NODE_ID PORT
import { createServer } from "node:http";
const [id = "?", port = "8080"] = process.argv.slice(2);
const body = `${id}\n`;
createServer((req, res) => {
  if (req.url?.startsWith("/stream")) {
    const ms = Math.min(60_000, Number(new URL(req.url, "http://x").searchParams.get("ms") ?? 3000));
    res.writeHead(200, { "content-type": "text/plain" });
    res.write(body);
    const end = Date.now() + ms;
    const timer = setInterval(() => {
      if (Date.now() < end) res.write(".\n");
      else {
        clearInterval(timer);
        res.end(`done ${id}\n`);
      }
    }, 100);
    req.on("close", () => clearInterval(timer));
    return;
  }
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
}).listen(Number(port), "0.0.0.0", () => console.log(JSON.stringify({ type: "ready", id, port })));
