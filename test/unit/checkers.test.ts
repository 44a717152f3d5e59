import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CheckerRunner } from "../../src/checkers/runner.js";
import { CheckerDefaults, createChecker, decodeCheckerConfig } from "../../src/checkers/config.js";
import { CheckerGroup } from "../../src/checkers/group.js";
import { FakeClock } from "../../src/testing/sim/clock.js";
import type { Probe, ProbeResult } from "../../src/checkers/probe.js";
import { ConfigError } from "../../src/core/errors.js";
import type { CheckerVerdict } from "../../src/core/checker.js";

function problems(input: unknown): [string, unknown, string][] {
  try {
    decodeCheckerConfig(input);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems.map((p) => [p.path, p.value, p.expected]);
  }
  throw new Error("decoded without error");
}

describe("checker config", () => {
  it("fills defaults per type", () => {
    expect(decodeCheckerConfig({ type: "tcp", host: "198.18.0.10", port: 8080 })).toEqual({
      type: "tcp",
      host: "198.18.0.10",
      port: 8080,
      action: "restart",
      interval: CheckerDefaults.interval,
      timeout: CheckerDefaults.timeout,
      rise: CheckerDefaults.rise,
      fall: CheckerDefaults.fall,
      initial: "unknown",
    });
    const custom = decodeCheckerConfig({ type: "custom", shell: "true" });
    expect([custom.interval, custom.timeout, custom.action]).toEqual([2000, 5000, "restart"]);
    const sb = decodeCheckerConfig({ type: "split-brain", witnesses: ["198.18.0.1"] });
    expect(sb).toMatchObject({ method: "ping", action: "wait" });
  });

  it("reads durations as numbers or strings with units", () => {
    const c = decodeCheckerConfig({ type: "ping", host: "fd00:4844::1", interval: "250ms", timeout: "0.2s" });
    expect([c.interval, c.timeout]).toEqual([250, 200]);
  });

  it("names the path and the value of a wrong field", () => {
    expect(problems({ type: "tcp", host: "198.18.0.10", port: 70000 })).toEqual([["port", 70000, "TCP port (1..65535)"]]);
    expect(problems({ type: "ping", host: "router.example" })).toEqual([["host", "router.example", "IPv4 or IPv6 address"]]);
    expect(problems({ type: "tcp", host: "198.18.0.10", port: 80, interval: "soon" })[0]?.slice(0, 2)).toEqual(["interval", "soon"]);
    expect(problems({ type: "tcp", host: "198.18.0.10", port: 80, action: "reboot" })[0]?.slice(0, 2)).toEqual(["action", "reboot"]);
    expect(problems({ type: "process", cmdline: "([" })[0]?.slice(0, 3)).toEqual(["cmdline", "([", "valid regular expression"]);
    expect(problems({ type: "module", module: "db", states: [], source: { url: "http://198.18.0.1/x" } })[0]?.[0]).toBe("states");
    expect(problems({ type: "module", module: "db", states: ["UP"], source: { url: "ftp://x" } })[0]?.slice(0, 2)).toEqual(["source.url", "ftp://x"]);
  });

  it("rejects an unknown type and names the known ones", () => {
    const [p] = problems({ type: "dns", host: "x" });
    expect(p?.[0]).toBe("type");
    expect(p?.[1]).toBe("dns");
    expect(p?.[2]).toContain("split-brain");
  });

  it("rejects unknown keys (typos) with their value", () => {
    const [p] = problems({ type: "tcp", host: "198.18.0.10", port: 80, intervall: 100 });
    expect(p?.[0]).toBe("intervall");
    expect(p?.[1]).toBe(100);
    expect(p?.[2]).toContain("no such option");
  });

  it("checks cross-field rules", () => {
    expect(problems({ type: "process" })[0]?.[2]).toContain("exactly one of process, cmdline, pid, pidFile");
    expect(problems({ type: "custom", shell: "true", script: "/bin/true" })[0]?.[2]).toContain("got script, shell");
    expect(problems({ type: "process", process: "nginx", min: 3, max: 2 })[0]?.slice(0, 2)).toEqual(["max", 2]);
    expect(problems({ type: "split-brain", witnesses: ["198.18.0.1"], method: "tcp" })[0]?.[0]).toBe("port");
  });

  it("the error message reads well", () => {
    expect(() => decodeCheckerConfig({ type: "tcp", host: "198.18.0.10", port: "http" }, "checker app-port")).toThrow(
      'invalid checker app-port: port: expected TCP port (1..65535), got "http"',
    );
  });

  it("createChecker builds a runner with the probe's name and the config's action", () => {
    const r = createChecker({ type: "tcp", host: "198.18.0.10", port: 8080, action: "stop" });
    expect(r.name).toBe("tcp:198.18.0.10:8080");
    expect(r.options.action).toBe("stop");
    expect(createChecker({ type: "ping", host: "198.18.0.1", name: "gw" }).name).toBe("gw");
  });
});

