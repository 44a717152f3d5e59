/**
 * Split-brain probe (mirror modules): at least one witness is reachable. A witness is an address that both
 * nodes of a mirror should see when their network is fine, e.g. the router. A node that has lost sight of
 * its peer *and* of every witness is the one cut off: it must not go ALONE (docs/architecture.md, "Split-brain
 * arbitration").
 *
 * Witnesses are probed in parallel (ping or TCP connect); the probe is ok as soon as one answers.
 */
import { messageOf, type Probe, type ProbeResult } from "./probe.js";
import { PingProbe } from "./ping.js";
import { TcpProbe } from "./tcp.js";

export interface SplitBrainProbeOptions {
  /** Witness addresses (IPv4 or IPv6 literals). At least one. */
  readonly witnesses: readonly string[];
  /** How to reach a witness: ICMP echo or a TCP connect to `port`. Default `ping`. */
  readonly method?: "ping" | "tcp";
  /** TCP port of the witnesses, required with `method: "tcp"`. */
  readonly port?: number;
}

/** Any witness reachable. See {@link SplitBrainProbeOptions}. */
export class SplitBrainProbe implements Probe {
  readonly name: string;
  readonly #probes: readonly Probe[];

  constructor(opts: SplitBrainProbeOptions) {
    if (opts.witnesses.length === 0) throw new TypeError("split-brain probe needs at least one witness");
    const method = opts.method ?? "ping";
    if (method === "tcp" && opts.port === undefined) throw new TypeError("split-brain probe with method tcp needs a port");
    this.#probes = opts.witnesses.map((host) =>
      method === "ping" ? new PingProbe({ host }) : new TcpProbe({ host, port: opts.port as number }),
    );
    this.name = `split-brain:${opts.witnesses.join(",")}`;
  }

  run(signal: AbortSignal): Promise<ProbeResult> {
    return new Promise((resolve, reject) => {
      const failures: string[] = [];
      let pending = this.#probes.length;
      let settled = false;
      const onAbort = (): void => {
        if (settled) return;
        settled = true;
        const heard = failures.length > 0 ? ` (${failures.join("; ")})` : "";
        reject(new Error(`no witness answered${heard}`, { cause: signal.reason }));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      const finish = (r: ProbeResult): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        resolve(r);
      };
      for (const p of this.#probes) {
        p.run(signal).then(
          (r) => {
            if (r.ok) finish({ ok: true, detail: `witness answered: ${r.detail}` });
            else failures.push(r.detail);
          },
          (err: unknown) => {
            if (!signal.aborted) failures.push(messageOf(err));
          },
        ).finally(() => {
          pending--;
          if (pending === 0) finish({ ok: false, detail: `no witness answered: ${failures.join("; ")}` });
        });
      }
    });
  }

  close(): void {
    for (const p of this.#probes) p.close?.();
  }
}
