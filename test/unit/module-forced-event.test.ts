/**
 * A transition caused by `prim --force` says so in its state events (`forced`), so that drivers (the mirror driver
 * mounting a copy whose resync did not finish) read a flag, not the cause text.
 */
import { describe, expect, it } from "vitest";
import { Harness } from "../scenarios/harness.js";
import type { ModuleEvent } from "../../src/core/module/index.js";

type StateEvent = Extract<ModuleEvent, { type: "state" }>;

/** Node a's state events, per script line (`index: line`). */
function run(lines: string[]): Map<string, StateEvent[]> {
  const byLine = new Map<string, StateEvent[]>();
  let at = "";
  const h = new Harness((node, e) => {
    if (node.id !== "a" || e.type !== "emit" || e.event.type !== "state") return;
    byLine.set(at, [...(byLine.get(at) ?? []), e.event]);
  });
  h.quiet = true;
  lines.forEach((l, i) => {
    at = `${i}: ${l}`;
    h.exec(l);
  });
  return byLine;
}

describe("module engine: forced transitions", () => {
  it("`prim --force` marks the state events of its transition; plain `prim` and other transitions do not", () => {
    const ev = run(["mirror a b", "cmd b prim", "cmd a start", "hooks ok", "crash b", "hooks ok", "cmd a prim --force", "hooks ok", "cmd a stop", "hooks ok"]);
    const begin = ev.get("6: cmd a prim --force") ?? [];
    const end = ev.get("7: hooks ok") ?? [];
    expect(begin).toEqual([expect.objectContaining({ from: "WAIT", to: "WAIT", transient: true, next: "ALONE", forced: true })]);
    expect(end).toEqual([expect.objectContaining({ from: "WAIT", to: "ALONE", transient: false, forced: true })]);
    for (const [line, list] of ev) if (!line.startsWith("6:") && !line.startsWith("7:")) expect(list.every((e) => e.forced === undefined), line).toBe(true);
    const plain = run(["mirror a b", "cmd a prim", "hooks ok"]);
    expect([...plain.values()].flat().length).toBeGreaterThan(0);
    expect([...plain.values()].flat().every((e) => e.forced === undefined)).toBe(true);
  });
});
