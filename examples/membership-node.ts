#!/usr/bin/env node
// A minimal cluster member: runs holdfast's Membership on this machine and prints every membership event
// as one JSON line (with `t`, a wall-clock timestamp in ms shared by all processes of the machine).
//
//   tsx examples/membership-node.ts --config cluster.json --node n0
//
// cluster.json: { "clusterId": "demo", "key": "<holdfast keygen>", "port": 4844, "preset": "lan",
//                 "nodes": [{ "id": "n0", "addresses": ["198.18.0.10", "198.18.1.10"] }, ...] }
// Signals: SIGTERM/SIGINT leave the cluster gracefully and exit 0; SIGUSR2 prints the counters.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Membership, type MembershipOptions } from "holdfast";

const { values } = parseArgs({ options: { config: { type: "string" }, node: { type: "string" } } });
if (!values.config || !values.node) {
  console.error("usage: membership-node --config FILE --node ID");
  process.exit(2);
}
const now = () => performance.timeOrigin + performance.now();
const out = (o: object) => process.stdout.write(JSON.stringify({ t: Math.round(now() * 10) / 10, ...o }) + "\n");

let m: Membership;
try {
  const cfg = JSON.parse(readFileSync(values.config, "utf8")) as Record<string, unknown>;
  m = new Membership({ ...cfg, nodeId: values.node } as unknown as MembershipOptions);
} catch (e) {
  console.error(`membership-node: ${(e as Error).message}`);
  process.exit(1);
}
m.on("event", (e) => {
  if (e.type === "viewChange") out({ type: e.type, epoch: e.view.epoch, members: e.view.members.map((x) => x.id), agreed: e.agreed, reason: e.reason });
  else out({ ...e, at: undefined });
});
const counters = () => out({ type: "counters", ...m.counters });
process.on("SIGUSR2", counters);
const bye = async () => {
  await m.stop();
  counters();
  process.exit(0);
};
process.on("SIGTERM", () => void bye());
process.on("SIGINT", () => void bye());
await m.start();
out({ type: "ready", node: m.nodeId, incarnation: m.core.incarnation, pid: process.pid });
