/**
 * Runs `holdfast daemon` on the nodes of a namespace {@link Lab}: one config file per node (own log and
 * state directories: lab nodes share the file system), one shared cluster key and token set, each node's
 * API bound to its own lab address. Used by the daemon lab test, the browser test and the demo.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { generateKey, MARKER_SOURCE } from "holdfast";
import type { Lab, LabHost, LabProcess } from "holdfast/testing";
import { generateToken, hashToken } from "./auth.js";

export const REPO = resolve(import.meta.dirname, "../..");
export const CLI = join(REPO, "examples/daemon/cli.ts");
export const API_PORT = 9453;

export interface DaemonClusterOptions {
  /** Lab nodes to use, from the first. Default all. */
  readonly count?: number;
  /** Module definitions (hooks may name the scripts written by {@link writeHookScripts}: `$DIR/hooks/NAME.sh`). */
  readonly modules: (dir: string, node: string, tokens: { admin: string; control: string; monitor: string }) => unknown[];
  /** `replication:` section of the config (`{ db: { mode: "none" } }`, or `mode: "sync"` with directories). */
  readonly replication?: (node: string, dir: string) => Record<string, unknown> | undefined;
  /** Extra top-level config. */
  readonly extra?: Record<string, unknown>;
}

export interface DaemonNodeRun {
  readonly id: string;
  readonly host: LabHost;
  readonly config: string;
  readonly url: string;
  proc: LabProcess | null;
}

/**
 * Hook scripts that record what they did in `$DIR/<node>.events` (one line per call: hook, state, next
 * state) and, for start hooks, keep a `<node>.<module>.running` marker file that stop hooks remove.
 */
export function writeHookScripts(dir: string): void {
  mkdirSync(join(dir, "hooks"), { recursive: true });
  const script = (name: string, body: string) => {
    const p = join(dir, "hooks", `${name}.sh`);
    writeFileSync(p, `#!/bin/sh\n# $1 = state, $2 = next state, $3 = reason\necho "$(date +%s.%N) $HOLDFAST_NODE $HOLDFAST_MODULE ${name} $1 -> $2" >> "${dir}/$HOLDFAST_NODE.events"\n${body}\necho "${name}: $HOLDFAST_MODULE on $HOLDFAST_NODE ($1 -> $2)"\n`);
    chmodSync(p, 0o755);
  };
  for (const h of ["start_prim", "start_both", "start_second"]) script(h, `touch "${dir}/$HOLDFAST_NODE.$HOLDFAST_MODULE.${h}"`);
  for (const h of ["stop_prim", "stop_both", "stop_second"]) script(h, `rm -f "${dir}/$HOLDFAST_NODE.$HOLDFAST_MODULE.${h.replace("stop", "start")}"`);
}

/**
 * Hooks of a small HTTP app for farm demos and tests ({@link WEB_APP}: `GET /` answers this node's id, `GET
 * /stream?ms=N` a long-lived connection): `web_start.sh` starts it detached on `port` and waits until it listens;
 * `web_stop.sh` stops it. Returns the two paths.
 */
export function writeHttpAppHooks(dir: string, port = 8080): { start: string; stop: string } {
  mkdirSync(join(dir, "hooks"), { recursive: true });
  const start = join(dir, "hooks", "web_start.sh");
  const stop = join(dir, "hooks", "web_stop.sh");
  writeFileSync(
    start,
    `#!/bin/sh
setsid ${process.execPath} ${WEB_APP} ${port} >/dev/null 2>&1 < /dev/null &
echo $! > "${dir}/$HOLDFAST_NODE.web.pid"
` +
      `for i in $(seq 1 100); do ss -ltn | grep -q ':${port} ' && exit 0; sleep 0.05; done; exit 1
`,
  );
  writeFileSync(stop, `#!/bin/sh
kill "$(cat "${dir}/$HOLDFAST_NODE.web.pid")" 2>/dev/null; exit 0
`);
  chmodSync(start, 0o755);
  chmodSync(stop, 0o755);
  return { start, stop };
}

