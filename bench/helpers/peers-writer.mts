// bench:peers — the client of the data-loss comparison: appends records one at a time (`POST /append?id=N`) and
// prints `{"acked":N,"node":..,"t":ms}` for each record the server acknowledged (after its fdatasync). A failed
// request waits 20 ms; its id is not reused. Bounded by `count` records and `maxMs`.
//   node --import tsx peers-writer.mts '{"host":"198.18.0.100","port":80,"from":1,"count":100000,"maxMs":30000}'
import { request } from "node:http";

const o = JSON.parse(process.argv[2] ?? "{}") as { host: string; port: number; from: number; count: number; maxMs: number };
const end = Date.now() + o.maxMs;

function post(id: number): Promise<{ ok: boolean; node?: string }> {
  return new Promise((res) => {
    const req = request({ host: o.host, port: o.port, method: "POST", path: `/append?id=${id}`, agent: false, timeout: 1000 }, (r) => {
      let b = "";
      r.setEncoding("utf8");
      r.on("data", (d: string) => (b += d));
      r.on("end", () => res(r.statusCode === 200 && b.startsWith(`ok ${id} `) ? { ok: true, node: b.trim().split(" ")[2] } : { ok: false }));
      r.on("error", () => res({ ok: false }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => res({ ok: false }));
    req.end();
  });
}

let id = o.from;
let n = 0;
while (n < o.count && Date.now() < end) {
  const r = await post(id);
  if (r.ok) {
    n++;
    console.log(JSON.stringify({ acked: id, node: r.node, t: Date.now() }));
  } else await new Promise((s) => setTimeout(s, 20));
  id++;
}
console.log(JSON.stringify({ done: true }));
