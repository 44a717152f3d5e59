/**
 * The wire form of module reports: what a node advertises about its modules in its heartbeats (through
 * the membership protocol's metadata). Input from the network is validated with this codec before it
 * reaches a module core: a malformed report is rejected with the path and the value.
 */
import * as t from "io-ts";
import { decodeOrThrow } from "../decode.js";
import type { ModuleReport } from "./types.js";
import { optional } from "./codec-util.js";

const State = t.keyof({ STOP: null, WAIT: null, UP: null, ALONE: null, PRIM: null, SECOND: null });

const Generation = new t.Type<number, number, unknown>(
  "non-negative integer",
  (u): u is number => typeof u === "number" && Number.isSafeInteger(u) && u >= 0,
  (u, c) => (typeof u === "number" && Number.isSafeInteger(u) && u >= 0 ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

/** io-ts codec of {@link ModuleReport}. */
export const ModuleReportCodec = t.exact(
  t.type({
    module: t.string,
    state: State,
    ready: t.boolean,
    upToDate: t.boolean,
    generation: Generation,
    candidate: t.boolean,
    next: optional(State),
    claim: optional(t.boolean),
    swap: optional(t.boolean),
    aloneWrites: optional(t.boolean),
    splitBrain: optional(t.boolean),
    forced: optional(t.boolean),
    diverged: optional(t.boolean),
  }),
);

/**
 * The metadata a node publishes for its modules: `{ modules: { <name>: ModuleReport } }`.
 * Kept small: a report is about 100 bytes of JSON.
 */
export interface ModulesMeta {
  readonly modules: Readonly<Record<string, ModuleReport>>;
}

/** Validates one report received from the network. Throws a ConfigError naming the path and value. */
export function decodeModuleReport(input: unknown): ModuleReport {
  const r = decodeOrThrow(ModuleReportCodec, input, "module report");
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as unknown as ModuleReport;
}
