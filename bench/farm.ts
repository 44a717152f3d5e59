// bench:farm — the farm's data path and reconvergence, all in one run, in network namespaces.
//
//   npm run bench:farm [-- --seconds 4 --trials 10]
//
// 3 nodes + 2 client namespaces (c0 = the client, c1 = HAProxy). Every node runs the same HTTP app
// (bench/helpers/app.mts, :8080) and an iperf3 server (:5201). Measured with one TCP stream (iperf3) and with
// many connections (wrk, 32 keep-alive connections):
//   direct   — client to node n0's own address (no VIP, no flooding, no filter)
//   flooded  — the VIP with the shared MAC on every node (every frame flooded to all), no filter: only n0
//              accepts (a plain nftables accept/drop), the baseline of the *_ratio figures
//   ebpf / nftables / userspace — the farm run by the shipped daemon (`holdfast daemon`, dist/cli.js, one
//              config file per node) with each filter backend
//   haproxy  — HAProxy 2.6 (mode tcp, roundrobin) in c1 in front of the same three apps
// Then, with the eBPF farm: 3,000 requests from 60 client addresses (spread over nodes), and --trials node
// crashes (SIGKILL of the node's processes + its link down) with long-lived connections on the survivors:
// time until new connections are served again, and survivor connections broken.
// Prints a table, then one JSON object as the very last line.
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeFileSync, mkdirSync } from "node:fs";
import { Lab, type LabHost } from "../src/testing/lab.js";
import { FarmVip } from "../src/farm/vip.js";
import { MembershipCluster, REPO, type ClusterNode } from "../test/lab/helpers/membership-cluster.js";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "4" }, trials: { type: "string", default: "10" } } });
const SECS = Number(values.seconds);
const TRIALS = Number(values.trials);
const log = (s: string) => process.stderr.write(s + "\n");
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : (s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number);
};

const lab = await Lab.create({ nodes: 3, clients: 2, networks: 1 });
const [c0, c1] = lab.clients as [LabHost, LabHost];
const vip = lab.spareAddr(0);
const addrs = Array.from({ length: 60 }, (_, i) => lab.spareAddr(40 + i));
const MAC = "02:bf:00:00:00:64";
let cluster: MembershipCluster | undefined;

async function must(host: LabHost, script: string): Promise<string> {
  const r = await lab.sh(host, script);
  if (r.code !== 0) throw new Error(`${host.name}: ${script}: ${r.stderr}`);
  return r.stdout;
}
async function iperf(target: string): Promise<number> {
  const r = await lab.exec(c0, ["iperf3", "-c", target, "-p", "5201", "-t", String(SECS), "-J"], { timeoutMs: (SECS + 20) * 1000 });
  if (r.stdout.trim() === "") throw new Error(`iperf3 to ${target}: no output (code ${r.code}): ${r.stderr}`);
  const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  if (!j.end?.sum_received?.bits_per_second) throw new Error(`iperf3 to ${target}: ${j.error ?? r.stderr}`);
  return j.end.sum_received.bits_per_second / 1e9;
}
async function wrk(target: string): Promise<number> {
  const r = await lab.exec(c0, ["wrk", "-t2", "-c32", `-d${SECS}s`, `http://${target}:8080/`], { timeoutMs: (SECS + 20) * 1000 });
  const m = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout);
  const errs = /Socket errors: (.*)/.exec(r.stdout);
  if (!m) throw new Error(`wrk to ${target}: ${r.stdout} ${r.stderr}`);
  if (errs) log(`  wrk ${target}: socket errors: ${errs[1]}`);
  return Number(m[1]);
}

async function startFarm(backend: string): Promise<MembershipCluster> {
  // The app and iperf3 run on their own (no hooks): the daemon only moves the buckets.
  const c = await MembershipCluster.start(lab, {
    daemon: (h) => ({
      modules: [{ name: "web", kind: "farm", vips: [`${vip}/32`] }],
      farm: {
        web: {
          iface: "eth0",
          mac: MAC,
          backend,
          rules: [
            { protocol: "tcp", port: 8080, by: "address+port" },
            { protocol: "tcp", port: 5201, by: "address" }, // iperf3 opens several connections per test
          ],
        },
      },
      stateDir: join(lab.dir(h), `daemon-${backend}`, "state"),
      logDir: join(lab.dir(h), `daemon-${backend}`, "log"),
    }),
  });
  const three = await Promise.all(c.nodes.map((n) => n.waitFor((l) => l.type === "buckets" && (l.owners as string[]).length === 3, 30_000)));
  if (backend === "ebpf") {
    // Steady state: once the peers' held sets are in and the grace of the gains is over (~1 s), every owned bucket
    // is uncontested and the owner makes no per-packet socket lookup. Measured from there (a node that never
    // gets there is logged, and the run goes on, strict).
    const sole = (l: Record<string, unknown>) => (l.type === "buckets" || l.type === "contested") && (l.owned as number) > 0 && l.sole === l.owned;
    await Promise.all(c.nodes.map((n, i) => n.waitFor(sole, 10_000, n.lines.indexOf(three[i]!)).catch(() => log(`  ${n.id}: owned buckets still contested after 10 s`))));
  }
  return c;
}
async function stopFarm(c: MembershipCluster): Promise<void> {
  for (const n of c.nodes) n.proc?.kill("SIGTERM");
  await Promise.all(c.nodes.map((n) => n.proc?.exited));
  await c.stop();
}

