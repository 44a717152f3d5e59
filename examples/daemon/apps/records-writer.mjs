/* global process, performance, setTimeout */
// The client side of records-app.mjs: appends records through the VIP, one at a time, each with a fresh id, and
// prints one JSON line per request: {"id":N,"ok":true,"node":"n1","t":<ms since epoch>} (or ok false + err).
// Bounded: stops after `count` requests or `maxMs`. An acknowledged id must be on every later primary.
// Usage: node records-writer.mjs '{"vip":"198.18.0.200","port":8090,"from":1,"count":1000,"maxMs":10000,"gapMs":10,"timeoutMs":1000}'
import { request } from "node:http";

const o = JSON.parse(process.argv[2] ?? "{}");
const end = Date.now() + (o.maxMs ?? 10_000);
const now = () => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;
function post(id) {
  return new Promise((res) => {
    const req = request({ host: o.vip, port: o.port ?? 8090, method: "POST", path: `/append?id=${id}`, agent: false, timeout: o.timeoutMs ?? 1000 }, (r) => {
      let b = "";
      r.setEncoding("utf8");
      r.on("data", (d) => (b += d));
      r.on("end", () => res(r.statusCode === 200 && b.startsWith(`ok ${id} `) ? { ok: true, node: b.trim().split(" ")[2] } : { ok: false, err: `status ${r.statusCode}` }));
      r.on("error", (e) => res({ ok: false, err: e.code || e.message }));
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (e) => res({ ok: false, err: e.code || e.message }));
    req.end();
  });
}
let id = o.from ?? 1;
for (let i = 0; i < (o.count ?? 1e9) && Date.now() < end; i++, id++) {
  const r = await post(id);
  process.stdout.write(JSON.stringify({ id, ...r, t: now() }) + "\n");
  if (!r.ok) await new Promise((s) => setTimeout(s, 20));
  else if (o.gapMs) await new Promise((s) => setTimeout(s, o.gapMs));
}
process.stdout.write(JSON.stringify({ done: true, t: now() }) + "\n");
