/**
 * No write lands where nothing replicates it: two `holdfast daemon`s with a replicated mirror module (`mode:
 * sync`, the default private mount namespace). In the daemons' mount namespace (this test's) the replicated path
 * of both nodes, primary and secondary, is a read-only marker: a write fails with EROFS and `HOLDFAST-NOT-HERE`
 * says why and names `holdfast exec`. `holdfast exec db -- CMD` runs CMD in the mount's namespace on the primary
 * (the file it writes is on the secondary's disk, CMD's exit code is the CLI's) and is refused on the secondary.
 * A daemon killed with SIGKILL leaves its marker; the restarted daemon removes it before mounting anything (one
 * marker, not two, and said in the module's log). A clean stop (SIGTERM) leaves an ordinary directory.
 *
 * The driver's transitions on fake replicators (no namespaces): the marker is up before the compiled helper
 * starts and stays from secondary to primary; with `mountNamespace: host` it goes before the mount; with the JS
 * engine it goes up once the mount is ready; poststop removes it; removeStaleMarker() finds a crashed run's.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DaemonCluster, until } from "../../examples/daemon/lab-cluster.js";
import type { ClusterState } from "../../examples/daemon/daemon.js";
import type { HookContext, HookFunction } from "../../src/core/module/config.js";
import type { FileReplicatorEvents, FileReplicatorOptions, ReplicatorMetrics } from "../../src/mirror/FileReplicator.js";
import { MARKER_FILE, MARKER_SOURCE, markerAt, mountMarker, removeMarkers } from "../../src/mirror/marker.js";
import { MirrorDriver, type ReplicatorLike } from "../../src/mirror/mirror.js";
import { Lab } from "../../src/testing/lab.js";

const isRoot = process.getuid?.() === 0;
let lab: Lab;
let cluster: DaemonCluster;

const api = <T>(node: string, path: string): Promise<T> => cluster.get<T>(node, path);
const dbOf = (s: ClusterState, node: string) => s.nodes.find((n) => n.id === node)?.modules.db;
const mountDir = (node: string) => join(cluster.dir, node, "db");
const backing = (node: string) => join(cluster.dir, node, "db.backing");

async function roles(prim: string, second: string, primState = "PRIM"): Promise<void> {
  await until(
    `db ${primState} on ${prim} and SECOND (ready) on ${second}`,
    async () => {
      const s = await api<ClusterState>(prim, "/api/v1/state");
      const p = dbOf(s, prim);
      const q = dbOf(s, second);
      return p?.state === primState && p.ready && !p.transient && q?.state === "SECOND" && q.ready && !q.transient ? true : undefined;
    },
    60_000,
  );
}

/** Markers mounted at `path` in this (the daemons') mount namespace. */
function markersAt(path: string): number {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => {
      const f = l.split(" ");
      const sep = f.indexOf("-", 6);
      return sep > 0 && f[4] === path && f[sep + 1] === "tmpfs" && f[sep + 2] === MARKER_SOURCE;
    }).length;
}

