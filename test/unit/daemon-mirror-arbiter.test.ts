/**
 * The mirror kind's wiring of the witness arbiter (src/mirror/kind.ts `prepare`, which the daemon and every Host
 * run): a config-file checker must get it, or a mirror with an arbiter would run with a permit the lease
 * does not bound (acks alone after the witness granted the peer) and a lease that never follows the primary.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { mirrorDriverOf, mirrorKind, type Host, type PrepareContext } from "holdfast";
import type { ArbiterProbe } from "../../src/checkers/arbiter.js";
import { resolveModule } from "../../src/core/module/config.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function prepare(checkers: unknown[], entryExtra: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), "hf-dmirror-"));
  dirs.push(dir);
  const host = { membership: { view: { members: [{ id: "a" }, { id: "b" }] } } } as unknown as Host;
  const config = {
    clusterId: "unit",
    replication: {
      db: {
        mode: "sync",
        directories: [{ path: join(dir, "mnt"), backing: join(dir, "backing") }],
        keyFile: join(dir, "repl.key"),
        nodes: { a: { host: "198.18.0.10", port: 7790 }, b: { host: "198.18.0.11", port: 7790 } },
        ...entryExtra,
      },
    },
  };
  const definition = resolveModule({ name: "db", kind: "mirror", vips: [], checkers });
  const ctx = { host, definition, nodeId: "a", config } as unknown as PrepareContext;
  const def = mirrorKind.prepare?.(ctx) as ReturnType<typeof resolveModule>;
  return { def, driver: mirrorDriverOf(host, "db") };
}

const arbiterChecker = { type: "split-brain", name: "witness", arbiter: "198.18.0.200:7799", keyFile: "/nonexistent", node: "a", lease: "db" };

describe("daemon mirror wiring of the witness arbiter", () => {
  it("bounds the replication permit by the lease: 0 until the probe exists, then its budget", () => {
    const { def, driver } = prepare([arbiterChecker]);
    const c = def.checkers[0] as { onProbe?: (p: ArbiterProbe) => void; yieldWhen?: () => boolean };
    expect(typeof c.onProbe).toBe("function");
    expect(driver?.options.permitCap?.()).toBe(0);
    c.onProbe?.({ permitBudgetMs: () => 321 } as unknown as ArbiterProbe);
    expect(driver?.options.permitCap?.()).toBe(321);
    // not yet attached to a module: no state to yield from
    expect(c.yieldWhen?.()).toBe(false);
    expect(driver?.options.failoverFenceMs).toBe(300);
  });

  it("a ping witness gets the failover fence but no permit cap; the config's own fence wins", () => {
    const ping = prepare([{ type: "split-brain", name: "witness", witnesses: ["198.18.0.200"] }]);
    expect(ping.driver?.options.permitCap).toBeUndefined();
    expect(ping.driver?.options.failoverFenceMs).toBe(300);
    expect((ping.def.checkers[0] as { yieldWhen?: unknown }).yieldWhen).toBeUndefined();
    expect(prepare([arbiterChecker], { failoverFenceMs: 120 }).driver?.options.failoverFenceMs).toBe(120);
  });

  it("without a split-brain checker: no fence, no cap", () => {
    const { driver } = prepare([]);
    expect(driver?.options.failoverFenceMs).toBeUndefined();
    expect(driver?.options.permitCap).toBeUndefined();
  });
});
