/**
 * Errors thrown by holdfast. Every error has a stable `code` (never reworded once released), a `name`
 * equal to its class name, and an optional `cause` (standard ES2022 error cause).
 */
export class HoldfastError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** One precise problem in a configuration or a wire message: where (a dotted path) and what was found. */
export interface ConfigProblem {
  /** Dotted path from the root, e.g. `heartbeat.networks.1.port`; `""` for the root itself. */
  readonly path: string;
  /** The value found there (`undefined` when the field is missing). */
  readonly value: unknown;
  /** What was expected, in words. */
  readonly expected: string;
}

/** A configuration (or option object) that does not decode. The message names every path and value. */
export class ConfigError extends HoldfastError {
  readonly problems: readonly ConfigProblem[];
  constructor(what: string, problems: readonly ConfigProblem[]) {
    super(
      "HOLDFAST_CONFIG_INVALID",
      `invalid ${what}: ` +
        problems
          .map((p) => `${p.path === "" ? "(root)" : p.path}: expected ${p.expected}, got ${describeValue(p.value)}`)
          .join("; "),
    );
    this.problems = problems;
  }
}

/**
 * A kernel or privilege feature that is missing (BPF, nftables, FUSE, CAP_NET_ADMIN, ...).
 * `feature` names what is missing; `fallback` names what holdfast uses instead, if anything.
 */
export class NotSupportedError extends HoldfastError {
  readonly feature: string;
  readonly fallback: string | undefined;
  constructor(feature: string, detail: string, options?: { cause?: unknown; fallback?: string }) {
    super(
      "HOLDFAST_NOT_SUPPORTED",
      `${feature} is not available: ${detail}` + (options?.fallback ? ` (falling back to ${options.fallback})` : ""),
      options,
    );
    this.feature = feature;
    this.fallback = options?.fallback;
  }
}

/** A command that the current state does not allow (e.g. `prim` on stale data without force). */
export class CommandRefusedError extends HoldfastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("HOLDFAST_COMMAND_REFUSED", message, options);
  }
}

/** Renders a value for an error message: short, single-line, never throws. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "undefined (missing)";
  try {
    const s = typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(value);
  }
}
