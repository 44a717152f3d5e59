// bench:peers — one failover measurement, the same for keepalived and for the holdfast mirror: a client probes the
// VIP with a new HTTP connection every PROBE_EVERY_MS (test/lab/helpers/http-probe.mts); the fault is injected
// once the probes are answered by the serving node; the failover time is fault -> start of the first probe that
// the other node answered. The probe's own period bounds the resolution (+0/-PROBE_EVERY_MS).
import { join } from "node:path";
import type { Lab, LabHost } from "../../src/testing/lab.js";

export const PROBE_EVERY_MS = 10;
export const PROBE_TIMEOUT_MS = 200;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ProbeAnswer {
  t: number;
  ok: boolean;
  node?: string;
}

export interface FailoverOptions {
  lab: Lab;
  repo: string;
  client: LabHost;
  vip: string;
  port: number;
  /** The node id (first line of the app's answer) serving before the fault. */
  from: string;
  /** The node id expected to serve after it. */
  to: string;
  /** Injects the fault; resolves once it is injected (its start is the time origin). */
  fault: () => Promise<void>;
  /** Give up after this long without an answer from `to`. */
  limitMs: number;
}

/** Returns the failover time in ms (NaN if `to` never answered within `limitMs`) and the fault's time origin. */
export async function measureFailover(o: FailoverOptions): Promise<{ ms: number; tFault: number }> {
  const probe = o.lab.spawn(
    o.client,
    [
      process.execPath,
      "--import",
      "tsx",
      join(o.repo, "test/lab/helpers/http-probe.mts"),
      JSON.stringify({ vip: o.vip, port: o.port, addresses: [o.lab.addr(o.client)], streams: 0, streamMs: 0, probeEveryMs: PROBE_EVERY_MS, probeTimeoutMs: PROBE_TIMEOUT_MS, durationMs: o.limitMs + 5_000 }),
    ],
    { cwd: o.repo },
  );
  const answers: ProbeAnswer[] = [];
  const done = (async () => {
    for await (const raw of probe.lines()) {
      const l = JSON.parse(raw) as { type: string } & ProbeAnswer;
      if (l.type === "probe") answers.push(l);
    }
  })();
  try {
    // Baseline: 10 consecutive answers from the serving node before the fault.
    const baseline = () => answers.length >= 10 && answers.slice(-10).every((a) => a.ok && a.node === o.from);
    for (let i = 0; !baseline(); i++) {
      if (i > 500) throw new Error(`failover: ${o.from} does not serve the VIP before the fault (last: ${JSON.stringify(answers.slice(-3))})`);
      await sleep(20);
    }
    const tFault = Date.now();
    await o.fault();
    const answered = () => answers.some((a) => a.ok && a.node === o.to && a.t >= tFault);
    for (let i = 0; !answered() && Date.now() - tFault < o.limitMs; i++) await sleep(20);
    const first = answers.filter((a) => a.ok && a.node === o.to && a.t >= tFault).sort((a, b) => a.t - b.t)[0];
    return { ms: first ? first.t - tFault : NaN, tFault };
  } finally {
    probe.kill("SIGKILL");
    await done;
  }
}

export function pct(xs: readonly number[], p: number): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number);
}

/** Polls `cond` every 50 ms until it holds; throws `what` after `timeoutMs`. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(50);
  }
}
