/**
 * Ping probe: an address answers ICMP echo (RFC 792) or ICMPv6 echo (RFC 4443 section 4), sent through a
 * raw socket (`raw-socket`, needs CAP_NET_RAW). Replies are matched on source address, identifier and
 * sequence number, so several ping probes (and other pingers) can run side by side.
 *
 * One raw socket per address family is shared by every ping probe of the process (a raw ICMP socket
 * receives a copy of every ICMP packet: one socket per probe would multiply that work). It is opened on
 * first use and closed when the last probe using it is closed.
 */
import raw, { type RawSocket } from "raw-socket";
import { isIP } from "node:net";
import { NotSupportedError } from "../core/errors.js";
import { canonicalAddress } from "./ip.js";
import { abortPromise, messageOf, type Probe, type ProbeResult } from "./probe.js";

export interface PingProbeOptions {
  /**
   * Target address, IPv4 or IPv6 literal (no name resolution: a checker must not depend on DNS). A link-local
   * IPv6 address needs its zone: `fe80::1%eth0`.
   */
  readonly host: string;
  /** Payload size in bytes (after the 8-byte ICMP header). Default 16. */
  readonly size?: number;
}

interface Waiter {
  readonly from: string;
  readonly resolve: (rttMs: number) => void;
  readonly sent: number;
}

const ECHO_REQUEST = { 4: 8, 6: 128 } as const;
const ECHO_REPLY = { 4: 0, 6: 129 } as const;

/** A shared raw ICMP or ICMPv6 socket with echo bookkeeping. */
class Pinger {
  readonly family: 4 | 6;
  readonly #socket: RawSocket;
  readonly #id: number;
  #seq = 0;
  readonly #waiting = new Map<number, Waiter>();
  users = 0;
  /** The socket failed or was closed: no reply will come through it any more. */
  dead = false;