/** Where the record app and its writer live (plain Node scripts, see examples/daemon/apps/). */
export const RECORDS_APP = join(REPO, "examples/daemon/apps/records-app.mjs");
export const RECORDS_WRITER = join(REPO, "examples/daemon/apps/records-writer.mjs");
/** The farm's demo app (examples/daemon/apps/web-app.mjs). */
export const WEB_APP = join(REPO, "examples/daemon/apps/web-app.mjs");

/**
 * Hooks of the replicated record app ({@link RECORDS_APP}) for a mirror module with `mode: sync`: `records_start.sh`
 * (start_prim: runs inside the replication mount's namespace, starts the app on `port` with its data in
 * `$HOLDFAST_MOUNT`, waits until it listens) and `records_stop.sh` (stop_prim: stops it and waits until it is gone,
 * so no file of the mount is open when it is unmounted). Returns the two paths.
 */
export function writeRecordAppHooks(dir: string, port = 8090, recordBytes = 256): { start: string; stop: string } {
  mkdirSync(join(dir, "hooks"), { recursive: true });
  const start = join(dir, "hooks", "records_start.sh");
  const stop = join(dir, "hooks", "records_stop.sh");
  const pid = `${dir}/$HOLDFAST_NODE.records.pid`;
  writeFileSync(
    start,
    `#!/bin/sh
setsid ${process.execPath} ${RECORDS_APP} ${port} ${recordBytes} >> "${dir}/$HOLDFAST_NODE.records-app.log" 2>&1 < /dev/null &
echo $! > "${pid}"
for i in $(seq 1 200); do ss -ltn | grep -q ':${port} ' && exit 0; sleep 0.05; done
echo "records app did not listen on ${port}"; exit 1
`,
  );
  writeFileSync(
    stop,
    `#!/bin/sh
pid=$(cat "${pid}" 2>/dev/null) || exit 0
alive() { s=$(awk '{print $3}' /proc/$pid/stat 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
kill "$pid" 2>/dev/null
for i in $(seq 1 100); do alive || exit 0; sleep 0.05; done
kill -9 "$pid" 2>/dev/null; exit 0
`,
  );
  chmodSync(start, 0o755);
  chmodSync(stop, 0o755);
  return { start, stop };
}

/**
 * Polls `f` every `everyMs` until it returns a value (errors count as "not yet"); rejects after `ms` naming `what`
 * and the last error. For state reached through an API, where no event can be awaited.
 */
export async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 30_000, everyMs = 150): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`${what}: not within ${ms} ms${last ? ` (${(last as Error).message})` : ""}`);
}

export class DaemonCluster {
  readonly dir: string;
  readonly nodes: DaemonNodeRun[];
  readonly tokens: { admin: string; control: string; monitor: string };

