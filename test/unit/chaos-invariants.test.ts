// The chaos suite's invariant checkers and schedules on synthetic event streams: each checker must catch the bug
// it exists for (a dropped record, two primaries, a failed request or a reset outside a fault, a connection
// answered twice) and must excuse what a fault explains.
import { describe, expect, it } from "vitest";
import {
  checkPackets,
  checkPreviousRoles,
  checkProbes,
  checkStreams,
  connectionHolders,
  dualPrimary,
  farmConverged,
  idsOf,
  lostWrites,
  mirrorConverged,
  parseTcpdump,
  sameProcess,
  type FaultWindow,
  type RoleSample,
} from "../../bench/helpers/chaos-invariants.js";
import { makeSchedule, parseSchedule, SCHEDULE_BOUNDS } from "../../bench/helpers/chaos-schedule.js";

const NODES = ["n0", "n1", "n2"];
const window = (node: string, from: number, to: number): FaultWindow => ({ node, from, to, label: `fault on ${node}` });

describe("chaos schedules", () => {
  it("are a pure function of the seed, and written/read back unchanged", () => {
    const a = makeSchedule(1234, 2);
    expect(makeSchedule(1234, 2)).toEqual(a);
    expect(makeSchedule(1235, 2)).not.toEqual(a);
    expect(parseSchedule(JSON.stringify(a))).toEqual(a);
  });

  it("hold every fault within bounds, deal every kind early, and restart during resync targets the secondary", () => {
    for (const seed of [0, 1, 42, 2 ** 32 - 1]) {
      const s = makeSchedule(seed, 1);
      for (const f of [...s.farm, ...s.mirror]) {
        expect(f.holdMs).toBeGreaterThanOrEqual(SCHEDULE_BOUNDS.holdMin);
        expect(f.holdMs).toBeLessThanOrEqual(SCHEDULE_BOUNDS.holdMax);
        expect(f.gapMs).toBeLessThanOrEqual(SCHEDULE_BOUNDS.gapMax);
      }
      expect(new Set(s.farm.slice(0, 5).map((f) => f.kind)).size).toBe(5);
      expect(new Set(s.mirror.slice(0, 6).map((f) => f.kind)).size).toBe(6);
      expect(s.mirror.filter((f) => f.kind === "restartDuringResync").every((f) => f.role === "secondary" && (f.mib ?? 0) > 0)).toBe(true);
    }
  });

  it("refuse a malformed schedule file with the reason", () => {
    const s = makeSchedule(5, 1);
    expect(() => parseSchedule(JSON.stringify({ ...s, version: 2 }))).toThrow(/version/);
    expect(() => parseSchedule(JSON.stringify({ ...s, farm: [{ ...s.farm[0], node: "n9" }] }))).toThrow(/farm\[0\]: node/);
    expect(() => parseSchedule(JSON.stringify({ ...s, mirror: [{ ...s.mirror[0], kind: "meteor" }] }))).toThrow(/mirror\[0\]: kind/);
  });
});

describe("mirror invariants", () => {
  it("no lost write when every acknowledged id is on the primary; a dropped record is reported", () => {
    const file = [1, 2, 3, 4, 5].map((id) => `${id} n0 xxxxxxxx\n`).join("");
    expect(lostWrites([1, 2, 3, 4, 5], idsOf(file))).toEqual([]);
    const dropped = file.split("\n").filter((l) => !l.startsWith("3 ")).join("\n");
    expect(lostWrites([1, 2, 3, 4, 5], idsOf(dropped))).toEqual([3]);
    // Ids that were never acknowledged (a request in flight when the primary died) may be there or not.
    expect(lostWrites([1, 2], idsOf(dropped))).toEqual([]);
  });

  it("counts the milliseconds where both nodes report primary in the same sample", () => {
    const s = (t: number, a?: string, b?: string): RoleSample => ({ t, states: [a, b] });
    const clean = [s(0, "primary", "SECOND"), s(25, "primary", undefined), s(50, undefined, "primary"), s(75, "WAIT", "primary")];
    expect(dualPrimary(clean)).toEqual({ ms: 0, episodes: [] });
    const dual = [s(0, "primary", "SECOND"), s(25, "primary", "primary"), s(50, "primary", "primary"), s(75, "SECOND", "primary"), s(100, "primary", "primary"), s(125, "SECOND", "primary")];
    const r = dualPrimary(dual);
    expect(r.ms).toBe(75);
    expect(r.episodes).toEqual([
      { from: 25, to: 75, samples: 2 },
      { from: 100, to: 125, samples: 1 },
    ]);
    // A stalled sampler (next sample 5 s later) counts at most the cap.
    expect(dualPrimary([s(0, "primary", "primary"), s(5000, "primary", "SECOND")], 100).ms).toBe(100);
  });

  it("is converged only with PRIM + an up-to-date SECOND, both ready and settled", () => {
    expect(mirrorConverged([{ state: "PRIM", ready: true }, { state: "SECOND", ready: true, upToDate: true }])).toBeNull();
    expect(mirrorConverged([{ state: "PRIM", ready: true }, { state: "SECOND", ready: true, upToDate: false }])).toMatch(/behind/);
    expect(mirrorConverged([{ state: "ALONE", ready: true }, { state: "WAIT", ready: false }])).toMatch(/ALONE/);
    expect(mirrorConverged([{ state: "PRIM", ready: true }, undefined])).toMatch(/does not answer/);
    expect(mirrorConverged([{ state: "PRIM", ready: true }, { state: "PRIM", ready: true }])).not.toBeNull();
  });
});

