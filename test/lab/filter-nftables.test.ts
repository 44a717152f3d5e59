/**
 * The nftables backend on the shared vectors (test/vectors/filter.json), with the real kernel: a client
 * namespace sends every crafted frame (AF_PACKET) over the lab's bridge to a node whose interface carries
 * the generated ruleset; the node's per-bucket counters must equal what the TypeScript reference decision
 * predicts, with one ownership table and then its complement (so every bucket is seen owned and foreign).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUCKET_COUNT } from "../../src/core/buckets.js";
import { compileFilter, decide, type FilterConfig } from "../../src/farm/filter/decision.js";
import { NftablesBackend, nftRuleset } from "../../src/farm/filter/nftables.js";
import { FrameSender } from "../../src/farm/filter/inject.js";
import type { FilterCounters } from "../../src/farm/filter/backend.js";
import { Lab } from "../../src/testing/lab.js";
import data from "../vectors/filter.json" with { type: "json" };

const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root) console.warn("skipping: the nftables lab test needs root");

const config = data.config as FilterConfig;
const frames = data.vectors.map((v) => ({ name: v.name, frame: Uint8Array.from(Buffer.from(v.frame, "hex")) }));

interface Expected { accepted: number[]; dropped: number[]; broadcast: number; orphan: number; deferred: number }

/** What the nftables counters must show for one pass over the vectors with `mask` owned. */
function expectedCounts(mask: Uint8Array): Expected {
  const filter = compileFilter(config);
  const e: Expected = { accepted: new Array<number>(BUCKET_COUNT).fill(0), dropped: new Array<number>(BUCKET_COUNT).fill(0), broadcast: 0, orphan: 0, deferred: 0 };
  for (const { frame } of frames) {
    const d = decide(frame, filter, mask); // no local sockets in this test
    if (d.kind === "broadcast") e.broadcast++;
    if (d.kind !== "bucket") continue;
    if (d.flow.midflow) {
      // Counted as accepted at netdev ingress, decided in prerouting.
      e.accepted[d.bucket]!++;
      if (d.reason === "orphan") e.orphan++;
      if (d.reason === "foreign") e.deferred++;
    } else if (d.verdict === "pass") e.accepted[d.bucket]!++;
    else e.dropped[d.bucket]!++;
  }
  return e;
}

function delta(a: FilterCounters, b: FilterCounters): Expected {
  return {
    accepted: b.accepted.map((x, i) => x - a.accepted[i]!),
    dropped: b.dropped.map((x, i) => x - a.dropped[i]!),
    broadcast: b.broadcast! - a.broadcast!,
    orphan: b.droppedOrphan! - a.droppedOrphan!,
    deferred: b.droppedDeferred! - a.droppedDeferred!,
  };
}

describe.skipIf(!root)("nftables backend on the shared vectors", () => {
  let lab: Lab;
  let backend: NftablesBackend;
  let sender: FrameSender;
  const logs: string[] = [];
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clients: 1 });
    const node = lab.nodes[0]!;
    backend = new NftablesBackend({ iface: lab.iface(node), config, netns: `/run/netns/${node.ns}`, instance: "vec", log: (l) => logs.push(l) });
    await backend.start();
    sender = new FrameSender(lab.iface(lab.clients[0]!), `/run/netns/${lab.clients[0]!.ns}`);
  });
  afterAll(async () => {
    sender?.close();
    await backend?.stop().catch(() => undefined);
    await lab?.destroy();
  });

  /** Sends every vector once and waits until the node has counted them all (bounded poll). */
  async function sendAll(): Promise<Expected> {
    const before = await backend.counters();
    for (const { frame } of frames) sender.send(frame);
    const deadline = Date.now() + 5_000;
    const hashedOrBroadcast = data.vectors.filter((v) => v.kind !== "not-vip").length;
    for (;;) {
      const d = delta(before, await backend.counters());
      const seen = d.accepted.reduce((s, x) => s + x, 0) + d.dropped.reduce((s, x) => s + x, 0) + d.broadcast;
      if (seen >= hashedOrBroadcast || Date.now() > deadline) return d;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it("counts every vector in the bucket the reference computes, owned and foreign", async () => {
    const half = Uint8Array.from({ length: BUCKET_COUNT }, (_, b) => (b * 37) % 5 < 2 ? 1 : 0);
    for (const mask of [half, half.map((x) => 1 - x)]) {
      await backend.setOwned(mask);
      const got = await sendAll();
      const want = expectedCounts(mask);
      expect(got.accepted).toEqual(want.accepted);
      expect(got.dropped).toEqual(want.dropped);
      expect(got.broadcast).toBe(want.broadcast);
      // Deferred mid-flow TCP reaches prerouting only after the IP layer accepted the frame.
      expect(got.orphan + got.deferred).toBe(want.orphan + want.deferred);
      expect(got.orphan).toBe(want.orphan);
      expect(want.accepted.reduce((s, x) => s + x, 0)).toBeGreaterThan(20);
      expect(want.dropped.reduce((s, x) => s + x, 0)).toBeGreaterThan(20);
    }
  });

  it("replaces a stale ruleset of a crashed run on start, and removes everything on stop", async () => {
    const node = lab.nodes[0]!;
    const second = new NftablesBackend({ iface: lab.iface(node), config, netns: `/run/netns/${node.ns}`, instance: "vec", log: (l) => logs.push(l) });
    await second.start(); // the first backend's tables are still there: "stale"
    expect(logs.some((l) => l.includes("stale"))).toBe(true);
    await second.stop();
    const r = await lab.exec(node, ["nft", "list", "tables"]);
    expect(r.stdout).not.toContain("holdfast_vec");
    await backend.start(); // restore for afterAll symmetry
  });

  it("generates a ruleset that names the interface and the seed", () => {
    const text = nftRuleset("eth0", config, "x");
    expect(text).toContain(`device "eth0"`);
    expect(text).toContain("seed 0x5eed1234");
    expect(text).toContain("ip saddr . tcp sport");
  });
});
