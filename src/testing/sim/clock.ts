import type { Clock } from "../../runtime/clock.js";

interface Entry {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * A virtual clock with a deterministic event queue: events run in time order, ties in scheduling order.
 * Nothing runs until `advance`/`runUntil` is called, so a test decides exactly when time passes.
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private heap: Entry[] = [];
  constructor(start = 0) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fn: () => void): () => void {
    const e: Entry = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.push(e);
    return () => {
      e.cancelled = true;
    };
  }
  /** Schedules at an absolute time. */
  at(time: number, fn: () => void): () => void {
    return this.setTimer(time - this.t, fn);
  }
  /** Runs every event due up to and including `time`, then sets the clock to `time`. */
  runUntil(time: number): void {
    for (;;) {
      const top = this.heap[0];
      if (!top || top.at > time) break;
      this.pop();
      if (top.cancelled) continue;
      this.t = top.at;
      top.fn();
    }
    this.t = Math.max(this.t, time);
  }
  advance(ms: number): void {
    this.runUntil(this.t + ms);
  }
  get pending(): number {
    return this.heap.filter((e) => !e.cancelled).length;
  }

  private less(a: Entry, b: Entry): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i] as Entry, h[p] as Entry)) break;
      [h[i], h[p]] = [h[p] as Entry, h[i] as Entry];
      i = p;
    }
  }
  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (h.length === 0 || !last) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l] as Entry, h[m] as Entry)) m = l;
      if (r < h.length && this.less(h[r] as Entry, h[m] as Entry)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m] as Entry, h[i] as Entry];
      i = m;
    }
  }
}
