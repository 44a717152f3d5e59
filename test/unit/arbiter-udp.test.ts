import { afterEach, describe, expect, it } from "vitest";
import { createSocket } from "node:dgram";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ArbiterProbe } from "../../src/checkers/arbiter.js";
import { WitnessServer } from "../../src/checkers/witness-server.js";
import { createProbe, decodeCheckerConfig } from "../../src/checkers/config.js";
import { encodeArbiter } from "../../src/core/arbiter.js";
import { generateKey, hmacSha256, parseKey } from "../../src/runtime/crypto.js";
import { ConfigError } from "../../src/core/errors.js";

const keyText = generateKey();
const key = parseKey(keyText);
const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function witness(maxTtlMs = 400): Promise<WitnessServer> {
  const w = new WitnessServer({ host: "127.0.0.1", port: 0, key, maxTtlMs });
  await w.start();
  closers.push(() => w.close());
  return w;
}
function probe(w: WitnessServer, node: string, opts: Partial<ConstructorParameters<typeof ArbiterProbe>[0]> = {}): ArbiterProbe {
  const p = new ArbiterProbe({ host: "127.0.0.1", port: w.port, key, node, lease: "db", ttlMs: 400, ...opts });
  closers.push(() => p.close());
  return p;
}
const run = (p: ArbiterProbe) => p.run(AbortSignal.timeout(300));
async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v) || performance.now() > end) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}
const sleepUntilGrace = (w: WitnessServer) => until(async () => w.witness?.receive({ t: "claim", module: "probe-grace", node: "x", seq: Date.now(), ttl: 1, boot: w.witness.boot }, performance.now()), (a) => a?.t === "grant", 2000);

