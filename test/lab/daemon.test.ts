/**
 * Three `holdfast daemon` processes in network namespaces: a farm module on all three and a mirror module
 * (no replicated data) on n0 and n1, every hook a small shell script. Checked through the `holdfast` CLI
 * run inside the nodes' namespaces against the real HTTP API: states and exit codes, a swap, refusals
 * without a token and with a monitor token, `--all`, a failover after kill -9, metrics, and a clean
 * SIGTERM shutdown that runs the stop hooks.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DaemonCluster, until as untilShared } from "../../examples/daemon/lab-cluster.js";
import type { ClusterState } from "../../examples/daemon/daemon.js";
import { Lab } from "../../src/testing/lab.js";

const isRoot = process.getuid?.() === 0;
let lab: Lab;
let cluster: DaemonCluster;

/** Polls as the shared until() does, with this file's 20 s default bound. */
const until = <T>(what: string, f: () => Promise<T | undefined>, ms = 20_000): Promise<T> => untilShared(what, f, ms, 200);

async function stateOf(node: string, token = cluster.tokens.monitor): Promise<ClusterState> {
  const r = await cluster.cli(cluster.node(node), ["state", "--json"], { token });
  if (r.stdout.trim() === "") throw new Error(`state on ${node}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as ClusterState;
}

const own = (s: ClusterState, module: string) => s.nodes.find((n) => n.self)?.modules[module];

/** Which of n0, n1 hold the mirror's VIP (iproute2 in their namespaces). */
async function vipHolders(): Promise<string[]> {
  const out: string[] = [];
  for (const id of ["n0", "n1"]) {
    const r = await lab.exec(lab.host(id), ["ip", "-j", "addr", "show"]);
    if ((JSON.parse(r.stdout) as { addr_info?: { local: string }[] }[]).some((l) => l.addr_info?.some((a) => a.local === lab.spareAddr(0)))) out.push(id);
  }
  return out;
}

describe.skipIf(!isRoot)("holdfast daemons in namespaces", () => {
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 3, clients: 0, networks: 1 });
    cluster = await DaemonCluster.start(lab, {
      modules: (dir, node) => [
        { name: "web", kind: "farm", hooks: { start_both: `${dir}/hooks/start_both.sh`, stop_both: `${dir}/hooks/stop_both.sh` } },
        ...(node === "n2"
          ? []
          : [
              {
                name: "db",
                kind: "mirror",
                mirror: { defaultPrimary: "n0" },
                vips: [`${lab.spareAddr(0)}/24`],
                hooks: Object.fromEntries(["start_prim", "stop_prim", "start_second", "stop_second"].map((h) => [h, `${dir}/hooks/${h}.sh`])),
              },
            ]),
      ],
      replication: (node) => (node === "n2" ? undefined : { db: { mode: "none" } }),
    }).catch(async (e: unknown) => {
      await lab.destroy();
      throw e;
    });
  });

  afterAll(async () => {
    await cluster?.stop();
    await lab?.destroy();
  });

  it("forms the cluster: web UP on every node, db PRIM on n0 and SECOND on n1", async () => {
    const s = await until("web UP everywhere and db roles", async () => {
      const s = await stateOf("n0");
      const ok =
        s.view.members.length === 3 &&
        s.nodes.every((n) => n.modules.web?.state === "UP" && n.modules.web.ready) &&
        s.nodes.find((n) => n.id === "n0")?.modules.db?.state === "PRIM" &&
        s.nodes.find((n) => n.id === "n1")?.modules.db?.state === "SECOND";
      return ok ? s : undefined;
    });
    expect(s.nodes.map((n) => n.id)).toEqual(["n0", "n1", "n2"]);
    expect(await vipHolders()).toEqual(["n0"]);
    expect(readFileSync(join(cluster.dir, "n0.events"), "utf8")).toMatch(/n0 db start_prim \S+ -> (PRIM|ALONE)/);
    expect(readFileSync(join(cluster.dir, "n1.events"), "utf8")).toMatch(/n1 db start_second \S+ -> SECOND/);
  });

  it("holdfast state: a table, and an exit code per state (0 serving, 1 SECOND)", async () => {
    await until("db SECOND ready on n1", async () => (own(await stateOf("n1"), "db")?.ready ? true : undefined));
    const r0 = await cluster.cli(cluster.node("n0"), ["state"], { token: cluster.tokens.monitor });
    expect(r0.code).toBe(0);
    expect(r0.stdout).toMatch(/^NODE\s+MODULE\s+STATE\s+READY\s+REASON/m);
    expect(r0.stdout).toMatch(/^n0\s+db\s+PRIM\s+ready/m);
    expect(r0.stdout).toMatch(/^n1\s+db\s+SECOND\s+ready/m);
    const r1 = await cluster.cli(cluster.node("n1"), ["state", "db"], { token: cluster.tokens.monitor });
    expect(r1.code).toBe(1);
    const all = await cluster.cli(cluster.node("n2"), ["state", "web", "--all", "--config", cluster.node("n2").config], { token: cluster.tokens.monitor });
    expect(all.code).toBe(0);
    expect(all.stdout.match(/^n[012]\s+web\s+UP\s+ready/gm)).toHaveLength(3);
  });

  it("refuses a command without a token (401) and with a monitor token (403); the module is untouched", async () => {
    const none = await cluster.cli(cluster.node("n2"), ["stop", "web"]);
    expect(none.code).toBe(10);
    expect(none.stderr).toMatch(/401/);
    const mon = await cluster.cli(cluster.node("n2"), ["stop", "web"], { token: cluster.tokens.monitor });
    expect(mon.code).toBe(10);
    expect(mon.stderr).toMatch(/403/);
    expect(own(await stateOf("n2"), "web")).toMatchObject({ state: "UP", ready: true });
  });

  it("swaps the mirror through the CLI: n1 becomes PRIM, n0 SECOND, hooks in order", async () => {
    const r = await cluster.cli(cluster.node("n1"), ["swap", "db"], { token: cluster.tokens.control });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/swap db: accepted/);
    await until("roles swapped", async () => {
      const s = await stateOf("n0");
      const n0 = s.nodes.find((n) => n.id === "n0")?.modules.db;
      const n1 = s.nodes.find((n) => n.id === "n1")?.modules.db;
      return n0?.state === "SECOND" && n0.ready && n1?.state === "PRIM" && n1.ready ? true : undefined;
    });
    const n0 = readFileSync(join(cluster.dir, "n0.events"), "utf8");
    const n1 = readFileSync(join(cluster.dir, "n1.events"), "utf8");
    expect(n0).toMatch(/n0 db stop_prim PRIM -> \S+/);
    expect(n1).toMatch(/n1 db start_prim \S+ -> (PRIM|ALONE)/);
    const stopAt = Number(/(\S+) n0 db stop_prim/.exec(n0)?.[1]);
    const startAt = Number([...n1.matchAll(/(\S+) n1 db start_prim/g)].at(-1)?.[1]);
    expect(stopAt).toBeLessThan(startAt); // the old primary stops its app before the new one starts it
    expect(await vipHolders()).toEqual(["n1"]);
    const logs = await cluster.cli(cluster.node("n1"), ["logs", "db", "-n", "50"], { token: cluster.tokens.monitor });
    expect(logs.code).toBe(0);
    expect(logs.stdout).toMatch(/n1 db command swap/);
  });

  it("fails over when the primary's daemon is killed: n1's peer n0 takes over as ALONE", async () => {
    // db is PRIM on n1 now; kill n1's whole process group (a crash: no stop hook).
    // n0's daemon output from the kill on: the line where db becomes ALONE and ready gives the time.
    let after = "";
    const collect = (c: Buffer) => void (after += String(c));
    const n0proc = cluster.node("n0").proc;
    n0proc?.stdout.on("data", collect);
    const killedAt = Date.now();
    cluster.node("n1").proc?.kill("SIGKILL");
    await cluster.node("n1").proc?.exited;
    const aloneTs = await until("n0 prints db ALONE and ready", async () => {
      for (const l of after.split("\n")) {
        if (!l.includes('"ALONE"')) continue;
        const o = JSON.parse(l) as { ts: string; module?: string; state?: string; ready?: boolean; transient?: boolean };
        if (o.module === "db" && o.state === "ALONE" && o.ready && !o.transient) return Date.parse(o.ts);
      }
      return undefined;
    });
    n0proc?.stdout.off("data", collect);
    const failoverMs = aloneTs - killedAt;
    console.info(`daemon failover (kill -9 of the primary's daemon -> peer ALONE and ready, hooks included): ${failoverMs} ms`);
    expect(failoverMs).toBeLessThan(5_000);
    const s = await until("n0 ALONE", async () => {
      const s = await stateOf("n0");
      return own(s, "db")?.state === "ALONE" && own(s, "db")?.ready ? s : undefined;
    });
    expect(s.nodes.find((n) => n.id === "n1")?.up).toBe(false);
    // n1's namespace outlives its daemon (a crash leaves the address): both hold it until n1's daemon restarts.
    expect(await vipHolders()).toEqual(["n0", "n1"]);
    const m = await cluster.cli(cluster.node("n0"), ["state", "db"], { token: cluster.tokens.monitor });
    expect(m.code).toBe(0);
    const metrics = await lab.exec(cluster.node("n0").host, ["curl", "-s", "-H", `Authorization: Bearer ${cluster.tokens.monitor}`, `${cluster.node("n0").url}/metrics`]);
    expect(metrics.stdout).toMatch(/holdfast_module_failovers_total\{node="n0",module="db"\} 1/);
    expect(metrics.stdout).toMatch(/holdfast_node_up\{node="n0",peer="n1"\} 0/);
    // The health URL follows: 200 on the new primary.
    const h = await lab.exec(cluster.node("n0").host, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", `${cluster.node("n0").url}/health/db`]);
    expect(h.stdout).toBe("200");
    // n1 comes back and rejoins as SECOND.
    await cluster.startNode(cluster.node("n1"));
    await until("n1 SECOND again", async () => (own(await stateOf("n1"), "db")?.state === "SECOND" ? true : undefined));
    expect(await vipHolders()).toEqual(["n0"]); // the restarted daemon removed the stale VIP before starting
  });

  it("bundles a support snapshot of every node (admin only) into one tar.gz", async () => {
    const out = join(cluster.dir, "snap.tar.gz");
    const args = ["snapshot", "--all", "--config", cluster.node("n0").config, "-o", out];
    const refused = await cluster.cli(cluster.node("n0"), args, { token: cluster.tokens.control });
    expect(refused.code).toBe(10);
    const r = await cluster.cli(cluster.node("n0"), args, { token: cluster.tokens.admin });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const list = (await lab.exec(cluster.node("n0").host, ["tar", "tzf", out])).stdout.split("\n");
    for (const n of ["n0", "n1", "n2"]) {
      expect(list.some((f) => f.endsWith(`/${n}/state.json`))).toBe(true);
      expect(list.some((f) => f.endsWith(`/${n}/logs/web.jsonl`))).toBe(true);
      expect(list.some((f) => f.endsWith(`/${n}/config.redacted.json`))).toBe(true);
    }
    const cfg = (await lab.exec(cluster.node("n0").host, ["sh", "-c", `tar xzOf ${out} --wildcards '*/n1/config.redacted.json'`])).stdout;
    expect(cfg).toContain("(redacted)");
    expect(cfg).not.toMatch(/[0-9a-f]{64}/);
  });

  it("stops cleanly on SIGTERM: stop hooks run, exit 0", async () => {
    const n2 = cluster.node("n2");
    n2.proc?.kill("SIGTERM");
    const x = await n2.proc?.exited;
    expect(x?.code).toBe(0);
    expect(readFileSync(join(cluster.dir, "n2.events"), "utf8")).toMatch(/n2 web stop_both UP -> STOP/);
    n2.proc = null;
    const s = await until("n2 out of n0's view", async () => {
      const s = await stateOf("n0");
      return s.view.members.includes("n2") ? undefined : s;
    });
    const n2s = s.nodes.find((n) => n.id === "n2");
    expect(n2s?.up).toBe(false);
    expect(Object.keys(n2s?.modules ?? {})).toEqual(["web"]); // as n2 last advertised (it runs no db)
    expect(n2s?.modules.web?.state).toBe("STOP");
  });
});
