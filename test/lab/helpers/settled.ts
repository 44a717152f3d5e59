/** The time (performance.now()) at which `p` settles, or undefined if it has not within `ms`. */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<number | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([
    p.then(
      () => performance.now(),
      () => performance.now(),
    ),
    new Promise<undefined>((res) => (timer = setTimeout(() => res(undefined), ms))),
  ]);
  clearTimeout(timer);
  return r;
}
