/**
 * Hardening of the replication port and of path resolution (loopback, root):
 * 1. hostile connections (silent, or one byte at a time) do not hold up a real primary's handshake: each
 *    handshake runs on its own, cut at its 2 s deadline; failures are counted (stats line) and logged at a
 *    bounded rate;
 * 2. a path through a symlink leading out of the backing directory is refused by the secondary (both an
 *    absolute and a relative symlink, every kind of operation), by ApiReplicator (`open("link/file")`), while
 *    symlinks as last components still replicate as symlinks (PostgreSQL's `pg_wal` link, through the mount).
 */
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ApiReplicator } from "../../src/mirror/ApiReplicator.js";
import { FileReplicator, type ReplicatorMetrics } from "../../src/mirror/FileReplicator.js";
import { pollUntil, startLoopbackPair } from "../../src/mirror/testing.js";
import { encodeOp, Op, WireConnection, type Frame, type OpArgs } from "../../src/mirror/wire.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const EXDEV = 18;
const canFuse = process.getuid?.() === 0 && existsSync("/dev/fuse");

interface Env {
  root: string;
  a: string;
  b: string;
  outside: string;
  key: string;
  port: number;
  sec: FileReplicator;
  authFailed: number;
  errors: string[];
  metrics: ReplicatorMetrics[];
}

async function setup(tag: string): Promise<Env> {
  const root = join("/tmp", `hf-hard-${tag}-${process.pid}-${randomBytes(3).toString("hex")}`);
  const a = join(root, "a");
  const b = join(root, "b");
  const outside = join(root, "outside");
  for (const d of [a, b, outside]) mkdirSync(d, { recursive: true });
  writeFileSync(join(outside, "victim"), "orig", { mode: 0o644 });
  const key = join(root, "key");
  writeFileSync(key, randomBytes(32), { mode: 0o600 });
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const sec = new FileReplicator({ role: "secondary", backingDir: b, keyFile: key, listen: { host: "127.0.0.1", port: 0 }, restart: false });
  const env: Env = { root, a, b, outside, key, port: 0, sec, authFailed: 0, errors: [], metrics: [] };
  sec.on("authFailed", () => env.authFailed++);
  sec.on("error", (e) => env.errors.push(e.message));
  sec.on("metrics", (m) => env.metrics.push(m));
  cleanups.push(() => sec.stop());
  await sec.start();
  env.port = sec.port as number;
  return env;
}

async function dial(env: Env): Promise<{ conn: WireConnection; frames: Frame[]; closed: () => string | undefined }> {
  const sock = connect(env.port, "127.0.0.1");
  await new Promise((res, rej) => {
    sock.once("connect", res);
    sock.once("error", rej);
  });
  const frames: Frame[] = [];
  let reason: string | undefined;
  const conn = await WireConnection.handshakePrimary(sock, readFileSync(env.key), (f) => frames.push(f), (r) => (reason = r));
  cleanups.push(() => void sock.destroy());
  return { conn, frames, closed: () => reason };
}

type Step = [op: number, args: OpArgs, path: string, path2?: string, data?: Uint8Array];

/** Sends `steps` on a fresh stream; returns the ack statuses (the stream ends at the first refusal). */
async function run(env: Env, steps: Step[]): Promise<number[]> {
  const d = await dial(env);
  steps.forEach(([op, args, path, path2, data], i) => d.conn.send(op, 0, BigInt(i + 1), encodeOp(args, path, path2, data)));
  await pollUntil(() => d.frames.length >= steps.length || d.closed() !== undefined, 5000, "acks or the end of the stream");
  await new Promise((r) => setTimeout(r, 50));
  return d.frames.map((f) => f.payload.readInt32LE(0));
}

