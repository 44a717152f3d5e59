/**
 * TCP probe: a TCP connection to host:port completes (the three-way handshake), then is closed at once.
 * Checks a local application's listening port or a remote dependency. A refused connection fails at once;
 * a silent one fails at the runner's timeout (the connect is aborted with it).
 */
import { Socket } from "node:net";
import { messageOf, type Probe, type ProbeResult } from "./probe.js";

export interface TcpProbeOptions {
  /** Host address (IPv4 or IPv6 literal, or a name resolved at every run). */
  readonly host: string;
  /** TCP port, 1..65535. */
  readonly port: number;
  /** Local address to connect from (e.g. the node's own address on the checked network). Default: any. */
  readonly localAddress?: string;
}

/** `[v6]:port` or `v4:port`. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Connects once to host:port. See {@link TcpProbeOptions}. */
export class TcpProbe implements Probe {
  readonly name: string;
  readonly #opts: TcpProbeOptions;

  constructor(opts: TcpProbeOptions) {
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new RangeError(`tcp port out of range: ${opts.port}`);
    this.#opts = opts;
    this.name = `tcp:${hostPort(opts.host, opts.port)}`;
  }

  run(signal: AbortSignal): Promise<ProbeResult> {
    const target = hostPort(this.#opts.host, this.#opts.port);
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      const done = (fn: () => void): void => {
        signal.removeEventListener("abort", onAbort);
        socket.destroy();
        fn();
      };
      const onAbort = (): void => done(() => reject(signal.reason ?? new Error("aborted")));
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener("abort", onAbort, { once: true });
      socket.once("connect", () => {
        const ms = (performance.now() - started).toFixed(1);
        done(() => resolve({ ok: true, detail: `connect ${target} ok in ${ms} ms` }));
      });
      socket.once("error", (err: NodeJS.ErrnoException) => {
        const why =
          err.code === "ECONNREFUSED"
            ? "refused"
            : err.code === "EHOSTUNREACH" || err.code === "ENETUNREACH"
              ? `unreachable (${err.code})`
              : messageOf(err);
        done(() => resolve({ ok: false, detail: `connect ${target} ${why}` }));
      });
      socket.connect({
        host: this.#opts.host,
        port: this.#opts.port,
        ...(this.#opts.localAddress === undefined ? {} : { localAddress: this.#opts.localAddress }),
      });
    });
  }
}
