/**
 * The witness arbiter's server: a UDP socket in front of the pure {@link ArbiterWitness} lease table
 * (`src/core/arbiter.ts`). Run it on a host both mirror nodes reach and that is not one of them (the router, a
 * client machine, a small VM): `tsx examples/witness.ts --listen 198.18.0.200:7799 --key cluster.key`.
 *
 * Every datagram is authenticated with HMAC-SHA256 under the cluster key; unsigned, garbage, oversized and
 * replayed datagrams are dropped and counted ({@link WitnessServer.drops}), never answered. The lease table is
 * bounded (`maxModules`), and a (re)started server grants nothing during one `maxTtlMs` (see the core).
 *
 * Every `start()` draws a new boot nonce (64 random bits) that answers carry and claims must echo, so claims
 * captured before a restart are refused after it (the per-node sequence numbers live in memory only). Claims
 * without the nonce are answered with a denial naming it and counted in `drops.staleBoot`.
 */
import { randomBytes } from "node:crypto";
import { createSocket, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";
import { EventEmitter } from "eventemitter3";
import { ArbiterWitness, decodeArbiter, encodeArbiter, type ArbiterDropReason, type ArbiterMessage, type ArbiterWitnessOptions } from "../core/arbiter.js";
import { hmacSha256 } from "../runtime/crypto.js";
import { systemClock, type Clock } from "../runtime/clock.js";

export interface WitnessServerOptions extends Omit<ArbiterWitnessOptions, "boot"> {
  /** Address to listen on (IPv4 or IPv6 literal). */
  readonly host: string;
  /** UDP port. 0 picks a free one (see {@link WitnessServer.port}). */
  readonly port: number;
  /** The cluster key (at least 32 bytes; `parseKey` of the key file). */
  readonly key: Uint8Array;
  /** Monotonic time source. Default: the system clock. */
  readonly clock?: Clock;
}

/** Typed events of a {@link WitnessServer}: every answer sent, with the claim that caused it. */
export interface WitnessServerEvents {
  answer: (e: { readonly request: ArbiterMessage; readonly answer: ArbiterMessage; readonly from: string }) => void;
  drop: (e: { readonly reason: ArbiterDropReason | "replay" | "staleBoot"; readonly from: string }) => void;
}

/** The witness arbiter over UDP. See the module comment. */
export class WitnessServer extends EventEmitter<WitnessServerEvents> {
  readonly #opts: WitnessServerOptions;
  readonly #clock: Clock;
  readonly #mac: ReturnType<typeof hmacSha256>;
  #socket: Socket | undefined;
  #witness: ArbiterWitness | undefined;
  /**
   * Datagrams dropped, by reason. `staleBoot`: claims and releases without this run's nonce (a client's first
   * claim, or one captured before a restart); the claims among them are answered with a denial naming the nonce.
   */
  readonly drops: Record<ArbiterDropReason | "replay" | "staleBoot", number> = { size: 0, magic: 0, mac: 0, malformed: 0, replay: 0, staleBoot: 0 };
  /** Answers sent. */
  answers = 0;

  constructor(opts: WitnessServerOptions) {
    super();
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#mac = hmacSha256(opts.key);
  }

  /** The lease table (for status output and tests); undefined before `start()`. */
  get witness(): ArbiterWitness | undefined {
    return this.#witness;
  }

  /** The bound UDP port. */
  get port(): number {
    const a = this.#socket?.address();
    return a === undefined ? this.#opts.port : a.port;
  }

  /** Binds the socket; the grace period (one maxTtl with no grants) starts now. */
  async start(): Promise<void> {
    const sock = createSocket({ type: isIPv6(this.#opts.host) ? "udp6" : "udp4" });
    this.#witness = new ArbiterWitness(this.#clock.now(), { ...this.#opts, boot: randomBytes(8).toString("hex") });
    sock.on("message", (msg, rinfo) => this.#onDatagram(msg, rinfo.address, rinfo.port));
    sock.on("error", () => undefined);
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(this.#opts.port, this.#opts.host, () => {
        sock.off("error", reject);
        resolve();
      });
    });
    this.#socket = sock;
  }

  #onDatagram(bytes: Uint8Array, address: string, port: number): void {
    const w = this.#witness;
    const sock = this.#socket;
    if (w === undefined || sock === undefined) return;
    const d = decodeArbiter(bytes, this.#mac);
    if (!d.ok) {
      this.drops[d.reason]++;
      this.emit("drop", { reason: d.reason, from: address });
      return;
    }
    const { replays, staleBoot } = w;
    const answer = w.receive(d.msg, this.#clock.now());
    if (w.replays > replays) {
      this.drops.replay++;
      this.emit("drop", { reason: "replay", from: address });
    }
    if (w.staleBoot > staleBoot) {
      this.drops.staleBoot++;
      this.emit("drop", { reason: "staleBoot", from: address });
    }
    if (answer === undefined) return;
    this.answers++;
    sock.send(encodeArbiter(answer, this.#mac), port, address);
    this.emit("answer", { request: d.msg, answer, from: address });
  }

  async close(): Promise<void> {
    const s = this.#socket;
    this.#socket = undefined;
    if (s !== undefined) await new Promise<void>((r) => s.close(() => r()));
  }
}
