/**
 * API mode (no FUSE) against the compiled secondary on loopback, and attacks on the secondary's stream with
 * the TypeScript implementation of the wire protocol: a frame with a path outside the directory, a tampered
 * frame, a replayed frame.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ApiReplicator } from "../../src/mirror/ApiReplicator.js";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { pollUntil, snapshotTree, treeDiff } from "../../src/mirror/testing.js";
import { encodeOp, Op, WireConnection, type Frame } from "../../src/mirror/wire.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Env {
  root: string;
  a: string;
  b: string;
  key: string;
  port: () => number;
  startSecondary: () => Promise<FileReplicator>;
  stopSecondary: () => Promise<void>;
}

async function setup(tag: string): Promise<Env> {
  const root = join("/tmp", `hf-api-${tag}-${process.pid}-${randomBytes(3).toString("hex")}`);
  const a = join(root, "a");
  const b = join(root, "b");
  mkdirSync(a, { recursive: true });
  mkdirSync(b, { recursive: true });
  const key = join(root, "key");
  writeFileSync(key, randomBytes(32), { mode: 0o600 });
  let port = 0;
  let sec: FileReplicator | undefined;
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  cleanups.push(async () => {
    await sec?.stop();
  });
  const startSecondary = async (): Promise<FileReplicator> => {
    sec = new FileReplicator({ role: "secondary", backingDir: b, keyFile: key, listen: { host: "127.0.0.1", port }, restart: false });
    await sec.start();
    port = sec.port as number;
    return sec;
  };
  await startSecondary();
  return { root, a, b, key, port: () => port, startSecondary, stopSecondary: async () => sec?.stop() };
}

function api(env: { a: string; key: string; port: () => number }, extra: Partial<ConstructorParameters<typeof ApiReplicator>[0]> = {}): ApiReplicator {
  const r = new ApiReplicator({ baseDir: env.a, keyFile: env.key, peer: { host: "127.0.0.1", port: env.port() }, reconnectMs: 100, ...extra });
  cleanups.push(() => r.stop());
  return r;
}

describe("mirror API mode (no FUSE)", () => {
  it("write and fsync return only when the secondary has the data", async () => {
    const env = await setup("sync");
    const rep = api(env);
    const synced = new Promise((r) => rep.once("synced", r));
    rep.start();
    await synced;
    await rep.mkdir("db");
    const f = await rep.open("db/journal", "a");
    let expected = "";
    for (let i = 0; i < 100; i++) {
      const rec = Buffer.from(`entry ${i} ${randomBytes(6).toString("hex")}\n`);
      await f.write(rec);
      expected += rec.toString();
      expect(readFileSync(join(env.b, "db/journal"), "utf8")).toBe(expected);
      if (i % 10 === 0) await f.datasync();
    }
    const page = await rep.open("db/table", "w");
    await Promise.all([page.write(randomBytes(8192), 0), page.write(randomBytes(8192), 8192), page.write(randomBytes(100), 4000)]);
    await page.fsync();
    await page.truncate(12_000);
    page.close();
    f.close();
    await rep.rename("db/table", "db/table2");
    await rep.unlink("db/journal");
    expect(treeDiff(snapshotTree(env.a), snapshotTree(env.b), { mtimes: true })).toEqual([]);
    await expect(rep.open("../outside")).rejects.toThrow(/escapes/);
  });

  it("degrades when the secondary goes, logs, and resyncs about the modified bytes when it returns", async () => {
    const env = await setup("resync");
    const rep = api(env, { ackTimeoutMs: 300 });
    const synced = new Promise((r) => rep.once("synced", r));
    rep.start();
    await synced;
    const f = await rep.open("data", "w");
    await f.write(randomBytes(4 << 20), 0);
    const degraded = new Promise((r) => rep.once("degraded", r));
    await env.stopSecondary();
    await degraded;
    let modified = 0;
    for (let i = 0; i < 64; i++) {
      await f.write(randomBytes(4096), i * 65536);
      modified += 4096;
    }
    const n = await rep.open("new", "w");
    await n.write(randomBytes(100_000), 0);
    modified += 100_000;
    n.close();
    await rep.rename("new", "renamed");
    expect(rep.state).toBe("degraded");
    const before = rep.resyncBytes;
    const again = new Promise((r) => rep.once("synced", r));
    await env.startSecondary();
    await again;
    const sent = rep.resyncBytes - before;
    expect(sent).toBeGreaterThanOrEqual(modified);
    expect(sent).toBeLessThanOrEqual(1.2 * modified);
    f.close();
    expect(treeDiff(snapshotTree(env.a), snapshotTree(env.b), { mtimes: true })).toEqual([]);
  });
});

describe("secondary stream verification", () => {
  /** An authenticated connection made with the TS wire code; returns it, received frames and the close reason. */
  async function dial(env: { key: string; port: () => number }): Promise<{ conn: WireConnection; frames: Frame[]; closed: () => string | undefined }> {
    const sock = connect(env.port(), "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    const frames: Frame[] = [];
    let reason: string | undefined;
    const conn = await WireConnection.handshakePrimary(sock, readFileSync(env.key), (f) => frames.push(f), (r) => (reason = r));
    return { conn, frames, closed: () => reason };
  }

  it("refuses a path that escapes the directory (EPERM), and keeps serving", async () => {
    const env = await setup("escape");
    const { conn, frames } = await dial(env);
    conn.send(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, "/../escaped"));
    conn.send(Op.CREATE, 0, 2n, encodeOp({ mode: 0o644 }, "/inside"));
    await pollUntil(() => frames.length >= 2, 5000, "two acks");
    expect(frames[0]?.payload.readInt32LE(0)).toBe(1); // EPERM
    expect(frames[1]?.payload.readInt32LE(0)).toBe(0);
    expect(existsSync(join(env.root, "escaped"))).toBe(false);
    expect(existsSync(join(env.b, "inside"))).toBe(true);
  });

  it("drops the stream on a tampered frame and on a replayed frame; nothing is applied", async () => {
    const env = await setup("tamper");
    const d1 = await dial(env);
    const frame = d1.conn.encode(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, "/tampered"));
    frame[frame.length - 40] = (frame[frame.length - 40] as number) ^ 1; // a byte of the path
    d1.conn.socket.write(frame);
    await pollUntil(() => d1.closed() !== undefined, 5000, "connection dropped");
    expect(existsSync(join(env.b, "tampered"))).toBe(false);

    const d2 = await dial(env);
    const ok = d2.conn.encode(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, "/once"));
    d2.conn.socket.write(ok);
    await pollUntil(() => d2.frames.length >= 1, 5000, "ack");
    rmSync(join(env.b, "once"));
    d2.conn.socket.write(ok); // the same bytes again: the counter in the MAC no longer matches
    await pollUntil(() => d2.closed() !== undefined, 5000, "connection dropped");
    expect(existsSync(join(env.b, "once"))).toBe(false);
    expect(d2.frames.length).toBe(1);
  });
});
