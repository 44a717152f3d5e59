/**
 * The eBPF filter's SYN rule (dropSynWithoutListener): in an owned bucket, a SYN that no local socket would take
 * (the app is dead, its lease still holding) is dropped instead of answered with RST, so the client retransmits
 * and its connection succeeds once a listener (here: the same node's restarted app; in a farm: the node that takes
 * the bucket over) is there. With the rule off, the same client gets ECONNREFUSED at once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUCKET_COUNT } from "../../src/core/buckets.js";
import { EbpfBackend } from "../../src/farm/filter/ebpf.js";
import { Lab } from "../../src/testing/lab.js";

const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root) console.warn("skipping: the SYN listener lab test needs root");

const PORT = 7100;
// Connects once (no retry of its own: only the kernel's SYN retransmissions) and prints the outcome.
const client = (addr: string): string => `
const t0 = Date.now();
const s = require("net").connect(${PORT}, "${addr}");
s.on("connect", () => { console.log("connected " + (Date.now() - t0)); s.end(); });
s.on("error", (e) => console.log("error " + e.code + " " + (Date.now() - t0)));
setTimeout(() => { console.log("pending"); process.exit(0); }, 5000).unref();`;

describe.skipIf(!root)("ebpf: no RST for a SYN to a dead app", () => {
  let lab: Lab;
  let backend: EbpfBackend | undefined;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clients: 1 });
  });
  afterAll(async () => {
    await backend?.stop().catch(() => undefined);
    await lab?.destroy();
  });

  async function withFilter(dropSynWithoutListener: boolean): Promise<EbpfBackend> {
    const node = lab.nodes[0]!;
    const vip = lab.addr(node);
    await backend?.stop();
    backend = new EbpfBackend({ iface: lab.iface(node), netns: `/run/netns/${node.ns}`, config: { vips: [vip], rules: [{ protocol: "tcp", port: PORT, by: "address+port" }], dropSynWithoutListener } });
    await backend.start();
    await backend.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
    return backend;
  }

  it("with the rule off, the stack resets the SYN: ECONNREFUSED at once", async () => {
    await withFilter(false);
    const c = lab.spawn(lab.clients[0]!, [process.execPath, "-e", client(lab.addr(lab.nodes[0]!))]);
    const m = await c.waitForLine(/^(connected|error|pending)\b.*$/, 10_000);
    expect(m[0]).toMatch(/^error ECONNREFUSED \d+$/);
  });

  it("with the rule on, the SYN is dropped (no RST) and the retransmitted SYN connects once the app listens", async () => {
    const b = await withFilter(true);
    const node = lab.nodes[0]!;
    const before = await b.counters();
    const c = lab.spawn(lab.clients[0]!, [process.execPath, "-e", client(lab.addr(node))]);
    // The first SYN finds no listener and is dropped; the app comes back before the retransmission (~1 s).
    for (let i = 0; (await b.counters()).droppedNoListener! === before.droppedNoListener!; i++) {
      if (i > 100) throw new Error("the SYN never reached the filter");
      await new Promise((r) => setTimeout(r, 20));
    }
    const srv = lab.spawn(node, [process.execPath, "-e", `require("net").createServer((s) => s.end()).listen(${PORT}, () => console.log("ready"))`]);
    await srv.waitForLine(/^ready$/, 10_000);
    const m = await c.waitForLine(/^(connected|error|pending)\b.*$/, 10_000);
    expect(m[0]).toMatch(/^connected \d+$/);
    expect(Number(m[0].split(" ")[1])).toBeGreaterThanOrEqual(500); // it took a retransmission, not the first SYN
    expect((await b.counters()).droppedNoListener! - before.droppedNoListener!).toBeGreaterThanOrEqual(1);
    srv.kill();
  });
});