describe("witness arbiter over UDP", () => {
  it("one node holds the lease, the other is denied with the holder named; a clean close hands it over at once", async () => {
    const w = await witness();
    await sleepUntilGrace(w);
    const a = probe(w, "n0");
    const b = probe(w, "n1");
    expect(await run(a)).toMatchObject({ ok: true });
    const rb = await run(b);
    expect(rb.ok).toBe(false);
    expect(rb.detail).toMatch(/lease held by n0 for \d+ ms/);
    expect(rb.lease).toEqual({ holder: "n0", remainingMs: expect.any(Number) }); // what the engine reads
    // a keeps renewing in the background: b stays denied well past one ttl.
    await new Promise((r) => setTimeout(r, 700));
    expect((await run(a)).ok).toBe(true);
    expect((await run(b)).ok).toBe(false);
    const t0 = performance.now();
    a.close();
    const got = await until(() => run(b), (r) => r.ok, 2000);
    expect(got.ok).toBe(true);
    expect(performance.now() - t0).toBeLessThan(200); // the release, not the ttl
  });

  it("shouldClaim turning false releases the lease at the next renewal tick; the other node gets it without waiting a ttl", async () => {
    const w = await witness();
    await sleepUntilGrace(w);
    let want = true;
    const a = probe(w, "n0", { shouldClaim: () => want, renewMs: 50 });
    const b = probe(w, "n1", { renewMs: 50 });
    expect((await run(a)).ok).toBe(true);
    expect((await run(b)).ok).toBe(false);
    const t0 = performance.now();
    want = false;
    const got = await until(() => run(b), (r) => r.ok, 2000);
    expect(got.ok).toBe(true);
    expect(performance.now() - t0).toBeLessThan(300);
    expect(await run(a)).toEqual({ ok: false, detail: "lease not claimed (not wanted in this role)", lease: {} });
  });

  it("yieldWhen: a held lease is not renewed once the other node wants it; it gets it, and this node is then denied with the holder named", async () => {
    const w = await witness();
    await sleepUntilGrace(w);
    let yieldIt = false;
    const a = probe(w, "n0", { yieldWhen: () => yieldIt, renewMs: 50 });
    expect((await run(a)).ok).toBe(true);
    const b = probe(w, "n1", { renewMs: 50 });
    expect((await run(b)).ok).toBe(false);
    yieldIt = true;
    const got = await until(() => run(b), (r) => r.ok, 2000);
    expect(got.ok).toBe(true);
    const ra = await until(() => run(a), (r) => /lease held by n1 for/.test(r.detail), 1000);
    expect(ra.detail).toMatch(/^lease held by n1 for \d+ ms$/);
    expect(ra.lease?.holder).toBe("n1");
  });

  it("a holder that stops renewing loses the lease to the other node after about one ttl, not before", async () => {
    const w = await witness();
    await sleepUntilGrace(w);
    const mac = hmacSha256(key);
    const s = createSocket("udp4");
    closers.push(() => s.close());
    const answered = new Promise<void>((r) => s.once("message", () => r()));
    const t0 = performance.now();
    s.send(encodeArbiter({ t: "claim", module: "db", node: "n0", seq: 1, ttl: 400, boot: w.witness?.boot }, mac), w.port, "127.0.0.1"); // a client that knows this run's nonce
    await answered;
    const b = probe(w, "n1");
    const first = await run(b);
    expect(first.ok).toBe(false);
    const got = await until(() => run(b), (r) => r.ok, 3000);
    const took = performance.now() - t0;
    expect(got.ok).toBe(true);
    expect(took).toBeGreaterThanOrEqual(400);
    expect(took).toBeLessThan(1200);
  });

  it("drops unsigned, garbage and replayed datagrams without answering", async () => {
    const w = await witness();
    const s = createSocket("udp4");
    closers.push(() => s.close());
    let answers = 0;
    s.on("message", () => answers++);
    const wrong = hmacSha256(parseKey(generateKey()));
    const good = encodeArbiter({ t: "claim", module: "db", node: "n0", seq: 5, ttl: 400, boot: w.witness?.boot }, hmacSha256(key));
    s.send(encodeArbiter({ t: "claim", module: "db", node: "n0", seq: 1, ttl: 400 }, wrong), w.port, "127.0.0.1");
    s.send(Buffer.from("hello"), w.port, "127.0.0.1");
    s.send(Buffer.alloc(2000, 1), w.port, "127.0.0.1");
    s.send(good, w.port, "127.0.0.1");
    s.send(good, w.port, "127.0.0.1");
    await until(async () => w.drops.mac + w.drops.size + w.drops.magic + w.drops.replay, (n) => n >= 4, 2000);
    await new Promise((r) => setTimeout(r, 50));
    expect(w.drops.mac).toBe(1);
    expect(w.drops.replay).toBe(1);
    expect(w.drops.size + w.drops.magic).toBe(2);
    expect(answers).toBe(1); // the first copy of the good claim (a deny: the witness just started)
  });

  it("a (re)started witness grants nothing during maxTtl", async () => {
    const w = await witness(600);
    const a = probe(w, "n0");
    const t0 = performance.now();
    const r = await run(a);
    expect(r.ok).toBe(false);
    expect(r.detail).toMatch(/^lease held by witness-restarting for \d+ ms$/);
    await until(() => run(a), (x) => x.ok, 2000);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(590);
  });

  it("no witness: the probe says unreachable", async () => {
    const s = createSocket("udp4");
    await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
    const port = s.address().port;
    s.close();
    const p = new ArbiterProbe({ host: "127.0.0.1", port, key, node: "n0", ttlMs: 400 });
    closers.push(() => p.close());
    const r = await run(p);
    expect(r).toMatchObject({ ok: false });
    expect(r.detail).toMatch(/witness unreachable/);
    expect(r.lease).toBeUndefined();
  });

  it("config: split-brain with arbiter needs keyFile and node, builds an ArbiterProbe, and still needs witnesses without it", () => {
    const dir = mkdtempSync(join(tmpdir(), "arbiter-"));
    const kf = join(dir, "key");
    writeFileSync(kf, keyText);
    const c = decodeCheckerConfig({ type: "split-brain", arbiter: "198.18.0.200:7799", keyFile: kf, node: "n0", ttl: "1s" });
    const p = createProbe(c);
    expect(p).toBeInstanceOf(ArbiterProbe);
    expect(p.name).toBe("arbiter:198.18.0.200:7799");
    p.close?.();
    expect(() => decodeCheckerConfig({ type: "split-brain", arbiter: "198.18.0.200:7799", node: "n0" })).toThrow(/keyFile/);
    expect(() => decodeCheckerConfig({ type: "split-brain", arbiter: "router:7799", keyFile: kf, node: "n0" })).toThrow(ConfigError);
    expect(() => decodeCheckerConfig({ type: "split-brain" })).toThrow(/witnesses/);
    expect(decodeCheckerConfig({ type: "split-brain", arbiter: "[fd00:4844::1]:7799", keyFile: kf, node: "n0" })).toMatchObject({ arbiter: "[fd00:4844::1]:7799" });
  });
});

describe("key files", () => {
  it("reads base64 text and raw 32-byte keys alike, and rejects short ones", async () => {
    const { readKeyFile } = await import("../../src/checkers/config.js");
    const dir = mkdtempSync(join(tmpdir(), "arbiter-"));
    writeFileSync(join(dir, "t"), keyText + "\n");
    expect(Buffer.from(readKeyFile(join(dir, "t")))).toEqual(Buffer.from(key));
    const raw = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 250) % 256));
    writeFileSync(join(dir, "r"), raw);
    expect(Buffer.from(readKeyFile(join(dir, "r")))).toEqual(raw);
    writeFileSync(join(dir, "s"), Buffer.alloc(8, 1));
    expect(() => readKeyFile(join(dir, "s"))).toThrow(ConfigError);
  });
});
