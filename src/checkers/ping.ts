/**
 * Ping probe: an address answers ICMP echo (RFC 792) or ICMPv6 echo (RFC 4443 section 4). Replies are matched
 * on source address, identifier and sequence number, so several ping probes (and other pingers) can run side
 * by side.
 *
 * How the echo is sent (the probe's `method`), chosen once per process at the first run, in this order:
 *  1. `raw-socket`: a raw socket through the `raw-socket` addon, if it loads. It is an optional dependency
 *     (node-gyp builds it at install, which needs a C/C++ toolchain), loaded on first use, never at import.
 *  2. `koffi`: the same raw socket opened through libc with koffi (a dependency that ships prebuilt
 *     binaries: no compiler). The socket is non-blocking; while a reply is awaited it is read on a short timer
 *     (1 ms, backing off to 5 ms), so the event loop is never blocked and RTTs are read within that step.
 *  3. `ping-binary`: the system's `ping` (iputils-ping), one `ping -c 1 -n` child per run.
 * Methods 1 and 2 need CAP_NET_RAW (ICMP datagram sockets are not used: net.ipv4.ping_group_range is often
 * closed). Without it the probe throws a NotSupportedError: it does not fall back to the binary, so a missing
 * capability is reported rather than hidden. A probe can also ask for one method (`method` option).
 *
 * One raw socket per method and address family is shared by every ping probe of the process (a raw ICMP socket
 * receives a copy of every ICMP packet: one socket per probe would multiply that work). It is opened on
 * first use and closed when the last probe using it is closed.
 */
import type { RawSocket } from "raw-socket";
import type koffiModule from "koffi";
import { spawn } from "node:child_process";
import { accessSync, constants as fsConstants } from "node:fs";
import { createRequire } from "node:module";
import { isIP } from "node:net";
import { constants as osConstants, endianness } from "node:os";
import { delimiter, join } from "node:path";
import { NotSupportedError } from "../core/errors.js";
import { selfUrl } from "../native/self.js";
import { canonicalAddress } from "./ip.js";
import { abortPromise, messageOf, type Probe, type ProbeResult } from "./probe.js";

/** How a ping probe sends its echo requests; see the file header for the order of choice. */
export type PingMethod = "raw-socket" | "koffi" | "ping-binary";

/** The order in which `auto` tries the methods. */
export const PING_METHODS: readonly PingMethod[] = ["raw-socket", "koffi", "ping-binary"];

export interface PingProbeOptions {
  /**
   * Target address, IPv4 or IPv6 literal (no name resolution: a checker must not depend on DNS). A link-local
   * IPv6 address needs its zone: `fe80::1%eth0`.
   */
  readonly host: string;
  /** Payload size in bytes (after the 8-byte ICMP header). Default 16. */
  readonly size?: number;
  /** Force one method instead of the first that loads (`auto`, the default). */
  readonly method?: PingMethod | "auto";
}

type RawSocketModule = typeof import("raw-socket").default;
type Koffi = typeof koffiModule;

/** The libc calls of the koffi method. */
export interface Libc {
  readonly socket: (domain: number, type: number, protocol: number) => number;
  readonly setsockopt: (fd: number, level: number, name: number, value: Buffer, len: number) => number;
  readonly sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrLen: number) => number;
  readonly recvfrom: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrLen: Buffer) => number;
  readonly close: (fd: number) => number;
  readonly inet_pton: (af: number, src: string, dst: Buffer) => number;
  readonly if_nametoindex: (name: string) => number;
  readonly strerror: (errno: number) => string;
  readonly errno: () => number;
}

/**
 * Loads what each method needs; each throws when it is unavailable. Replaceable with
 * {@link setPingLoaders} (tests simulate a missing raw-socket this way).
 */
export interface PingLoaders {
  readonly rawSocket: () => RawSocketModule;
  readonly libc: () => Libc;
  /** The path of an executable `ping`. */
  readonly pingBinary: () => string;
}

