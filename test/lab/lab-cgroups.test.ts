/**
 * The lab removes the hook-unit cgroups (src/runtime/containment.ts) of its killed daemons (root, cgroup2): a Host
 * spawned in a lab namespace names its unit `holdfast.*.lab-<prefix>`; SIGKILLed, it leaves that cgroup behind (empty
 * once the lab killed the app its hook started); Lab.destroy() rmdirs it, and a unit recorded in a state directory
 * under the lab's scratch directory, and leaves any other holdfast cgroup alone. cleanStaleLabs() removes a unit
 * cgroup named for a lab that has no marker.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generateKey } from "holdfast";
import { HookUnit } from "../../src/runtime/containment.js";
import { Lab, cleanStaleLabs } from "../../src/testing/lab.js";

const isRoot = process.getuid?.() === 0;
const REPO = resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(join(tmpdir(), "hf-labcg-"));
const tag = `${process.pid % 10000}${Date.now() % 100000}`;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Can this process make cgroups (else HookUnit falls back to pgroup mode and there is nothing to test)? */
function cgroupsUsable(): boolean {
  if (!isRoot) return false;
  const u = HookUnit.open({ cluster: "probe", node: "n", module: "m", stateDir: join(dir, "probe") });
  u.remove();
  return u.mode === "cgroup";
}

async function until<T>(what: string, f: () => T | undefined, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!cgroupsUsable())("lab clean-up of hook-unit cgroups", () => {
  it("destroy() rmdirs the empty units of the lab's killed daemons and of its state directories, nothing else", async () => {
    const lab = await Lab.create({ nodes: 1, clients: 0 });
    let decoy: HookUnit | undefined;
    try {
      const n0 = lab.nodes[0]!;
      const start = join(dir, "start.sh");
      writeFileSync(start, `#!/bin/sh\n( setsid sleep 6${tag} >/dev/null 2>&1 </dev/null & ) ; echo app started\n`);
      chmodSync(start, 0o755);
      const keyFile = join(dir, "cluster.key");
      writeFileSync(keyFile, generateKey() + "\n", { mode: 0o600 });
      // The daemon's state directory lies outside the lab's: only the name marks its unit as the lab's.
      const config = {
        cluster: { id: "labcg", keyFile, port: 4844, nodes: [{ id: "n0", addresses: [lab.addr(n0)] }] },
        node: "n0",
        modules: [{ name: "app", kind: "mirror" as const, hooks: { start_prim: start } }],
        replication: { app: { mode: "none" as const } },
        stateDir: join(dir, "state"),
        logDir: join(dir, "logs"),
      };
      const p = lab.spawn(n0, [process.execPath, "--import", "tsx", join(REPO, "test/lab/helpers/containment-host.ts"), JSON.stringify(config), "app"], { cwd: REPO });
      await p.waitForLine(/"event":"started"/, 30_000);
      const record = JSON.parse(readFileSync(join(config.stateDir, "app.hooks-unit.json"), "utf8")) as { cgroup: string };
      expect(basename(record.cgroup)).toMatch(new RegExp(`^holdfast\\.labcg\\.n0\\.app\\.[0-9a-f]{8}\\.lab-${lab.prefix}$`));
      await until("the app in the unit", () => (readFileSync(join(record.cgroup, "cgroup.procs"), "utf8").trim() !== "" ? true : undefined));

      // A unit recorded under the lab's scratch directory (a host run in this process: no marker in its name).
      const inLab = HookUnit.open({ cluster: "labcg", node: "n0", module: "rec", stateDir: join(lab.dir(n0), "state") });
      expect(basename(inLab.cgroup as string)).not.toMatch(/\.lab-/);
      // Another holdfast unit on the machine (another daemon's): never touched.
      decoy = HookUnit.open({ cluster: "labcg", node: "n0", module: "other", stateDir: join(dir, "other-state") });

      lab.signalHost(n0, "SIGKILL"); // the daemon crashes; the lab kills the app too on destroy
      await p.exited;
      expect(existsSync(record.cgroup)).toBe(true); // what piled up before

      await lab.destroy();
      expect(existsSync(record.cgroup)).toBe(false);
      expect(existsSync(inLab.cgroup as string)).toBe(false);
      expect(existsSync(decoy.cgroup as string)).toBe(true);
    } finally {
      await lab.destroy();
      decoy?.remove();
    }
  }, 90_000);

  it("cleanStaleLabs() removes a unit cgroup named for a lab without a marker", async () => {
    const probe = HookUnit.open({ cluster: "labcg", node: "n0", module: "probe", stateDir: join(dir, "probe2") });
    const prefix = `zz${tag.slice(-6)}`;
    const stale = join(dirname(probe.cgroup as string), `holdfast.labcg.n0.app.00000000.lab-${prefix}`);
    probe.remove();
    mkdirSync(stale);
    try {
      await cleanStaleLabs({ prefix });
      expect(existsSync(stale)).toBe(false);
    } finally {
      if (existsSync(stale)) rmdirSync(stale);
    }
  });
});
