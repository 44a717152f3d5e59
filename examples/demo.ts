// The README's first command (`npm run demo`): a 3-node holdfast cluster in network namespaces on this
// machine. One node is killed; the others report it with the time it took; it comes back and rejoins.
// Everything is cleaned up at the end, also on failure or Ctrl-C. Needs root (namespaces).
import { Lab } from "../src/testing/lab.js";
import { LAN } from "../src/core/membership/config.js";
import { MembershipCluster } from "../test/lab/helpers/membership-cluster.js";
import { join } from "node:path";
import { DaemonCluster, REPO, writeHttpAppHooks } from "./daemon/lab-cluster.js";
import type { ClusterState } from "./daemon/daemon.js";

const now = () => performance.timeOrigin + performance.now();
const say = (s: string) => console.log(s);

if (process.getuid?.() !== 0) {
  console.error("demo: needs root (it creates network namespaces). Run: sudo npm run demo");
  process.exit(1);
}

const started = now();
say("holdfast demo: 3 nodes, 2 heartbeat networks, in network namespaces on this machine\n");
const lab = await Lab.create({ nodes: 3, clients: 1, networks: 2 });
let cluster: MembershipCluster | undefined;
let daemons: DaemonCluster | undefined;
let ok = false;
try {
  say(`  lab ${lab.prefix}: nodes ${lab.nodes.map((n) => `${n.name}=${lab.addr(n, 0)},${lab.addr(n, 1)}`).join("  ")}`);
  cluster = await MembershipCluster.start(lab, { networks: 2 });
  const ids = cluster.nodes.map((n) => n.id);
  const t0 = now();
  await cluster.waitView(cluster.nodes, ids, 30_000);
  say(`  cluster formed: every node agrees on [${ids.join(", ")}] (${Math.round(now() - t0)} ms after start)`);
  say(`  preset LAN: heartbeat every ${LAN.pulseMs} ms on each network, a node is lost after ${LAN.lossTimeoutMs} ms of silence on all networks\n`);

  const victim = cluster.node("n2");
  const survivors = cluster.nodes.filter((n) => n !== victim);
  const marks = cluster.marks();
  say(`  >> kill -9 ${victim.id} (pid ${victim.proc?.pid})`);
  const k = now();
  victim.proc?.kill("SIGKILL");
  const downs = await Promise.all(survivors.map((n) => n.waitFor((l) => l.type === "nodeDown" && l.node === victim.id, 10_000, marks.get(n))));
  downs.forEach((d, i) => say(`     ${survivors[i]?.id} reports ${victim.id} lost after ${Math.round(d.t - k)} ms: ${d.reason}`));
  await cluster.waitView(survivors, survivors.map((n) => n.id), 10_000, marks);
  say(`     survivors agree on [${survivors.map((n) => n.id).join(", ")}]\n`);

  say(`  >> restart ${victim.id}`);
  const after = cluster.marks();
  const r = now();
  await cluster.restart(victim);
  await cluster.waitView(cluster.nodes, ids, 30_000, after);
  say(`     ${victim.id} rejoined: every node agrees on [${ids.join(", ")}] again (${Math.round(now() - r)} ms including process start)\n`);

  // Part 2: the reference daemon with modules whose hooks are shell scripts, driven through the CLI.
  await cluster.stop();
  cluster = undefined;
  const vip = lab.spareAddr(0);
  const client = lab.clients[0]!;
  say(`  >> 3 holdfast daemons: farm module web (HTTP app, VIP ${vip} on every node, in-kernel filter), mirror module db on n0 + n1`);
  daemons = await DaemonCluster.start(lab, {
    modules: (dir, node) => [
      { name: "web", kind: "farm", vips: [`${vip}/32`], hooks: (({ start, stop }) => ({ start_both: start, stop_both: stop }))(writeHttpAppHooks(dir)) },
      ...(node === "n2" ? [] : [{ name: "db", kind: "mirror", mirror: { defaultPrimary: "n0" }, hooks: Object.fromEntries(["start_prim", "stop_prim", "start_second", "stop_second"].map((h) => [h, `${dir}/hooks/${h}.sh`])) }]),
    ],
    replication: (node) => (node === "n2" ? undefined : { db: { mode: "none" } }),
    extra: { farm: { web: { iface: "eth0", rules: [{ protocol: "tcp", port: 8080, by: "address+port" }] } } },
  });
  // The client: a burst of requests to the VIP, each on a new connection, answered by whichever node owns it.
  const burst = async (n: number) => {
    const r = await lab.sh(client, `for i in $(seq 1 ${n}); do curl -s -m 0.5 http://${vip}:8080/ || echo FAIL; done`);
    const counts: Record<string, number> = {};
    for (const l of r.stdout.trim().split("\n")) counts[l] = (counts[l] ?? 0) + 1;
    return counts;
  };
  for (const end = now() + 30_000; ; await new Promise((r) => setTimeout(r, 200))) {
    const c = await burst(30);
    if (!c.FAIL && Object.keys(c).length === 3) break;
    if (now() > end) throw new Error(`the farm does not serve on all nodes: ${JSON.stringify(c)}`);
  }
  say(`     client -> ${vip}:8080, 60 requests: ${JSON.stringify(await burst(60))}`);
  say(`  >> n2's network cables pulled (link down on both networks), while the client opens a connection every 20 ms`);
  // The client probes with a new connection every 20 ms (250 ms timeout) from 60 source addresses.
  const addrs = Array.from({ length: 60 }, (_, i) => lab.spareAddr(40 + i));
  await lab.sh(client, addrs.map((a) => `ip addr add ${a}/24 dev eth0`).join(" && "));
  const probe = lab.spawn(client, [process.execPath, "--import", "tsx", join(REPO, "test/lab/helpers/http-probe.mts"), JSON.stringify({ vip, port: 8080, addresses: addrs, streams: 0, streamMs: 0, probeEveryMs: 20, probeTimeoutMs: 250, durationMs: 3000 })], { cwd: REPO });
  const probes: { type: string; t?: number; ok?: boolean }[] = [];
  const probed = (async () => {
    for await (const raw of probe.lines()) probes.push(JSON.parse(raw) as (typeof probes)[number]);
  })();
  await new Promise((r) => setTimeout(r, 300)); // let the probes start before the cut (they are the measurement)
  const cut = Date.now();
  await lab.linkDown(lab.nodes[2]!, 0);
  await lab.linkDown(lab.nodes[2]!, 1);
  await probed;
  const failed = probes.filter((x) => x.type === "probe" && !x.ok && (x.t as number) >= cut).map((x) => x.t as number);
  const servedAfter = failed.length ? Math.max(...failed) + 250 - cut : 0;
  say(`     ${failed.length} of ${probes.filter((x) => x.type === "probe" && (x.t as number) >= cut).length} new connections failed; every one served by the survivors again ${servedAfter} ms after the cut: ${JSON.stringify(await burst(30))}`);
  await lab.linkUp(lab.nodes[2]!, 0);
  await lab.linkUp(lab.nodes[2]!, 1);
  const back = now();
  for (const end = now() + 20_000; now() < end; await new Promise((r) => setTimeout(r, 100))) {
    const c = await burst(30);
    if (!c.FAIL && c.n2) break;
  }
  say(`  >> cables back: n2 serves its share again after ${Math.round(now() - back)} ms: ${JSON.stringify(await burst(60))}\n`);
  const d = daemons;
  const [d0, d1] = [d.node("n0"), d.node("n1")];
  const db = async (want: Record<string, string>) => {
    for (const end = now() + 20_000; now() < end; await new Promise((r) => setTimeout(r, 100))) {
      const s = JSON.parse((await d.cli(d0, ["state", "--json"], { token: d.tokens.monitor })).stdout || "{}") as ClusterState;
      if (Object.entries(want).every(([n, st]) => s.nodes?.find((x) => x.id === n)?.modules.db?.state === st && s.nodes.find((x) => x.id === n)?.modules.db?.ready)) return;
    }
    throw new Error(`db did not reach ${JSON.stringify(want)}`);
  };
  await db({ n0: "PRIM", n1: "SECOND" });
  say((await d.cli(d0, ["state"], { token: d.tokens.monitor })).stdout.trimEnd().replace(/^/gm, "     "));
  say(`  >> holdfast swap db (on n1, control token)`);
  const sw = now();
  await d.cli(d1, ["swap", "db"], { token: d.tokens.control });
  await db({ n0: "SECOND", n1: "PRIM" });
  say(`     db is PRIM on n1 and SECOND on n0 after ${Math.round(now() - sw)} ms (CLI start included)`);
  say(`  console: ${d0.url}/ (inside the lab network; token ${d.tokens.monitor.slice(0, 6)}..., monitor role)\n`);
  ok = true;
} catch (e) {
  console.error(`demo failed: ${(e as Error).message}`);
} finally {
  await cluster?.stop();
  await daemons?.stop();
  await lab.destroy();
  say(`  cleaned up: namespaces of lab ${lab.prefix} deleted`);
}
say(ok ? `\ndemo finished in ${((now() - started) / 1000).toFixed(1)} s` : "\ndemo FAILED");
process.exit(ok ? 0 : 1);
