// A CommonJS consumer: `require("holdfast")` resolves to dist/index.cjs and its index.d.cts.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the CommonJS form under test
import holdfast = require("holdfast");

const key: string = holdfast.generateKey();
const membership = new holdfast.Membership({ clusterId: "c", nodeId: "a", key, nodes: [{ id: "a", addresses: ["127.0.0.1"] }] });
const probe = new holdfast.PingProbe({ host: "127.0.0.1" });
const names: string[] = [membership.nodeId, probe.name, typeof holdfast.PacketFilter, typeof holdfast.FileReplicator];
console.log(names.join(" "));
