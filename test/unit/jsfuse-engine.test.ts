import { spawnSync } from "node:child_process";
import { constants } from "node:fs";
import { readFileSync, statSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { NotSupportedError } from "../../src/core/errors.js";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { chooseEngine, createFileReplicator, JsFuseReplicator, parseDaemonArgs, type EngineProbe } from "../../src/mirror/jsfuse/index.js";
import { daemonArgv, jsFuseLauncher, shQuote } from "../../src/mirror/jsfuse/JsFuseReplicator.js";
import { backingOpenFlags, fuseErrno } from "../../src/mirror/jsfuse/passthrough.js";

const all: EngineProbe = { helper: { path: "/x/holdfast-replicator" }, helperRuns: true, devFuse: true, js: true };
const noHelper: EngineProbe = { ...all, helper: { missing: "holdfast-replicator not found for linux-arm64" }, helperRuns: false };

describe("chooseEngine", () => {
  it("auto takes the helper when it runs, else the JS engine, and says why", () => {
    expect(chooseEngine("primary", "auto", all)).toEqual({ engine: "native", reason: "auto: the compiled helper runs here" });
    const c = chooseEngine("primary", "auto", noHelper);
    expect(c.engine).toBe("js");
    expect(c.reason).toContain("linux-arm64");
    const notRunning = chooseEngine("primary", "auto", { ...all, helperRuns: false });
    expect(notRunning.engine).toBe("js");
    expect(notRunning.reason).toContain("/x/holdfast-replicator does not run here");
  });
  it("explicit engines are honoured or refused with a NotSupportedError naming what is missing", () => {
    expect(chooseEngine("primary", "js", all).engine).toBe("js");
    expect(chooseEngine("primary", "native", all).engine).toBe("native");
    expect(() => chooseEngine("primary", "native", noHelper)).toThrow(/linux-arm64/);
    expect(() => chooseEngine("primary", "js", { ...all, js: { missing: "libfuse.so.2: cannot open" } })).toThrow(/libfuse\.so\.2/);
  });
  it("no /dev/fuse: no FUSE engine at all, the API mode is named", () => {
    for (const e of ["auto", "js", "native"] as const) {
      let err: unknown;
      try {
        chooseEngine("primary", e, { ...all, devFuse: false });
      } catch (x) {
        err = x;
      }
      expect(err).toBeInstanceOf(NotSupportedError);
      expect((err as Error).message).toMatch(/\/dev\/fuse.*ApiReplicator/);
    }
  });
  it("the secondary is always the compiled helper (no FUSE needed)", () => {
    expect(chooseEngine("secondary", "auto", { ...all, devFuse: false }).engine).toBe("native");
    expect(() => chooseEngine("secondary", "auto", noHelper)).toThrow(NotSupportedError);
    expect(() => chooseEngine("secondary", "js", all)).toThrow(/secondary/);
  });
  it("nothing usable: both reasons in one error", () => {
    expect(() => chooseEngine("primary", "auto", { ...noHelper, js: { missing: "no fuse-native" } })).toThrow(/linux-arm64.*no fuse-native/);
  });
});

describe("createFileReplicator", () => {
  const base = { role: "primary" as const, backingDir: "/tmp/a", mountPoint: "/tmp/m", keyFile: "/tmp/k", peer: { host: "127.0.0.1", port: 1 } };
  it("builds the chosen engine and logs one line with the reason", () => {
    const lines: string[] = [];
    const n = createFileReplicator({ ...base, log: (l) => lines.push(l) }, () => all);
    expect(n).toBeInstanceOf(FileReplicator);
    expect(n).not.toBeInstanceOf(JsFuseReplicator);
    expect(n.engine).toBe("native");
    const j = createFileReplicator({ ...base, log: (l) => lines.push(l) }, () => noHelper);
    expect(j).toBeInstanceOf(JsFuseReplicator);
    expect(j.engine).toBe("js");
    expect(j.engineReason).toContain("fallback");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/primary data path = js \(auto: compiled helper unusable/);
    // the engine option does not leak into the validated options
    expect("engine" in j.options).toBe(false);
  });
  it("JsFuseReplicator refuses the secondary role", () => {
    expect(() => new JsFuseReplicator({ role: "secondary", backingDir: "/tmp/b", keyFile: "/tmp/k", listen: { host: "127.0.0.1", port: 0 } })).toThrow(NotSupportedError);
  });
});

describe("daemon command line (the helper's primary options)", () => {
  const argv = ["primary", "--backing", "/d/a", "--mount", "/d/m", "--peer", "[fd00:4844::2]:7000", "--key-file", "/d/k", "--log", "/d/.a.hfextents"];
  it("parses the helper's options, IPv6 peers included", () => {
    const a = parseDaemonArgs([...argv, "--ack-timeout-ms", "500", "--threads", "16"]);
    expect(a).toMatchObject({ backing: "/d/a", mount: "/d/m", peer: { host: "fd00:4844::2", port: 7000 }, keyFile: "/d/k", ackTimeoutMs: 500, reconnectMs: 500, initial: "log", standalone: false });
    expect(parseDaemonArgs(["primary", "--standalone", "--backing", "/a", "--mount", "/m", "--log", "/l"]).peer).toBeUndefined();
    const f = parseDaemonArgs([...argv, "--exclude", "*.tmp", "--include", "data/**", "--exclude", "cache/"]);
    expect([f.include, f.exclude]).toEqual([["data/**"], ["*.tmp", "cache/"]]);
  });
  it("refuses what it cannot do, by name", () => {
    expect(() => parseDaemonArgs(["secondary", "--backing", "/b"])).toThrow(/primary only/);
    expect(() => parseDaemonArgs([...argv, "--compress"])).toThrow(/--compress is not supported/);
    expect(parseDaemonArgs([...argv, "--encrypt"]).encrypt).toBe(true);
    expect(() => parseDaemonArgs(argv.filter((x) => x !== "--log" && x !== "/d/.a.hfextents"))).toThrow(/--log is required/);
    expect(() => parseDaemonArgs([...argv, "--ack-timeout-ms", "-3"])).toThrow(/non-negative/);
    expect(() => parseDaemonArgs([...argv, "--initial", "magic"])).toThrow(/unknown mode/);
    expect(() => parseDaemonArgs([...argv, "--exclude", "/"])).toThrow(/bad pattern/);
  });
});

describe("passthrough helpers", () => {
  it("open flags: creation, truncation, append and O_DIRECT stay with the kernel", () => {
    const f = backingOpenFlags(constants.O_RDWR | constants.O_APPEND | constants.O_DIRECT | constants.O_TRUNC | constants.O_SYNC);
    expect(f.truncate).toBe(true);
    expect(f.flags).toBe(constants.O_RDWR | constants.O_SYNC);
    expect(backingOpenFlags(constants.O_RDONLY).truncate).toBe(false);
  });
  it("errno mapping: negative errno from the error code, EIO when there is none", () => {
    expect(fuseErrno(Object.assign(new Error("x"), { code: "ENOENT" }))).toBe(-2);
    expect(fuseErrno(Object.assign(new Error("x"), { code: "ENOTEMPTY" }))).toBe(-39);
    expect(fuseErrno(new Error("plain"))).toBe(-5);
  });
});

describe("launcher", () => {
  it("quotes any word for sh", () => {
    const words = ["plain", "it's", "a b", "$HOME", '"q"', "back\\slash"];
    const r = spawnSync("sh", ["-c", `printf '%s\\n' ${words.map(shQuote).join(" ")}`], { encoding: "utf8" });
    expect(r.stdout.split("\n").slice(0, -1)).toEqual(words);
  });
  it("is an executable script that passes its arguments after `--` to the daemon entry", () => {
    const argv = daemonArgv("/usr/bin/node", "file:///x/index.js");
    expect(argv.at(-1)).toBe("--");
    expect(argv).not.toContain("--import");
    expect(daemonArgv("/usr/bin/node", "file:///x/a.ts", "file:///l.mjs").slice(1, 3)).toEqual(["--import", "file:///l.mjs"]);
    const path = jsFuseLauncher();
    expect(statSync(path).mode & 0o111).not.toBe(0);
    const text = readFileSync(path, "utf8");
    expect(text.startsWith("#!/bin/sh\nexec ")).toBe(true);
    expect(text).toContain("runJsFuseDaemon");
    // run from TypeScript source here, so the tsx loader is in the command
    expect(text).toContain("--import");
    // the daemon rejects a bad command line through the launcher, with its exit code and message
    const r = spawnSync(path, ["secondary"], { encoding: "utf8", timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("primary only");
  });
});