/** The error code of a write of `rel` under `dir` from this namespace (undefined: it succeeded, and is undone). */
function writeError(dir: string, rel = "f"): string | undefined {
  const p = join(dir, rel);
  try {
    writeFileSync(p, "not replicated\n");
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
  unlinkSync(p);
  return undefined;
}

const moduleLog = (node: string): string[] => {
  const p = join(cluster.dir, node, "logs", "db.jsonl");
  return existsSync(p) ? readFileSync(p, "utf8").split("\n").filter((l) => l !== "") : [];
};

describe.skipIf(!isRoot)("the replicated path outside the mount's namespace: a read-only marker, and holdfast exec", () => {
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 2, clients: 0, networks: 1 });
    const vip = lab.spareAddr(0);
    try {
      cluster = await DaemonCluster.start(lab, {
        modules: () => [{ name: "db", kind: "mirror", vips: [`${vip}/24`], mirror: { defaultPrimary: "n0" } }],
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
    const dir = cluster?.dir;
    try {
      await cluster?.stop();
    } finally {
      // A failed test must not leave a marker (nor the directory it sits in) behind.
      if (dir !== undefined) {
        for (const n of ["n0", "n1"]) removeMarkers(join(dir, n, "db"));
        rmSync(dir, { recursive: true, force: true });
      }
      await lab?.destroy();
    }
  });

  it("primary and secondary: the path refuses writes (EROFS) and its one file says where the data is", async () => {
    await roles("n0", "n1");
    for (const node of ["n0", "n1"]) {
      expect(markersAt(mountDir(node)), node).toBe(1);
      expect(writeError(mountDir(node)), node).toBe("EROFS");
      expect(writeError(mountDir(node), MARKER_FILE), node).toBe("EROFS");
      const text = readFileSync(join(mountDir(node), MARKER_FILE), "utf8");
      expect(text).toContain(`This directory (${mountDir(node)}) is replicated by holdfast module db.`);
      expect(text).toContain("holdfast exec db -- CMD [ARGS...]");
    }
    // Nothing leaked through: neither backing directory got a file.
    expect(existsSync(join(backing("n0"), "f"))).toBe(false);
    expect(existsSync(join(backing("n1"), "f"))).toBe(false);
  });

  it("holdfast exec on the primary runs in the mount's namespace: the file is on the secondary; CMD's exit code", async () => {
    const n0 = cluster.node("n0");
    const w = await cluster.cli(n0, ["exec", "db", "--", "sh", "-c", 'echo x > "$HOLDFAST_MOUNT/f" && ls -A "$HOLDFAST_MOUNT"'], { token: cluster.tokens.monitor });
    expect(w.code, w.stderr).toBe(0);
    // The helper's namespace sees its FUSE mount (the file, no marker), not the marker of the daemon's namespace.
    expect(w.stdout.split("\n")).toContain("f");
    expect(w.stdout).not.toContain(MARKER_FILE);
    expect(readFileSync(join(backing("n0"), "f"), "utf8")).toBe("x\n");
    expect(readFileSync(join(backing("n1"), "f"), "utf8")).toBe("x\n"); // acknowledged: applied on the secondary
    // Still the marker here, after the write inside.
    expect(existsSync(join(mountDir("n0"), "f"))).toBe(false);

    const code = await cluster.cli(n0, ["exec", "db", "--", "sh", "-c", "exit 3"], { token: cluster.tokens.monitor });
    expect(code.code).toBe(3);

    const n1 = cluster.node("n1");
    const refused = await cluster.cli(n1, ["exec", "db", "--", "sh", "-c", "echo ran"], { token: cluster.tokens.monitor });
    expect(refused.code).toBe(10);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toMatch(/^holdfast: exec db: module db is SECOND on node n1: its replicated directory is mounted on the primary only/);
  });

  it("SIGKILL of the primary's daemon leaves its marker; the restarted daemon removes it before mounting its own", async () => {
    const n0 = cluster.node("n0");
    const before = moduleLog("n0").length;
    process.kill((n0.proc as { pid: number }).pid, "SIGKILL");
    await (n0.proc as { exited: Promise<unknown> }).exited;
    n0.proc = null;
    await until("n1 ALONE", async () => (dbOf(await api<ClusterState>("n1", "/api/v1/state"), "n1")?.state === "ALONE" ? true : undefined));
    expect(markersAt(mountDir("n0")), "the killed daemon's marker").toBe(1);

    await cluster.startNode(n0);
    await roles("n1", "n0");
    expect(markersAt(mountDir("n0")), "one marker: the stale one went first").toBe(1);
    expect(writeError(mountDir("n0"))).toBe("EROFS");
    const run2 = moduleLog("n0").slice(before);
    const removed = run2.findIndex((l) => l.includes("removed 1 stale read-only marker(s)"));
    expect(removed, run2.slice(0, 5).join("\n")).toBeGreaterThanOrEqual(0);
    const firstState = run2.findIndex((l) => l.includes('"type":"state"'));
    expect(firstState === -1 || firstState > removed).toBe(true);
    // The other way round now: exec on n1, the file on n0's disk.
    const w = await cluster.cli(cluster.node("n1"), ["exec", "db", "--", "sh", "-c", 'echo y > "$HOLDFAST_MOUNT/g"'], { token: cluster.tokens.monitor });
    expect(w.code, w.stderr).toBe(0);
    expect(readFileSync(join(backing("n0"), "g"), "utf8")).toBe("y\n");
  });

  it("a clean stop (SIGTERM) removes the marker: an ordinary directory again", async () => {
    for (const id of ["n0", "n1"]) {
      const n = cluster.node(id);
      cluster.terminate(n);
      await (n.proc as { exited: Promise<unknown> }).exited;
      n.proc = null;
      expect(markersAt(mountDir(id)), id).toBe(0);
      expect(existsSync(join(mountDir(id), MARKER_FILE)), id).toBe(false);
      expect(writeError(mountDir(id)), id).toBeUndefined();
    }
  });
});

