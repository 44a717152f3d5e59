/**
 * API mode (no FUSE) against the compiled secondary on loopback, and attacks on the secondary's stream with
 * the TypeScript implementation of the wire protocol: a frame with a path outside the directory, a tampered
 * frame, a replayed frame. Encryption (`encrypt` / `--encrypt`): what a TCP proxy between the two sides sees,
 * C<->C (FUSE) and TS<->C (API), a mismatch, a tampered encrypted frame.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
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
  secondary: () => FileReplicator;
}

async function setup(tag: string, encrypt = false): Promise<Env> {
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
    sec = new FileReplicator({ role: "secondary", backingDir: b, keyFile: key, listen: { host: "127.0.0.1", port }, restart: false, encrypt });
    await sec.start();
    port = sec.port as number;
    return sec;
  };
  await startSecondary();
  return { root, a, b, key, port: () => port, startSecondary, stopSecondary: async () => sec?.stop(), secondary: () => sec as FileReplicator };
}

function api(env: { a: string; key: string; port: () => number }, extra: Partial<ConstructorParameters<typeof ApiReplicator>[0]> = {}): ApiReplicator {
  const r = new ApiReplicator({ baseDir: env.a, keyFile: env.key, peer: { host: "127.0.0.1", port: env.port() }, reconnectMs: 100, permit: "always", ...extra });
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

/** An authenticated connection made with the TS wire code; returns it, received frames and the close reason. */
async function dial(env: { key: string; port: () => number }, encrypt = false): Promise<{ conn: WireConnection; frames: Frame[]; closed: () => string | undefined }> {
  const sock = connect(env.port(), "127.0.0.1");
  await new Promise((r) => sock.once("connect", r));
  const frames: Frame[] = [];
  let reason: string | undefined;
  const conn = await WireConnection.handshakePrimary(sock, readFileSync(env.key), (f) => frames.push(f), (r) => (reason = r), { encrypt });
  return { conn, frames, closed: () => reason };
}

/**
 * A TCP proxy on loopback to `target`, recording what the primary sends (at most 64 MiB). `tamperBack()`
 * makes it flip one bit of the next chunk coming back from the secondary.
 */
async function tap(target: () => number): Promise<{ port: number; seen: () => Buffer; server: Server; tamperBack: () => void }> {
  let flipNext = false;
  const chunks: Buffer[] = [];
  let total = 0;
  const socks: Socket[] = [];
  const server = createServer((from) => {
    const to = connect(target(), "127.0.0.1");
    socks.push(from, to);
    from.on("data", (d: Buffer) => {
      if (total < 64 << 20) {
        chunks.push(d);
        total += d.length;
      }
      to.write(d);
    });
    to.on("data", (d: Buffer) => {
      if (flipNext) {
        flipNext = false;
        d = Buffer.from(d);
        const i = d.length - 1; // the last byte of an ack: its tag (or MAC)
        d[i] = (d[i] as number) ^ 1;
      }
      from.write(d);
    });
    const end = (): void => {
      from.destroy();
      to.destroy();
    };
    from.on("close", end);
    to.on("close", end);
    from.on("error", end);
    to.on("error", end);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        server.close(() => r());
      }),
  );
  return {
    port: (server.address() as { port: number }).port,
    seen: () => Buffer.concat(chunks),
    server,
    tamperBack: () => {
      flipNext = true;
    },
  };
}

const canFuse = process.getuid?.() === 0 && existsSync("/dev/fuse");