const results: Record<string, { stream_gbps: number; conns_rps: number }> = {};
try {
  await must(c0, addrs.map((a) => `ip addr add ${a}/24 dev eth0`).join(" && "));
  for (const n of lab.nodes) {
    lab.spawn(n, [process.execPath, "--import", "tsx", join(REPO, "bench/helpers/app.mts"), n.name, "8080"], { cwd: REPO });
    lab.spawn(n, ["iperf3", "-s", "-p", "5201"]);
  }
  // Wait until every app and iperf3 server answers on its node's own address.
  for (const n of lab.nodes) {
    for (let i = 0; ; i++) {
      const r = await lab.exec(c0, ["curl", "-s", "-m", "1", `http://${lab.addr(n)}:8080/`]);
      const p = await lab.exec(n, ["bash", "-c", "ss -ltn | grep -q ':5201 '"]);
      if (r.code === 0 && p.code === 0) break;
      if (i > 100) throw new Error(`${n.name}: app or iperf3 not up`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  log("direct ...");
  results.direct = { stream_gbps: await iperf(lab.addr(lab.nodes[0]!)), conns_rps: await wrk(lab.addr(lab.nodes[0]!)) };

  log("flooded, no filter ...");
  const vips = lab.nodes.map((n) => new FarmVip({ iface: "eth0", addresses: [vip], mac: MAC, netns: `/run/netns/${n.ns}`, instance: "hfbench" }));
  for (const v of vips) await v.start();
  for (const [i, n] of lab.nodes.entries()) {
    const verdict = i === 0 ? "meta pkttype set host" : "drop";
    await must(n, `nft -f - <<'E'\ntable netdev hfflood {\n chain in { type filter hook ingress device eth0 priority -500; policy accept; ip daddr ${vip} ${verdict}; }\n}\nE`);
  }
  results.flooded = { stream_gbps: await iperf(vip), conns_rps: await wrk(vip) };
  for (const n of lab.nodes) await must(n, "nft delete table netdev hfflood");
  for (const v of vips) await v.stop();

  for (const backend of ["ebpf", "nftables", "userspace"]) {
    log(`farm, ${backend} ...`);
    cluster = await startFarm(backend);
    results[backend] = { stream_gbps: await iperf(vip), conns_rps: await wrk(vip) };
    if (backend !== "ebpf") {
      await stopFarm(cluster);
      cluster = undefined;
      continue;
    }
    // Spread and reconvergence on the eBPF farm.
    log("spread: 3,000 requests ...");
    const load = await lab.exec(c0, [process.execPath, "--import", "tsx", join(REPO, "test/lab/helpers/http-load.mts"), JSON.stringify({ vip, port: 8080, addresses: addrs, requests: 3000, concurrency: 16 })], { timeoutMs: 120_000 });
    const spread = JSON.parse(load.stdout.trim().split("\n").at(-1) as string) as { ok: number; byNode: Record<string, number> };
    const counts = Object.values(spread.byNode);
    (results as Record<string, unknown>).spread = { ok: spread.ok, byNode: spread.byNode, max_over_mean: Math.max(...counts) / (3000 / 3) };
    const reconverge: number[] = [];
    let survivorResets = 0;
    for (let t = 0; t < TRIALS; t++) {
      const victim = cluster.nodes[t % 3] as ClusterNode;
      // Short probes every 20 ms (new connections) and 12 long-lived streams, from 60 client addresses.
      const probe = lab.spawn(c0, [process.execPath, "--import", "tsx", join(REPO, "test/lab/helpers/http-probe.mts"), JSON.stringify({ vip, port: 8080, addresses: addrs, streams: 12, streamMs: 3000, probeEveryMs: 20, probeTimeoutMs: 250, durationMs: 3000 })], { cwd: REPO });
      const lines: { type: string; t?: number; ok?: boolean; node?: string; complete?: boolean }[] = [];
      const done = (async () => {
        for await (const raw of probe.lines()) lines.push(JSON.parse(raw) as (typeof lines)[number]);
      })();
      for (let i = 0; i < 200 && lines.filter((l) => l.type === "streamStart").length < 12; i++) await new Promise((r) => setTimeout(r, 25));
      const tFault = Date.now();
      lab.signalHost(victim.host, "SIGKILL");
      await lab.linkDown(victim.host, 0);
      await done;
      const fails = lines.filter((l) => l.type === "probe" && !l.ok && (l.t as number) >= tFault).map((l) => l.t as number);
      reconverge.push(fails.length ? Math.max(...fails) + 250 - tFault : 0);
      const broken = lines.filter((l) => l.type === "stream" && l.node !== undefined && l.node !== victim.id && !l.complete).length;
      survivorResets += broken;
      await lab.linkUp(victim.host, 0);
      // Restart the node's app, iperf3 and farm process, and wait until all three serve again.
      lab.spawn(victim.host, [process.execPath, "--import", "tsx", join(REPO, "bench/helpers/app.mts"), victim.id, "8080"], { cwd: REPO });
      lab.spawn(victim.host, ["iperf3", "-s", "-p", "5201"]);
      const back = cluster.marks();
      await cluster.restart(victim);
      await Promise.all(cluster.nodes.map((n) => n.waitFor((l) => l.type === "buckets" && (l.owners as string[]).length === 3, 30_000, back.get(n))));
      log(`  trial ${t + 1}/${TRIALS}: ${victim.id} crashed, served again after ${reconverge.at(-1)} ms; ${survivorResets} survivor connection(s) broken so far`);
    }
    (results as Record<string, unknown>).reconverge = { samples_ms: reconverge, p99_ms: pct(reconverge, 99) };
    (results as Record<string, unknown>).survivor_resets = survivorResets;
    await stopFarm(cluster);
    cluster = undefined;
  }

  log("haproxy ...");
  const hcfg = `global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n` +
    `frontend web\n  bind ${lab.addr(c1)}:8080\n  default_backend apps\nbackend apps\n  balance roundrobin\n` +
    lab.nodes.map((n) => `  server ${n.name} ${lab.addr(n)}:8080\n`).join("") +
    `frontend perf\n  bind ${lab.addr(c1)}:5201\n  default_backend perfs\nbackend perfs\n  balance source\n` +
    lab.nodes.map((n) => `  server ${n.name} ${lab.addr(n)}:5201\n`).join("");
  const hdir = lab.dir(c1);
  mkdirSync(hdir, { recursive: true });
  writeFileSync(join(hdir, "haproxy.cfg"), hcfg);
  const hp = lab.spawn(c1, ["haproxy", "-db", "-f", join(hdir, "haproxy.cfg")]);
  for (let i = 0; (await lab.exec(c0, ["curl", "-s", "-m", "1", `http://${lab.addr(c1)}:8080/`])).code !== 0; i++) {
    if (i > 100) throw new Error("haproxy does not answer");
    await new Promise((r) => setTimeout(r, 100));
  }
  results.haproxy = { stream_gbps: await iperf(lab.addr(c1)), conns_rps: await wrk(lab.addr(c1)) };
  hp.kill("SIGKILL");
} finally {
  if (cluster) await cluster.stop();
  await lab.destroy();
}

const r = results as Record<string, { stream_gbps: number; conns_rps: number }> & Record<string, unknown>;
const base = r.flooded!.stream_gbps;
const spread = r.spread as unknown as { max_over_mean: number; byNode: Record<string, number> };
const recon = r.reconverge as unknown as { samples_ms: number[]; p99_ms: number };
const out = {
  bench: "farm",
  ebpf_ratio: round(r.ebpf!.stream_gbps / base),
  nft_ratio: round(r.nftables!.stream_gbps / base),
  userspace_ratio: round(r.userspace!.stream_gbps / base),
  vs_direct_ratio: round(r.ebpf!.stream_gbps / r.direct!.stream_gbps),
  haproxy_ratio: round(r.ebpf!.conns_rps / r.haproxy!.conns_rps),
  reconverge_p99_ms: recon.p99_ms,
  survivor_resets: r.survivor_resets as unknown as number,
  spread_max_over_mean: round(spread.max_over_mean),
};
function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
const rows = ["direct", "flooded", "ebpf", "nftables", "userspace", "haproxy"].map((k) => {
  const v = r[k] as { stream_gbps: number; conns_rps: number };
  return `| ${k.padEnd(9)} | ${v.stream_gbps.toFixed(2).padStart(8)} | ${(v.stream_gbps / base).toFixed(3).padStart(6)} | ${Math.round(v.conns_rps).toString().padStart(8)} | ${(v.conns_rps / r.flooded!.conns_rps).toFixed(3).padStart(6)} |`;
});
console.log("\n| path      | 1 stream Gbit/s | /flooded | many conns req/s | /flooded |\n|-----------|----------|--------|----------|--------|");
for (const row of rows) console.log(row);
console.log(`\nspread over nodes (3,000 requests, address+port): ${JSON.stringify(spread.byNode)}, max/mean ${out.spread_max_over_mean}`);
console.log(`reconvergence after a node crash (${recon.samples_ms.length} trials): p99 ${recon.p99_ms} ms, samples ${recon.samples_ms.join(", ")} ms`);
mkdirSync(join(REPO, "bench/results"), { recursive: true });
writeFileSync(join(REPO, "bench/results/farm.json"), JSON.stringify({ ...out, detail: results }, null, 2) + "\n");
console.log(JSON.stringify(out));
