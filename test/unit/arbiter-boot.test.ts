import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createHmac } from "node:crypto";
import { createSocket } from "node:dgram";
import { ArbiterLease, ArbiterWitness, decodeArbiter, encodeArbiter, type ArbiterMessage } from "../../src/core/arbiter.js";
import { WitnessServer } from "../../src/checkers/witness-server.js";
import { ArbiterProbe } from "../../src/checkers/arbiter.js";
import { generateKey, hmacSha256, parseKey } from "../../src/runtime/crypto.js";

// Issue "Hardening", item 5: per-node sequence numbers live in the witness's memory only; its per-run boot nonce
// (answers carry it, claims must echo it) refuses claims captured before a restart.

const k = (...parts: Uint8Array[]) => {
  const h = createHmac("sha256", "k".repeat(32));
  for (const p of parts) h.update(p);
  return h.digest();
};
const claim = (node: string, seq: number, boot?: string): ArbiterMessage => ({ t: "claim", module: "db", node, seq, ttl: 1000, ...(boot !== undefined ? { boot } : {}) });

describe("arbiter boot nonce (core)", () => {
  it("round-trips boot on every message and rejects a malformed one", () => {
    for (const m of [claim("n0", 1, "b1"), { t: "deny", module: "db", node: "n0", seq: 1, holder: "n1", remaining: 3, boot: "b1" } as ArbiterMessage])
      expect(decodeArbiter(encodeArbiter(m, k), k)).toEqual({ ok: true, msg: m });
    expect(decodeArbiter(encodeArbiter({ ...claim("n0", 1), boot: 5 } as unknown as ArbiterMessage, k), k)).toEqual({ ok: false, reason: "malformed" });
  });

  it("a claim captured before a witness restart is refused after the restart's grace; the live node is granted", () => {
    const w1 = new ArbiterWitness(0, { maxTtlMs: 1000, boot: "run1" });
    const captured = claim("n0", 100, "run1");
    expect(w1.receive(captured, 2000)).toMatchObject({ t: "grant", node: "n0", boot: "run1" });
    // n0 dies, the witness restarts (a new run forgets every sequence number)
    const w2 = new ArbiterWitness(5000, { maxTtlMs: 1000, boot: "run2" });
    const replayed = w2.receive(captured, 6001); // grace over
    expect(replayed).toEqual({ t: "deny", module: "db", node: "n0", seq: 100, holder: "(nonce required)", remaining: 0, boot: "run2" });
    expect(w2.holder("db", 6001)).toBeUndefined();
    expect(w2.staleBoot).toBe(1);
    // The live node n1 learns the nonce from its first denial, and is granted at once with it.
    expect(w2.receive(claim("n1", 7), 6002)).toMatchObject({ t: "deny", boot: "run2" });
    expect(w2.receive(claim("n1", 8, "run2"), 6003)).toMatchObject({ t: "grant", node: "n1", boot: "run2" });
    // And the replay keeps being refused while n1 holds it (and after).
    expect(w2.receive(captured, 6004)).toMatchObject({ t: "deny", holder: "n1" });
    expect(w2.receive(captured, 9000)).toMatchObject({ t: "deny", holder: "(nonce required)" });
    // Without the nonce (the previous behaviour) the same replay was granted: the bug this guards against.
    expect(new ArbiterWitness(5000, { maxTtlMs: 1000 }).receive(captured, 6001)).toMatchObject({ t: "grant", node: "n0" });
  });

  it("a release of an earlier run changes nothing; the sequence number of a refused claim is not recorded", () => {
    const w = new ArbiterWitness(0, { maxTtlMs: 100, boot: "B" });
    expect(w.receive(claim("n0", 50, "B"), 200)).toMatchObject({ t: "grant" });
    expect(w.receive({ t: "release", module: "db", node: "n0", seq: 60, boot: "A" }, 210)).toBeUndefined();
    expect(w.holder("db", 210)?.node).toBe("n0");
    expect(w.receive(claim("n1", 5), 220)).toMatchObject({ t: "deny", holder: "n0" });
    expect(w.receive(claim("n1", 5, "B"), 230)).toMatchObject({ t: "deny", holder: "n0" }); // same seq, now counted
  });

  it("the client learns the nonce only from answers to its own pending claims", () => {
    const l = new ArbiterLease({ ttlMs: 1000 });
    l.claimSent(1, 0);
    expect(l.receive({ t: "deny", module: "db", node: "n0", seq: 1, holder: "(nonce required)", remaining: 0, boot: "run2" }, 1)).toBe(true);
    expect(l.boot).toBe("run2");
    expect(l.lastDeny).toBeUndefined(); // asked for the nonce, said nothing about the lease
    // a replayed answer of an earlier run (its seq is not pending) teaches nothing
    expect(l.receive({ t: "grant", module: "db", node: "n0", seq: 1, ttl: 1000, boot: "run1" }, 2)).toBe(false);
    expect(l.boot).toBe("run2");
    expect(l.holds(2)).toBe(false);
    l.claimSent(2, 10);
    expect(l.receive({ t: "grant", module: "db", node: "n0", seq: 2, ttl: 1000, boot: "run2" }, 11)).toBe(false);
    expect(l.holds(11)).toBe(true);
  });
});

