import * as t from "io-ts";
import { isLeft } from "fp-ts/lib/Either.js";
import { ConfigError, type ConfigProblem } from "./errors.js";

/**
 * Decodes `input` with an io-ts codec. On failure throws a {@link ConfigError} that names, for each
 * problem, the dotted path and the value found there (the innermost failing path, deduplicated).
 */
export function decodeOrThrow<A, O>(codec: t.Type<A, O, unknown>, input: unknown, what: string): A {
  const result = codec.decode(input);
  if (!isLeft(result)) return result.right;
  throw new ConfigError(what, problemsOf(result.left));
}

/** Turns io-ts validation errors into path-precise problems. */
export function problemsOf(errors: t.Errors): ConfigProblem[] {
  const seen = new Set<string>();
  const out: ConfigProblem[] = [];
  for (const e of errors) {
    // The context runs from the root codec to the innermost one; keys of the root entry are "".
    const keys = e.context.map((c) => c.key).filter((k) => k !== "");
    // Union members are reported with their index as a key: drop those numeric keys that stand for a
    // union branch rather than an array index.
    const path: string[] = [];
    e.context.forEach((c, i) => {
      if (i === 0 || c.key === "") return;
      const parent = e.context[i - 1]?.type;
      if (parent instanceof t.UnionType) return;
      path.push(c.key);
    });
    const last = e.context[e.context.length - 1];
    const p = (path.length > 0 ? path : keys).join(".");
    const expected = e.message ?? (last ? last.type.name : "a valid value");
    const key = `${p}\u0000${expected}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ path: p, value: e.value, expected });
  }
  return out;
}