describe("encrypted stream", () => {
  it.skipIf(!canFuse)("C primary -> C secondary: a marker written through the mount is on the wire only without --encrypt", async () => {
    for (const encrypt of [false, true]) {
      const env = await setup(encrypt ? "enc-c" : "plain-c", encrypt);
      const proxy = await tap(env.port);
      const mnt = join(env.root, "mnt");
      mkdirSync(mnt);
      const prim = new FileReplicator({ role: "primary", backingDir: env.a, mountPoint: mnt, keyFile: env.key, peer: { host: "127.0.0.1", port: proxy.port }, restart: false, encrypt, permit: "always" });
      cleanups.push(() => prim.stop());
      const synced = prim.waitFor("synced", 15_000);
      await prim.start();
      await synced;
      const marker = `holdfast-marker-${randomBytes(8).toString("hex")}`;
      // asynchronous: the proxy runs on this event loop, and the write returns only after the ack crossed it
      await writeFile(prim.mountPath("secret.txt"), `${marker}\n`.repeat(100));
      // the write returned: the secondary has it, so it crossed the proxy
      expect(readFileSync(join(env.b, "secret.txt"), "utf8")).toBe(`${marker}\n`.repeat(100));
      const wire = proxy.seen();
      expect(wire.length).toBeGreaterThan(3000);
      expect(wire.includes(marker)).toBe(!encrypt);
      expect(wire.includes("secret.txt")).toBe(!encrypt); // paths are encrypted too
      // an ack altered on its way back: the C primary drops the link (and goes on alone, then resyncs)
      const degraded = prim.waitFor("degraded", 5000);
      proxy.tamperBack();
      await writeFile(prim.mountPath("after-tamper.txt"), marker);
      expect((await degraded).reason).toBe("frame failed authentication");
      await prim.stop();
    }
  });

  it("ApiReplicator -> C secondary with encrypt: data replicated, the marker never on the wire", async () => {
    const env = await setup("enc-api", true);
    const proxy = await tap(env.port);
    const rep = api({ a: env.a, key: env.key, port: () => proxy.port }, { encrypt: true });
    const synced = new Promise((r) => rep.once("synced", r));
    rep.start();
    await synced;
    const marker = `holdfast-marker-${randomBytes(8).toString("hex")}`;
    const f = await rep.open("journal", "w");
    for (let i = 0; i < 50; i++) await f.write(Buffer.from(`${i} ${marker}\n`));
    await f.datasync();
    f.close();
    await rep.rename("journal", "journal2");
    expect(treeDiff(snapshotTree(env.a), snapshotTree(env.b), { mtimes: true })).toEqual([]);
    expect(readFileSync(join(env.b, "journal2"), "utf8")).toContain(marker);
    const wire = proxy.seen();
    expect(wire.length).toBeGreaterThan(50 * 24);
    expect(wire.includes(marker)).toBe(false);
  });

  it("a mismatch fails the handshake with a clear reason on both sides", async () => {
    // plain primary (TS) -> encrypting secondary (C): both say why
    const enc = await setup("enc-mismatch", true);
    const secSaw = enc.secondary().waitFor("authFailed", 5000);
    await expect(dial(enc, false)).rejects.toThrow(/encryption mismatch: the secondary uses --encrypt, this primary does not/);
    expect(await secSaw).toMatchObject({ reason: expect.stringMatching(/encryption mismatch: this secondary uses --encrypt, the primary does not/), refused: false });
    // encrypting primary (TS) -> plain secondary (C)
    const plain = await setup("plain-mismatch", false);
    const plainSaw = plain.secondary().waitFor("authFailed", 5000);
    const rep = api(plain, { encrypt: true });
    const authFailed = new Promise<{ reason: string; refused: boolean }>((r) => rep.once("authFailed", r));
    rep.start();
    // a settings mismatch, not a refused peer: the mirror driver logs it rather than failing
    expect(await authFailed).toEqual({ reason: expect.stringMatching(/encryption mismatch: this primary uses encrypt, the secondary does not/), refused: false });
    expect((await plainSaw).reason).toMatch(/encryption mismatch: the primary uses --encrypt, this secondary does not/);
    rep.stop();
  });

  it("drops the stream on a tampered encrypted frame (ciphertext or header); nothing is applied", async () => {
    const env = await setup("enc-tamper", true);
    const d0 = await dial(env, true);
    d0.conn.send(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, "/good"));
    await pollUntil(() => d0.frames.length >= 1, 5000, "ack of an untampered encrypted frame");
    expect(d0.frames[0]?.payload.readInt32LE(0)).toBe(0);
    expect(existsSync(join(env.b, "good"))).toBe(true);
    for (const at of [30, 5]) {
      // 30: a ciphertext byte (inside the hf_args); 5: the header's flags byte (authenticated as AAD)
      const d = await dial(env, true);
      const frame = d.conn.encode(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, `/tampered${at}`));
      frame[at] = (frame[at] as number) ^ 1;
      d.conn.socket.write(frame);
      await pollUntil(() => d.closed() !== undefined, 5000, "connection dropped");
      expect(d.frames.length).toBe(0);
      expect(existsSync(join(env.b, `tampered${at}`))).toBe(false);
    }
    // a replay of a valid frame on a fresh connection: other keys, so it fails too
    const d1 = await dial(env, true);
    const ok = d1.conn.encode(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, "/once"));
    d1.conn.socket.write(ok);
    await pollUntil(() => d1.frames.length >= 1, 5000, "ack");
    rmSync(join(env.b, "once"));
    d1.conn.socket.write(ok); // same bytes again: the counter (the nonce) has moved on
    await pollUntil(() => d1.closed() !== undefined, 5000, "connection dropped");
    expect(existsSync(join(env.b, "once"))).toBe(false);
  });
});

describe("secondary stream verification", () => {

  it("refuses a path that escapes the directory (EPERM), ends that stream, and keeps serving new ones", async () => {
    const env = await setup("escape");
    const d1 = await dial(env);
    d1.conn.send(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, "/../escaped"));
    d1.conn.send(Op.CREATE, 0, 2n, encodeOp({ mode: 0o644 }, "/after"));
    await pollUntil(() => d1.frames.length >= 1, 5000, "the refusal");
    expect(d1.frames[0]?.payload.readInt32LE(0)).toBe(1); // EPERM
    // Any refused operation ends the stream (nothing after it is applied: the copy is marked inconsistent).
    await pollUntil(() => d1.closed() !== undefined, 5000, "connection ended");
    expect(d1.frames).toHaveLength(1);
    expect(existsSync(join(env.root, "escaped"))).toBe(false);
    expect(existsSync(join(env.b, "after"))).toBe(false);
    const d2 = await dial(env);
    d2.conn.send(Op.CREATE, 0, 1n, encodeOp({ mode: 0o644 }, "/inside"));
    await pollUntil(() => d2.frames.length >= 1, 5000, "ack");
    expect(d2.frames[0]?.payload.readInt32LE(0)).toBe(0);
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
