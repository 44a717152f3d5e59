/**
 * JsFuseReplicator: the primary's replicated mount served by JavaScript (fuse-native over libfuse2) instead of
 * the compiled helper, for machines where the helper cannot run (no prebuilt for the platform, no libfuse3,
 * not buildable). The secondary stays the compiled helper (it needs no FUSE).
 *
 * It is a {@link FileReplicator} whose "helper" is a Node process running {@link runJsFuseDaemon}: same command
 * line, same control channel, so the options, events (`ready`, `connected`, `degraded`, `resyncStart`,
 * `resyncProgress`, `synced`, `metrics`, `error`, `exit`, `restarted`), the restart policy, the private mount
 * namespace, {@link FileReplicator.mountPath} and {@link FileReplicator.commandInMount} are the same, and
 * MirrorDriver can use either.
 *
 * Semantics are the helper's (src/native/replicator/README.md) with these differences:
 * - one JavaScript thread does every local operation (pipelined acks, but no parallel local I/O): slower;
 * - resync passes: `log`, and `full` (src/mirror/jsfuse/fullsync.ts) wherever the helper would compare blocks:
 *   after an unclean start (`ready.uncleanStart`), with `initialSync` `verify`/`checksum`/`full`, and on
 *   `resync("verify" | "checksum" | "full")`. It sends the whole tree (correct, not frugal): the first
 *   `resyncStart` is the log pass, the second the full one, and `synced` comes after the full one;
 * - `include`/`exclude` as the helper (a directory or symlink moved into the set triggers a `full` pass);
 * - created inodes take their parent directory's owner (the binding does not expose the caller's uid/gid);
 * - no xattrs (ENOSYS), no device nodes; times through the mount have millisecond resolution; `utimensat`
 *   sets both times to the access time it is given (a fuse-native 2.2.6 bug: `cp -p`, `tar`, `rsync -t` get
 *   mtime = atime), and a call that omits one time (`touch -m`, `touch -a`) is dropped by libfuse2 (no change,
 *   no error). What is replicated is exactly what the primary's backing file holds.
 */
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { NotSupportedError } from "../../core/errors.js";
import { FileReplicator, type FileReplicatorOptions, type PrimaryReplicatorOptions } from "../FileReplicator.js";
import { selfUrl } from "../../native/self.js";

export { runJsFuseDaemon } from "./daemon.js";

/** Quotes one word for /bin/sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The argv that starts the daemon: `node [--import tsx] --input-type=module -e <import url, run> --`.
 * `url` is the module that exports `runJsFuseDaemon` (this file, or the bundle it was built into);
 * `tsxLoader` is given when that module is TypeScript source (tests, `tsx` runs).
 */
export function daemonArgv(nodePath: string, url: string, tsxLoader?: string): string[] {
  // a CJS bundle's exports may only be on `default` when imported from ESM
  const code = `const m = await import(${JSON.stringify(url)}); await (m.runJsFuseDaemon ?? m.default.runJsFuseDaemon)(process.argv.slice(1));`;
  return [nodePath, ...(tsxLoader ? ["--import", tsxLoader] : []), "--input-type=module", "-e", code, "--"];
}

let launcher: string | undefined;

/**
 * Removes launcher directories left by processes that died without their exit handler (a SIGKILL, a test
 * worker torn down): ours (same uid), real directories (not symlinks), named after a pid that is gone.
 */
function removeStaleLaunchers(): void {
  let names: string[];
  try {
    names = readdirSync(tmpdir());
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^holdfast-jsfuse-(\d+)-/.exec(name);
    if (!m || existsSync(`/proc/${m[1]}`)) continue;
    const p = join(tmpdir(), name);
    try {
      const st = lstatSync(p);
      if (st.isDirectory() && st.uid === process.getuid?.()) rmSync(p, { recursive: true, force: true });
    } catch {
      /* raced with another cleaner */
    }
  }
}

/**
 * An executable shell script that runs the daemon with its arguments (FileReplicator starts a "helper" by
 * path). Written once per process into a private temporary directory, removed at exit.
 */
export function jsFuseLauncher(): string {
  if (launcher) return launcher;
  const self = selfUrl(import.meta.url);
  let loader: string | undefined;
  if (/\.(c|m)?ts$/.test(new URL(self).pathname)) {
    loader = pathToFileURL(createRequire(self).resolve("tsx")).href;
  }
  removeStaleLaunchers();
  const dir = mkdtempSync(join(tmpdir(), `holdfast-jsfuse-${process.pid}-`));
  const path = join(dir, "holdfast-jsfuse");
  writeFileSync(path, `#!/bin/sh\nexec ${daemonArgv(process.execPath, self, loader).map(shQuote).join(" ")} "$@"\n`);
  chmodSync(path, 0o755);
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  launcher = path;
  return path;
}

export class JsFuseReplicator extends FileReplicator {
  /** Which data path serves the mount. */
  readonly engine = "js" as const;

  constructor(options: PrimaryReplicatorOptions | FileReplicatorOptions) {
    if (options.role !== "primary") {
      throw new NotSupportedError("JavaScript FUSE secondary", "the JavaScript engine serves the primary only; the secondary is the compiled helper");
    }
    super({ ...options, helperPath: jsFuseLauncher() });
  }
}
