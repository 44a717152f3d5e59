/**
 * The replication stream (src/native/replicator/proto.h) in TypeScript: handshake, framing, HMAC-SHA256, and
 * the encrypted mode (AES-256-GCM, `encrypt: true`; both sides must agree).
 * Used by the API mode ({@link ApiReplicator}), which speaks to the same compiled secondary as the FUSE helper,
 * and by tests that forge frames. Keep in step with proto.h: the sizes below are asserted in the unit tests.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Socket } from "node:net";

export const HF_MAGIC = 0x31524648;
/** The secondary's hello in the encrypted mode ("HFE1"); frames keep {@link HF_MAGIC}. */
export const HF_MAGIC_ENC = 0x31454648;
/** AES-256-GCM tag length (encrypted mode; the plain mode's HMAC is {@link MAC_LEN}). */
export const TAG_LEN = 16;
export const HDR_LEN = 24;
export const ARGS_LEN = 80;
export const MAC_LEN = 32;
export const NONCE_LEN = 32;
export const UTIME_OMIT = (1 << 30) - 2;
export const F_RESYNC = 1;

/** Operation codes (enum hf_op). */
export const Op = {
  ACK: 1,
  WRITE: 2,
  CREATE: 3,
  MKNOD: 4,
  MKDIR: 5,
  UNLINK: 6,
  RMDIR: 7,
  SYMLINK: 8,
  LINK: 9,
  RENAME: 10,
  CHMOD: 11,
  CHOWN: 12,
  TRUNCATE: 13,
  UTIMENS: 14,
  SETXATTR: 15,
  REMOVEXATTR: 16,
  FSYNC: 17,
  FALLOCATE: 18,
  BARRIER: 19,
  RESYNC_BEGIN: 20,
  RESYNC_DONE: 21,
  LIST: 22,
  CHECKSUM: 23,
  RESET: 24,
  FSYNCDIR: 25,
} as const;

/** struct hf_args. Numbers are safe integers (offsets < 2^53). */
export interface OpArgs {
  off?: number;
  len?: number;
  atimeS?: number;
  atimeNs?: number;
  mtimeS?: number;
  mtimeNs?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  flags?: number;
}

/** Encodes hf_args + path + path2 + data (an operation frame's payload). */
export function encodeOp(a: OpArgs, path: string, path2 = "", data: Uint8Array = new Uint8Array(0)): Buffer {
  const p1 = Buffer.from(path);
  const p2 = Buffer.from(path2);
  const b = Buffer.alloc(ARGS_LEN);
  b.writeBigUInt64LE(BigInt(a.off ?? 0), 0);
  b.writeBigUInt64LE(BigInt(a.len ?? 0), 8);
  b.writeBigInt64LE(BigInt(a.atimeS ?? 0), 16);
  b.writeBigInt64LE(BigInt(a.atimeNs ?? 0), 24);
  b.writeBigInt64LE(BigInt(a.mtimeS ?? 0), 32);
  b.writeBigInt64LE(BigInt(a.mtimeNs ?? UTIME_OMIT), 40);
  b.writeUInt32LE(a.mode ?? 0, 48);
  b.writeUInt32LE(a.uid ?? 0, 52);
  b.writeUInt32LE(a.gid ?? 0, 56);
  b.writeUInt32LE(a.flags ?? 0, 60);
  b.writeUInt32LE(p1.length, 64);
  b.writeUInt32LE(p2.length, 68);
  b.writeUInt32LE(data.length, 72);
  return Buffer.concat([b, p1, p2, data]);
}

/** Decodes an operation payload (inverse of {@link encodeOp}). */
export function decodeOp(payload: Buffer): { args: Required<OpArgs>; path: string; path2: string; data: Buffer } {
  const n = (o: number): number => Number(payload.readBigUInt64LE(o));
  const s = (o: number): number => Number(payload.readBigInt64LE(o));
  const l1 = payload.readUInt32LE(64);
  const l2 = payload.readUInt32LE(68);
  const ld = payload.readUInt32LE(72);
  return {
    args: {
      off: n(0),
      len: n(8),
      atimeS: s(16),
      atimeNs: s(24),
      mtimeS: s(32),
      mtimeNs: s(40),
      mode: payload.readUInt32LE(48),
      uid: payload.readUInt32LE(52),
      gid: payload.readUInt32LE(56),
      flags: payload.readUInt32LE(60),
    },
    path: payload.subarray(ARGS_LEN, ARGS_LEN + l1).toString(),
    path2: payload.subarray(ARGS_LEN + l1, ARGS_LEN + l1 + l2).toString(),
    data: payload.subarray(ARGS_LEN + l1 + l2, ARGS_LEN + l1 + l2 + ld),
  };
}

/**
 * HMAC-SHA256(key, label || snonce || cnonce): the handshake proofs (`hf-p`, `hf-s`, `hf-pe`, `hf-se`) and the
 * session keys (`p2s`, `s2p`, `p2s-aead`, `s2p-aead`) of proto.h. Checked with the C helper against
 * test/vectors/wire.json.
 */
