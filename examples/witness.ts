#!/usr/bin/env node
// A witness arbiter for mirror split-brain protection: grants ONE lease per mirror to one node at a time.
// The key: the cluster key file, base64 text or raw bytes (the mirror nodes' --key). Run it on a host both mirror nodes reach and that is neither of them (the router, a client machine, a VM):
//
//   tsx examples/witness.ts --listen 198.18.0.200:7799 --key cluster.key [--max-ttl-ms 5000]
//
// and give both nodes' split-brain checker `arbiter: "198.18.0.200:7799"` (examples/mirror-node.ts: --arbiter).
// Prints JSON lines: `ready`, then one `grant`/`deny`/`release` line per change of holder or answer kind (not one
// per renewal), and `drop` lines (bad MAC, garbage, replays, `staleBoot`: a claim without this run's nonce, i.e. a
// client's first claim after a start of the witness, or one captured before it; answered with a denial naming the
// nonce). No state file: claims captured before a restart are refused by the nonce, not by persisted sequence
// numbers. SIGTERM/SIGINT stops it.
import { parseArgs } from "node:util";
import { WitnessServer } from "holdfast";
import { parseHostPort, readKeyFile } from "holdfast/config";

const { values: a } = parseArgs({ options: { listen: { type: "string" }, key: { type: "string" }, "max-ttl-ms": { type: "string", default: "5000" } } });
const hp = a.listen === undefined ? undefined : parseHostPort(a.listen);
if (hp === undefined || a.key === undefined) {
  console.error("usage: witness --listen ADDR:PORT --key FILE [--max-ttl-ms 5000]");
  process.exit(2);
}
const out = (o: object) => process.stdout.write(JSON.stringify({ t: Math.round((performance.timeOrigin + performance.now()) * 10) / 10, ...o }) + "\n");
const server = new WitnessServer({ ...hp, key: readKeyFile(a.key), maxTtlMs: Number(a["max-ttl-ms"]) });
const lastKind = new Map<string, string>();
server.on("answer", ({ request, answer, from }) => {
  const k = `${answer.module}/${answer.node}`;
  const what = answer.t === "deny" ? `deny:${answer.holder}` : answer.t;
  if (lastKind.get(k) === what) return;
  lastKind.set(k, what);
  out({ type: answer.t, module: answer.module, node: answer.node, from, ...(answer.t === "deny" ? { holder: answer.holder, remainingMs: answer.remaining } : {}), ...(request.t === "claim" ? { ttl: request.ttl } : {}) });
});
server.on("drop", (d) => out({ type: "drop", ...d }));
await server.start();
out({ type: "ready", listen: a.listen, port: server.port, pid: process.pid, boot: server.witness?.boot });
const bye = async () => {
  await server.close();
  out({ type: "stopped", answers: server.answers, drops: server.drops });
  process.exit(0);
};
process.on("SIGTERM", () => void bye());
process.on("SIGINT", () => void bye());