let requireHere: NodeJS.Require | undefined;
/** `require` relative to this module in every build (`import.meta.url` is empty in the CJS bundle). */
function req(id: string): unknown {
  requireHere ??= createRequire(selfUrl(import.meta.url));
  return requireHere(id);
}

let libc: Libc | undefined;
function loadLibc(): Libc {
  if (libc !== undefined) return libc;
  if (process.platform !== "linux") throw new Error(`the koffi raw socket is Linux-only (this is ${process.platform})`);
  const koffi = req("koffi") as Koffi;
  const lib = koffi.load("libc.so.6");
  libc = {
    socket: lib.func("int socket(int domain, int type, int protocol)") as Libc["socket"],
    setsockopt: lib.func("int setsockopt(int fd, int level, int name, const void *value, uint32_t len)") as Libc["setsockopt"],
    sendto: lib.func("intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)") as Libc["sendto"],
    recvfrom: lib.func("intptr_t recvfrom(int fd, void *buf, size_t len, int flags, void *addr, void *addrlen)") as Libc["recvfrom"],
    close: lib.func("int close(int fd)") as Libc["close"],
    inet_pton: lib.func("int inet_pton(int af, const char *src, void *dst)") as Libc["inet_pton"],
    if_nametoindex: lib.func("unsigned int if_nametoindex(const char *name)") as Libc["if_nametoindex"],
    strerror: lib.func("const char *strerror(int errnum)") as Libc["strerror"],
    errno: () => koffi.errno(),
  };
  return libc;
}

