import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";

/**
 * Writes a new replication key (32 random bytes) to `path` with mode 0600 and returns it. Copy the same file to
 * both nodes; it authenticates the replication stream (HMAC-SHA256) and is never sent.
 */
export function generateReplicationKey(path: string): Buffer {
  const key = randomBytes(32);
  writeFileSync(path, key, { mode: 0o600, flag: "wx" });
  return key;
}