export function deriveKey(key: Buffer, label: string, sn: Buffer, cn: Buffer): Buffer {
  return createHmac("sha256", key).update(label).update(sn).update(cn).digest();
}
const derive = deriveKey;

/** A received frame. For acks, `status` is the secondary's errno (0 = applied) and `data` its reply. */
export interface Frame {
  type: number;
  flags: number;
  seq: bigint;
  payload: Buffer;
}

/** Options of {@link WireConnection.handshakePrimary}. */
export interface WireOptions {
  /**
   * Seal every frame with AES-256-GCM (confidentiality + integrity; the frame counter is the nonce). The
   * secondary must run with `--encrypt` too: a mismatch fails the handshake with "encryption mismatch".
   * Default false (HMAC-SHA256 only: authenticated, readable on the wire).
   */
  encrypt?: boolean;
}

/** Session keys of one direction pair (proto.h): HMAC keys in the plain mode, AES-256 keys when encrypting. */
function sessionKeys(key: Buffer, encrypt: boolean, sn: Buffer, cn: Buffer): { tx: Buffer; rx: Buffer } {
  const suffix = encrypt ? "-aead" : "";
  return { tx: derive(key, `p2s${suffix}`, sn, cn), rx: derive(key, `s2p${suffix}`, sn, cn) };
}

function gcmIv(ctr: bigint): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64LE(ctr, 4);
  return iv;
}

/**
 * One frame as bytes on the wire (proto.h): header, then the payload and HMAC-SHA256(key, ctr64 || header ||
 * payload), or with `encrypt` the AES-256-GCM ciphertext (iv = 4 zero bytes || ctr64 LE, aad = header) and its tag.
 * `key` is the direction's session key, `ctr` that direction's frame counter.
 */
export function sealFrame(key: Buffer, encrypt: boolean, ctr: bigint, type: number, flags: number, seq: bigint, payload: Buffer): Buffer {
  const h = Buffer.alloc(HDR_LEN);
  h.writeUInt32LE(HF_MAGIC, 0);
  h.writeUInt8(type, 4);
  h.writeUInt8(flags, 5);
  h.writeUInt32LE(payload.length, 8);
  h.writeBigUInt64LE(seq, 16);
  if (encrypt) {
    const c = createCipheriv("aes-256-gcm", key, gcmIv(ctr));
    c.setAAD(h);
    const body = c.update(payload);
    const fin = c.final();
    return Buffer.concat([h, body, fin, c.getAuthTag()]);
  }
  const c8 = Buffer.alloc(8);
  c8.writeBigUInt64LE(ctr);
  const mac = createHmac("sha256", key).update(c8).update(h).update(payload).digest();
  return Buffer.concat([h, payload, mac]);
}

/**
 * The first frame in `buf` (the inverse of {@link sealFrame}): the frame and its length on the wire, `undefined`
 * when `buf` does not hold all of it yet, or an error string (malformed, failed authentication).
 */
export function openFrame(key: Buffer, encrypt: boolean, ctr: bigint, buf: Buffer): { frame: Frame; size: number } | undefined | string {
  if (buf.length < HDR_LEN) return undefined;
  if (buf.readUInt32LE(0) !== HF_MAGIC) return "malformed frame";
  const len = buf.readUInt32LE(8);
  const tl = encrypt ? TAG_LEN : MAC_LEN;
  if (buf.length < HDR_LEN + len + tl) return undefined;
  const h = buf.subarray(0, HDR_LEN);
  const body = buf.subarray(HDR_LEN, HDR_LEN + len);
  const mac = buf.subarray(HDR_LEN + len, HDR_LEN + len + tl);
  let payload: Buffer;
  if (encrypt) {
    try {
      const d = createDecipheriv("aes-256-gcm", key, gcmIv(ctr));
      d.setAAD(h);
      d.setAuthTag(mac);
      payload = Buffer.concat([d.update(body), d.final()]);
    } catch {
      return "frame failed authentication";
    }
  } else {
    const c8 = Buffer.alloc(8);
    c8.writeBigUInt64LE(ctr);
    const want = createHmac("sha256", key).update(c8).update(h).update(body).digest();
    if (!timingSafeEqual(mac, want)) return "frame failed authentication";
    payload = Buffer.from(body);
  }
  return { frame: { type: h.readUInt8(4), flags: h.readUInt8(5), seq: h.readBigUInt64LE(16), payload }, size: HDR_LEN + len + tl };
}

/**
 * One authenticated (optionally encrypted) stream over a connected socket (primary side). `onFrame` gets every
 * verified frame; `onClose` once, with the reason, when the socket ends or a frame fails verification.
 */
