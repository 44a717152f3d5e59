/**
 * Regenerates test/vectors/filter.json: crafted frames and the reference decision of
 * src/farm/filter/decision.ts for them. The eBPF, nftables and userspace backends are tested against this
 * file. Run: npx tsx test/vectors/gen-filter.ts > test/vectors/filter.json (review the diff).
 */
import { craftPacket, type PacketSpec } from "../../src/farm/filter/packets.js";
import { compileFilter, decide, type FilterConfig } from "../../src/farm/filter/decision.js";
import { BUCKET_COUNT } from "../../src/core/buckets.js";

export const config: FilterConfig = {
  seed: 0x5eed1234,
  vips: ["198.18.10.1", "fd00:4844::10"],
  rules: [
    { protocol: "tcp", port: 80, by: "address+port" },
    { protocol: "udp", port: 5353, by: "address+port" },
    { protocol: "udp", port: 53, by: "address" },
    { protocol: "tcp", port: 8443, by: "address", vip: "fd00:4844::10" },
  ],
  defaultBy: "address",
};

const specs: { name: string; spec: PacketSpec }[] = [];
const add = (name: string, spec: PacketSpec): void => void specs.push({ name, spec });
for (let c = 0; c < 6; c++) {
  for (const port of [1024, 40000 + c * 7, 65535]) {
    add(`v4 tcp syn :80 client ${c} port ${port}`, { src: `198.18.20.${c + 1}`, dst: "198.18.10.1", protocol: "tcp", sport: port, dport: 80 });
    add(`v6 tcp syn :80 client ${c} port ${port}`, { src: `fd00:4844::20:${c + 1}`, dst: "fd00:4844::10", protocol: "tcp", sport: port, dport: 80 });
    add(`v4 udp :5353 client ${c} port ${port}`, { src: `198.18.21.${c + 1}`, dst: "198.18.10.1", protocol: "udp", sport: port, dport: 5353 });
    add(`v6 udp :5353 client ${c} port ${port}`, { src: `fd00:4844::21:${c + 1}`, dst: "fd00:4844::10", protocol: "udp", sport: port, dport: 5353 });
  }
  add(`v4 udp :53 (address) client ${c}`, { src: `198.18.22.${c + 1}`, dst: "198.18.10.1", protocol: "udp", sport: 30000 + c, dport: 53 });
  add(`v4 tcp :22 (no rule: default address) client ${c}`, { src: `198.18.22.${c + 1}`, dst: "198.18.10.1", protocol: "tcp", sport: 30000 + c, dport: 22 });
  add(`v6 tcp :8443 (address, v6 VIP only) client ${c}`, { src: `fd00:4844::22:${c + 1}`, dst: "fd00:4844::10", protocol: "tcp", sport: 30000 + c, dport: 8443 });
  add(`v4 tcp ack (mid-flow) :80 client ${c}`, { src: `198.18.20.${c + 1}`, dst: "198.18.10.1", protocol: "tcp", sport: 50000 + c, dport: 80, tcpFlags: 0x10 });
  add(`v6 tcp syn-ack :80 client ${c}`, { src: `fd00:4844::20:${c + 1}`, dst: "fd00:4844::10", protocol: "tcp", sport: 50000 + c, dport: 80, tcpFlags: 0x12 });
  add(`v4 icmp echo client ${c}`, { src: `198.18.23.${c + 1}`, dst: "198.18.10.1", protocol: "icmp", icmpType: 8 });
  add(`v6 icmp echo client ${c}`, { src: `fd00:4844::23:${c + 1}`, dst: "fd00:4844::10", protocol: "icmp", icmpType: 128 });
  add(`v4 first fragment udp :5353 client ${c}`, { src: `198.18.24.${c + 1}`, dst: "198.18.10.1", protocol: "udp", sport: 7000 + c, dport: 5353, fragment: "first" });
  add(`v4 later fragment client ${c}`, { src: `198.18.24.${c + 1}`, dst: "198.18.10.1", protocol: "udp", fragment: "later" });
  add(`v6 first fragment tcp :80 client ${c}`, { src: `fd00:4844::24:${c + 1}`, dst: "fd00:4844::10", protocol: "tcp", sport: 7000 + c, dport: 80, fragment: "first" });
  add(`v6 later fragment client ${c}`, { src: `fd00:4844::24:${c + 1}`, dst: "fd00:4844::10", protocol: "udp", fragment: "later" });
  add(`v4 gre client ${c}`, { src: `198.18.25.${c + 1}`, dst: "198.18.10.1", protocol: "other" });
}
for (const t of [3, 4, 11, 12]) add(`v4 icmp error type ${t}`, { src: "198.18.30.1", dst: "198.18.10.1", protocol: "icmp", icmpType: t });
for (const t of [1, 2, 3, 4, 135, 136]) add(`v6 icmp type ${t} (error or ND)`, { src: "fd00:4844::30:1", dst: "fd00:4844::10", protocol: "icmp", icmpType: t });
add("v4 not a VIP", { src: "198.18.20.1", dst: "198.18.10.2", protocol: "tcp", sport: 1234, dport: 80 });
add("v6 not a VIP", { src: "fd00:4844::20:1", dst: "fd00:4844::11", protocol: "udp", sport: 1234, dport: 5353 });

const filter = compileFilter(config);
const none = new Uint8Array(BUCKET_COUNT);
const out = specs.map(({ name, spec }) => {
  const frame = craftPacket(spec);
  const d = decide(frame, filter, none);
  return { name, spec, frame: Buffer.from(frame).toString("hex"), kind: d.kind, ...(d.kind === "bucket" ? { bucket: d.bucket } : {}) };
});
process.stdout.write(JSON.stringify({ config, vectors: out }, null, 1) + "\n");