/** A probe whose results are scripted; `hang` never settles unless aborted. */
class ScriptedProbe implements Probe {
  readonly name = "scripted";
  runs = 0;
  closed = false;
  constructor(private readonly script: ("ok" | "fail" | "hang" | "deaf")[]) {}
  run(signal: AbortSignal): Promise<ProbeResult> {
    const step = this.script[Math.min(this.runs, this.script.length - 1)];
    this.runs++;
    if (step === "ok") return Promise.resolve({ ok: true, detail: `run ${this.runs} ok` });
    if (step === "fail") return Promise.resolve({ ok: false, detail: `run ${this.runs} refused` });
    if (step === "deaf") return new Promise(() => {}); // ignores its signal
    return new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  }
  close(): void {
    this.closed = true;
  }
}

describe("CheckerRunner", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function runner(script: ConstructorParameters<typeof ScriptedProbe>[0], extra: Partial<ConstructorParameters<typeof CheckerRunner>[0]> = {}) {
    const probe = new ScriptedProbe(script);
    const r = new CheckerRunner({ probe, action: "restart", interval: 100, timeout: 50, rise: 2, fall: 3, initial: "ok", kind: "custom", ...extra });
    const verdicts: [number, CheckerVerdict][] = [];
    r.on("verdict", (v) => verdicts.push([Date.now(), v]));
    return { probe, r, verdicts };
  }

  it("runs every interval and emits a verdict after `fall` failures, then after `rise` successes", async () => {
    const t0 = Date.now();
    const { probe, r, verdicts } = runner(["ok", "fail", "fail", "fail", "fail", "ok", "ok", "ok"]);
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(probe.runs).toBe(1);
    await vi.advanceTimersByTimeAsync(350);
    expect(probe.runs).toBe(4); // at 0, 100, 200, 300
    expect(verdicts.map(([at, v]) => [at - t0, v.ok, v.reason])).toEqual([[300, false, "run 4 refused (3/3)"]]);
    expect(verdicts[0]?.[1]).toMatchObject({ type: "checker", checker: "scripted", action: "restart", kind: "custom" });
    await vi.advanceTimersByTimeAsync(400);
    expect(verdicts.map(([at, v]) => [at - t0, v.ok])).toEqual([
      [300, false],
      [600, true],
    ]);
    expect(r.state).toBe("ok");
    await r.stop();
    expect(probe.closed).toBe(true);
    const runs = probe.runs;
    await vi.advanceTimersByTimeAsync(1000);
    expect(probe.runs).toBe(runs);
  });

  it("counts a probe that hangs as failed at its timeout, even one that ignores its signal", async () => {
    for (const kind of ["hang", "deaf"] as const) {
      const { r, verdicts } = runner([kind], { fall: 2 });
      const results: { timedOut: boolean; detail: string; durationMs: number }[] = [];
      r.on("result", (x) => results.push(x));
      r.start();
      await vi.advanceTimersByTimeAsync(160);
      expect(results.map((x) => x.timedOut)).toEqual([true, true]);
      expect(results[0]?.detail).toBe("scripted timed out after 50 ms");
      expect(results[0]?.durationMs).toBeGreaterThanOrEqual(50);
      expect(verdicts.map(([, v]) => v.reason)).toEqual(["scripted timed out after 50 ms (2/2)"]);
      await r.stop();
    }
  });

  it("never overlaps runs: a slow run delays the next one", async () => {
    const { probe, r } = runner(["hang"], { interval: 20, timeout: 50 });
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(49);
    expect(probe.runs).toBe(1);
    // Timeout at 50 ms, later than the interval: the next run starts at once (not 20 ms after the end).
    for (let i = 0; i < 5; i++) await vi.advanceTimersByTimeAsync(1);
    expect(probe.runs).toBe(2);
    await r.stop();
  });

  it("stop() aborts a run in progress and drops its result", async () => {
    const { r } = runner(["hang"], { fall: 1 });
    const results: unknown[] = [];
    r.on("result", (x) => results.push(x));
    r.start();
    await vi.advanceTimersByTimeAsync(10);
    await r.stop();
    await vi.advanceTimersByTimeAsync(100);
    expect(results).toEqual([]);
    expect(r.lastVerdict).toBeUndefined();
  });

  it("a stop followed at once by a start keeps a single schedule", async () => {
    const { probe, r } = runner(["hang"], { interval: 100, timeout: 50 });
    r.start();
    await vi.advanceTimersByTimeAsync(10); // a run is in progress: stop() aborts it
    const stopping = r.stop();
    r.start();
    await stopping;
    // The new run hits its timeout at 60 ms; at 80 ms the only pending timer is the next run's (the aborted
    // run must not have scheduled one of its own).
    await vi.advanceTimersByTimeAsync(70);
    expect(vi.getTimerCount()).toBe(1);
    const before = probe.runs;
    await vi.advanceTimersByTimeAsync(1000);
    expect(probe.runs - before).toBe(10);
    await r.stop();
  });

  it("reset() makes a still-failing checker report its failure again", async () => {
    const { r, verdicts } = runner(["fail"], { fall: 2 });
    r.start();
    await vi.advanceTimersByTimeAsync(150);
    expect(verdicts.map(([, v]) => v.ok)).toEqual([false]);
    await vi.advanceTimersByTimeAsync(500);
    expect(verdicts.length).toBe(1); // on change only
    r.reset();
    expect(r.state).toBe("ok"); // the runner's initial state in these tests
    await vi.advanceTimersByTimeAsync(200);
    expect(verdicts.map(([, v]) => [v.ok, v.reason])).toEqual([
      [false, "run 2 refused (2/2)"],
      [false, "run 9 refused (2/2)"], // runs 8 and 9, at 700 and 800 ms
    ]);
    await r.stop();
  });

  it("verdicts() yields the verdicts in order", async () => {
    const { r } = runner(["fail", "fail", "fail", "ok", "ok"], { initial: "unknown" });
    const it = r.verdicts();
    r.start();
    const first = it.next();
    await vi.advanceTimersByTimeAsync(500);
    expect((await first).value).toMatchObject({ ok: false });
    expect((await it.next()).value).toMatchObject({ ok: true });
    await it.return(undefined);
    await r.stop();
  });

  it("a throwing listener does not stop the schedule", async () => {
    const { probe, r } = runner(["ok"]);
    r.on("result", () => {
      throw new Error("listener bug");
    });
    const errors: unknown[] = [];
    r.on("error", (e) => errors.push(e));
    r.start();
    await vi.advanceTimersByTimeAsync(250);
    expect(probe.runs).toBe(3);
    expect(errors.length).toBe(3);
    await r.stop();
  });

  it("a split-brain checker also reports a change of reason while it stays failed; numbers alone are no change", async () => {
    // The witness arbiter's denial changes in kind (unreachable -> held by the peer -> unreachable) while the checker
    // stays failed: the module's split-brain rules read the reason, so each change is a verdict. `for N ms` varies
    // on every run and is not a change. An app checker (restart) keeps reporting flips only: each failed verdict
    // would count as a fresh failure there.
    const details = ["witness unreachable (no answer for 300 ms)", "witness unreachable (no answer for 350 ms)", "lease held by n0 for 1840 ms", "lease held by n0 for 1790 ms", "lease held by n1 for 900 ms", "witness unreachable (no answer for 500 ms)"];
    const probeOf = (): Probe & { runs: number } => ({
      name: "witness",
      runs: 0,
      run(): Promise<ProbeResult> {
        const d = details[Math.min(this.runs++, details.length - 1)] as string;
        return Promise.resolve({ ok: false, detail: d });
      },
    });
    const reasons = async (extra: Partial<ConstructorParameters<typeof CheckerRunner>[0]>) => {
      const r = new CheckerRunner({ probe: probeOf(), action: "restart", interval: 100, timeout: 50, rise: 1, fall: 1, initial: "ok", ...extra });
      const got: string[] = [];
      r.on("verdict", (v) => got.push(`${v.ok} ${v.reason}`));
      r.start();
      await vi.advanceTimersByTimeAsync(750);
      await r.stop();
      return got;
    };
    expect(await reasons({ kind: "split-brain" })).toEqual([
      "false witness unreachable (no answer for 300 ms) (1/1)",
      "false lease held by n0 for 1840 ms (3/1)",
      "false lease held by n1 for 900 ms (5/1)",
      "false witness unreachable (no answer for 500 ms) (6/1)",
    ]);
    expect((await reasons({ kind: "custom", action: "wait" })).length).toBe(1);
    expect((await reasons({ kind: "custom", reasonChanges: true })).length).toBe(4);
    expect(await reasons({ kind: "custom" })).toEqual(["false witness unreachable (no answer for 300 ms) (1/1)"]);
    expect(await reasons({ kind: "split-brain", reasonChanges: false })).toEqual(["false witness unreachable (no answer for 300 ms) (1/1)"]);
  });

  it("carries a witness arbiter's lease (the holder) from the probe into each verdict, also on a reason change", async () => {
    const results: ProbeResult[] = [
      { ok: false, detail: "witness unreachable (no answer for 300 ms)" },
      { ok: false, detail: "lease held by n0 for 1840 ms", lease: { holder: "n0", remainingMs: 1840 } },
      { ok: false, detail: "lease held by n1 for 900 ms", lease: { holder: "n1", remainingMs: 900 } },
      { ok: false, detail: "witness unreachable (no answer for 500 ms)" },
      { ok: true, detail: "lease held for 700 ms", lease: {} },
    ];
    let runs = 0;
    const probe: Probe = { name: "arbiter", run: () => Promise.resolve(results[Math.min(runs++, results.length - 1)] as ProbeResult) };
    const r = new CheckerRunner({ probe, kind: "split-brain", action: "wait", interval: 100, timeout: 50, rise: 1, fall: 1, initial: "ok" });
    const got: CheckerVerdict[] = [];
    r.on("verdict", (v) => got.push(v));
    r.start();
    await vi.advanceTimersByTimeAsync(450);
    await r.stop();
    expect(got.map((v) => [v.ok, v.lease])).toEqual([
      [false, undefined],
      [false, { holder: "n0", remainingMs: 1840 }],
      [false, { holder: "n1", remainingMs: 900 }],
      [false, undefined], // a reason change drops the previous verdict's lease
      [true, {}],
    ]);
    expect(got.map((v) => "lease" in v)).toEqual([false, true, true, false, true]);
  });

  it("rejects non-positive interval or timeout", () => {
    expect(() => runner(["ok"], { interval: 0 })).toThrow(/interval/);
    expect(() => runner(["ok"], { timeout: -1 })).toThrow(/timeout/);
  });
});