function findPing(): string {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/bin", "/bin", "/usr/sbin", "/sbin"];
  for (const dir of dirs) {
    if (dir === "") continue;
    const p = join(dir, "ping");
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  throw new Error("no ping executable on PATH (Debian package iputils-ping)");
}

/** The loaders of a real process: require raw-socket and koffi next to this module, find `ping` on PATH. */
export const DEFAULT_PING_LOADERS: PingLoaders = {
  rawSocket: () => req("raw-socket") as RawSocketModule,
  libc: loadLibc,
  pingBinary: findPing,
};

let loaders: PingLoaders = DEFAULT_PING_LOADERS;

/** What a method loaded. */
type Loaded =
  | { readonly method: "raw-socket"; readonly raw: RawSocketModule }
  | { readonly method: "koffi"; readonly libc: Libc }
  | { readonly method: "ping-binary"; readonly path: string };

function load(method: PingMethod): Loaded {
  switch (method) {
    case "raw-socket":
      return { method, raw: loaders.rawSocket() };
    case "koffi":
      return { method, libc: loaders.libc() };
    case "ping-binary":
      return { method, path: loaders.pingBinary() };
  }
}

const chosen = new Map<PingMethod | "auto", Loaded>();

/**
 * The method for a request (`auto`: the first of {@link PING_METHODS} that loads), loaded; memoized per
 * process. Throws a NotSupportedError naming why each candidate failed.
 */
function choose(want: PingMethod | "auto"): Loaded {
  const known = chosen.get(want);
  if (known !== undefined) return known;
  const why: string[] = [];
  for (const method of want === "auto" ? PING_METHODS : [want]) {
    try {
      const l = load(method);
      chosen.set(want, l);
      return l;
    } catch (err) {
      why.push(`${method}: ${messageOf(err).split("\n")[0]}`);
    }
  }
  throw new NotSupportedError("ping", `no way to send ICMP echo: ${why.join("; ")}`);
}

/**
 * Replaces the loaders (all or some), e.g. to simulate that raw-socket is not installed. Forgets the methods
 * chosen so far; probes opened before keep their socket. Returns a function that restores the previous ones.
 */
export function setPingLoaders(replace: Partial<PingLoaders>): () => void {
  const before = loaders;
  loaders = { ...loaders, ...replace };
  chosen.clear();
  return () => {
    loaders = before;
    chosen.clear();
  };
}

/** The method `auto` picks in this process (loading it), or undefined when none is available. */
export function pingMethod(): PingMethod | undefined {
  try {
    return choose("auto").method;
  } catch {
    return undefined;
  }
}

const ECHO_REQUEST = { 4: 8, 6: 128 } as const;
const ECHO_REPLY = { 4: 0, 6: 129 } as const;

/** The Internet checksum (RFC 1071) of a buffer. */
function checksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2 === 1) sum += (buf[buf.length - 1] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** A raw ICMP(v6) socket as the socket pinger uses it, whichever library opened it. */
interface IcmpSocket {
  send(packet: Buffer, target: string, done: (err: Error | null) => void): void;
  /** Start or stop reading (a socket read while nobody waits would keep the event loop alive). */
  resume(): void;
  pause(): void;
  close(): void;
}

interface SocketEvents {
  readonly message: (buf: Buffer, source: string) => void;
  /** The socket failed or closed. */
  readonly dead: () => void;
}

function rawSocketOpen(raw: RawSocketModule, family: 4 | 6, on: SocketEvents): IcmpSocket {
  const s: RawSocket = raw.createSocket({
    addressFamily: family === 4 ? raw.AddressFamily.IPv4 : raw.AddressFamily.IPv6,
    protocol: family === 4 ? raw.Protocol.ICMP : raw.Protocol.ICMPv6,
    bufferSize: 65536,
  });
  s.on("message", on.message);
  // raw-socket closes the socket after an error.
  s.on("error", on.dead);
  s.on("close", on.dead);
  s.pauseRecv();
  return {
    send: (packet, target, done) => void s.send(packet, 0, packet.length, target, (err) => done(err)),
    resume: () => void (s.recvPaused && s.resumeRecv()),
    pause: () => void (!s.recvPaused && s.pauseRecv()),
    close: () => void s.close(),
  };
}

// Linux values (the koffi method is Linux-only).
const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;
const SOL_RAW = 255;
const ICMP_FILTER = 1;
const ICMP6_FILTER = 1;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const EINTR = 4;
/** Longest step between two reads of the koffi socket while a reply is awaited. */
const MAX_POLL_MS = 5;
const LE = endianness() === "LE";

/** Writes a host-order integer (sockaddr families, scope ids, socklen_t and filter words are host order). */
function hostU16(buf: Buffer, value: number, offset: number): void {
  if (LE) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}
function hostU32(buf: Buffer, value: number, offset: number): void {
  if (LE) buf.writeUInt32LE(value >>> 0, offset);
  else buf.writeUInt32BE(value >>> 0, offset);
}

/** An Error for a failed libc call, with the errno's name as `code` (like Node's own errors). */
function errnoError(lib: Libc, call: string, errno: number): Error {
  const name = Object.entries(osConstants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
  return Object.assign(new Error(`${call}: ${lib.strerror(errno)} (${name})`), { code: name, errno });
}

/** A raw ICMP(v6) socket opened through libc: non-blocking, read on a short timer while resumed. */
class KoffiIcmpSocket implements IcmpSocket {
  readonly #lib: Libc;
  readonly #family: 4 | 6;
  readonly #on: SocketEvents;
  #fd: number;
  #reading = false;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #step = 1;
  readonly #buf = Buffer.alloc(65536);
  readonly #from = Buffer.alloc(28); // sockaddr_in6, the larger of the two
  readonly #fromLen = Buffer.alloc(4);
  readonly #addresses = new Map<string, Buffer>();

  constructor(lib: Libc, family: 4 | 6, on: SocketEvents) {
    this.#lib = lib;
    this.#family = family;
    this.#on = on;
    const fd = lib.socket(family === 4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, family === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6);
    if (fd < 0) throw errnoError(lib, `socket(${family === 4 ? "AF_INET, SOCK_RAW, IPPROTO_ICMP" : "AF_INET6, SOCK_RAW, IPPROTO_ICMPV6"})`, lib.errno());
    this.#fd = fd;
    // Let the kernel drop every ICMP type but echo reply (best effort: matching below filters anyway).
    if (family === 4) {
      const mask = Buffer.alloc(4);
      hostU32(mask, ~(1 << ECHO_REPLY[4]), 0); // a set bit filters that type out
      lib.setsockopt(fd, SOL_RAW, ICMP_FILTER, mask, 4);
    } else {
      const filter = Buffer.alloc(32, 0xff); // struct icmp6_filter: a set bit blocks that type
      const t = ECHO_REPLY[6];
      hostU32(filter, ~(1 << (t & 31)), (t >> 5) * 4);
      lib.setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, filter, 32);
    }
  }

  /** sockaddr_in / sockaddr_in6 for a literal (with an optional `%zone` for IPv6), cached. */
  #sockaddr(target: string): Buffer {
    let sa = this.#addresses.get(target);
    if (sa !== undefined) return sa;
    const [addr = "", zone] = target.split("%");
    if (this.#family === 4) {
      sa = Buffer.alloc(16);
      hostU16(sa, AF_INET, 0);
      if (this.#lib.inet_pton(AF_INET, addr, sa.subarray(4, 8)) !== 1) throw new TypeError(`not an IPv4 address: ${target}`);
    } else {
      sa = Buffer.alloc(28);
      hostU16(sa, AF_INET6, 0);
      if (this.#lib.inet_pton(AF_INET6, addr, sa.subarray(8, 24)) !== 1) throw new TypeError(`not an IPv6 address: ${target}`);
      if (zone !== undefined) {
        const scope = /^\d+$/.test(zone) ? Number(zone) : this.#lib.if_nametoindex(zone);
        if (scope === 0) throw new Error(`unknown interface ${zone} in ${target}`);
        hostU32(sa, scope, 24);
      }
    }
    if (this.#addresses.size > 64) this.#addresses.clear();
    this.#addresses.set(target, sa);
    return sa;
  }

  send(packet: Buffer, target: string, done: (err: Error | null) => void): void {
    let err: Error | null = null;
    try {
      if (this.#fd < 0) throw new Error("socket closed");
      const sa = this.#sockaddr(target);
      if (this.#lib.sendto(this.#fd, packet, packet.length, MSG_DONTWAIT, sa, sa.length) < 0) err = errnoError(this.#lib, "sendto", this.#lib.errno());
    } catch (e) {
      err = e as Error;
    }
    if (err === null && this.#reading) this.#kick();
    process.nextTick(done, err);
  }

  resume(): void {
    if (this.#reading || this.#fd < 0) return;
    this.#reading = true;
    this.#kick();
  }

  pause(): void {
    this.#reading = false;
    this.#cancel();
  }

  #cancel(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#immediate = undefined;
  }

  /**
   * Reads right after this turn of the event loop (a loopback or LAN reply can be there within microseconds),
   * then every 1, 2, 4, 5, 5... ms.
   */
  #kick(): void {
    this.#cancel();
    this.#step = 1;
    this.#immediate = setImmediate(() => this.#poll());
  }

  #poll(): void {
    this.#cancel();
    this.#drain();
    if (!this.#reading || this.#fd < 0) return;
    this.#timer = setTimeout(() => this.#poll(), this.#step);
    this.#step = Math.min(MAX_POLL_MS, this.#step * 2);
  }

  /** Reads every queued packet (bounded per call, so a flood cannot hold the event loop). */
  #drain(): void {
    for (let i = 0; i < 1024 && this.#fd >= 0; i++) {
      hostU32(this.#fromLen, this.#from.length, 0);
      const n = this.#lib.recvfrom(this.#fd, this.#buf, this.#buf.length, MSG_DONTWAIT, this.#from, this.#fromLen);
      if (n < 0) {
        const errno = this.#lib.errno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) return;
        this.close();
        this.#on.dead();
        return;
      }
      this.#on.message(Buffer.from(this.#buf.subarray(0, n)), this.#source());
    }
  }

  /** The text form of the sockaddr recvfrom filled in. */
  #source(): string {
    if (this.#family === 4) return [...this.#from.subarray(4, 8)].join(".");
    const groups: string[] = [];
    for (let i = 8; i < 24; i += 2) groups.push(this.#from.readUInt16BE(i).toString(16));
    return canonicalAddress(groups.join(":"));
  }

  close(): void {
    this.pause();
    if (this.#fd >= 0) this.#lib.close(this.#fd);
    this.#fd = -1;
  }
}

/** What every shared pinger offers the probes. */
interface Echoer {
  readonly key: string;
  readonly method: PingMethod;
  users: number;
  /** No reply will come through it any more: probes open a new one. */
  dead: boolean;
  /** Sends one echo request; resolves with the round-trip time in ms, rejects on send error or abort. */
  echo(target: string, size: number, signal: AbortSignal): Promise<number>;
  close(): void;
}

interface Waiter {
  readonly from: string;
  readonly resolve: (rttMs: number) => void;
  readonly sent: number;
}

/** A shared raw ICMP or ICMPv6 socket with echo bookkeeping. */
class SocketPinger implements Echoer {
  readonly key: string;
  readonly method: "raw-socket" | "koffi";
  readonly family: 4 | 6;
  readonly #socket: IcmpSocket;
  readonly #id: number;
  #seq = 0;
  readonly #waiting = new Map<number, Waiter>();
  users = 0;
  dead = false;

  constructor(key: string, loaded: Loaded & { method: "raw-socket" | "koffi" }, family: 4 | 6) {
    this.key = key;
    this.method = loaded.method;
    this.family = family;
    // Identifier: low bits of the pid mixed with the family, as ping(8) does with its pid.
    this.#id = (process.pid ^ (family === 6 ? 0x5a5a : 0)) & 0xffff;
    const on: SocketEvents = {
      message: (buf, source) => this.#onMessage(buf, source),
      dead: () => {
        this.dead = true;
        if (pingers.get(this.key) === this) pingers.delete(this.key);
      },
    };
    this.#socket = loaded.method === "raw-socket" ? rawSocketOpen(loaded.raw, family, on) : new KoffiIcmpSocket(loaded.libc, family, on);
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
    if (this.#waiting.size === 0) this.#socket.pause();
    w.resolve(performance.now() - w.sent);
  }

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
    if (this.family === 4) packet.writeUInt16BE(checksum(packet), 2);
    const abort = abortPromise(signal);
    const reply = new Promise<number>((resolve, reject) => {
      this.#waiting.set(seq, { from, resolve, sent: performance.now() });
      this.#socket.resume();
      this.#socket.send(packet, target, (err) => {
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
    if (this.#waiting.size === 0) this.#socket.pause();
  }

  close(): void {
    this.#socket.close();
  }
}

/** Pings with the system's `ping`, one child per echo. */
class BinaryPinger implements Echoer {
  readonly key: string;
  readonly method = "ping-binary";
  readonly #path: string;
  readonly #family: 4 | 6;
  users = 0;
  dead = false;

  constructor(key: string, path: string, family: 4 | 6) {
    this.key = key;
    this.#path = path;
    this.#family = family;
  }

  echo(target: string, size: number, signal: AbortSignal): Promise<number> {
    // The runner's timeout aborts the child; -W only bounds a child whose signal never aborts.
    const args = [`-${this.#family}`, "-c", "1", "-n", "-W", "60", "-s", String(size), target];
    return new Promise<number>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason ?? new Error("aborted"));
        return;
      }
      const child = spawn(this.#path, args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
      child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
      const onAbort = (): void => {
        child.kill("SIGKILL");
        reject(signal.reason ?? new Error("aborted"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      child.once("error", (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      });
      child.once("close", (code) => {
        const rtt = /time[=<]\s*([\d.]+)\s*ms/.exec(out);
        if (rtt !== null) {
          signal.removeEventListener("abort", onAbort);
          resolve(Number(rtt[1]));
        } else if (code === 1) {
          // ping gave up (-W passed, or an ICMP error such as host unreachable came back).
          signal.removeEventListener("abort", onAbort);
          const last = out.trim().split("\n").find((l) => /^From |unreachable|exceeded/i.test(l));
          reject(Object.assign(new Error(`no reply${last !== undefined ? ` (${last.trim()})` : ""}`), { noReply: true }));
        } else {
          signal.removeEventListener("abort", onAbort);
          const msg = err.trim().split("\n")[0] || `ping exited with ${code}`;
          reject(/not permitted|permission denied/i.test(msg) ? new NotSupportedError("ping binary", `${msg} (needs CAP_NET_RAW)`) : new Error(msg));
        }
      });
    });
  }

  close(): void {}
}

const pingers = new Map<string, Echoer>();

function acquire(loaded: Loaded, family: 4 | 6): Echoer {
  const key = `${loaded.method}/${family}`;
  let p = pingers.get(key);
  if (p === undefined) {
    p = loaded.method === "ping-binary" ? new BinaryPinger(key, loaded.path, family) : new SocketPinger(key, loaded, family);
    pingers.set(key, p);
  }
  p.users++;
  return p;
}

function release(p: Echoer): void {
  p.users--;
  if (p.users <= 0 && pingers.get(p.key) === p) {
    pingers.delete(p.key);
    p.close();
  }
}

/** One ICMP echo per run. See {@link PingProbeOptions}. */
export class PingProbe implements Probe {
  readonly name: string;
  readonly #host: string;
  readonly #family: 4 | 6;
  readonly #size: number;
  readonly #want: PingMethod | "auto";
  #pinger: Echoer | undefined;

  constructor(opts: PingProbeOptions) {
    const family = isIP(opts.host);
    if (family !== 4 && family !== 6) throw new TypeError(`ping host must be an IPv4 or IPv6 address, got ${opts.host}`);
    this.#host = opts.host;
    this.#family = family;
    this.#size = opts.size ?? 16;
    this.#want = opts.method ?? "auto";
    this.name = `ping:${opts.host}`;
  }

  /**
   * The method this probe sends with: the one of its open socket, else the one it would choose now (loading
   * it); undefined when none is available.
   */
  get method(): PingMethod | undefined {
    if (this.#pinger !== undefined && !this.#pinger.dead) return this.#pinger.method;
    try {
      return choose(this.#want).method;
    } catch {
      return undefined;
    }
  }

  /**
   * Sends one echo request and waits for its reply (until `signal` aborts).
   * @throws NotSupportedError when no method is available, or no raw socket can be opened (no CAP_NET_RAW):
   * the runner reports it as the failure detail, and every run retries.
   */
  async run(signal: AbortSignal): Promise<ProbeResult> {
    if (this.#pinger?.dead === true) this.close();
    if (this.#pinger === undefined) {
      const loaded = choose(this.#want);
      try {
        this.#pinger = acquire(loaded, this.#family);
      } catch (err) {
        throw new NotSupportedError(`raw ICMP${this.#family === 6 ? "v6" : ""} socket`, `${messageOf(err)} (needs CAP_NET_RAW)`, { cause: err });
      }
    }
    try {
      const rtt = await this.#pinger.echo(this.#host, this.#size, signal);
      return { ok: true, detail: `ping ${this.#host} reply in ${rtt.toFixed(2)} ms` };
    } catch (err) {
      if (signal.aborted || err instanceof NotSupportedError) throw err;
      if ((err as { noReply?: boolean }).noReply === true) return { ok: false, detail: `ping ${this.#host} ${messageOf(err)}` };
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