describe("farm invariants", () => {
  const w = [window("n1", 1000, 3000)];

  it("a failed request is excused only while a farm node is under a fault; an answer must be one node id", () => {
    const probes = [
      { t: 500, ok: true, node: "n0" },
      { t: 1500, ok: false, err: "TIMEOUT" },
      { t: 2999, ok: false, err: "ECONNRESET" },
      { t: 3500, ok: false, err: "TIMEOUT", addr: "198.18.0.140", port: 40000 },
      { t: 3600, ok: true, node: "n0|n1" },
    ];
    const v = checkProbes(probes, w, NODES);
    expect(v.map((x) => [x.invariant, x.at])).toEqual([
      ["farm-request-failed", 3500],
      ["farm-answer", 3600],
    ]);
    expect(checkProbes(probes.slice(0, 3), w, NODES)).toEqual([]);
  });

  it("a request sent just before a fault began and failed during it is excused; one that failed before it is not", () => {
    // Chaos seeds 920632347, 1577929470, 254478103: sent 2-3 ms before its node was stopped or killed.
    const probes = [
      { t: 997, end: 3497, ok: false, err: "TIMEOUT" },
      { t: 990, end: 995, ok: false, err: "ECONNREFUSED", addr: "198.18.0.141", port: 40001 },
      { t: 998, ok: false, err: "ECONNRESET", addr: "198.18.0.142", port: 40002 }, // no end (older record): at t
    ];
    expect(checkProbes(probes, w, NODES).map((x) => [x.invariant, x.at])).toEqual([
      ["farm-request-failed", 990],
      ["farm-request-failed", 998],
    ]);
  });

  it("a broken stream is excused only if its own node was under a fault during its life", () => {
    const streams = [
      { node: "n1", start: 500, end: 1200, complete: false, err: "ECONNRESET" }, // n1 was killed under it
      { node: "n0", start: 900, end: 3900, complete: true },
      { node: "n2", start: 1100, end: 2000, complete: false, err: "ECONNRESET" }, // a survivor's stream broke
      { node: "n1", start: 3500, end: 6500, complete: false }, // n1 back, not under a fault
    ];
    const v = checkStreams(streams, w);
    expect(v.map((x) => x.invariant)).toEqual(["farm-stream-broken", "farm-stream-broken"]);
    expect(v[0]?.detail).toMatch(/survivor n2/);
  });

  it("a reset from a survivor, or two nodes answering one connection outside a fault, is reported", () => {
    const packets = [
      { t: 100, node: "n0", kind: "SA" as const, client: "198.18.0.140.40000" },
      { t: 1200, node: "n1", kind: "R" as const, client: "198.18.0.141.40001" }, // the killed node's sockets
      { t: 1300, node: "n2", kind: "R" as const, client: "198.18.0.142.40002" }, // a survivor: violation
      { t: 1400, node: "n0", kind: "SA" as const, client: "198.18.0.143.40003" },
      { t: 1401, node: "n1", kind: "SA" as const, client: "198.18.0.143.40003" }, // during the fault: allowed
      { t: 5000, node: "n0", kind: "SA" as const, client: "198.18.0.144.40004" },
      { t: 5001, node: "n2", kind: "SA" as const, client: "198.18.0.144.40004" }, // answered twice: violation
      { t: 9000, node: "n2", kind: "SA" as const, client: "198.18.0.140.40000" }, // port reused much later: fine
    ];
    const v = checkPackets(packets, w);
    expect(v.map((x) => [x.invariant, x.at])).toEqual([
      ["farm-survivor-reset", 1300],
      ["farm-answered-twice", 5001],
    ]);
    // n2's reset finishes off a connection that n1 (killed) held: excused; one of n0's own connections: not.
    expect(checkPackets(packets, w, 2_000, new Map([["198.18.0.142.40002", "n1"]])).map((x) => x.invariant)).toEqual(["farm-answered-twice"]);
    expect(checkPackets(packets, w, 2_000, new Map([["198.18.0.142.40002", "n0"]])).map((x) => x.invariant)).toEqual(["farm-survivor-reset", "farm-answered-twice"]);
    // During a split (partition, one-way drop) of n1, both sides serve every bucket: n2's reset is excused then.
    expect(checkPackets(packets, [{ ...window("n1", 1000, 3000), split: true }]).map((x) => x.invariant)).toEqual(["farm-answered-twice"]);
  });

  it("maps each client address.port to the node that served it", () => {
    const held = connectionHolders([{ t: 1, ok: true, node: "n0", addr: "198.18.0.140", port: 40000 }, { t: 2, ok: false, addr: "198.18.0.141" }], [{ node: "n2", addr: "198.18.0.142", port: 40002, start: 1, end: 2, complete: false }]);
    expect([...held]).toEqual([["198.18.0.140.40000", "n0"], ["198.18.0.142.40002", "n2"]]);
  });

  it("parses tcpdump -e -tt lines into packets by source MAC", () => {
    const macs = new Map([["02:48:46:00:00:01", "n1"]]);
    const sa = "1763790000.123456 02:48:46:00:00:01 > 02:48:46:00:01:00, ethertype IPv4 (0x0800), length 74: 198.18.0.100.80 > 198.18.0.140.41234: Flags [S.], seq 1, ack 2, win 65160, length 0";
    expect(parseTcpdump(sa, macs)).toEqual({ t: 1763790000123, node: "n1", kind: "SA", client: "198.18.0.140.41234" });
    const rst = sa.replace("[S.]", "[R.]");
    expect(parseTcpdump(rst, macs)?.kind).toBe("R");
    expect(parseTcpdump(sa.replace("[S.]", "[.]"), macs)).toBeUndefined();
    expect(parseTcpdump("tcpdump: listening on eth0", macs)).toBeUndefined();
  });

  it("is converged when every node applies a table over all nodes and the tables cover every bucket", () => {
    const t = (owners: string[], owned: number) => ({ owners, owned });
    expect(farmConverged(new Map([["n0", t(NODES, 1366)], ["n1", t(NODES, 1365)], ["n2", t(NODES, 1365)]]), NODES, 4096)).toBeNull();
    expect(farmConverged(new Map([["n0", t(["n0", "n1"], 2048)], ["n1", t(NODES, 1365)], ["n2", t(NODES, 1365)]]), NODES, 4096)).toMatch(/n0 owners/);
    expect(farmConverged(new Map([["n0", t(NODES, 1366)], ["n1", t(NODES, 1366)], ["n2", t(NODES, 1365)]]), NODES, 4096)).toMatch(/4097/);
    expect(farmConverged(new Map([["n0", t(NODES, 1366)], ["n1", t(NODES, 1365)]]), NODES, 4096)).toMatch(/n2 has no bucket table/);
  });
});

