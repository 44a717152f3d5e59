// bench:peers — the holdfast side: the shipped daemon (dist/cli.js) with a mirror module on the lab's two nodes
// (the record app started by its start_prim hook; no witness unless asked). Failover trials with the same faults and the same probe as
// keepalived (peers-keepalived.ts), then data-loss trials with the same writer as lsyncd (peers-lsyncd.ts).
// Roles alternate: after each trial the old primary is started again, resynced, and becomes the secondary.
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, LabHost, LabProcess } from "../../src/testing/lab.js";
import { MembershipCluster, type ClusterNode, type NodeLine } from "../../test/lab/helpers/membership-cluster.js";
import { measureFailover, until } from "./peers-failover.js";
import { mirrorDaemonConfig } from "./mirror-daemon.js";
import { idsIn, localRate, rate, RECORD_BYTES, startWriter, type Ack, type LossTrial } from "./peers-lsyncd.js";
import type { Fault } from "./peers-keepalived.js";

const REPL_PORT = 7790;
const settled = (state: string) => (l: NodeLine) => l.type === "state" && l.state === state && l.ready === true && l.transient === false;

export interface MirrorResults {
  /** Fault -> VIP answered by the other node, ms. */
  failover: Record<Fault, number[]>;
  /** Fault -> the new primary's app started (start_prim hook done), ms: the part of the failover that is the app's. */
  appStart: Record<Fault, number[]>;
  loss: LossTrial[];
  /** Trials whose rejoin was a split brain, resolved by `second` on the old primary (see `restore`), per fault. */
  splitBrainsResolved: Record<Fault | "both", number>;
}

/** UDP port of the witness arbiter (examples/witness.ts) in the client namespace, with `witness`. */
const ARBITER_PORT = 7799;

/**
 * `witness`: the nodes hold the witness arbiter's lease (`--arbiter`, examples/witness.ts in the client namespace,
 * which every fault here leaves reachable by the survivor): the recommended setup, split-brain safe. A primary whose
 * link goes down then loses the witness too and steps down, and the survivor takes over once the lease lapsed.
 */
