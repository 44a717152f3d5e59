// Long-lived streams plus a steady trickle of short probes, from a client namespace; bounded in time.
// Prints JSON lines: {"type":"stream",...} when a stream ends, {"type":"probe",...} per probe, {"type":"done"}.
//   node --import tsx http-probe.mts '{"vip":"...","port":80,"addresses":[...],"streams":15,"streamMs":6000,
//                                      "probeEveryMs":20,"probeTimeoutMs":250,"durationMs":6000}'
import { request } from "node:http";

interface Opts {
  vip: string;
  port: number;
  addresses: string[];
  streams: number;
  streamMs: number;
  probeEveryMs: number;
  probeTimeoutMs: number;
  durationMs: number;
}
const o = JSON.parse(process.argv[2] ?? "{}") as Opts;
const out = (x: object): void => {
  process.stdout.write(JSON.stringify(x) + "\n");
};
const started = Date.now();

function get(path: string, localAddress: string, timeoutMs: number, onFirstLine?: (node: string) => void): Promise<{ ok: boolean; node?: string; body?: string; err?: string }> {
  return new Promise((resolve) => {
    let node: string | undefined;
    let body = "";
    const req = request({ host: o.vip, port: o.port, path, localAddress, agent: false, timeout: timeoutMs }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
        if (node === undefined && body.includes("\n")) {
          node = body.split("\n")[0];
          onFirstLine?.(node as string);
        }
      });
      res.on("end", () => resolve({ ok: true, body, ...(node ? { node } : {}) }));
      res.on("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, err: e.code ?? e.message, ...(node ? { node } : {}) }));
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, err: e.code ?? e.message, ...(node ? { node } : {}) }));
    req.end();
  });
}

const streams = Array.from({ length: o.streams }, (_, i) => {
  const addr = o.addresses[i % o.addresses.length] as string;
  return get(`/stream?ms=${o.streamMs}`, addr, o.streamMs + 10_000, (node) => out({ type: "streamStart", addr, node, t: Date.now() })).then((r) =>
    out({ type: "stream", addr, node: r.node, complete: r.ok && /done \S+\n$/.test(r.body ?? ""), err: r.err, t: Date.now() }),
  );
});
const probes: Promise<void>[] = [];
let i = 0;
while (Date.now() - started < o.durationMs) {
  const t = Date.now();
  const addr = o.addresses[i++ % o.addresses.length] as string;
  probes.push(get("/", addr, o.probeTimeoutMs).then((r) => out({ type: "probe", t, addr, ok: r.ok, node: r.node?.trim(), err: r.err })));
  await new Promise((r) => setTimeout(r, o.probeEveryMs)); // the probe rate itself, not a synchronisation
}
await Promise.all([...streams, ...probes]);
out({ type: "done", ms: Date.now() - started });
