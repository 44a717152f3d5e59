/**
 * Engine choice for the replicated mount: the compiled helper (`native`, fast) when it can run here, else the
 * JavaScript FUSE fallback (`js`, primary only). {@link createFileReplicator} probes, decides with the pure
 * {@link chooseEngine}, logs which engine and why, and returns a {@link FileReplicator} either way (same
 * options, same events), so MirrorDriver's `createReplicator` can be this factory.
 */
import { accessSync, constants, existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { NotSupportedError } from "../../core/errors.js";
import { FileReplicator, type FileReplicatorOptions } from "../FileReplicator.js";
import { helperPath } from "../helper.js";
import { JsFuseReplicator } from "./JsFuseReplicator.js";
import { selfUrl } from "../../native/self.js";

export { JsFuseReplicator, jsFuseLauncher } from "./JsFuseReplicator.js";
export { runJsFuseDaemon, parseDaemonArgs, type DaemonArgs } from "./daemon.js";

/** `native`: the compiled helper; `js`: the JavaScript FUSE engine (primary only); `auto` (default): native if it can run. */
export type ReplicatorEngine = "native" | "js" | "auto";

/** What the machine offers, as {@link probeEngines} found it. */
export interface EngineProbe {
  /** The helper binary's path, or why there is none. */
  helper: { path: string } | { missing: string };
  /** The helper is executable and `holdfast-replicator version` ran (its libraries load). */
  helperRuns: boolean;
  /** `/dev/fuse` exists. */
  devFuse: boolean;
  /** fuse-native and its libfuse2 load in this process; or why not. */
  js: true | { missing: string };
}

/** The decision: which engine, and why (one line for the log). */
export interface EngineChoice {
  engine: "native" | "js";
  reason: string;
}

/**
 * Picks the engine (pure). The secondary is always native (it needs no FUSE). A primary needs `/dev/fuse`;
 * `auto` takes the helper when it runs, else the JavaScript engine when it loads. Throws
 * {@link NotSupportedError} when nothing fits (e.g. no `/dev/fuse`: the API mode, {@link ApiReplicator}, is
 * the way left).
 */
export function chooseEngine(role: "primary" | "secondary", requested: ReplicatorEngine, p: EngineProbe): EngineChoice {
  const helperWhy = "missing" in p.helper ? p.helper.missing : p.helperRuns ? "runs" : `${p.helper.path} does not run here (not executable or its libraries are missing)`;
  if (role === "secondary") {
    if (requested === "js") throw new NotSupportedError("JavaScript secondary", "the secondary is the compiled helper only");
    if (!p.helperRuns) throw new NotSupportedError("replication secondary", helperWhy);
    return { engine: "native", reason: "secondary: compiled helper" };
  }
  if (!p.devFuse) {
    throw new NotSupportedError("FUSE", "/dev/fuse is missing: no replicated mount here; use the API mode (ApiReplicator)");
  }
  const jsWhy = p.js === true ? "loads" : p.js.missing;
  if (requested === "native") {
    if (!p.helperRuns) throw new NotSupportedError("compiled replication helper", helperWhy);
    return { engine: "native", reason: "engine native requested" };
  }
  if (requested === "js") {
    if (p.js !== true) throw new NotSupportedError("JavaScript FUSE engine", jsWhy);
    return { engine: "js", reason: "engine js requested" };
  }
  if (p.helperRuns) return { engine: "native", reason: "auto: the compiled helper runs here" };
  if (p.js === true) return { engine: "js", reason: `auto: compiled helper unusable (${helperWhy}); JavaScript FUSE fallback` };
  throw new NotSupportedError("replicated mount", `compiled helper: ${helperWhy}; JavaScript engine: ${jsWhy}`);
}

/** Looks at this machine: the helper (at `path`, default the committed prebuilt), /dev/fuse, fuse-native. */
export function probeEngines(path?: string): EngineProbe {
  let helper: EngineProbe["helper"];
  try {
    helper = { path: path ?? helperPath() };
  } catch (err) {
    helper = { missing: (err as Error).message };
  }
  let helperRuns = false;
  if ("path" in helper) {
    if (!existsSync(helper.path)) helper = { missing: `${helper.path} does not exist` };
    else {
      try {
        accessSync(helper.path, constants.X_OK);
        helperRuns = spawnSync(helper.path, ["version"], { stdio: "ignore", timeout: 5000 }).status === 0;
      } catch {
        helperRuns = false;
      }
    }
  }
  let js: EngineProbe["js"] = true;
  try {
    createRequire(selfUrl(import.meta.url))("fuse-native");
  } catch (err) {
    js = { missing: `fuse-native does not load (${(err as Error).message.split("\n")[0]}); it needs the Debian package libfuse2` };
  }
  return { helper, helperRuns, devFuse: existsSync("/dev/fuse"), js };
}

export type CreateFileReplicatorOptions = FileReplicatorOptions & {
  /** Which data path; default `auto` (see {@link chooseEngine}). */
  engine?: ReplicatorEngine;
  /** Receives the one line saying which engine was chosen and why. Default: `console.info`. */
  log?: (line: string) => void;
};

/** A replicator with the engine it runs on. */
export type EngineReplicator = FileReplicator & { readonly engine: "native" | "js"; readonly engineReason: string };

/**
 * Creates the replicator for `options.role` on the engine that can run here (see {@link chooseEngine}); logs the
 * choice. `probe` is for tests (default: {@link probeEngines}).
 */
export function createFileReplicator(options: CreateFileReplicatorOptions, probe: () => EngineProbe = () => probeEngines(options.helperPath)): EngineReplicator {
  const { engine = "auto", log = (l: string) => console.info(l), ...rest } = options;
  const choice = chooseEngine(rest.role, engine, probe());
  log(`holdfast mirror: ${rest.role} data path = ${choice.engine} (${choice.reason})`);
  const rep = choice.engine === "js" ? new JsFuseReplicator(rest as FileReplicatorOptions) : new FileReplicator(rest as FileReplicatorOptions);
  Object.defineProperty(rep, "engineReason", { value: choice.reason, enumerable: true });
  if (choice.engine === "native") Object.defineProperty(rep, "engine", { value: "native", enumerable: true });
  return rep as EngineReplicator;
}