export async function mirrorTrials(lab: Lab, repo: string, vip: string, o: { failoverTrials: number; lossTrials: number; witness?: boolean }, log: (s: string) => void): Promise<MirrorResults> {
  const [n0, n1] = lab.nodes as [LabHost, LabHost];
  const client = lab.clients[0] as LabHost;
  const dir = (h: LabHost) => join(lab.dir(h), "mirror");
  for (const h of [n0, n1]) {
    rmSync(dir(h), { recursive: true, force: true });
    mkdirSync(dir(h), { recursive: true });
  }
  const key = join(lab.dir(n0), "repl.key");
  writeFileSync(key, randomBytes(32), { mode: 0o600 });
  const out: MirrorResults = { failover: { kill: [], link: [] }, appStart: { kill: [], link: [] }, loss: [], splitBrainsResolved: { kill: 0, link: 0, both: 0 } };
  let cluster: MembershipCluster | undefined;
  let witness: LabProcess | undefined;
  const arbiterAt = `${lab.addr(client)}:${ARBITER_PORT}`;
  try {
    if (o.witness) {
      // Max ttl 3 s (the nodes ask for 1 s): a witness just started grants nothing for that long.
      witness = lab.spawn(client, [process.execPath, "--import", "tsx", join(repo, "examples/witness.ts"), "--listen", arbiterAt, "--key", key, "--max-ttl-ms", "3000"], { cwd: repo });
      await witness.waitForLine(/"type":"ready"/, 30_000);
    }
    // The shipped daemon on each node (dist/cli.js, a config file per node), the record app started by start_prim.
    cluster = await MembershipCluster.start(lab, {
      daemon: mirrorDaemonConfig({ lab, vip, key, dir, replPort: REPL_PORT, appPort: 80, recordBytes: RECORD_BYTES, ...(o.witness ? { arbiter: arbiterAt } : {}) }),
    });
    const c = cluster;
    let prim: ClusterNode = c.node(n0.name);
    let sec: ClusterNode = c.node(n1.name);
    await prim.waitFor(settled("PRIM"), 60_000, 0, "first primary");
    await sec.waitFor(settled("SECOND"), 60_000, 0, "secondary in sync");
    // Trials start once the primary holds the lease (a witness just started grants nothing for its max ttl).
    if (o.witness) await prim.waitFor((l) => l.type === "checker" && l.checker === "witness" && l.ok === true, 30_000, 0, "primary holds the witness lease");

    /**
     * Brings the failed primary back (killed first if it is still alive), resynced, as the secondary; swaps roles.
     * After a link-down trial the cut-off primary has lost its secondary and, with no witness, went on ALONE (it
     * cannot tell a dead peer from a cut cable): both nodes acknowledged writes alone as far as the engine knows, and
     * it holds the rejoin as a split brain for an operator. The operator's decision is scripted here: `second` on
     * the old primary (its link was down, so no client reached it: it discards nothing a client was told). With a
     * witness this does not happen (bench:mirror --witness, and the chaos suite). After a kill it happens only if
     * the primary died within milliseconds of becoming PRIM, before its store had the cleared alone-writes flag
     * (seen once, in a loop that killed at the very instant of PRIM); counted per fault all the same.
     */
    const restore = async (fault: Fault | "both") => {
      if (fault === "link") lab.signalHost(prim.host, "SIGKILL");
      await prim.proc?.exited;
      if (fault !== "kill") await lab.linkUp(prim.host);
      const m0 = prim.mark();
      const m1 = sec.mark();
      await c.restart(prim);
      {
        const first = await prim.waitFor((l) => settled("SECOND")(l) || (l.type === "decision" && String(l.cause).startsWith("split brain with")), 90_000, m0, "old primary back: SECOND or a split brain");
        if (first.type === "decision") {
          await c.command(prim, "db", "second"); // rejects when refused or not answered
          out.splitBrainsResolved[fault]++;
        }
      }
      await prim.waitFor(settled("SECOND"), 90_000, m0, "old primary back in sync");
      await sec.waitFor(settled("PRIM"), 30_000, m1, "PRIM again");
      [prim, sec] = [sec, prim];
    };

    for (const fault of ["kill", "link"] as const) {
      for (let t = 0; t < o.failoverTrials; t++) {
        const m = sec.mark();
        const victim = prim.host;
        const { ms, tFault } = await measureFailover({
          lab,
          repo,
          client,
          vip,
          port: 80,
          from: prim.id,
          to: sec.id,
          limitMs: 20_000,
          fault: async () => {
            if (fault === "kill") lab.signalHost(victim, "SIGKILL");
            else await lab.linkDown(victim);
          },
        });
        await sec.waitFor(settled("ALONE"), 20_000, m, "takeover");
        const app = sec.lines.slice(m).find((l) => l.type === "hook" && l.hook === "start_prim" && l.ok === true);
        const appMs = app ? Math.round(app.t - tFault) : NaN;
        out.failover[fault].push(ms);
        out.appStart[fault].push(appMs);
        log(`  holdfast ${fault} ${t + 1}/${o.failoverTrials}: ${prim.id} -> ${sec.id} answered after ${ms} ms (app started at ${appMs} ms)`);
        await restore(fault);
      }
    }

    let nextId = 1;
    for (let t = 0; t < o.lossTrials; t++) {
      const runMs = 3000 + t * 1000;
      const local = await localRate(lab, repo, 2000, 800_000_000 + t * 100_000);
      const m = sec.mark();
      const w = startWriter(lab, repo, client, vip, 80, nextId);
      nextId += 1_000_000;
      await until(() => w.acks.length > 0 && Date.now() - (w.acks[0] as Ack).t >= runMs, runMs + 20_000, "writer acknowledged for runMs");
      lab.signalHost(prim.host, "SIGKILL");
      await lab.linkDown(prim.host);
      w.proc.kill("SIGKILL");
      await w.done;
      await sec.waitFor(settled("ALONE"), 20_000, m, "takeover");
      const have = idsIn(join(dir(sec.host), "data", "records.log"));
      const trial: LossTrial = { acked: w.acks.length, lost: w.acks.filter((x) => !have.has(x.acked)).length, rate: rate(w.acks), runMs, localRate: local };
      out.loss.push(trial);
      log(`  holdfast loss ${t + 1}/${o.lossTrials}: ${trial.acked} acked in ${runMs} ms (${trial.rate.toFixed(0)}/s; ${local.toFixed(0)}/s without replication just before), ${trial.lost} missing on ${sec.id}`);
      await restore("both");
    }
  } finally {
    await cluster?.stop();
    witness?.kill("SIGTERM");
  }
  return out;
}