/** A replicator that records, at start and after it, whether the marker is over the mount point. */
class FakeRep extends EventEmitter<FileReplicatorEvents> implements ReplicatorLike {
  state = "starting";
  consistent: boolean | undefined;
  pid: number | undefined;
  constructor(
    readonly options: FileReplicatorOptions,
    readonly engine: "native" | "js",
    private readonly ops: string[],
    private readonly mnt: string,
  ) {
    super();
  }
  async start(): Promise<void> {
    this.pid = process.pid;
    this.ops.push(`${this.options.role} start (marker ${markerAt(this.mnt) ? "up" : "down"})`);
  }
  async stop(): Promise<void> {
    this.pid = undefined;
    this.ops.push(`${this.options.role} stop`);
  }
  resync(): void {}
  metrics(): ReplicatorMetrics {
    return { bytesReplicated: 0, acks: 0, ackLatencyAvgUs: 0, ackLatencyMaxUs: 0, queueDepth: 0, logRecords: 0, resyncBytes: 0, degradedCount: 0 };
  }
  mountPath(): string {
    return this.mnt;
  }
  commandInMount(argv: readonly string[]): [string, ...string[]] {
    return [...argv] as [string, ...string[]];
  }
}

describe.skipIf(!isRoot)("MirrorDriver's marker through its role changes (fake replicators)", () => {
  const root = mkdtempSync(join(tmpdir(), "hf-marker-driver-"));
  afterAll(() => {
    removeMarkers(join(root, "mnt"));
    rmSync(root, { recursive: true, force: true });
  });

  function driver(engine: "native" | "js", mountNamespace?: "host") {
    const mnt = join(root, "mnt");
    mkdirSync(mnt, { recursive: true });
    const ops: string[] = [];
    const d = new MirrorDriver({
      nodeId: "n0",
      backingDir: join(root, "data"),
      mountPoint: mnt,
      keyFile: join(root, "key"),
      listen: { host: "198.18.0.10", port: 7790 },
      peer: { host: "198.18.0.11", port: 7790 },
      marker: true,
      ...(mountNamespace ? { replicator: { mountNamespace } } : {}),
      createReplicator: (o) => new FakeRep(o, engine, ops, mnt),
    });
    d.on("log", (l) => {
      if (l.startsWith("marker")) ops.push(l.replace(mnt, "MNT").replace(/ \(.*$/, ""));
    });
    d.on("error", (e) => ops.push(`error: ${e.message}`));
    const hooks = d.hooks();
    const ctx = { module: "db", hook: "start_prim", state: "SECOND", nextState: "PRIM", reason: "test", signal: new AbortController().signal, log: () => undefined } as unknown as HookContext;
    const run = async (name: "start_prim" | "start_second" | "poststop") => {
      const h = hooks[name] as { fn: HookFunction };
      await h.fn(ctx);
      ops.push(`${name} done (marker ${markerAt(mnt) ? "up" : "down"})`);
    };
    return { d, ops, run, mnt };
  }

  it("compiled helper, private namespace: up before the helper starts, kept from secondary to primary, removed by poststop", async () => {
    const { ops, run } = driver("native");
    await run("start_second");
    await run("start_prim");
    await run("poststop");
    expect(ops).toEqual([
      "marker: MNT is read-only outside the mount's namespace",
      "secondary start (marker up)",
      "start_second done (marker up)",
      "secondary stop",
      "primary start (marker up)",
      "start_prim done (marker up)",
      "primary stop",
      "marker removed: MNT is an ordinary directory again",
      "poststop done (marker down)",
    ]);
  });

  it("host namespace: no marker over the primary's mount (removed before it), one while secondary", async () => {
    const { ops, run } = driver("native", "host");
    await run("start_second");
    await run("start_prim");
    await run("start_second");
    await run("poststop");
    expect(ops).toEqual([
      "marker: MNT is read-only outside the mount's namespace",
      "secondary start (marker up)",
      "start_second done (marker up)",
      "secondary stop",
      "marker removed: MNT is an ordinary directory again",
      "primary start (marker down)",
      "start_prim done (marker down)",
      "primary stop",
      "marker: MNT is read-only outside the mount's namespace",
      "secondary start (marker up)",
      "start_second done (marker up)",
      "secondary stop",
      "marker removed: MNT is an ordinary directory again",
      "poststop done (marker down)",
    ]);
  });

  it("JS engine: the marker goes up once its mount is ready (fuse-native refuses a mount point that is a mount)", async () => {
    const { ops, run } = driver("js");
    await run("start_prim");
    await run("poststop");
    expect(ops).toEqual([
      "primary start (marker down)",
      "marker: MNT is read-only outside the mount's namespace",
      "start_prim done (marker up)",
      "primary stop",
      "marker removed: MNT is an ordinary directory again",
      "poststop done (marker down)",
    ]);
  });

  it("removeStaleMarker() removes what a crashed run left, stacked or not", () => {
    const { d, mnt } = driver("native");
    mountMarker(mnt, "stale\n");
    mountMarker(mnt, "stale\n");
    expect(markerAt(mnt)).toBe(true);
    expect(d.removeStaleMarker()).toBe(2);
    expect(markersAt(mnt)).toBe(0);
    expect(d.removeStaleMarker()).toBe(0);
  });
});
