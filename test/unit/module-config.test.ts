import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import {
  ModuleDefaults,
  RestartPresets,
  parseModulesText,
  resolveModule,
} from "../../src/core/module/index.js";

function problems(fn: () => unknown): [string, unknown][] {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems.map((p) => [p.path, p.value]);
  }
  throw new Error("expected a ConfigError");
}

describe("module definitions", () => {
  it("fills defaults", () => {
    const m = resolveModule({ name: "web", kind: "farm" });
    expect(m.restart).toEqual(ModuleDefaults.restart);
    expect(m.hookTimeout).toBe(60_000);
    expect(m.vips).toEqual([]);
    expect(m.mirror.peerWait).toBe(ModuleDefaults.peerWait);
  });

  it("accepts functions and scripts as hooks, presets and durations as strings", () => {
    const fn = async () => {};
    const m = resolveModule({
      name: "db",
      kind: "mirror",
      vips: ["198.18.0.100/24", "fd00:4844::100/64"],
      hooks: { start_prim: fn, stop_prim: { fn, timeout: "5s" }, start_second: "/usr/local/bin/s", poststop: { path: "/x", args: ["-q"], timeout: 1500 } },
      restart: RestartPresets.failFast,
      hookTimeout: "2m",
      checkers: [{ type: "tcp", host: "127.0.0.1", port: 5432, action: "restart", interval: "1s", fall: 3 }],
      mirror: { defaultPrimary: "n0", peerWait: "3s" },
    });
    expect(m.hooks.start_prim).toBe(fn);
    expect(m.hooks.stop_prim).toEqual({ fn, timeout: 5000 });
    expect(m.hookTimeout).toBe(120_000);
    expect(m.restart).toEqual({ maxloop: 1, loopInterval: 600_000 });
    expect(m.checkers[0]).toMatchObject({ type: "tcp", port: 5432, interval: 1000 });
    expect(m.mirror).toEqual({ defaultPrimary: "n0", peerWait: 3000 });
  });

  it("rejects bad input with the path and the value", () => {
    expect(problems(() => resolveModule({ name: "bad name!", kind: "farm" }))).toEqual([["name", "bad name!"]]);
    expect(problems(() => resolveModule({ name: "m", kind: "cluster" }))).toEqual([["kind", "cluster"]]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", vips: ["198.18.0.300/24"] }))).toEqual([["vips.0", "198.18.0.300/24"]]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", restart: { maxloop: -1 } }))).toEqual([["restart.maxloop", -1]]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", hookTimeout: "soon" }))).toEqual([["hookTimeout", "soon"]]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", checkers: [{ type: "tcp", action: "explode" }] }))).toEqual([
      ["checkers.0.action", "explode"],
    ]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", mirror: { defaultPrimary: "a" } }))).toEqual([
      ["mirror", { defaultPrimary: "a" }],
    ]);
    const hookProblems = problems(() => resolveModule({ name: "m", kind: "mirror", hooks: { start_prim: 42 } }));
    expect(hookProblems.every(([p, v]) => p.startsWith("hooks.start_prim") && v === 42)).toBe(true);
  });

  it("reads the same definitions from YAML and JSON, several modules per node", () => {
    const yaml = `
modules:
  - name: web
    kind: farm
    vips: [198.18.0.100/24]
    hooks:
      start_both: /opt/web/start.sh
      stop_both: { path: /opt/web/stop.sh, timeout: 10s }
    checkers:
      - { type: tcp, host: 127.0.0.1, port: 8080, action: restart }
  - name: db
    kind: mirror
    restart: { maxloop: 2, loopInterval: 1h }
    mirror: { defaultPrimary: n0 }
`;
    const fromYaml = parseModulesText(yaml, "yaml");
    const fromJson = parseModulesText(JSON.stringify({ modules: [
      { name: "web", kind: "farm", vips: ["198.18.0.100/24"], hooks: { start_both: "/opt/web/start.sh", stop_both: { path: "/opt/web/stop.sh", timeout: 10000 } }, checkers: [{ type: "tcp", host: "127.0.0.1", port: 8080, action: "restart" }] },
      { name: "db", kind: "mirror", restart: { maxloop: 2, loopInterval: 3600000 }, mirror: { defaultPrimary: "n0" } },
    ] }), "json");
    expect(fromYaml).toEqual(fromJson);
    expect(fromYaml.map((m) => m.name)).toEqual(["web", "db"]);
    expect(fromYaml[1]!.restart).toEqual({ maxloop: 2, loopInterval: 3_600_000 });
  });

  it("names the file path of a problem and refuses duplicate names", () => {
    expect(problems(() => parseModulesText("modules:\n  - name: a\n    kind: farm\n  - name: b\n    kind: farm\n    hookTimeout: -5\n", "yaml"))).toEqual([
      ["modules.1.hookTimeout", -5],
    ]);
    expect(problems(() => parseModulesText('{"modules":[{"name":"a","kind":"farm"},{"name":"a","kind":"mirror"}]}', "json"))).toEqual([
      ["modules.1.name", "a"],
    ]);
    expect(problems(() => parseModulesText("modules: [", "yaml"))[0]![0]).toBe("");
  });
});
