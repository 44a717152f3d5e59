/**
 * Host on loopback with a one-node cluster: the configuration decoded from the same object a program writes (bad
 * fields named by path), a mirror module without replicated data taken to ALONE, commands and state, the trace of
 * its events, and the ordered stop.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigError, Host, generateKey, traceHost, type HostConfigInput, type TraceLine } from "holdfast";
import { MemoryModuleStore, MemoryVipDriver } from "holdfast/testing";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function config(extra: Partial<HostConfigInput> = {}): HostConfigInput {
  const dir = mkdtempSync(join(tmpdir(), "hf-host-"));
  dirs.push(dir);
  return {
    cluster: { id: "unit", key: generateKey(), port: 20_000 + Math.floor(Math.random() * 20_000), nodes: [{ id: "a", addresses: ["127.0.0.1"] }] },
    node: "a",
    modules: [{ name: "db", kind: "mirror", vips: ["198.18.0.100/24"], mirror: { defaultPrimary: "a", peerWait: 200 } }],
    replication: { db: { mode: "none" } },
    stateDir: join(dir, "state"),
    logDir: join(dir, "log"),
    ...extra,
  };
}

describe("Host", () => {
  it("refuses a bad configuration with the path and the value of every problem", () => {
    const bad = { ...config(), farm: { nope: { iface: "eth0" } }, cluster: { id: "unit", nodes: [{ id: "a", addresses: ["127.0.0.300"] }] } } as unknown as HostConfigInput;
    let err: unknown;
    try {
      new Host(bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const text = (err as ConfigError).problems.map((p) => p.path);
    expect(text).toContain("cluster.keyFile"); // neither keyFile nor key
    expect(text).toContain("farm.nope");
    expect(text.some((p) => p.startsWith("cluster.nodes.0.addresses"))).toBe(true);
  });

  it("runs a mirror module without replicated data to ALONE, traces its events, answers commands and stops in order", async () => {
    const vip = new MemoryVipDriver();
    const host = new Host(config(), { vip, store: new MemoryModuleStore() });
    const lines: TraceLine[] = [];
    traceHost(host, (l) => lines.push(l));
    await host.start();
    const db = host.module("db");
    await db.waitFor((s) => s.state === "ALONE" && s.ready, 10_000);
    expect(vip.held.has("198.18.0.100/24")).toBe(true);
    expect(lines.some((l) => l.type === "state" && l.module === "db" && l.state === "ALONE" && l.ready === true)).toBe(true);
    const s = host.state();
    expect(s.nodes[0]?.modules.db?.state).toBe("ALONE");
    expect(s.modules[0]).toMatchObject({ name: "db", kind: "mirror" });
    expect(() => host.module("nope")).toThrow(/no module "nope" on node a/);
    await expect(host.command("db", "resync")).rejects.toThrow(/no replicated data/);
    await host.command("db", "stop");
    await db.waitFor((x) => x.state === "STOP" && !x.transient, 10_000);
    expect(vip.held.size).toBe(0);
    await host.stop();
    // The module's event log went to logDir.
    expect(readFileSync(join(host.config.logDir, "db.jsonl"), "utf8")).toMatch(/ALONE/);
  });
});
