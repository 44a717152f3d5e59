/**
 * Turns a stream of callbacks into an async iterator: values are buffered from the moment of the call, so
 * none is missed between two `next()`s. Ends when the consumer breaks out (the subscription is removed) or
 * when `signal` aborts.
 *
 * ```ts
 * for await (const v of iterate<Verdict>((fn) => { runner.on("verdict", fn); return () => runner.off("verdict", fn); })) ...
 * ```
 */
export async function* iterate<T>(subscribe: (push: (value: T) => void) => () => void, signal?: AbortSignal): AsyncGenerator<T> {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = subscribe((v) => {
    queue.push(v);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal?.addEventListener("abort", onAbort);
  try {
    while (!signal?.aborted) {
      if (queue.length > 0) {
        yield queue.shift() as T;
        continue;
      }
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  } finally {
    unsubscribe();
    signal?.removeEventListener("abort", onAbort);
  }
}
