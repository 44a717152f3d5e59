// The mirror module for real: 2 nodes + 1 client in namespaces.
// 1. MirrorVip: the client switches to the new holder at once after the announcement (and not without it).
// 2+. examples/mirror-node.ts on each node (membership + module engine + MirrorDriver + MirrorVip + an app that
//     appends fsync'd records in the replicated directory): failover, failback with resync, swap, split brain, faults.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Lab, type LabHost } from "../../src/testing/lab.js";
import { MirrorVip } from "../../src/mirror/vip.js";

const root = process.getuid?.() === 0;
const netnsOf = (h: LabHost): string => `/run/netns/${h.ns}`;

async function neighbour(lab: Lab, client: LabHost, addr: string): Promise<string | undefined> {
  const r = await lab.exec(client, ["ip", "-j", "neigh", "show", addr, "dev", "eth0"]);
  const e = (JSON.parse(r.stdout || "[]") as { lladdr?: string; state?: string[] }[])[0];
  return e?.state?.includes("FAILED") || e?.state?.includes("INCOMPLETE") ? undefined : e?.lladdr;
}

async function pollFor<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  for (;;) {
    const value = await fn();
    if (ok(value) || Date.now() - t0 > ms) return { value, ms: Date.now() - t0 };
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(!root)("MirrorVip in namespaces (2 nodes + 1 client)", () => {
  let lab: Lab;
  let n0: LabHost;
  let n1: LabHost;
  let client: LabHost;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2, clients: 1, networks: 1 });
    [n0, n1] = lab.nodes as [LabHost, LabHost];
    client = lab.clients[0] as LabHost;
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  for (const family of ["IPv4", "IPv6"] as const) {
    it(`${family}: the client's neighbour entry follows the VIP to the new holder at once; without announcement it does not`, async () => {
      const idx = family === "IPv4" ? 0 : 1;
      const addr = family === "IPv4" ? lab.spareAddr(idx) : lab.spareAddr6(idx);
      const vip = family === "IPv4" ? `${addr}/24` : `${addr}/112`;
      const on = (h: LabHost, announce?: { count: number }) =>
        new MirrorVip({ netns: netnsOf(h), iface: "eth0", announce: { repeatAfterMs: 0, ...announce } });
      const v0 = on(n0);
      const v1 = on(n1);
      const quiet0 = on(n0, { count: 0 });
      try {
        await v0.add(vip, "db");
        expect((await lab.exec(client, ["ping", "-c", "1", "-W", "1", addr])).code).toBe(0);
        expect(await neighbour(lab, client, addr)).toBe(lab.mac(n0));
        // The neighbour cache ignores an update within `locktime` (1 s) of the last one: let it pass, as between
        // a primary's last answer and a real failover.
        await new Promise((r) => setTimeout(r, 1100));
        await v0.remove(vip, "db");
        await v1.add(vip, "db");
        const switched = await pollFor(() => neighbour(lab, client, addr), (m) => m === lab.mac(n1), 1000);
        expect(switched.value).toBe(lab.mac(n1));
        expect(switched.ms).toBeLessThan(500);
        expect((await lab.exec(client, ["ping", "-c", "1", "-W", "1", addr])).code).toBe(0);
        // Negative control: back to n0 without any announcement, the client keeps n1's MAC (and loses the VIP).
        await new Promise((r) => setTimeout(r, 1100));
        await v1.remove(vip, "db");
        await quiet0.add(vip, "db");
        const kept = await pollFor(() => neighbour(lab, client, addr), (m) => m === lab.mac(n0), 700);
        expect(kept.value).toBe(lab.mac(n1));
        // ... and a stale VIP left by a "crashed run" is found and removed at start.
        expect(await on(n0).removeStale([vip])).toEqual([vip]);
        expect((await lab.exec(n0, ["ip", "-j", "addr", "show", "dev", "eth0"])).stdout).not.toContain(`"${addr}"`);
      } finally {
        for (const v of [v0, v1, quiet0]) v.close();
        await v0.remove(vip).catch(() => undefined);
        await v1.remove(vip).catch(() => undefined);
      }
    });
  }
});