describe("arbiter boot nonce over UDP", () => {
  it("a captured claim replayed after a witness restart is refused; the live node holds the lease", async () => {
    const key = parseKey(generateKey());
    const mac = hmacSha256(key);
    const s = createSocket("udp4");
    await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
    const answers: ArbiterMessage[] = [];
    s.on("message", (b) => {
      const d = decodeArbiter(b, mac);
      if (d.ok) answers.push(d.msg);
    });
    const ask = async (bytes: Uint8Array, port: number) => {
      const n = answers.length;
      s.send(bytes, port, "127.0.0.1");
      for (let i = 0; i < 100 && answers.length === n; i++) await new Promise((r) => setTimeout(r, 10));
      return answers[n];
    };
    const w1 = new WitnessServer({ host: "127.0.0.1", port: 0, key, maxTtlMs: 200 });
    await w1.start();
    const port = w1.port;
    const boot1 = w1.witness?.boot as string;
    await new Promise((r) => setTimeout(r, 250));
    // n0's genuine claim (it knows run 1's nonce), captured on the wire
    const captured = encodeArbiter(claim("n0", Date.now() * 1000, boot1), mac);
    expect(await ask(captured, port)).toMatchObject({ t: "grant", node: "n0", boot: boot1 });
    await w1.close();

    const w2 = new WitnessServer({ host: "127.0.0.1", port, key, maxTtlMs: 200 });
    await w2.start();
    let p: ArbiterProbe | undefined;
    try {
      expect(w2.witness?.boot).not.toBe(boot1);
      await new Promise((r) => setTimeout(r, 250)); // past the restart's grace
      const a = await ask(captured, port);
      expect(a).toMatchObject({ t: "deny", node: "n0", boot: w2.witness?.boot });
      expect(w2.witness?.holder("db", performance.now())).toBeUndefined();
      expect(w2.drops.staleBoot).toBe(1);
      // the live node: its first claim learns the nonce, the next one (sent at once) is granted in the same run
      p = new ArbiterProbe({ host: "127.0.0.1", port, key, node: "n1", lease: "db", ttlMs: 400 });
      expect(await p.run(AbortSignal.timeout(300))).toMatchObject({ ok: true });
      expect(p.lease.boot).toBe(w2.witness?.boot);
      expect(await ask(captured, port)).toMatchObject({ t: "deny", holder: "n1" });
      expect((await p.run(AbortSignal.timeout(300))).ok).toBe(true);
    } finally {
      p?.close();
      await w2.close();
      s.close();
    }
  });
});

describe("arbiter boot nonce: property", () => {
  type Step =
    | { k: "claim"; c: number }
    | { k: "advance"; ms: number }
    | { k: "deliver"; i: number }
    | { k: "replay"; i: number }
    | { k: "drop"; i: number }
    | { k: "restart" };
  const stepArb: fc.Arbitrary<Step> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ k: fc.constant("claim" as const), c: fc.nat(2) }) },
    { weight: 4, arbitrary: fc.record({ k: fc.constant("advance" as const), ms: fc.integer({ min: 1, max: 1500 }) }) },
    { weight: 8, arbitrary: fc.record({ k: fc.constant("deliver" as const), i: fc.nat(3) }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant("replay" as const), i: fc.nat(1000) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant("drop" as const), i: fc.nat(20) }) },
    { weight: 1, arbitrary: fc.constant({ k: "restart" as const }) },
  );

  it("every grant answers a claim sent during the witness's current run, whatever is replayed; never two holders", () => {
    let grants = 0;
    let refusedReplays = 0;
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 20, maxLength: 300 }), (steps) => {
        let T = 0;
        const maxTtl = 1000;
        let run = 0;
        let startedAt = T - maxTtl;
        let witness = new ArbiterWitness(startedAt, { maxTtlMs: maxTtl, boot: `run${run}` });
        const names = ["n0", "n1", "n2"];
        const leases = names.map(() => new ArbiterLease({ ttlMs: 1000 }));
        const seqs = names.map(() => 0);
        const sentAt = new Map<string, number>(); // node/seq -> T of the claim's send
        const flight: { to: number; msg: ArbiterMessage }[] = [];
        const captured: ArbiterMessage[] = []; // every claim ever sent, for replays across restarts
        const claimNow = (c: number) => {
          const seq = ++seqs[c]!;
          leases[c]!.claimSent(seq, T);
          const boot = leases[c]!.boot;
          const msg: ArbiterMessage = { t: "claim", module: "db", node: names[c]!, seq, ttl: 1000, ...(boot !== undefined ? { boot } : {}) };
          sentAt.set(`${msg.node}/${seq}`, T);
          flight.push({ to: -1, msg });
          captured.push(msg);
        };
        const toWitness = (msg: ArbiterMessage, replay: boolean) => {
          const answer = witness.receive(msg, T);
          if (answer?.t === "grant") {
            grants++;
            expect(sentAt.get(`${msg.node}/${msg.seq}`)).toBeGreaterThanOrEqual(startedAt);
          } else if (replay && msg.boot !== witness.boot) refusedReplays++;
          if (answer) flight.push({ to: names.indexOf(answer.node), msg: answer });
        };
        for (const s of steps) {
          switch (s.k) {
            case "claim":
              claimNow(s.c % names.length);
              break;
            case "advance":
              T += s.ms;
              break;
            case "restart":
              startedAt = T;
              witness = new ArbiterWitness(T, { maxTtlMs: maxTtl, boot: `run${++run}` });
              break;
            case "replay":
              if (captured.length > 0) toWitness(captured[s.i % captured.length]!, true);
              break;
            default: {
              if (flight.length === 0) break;
              const i = s.i % flight.length;
              const f = flight.splice(i, 1)[0]!;
              if (s.k !== "deliver") break;
              if (f.to === -1) toWitness(f.msg, false);
              else if (leases[f.to]!.receive(f.msg, T)) claimNow(f.to); // the probe claims again with the nonce
            }
          }
          expect(leases.filter((l) => l.holds(T)).length).toBeLessThanOrEqual(1);
        }
      }),
      { numRuns: 2000 },
    );
    expect(grants).toBeGreaterThan(1000);
    expect(refusedReplays).toBeGreaterThan(100);
  });
});
