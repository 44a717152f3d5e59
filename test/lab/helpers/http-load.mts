// HTTP load from a client namespace: bounded in count and time, one new TCP connection per request,
// source addresses rotated over a list. Prints one JSON summary line.
//   node --import tsx http-load.mts '{"vip":"198.18.0.100","port":80,"addresses":[...],"requests":3000,"concurrency":16}'
import { request } from "node:http";

interface Opts {
  vip: string;
  port: number;
  addresses: string[];
  requests: number;
  concurrency: number;
  timeoutMs?: number;
  /** Stop after this long whatever the count (ms). */
  maxMs?: number;
  path?: string;
}
const o = JSON.parse(process.argv[2] ?? "{}") as Opts;
const started = Date.now();
const byNode: Record<string, number> = {};
const byClient: Record<string, Record<string, number>> = {};
const errors: Record<string, number> = {};
let ok = 0;
let next = 0;

function one(i: number): Promise<void> {
  const localAddress = o.addresses[i % o.addresses.length] as string;
  return new Promise((resolve) => {
    const req = request({ host: o.vip, port: o.port, path: o.path ?? "/", localAddress, agent: false, timeout: o.timeoutMs ?? 3000, headers: { connection: "close" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => {
        const node = body.trim().split("\n")[0] ?? "?";
        ok++;
        byNode[node] = (byNode[node] ?? 0) + 1;
        const c = (byClient[localAddress] ??= {});
        c[node] = (c[node] ?? 0) + 1;
        resolve();
      });
      res.on("error", (e: NodeJS.ErrnoException) => {
        errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
        resolve();
      });
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (e: NodeJS.ErrnoException) => {
      errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
      resolve();
    });
    req.end();
  });
}

async function worker(): Promise<void> {
  while (next < o.requests && Date.now() - started < (o.maxMs ?? 120_000)) await one(next++);
}
await Promise.all(Array.from({ length: o.concurrency }, worker));
console.log(JSON.stringify({ sent: next, ok, errors, byNode, byClient, ms: Date.now() - started }));
