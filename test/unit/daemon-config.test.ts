/** The daemon config: path-precise problems (all at once), defaults, relative paths, tokens, redaction. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseTokensText, hashToken } from "../../examples/daemon/auth.js";
import { checkConfigFile, decodeConfig, loadConfig, redactedConfig } from "../../examples/daemon/config.js";
import { ConfigError } from "../../src/core/errors.js";
import { tempSetup, TOKENS } from "./daemon-helpers.js";

describe("daemon config", () => {
  it("loads a valid file with defaults and paths relative to the file", () => {
    const { dir, file } = tempSetup();
    const cfg = loadConfig(file);
    expect(cfg.nodeId).toBe("a");
    expect(cfg.keyFile).toBe(join(dir, "cluster.key"));
    expect(cfg.logDir).toBe(join(dir, "logs"));
    expect(cfg.api.bind).toBe("127.0.0.1");
    expect(cfg.api.tokens.map((t) => `${t.name}:${t.role}`)).toEqual(["ops:admin", "ctl:control", "watcher:monitor"]);
    expect(cfg.modules[0]?.hooks.start_both).toBe(join(dir, "start.sh"));
    expect(cfg.modules[0]?.hookTimeout).toBe(60_000);
    expect(cfg.nodes[0]?.apiUrl).toBe("http://127.0.0.1:9453");
    expect(cfg.preset).toBe("lan");
    expect(checkConfigFile(file)).toEqual([]);
  });

  it("reads YAML too", () => {
    const { dir } = tempSetup();
    const yaml = join(dir, "h.yaml");
    writeFileSync(yaml, "cluster:\n  id: y\n  keyFile: cluster.key\n  nodes:\n    - { id: a, addresses: [198.18.0.10] }\nnode: a\n");
    const cfg = loadConfig(yaml);
    expect(cfg.clusterId).toBe("y");
    expect(cfg.modules).toEqual([]);
  });

  it("reports every structural problem with its path and value, unknown keys included", () => {
    const { dir } = tempSetup();
    const e = catchConfig(() =>
      decodeConfig({ cluster: { id: "", keyFile: "k", nodes: [], colour: "red" }, api: { port: 70000, tokens: [{ name: "x", role: "boss", sha256: "zz" }] }, modlues: [] }, { file: join(dir, "x.json") }),
    );
    const byPath = Object.fromEntries(e.problems.map((p) => [p.path, p.value]));
    expect(byPath).toMatchObject({ "cluster.id": "", "cluster.colour": "red", "api.port": 70000, "api.tokens.0.role": "boss", "api.tokens.0.sha256": "zz", modlues: [] });
  });

  it("reports the cross-checks all at once: node id, addresses, key file, modules, checkers, hooks, defaultPrimary", () => {
    const { dir } = tempSetup();
    const e = catchConfig(() =>
      decodeConfig(
        {
          cluster: { id: "c", keyFile: "missing.key", nodes: [{ id: "a", addresses: ["127.0.0.1", "nope"] }] },
          node: "b",
          modules: [
            { name: "web", kind: "farmish" },
            { name: "db", kind: "mirror", hooks: { start_prim: "./absent.sh" }, mirror: { defaultPrimary: "zz" }, checkers: [{ type: "tcp", host: "127.0.0.1", port: "x" }] },
            { name: "db", kind: "farm" },
          ],
        },
        { file: join(dir, "x.json") },
      ),
    );
    const paths = e.problems.map((p) => p.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        "node",
        "cluster.nodes.0.addresses.1",
        "cluster.keyFile",
        "modules.0.kind",
        "modules.1.hooks.start_prim",
        "modules.1.mirror.defaultPrimary",
        "modules.1.checkers.0.port",
        "modules.2.name",
      ]),
    );
    expect(e.problems.find((p) => p.path === "modules.1.hooks.start_prim")?.value).toBe(join(dir, "absent.sh"));
    expect(e.message).toContain('modules.0.kind: expected "farm" | "mirror", got "farmish"');
  });

  it("--node overrides the file and is checked against the nodes", () => {
    const { file } = tempSetup();
    expect(checkConfigFile(file, { nodeId: "zz" }).map((p) => p.path)).toEqual(["(--node)"]);
  });

  it("parses tokens files: plain tokens are hashed, sha256: entries kept, bad lines named", () => {
    const t = parseTokensText(`control ${TOKENS.control} ci bot\nadmin sha256:${hashToken("x")}\n# comment\n`);
    expect(t).toEqual([
      { role: "control", sha256: hashToken(TOKENS.control), name: "ci bot" },
      { role: "admin", sha256: hashToken("x"), name: "tokens file:2" },
    ]);
    const e = catchConfig(() => parseTokensText("root abc\nadmin sha256:12\n", "api.tokensFile"));
    expect(e.problems.map((p) => p.path)).toEqual(["api.tokensFile.line 1", "api.tokensFile.line 2"]);
  });

  it("redacts token hashes in the snapshot copy", () => {
    const { file } = tempSetup();
    const text = JSON.stringify(redactedConfig(loadConfig(file)));
    expect(text).not.toContain(hashToken(TOKENS.admin));
    expect(text).toContain("(redacted)");
  });
});

function catchConfig(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("the example config", () => {
  it("decodes (files it names aside: they live on a real node)", () => {
    const cfg = loadConfig(join(import.meta.dirname, "../../examples/daemon/holdfast.example.yaml"), { checkFiles: false });
    expect(cfg.modules.map((m) => `${m.name}:${m.kind}`)).toEqual(["web:farm", "db:mirror"]);
    expect(cfg.nodes.map((n) => n.apiUrl)).toEqual(["http://198.18.0.10:9453", "http://198.18.0.11:9453"]);
    expect(cfg.replication).toEqual({ db: { mode: "none" } });
  });
});
