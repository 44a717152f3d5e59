// The benchmark's application on each node: HTTP on --port answering this node's id (keep-alive allowed),
// so every configuration (direct, flooded, farm backends, HAProxy) serves the very same app.
//   node --import tsx app.mts NODE_ID PORT
import { createServer } from "node:http";
const [id = "?", port = "8080"] = process.argv.slice(2);
const body = `${id}\n`;
createServer((_req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
}).listen(Number(port), "0.0.0.0", () => console.log(JSON.stringify({ type: "ready", id, port })));