  constructor(family: 4 | 6) {
    this.family = family;
    this.#socket = raw.createSocket({
      addressFamily: family === 4 ? raw.AddressFamily.IPv4 : raw.AddressFamily.IPv6,
      protocol: family === 4 ? raw.Protocol.ICMP : raw.Protocol.ICMPv6,
      bufferSize: 65536,
    });
    // Identifier: low bits of the pid mixed with the family, as ping(8) does with its pid.
    this.#id = (process.pid ^ (family === 6 ? 0x5a5a : 0)) & 0xffff;
    this.#socket.on("message", (buf, source) => this.#onMessage(buf, source));
    // raw-socket closes the socket after an error: mark this pinger dead so that probes open a new one.
    const die = (): void => {
      this.dead = true;
      if (pingers.get(this.family) === this) pingers.delete(this.family);
    };
    this.#socket.on("error", die);
    this.#socket.on("close", die);
    this.#socket.pauseRecv(); // no waiter yet: do not keep the event loop alive
  }

  #onMessage(buf: Buffer, source: string): void {
    // IPv4 raw sockets deliver the IP header; IPv6 ones do not (RFC 3542 section 3).
    const off = this.family === 4 ? ((buf[0] ?? 0) & 0x0f) * 4 : 0;
    if (buf.length < off + 8) return;
    if (buf[off] !== ECHO_REPLY[this.family] || buf[off + 1] !== 0) return;
    if (buf.readUInt16BE(off + 4) !== this.#id) return;
    const seq = buf.readUInt16BE(off + 6);
    const w = this.#waiting.get(seq);
    if (w === undefined || (isIP(source) !== 0 && canonicalAddress(source) !== w.from)) return;
    this.#waiting.delete(seq);
    if (this.#waiting.size === 0) this.#socket.pauseRecv();
    w.resolve(performance.now() - w.sent);
  }

  /** Sends one echo request; resolves with the round-trip time, rejects on send error or abort. */
  echo(target: string, size: number, signal: AbortSignal): Promise<number> {
    // Replies are matched without the zone (the kernel reports the bare source); the send keeps it, since a
    // link-local target (`fe80::1%eth0`, e.g. a router as split-brain witness) needs its interface.
    const from = canonicalAddress(target);
    let seq = this.#seq;
    for (let i = 0; i < 65536 && this.#waiting.has(seq); i++) seq = (seq + 1) & 0xffff;
    this.#seq = (seq + 1) & 0xffff;
    const packet = Buffer.alloc(8 + size);
    packet[0] = ECHO_REQUEST[this.family];
    packet.writeUInt16BE(this.#id, 4);
    packet.writeUInt16BE(seq, 6);
    packet.write("holdfast", 8, Math.min(8, size), "ascii");
    // The kernel computes the ICMPv6 checksum (it covers a pseudo-header); ICMPv4's is ours.
    if (this.family === 4) raw.writeChecksum(packet, 2, raw.createChecksum(packet));
    const abort = abortPromise(signal);
    const reply = new Promise<number>((resolve, reject) => {
      this.#waiting.set(seq, { from, resolve, sent: performance.now() });
      if (this.#socket.recvPaused) this.#socket.resumeRecv();
      this.#socket.send(packet, 0, packet.length, target, (err) => {
        if (err !== null) {
          this.#forget(seq);
          reject(err);
        }
      });
    });
    return Promise.race([reply, abort.promise]).finally(() => {
      abort.cleanup();
      this.#forget(seq);
    });
  }

  #forget(seq: number): void {
    this.#waiting.delete(seq);
    if (this.#waiting.size === 0 && !this.#socket.recvPaused) this.#socket.pauseRecv();
  }

  close(): void {
    this.#socket.close();
  }
}

const pingers = new Map<4 | 6, Pinger>();

function acquire(family: 4 | 6): Pinger {
  let p = pingers.get(family);
  if (p === undefined) {
    p = new Pinger(family);
    pingers.set(family, p);
  }
  p.users++;
  return p;
}

function release(p: Pinger): void {
  p.users--;
  if (p.users <= 0 && pingers.get(p.family) === p) {
    pingers.delete(p.family);
    p.close();
  }
}

/** One ICMP echo per run. See {@link PingProbeOptions}. */
export class PingProbe implements Probe {
  readonly name: string;
  readonly #host: string;
  readonly #family: 4 | 6;
  readonly #size: number;
  #pinger: Pinger | undefined;

  constructor(opts: PingProbeOptions) {
    const family = isIP(opts.host);
    if (family !== 4 && family !== 6) throw new TypeError(`ping host must be an IPv4 or IPv6 address, got ${opts.host}`);
    this.#host = opts.host;
    this.#family = family;
    this.#size = opts.size ?? 16;
    this.name = `ping:${opts.host}`;
  }

  /**
   * Sends one echo request and waits for its reply (until `signal` aborts).
   * @throws NotSupportedError when no raw socket can be opened (no CAP_NET_RAW): the runner reports it as
   * the failure detail, and every run retries.
   */
  async run(signal: AbortSignal): Promise<ProbeResult> {
    if (this.#pinger?.dead === true) this.close();
    if (this.#pinger === undefined) {
      try {
        this.#pinger = acquire(this.#family);
      } catch (err) {
        throw new NotSupportedError(`raw ICMP${this.#family === 6 ? "v6" : ""} socket`, `${messageOf(err)} (needs CAP_NET_RAW)`, { cause: err });
      }
    }
    try {
      const rtt = await this.#pinger.echo(this.#host, this.#size, signal);
      return { ok: true, detail: `ping ${this.#host} reply in ${rtt.toFixed(2)} ms` };
    } catch (err) {
      if (signal.aborted) throw err;
      return { ok: false, detail: `ping ${this.#host} send failed: ${messageOf(err)}` };
    }
  }

  close(): void {
    if (this.#pinger !== undefined) {
      release(this.#pinger);
      this.#pinger = undefined;
    }
  }
}