describe("previous-role invariant (kill the daemon only)", () => {
  const orphan = { node: "n1", pid: 4242, start: 10_000, from: 50_000, label: "mirror#3 killDaemon primary" };

  it("matches an answer to a process by pid and start time, so that a reused pid does not count", () => {
    expect(sameProcess("4242 10003", orphan)).toBe(true);
    expect(sameProcess("4242 70000", orphan)).toBe(false); // the same pid, a later process
    expect(sameProcess("4243 10000", orphan)).toBe(false);
    expect(sameProcess("garbage", orphan)).toBe(false);
  });

  it("excuses the orphan's answers within the grace after its daemon's death, catches the first one after it", () => {
    const answers = [
      { t: 49_000, app: "4242 10000", what: "append 1" },
      { t: 50_900, app: "4242 10000", what: "append 2" },
      { t: 51_200, app: "4242 10000", what: "append 3" },
      { t: 51_500, app: "4242 10000", what: "append 4" },
      { t: 52_000, app: "5000 51000", what: "append 5" }, // the new role's process
    ];
    const v = checkPreviousRoles(answers, [orphan]);
    expect(v.map((x) => [x.invariant, x.at])).toEqual([["previous-role-answer", 51_200]]);
    expect(v[0]?.detail).toMatch(/process 4242 .* answered 1200 ms later \(append 3\)/);
    expect(checkPreviousRoles(answers.slice(0, 2), [orphan])).toEqual([]);
    expect(checkPreviousRoles(answers, [{ ...orphan, start: 40_000 }])).toEqual([]); // another process with that pid
  });
});