describe("CheckerGroup", () => {
  it("names the path inside the module's list, and rejects duplicate names", async () => {
    let err: unknown;
    try {
      new CheckerGroup([{ type: "ping", host: "198.18.0.1" }, { type: "tcp", host: "198.18.0.10", port: 0 }], "module web");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => [p.path, p.value])).toEqual([["checkers.1.port", 0]]);
    expect((err as ConfigError).message).toContain("invalid module web checkers: checkers.1.port");
    expect(() => new CheckerGroup([{ type: "ping", host: "198.18.0.1" }, { type: "ping", host: "198.18.0.1" }])).toThrow(/checkers\.1\.name/);
  });

  it("runs its checkers together and reports the split-brain gate", async () => {
    vi.useFakeTimers();
    try {
        let healthy = true;
      const g = new CheckerGroup([
        { type: "custom", name: "app", run: () => healthy, interval: 100, timeout: 50, rise: 1, fall: 2 },
        { type: "module", name: "db", module: "db", states: ["PRIM"], source: () => ({ state: "PRIM" }), interval: 100, timeout: 50, rise: 1, fall: 1 },
      ]);
      const seen: string[] = [];
      g.on("verdict", (v) => seen.push(`${v.checker}:${v.ok}:${v.action}`));
      expect(g.splitBrainAllows()).toBe(true);
      g.start();
      await vi.advanceTimersByTimeAsync(50);
      expect(seen.sort()).toEqual(["app:true:restart", "db:true:wait"]);
      healthy = false;
      await vi.advanceTimersByTimeAsync(200);
      expect(seen.at(-1)).toBe("app:false:restart");
      expect(g.status().map((s) => [s.checker, s.kind, s.state])).toEqual([
        ["app", "custom", "failed"],
        ["db", "module", "ok"],
      ]);
      await g.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it("split-brain gate is closed until a witness answered", async () => {
    const g = new CheckerGroup([{ type: "split-brain", witnesses: ["198.18.0.1"] }]);
    expect(g.status()[0]).toMatchObject({ kind: "split-brain", state: "unknown", action: "wait" });
    expect(g.splitBrainAllows()).toBe(false);
  });
});

describe("CheckerRunner on a FakeClock (virtual time, as in the simulator)", () => {
  it("schedules, times out and decides on virtual time only", async () => {
    const clock = new FakeClock(1000);
    let healthy = true;
    let hang = false;
    const probe: Probe = {
      name: "virtual",
      run: (signal) =>
        hang
          ? new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)))
          : Promise.resolve({ ok: healthy, detail: healthy ? "fine" : "broken" }),
    };
    const r = new CheckerRunner({ probe, action: "wait", interval: 100, timeout: 40, rise: 1, fall: 2, clock });
    const verdicts: string[] = [];
    r.on("verdict", (v) => verdicts.push(`${clock.now()} ${v.ok} ${v.reason}`));
    const timeouts: number[] = [];
    r.on("result", (x) => {
      if (x.timedOut) timeouts.push(x.durationMs);
    });
    const step = async (ms: number): Promise<void> => {
      for (let i = 0; i < ms; i += 10) {
        clock.advance(10);
        for (let k = 0; k < 5; k++) await Promise.resolve(); // let probe promises settle between ticks
      }
    };
    r.start();
    await step(10);
    healthy = false;
    await step(300);
    hang = true;
    healthy = true;
    await step(300);
    hang = false;
    await step(200);
    await r.stop();
    // Runs at 1000, 1100, ...: ok at 1000 (seen once the tick settles, 1010); broken at 1100 and 1200; hung
    // from 1400 to 1600 (timed out each time, still failed); ok again at 1700.
    expect(verdicts).toEqual(["1010 true fine (1/1)", "1200 false broken (2/2)", "1700 true fine (1/1)"]);
    expect(timeouts).toEqual([40, 40, 40]);
  });
});
