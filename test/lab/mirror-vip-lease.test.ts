/**
 * The mirror VIP's lease with the real kernel: a process holding the VIP keeps it past the lifetime by renewing
 * it; once that process is SIGKILLed (its kernel lives on, as after an OOM kill of the daemon), the kernel removes
 * the address by itself, so this node stops answering ARP for a VIP the other node has taken over.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Lab, type LabHost } from "../../src/testing/lab.js";

const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root) console.warn("skipping: the VIP lease lab test needs root");

const LEASE_S = 2;

const CHILD = `
import { MirrorVip } from ${JSON.stringify(resolve("src/mirror/vip.ts"))};
const vip = new MirrorVip({ iface: "eth0", leaseS: ${LEASE_S}, announce: { count: 1, repeatAfterMs: 0 }, log: (l) => console.log(l) });
await vip.add(process.argv[2]);
console.log("ready");
setInterval(() => undefined, 1000); // stays until killed
`;

describe.skipIf(!root)("mirror VIP lease: the kernel removes the VIP of a dead process", () => {
  let lab: Lab;
  let node: LabHost;
  let script: string;

  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clients: 0 });
    node = lab.nodes[0]!;
    mkdirSync(lab.dir(node), { recursive: true });
    script = join(lab.dir(node), "vip-lease-child.mts");
    writeFileSync(script, CHILD);
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  const holds = async (addr: string): Promise<boolean> => (await lab.exec(node, ["ip", "-o", "addr", "show", "dev", "eth0"])).stdout.includes(` ${addr}/`);

  for (const vip of ["198.18.0.100/24", "fd00:4844::100/64"]) {
    it(`${vip}: renewed past its lifetime while the process lives, gone within the lifetime (+1 s) after SIGKILL`, async () => {
      const addr = vip.split("/")[0] as string;
      const p = lab.spawn(node, [resolve("node_modules/.bin/tsx"), script, vip]);
      await p.waitForLine(/^ready$/, 30_000);
      expect(await holds(addr)).toBe(true);
      // Twice the lifetime: only the renewals keep it (bounded wait, a fixed span is what is being tested).
      const until = Date.now() + 2 * LEASE_S * 1000;
      while (Date.now() < until) {
        expect(await holds(addr)).toBe(true);
        await new Promise((r) => setTimeout(r, 200));
      }
      const t0 = Date.now();
      p.kill("SIGKILL");
      await p.gone();
      let goneMs = -1;
      while (goneMs < 0 && Date.now() - t0 < (LEASE_S + 3) * 1000) {
        if (!(await holds(addr))) goneMs = Date.now() - t0;
        else await new Promise((r) => setTimeout(r, 50));
      }
      console.log(`${vip}: removed by the kernel ${goneMs} ms after the holder died (lifetime ${LEASE_S} s)`);
      // Not removed on exit by anyone: it outlives the process by the rest of its last renewal's lifetime.
      expect(goneMs).toBeGreaterThanOrEqual(((LEASE_S * 1000) / 3) * 2 - 200);
      expect(goneMs).toBeLessThanOrEqual((LEASE_S + 1) * 1000);
    });
  }
});
