/**
 * The eBPF filter's per-bucket may-hold flags across a daemon restart: a connection accepted through one
 * backend instance keeps flowing after that instance is stopped and a fresh one starts owning nothing, because
 * the fresh one seeds its flags from the sockets that already exist (ss -Htn in the node's namespace), so the
 * connection's mid-flow packets still get the socket lookup in their (now foreign) bucket.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUCKET_COUNT, bucketOf } from "../../src/core/buckets.js";
import { EbpfBackend } from "../../src/farm/filter/ebpf.js";
import type { FilterConfig } from "../../src/farm/filter/decision.js";
import { Lab } from "../../src/testing/lab.js";
import type { LabProcess } from "../../src/testing/lab-process.js";

const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root) console.warn("skipping: the may-hold lab test needs root");

const PORT = 7000;
const server = (addr: string): string =>
  `require("net").createServer((s) => s.pipe(s)).listen(${PORT}, "${addr}", () => console.log("ready"))`;
// Sends "ping N" every 100 ms (at most 600 times) and prints "echo N" for each line echoed back.
const client = (addr: string): string => `
const s = require("net").connect(${PORT}, "${addr}", () => {
  console.log("connected " + s.localPort);
  let n = 0;
  const t = setInterval(() => { if (++n > 600) { clearInterval(t); s.end(); } else s.write("ping " + n + "\\n"); }, 100);
});
let buf = "";
s.setEncoding("utf8");
s.on("data", (d) => { buf += d; let i; while ((i = buf.indexOf("\\n")) >= 0) { console.log("echo " + buf.slice(5, i)); buf = buf.slice(i + 1); } });
s.on("error", (e) => { console.log("error " + e.code); process.exit(1); });
s.on("close", () => process.exit(0));`;

describe.skipIf(!root)("ebpf may-hold flags across a restart", () => {
  let lab: Lab;
  let first: EbpfBackend | undefined;
  let second: EbpfBackend | undefined;
  let cli: LabProcess;
  let config: FilterConfig;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clients: 1 });
  });
  afterAll(async () => {
    await first?.stop().catch(() => undefined);
    await second?.stop().catch(() => undefined);
    await lab?.destroy();
  });

  /** Waits for an echo numbered at least `n`; returns its number. */
  async function echoAtLeast(n: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await cli.waitForLine(/^echo (\d+)$/, Math.max(1, deadline - Date.now()));
      const k = Number(m[1]);
      if (k >= n) return k;
    }
  }

  it("keeps a connection accepted before the restart: the new instance flags its bucket and looks its packets up", async () => {
    const node = lab.nodes[0]!;
    const vip = lab.addr(node); // the node's own address stands for the VIP (one node: nothing to flood)
    config = { seed: 7, vips: [vip], rules: [{ protocol: "tcp", port: PORT, by: "address+port" }] };
    const netns = `/run/netns/${node.ns}`;
    const iface = lab.iface(node);
    first = new EbpfBackend({ iface, config, netns });
    await first.start();
    await first.setOwned(new Uint8Array(BUCKET_COUNT).fill(1));
    const srv = lab.spawn(node, [process.execPath, "-e", server(vip)]);
    await srv.waitForLine(/^ready$/, 10_000);
    cli = lab.spawn(lab.clients[0]!, [process.execPath, "-e", client(vip)]);
    const port = Number((await cli.waitForLine(/^connected (\d+)$/, 10_000))[1]);
    const bucket = bucketOf(lab.addr(lab.clients[0]!), "address+port", port, 7);
    const seen = await echoAtLeast(1, 5_000);
    expect(first.mayHold()[bucket]).toBe(1); // set by the connection's SYN

    // The daemon restarts: the old program goes, a fresh one starts owning nothing (every bucket foreign).
    await first.stop();
    first = undefined;
    const logs: string[] = [];
    second = new EbpfBackend({ iface, config, netns, log: (l) => logs.push(l) });
    await second.start();
    const flags = second.mayHold();
    expect(flags[bucket]).toBe(1);
    expect(flags.reduce((s, x) => s + x, 0)).toBe(1); // only the bucket of the one connection on the VIP
    expect(logs.join("\n")).toContain("1 bucket(s) flagged");

    const before = await second.counters();
    const after = await echoAtLeast(seen + 5, 10_000);
    expect(after).toBeGreaterThanOrEqual(seen + 5);
    const c = await second.counters();
    expect(c.keptSocket! - before.keptSocket!).toBeGreaterThan(0); // the packets came through the lookup
    expect(c.accepted[bucket]! - before.accepted[bucket]!).toBeGreaterThan(0);
    cli.kill();
    srv.kill();
  });

  it("prunes the flag of a foreign bucket once its last connection is gone, never while it lasts nor in an owned bucket", async () => {
    const node = lab.nodes[0]!;
    const vip = lab.addr(node);
    const backend = second!;
    const all = new Uint8Array(BUCKET_COUNT).fill(1);
    await backend.setOwned(all);
    const port2 = PORT + 1;
    const srv = lab.spawn(node, [process.execPath, "-e", server(vip).replace(String(PORT), String(port2))]);
    await srv.waitForLine(/^ready$/, 10_000);
    // A client that sends 15 pings (1.5 s) and then closes first (its TIME-WAIT stays on the client side).
    const short = lab.spawn(lab.clients[0]!, [process.execPath, "-e", client(vip).replace(String(PORT), String(port2)).replace("++n > 600", "++n > 15")]);
    const port = Number((await short.waitForLine(/^connected (\d+)$/, 10_000))[1]);
    await short.waitForLine(/^echo 1$/, 5_000);
    const bucket = bucketOf(lab.addr(lab.clients[0]!), "address", port, 7); // no rule for port2: the default, address
    expect(backend.mayHold()[bucket]).toBe(1);
    await backend.setOwned(new Uint8Array(BUCKET_COUNT)); // the bucket moves away while the connection lasts
    const during = await backend.pruneMayHold();
    expect(during.cleared).not.toContain(bucket);
    expect(during.flags[bucket]).toBe(1);
    await short.waitForLine(/^echo 15$/, 10_000); // its packets kept flowing through the lookup
    await short.exited;
    // Owned again: an owned bucket's flag is never cleared, even with no socket.
    await backend.setOwned(all);
    const deadline = Date.now() + 10_000;
    for (;;) {
      // Wait until the server side of the connection is gone (LAST-ACK ends with the client's final ACK).
      const ss = await lab.exec(node, ["ss", "-Htna", `( sport = :${port2} and dport = :${port} )`]);
      if (ss.stdout.trim() === "") break;
      if (Date.now() > deadline) throw new Error(`connection still there: ${ss.stdout}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await backend.pruneMayHold()).flags[bucket]).toBe(1);
    await backend.setOwned(new Uint8Array(BUCKET_COUNT));
    const pruned = await backend.pruneMayHold();
    expect(pruned.cleared).toContain(bucket);
    expect(pruned.flags[bucket]).toBe(0);
    expect(backend.mayHold()[bucket]).toBe(0);
    srv.kill();
  });
});
