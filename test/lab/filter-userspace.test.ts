/**
 * The userspace (NFQUEUE) backend on the shared vectors: frames sent from a client namespace over the lab's
 * bridge are queued to this process, which decides with the TypeScript reference; the backend's per-bucket
 * counters must equal the reference's prediction. Fragments are left out: conntrack reassembles them
 * before the queue (documented difference). Also measures decisions per second.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUCKET_COUNT } from "../../src/core/buckets.js";
import { compileFilter, decide, type FilterConfig } from "../../src/farm/filter/decision.js";
import { UserspaceBackend } from "../../src/farm/filter/userspace.js";
import { FrameSender } from "../../src/farm/filter/inject.js";
import { craftPacket } from "../../src/farm/filter/packets.js";
import type { FilterCounters } from "../../src/farm/filter/backend.js";
import { Lab } from "../../src/testing/lab.js";
import data from "../vectors/filter.json" with { type: "json" };

const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root) console.warn("skipping: the userspace filter lab test needs root");

const config = data.config as FilterConfig;
const vectors = data.vectors.filter((v) => !v.name.includes("fragment"));
const frames = vectors.map((v) => Uint8Array.from(Buffer.from(v.frame, "hex")));
const sum = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0);

describe.skipIf(!root)("userspace (NFQUEUE) backend", () => {
  let lab: Lab;
  let backend: UserspaceBackend;
  let sender: FrameSender;
  const logs: string[] = [];
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clients: 1 });
    const node = lab.nodes[0]!;
    backend = new UserspaceBackend({ iface: lab.iface(node), config, netns: `/run/netns/${node.ns}`, instance: "vec", log: (l) => logs.push(l) });
    await backend.start();
    sender = new FrameSender(lab.iface(lab.clients[0]!), `/run/netns/${lab.clients[0]!.ns}`);
  });
  afterAll(async () => {
    sender?.close();
    await backend?.stop().catch(() => undefined);
    await lab?.destroy();
  });

  async function waitCounted(before: FilterCounters, n: number): Promise<FilterCounters> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const c = await backend.counters();
      const seen = sum(c.accepted) - sum(before.accepted) + sum(c.dropped) - sum(before.dropped) + c.broadcast! - before.broadcast!;
      if (seen >= n || Date.now() > deadline) return c;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it("decides every (unfragmented) vector as the reference does, owned and foreign", async () => {
    const filter = compileFilter(config);
    const half = Uint8Array.from({ length: BUCKET_COUNT }, (_, b) => ((b * 37) % 5 < 2 ? 1 : 0));
    for (const mask of [half, half.map((x) => 1 - x)]) {
      await backend.setOwned(mask);
      const want = { accepted: new Array<number>(BUCKET_COUNT).fill(0), dropped: new Array<number>(BUCKET_COUNT).fill(0), broadcast: 0 };
      let expectedSeen = 0;
      for (const f of frames) {
        const d = decide(f, filter, mask);
        if (d.kind === "broadcast") {
          want.broadcast++;
          expectedSeen++;
        }
        if (d.kind !== "bucket") continue;
        expectedSeen++;
        if (d.verdict === "pass") want.accepted[d.bucket]!++;
        else want.dropped[d.bucket]!++;
      }
      const before = await backend.counters();
      for (const f of frames) sender.send(f);
      const after = await waitCounted(before, expectedSeen);
      expect(after.accepted.map((x, i) => x - before.accepted[i]!)).toEqual(want.accepted);
      expect(after.dropped.map((x, i) => x - before.dropped[i]!)).toEqual(want.dropped);
      expect(after.broadcast! - before.broadcast!).toBe(want.broadcast);
      expect(sum(want.accepted)).toBeGreaterThan(20);
      expect(sum(want.dropped)).toBeGreaterThan(20);
    }
  });

  it("measures queued decisions per second (UDP, every packet queued)", async () => {
    await backend.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
    const n = 5_000;
    const before = await backend.counters();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      sender.send(craftPacket({ src: `198.18.50.${1 + (i % 200)}`, dst: "198.18.10.1", protocol: "udp", sport: 10_000 + i, dport: 5353 }));
      if (i % 500 === 499) await new Promise((r) => setImmediate(r)); // let the queue drain (bounded kernel queue)
    }
    const after = await waitCounted(before, n);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const decided = sum(after.accepted) - sum(before.accepted);
    console.log(`userspace filter: ${decided} of ${n} UDP packets decided in ${ms.toFixed(0)} ms (${Math.round((decided / ms) * 1000)} decisions/s)`);
    expect(decided).toBeGreaterThan(n * 0.9);
  });

  it("removes its rules on stop and finds stale ones on start", async () => {
    const node = lab.nodes[0]!;
    await backend.stop();
    const r = await lab.exec(node, ["iptables", "-t", "mangle", "-S"]);
    expect(r.stdout).not.toContain("HF_vec");
    // Simulate a crashed run: rules installed, process gone.
    const crashed = new UserspaceBackend({ iface: lab.iface(node), config, netns: `/run/netns/${node.ns}`, instance: "vec" });
    await crashed.start();
    backend = new UserspaceBackend({ iface: lab.iface(node), config, netns: `/run/netns/${node.ns}`, instance: "vec", log: (l) => logs.push(l) }, 0x4847);
    await backend.start();
    expect(logs.some((l) => l.includes("stale"))).toBe(true);
    const r2 = await lab.exec(node, ["iptables", "-t", "mangle", "-S", "PREROUTING"]);
    expect(r2.stdout.split("\n").filter((l) => l.includes("HF_vec")).length).toBe(1);
  });
});
