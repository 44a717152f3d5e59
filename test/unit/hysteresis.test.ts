import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Hysteresis, type HysteresisState } from "../../src/core/hysteresis.js";
import type { CheckerVerdict } from "../../src/core/checker.js";

const base = { checker: "tcp:198.18.0.10:8080", action: "restart" as const };

function feed(h: Hysteresis, results: readonly boolean[]): (CheckerVerdict | undefined)[] {
  return results.map((ok, i) => h.observe({ ok, detail: ok ? `probe ${i} ok` : `probe ${i} refused` }));
}

describe("Hysteresis (examples)", () => {
  it("fails after exactly `fall` consecutive failures and names the streak in the reason", () => {
    const h = new Hysteresis({ ...base, rise: 2, fall: 3, initial: "ok" });
    const out = feed(h, [false, false, false, false]);
    expect(out.slice(0, 2)).toEqual([undefined, undefined]);
    expect(out[2]).toEqual({
      type: "checker",
      checker: base.checker,
      ok: false,
      action: "restart",
      reason: "probe 2 refused (3/3)",
    });
    expect(out[3]).toBeUndefined();
    expect(h.state).toBe("failed");
  });

  it("a success in the middle resets the failure streak", () => {
    const h = new Hysteresis({ ...base, rise: 1, fall: 3, initial: "ok" });
    expect(feed(h, [false, false, true, false, false]).every((v) => v === undefined)).toBe(true);
    expect(h.observe({ ok: false, detail: "refused" })?.reason).toBe("refused (3/3)");
  });

  it("recovers after `rise` consecutive successes", () => {
    const h = new Hysteresis({ ...base, rise: 2, fall: 1, initial: "ok", kind: "tcp" });
    expect(h.observe({ ok: false, detail: "refused" })).toMatchObject({ ok: false, reason: "refused (1/1)", kind: "tcp" });
    expect(h.observe({ ok: true, detail: "connected" })).toBeUndefined();
    expect(h.observe({ ok: true, detail: "connected" })).toMatchObject({ ok: true, reason: "connected (2/2)" });
  });

  it("from unknown, the first verdict comes after rise successes or fall failures", () => {
    const a = new Hysteresis({ ...base, rise: 2, fall: 3 });
    expect(feed(a, [true, true]).map((v) => v?.ok)).toEqual([undefined, true]);
    const b = new Hysteresis({ ...base, rise: 2, fall: 3 });
    expect(feed(b, [false, false, false]).map((v) => v?.ok)).toEqual([undefined, undefined, false]);
  });

  it("reset returns to the initial state", () => {
    const h = new Hysteresis({ ...base, rise: 1, fall: 1, initial: "ok" });
    expect(h.observe({ ok: false, detail: "x" })?.ok).toBe(false);
    h.reset();
    expect(h.state).toBe("ok");
    expect(h.observe({ ok: false, detail: "x" })?.ok).toBe(false);
  });

  it("rejects thresholds that are not integers >= 1", () => {
    expect(() => new Hysteresis({ ...base, rise: 0, fall: 1 })).toThrow(/rise/);
    expect(() => new Hysteresis({ ...base, rise: 1, fall: 1.5 })).toThrow(/fall/);
  });
});

describe("Hysteresis (properties)", () => {
  const arbCase = fc.record({
    rise: fc.integer({ min: 1, max: 5 }),
    fall: fc.integer({ min: 1, max: 5 }),
    initial: fc.constantFrom<HysteresisState>("unknown", "ok", "failed"),
    results: fc.array(fc.boolean(), { maxLength: 200 }),
  });

  it("a verdict flips only after `fall` consecutive failures / `rise` consecutive successes", () => {
    fc.assert(
      fc.property(arbCase, ({ rise, fall, initial, results }) => {
        const h = new Hysteresis({ ...base, rise, fall, initial });
        const out = feed(h, results);
        out.forEach((v, i) => {
          if (v === undefined) return;
          const need = v.ok ? rise : fall;
          // The `need` results ending here are all of the verdict's kind.
          expect(i + 1).toBeGreaterThanOrEqual(need);
          for (let j = i - need + 1; j <= i; j++) expect(results[j]).toBe(v.ok);
          expect(v.reason.endsWith(`(${need}/${need})`)).toBe(true);
        });
      }),
    );
  });

  it("never emits two identical verdicts in a row, and the first one differs from the initial state", () => {
    fc.assert(
      fc.property(arbCase, ({ rise, fall, initial, results }) => {
        const h = new Hysteresis({ ...base, rise, fall, initial });
        const verdicts = feed(h, results).filter((v): v is CheckerVerdict => v !== undefined);
        for (let i = 1; i < verdicts.length; i++) expect(verdicts[i]?.ok).not.toBe(verdicts[i - 1]?.ok);
        const first = verdicts[0];
        if (first !== undefined && initial !== "unknown") expect(first.ok).toBe(initial === "failed");
      }),
    );
  });

  it("does not miss a flip: the decided state matches a reference model after every result", () => {
    fc.assert(
      fc.property(arbCase, ({ rise, fall, initial, results }) => {
        const h = new Hysteresis({ ...base, rise, fall, initial });
        let model: HysteresisState = initial;
        results.forEach((ok, i) => {
          const v = h.observe({ ok, detail: "d" });
          // Reference: count the run of identical results ending at i.
          let run = 0;
          for (let j = i; j >= 0 && results[j] === ok; j--) run++;
          const target: HysteresisState = ok ? "ok" : "failed";
          const flips = model !== target && run >= (ok ? rise : fall);
          if (flips) model = target;
          expect(v !== undefined).toBe(flips);
          expect(h.state).toBe(model);
        });
      }),
    );
  });
});
