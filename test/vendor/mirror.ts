// A vendor's mirror node written against the published package only: membership, a mirror module (replicated
// directory + VIP + an app started on the primary) and a witness split-brain checker. Typechecked from a scratch
// project by scripts/vendor-test.sh (never run there: it needs root, FUSE and two nodes).
import { createServer, type Server } from "node:http";
import { CheckerGroup, FileModuleStore, Membership, MirrorDriver, MirrorVip, Module, bindMembership, mirrorSplitBrain, type CheckerEntry } from "holdfast";

const nodeId = process.env.NODE_ID ?? "a";
const peer = nodeId === "a" ? "198.18.0.11" : "198.18.0.10";
const membership = new Membership({
  clusterId: "shop",
  nodeId,
  key: process.env.HOLDFAST_KEY ?? "",
  nodes: [
    { id: "a", addresses: ["198.18.0.10"] },
    { id: "b", addresses: ["198.18.0.11"] },
  ],
});

const witness: CheckerEntry[] = [{ type: "split-brain", name: "witness", witnesses: ["198.18.0.1"], interval: 100, timeout: 200, rise: 1, fall: 1 }];
const splitBrain = mirrorSplitBrain(witness, { secondWithPeer: () => module.status.state === "SECOND" });
const driver = new MirrorDriver({
  nodeId,
  backingDir: "/srv/db/data",
  mountPoint: "/srv/db/mnt",
  keyFile: "/etc/holdfast/repl.key",
  listen: { host: nodeId === "a" ? "198.18.0.10" : "198.18.0.11", port: 7790 },
  peer: { host: peer, port: 7790 },
  ...splitBrain.driver,
});

let server: Server | undefined;
const start = (): Promise<void> =>
  new Promise((resolve) => {
    server = createServer((_req, res) => res.end(`${nodeId}\n`)).listen(80, resolve);
  });
const stop = (): Promise<void> => new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));

const module = await Module.create(
  { name: "db", kind: "mirror", vips: ["198.18.0.100/24"], hooks: driver.hooks({ start_prim: { fn: start, timeout: 10_000 }, stop_prim: { fn: stop, timeout: 10_000 } }), checkers: splitBrain.checkers },
  { nodeId, vip: new MirrorVip({ iface: "eth0" }), store: new FileModuleStore("/srv/db/state") },
);
const group = new CheckerGroup(splitBrain.checkers, "module db");
module.attachCheckers(group);
module.on("state", (s) => console.log(`db: ${s.state}${s.ready ? " ready" : ""}`));

bindMembership(membership, [module]);
driver.bind(module, membership);
await membership.start();
group.start();
await module.start();
