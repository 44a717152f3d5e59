import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { helperPath, parseHelperLine } from "../../src/mirror/helper.js";
import { generateReplicationKey } from "../../src/mirror/key.js";
import { ARGS_LEN, decodeOp, encodeOp, HDR_LEN, wirePath } from "../../src/mirror/wire.js";
import { ExtentLogWriter, parseExtentLog } from "../../src/mirror/extentLog.js";

describe("mirror helper binary", () => {
  it("is shipped for this platform and passes its SHA-256/HMAC/AES-256-GCM known-answer tests (OpenSSL 3's libcrypto)", () => {
    const r = spawnSync(helperPath(), ["selftest"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ event: "selftest", failures: 0, crypto: expect.stringMatching(/^OpenSSL 3\./), hdr: HDR_LEN, args: ARGS_LEN });
    // linked (no dlopen, no hand-declared prototypes): the loader resolves libcrypto.so.3 or the helper does not start
    const needed = spawnSync("objdump", ["-p", helperPath()], { encoding: "utf8" }).stdout;
    if (needed) expect(needed).toMatch(/NEEDED\s+libcrypto\.so\.3/);
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
    expect(parseHelperLine('{"event":"auth-failed","reason":"peer failed authentication","refused":true}')).toEqual({ event: "auth-failed", reason: "peer failed authentication", refused: true });
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

describe("wire and extent log codecs", () => {
  it("round-trip operation payloads", () => {
    const p = encodeOp({ off: 2 ** 40, len: 7, mode: 0o100644, uid: 1000, gid: 1001, flags: 3, mtimeS: 1_700_000_000, mtimeNs: 5 }, "/a/b", "/c", Buffer.from("payload"));
    const d = decodeOp(p);
    expect(d.args).toMatchObject({ off: 2 ** 40, len: 7, mode: 0o100644, uid: 1000, gid: 1001, flags: 3, mtimeS: 1_700_000_000, mtimeNs: 5 });
    expect([d.path, d.path2, d.data.toString()]).toEqual(["/a/b", "/c", "payload"]);
  });
  it("normalises paths and refuses to leave the directory", () => {
    expect(wirePath("a//b/./c")).toBe("/a/b/c");
    expect(wirePath("")).toBe("/");
    expect(() => wirePath("a/../../etc")).toThrow(RangeError);
  });
  it("extent log: records survive, a torn tail is cut at the last good record", () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-log-"));
    try {
      const path = join(dir, "log");
      const w = new ExtentLogWriter(path);
      w.append(2, 0, 42, { off: 4096, len: 8192 }, "/f", "", Buffer.alloc(8192));
      w.append(10, 0, 0, {}, "/f", "/g");
      w.syncNow();
      w.close();
      const full = readFileSync(path);
      const parsed = parseExtentLog(full);
      expect(parsed.records.map((r) => [r.op, r.ino, r.args.off, r.args.len, r.path, r.path2, r.data.length])).toEqual([
        [2, 42, 4096, 8192, "/f", "", 0],
        [10, 0, 0, 0, "/f", "/g", 0],
      ]);
      const torn = parseExtentLog(full.subarray(0, full.length - 3));
      expect(torn.records.length).toBe(1);
      const corrupt = Buffer.from(full);
      corrupt[50] = (corrupt[50] as number) ^ 0xff;
      expect(parseExtentLog(corrupt).records.length).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
