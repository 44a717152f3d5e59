// The README's first command (`npm run demo`): a 3-node holdfast cluster in network namespaces on this
// machine. One node is killed; the others report it with the time it took; it comes back and rejoins.
// Everything is cleaned up at the end, also on failure or Ctrl-C. Needs root (namespaces).
import { Lab } from "../src/testing/lab.js";
import { LAN } from "../src/core/membership/config.js";
import { MembershipCluster } from "../test/lab/helpers/membership-cluster.js";

const now = () => performance.timeOrigin + performance.now();
const say = (s: string) => console.log(s);

if (process.getuid?.() !== 0) {
  console.error("demo: needs root (it creates network namespaces). Run: sudo npm run demo");
  process.exit(1);
}

const started = now();
say("holdfast demo: 3 nodes, 2 heartbeat networks, in network namespaces on this machine\n");
const lab = await Lab.create({ nodes: 3, clients: 0, networks: 2 });
let cluster: MembershipCluster | undefined;
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
  ok = true;
} catch (e) {
  console.error(`demo failed: ${(e as Error).message}`);
} finally {
  await cluster?.stop();
  await lab.destroy();
  say(`  cleaned up: namespaces of lab ${lab.prefix} deleted`);
}
say(ok ? `\ndemo finished in ${((now() - started) / 1000).toFixed(1)} s` : "\ndemo FAILED");
process.exit(ok ? 0 : 1);