/** A handshake that did not complete; `refused`: the peer is no holdfast peer or failed authentication (a wrong key). */
export class HandshakeError extends Error {
  constructor(
    message: string,
    readonly refused: boolean,
  ) {
    super(message);
    this.name = "HandshakeError";
  }
}

export class WireConnection {
  private txCtr = 0n;
  private rxCtr = 0n;
  private buf: Buffer = Buffer.alloc(0);
  private closed = false;

  private constructor(
    readonly socket: Socket,
    private readonly kTx: Buffer,
    private readonly kRx: Buffer,
    private readonly onFrame: (f: Frame) => void,
    private readonly onClose: (reason: string) => void,
    /** true when frames are AES-256-GCM sealed */
    readonly encrypted: boolean,
  ) {
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("close", () => this.fail("connection closed"));
    socket.on("error", (e) => this.fail(`socket error: ${e.message}`));
  }

  /**
   * Runs the primary's side of the handshake on a connected socket. Rejects when the peer is not a holdfast
   * secondary or does not hold the key.
   */
  static handshakePrimary(
    socket: Socket,
    key: Buffer,
    onFrame: (f: Frame) => void,
    onClose: (reason: string) => void,
    options: WireOptions = {},
  ): Promise<WireConnection> {
    const encrypt = options.encrypt ?? false;
    return new Promise((resolve, reject) => {
      let acc = Buffer.alloc(0);
      let stage = 0;
      let sn = Buffer.alloc(0);
      const cn = randomBytes(NONCE_LEN);
      const cleanup = (): void => {
        socket.off("data", onData);
        socket.off("close", onEnd);
        socket.off("error", onEnd);
      };
      const onEnd = (): void => {
        cleanup();
        reject(new HandshakeError(stage === 0 ? "no hello from secondary" : "secondary refused the key (connection closed)", false));
      };
      const onData = (d: Buffer): void => {
        acc = Buffer.concat([acc, d]);
        if (stage === 0 && acc.length >= 4 + NONCE_LEN) {
          const magic = acc.readUInt32LE(0);
          if (magic !== HF_MAGIC && magic !== HF_MAGIC_ENC) {
            cleanup();
            reject(new HandshakeError("peer is not a holdfast secondary", true));
            return;
          }
          sn = Buffer.from(acc.subarray(4, 4 + NONCE_LEN));
          acc = acc.subarray(4 + NONCE_LEN);
          // our proof names our setting, so a secondary set differently can report the mismatch too
          socket.write(Buffer.concat([cn, derive(key, encrypt ? "hf-pe" : "hf-p", sn, cn)]));
          if ((magic === HF_MAGIC_ENC) !== encrypt) {
            cleanup();
            reject(
              new HandshakeError(
                encrypt
                  ? "encryption mismatch: this primary uses encrypt, the secondary does not (--encrypt)"
                  : "encryption mismatch: the secondary uses --encrypt, this primary does not",
                false,
              ),
            );
            return;
          }
          stage = 1;
        }
        if (stage === 1 && acc.length >= MAC_LEN) {
          cleanup();
          const want = derive(key, encrypt ? "hf-se" : "hf-s", sn, cn);
          if (!timingSafeEqual(acc.subarray(0, MAC_LEN), want)) {
            reject(new HandshakeError("secondary failed authentication", true));
            return;
          }
          const k = sessionKeys(key, encrypt, sn, cn);
          const conn = new WireConnection(socket, k.tx, k.rx, onFrame, onClose, encrypt);
          const rest = acc.subarray(MAC_LEN);
          resolve(conn);
          if (rest.length) conn.onData(rest);
        }
      };
      socket.on("data", onData);
      socket.on("close", onEnd);
      socket.on("error", onEnd);
    });
  }

  /** Encodes one frame (header + payload + MAC) and advances the counter. */
  encode(type: number, flags: number, seq: bigint, payload: Buffer): Buffer {
    return sealFrame(this.kTx, this.encrypted, this.txCtr++, type, flags, seq, payload);
  }

  /** Sends one frame; false when the connection is already closed. */
  send(type: number, flags: number, seq: bigint, payload: Buffer): boolean {
    if (this.closed) return false;
    this.socket.write(this.encode(type, flags, seq, payload));
    return true;
  }

  close(reason = "closed by us"): void {
    this.fail(reason);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private fail(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.onClose(reason);
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (!this.closed) {
      const r = openFrame(this.kRx, this.encrypted, this.rxCtr, this.buf);
      if (r === undefined) return;
      if (typeof r === "string") return this.fail(r);
      this.rxCtr++;
      this.buf = this.buf.subarray(r.size);
      this.onFrame(r.frame);
    }
  }
}

/** Rejects what the secondary would refuse: not absolute, or a ".." component. Returns "/a/b". */
export function wirePath(rel: string): string {
  const p = "/" + rel.split("/").filter((c) => c !== "" && c !== ".").join("/");
  if (p.split("/").includes("..")) throw new RangeError(`path escapes the replicated directory: ${rel}`);
  return p;
}
