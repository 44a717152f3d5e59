// The reference daemon running a farm module for real: 3 daemons in namespaces, each with `farm:` config,
// an HTTP app started by start_both, the VIP on every node and the packet filter; a client's requests are
// answered by every node, once each; a clean stop removes the VIP and the filter.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUCKET_COUNT } from "../../src/core/buckets.js";
import { Lab, type LabHost } from "../../src/testing/lab.js";
import { DaemonCluster, writeHttpAppHooks } from "../../examples/daemon/lab-cluster.js";

const root = process.getuid?.() === 0;

describe.skipIf(!root)("daemon with a farm module (3 nodes + client)", () => {
  let lab: Lab;
  let cluster: DaemonCluster;
  let vip: string;
  let client: LabHost;

  beforeAll(async () => {
    lab = await Lab.create({ nodes: 3, clients: 1, networks: 1 });
    vip = lab.spareAddr(0);
    client = lab.clients[0] as LabHost;
    cluster = await DaemonCluster.start(lab, {
      modules: (dir) => {
        const app = writeHttpAppHooks(dir);
        return [{ name: "web", kind: "farm", vips: [`${vip}/32`], hooks: { start_both: app.start, stop_both: app.stop } }];
      },
      extra: { farm: { web: { iface: "eth0", rules: [{ protocol: "tcp", port: 8080, by: "address+port" }] } } },
    });
  });
  afterAll(async () => {
    await cluster?.stop();
    await lab?.destroy();
  });

  async function bucketsOwned(): Promise<number[]> {
    return Promise.all(
      cluster.nodes.map(async (n) => {
        const r = await lab.exec(n.host, ["curl", "-s", "-H", `authorization: Bearer ${cluster.tokens.monitor}`, `${n.url}/api/v1/state`]);
        const s = JSON.parse(r.stdout) as { nodes: { id: string; modules: Record<string, { state: string; details?: { buckets?: { owned: number[] } } }> }[] };
        const self = s.nodes.find((x) => x.id === n.id);
        return self?.modules.web?.details?.buckets?.owned.length ?? -1;
      }),
    );
  }

  it("every node is UP and the buckets are shared among the three", async () => {
    let owned: number[] = [];
    for (let i = 0; i < 100; i++) {
      owned = await bucketsOwned();
      if (owned.every((x) => x > 0) && owned.reduce((a, b) => a + b, 0) === BUCKET_COUNT) break;
      await new Promise((r) => setTimeout(r, 200)); // polling the API, bounded
    }
    expect(owned.reduce((a, b) => a + b, 0)).toBe(BUCKET_COUNT);
    expect(owned.every((x) => x > 0)).toBe(true);
    // /metrics: this node's share of the buckets and the heartbeat round-trip time to each peer.
    const n0 = cluster.node("n0");
    const m = await lab.exec(n0.host, ["curl", "-s", "-H", `authorization: Bearer ${cluster.tokens.monitor}`, `${n0.url}/metrics`]);
    expect(m.stdout).toMatch(new RegExp(`holdfast_farm_buckets_owned\\{node="n0",module="web"\\} ${owned[0]}`));
    for (const peer of ["n1", "n2"]) {
      const rtt = new RegExp(`holdfast_heartbeat_rtt_seconds\\{node="n0",peer="${peer}",network="0"\\} ([0-9.e-]+)`).exec(m.stdout);
      expect(rtt, `rtt to ${peer}`).not.toBeNull();
      expect(Number(rtt?.[1])).toBeLessThan(0.1); // a few ms on a lab bridge
    }
  });

  it("the client's requests to the VIP are answered once each, by every node", async () => {
    const r = await lab.sh(client, `for i in $(seq 1 90); do curl -s -m 3 http://${vip}:8080/ || echo FAIL; done`);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(90);
    expect(lines.filter((l) => l === "FAIL")).toEqual([]);
    expect(new Set(lines)).toEqual(new Set(["n0", "n1", "n2"]));
  });

  it("a clean stop of a daemon removes its VIP and its filter; the others serve everything", async () => {
    const n2 = cluster.node("n2");
    n2.proc?.kill("SIGTERM");
    expect((await n2.proc?.exited)?.code).toBe(0);
    const addrs = await lab.exec(n2.host, ["ip", "-j", "addr", "show", "dev", "eth0"]);
    expect(addrs.stdout).not.toContain(vip);
    const tc = await lab.exec(n2.host, ["tc", "filter", "show", "dev", "eth0", "ingress"]);
    expect(tc.stdout.trim()).toBe("");
    const r = await lab.sh(client, `for i in $(seq 1 30); do curl -s -m 3 http://${vip}:8080/ || echo FAIL; done`);
    const lines = r.stdout.trim().split("\n");
    expect(lines.filter((l) => l === "FAIL")).toEqual([]);
    expect(new Set(lines)).toEqual(new Set(["n0", "n1"]));
  });
});
