/**
 * A stand-alone checker host: runs a list of checkers (the same entries as a module's `checkers:`) and prints
 * one JSON line per event on stdout. Used by the namespace tests (the probes must run inside a node's network
 * namespace) and handy to try a checker configuration on a machine before putting it in a module:
 *
 * ```sh
 * HOLDFAST_CHECKERS='[{"type":"tcp","host":"198.18.0.11","port":8080}]' npx tsx src/checkers/cli.ts
 * {"event":"ready","checkers":["tcp:198.18.0.11:8080"]}
 * {"event":"verdict","type":"checker","checker":"tcp:198.18.0.11:8080","ok":true,"action":"restart","reason":"connect 198.18.0.11:8080 ok in 0.4 ms (2/2)","kind":"tcp","at":1763776800123}
 * ```
 *
 * Input: the JSON array in the environment variable `HOLDFAST_CHECKERS` (not in argv: a process checker's
 * pattern would then match this process's own command line), or a JSON file named by `HOLDFAST_CHECKERS_FILE`.
 * `HOLDFAST_CHECKERS_RESULTS=1` also prints every probe result. A bad configuration prints
 * `{"event":"error",...}` with the path-precise message and exits with code 2. SIGTERM/SIGINT stop the
 * checkers and exit 0.
 */
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { createChecker } from "./config.js";
import type { CheckerRunner } from "./runner.js";

/** Runs the checkers described by `env`; returns a function that stops them. */
export function runCheckersFromEnv(env: NodeJS.ProcessEnv, write: (line: string) => void): () => Promise<void> {
  const text = env.HOLDFAST_CHECKERS ?? (env.HOLDFAST_CHECKERS_FILE === undefined ? undefined : readFileSync(env.HOLDFAST_CHECKERS_FILE, "utf8"));
  if (text === undefined) throw new Error("set HOLDFAST_CHECKERS (a JSON array of checker entries) or HOLDFAST_CHECKERS_FILE");
  const entries = JSON.parse(text) as unknown;
  if (!Array.isArray(entries)) throw new Error("HOLDFAST_CHECKERS must be a JSON array");
  const runners: CheckerRunner[] = entries.map((e, i) => createChecker(e, `checker ${i}`));
  const results = env.HOLDFAST_CHECKERS_RESULTS === "1";
  for (const r of runners) {
    r.on("verdict", (v) => write(JSON.stringify({ event: "verdict", ...v, at: Date.now() })));
    if (results) r.on("result", (x) => write(JSON.stringify({ event: "result", ...x, at: Date.now() })));
  }
  write(JSON.stringify({ event: "ready", checkers: runners.map((r) => r.name), pid: process.pid }));
  for (const r of runners) r.start();
  return async () => {
    await Promise.all(runners.map((r) => r.stop()));
  };
}

function main(): void {
  const write = (line: string): void => {
    process.stdout.write(line + "\n");
  };
  let stop: () => Promise<void>;
  try {
    stop = runCheckersFromEnv(process.env, write);
  } catch (err) {
    write(JSON.stringify({ event: "error", message: err instanceof Error ? err.message : String(err) }));
    process.exitCode = 2;
    return;
  }
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    process.once(sig, () => {
      void stop().then(() => process.exit(0));
    });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
