/**
 * Where the running code lives, the same way in every build: the source tree (src/**.ts, run by tsx), the ESM
 * bundle (dist/index.js) and the CJS bundle (dist/index.cjs). In the CJS bundle `import.meta` is empty and
 * `__filename` is the bundle's path; in plain ESM `__filename` does not exist. Callers pass their own
 * `import.meta.url` (each source file has its own; the bundles have one for all).
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/**
 * URL of the calling module: the `import.meta.url` the caller passes; in the CJS bundle (where it is undefined)
 * `__filename`, the bundle's path. Not the other way round: test runners define `__filename` per module, and
 * here it would name this file, not the caller.
 */
export function selfUrl(metaUrl: string | undefined): string {
  if (metaUrl !== undefined) return metaUrl;
  if (typeof __filename === "string") return pathToFileURL(__filename).href;
  throw new Error("holdfast: neither import.meta.url nor __filename is set");
}

/**
 * A file the package ships under `src/` (e.g. `native/farm.bpf.o`), found from the calling module by walking
 * up its directories (at most 4): `<dir>/<rel>` (the caller is under src/) or `<dir>/src/<rel>` (the caller is a
 * bundle under dist/, and the package's "files" ship src/native). Undefined when no candidate exists.
 */
export function packageFile(rel: string, metaUrl: string | undefined): string | undefined {
  let dir = dirname(fileURLToPath(selfUrl(metaUrl)));
  for (let up = 0; up <= 4; up++) {
    for (const p of [join(dir, rel), join(dir, "src", rel)]) if (existsSync(p)) return p;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return undefined;
}