describe("replication port: hostile connections", () => {
  it("200 silent and slow-drip connections do not delay a primary's handshake; failures counted and rate-limited", async () => {
    const env = await setup("flood");
    const started = performance.now();
    const floodMs = 7000;
    const socks = new Set<Socket>();
    let opened = 0;
    const maxOpened = 4000; // bound on the whole flood (each cut connection is replaced while it lasts)
    const open = (drip: boolean): void => {
      if (performance.now() - started > floodMs || opened >= maxOpened) return;
      opened++;
      const s = connect(env.port, "127.0.0.1");
      socks.add(s);
      let timer: ReturnType<typeof setInterval> | undefined;
      if (drip) timer = setInterval(() => s.writable && s.write(Buffer.from([0x41])), 300);
      s.on("error", () => undefined);
      s.on("close", () => {
        if (timer) clearInterval(timer);
        socks.delete(s);
        open(drip); // keep the pressure on
      });
    };
    cleanups.push(() => {
      opened = maxOpened;
      for (const s of socks) s.destroy();
    });
    for (let i = 0; i < 200; i++) open(i % 2 === 1);
    await new Promise((r) => setTimeout(r, 500));
    const handshakeMs: number[] = [];
    for (let round = 0; round < 6; round++) {
      const t0 = performance.now();
      const d = await dial(env);
      handshakeMs.push(performance.now() - t0);
      d.conn.send(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, `/r${round}`));
      await pollUntil(() => d.frames.length >= 1, 2000, "ack under the flood");
      expect(d.frames[0]?.payload.readInt32LE(0)).toBe(0);
      d.conn.socket.destroy();
      await new Promise((r) => setTimeout(r, 800));
    }
    console.log(`handshake under flood (ms): ${handshakeMs.map((m) => m.toFixed(0)).join(" ")}, connections opened ${opened}`);
    for (const ms of handshakeMs) expect(ms).toBeLessThan(1000);
    for (let i = 0; i < 6; i++) expect(existsSync(join(env.b, `r${i}`))).toBe(true);
    // the hostile connections were cut (deadline 2 s, or evicted): counted in the stats line
    await pollUntil(() => (env.metrics.at(-1)?.handshakeFailures ?? 0) >= 200, 5000, "handshakeFailures in the stats line");
    // one log line per failure, at most 5 a second (the rest counted as suppressed)
    const elapsedS = (performance.now() - started) / 1000;
    expect(env.authFailed).toBeGreaterThan(0);
    expect(env.authFailed).toBeLessThanOrEqual(5 * (Math.ceil(elapsedS) + 1));
  }, 30_000);

  it.skipIf(!canFuse)("the C primary reconnects within 1 s while 200 hostile connections are open", async () => {
    const pair = await startLoopbackPair("flood-c", { reconnectMs: 100, permit: "always" });
    cleanups.push(() => pair.close());
    const socks: Socket[] = [];
    cleanups.push(() => socks.forEach((s) => s.destroy()));
    for (let i = 0; i < 200; i++) {
      const s = connect(pair.secondary.port as number, "127.0.0.1");
      s.on("error", () => undefined);
      socks.push(s);
    }
    await new Promise((r) => setTimeout(r, 300));
    for (let round = 0; round < 3; round++) {
      const degraded = pair.primary.waitFor("degraded", 5000);
      const connected = pair.primary.waitFor("connected", 5000);
      pair.primary.resync("log"); // cycles the link
      await degraded;
      const t0 = performance.now();
      await connected;
      const ms = performance.now() - t0;
      console.log(`C primary reconnected in ${ms.toFixed(0)} ms`);
      expect(ms).toBeLessThan(1000);
      await pair.primary.waitFor("synced", 5000);
      await writeFile(pair.primary.mountPath(`c${round}`), "x");
      expect(readFileSync(join(pair.b, `c${round}`), "utf8")).toBe("x");
    }
  }, 60_000);
});

