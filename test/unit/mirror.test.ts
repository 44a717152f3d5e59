import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { helperPath, parseHelperLine } from "../../src/mirror/helper.js";
import { generateReplicationKey } from "../../src/mirror/key.js";

describe("mirror helper binary", () => {
  it("is shipped for this platform and passes its SHA-256/HMAC known-answer tests", () => {
    const r = spawnSync(helperPath(), ["selftest"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ event: "selftest", failures: 0 });
    const builtin = spawnSync(helperPath(), ["selftest"], { encoding: "utf8", env: { ...process.env, HF_NO_LIBCRYPTO: "1" } });
    expect(JSON.parse(builtin.stdout)).toEqual({ event: "selftest", failures: 0, sha256: "builtin" });
  });
  it("rejects an unknown mode and incomplete options with a usage message", () => {
    expect(spawnSync(helperPath(), ["bogus"], { encoding: "utf8" }).status).toBe(2);
    const r = spawnSync(helperPath(), ["secondary", "--backing", "/tmp"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/usage: holdfast-replicator secondary/);
  });
  it("refuses a key file shorter than 16 bytes", () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-key-"));
    try {
      const short = join(dir, "k");
      spawnSync("sh", ["-c", `printf 'short' > ${short}`]);
      const r = spawnSync(helperPath(), ["secondary", "--backing", dir, "--listen", "127.0.0.1:0", "--key-file", short], { encoding: "utf8", timeout: 5000 });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/at least 16 bytes/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("helper events", () => {
  it("decodes known events, ignores unknown lines, reports malformed known events", () => {
    expect(parseHelperLine('{"event":"degraded","reason":"ack timeout","logged":3}')).toEqual({ event: "degraded", reason: "ack timeout", logged: 3 });
    expect(parseHelperLine('{"event":"resync-progress","bytes":5,"total":10,"percent":50.0}')).toMatchObject({ percent: 50 });
    expect(parseHelperLine("not json")).toBeUndefined();
    expect(parseHelperLine('{"event":"something-new","x":1}')).toBeUndefined();
    expect(parseHelperLine('{"event":"degraded","reason":7}')).toBeInstanceOf(Error);
  });
});

describe("FileReplicator options", () => {
  it("are validated with path-precise errors", () => {
    const bad = () =>
      new FileReplicator({ role: "primary", backingDir: "/a", mountPoint: "/m", keyFile: "/k", peer: { host: "198.18.0.2", port: "x" as unknown as number } });
    expect(bad).toThrow(ConfigError);
    expect(bad).toThrow(/peer\.port/);
  });
  it("mount helpers are for primaries only", () => {
    const s = new FileReplicator({ role: "secondary", backingDir: "/b", keyFile: "/k", listen: { host: "198.18.0.2", port: 0 } });
    expect(() => s.mountPath()).toThrow(/primary/);
    expect(() => s.resync("log")).toThrow(/primary/);
  });
  it("commandInMount enters the helper's mount namespace only in private mode", () => {
    const h = new FileReplicator({ role: "primary", backingDir: "/a", mountPoint: "/m", keyFile: "/k", peer: { host: "::1", port: 1 }, mountNamespace: "host" });
    expect(h.commandInMount(["ls", "/m"])).toEqual(["ls", "/m"]);
    expect(h.mountPath("x/y")).toBe("/m/x/y");
  });
});

describe("generateReplicationKey", () => {
  it("writes 32 random bytes with mode 0600 and never overwrites", () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-key-"));
    try {
      const p = join(dir, "key");
      const k = generateReplicationKey(p);
      expect(k.length).toBe(32);
      expect(readFileSync(p).equals(k)).toBe(true);
      expect(statSync(p).mode & 0o777).toBe(0o600);
      expect(() => generateReplicationKey(p)).toThrow(/EEXIST/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
