// A vendor's farm node written against the published package only: membership, a farm module with the VIP on
// every node, and the packet filter keeping this node's share of the buckets (FarmDriver). Typechecked from a
// scratch project by scripts/vendor-test.sh (never run there: it needs root and several nodes).
import { FarmDriver, FarmVip, FileModuleStore, Membership, Module, PacketFilter, bindMembership, withMetaFields } from "holdfast";

const nodeId = process.env.NODE_ID ?? "a";
const membership = new Membership({
  clusterId: "web",
  nodeId,
  key: process.env.HOLDFAST_KEY ?? "",
  nodes: [
    { id: "a", addresses: ["198.18.0.10"] },
    { id: "b", addresses: ["198.18.0.11"] },
  ],
});

const filter = new PacketFilter({ iface: "eth0", vips: ["198.18.0.100"], rules: [{ protocol: "tcp", port: 80, by: "address+port" }] });
const vip = new FarmVip({ iface: "eth0", addresses: ["198.18.0.100"], mac: "02:bf:00:00:00:64" });
// Heartbeat metadata carries the module reports and this node's held buckets.
const meta = withMetaFields(membership);
const farm = new FarmDriver({ module: "web", nodeId, vip, filter, publishHeld: (held) => meta.set("held", { web: held }) });

const module = await Module.create({ name: "web", kind: "farm", vips: ["198.18.0.100/32"] }, { nodeId, vip: farm, store: new FileModuleStore("/var/lib/web") });
module.on("state", (s) => console.log(`web: ${s.state}`));
bindMembership(meta.membership, [module]);
farm.bind(module, membership);
await membership.start();
await module.start();
