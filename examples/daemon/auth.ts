/**
 * Bearer tokens of the control API. A token has a role:
 * - `monitor`: read only (state, logs, metrics);
 * - `control`: monitor + module commands;
 * - `admin`: everything (control + the support snapshot and whatever admin-only endpoint comes later).
 *
 * Tokens are stored as SHA-256 hashes (hex) in the config, or in a tokens file (one per line:
 * `ROLE SECRET [NAME]`, SECRET being `sha256:<hex>` or the token itself; `#` starts a comment). A request
 * with no or an unknown token gets 401; a known token without the needed role gets 403. Hashes are
 * compared in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import * as t from "io-ts";
import { ConfigError, type ConfigProblem } from "holdfast";

export type Role = "monitor" | "control" | "admin";
export const ROLES: readonly Role[] = ["monitor", "control", "admin"];

/** One token as configured. */
export interface TokenEntry {
  /** Who holds it (shown in logs of commands). */
  readonly name: string;
  readonly role: Role;
  /** SHA-256 of the token, 64 hex digits. */
  readonly sha256: string;
}

const Sha256Hex = new t.Type<string, string, unknown>(
  "a SHA-256 hash in hex (64 hex digits; `holdfast token hash` prints it)",
  (u): u is string => typeof u === "string" && /^[0-9a-fA-F]{64}$/.test(u),
  (u, c) => (typeof u === "string" && /^[0-9a-fA-F]{64}$/.test(u) ? t.success(u.toLowerCase()) : t.failure(u, c)),
  t.identity,
);

export const RoleCodec = t.keyof({ monitor: null, control: null, admin: null });

export const TokenEntryCodec = t.exact(t.type({ name: t.string, role: RoleCodec, sha256: Sha256Hex }));

/** SHA-256 of a token, hex. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** A new random token (base64url, 32 bytes). */
export function generateToken(): string {
  return randomBytes(32).toString("base64url");
}

/** Parses a tokens file. Problems name the line: `<what>.line 3`. */
export function parseTokensText(text: string, what = "tokens file"): TokenEntry[] {
  const out: TokenEntry[] = [];
  const problems: ConfigProblem[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/#.*/, "").trim();
    if (line === "") return;
    const [role, secret, ...name] = line.split(/\s+/);
    const path = `${what}.line ${i + 1}`;
    if (!ROLES.includes(role as Role)) {
      problems.push({ path, value: role, expected: `a role (${ROLES.join(", ")}) then the token` });
      return;
    }
    if (secret === undefined || secret === "") {
      problems.push({ path, value: line, expected: "ROLE SECRET [NAME]" });
      return;
    }
    let sha: string;
    if (secret.startsWith("sha256:")) {
      sha = secret.slice(7).toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(sha)) {
        problems.push({ path, value: "(redacted)", expected: "sha256:<64 hex digits>" });
        return;
      }
    } else sha = hashToken(secret);
    out.push({ role: role as Role, sha256: sha, name: name.join(" ") || `${what}:${i + 1}` });
  });
  if (problems.length > 0) throw new ConfigError("tokens", problems);
  return out;
}

/** What an operation needs. */
export type Need = "read" | "command" | "admin";

/** Roles that may do `need`. */
export function roleAllows(role: Role, need: Need): boolean {
  if (role === "admin") return true;
  if (role === "control") return need !== "admin";
  return need === "read";
}

export type AuthResult =
  | { readonly ok: true; readonly token: TokenEntry }
  | { readonly ok: false; readonly status: 401 | 403; readonly error: string };

/** Decides on a request's `Authorization` header. */
export class Authenticator {
  private readonly entries: { entry: TokenEntry; hash: Buffer }[];
  constructor(tokens: readonly TokenEntry[]) {
    this.entries = tokens.map((entry) => ({ entry, hash: Buffer.from(entry.sha256, "hex") }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** Finds the token of a header value `Bearer <token>`. */
  identify(header: string | undefined): TokenEntry | undefined {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
    if (!m?.[1]) return undefined;
    const h = Buffer.from(hashToken(m[1]), "hex");
    let found: TokenEntry | undefined;
    // Compare with every entry (constant time per entry, no early exit).
    for (const e of this.entries) if (timingSafeEqual(h, e.hash) && found === undefined) found = e.entry;
    return found;
  }

  check(header: string | undefined, need: Need): AuthResult {
    const token = this.identify(header);
    if (!token) return { ok: false, status: 401, error: header ? "unknown token" : "a bearer token is required (Authorization: Bearer <token>)" };
    if (!roleAllows(token.role, need)) return { ok: false, status: 403, error: `token "${token.name}" has role ${token.role}, which may not ${need === "command" ? "run commands" : "do this"}` };
    return { ok: true, token };
  }
}
