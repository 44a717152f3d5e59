// The chaos suite's farm client, run in a client namespace: a short request (new connection, rotating source
// address) every `everyMs`, plus `streams` long-lived streams kept open back to back. Bounded: stops issuing after
// `maxMs` or on SIGTERM, waits for what is in flight (each bounded by its timeout), prints {"type":"done"}.
// Lines: {"type":"probe",t,end,addr,port,ok,node,err}, {"type":"stream",start,end,node,complete,err}.
//   node --import tsx chaos-farm-client.mts '{"vip":"198.18.0.100","port":80,"addresses":[...],"everyMs":20,
//                                             "timeoutMs":1000,"streams":6,"streamMs":3000,"maxMs":600000}'
import { request } from "node:http";

interface Opts {
  vip: string;
  port: number;
  addresses: string[];
  everyMs: number;
  timeoutMs: number;
  streams: number;
  streamMs: number;
  maxMs: number;
}
const o = JSON.parse(process.argv[2] ?? "{}") as Opts;
const out = (x: object): void => {
  process.stdout.write(JSON.stringify(x) + "\n");
};
const started = Date.now();
let running = true;
process.on("SIGTERM", () => (running = false));
const live = () => running && Date.now() - started < o.maxMs;

interface Got {
  ok: boolean;
  node?: string;
  body: string;
  err?: string;
  port?: number;
  /** The answering process (the demo app's x-holdfast-app header: "PID START"). */
  app?: string;
  /** The last time the app wrote to this answer (its x-holdfast-at header, or the last ". MS" stream line), epoch ms. */
  at?: number;
}
function get(path: string, localAddress: string, timeoutMs: number, onFirstLine?: (node: string) => void): Promise<Got> {
  return new Promise((resolve) => {
    let body = "";
    let node: string | undefined;
    let port: number | undefined;
    let app: string | undefined;
    let at: number | undefined;
    const done = (g: Omit<Got, "body" | "node" | "port" | "app" | "at">) => {
      for (const m of body.matchAll(/^\. (\d+)$/gm)) at = Math.max(at ?? 0, Number(m[1]));
      resolve({ ...g, body, ...(node ? { node } : {}), ...(port ? { port } : {}), ...(app ? { app } : {}), ...(at !== undefined ? { at } : {}) });
    };
    const req = request({ host: o.vip, port: o.port, path, localAddress, agent: false, timeout: timeoutMs, headers: { connection: "close" } }, (res) => {
      res.setEncoding("utf8");
      const h = res.headers["x-holdfast-app"];
      if (typeof h === "string") app = h;
      const a = res.headers["x-holdfast-at"];
      if (typeof a === "string") at = Number(a);
      res.on("data", (d: string) => {
        body += d;
        if (node === undefined && body.includes("\n")) {
          node = body.split("\n")[0] as string;
          onFirstLine?.(node);
        }
      });
      res.on("end", () => done({ ok: true }));
      res.on("error", (e: NodeJS.ErrnoException) => done({ ok: false, err: e.code ?? e.message }));
    });
    req.on("socket", (s) => s.on("connect", () => (port = s.localPort)));
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (e: NodeJS.ErrnoException) => done({ ok: false, err: e.code ?? e.message }));
    req.end();
  });
}

const pending: Promise<void>[] = [];
let k = 0;
const addr = () => o.addresses[k++ % o.addresses.length] as string;

async function streamLoop(): Promise<void> {
  while (live()) {
    const start = Date.now();
    const a = addr();
    const r = await get(`/stream?ms=${o.streamMs}`, a, o.streamMs + 5_000);
    // A stream is complete when its body is the node id, the dots, then "done <same node>".
    const complete = r.ok && r.node !== undefined && r.body.endsWith(`done ${r.node}\n`);
    out({ type: "stream", start, end: Date.now(), node: r.node, addr: a, port: r.port, complete, err: r.err, app: r.app, at: r.at });
    if (!r.ok) await new Promise((s) => setTimeout(s, 100));
  }
}
const streamLoops = Array.from({ length: o.streams }, streamLoop);

while (live()) {
  const t = Date.now();
  const a = addr();
  const p = get("/", a, o.timeoutMs).then((r) => {
    // A short answer is exactly one line: the node id.
    const lines = r.body.split("\n").filter((l) => l.length > 0);
    out({ type: "probe", t, end: Date.now(), addr: a, port: r.port, ok: r.ok && lines.length === 1, node: r.ok ? lines.join("|") : r.node, err: r.err, app: r.app, at: r.at });
  });
  pending.push(p);
  if (pending.length > 500) await Promise.all(pending.splice(0, 250));
  await new Promise((s) => setTimeout(s, o.everyMs)); // the request rate, not a synchronisation
}
await Promise.all([...pending, ...streamLoops]);
out({ type: "done", ms: Date.now() - started });
