// Membership with real processes, real UDP and the real kernel: 5 nodes in network namespaces on two
// heartbeat networks; each fault is injected for real and must be detected by every survivor.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Lab } from "../../src/testing/lab.js";
import { LAN } from "../../src/core/membership/config.js";
import { MembershipCluster, type ClusterNode, type NodeLine } from "./helpers/membership-cluster.js";

const root = process.getuid?.() === 0;
const DETECT_MS = 3_000; // generous upper bound for a busy CI machine; bench:detect measures the real figure

describe.skipIf(!root)("membership in namespaces (5 nodes, 2 heartbeat networks)", () => {
  let lab: Lab;
  let cluster: MembershipCluster;
  const ids = ["n0", "n1", "n2", "n3", "n4"];

  beforeAll(async () => {
    lab = await Lab.create({ nodes: 5, clients: 1, networks: 2 });
    cluster = await MembershipCluster.start(lab, { networks: 2 });
    await cluster.waitView(cluster.nodes, ids, 20_000);
  });
  afterAll(async () => {
    await cluster?.stop();
    await lab?.destroy();
  });

  const others = (id: string) => cluster.nodes.filter((n) => n.id !== id);
  const downSeen = (survivors: ClusterNode[], victim: string, marks: Map<ClusterNode, number>) =>
    Promise.all(survivors.map((n) => n.waitFor((l) => l.type === "nodeDown" && l.node === victim, DETECT_MS + 5_000, marks.get(n), `nodeDown ${victim}`)));
  const rejoined = async (marks: Map<ClusterNode, number>) => cluster.waitView(cluster.nodes, ids, 20_000, marks);

  it("SIGKILL: every survivor detects it; the restarted node rejoins with a new incarnation", async () => {
    const victim = cluster.node("n4");
    const marks = cluster.marks();
    const t0 = performance.timeOrigin + performance.now();
    victim.proc?.kill("SIGKILL");
    const downs = await downSeen(others("n4"), "n4", marks);
    for (const d of downs) {
      expect(d.cause).toBe("silence");
      expect(d.t - t0).toBeLessThan(DETECT_MS);
    }
    const old = victim.lines.find((l) => l.type === "ready")?.incarnation as number;
    const after = cluster.marks();
    await cluster.restart(victim);
    await rejoined(after);
    const ups = await Promise.all(others("n4").map((n) => n.waitFor((l) => l.type === "nodeUp" && l.node === "n4", 5_000, after.get(n))));
    for (const u of ups) expect(u.incarnation as number).toBeGreaterThan(old);
  });

  it("SIGTERM: the node leaves gracefully; every peer sees it at once (before any timeout could fire)", async () => {
    const victim = cluster.node("n4");
    const marks = cluster.marks();
    const t0 = performance.timeOrigin + performance.now();
    victim.proc?.kill("SIGTERM");
    const downs = await downSeen(others("n4"), "n4", marks);
    for (const d of downs) {
      expect(d.cause).toBe("left");
      expect(d.t - t0).toBeLessThan(LAN.lossTimeoutMs);
    }
    expect((await victim.proc?.exited)?.code).toBe(0);
    const after = cluster.marks();
    await cluster.restart(victim);
    await rejoined(after);
  });

  it("SIGSTOP: every survivor detects the frozen node; after SIGCONT it rejoins without blaming anyone", async () => {
    const victim = cluster.node("n3");
    const marks = cluster.marks();
    victim.proc?.stop();
    try {
      await downSeen(others("n3"), "n3", marks);
    } finally {
      victim.proc?.cont();
    }
    await rejoined(marks);
    const stall = await victim.waitFor((l) => l.type === "localStall", 5_000, marks.get(victim));
    expect(stall.reason).toMatch(/stalled/);
    // The frozen node did not declare its peers dead for its own silence.
    expect(victim.lines.slice(marks.get(victim)).filter((l: NodeLine) => l.type === "nodeDown")).toEqual([]);
  });

  it("link down on both networks: detected by every survivor; the node rejoins when the links return", async () => {
    const victim = cluster.node("n2");
    const marks = cluster.marks();
    await lab.linkDown(victim.host, 0);
    await lab.linkDown(victim.host, 1);
    try {
      await downSeen(others("n2"), "n2", marks);
    } finally {
      await lab.linkUp(victim.host, 0);
      await lab.linkUp(victim.host, 1);
    }
    await rejoined(marks);
  });

  it("one-way drop (n1 can receive but nothing it sends arrives): detected by every survivor, on both sides", async () => {
    const victim = cluster.node("n1");
    const marks = cluster.marks();
    for (const o of others("n1")) await lab.drop(victim.host, o.host, { oneWay: true });
    try {
      await downSeen(others("n1"), "n1", marks);
      // n1 still hears the others but is never echoed: it reports them lost as one-way.
      const seen = await Promise.all(others("n1").map((o) => victim.waitFor((l) => l.type === "nodeDown" && l.node === o.id, DETECT_MS + 5_000, marks.get(victim))));
      expect(seen.every((l) => l.cause === "oneWay")).toBe(true);
    } finally {
      await lab.heal();
    }
    await rejoined(marks);
  });

  it("cutting one of two heartbeat networks loses no node (the network is reported instead)", async () => {
    const victim = cluster.node("n0");
    const marks = cluster.marks();
    await lab.linkDown(victim.host, 0);
    try {
      await Promise.all(others("n0").map((o) => o.waitFor((l) => l.type === "networkDown" && l.node === "n0" && l.network === 0, 10_000, marks.get(o))));
      // Hold the cut for several loss timeouts: nobody may be declared down.
      const hold = cluster.marks();
      await new Promise((r) => setTimeout(r, 3_000)); // a duration under test, not a synchronisation
      for (const n of cluster.nodes) expect(n.lines.slice(hold.get(n)).filter((l) => l.type === "nodeDown")).toEqual([]);
    } finally {
      await lab.linkUp(victim.host, 0);
    }
    await Promise.all(others("n0").map((o) => o.waitFor((l) => l.type === "networkUp" && l.node === "n0", 10_000, marks.get(o))));
    for (const n of cluster.nodes) expect(n.lines.slice(marks.get(n)).filter((l) => l.type === "nodeDown")).toEqual([]);
  });

  it("malformed, unsigned and forged datagrams are dropped and counted; the process keeps running", async () => {
    const target = cluster.node("n0");
    const client = lab.clients[0];
    if (!client) throw new Error("no client");
    const addr = lab.addr(target.host, 0);
    // Send from the client namespace: garbage, a datagram with a valid header and no valid MAC, a huge one
    // (paced: the point is the parser, not the socket buffer).
    const script = `
      const s = require("node:dgram").createSocket("udp4");
      const msgs = [Buffer.from("hello"), Buffer.concat([Buffer.from([0x48,0x46,1]), Buffer.alloc(32), Buffer.from('{"k":"hb"}')])];
      let i = 0;
      const next = () => { if (i === 60) { s.send(Buffer.alloc(20000, 7), 4844, ${JSON.stringify(addr)}, () => s.close()); return; }
        s.send(msgs[i++ % 2], 4844, ${JSON.stringify(addr)}, () => setTimeout(next, 2)); };
      next();`;
    const r = await lab.exec(client, [process.execPath, "-e", script], { timeoutMs: 10_000 });
    expect(r.code).toBe(0);
    const mark = target.mark();
    let dropped: Record<string, number> = {};
    for (let attempt = 0; attempt < 50; attempt++) {
      const m = target.mark();
      target.proc?.kill("SIGUSR2");
      const c = await target.waitFor((l) => l.type === "counters", 5_000, m);
      dropped = c.dropped as Record<string, number>;
      if ((dropped.badMac ?? 0) >= 30 && (dropped.malformed ?? 0) >= 30 && (dropped.tooLarge ?? 0) >= 1) break;
      await new Promise((res) => setTimeout(res, 100)); // polling interval while the datagrams are read
    }
    expect(dropped.badMac).toBeGreaterThanOrEqual(30);
    expect(dropped.malformed).toBeGreaterThanOrEqual(30);
    expect(dropped.tooLarge).toBeGreaterThanOrEqual(1);
    // Still alive and still a member of an agreed 5-node view.
    expect(target.proc?.pid).toBeGreaterThan(0);
    expect(target.lines.slice(mark).some((l) => l.type === "nodeDown")).toBe(false);
  });
});
