/**
 * Where the compiled replication helper lives, and the JSON-lines events it prints on stdout
 * (src/native/replicator/*.c: `emit(...)` calls). Each line is decoded with io-ts; an unknown event is ignored
 * (forward compatibility), a known one with a wrong shape is reported as an error by the supervisor.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as t from "io-ts";
import { isLeft } from "fp-ts/lib/Either.js";
import { selfUrl } from "../native/self.js";
import { ReplicatorError } from "./errors.js";

/** Finds `holdfast-replicator` for this platform (committed prebuilt: src/native/prebuilt/linux-x64/). */
export function helperPath(): string {
  const here = selfUrl(import.meta.url);
  const arch = process.arch === "x64" ? "x64" : process.arch;
  const rel = `native/prebuilt/${process.platform}-${arch}/holdfast-replicator`;
  const candidates = [
    new URL(`../${rel}`, here), // src/mirror/helper.ts
    new URL(`../src/${rel}`, here), // dist/index.js, dist/index.cjs (package "files" ships src/native)
    new URL(`../../src/${rel}`, here),
  ];
  for (const c of candidates) {
    const p = fileURLToPath(c);
    if (existsSync(p)) return p;
  }
  throw new ReplicatorError(
    "HOLDFAST_MIRROR_HELPER_MISSING",
    `holdfast-replicator not found for ${process.platform}-${arch} (build it: bash scripts/build-native.sh)`,
  );
}

const num = t.number;
export const HelperEvent = t.union([
  t.type({ event: t.literal("ready"), mount: t.string, pid: num, logBytes: num, uncleanStart: t.boolean }),
  t.type({ event: t.literal("listening"), port: num }),
  t.type({ event: t.literal("connecting"), peer: t.string }),
  t.type({ event: t.literal("connected") }),
  t.type({ event: t.literal("degraded"), reason: t.string, logged: num }),
  t.type({ event: t.literal("resync-replay"), records: num, files: num }),
  t.type({ event: t.literal("resync-start"), mode: t.string, files: num, total: num }),
  t.type({ event: t.literal("resync-progress"), bytes: num, total: num, percent: num }),
  t.type({ event: t.literal("synced"), mode: t.string }),
  t.type({
    event: t.literal("stats"),
    state: t.string,
    bytesReplicated: num,
    acks: num,
    ackUsSum: num,
    ackUsMax: num,
    inflight: num,
    logRecords: num,
    resyncBytes: num,
    degradedCount: num,
  }),
  t.type({ event: t.literal("peer"), state: t.string }),
  t.type({ event: t.literal("consistent") }),
  t.type({ event: t.literal("inconsistent") }),
  t.type({ event: t.literal("auth-failed"), reason: t.string, refused: t.boolean }),
  t.type({ event: t.literal("apply-error"), seq: num, op: num, errno: num, message: t.string }),
  t.type({ event: t.literal("error"), message: t.string }),
  t.type({ event: t.literal("stopped"), rc: num }),
]);
export type HelperEvent = t.TypeOf<typeof HelperEvent>;

/** Decodes one stdout line: the event, `undefined` for a line that is not a known event, or an Error. */
export function parseHelperLine(line: string): HelperEvent | undefined | Error {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return undefined;
  }
  const r = HelperEvent.decode(json);
  if (!isLeft(r)) return r.right;
  const known = HelperEvent.types.some((c) => (json as { event?: unknown }).event === c.props.event.value);
  return known ? new Error(`malformed helper event: ${line}`) : undefined;
}
