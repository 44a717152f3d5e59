// The chaos suite's mirror writer, run in the client namespace (the witness): appends records through the VIP
// (POST /append?id=N, acknowledged by examples/mirror-node.ts only after fdatasync and replication), one at a
// time. Bounded: stops after `maxMs` or on SIGTERM (after the request in flight), prints {"type":"done"}.
// Lines: {"acked":id,"node":..,"app":"PID START","at":..,"t":..} or {"failed":id,"err":..,"app":..,"at":..,"t":..}
// (`app`: the answering process, from the demo app's x-holdfast-app header, on a failure when an app answered at
// all; `at`: when it answered, its x-holdfast-at header).
//   node --import tsx chaos-writer.mts '{"vip":"198.18.0.100","port":80,"pauseMs":5,"timeoutMs":2000,"maxMs":600000}'
import { request } from "node:http";

interface Opts {
  vip: string;
  port: number;
  pauseMs: number;
  timeoutMs: number;
  maxMs: number;
}
const o = JSON.parse(process.argv[2] ?? "{}") as Opts;
const started = Date.now();
let running = true;
process.on("SIGTERM", () => (running = false));

function post(id: number): Promise<{ ok: boolean; node?: string; app?: string; at?: number; err?: string }> {
  return new Promise((resolve) => {
    const req = request({ host: o.vip, port: o.port, method: "POST", path: `/append?id=${id}`, agent: false, timeout: o.timeoutMs }, (r) => {
      let b = "";
      r.setEncoding("utf8");
      r.on("data", (d: string) => (b += d));
      const app = r.headers["x-holdfast-app"];
      const atH = r.headers["x-holdfast-at"];
      const id_ = typeof app === "string" ? { app, ...(typeof atH === "string" ? { at: Number(atH) } : {}) } : {};
      r.on("end", () =>
        resolve(r.statusCode === 200 && b.startsWith(`ok ${id} `) ? { ok: true, node: b.trim().split(" ")[2] as string, ...id_ } : { ok: false, err: `status ${r.statusCode}`, ...id_ }),
      );
      r.on("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, err: e.code ?? e.message }));
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, err: e.code ?? e.message }));
    req.end();
  });
}

let id = 1;
while (running && Date.now() - started < o.maxMs) {
  const r = await post(id);
  process.stdout.write(JSON.stringify(r.ok ? { acked: id, node: r.node, app: r.app, at: r.at, t: Date.now() } : { failed: id, err: r.err, app: r.app, at: r.at, t: Date.now() }) + "\n");
  id++;
  await new Promise((s) => setTimeout(s, r.ok ? o.pauseMs : 50)); // the write rate, not a synchronisation
}
process.stdout.write(JSON.stringify({ type: "done", next: id }) + "\n");