  private constructor(
    readonly lab: Lab,
    opts: DaemonClusterOptions,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "holdfast-daemons-"));
    chmodSync(this.dir, 0o755);
    writeHookScripts(this.dir);
    const keyFile = join(this.dir, "cluster.key");
    writeFileSync(keyFile, generateKey() + "\n", { mode: 0o600 });
    this.tokens = { admin: generateToken(), control: generateToken(), monitor: generateToken() };
    const hosts = lab.nodes.slice(0, opts.count ?? lab.nodes.length);
    const nodes = hosts.map((h) => ({ id: h.name, addresses: [...Array(lab.networks).keys()].map((n) => lab.addr(h, n)), api: { bind: lab.addr(h, 0) } }));
    this.nodes = hosts.map((h) => {
      const config = join(this.dir, `${h.name}.json`);
      const cfg = {
        cluster: { id: `lab-${lab.prefix}`, keyFile, nodes },
        node: h.name,
        modules: opts.modules(this.dir, h.name, this.tokens),
        ...(opts.replication?.(h.name, this.dir) ? { replication: opts.replication(h.name, this.dir) } : {}),
        api: {
          port: API_PORT,
          tokens: (["admin", "control", "monitor"] as const).map((role) => ({ name: `lab-${role}`, role, sha256: hashToken(this.tokens[role]) })),
        },
        logDir: join(this.dir, h.name, "logs"),
        stateDir: join(this.dir, h.name, "state"),
        ...(opts.extra ?? {}),
      };
      writeFileSync(config, JSON.stringify(cfg, null, 2));
      return { id: h.name, host: h, config, url: `http://${lab.addr(h, 0)}:${API_PORT}`, proc: null };
    });
  }

  /** Writes the configs, starts every daemon and waits for each one's `ready` line. */
  static async start(lab: Lab, opts: DaemonClusterOptions): Promise<DaemonCluster> {
    const c = new DaemonCluster(lab, opts);
    try {
      await Promise.all(c.nodes.map((n) => c.startNode(n)));
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  /** GET on a node's API from inside its namespace with the monitor token (curl): JSON, or text for /metrics. */
  async get<T>(node: string, path: string): Promise<T> {
    const n = this.node(node);
    const r = await this.lab.exec(n.host, ["curl", "-sf", "-m", "3", "-H", `Authorization: Bearer ${this.tokens.monitor}`, `${n.url}${path}`]);
    if (r.code !== 0) throw new Error(`GET ${path} on ${node}: curl exit ${r.code}`);
    return (path === "/metrics" ? r.stdout : JSON.parse(r.stdout)) as T;
  }

  node(id: string): DaemonNodeRun {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Starts (or restarts) one node's daemon and waits until it is ready. */
  async startNode(n: DaemonNodeRun, timeoutMs = 30_000): Promise<void> {
    n.proc = this.lab.spawn(n.host, [process.execPath, "--import", "tsx", CLI, "daemon", "--config", n.config], { cwd: REPO });
    const proc = n.proc;
    let stderr = "";
    proc.stderr.on("data", (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
    await Promise.race([
      proc.waitForLine(/"event":"ready"/, timeoutMs),
      proc.exited.then((x) => {
        throw new Error(`daemon ${n.id} exited before ready (code ${x.code}, signal ${x.signal}): ${stderr.trim()}`);
      }),
    ]);
  }

  /** Runs the CLI inside a node's namespace (so it reaches the API as a local operator would). */
  cli(on: DaemonNodeRun, args: string[], opts: { token?: string; timeoutMs?: number } = {}) {
    return this.lab.exec(on.host, [process.execPath, "--import", "tsx", CLI, ...args], {
      cwd: REPO,
      env: { HOLDFAST_URL: on.url, ...(opts.token !== undefined ? { HOLDFAST_TOKEN: opts.token } : {}) },
      timeoutMs: opts.timeoutMs ?? 30_000,
    });
  }

  /**
   * SIGTERM to one daemon's main process only (clean shutdown: stop hooks run), as systemd's `KillMode=mixed` in
   * deploy/holdfast.service does: its children (replication helpers) must stay until it stops them in order.
   */
  terminate(n: DaemonNodeRun): void {
    if (!n.proc) return;
    try {
      process.kill(n.proc.pid, "SIGTERM");
    } catch {
      // gone already
    }
  }

  /** SIGTERM to every daemon ({@link terminate}), SIGKILL to what is left after `graceMs`, then removes the directory. */
  async stop(graceMs = 15_000): Promise<void> {
    const running = this.nodes.filter((n) => n.proc);
    for (const n of running) this.terminate(n);
    await Promise.all(
      running.map(async (n) => {
        const p = n.proc as LabProcess;
        const t = setTimeout(() => p.kill("SIGKILL"), graceMs);
        await p.exited;
        clearTimeout(t);
      }),
    );
    // A daemon killed and not restarted leaves its read-only marker over the replicated path: unmount it first.
    for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
      const f = line.split(" ");
      const sep = f.indexOf("-", 6);
      if (sep > 0 && f[sep + 2] === MARKER_SOURCE && f[4]?.startsWith(`${this.dir}/`)) spawnSync("umount", ["-l", f[4]], { stdio: "ignore" });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
