// A vendor's farm node written against the published package only: membership, a farm module with the VIP on
// every node, and the packet filter keeping this node's share of the buckets. Typechecked from a scratch project
// by scripts/vendor-test.sh (never run there: it needs root and several nodes).
// Not exported today, so done by hand here: FarmDriver (buckets, contested and held sets, lease lapses) and
// withMetaFields (held sets in the heartbeat metadata).
import { FarmVip, FileModuleStore, Membership, Module, PacketFilter, assignBuckets, bindMembership, ownedMask, type VipDriver } from "holdfast";

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
const farmVip = new FarmVip({ iface: "eth0", addresses: ["198.18.0.100"], mac: "02:bf:00:00:00:64" });
// The module's VIP driver: the shared VIP and the filter come up together (every node holds the VIP).
const vip: VipDriver = {
  add: async () => {
    await filter.start();
    await farmVip.start();
  },
  remove: async () => {
    await farmVip.stop();
    await filter.stop();
  },
};
// This node's buckets follow the agreed view.
membership.on("viewChange", (e) => {
  const owned = ownedMask(assignBuckets(e.view.members.map((m) => ({ id: m.id, weight: 1 }))), nodeId);
  filter.setOwned(owned).catch((err: unknown) => console.error(err));
});

const module = await Module.create({ name: "web", kind: "farm", vips: ["198.18.0.100/32"] }, { nodeId, vip, store: new FileModuleStore("/var/lib/web") });
module.on("state", (s) => console.log(`web: ${s.state}`));
bindMembership(membership, [module]);
await membership.start();
await module.start();
