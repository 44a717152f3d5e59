import * as t from "io-ts";
import { isLeft } from "fp-ts/lib/Either.js";

/**
 * Membership wire format (UDP datagram):
 *
 * ```
 * 0      2      3             35
 * | "HF" | ver  | HMAC-SHA256  | JSON payload (UTF-8) ... |
 * ```
 * The MAC covers magic, version and payload, keyed with the cluster key. The payload names the cluster,
 * sender, sender incarnation, sequence number, **recipient and network index** (so a datagram replayed to
 * another node or on another network is rejected), the echo of the recipient's newest sequence number heard
 * on that network, the sender's weight, view and module metadata. Every field is validated before use.
 */
export const MAGIC0 = 0x48; // 'H'
export const MAGIC1 = 0x46; // 'F'
export const WIRE_VERSION = 1;
export const MAC_BYTES = 32;
export const HEADER_BYTES = 3 + MAC_BYTES;
/** Datagrams larger than this are dropped unread (module metadata must stay small). */
export const MAX_DATAGRAM_BYTES = 16 * 1024;

/**
 * Keyed MAC (HMAC-SHA256 with the cluster key in production) over the concatenation of `parts`: injected so
 * the core stays pure. Must return {@link MAC_BYTES} bytes.
 */
export type MacFn = (...parts: Uint8Array[]) => Uint8Array;

const Uint = new t.Type<number, number, unknown>(
  "a non-negative safe integer",
  (u): u is number => typeof u === "number" && Number.isSafeInteger(u) && u >= 0,
  (u, c) => (typeof u === "number" && Number.isSafeInteger(u) && u >= 0 ? t.success(u) : t.failure(u, c)),
  t.identity,
);
const Id = new t.Type<string, string, unknown>(
  "a node id",
  (u): u is string => typeof u === "string" && u.length >= 1 && u.length <= 64,
  (u, c) => (typeof u === "string" && u.length >= 1 && u.length <= 64 ? t.success(u) : t.failure(u, c)),
  t.identity,
);

const HeartbeatRequiredC = t.type({
  /** kind: heartbeat or a graceful leave */
  k: t.keyof({ hb: null, leave: null }),
  /** cluster id */
  c: t.string,
  /** sender */
  f: Id,
  /** recipient */
  to: Id,
  /** network index the datagram was sent on */
  n: Uint,
  /** sender incarnation (changes at every start; larger = newer) */
  i: Uint,
  /** sequence number, strictly increasing within an incarnation */
  s: Uint,
  /** echo: newest sequence number of the recipient heard by the sender on this network (0 = none) */
  a: Uint,
  /** the recipient's incarnation that `a` belongs to (0 = none) */
  ai: Uint,
  /** sender weight for the farm */
  w: t.number,
  /** sender's view: epoch and membership hash */
  ve: Uint,
  vh: t.string,
  /** opaque module metadata (JSON), or null */
  m: t.unknown,
});
/** Optional fields (absent in datagrams of older versions). */
const HeartbeatOptionalC = t.partial({
  /** ms the sender held the echoed sequence number `a` before sending this datagram (for round-trip time) */
  ah: Uint,
});
export const HeartbeatC = t.intersection([HeartbeatRequiredC, HeartbeatOptionalC]);
export type Heartbeat = t.TypeOf<typeof HeartbeatC>;

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

export function encodeHeartbeat(hb: Heartbeat, mac: MacFn): Uint8Array {
  return encodePayload(JSON.stringify(hb), mac);
}

/**
 * Encodes a heartbeat from a shared JSON body (every field but the per-recipient ones) plus the per-recipient
 * fields: one JSON.stringify per round instead of one per datagram.
 */
export function encodeHeartbeatFast(
  perRecipient: { to: string; n: number; a: number; ai: number; ah?: number },
  sharedJson: string,
  mac: MacFn,
): Uint8Array {
  const hold = perRecipient.ah === undefined ? "" : `"ah":${perRecipient.ah},`;
  const head = `{"to":${JSON.stringify(perRecipient.to)},"n":${perRecipient.n},"a":${perRecipient.a},"ai":${perRecipient.ai},${hold}`;
  return encodePayload(head + sharedJson.slice(1), mac);
}

function encodePayload(json: string, mac: MacFn): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + json.length * 3);
  out[0] = MAGIC0;
  out[1] = MAGIC1;
  out[2] = WIRE_VERSION;
  const { written } = enc.encodeInto(json, out.subarray(HEADER_BYTES));
  const dg = out.subarray(0, HEADER_BYTES + written);
  dg.set(mac(dg.subarray(0, 3), dg.subarray(HEADER_BYTES)), 3);
  return dg;
}

/** Why a datagram was dropped; each reason has a counter. */
export type DropReason =
  | "tooLarge"
  | "malformed"
  | "badMac"
  | "wrongCluster"
  | "wrongRecipient"
  | "wrongNetwork"
  | "unknownSender"
  | "staleIncarnation"
  | "replay";

export type DecodeResult = { ok: true; hb: Heartbeat } | { ok: false; reason: DropReason };

/** Verifies the MAC first (nothing unauthenticated is parsed), then decodes and validates the payload. */
export function decodeHeartbeat(datagram: Uint8Array, mac: MacFn): DecodeResult {
  if (datagram.length > MAX_DATAGRAM_BYTES) return { ok: false, reason: "tooLarge" };
  if (datagram.length < HEADER_BYTES + 2) return { ok: false, reason: "malformed" };
  if (datagram[0] !== MAGIC0 || datagram[1] !== MAGIC1 || datagram[2] !== WIRE_VERSION) return { ok: false, reason: "malformed" };
  const expected = mac(datagram.subarray(0, 3), datagram.subarray(HEADER_BYTES));
  if (!constantTimeEqual(expected, datagram.subarray(3, HEADER_BYTES))) return { ok: false, reason: "badMac" };
  let json: unknown;
  try {
    json = JSON.parse(dec.decode(datagram.subarray(HEADER_BYTES)));
  } catch {
    return { ok: false, reason: "malformed" };
  }
  const r = HeartbeatC.decode(json);
  if (isLeft(r)) return { ok: false, reason: "malformed" };
  if (!Number.isFinite(r.right.w) || r.right.w < 0 || r.right.w > 1000 || r.right.vh.length > 64)
    return { ok: false, reason: "malformed" };
  return { ok: true, hb: r.right };
}

/** Compares two byte strings in time independent of where they differ. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}
