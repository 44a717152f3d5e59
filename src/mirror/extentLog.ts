/**
 * The extent log, same binary format as the helper's (src/native/replicator/primary.c `log_append`):
 * record = u32 magic "HFLR", u32 body length, SHA-256(body), body = u8 op, u8 flags, u64 inode, hf_args,
 * path, path2, data (data only for non-write ops: write extents are re-read from the file at resync).
 * A torn or corrupt tail (a crash mid-append) ends the log at the last good record.
 */
import { createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, writeSync, fdatasync, ftruncateSync, fdatasyncSync } from "node:fs";
import { ARGS_LEN, decodeOp, Op, type OpArgs, encodeOp } from "./wire.js";

const LOG_MAGIC = 0x524c4648;

export interface ExtentRecord {
  op: number;
  flags: number;
  ino: number;
  args: Required<OpArgs>;
  path: string;
  path2: string;
  data: Buffer;
}

/** Parses a whole log; stops at the first torn/corrupt record. */
export function parseExtentLog(buf: Buffer): { records: ExtentRecord[]; validBytes: number } {
  const records: ExtentRecord[] = [];
  let o = 0;
  while (o + 40 <= buf.length) {
    if (buf.readUInt32LE(o) !== LOG_MAGIC) break;
    const blen = buf.readUInt32LE(o + 4);
    if (o + 40 + blen > buf.length || blen < 10 + ARGS_LEN) break;
    const body = buf.subarray(o + 40, o + 40 + blen);
    if (!createHash("sha256").update(body).digest().equals(buf.subarray(o + 8, o + 40))) break;
    const { args, path, path2, data } = decodeOp(body.subarray(10));
    records.push({ op: body.readUInt8(0), flags: body.readUInt8(1), ino: Number(body.readBigUInt64LE(2)), args, path, path2, data: Buffer.from(data) });
    o += 40 + blen;
  }
  return { records, validBytes: o };
}

/** Reads the log file at `path` (missing file = empty log). */
export function readExtentLog(path: string): { records: ExtentRecord[]; validBytes: number } {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { records: [], validBytes: 0 };
    throw err;
  }
  return parseExtentLog(buf);
}

/** Summary for status displays: how much a log resync would send at most (data extents, before merging). */
export function summarizeExtentLog(path: string): { records: number; dataRecords: number; dataBytes: number } {
  const { records } = readExtentLog(path);
  const data = records.filter((r) => r.op === Op.WRITE || r.op === Op.FALLOCATE);
  return { records: records.length, dataRecords: data.length, dataBytes: data.reduce((s, r) => s + r.args.len, 0) };
}

/** Append-only writer used by the API mode. */
export class ExtentLogWriter {
  private readonly fd: number;
  constructor(readonly path: string) {
    this.fd = openSync(path, "a", 0o600);
  }
  /** Appends one record (not yet durable: call {@link sync}). */
  append(op: number, flags: number, ino: number, args: OpArgs, path: string, path2 = "", data?: Uint8Array): void {
    const payload = encodeOp(op === Op.WRITE ? { ...args } : args, path, path2, op === Op.WRITE ? undefined : data);
    const body = Buffer.alloc(10 + payload.length);
    body.writeUInt8(op, 0);
    body.writeUInt8(flags, 1);
    body.writeBigUInt64LE(BigInt(ino), 2);
    payload.copy(body, 10);
    const head = Buffer.alloc(40);
    head.writeUInt32LE(LOG_MAGIC, 0);
    head.writeUInt32LE(body.length, 4);
    createHash("sha256").update(body).digest().copy(head, 8);
    writeSync(this.fd, Buffer.concat([head, body]));
  }
  sync(): Promise<void> {
    return new Promise((resolve, reject) => fdatasync(this.fd, (e) => (e ? reject(e) : resolve())));
  }
  syncNow(): void {
    fdatasyncSync(this.fd);
  }
  /** Empties the log (after a completed resync). */
  clear(): void {
    ftruncateSync(this.fd, 0);
    fdatasyncSync(this.fd);
  }
  close(): void {
    closeSync(this.fd);
  }
}
