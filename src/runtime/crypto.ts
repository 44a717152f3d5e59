import { createHmac, randomBytes } from "node:crypto";
import { MAC_BYTES, type MacFn } from "../core/membership/wire.js";
import { ConfigError } from "../core/errors.js";

/** Minimum cluster key length in bytes (256 bits, the HMAC-SHA256 block strength). */
export const MIN_KEY_BYTES = 32;

/** A new random cluster key, base64 (what `holdfast keygen` prints). */
export function generateKey(): string {
  return randomBytes(MIN_KEY_BYTES).toString("base64");
}

/** Parses a cluster key given as base64 text or bytes; rejects short keys naming the field. */
export function parseKey(key: string | Uint8Array, field = "key"): Uint8Array {
  const bytes = typeof key === "string" ? Buffer.from(key.trim(), "base64") : key;
  if (typeof key === "string" && !/^[A-Za-z0-9+/]+={0,2}$/.test(key.trim()))
    throw new ConfigError("cluster key", [{ path: field, value: "(redacted)", expected: "base64 text (use `holdfast keygen`)" }]);
  if (bytes.length < MIN_KEY_BYTES)
    throw new ConfigError("cluster key", [{ path: field, value: `(${bytes.length} bytes, redacted)`, expected: `at least ${MIN_KEY_BYTES} bytes of key material (use \`holdfast keygen\`)` }]);
  return Uint8Array.from(bytes);
}

/** HMAC-SHA256 keyed with `key`, as the membership core's {@link MacFn}. */
export function hmacSha256(key: Uint8Array): MacFn {
  const k = Buffer.from(key);
  return (...parts) => {
    const h = createHmac("sha256", k);
    for (const p of parts) h.update(p);
    const out = h.digest();
    if (out.length !== MAC_BYTES) throw new Error("unexpected HMAC length");
    return out;
  };
}