describe("symlink escape", () => {
  it("the secondary refuses every operation through a symlink leading out of its directory and writes nothing outside", async () => {
    const env = await setup("esc");
    const victimMode = statSync(join(env.outside, "victim")).mode;
    // absolute and relative symlinks to the outside directory, created by the stream (allowed: a symlink)
    expect(await run(env, [[Op.SYMLINK, {}, "/esc", env.outside], [Op.SYMLINK, {}, "/rel", "../outside"], [Op.SYMLINK, {}, "/fin", join(env.outside, "victim")], [Op.CREATE, { mode: 0o644 }, "/x"]])).toEqual([0, 0, 0, 0]);
    const data = Buffer.from("pwned");
    const attacks: Step[] = [
      [Op.CREATE, { mode: 0o644 }, "/esc/pwned"],
      [Op.CREATE, { mode: 0o644 }, "/rel/pwned"],
      [Op.WRITE, { off: 0, len: data.length }, "/esc/victim", "", data],
      [Op.TRUNCATE, { off: 0 }, "/rel/victim"],
      [Op.MKDIR, { mode: 0o755 }, "/esc/d"],
      [Op.SYMLINK, {}, "/esc/l", "/"],
      [Op.UNLINK, {}, "/esc/victim"],
      [Op.RENAME, {}, "/x", "/esc/x"],
      [Op.LINK, {}, "/x", "/rel/x"],
      [Op.CHMOD, { mode: 0o777 }, "/esc/victim"],
      [Op.CHOWN, { uid: 12345, gid: 12345 }, "/rel/victim"],
      [Op.SETXATTR, { flags: 0 }, "/esc/victim", "user.pwned", Buffer.from("1")],
    ];
    for (const step of attacks) {
      const st = await run(env, [step]);
      expect(st, `${step[2]} (op ${step[0]})`).toEqual([EXDEV]);
    }
    // a symlink as the last component is not followed either: a write or chmod of /fin does not reach the victim
    expect((await run(env, [[Op.WRITE, { off: 0, len: data.length }, "/fin", "", data]]))[0]).not.toBe(0);
    expect((await run(env, [[Op.CHMOD, { mode: 0o777 }, "/fin"]]))[0]).not.toBe(0);
    expect(readFileSync(join(env.outside, "victim"), "utf8")).toBe("orig");
    const vst = statSync(join(env.outside, "victim"));
    expect(vst.mode).toBe(victimMode);
    expect(vst.uid).not.toBe(12345);
    expect(existsSync(join(env.outside, "pwned"))).toBe(false);
    expect(existsSync(join(env.outside, "d"))).toBe(false);
    expect(existsSync(join(env.outside, "l"))).toBe(false);
    expect(existsSync(join(env.outside, "x"))).toBe(false);
    expect(existsSync(join(env.b, "x"))).toBe(true);
    // logged: the supervisor reports each refusal with the path and why
    await pollUntil(() => env.errors.filter((m) => /refused/.test(m)).length >= attacks.length, 3000, "apply-error lines");
    expect(env.errors.some((m) => m.includes("/esc/pwned") && /leave the backing directory/.test(m))).toBe(true);
    // symlinks as last components still replicate as symlinks; an in-tree one may be a directory component
    expect(await run(env, [[Op.SYMLINK, {}, "/abs", "/var/lib/elsewhere"], [Op.MKDIR, { mode: 0o755 }, "/waldir"], [Op.SYMLINK, {}, "/wal", "waldir"], [Op.CREATE, { mode: 0o644 }, "/wal/f"]])).toEqual([0, 0, 0, 0]);
    expect(readlinkSync(join(env.b, "abs"))).toBe("/var/lib/elsewhere");
    expect(readlinkSync(join(env.b, "wal"))).toBe("waldir");
    expect(existsSync(join(env.b, "waldir", "f"))).toBe(true);
  }, 60_000);

  it("ApiReplicator refuses open/mkdir/rename/unlink through a symlinked directory, and a symlinked last component", async () => {
    const env = await setup("api");
    symlinkSync(env.outside, join(env.a, "link"));
    symlinkSync(join(env.outside, "victim"), join(env.a, "fin"));
    const r = new ApiReplicator({ baseDir: env.a, keyFile: env.key, peer: { host: "127.0.0.1", port: env.port }, reconnectMs: 100, permit: "always" });
    cleanups.push(() => r.stop());
    const synced = new Promise((res) => r.once("synced", res));
    r.start();
    await synced;
    await expect(r.open("link/file", "w")).rejects.toThrow(/\/link is a symlink; a path through a symlink is refused/);
    await expect(r.open("link/file", "w")).rejects.toMatchObject({ code: "ELOOP" });
    await expect(r.open("link/victim", "r+")).rejects.toMatchObject({ code: "ELOOP" });
    await expect(r.open("fin", "r+")).rejects.toMatchObject({ code: "ELOOP" });
    await expect(r.mkdir("link/d")).rejects.toMatchObject({ code: "ELOOP" });
    const f = await r.open("x", "w");
    await f.close();
    await expect(r.rename("x", "link/x")).rejects.toMatchObject({ code: "ELOOP" });
    await expect(r.unlink("link/victim")).rejects.toMatchObject({ code: "ELOOP" });
    expect(existsSync(join(env.outside, "file"))).toBe(false);
    expect(existsSync(join(env.outside, "d"))).toBe(false);
    expect(existsSync(join(env.outside, "x"))).toBe(false);
    expect(readFileSync(join(env.outside, "victim"), "utf8")).toBe("orig");
    // normal paths still work and replicate
    await r.mkdir("dir");
    const g = await r.open("dir/file", "w");
    await g.write(Buffer.from("ok"));
    await g.close();
    expect(readFileSync(join(env.b, "dir", "file"), "utf8")).toBe("ok");
  }, 30_000);

  it.skipIf(!canFuse)("through the mount: a pg_wal-style symlink replicates as a symlink and writes through it land beneath", async () => {
    const pair = await startLoopbackPair("pgwal", { permit: "always" });
    cleanups.push(() => pair.close());
    const m = (p: string): string => pair.primary.mountPath(p);
    mkdirSync(m("wal"));
    symlinkSync("wal", m("pg_wal")); // relative, inside the mount
    symlinkSync("/var/lib/postgresql/wal-elsewhere", m("ext")); // absolute (initdb --waldir)
    await writeFile(join(m("pg_wal"), "000000010000000000000001"), "wal");
    expect(lstatSync(join(pair.b, "pg_wal")).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(pair.b, "pg_wal"))).toBe("wal");
    expect(readlinkSync(join(pair.b, "ext"))).toBe("/var/lib/postgresql/wal-elsewhere");
    expect(readFileSync(join(pair.b, "wal", "000000010000000000000001"), "utf8")).toBe("wal");
  }, 60_000);
});
