/**
 * Files holdfast writes are not for every local user: state and log directories (and a mirror's backing
 * directory) are created 0700, state and log files 0600, at creation (no window where they are 0644/0755). A
 * directory that already exists keeps its mode (the administrator chose it).
 */
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { mirrorKind, type Host, type PrepareContext } from "holdfast";
import { resolveModule } from "../../src/core/module/config.js";
import { EventLog } from "../../src/runtime/event-log.js";
import type { PersistedModuleState } from "../../src/core/module/types.js";
import { FileModuleStore } from "../../src/runtime/module.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function temp(): string {
  const d = mkdtempSync(join(tmpdir(), "hf-modes-"));
  dirs.push(d);
  return d;
}
const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);
const state = { generation: 1 } as unknown as PersistedModuleState;

describe("modes of what holdfast creates", () => {
  it("event log: directory 0700 (nested ones too), .jsonl and .log 0600", () => {
    const dir = join(temp(), "var", "log", "holdfast");
    const log = new EventLog("a", "web", { dir });
    log.output("start_both", "stdout", "hello");
    expect(mode(dir)).toBe("700");
    expect(mode(join(dir, "..", ".."))).toBe("700");
    expect(mode(join(dir, "web.jsonl"))).toBe("600");
    expect(mode(join(dir, "web.log"))).toBe("600");
  });

  it("state store: directory 0700, state file 0600, also when a crash left a 0644 temporary file", async () => {
    const dir = join(temp(), "state");
    const store = new FileModuleStore(dir);
    await store.save("db", state);
    expect(mode(dir)).toBe("700");
    expect(mode(join(dir, "db.state.json"))).toBe("600");
    writeFileSync(join(dir, "web.state.json.tmp"), "{}", { mode: 0o644 });
    await store.save("web", state);
    expect(mode(join(dir, "web.state.json"))).toBe("600");
    expect(await store.load("web")).toEqual(state);
  });

  it("existing directories keep their mode; new files in them are still 0600", async () => {
    const root = temp();
    const logs = join(root, "logs");
    const st = join(root, "state");
    for (const d of [logs, st]) mkdirSync(d, { mode: 0o750 });
    new EventLog("a", "web", { dir: logs }).output("start_both", "stderr", "x");
    await new FileModuleStore(st).save("web", state);
    expect([mode(logs), mode(st)]).toEqual(["750", "750"]);
    expect([mode(join(logs, "web.log")), mode(join(st, "web.state.json"))]).toEqual(["600", "600"]);
  });

  it("mirror kind: the backing directory is created 0700", () => {
    const dir = temp();
    const host = { membership: { view: { members: [{ id: "a" }, { id: "b" }] } } } as unknown as Host;
    const backing = join(dir, "srv", "db.backing");
    const config = {
      clusterId: "unit",
      replication: {
        db: {
          mode: "sync",
          directories: [{ path: join(dir, "srv", "db"), backing }],
          keyFile: join(dir, "repl.key"),
          nodes: { a: { host: "198.18.0.10", port: 7790 }, b: { host: "198.18.0.11", port: 7790 } },
        },
      },
    };
    const definition = resolveModule({ name: "db", kind: "mirror", vips: [] });
    mirrorKind.prepare?.({ host, definition, nodeId: "a", config } as unknown as PrepareContext);
    expect(mode(backing)).toBe("700");
  });
});
