import { describe, expect, it } from "vitest";
import { EventEmitter } from "eventemitter3";
import { iterate } from "../../src/runtime/iterate.js";

describe("iterate", () => {
  const source = () => {
    const e = new EventEmitter<{ v: [number] }>();
    const subscribe = (fn: (v: number) => void) => {
      e.on("v", fn);
      return () => e.off("v", fn);
    };
    return { e, subscribe };
  };

  it("buffers values emitted between two next() calls and unsubscribes when the consumer breaks out", async () => {
    const { e, subscribe } = source();
    const it = iterate(subscribe);
    const first = it.next(); // subscribes
    e.emit("v", 1);
    e.emit("v", 2);
    e.emit("v", 3);
    const got = [(await first).value, (await it.next()).value, (await it.next()).value];
    expect(got).toEqual([1, 2, 3]);
    expect(e.listenerCount("v")).toBe(1);
    await it.return(undefined);
    expect(e.listenerCount("v")).toBe(0);
  });

  it("ends when the signal aborts", async () => {
    const { e, subscribe } = source();
    const ac = new AbortController();
    const seen: number[] = [];
    const done = (async () => {
      for await (const v of iterate(subscribe, ac.signal)) seen.push(v);
    })();
    await Promise.resolve();
    e.emit("v", 7);
    await new Promise((r) => setImmediate(r));
    ac.abort();
    await done;
    expect(seen).toEqual([7]);
    expect(e.listenerCount("v")).toBe(0);
  });
});
