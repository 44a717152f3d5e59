/**
 * The daemon's script hooks through {@link MirrorDriver.hooks} (no namespaces, no root: fake replicators whose
 * "mount namespace" is an `env HF_IN_MOUNT=yes` prefix): a script hook runs inside the mount's namespace while the
 * node is primary (start_prim after the mount, stop_prim before the unmount), plainly otherwise (start_second), with
 * the engine's arguments and `HOLDFAST_*` variables, the driver's `hookEnv` and `HOLDFAST_MOUNT`; its output goes to
 * the module's log, and a failure throws with the runner's detail.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventEmitter } from "eventemitter3";
import { afterAll, describe, expect, it } from "vitest";
import type { FunctionHook, HookContext } from "../../src/core/module/config.js";
import type { HookName } from "../../src/core/module/types.js";
import type { FileReplicatorEvents, FileReplicatorOptions, ReplicatorMetrics } from "../../src/mirror/FileReplicator.js";
import { MirrorDriver, type ReplicatorLike } from "../../src/mirror/mirror.js";

const METRICS: ReplicatorMetrics = { bytesReplicated: 0, acks: 0, ackLatencyAvgUs: 0, ackLatencyMaxUs: 0, queueDepth: 0, logRecords: 0, resyncBytes: 0, degradedCount: 0 };

class FakeRep extends EventEmitter<FileReplicatorEvents> implements ReplicatorLike {
  state = "starting";
  consistent: boolean | undefined;
  pid: number | undefined;
  constructor(
    readonly options: FileReplicatorOptions,
    private readonly ops: string[],
  ) {
    super();
  }
  async start(): Promise<void> {
    this.pid = 4242;
    this.state = "degraded";
    this.ops.push(this.options.role === "primary" ? "mount" : "listen");
  }
  async stop(): Promise<void> {
    this.state = "stopped";
    this.pid = undefined;
    this.ops.push(this.options.role === "primary" ? "unmount" : "stop listening");
  }
  resync(): void {}
  metrics(): ReplicatorMetrics {
    return METRICS;
  }
  mountPath(rel = ""): string {
    return join("/mnt", rel);
  }
  commandInMount(argv: readonly string[]): [string, ...string[]] {
    return ["env", "HF_IN_MOUNT=yes", ...argv];
  }
}

const dir = mkdtempSync(join(tmpdir(), "hf-mirror-hooks-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const p = join(dir, `${name}.sh`);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

function ctx(hook: HookName, state: HookContext["state"], nextState: HookContext["nextState"], log: string[]): HookContext {
  return { module: "db", hook, state, nextState, reason: "command start", signal: new AbortController().signal, log: (l) => log.push(l) };
}

describe("MirrorDriver.hooks with script hooks", () => {
  const ops: string[] = [];
  const out = join(dir, "calls.txt");
  const record = `echo "$HOLDFAST_HOOK $1 $2 [$3] in_mount=\${HF_IN_MOUNT:-no} mount=$HOLDFAST_MOUNT node=$HOLDFAST_NODE module=$HOLDFAST_MODULE extra=$*" >> "${out}"; echo "said by $HOLDFAST_HOOK"`;
  const driver = new MirrorDriver({
    nodeId: "n1",
    backingDir: join(dir, "data"),
    mountPoint: "/srv/db",
    keyFile: join(dir, "key"),
    listen: { host: "198.18.0.10", port: 7790 },
    peer: { host: "198.18.0.11", port: 7790 },
    hookEnv: { HOLDFAST_NODE: "n1" },
    createReplicator: (o) => new FakeRep(o, ops),
  });
  const hooks = driver.hooks(
    {
      start_prim: { path: script("start_prim", record), args: ["--flag"] },
      stop_prim: script("stop_prim", record),
      start_second: script("start_second", record),
      prestart: script("prestart", "echo boom; exit 3"),
    },
    5000,
  );
  const fn = (h: HookName) => (hooks[h] as FunctionHook).fn;

  it("runs start_prim after the mount, inside it, with the engine's arguments and environment", async () => {
    const log: string[] = [];
    await fn("start_prim")(ctx("start_prim", "WAIT", "ALONE", log));
    expect(ops).toEqual(["mount"]);
    const calls = readFileSync(out, "utf8").trim().split("\n");
    expect(calls).toEqual(["start_prim --flag WAIT [ALONE] in_mount=yes mount=/srv/db node=n1 module=db extra=--flag WAIT ALONE command start"]);
    expect(log).toContain("said by start_prim");
    expect((hooks.start_prim as FunctionHook).timeout).toBe(5000 + 15_000); // the helper's start on top
  });

  it("runs stop_prim inside the mount (before the unmount), and a failing script throws with its detail", async () => {
    await fn("stop_prim")(ctx("stop_prim", "ALONE", "STOP", []));
    expect(readFileSync(out, "utf8").trim().split("\n").at(-1)).toMatch(/^stop_prim ALONE STOP \[command start\] in_mount=yes /);
    const log: string[] = [];
    await expect(fn("prestart")(ctx("prestart", "ALONE", "ALONE", log))).rejects.toThrow(/prestart\.sh \(in the mount namespace\): exit code 3: boom/);
    expect(log).toEqual(["boom"]);
  });

  it("runs start_second plainly once the mount is gone", async () => {
    await fn("start_second")(ctx("start_second", "WAIT", "SECOND", []));
    expect(ops).toEqual(["mount", "unmount", "listen"]);
    expect(readFileSync(out, "utf8").trim().split("\n").at(-1)).toMatch(/^start_second WAIT SECOND \[command start\] in_mount=no mount=\/srv\/db node=n1 /);
  });
});
