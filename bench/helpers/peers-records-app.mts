// bench:peers — the records writer of examples/mirror-node.ts (`--app records`) on a plain local directory, for
// the lsyncd side of the data-loss comparison: `POST /append?id=N` appends one record (`N <node> <padding>\n`,
// RECORD_BYTES long) to DIR/records.log, fdatasyncs it and only then answers `ok N <node>`; appends are serialised.
// `GET /` answers the node id.
//   node --import tsx peers-records-app.mts DIR NODE_ID PORT RECORD_BYTES
import { createServer } from "node:http";
import { open } from "node:fs/promises";
import { join } from "node:path";

const [dir = ".", nodeId = "?", port = "8081", bytes = "4096"] = process.argv.slice(2);
const recordBytes = Math.max(32, Number(bytes));
const file = join(dir, "records.log");
let appends: Promise<unknown> = Promise.resolve();

function appendRecord(id: string): Promise<void> {
  const head = `${id} ${nodeId} `;
  const line = head + "x".repeat(recordBytes - head.length - 1) + "\n";
  const run = async () => {
    const fh = await open(file, "a");
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

createServer((req, res) => {
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
  reply(200, `${nodeId}\n`);
}).listen(Number(port), "0.0.0.0", () => console.log(JSON.stringify({ type: "ready", id: nodeId, port })));
