/**
 * Only the daemon dies: `kill -9` of the holdfast daemon on a mirror primary (replicated data, `mode: sync`),
 * while the node and the record app its `start_prim` hook started stay alive. The daemon's hook guard (which kills
 * the app the moment the daemon dies: test/lab/daemon-mirror-postgres-orphan.test.ts) is killed with it here, so
 * the app is an orphan still listening; the restarted daemon kills it (named in the module's log) before the node
 * reports anything, so the node becomes SECOND with no app of the previous run answering, and a swap back brings the
 * VIP with a fresh app.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DaemonCluster, until, writeRecordAppHooks } from "../../examples/daemon/lab-cluster.js";
import type { ClusterState } from "../../examples/daemon/daemon.js";
import { Lab, type LabHost } from "../../src/testing/lab.js";
import { hookGuardsOf } from "./helpers/hook-guards.js";

const isRoot = process.getuid?.() === 0;
const APP_PORT = 8090;
let lab: Lab;
let cluster: DaemonCluster;
let client: LabHost;
let vip: string;


const api = <T>(node: string, path: string): Promise<T> => cluster.get<T>(node, path);

const dbOf = (s: ClusterState, node: string) => s.nodes.find((n) => n.id === node)?.modules.db;

async function roles(prim: string, second: string, primState = "PRIM"): Promise<ClusterState> {
  return until(`db ${primState} on ${prim} and SECOND (ready) on ${second}`, async () => {
    const s = await api<ClusterState>(prim, "/api/v1/state");
    const p = dbOf(s, prim);
    const q = dbOf(s, second);
    return p?.state === primState && p.ready && !p.transient && q?.state === "SECOND" && q.ready && !q.transient ? s : undefined;
  }, 60_000);
}

/** The record app's pid on `node` (from the pid file its start hook writes), if it is alive (not a zombie). */
function appPid(node: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(cluster.dir, `${node}.records.pid`), "utf8").trim());
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state === "Z" || state === "X" ? undefined : pid;
  } catch {
    return undefined;
  }
}

/** The first line of GET `path` on the app at `addr` from the client (the node id it answers), or undefined. */
async function appAnswer(addr: string, path = "/records"): Promise<string | undefined> {
  const r = await lab.exec(client, ["curl", "-sf", "-m", "2", `http://${addr}:${APP_PORT}${path}`]);
  return r.code === 0 ? r.stdout.split("\n")[0] : undefined;
}

interface LogRecord {
  type?: string;
  cause?: string;
  to?: string;
  transient?: boolean;
}
const moduleLog = (node: string): LogRecord[] => {
  const p = join(cluster.dir, node, "logs", "db.jsonl");
  if (!existsSync(p)) return [];
  return readFileSync(p, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => (JSON.parse(l) as { event?: LogRecord }).event ?? {});
};

describe.skipIf(!isRoot)("kill -9 of the daemon alone on a mirror primary: its orphan app never serves again", () => {
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2, clients: 1, networks: 1 });
    client = lab.clients[0] as LabHost;
    vip = lab.spareAddr(0);
    try {
      cluster = await DaemonCluster.start(lab, {
        modules: (dir) => {
          const app = writeRecordAppHooks(dir, APP_PORT, 256);
          return [{ name: "db", kind: "mirror", vips: [`${vip}/24`], mirror: { defaultPrimary: "n0" }, hooks: { start_prim: app.start, stop_prim: app.stop } }];
        },
        replication: (node, dir) => ({
          db: { mode: "sync", directories: [{ path: join(dir, node, "db"), backing: join(dir, node, "db.backing") }], ackTimeoutMs: 1000, statsIntervalMs: 250 },
        }),
      });
    } catch (e) {
      await lab.destroy();
      throw e;
    }
  });

  afterAll(async () => {
    await cluster?.stop();
    await lab?.destroy();
  });

  it("the restarted daemon kills the orphan before the node reports anything; SECOND without it; a swap back serves a fresh app", async () => {
    await roles("n0", "n1");
    const orphan = await until("the app on n0", async () => appPid("n0"));
    expect(await appAnswer(vip)).toBe("n0");

    // Only the daemon and its guard: the app (in the module's cgroup, its own session) and the node stay. Frozen
    // first, so that it cannot start its guard again in between.
    const n0 = cluster.node("n0");
    const daemonPid = (n0.proc as { pid: number }).pid;
    process.kill(daemonPid, "SIGSTOP");
    const guards = hookGuardsOf(daemonPid);
    expect(guards.length, "the daemon's hook guard").toBe(1);
    for (const g of guards) process.kill(g, "SIGKILL");
    process.kill(daemonPid, "SIGKILL");
    await (n0.proc as { exited: Promise<unknown> }).exited;
    n0.proc = null;
    await until("n1 ALONE", async () => (dbOf(await api<ClusterState>("n1", "/api/v1/state"), "n1")?.state === "ALONE" ? true : undefined));
    // The problem being guarded against: the orphan still answers on n0's own address (GET /: its data went with
    // the helper, /records fails).
    expect(appPid("n0")).toBe(orphan);
    expect(await appAnswer(lab.addr(n0.host, 0), "/")).toBe("n0");

    const before = moduleLog("n0").length;
    await cluster.startNode(n0);
    // Gone by the time the daemon is ready, and named in the module's log.
    expect(appPid("n0")).toBeUndefined();
    expect(await appAnswer(lab.addr(n0.host, 0), "/")).toBeUndefined();
    const run2 = moduleLog("n0").slice(before);
    const killed = run2.findIndex((r) => /left by a previous run: killing \d+ leftover hook process(es)?: .*records-app\.mjs/.test(r.cause ?? "") && r.cause?.includes(String(orphan)));
    expect(killed, JSON.stringify(run2.slice(0, 4))).toBeGreaterThanOrEqual(0);
    // Before any state of this run: in particular before SECOND.
    const firstState = run2.findIndex((r) => r.type === "state");
    expect(firstState === -1 || firstState > killed).toBe(true);
    expect(run2.some((r) => r.cause?.includes("contained in cgroup"))).toBe(true);

    await roles("n1", "n0", "PRIM");
    expect(appPid("n0")).toBeUndefined();
    expect(await appAnswer(vip)).toBe("n1");

    // Swap back: the VIP returns to n0 with an app started by this run.
    const sw = await cluster.cli(cluster.node("n1"), ["swap", "db"], { token: cluster.tokens.control });
    expect(sw.code, sw.stderr).toBe(0);
    await roles("n0", "n1");
    const fresh = await until("the new app on n0", async () => appPid("n0"));
    expect(fresh).not.toBe(orphan);
    expect(await appAnswer(vip)).toBe("n0");
  });
});
