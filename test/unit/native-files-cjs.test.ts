import { spawnSync } from "node:child_process";
import { mkdtempSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";
import { farmObjectPath } from "../../src/farm/filter/ebpf.js";
import { helperPath } from "../../src/mirror/helper.js";

const repo = resolve(import.meta.dirname, "../..");

/**
 * Bundles `entry` as CommonJS into `<tmp>/dist/index.cjs` next to a `src` link (the package's shape: tsup
 * bundles these files so, and the package ships src/native), and returns what `fn()` of the bundle prints.
 */
async function callFromCjsBundle(entry: string, fn: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "hf-cjs-"));
  try {
    symlinkSync(join(repo, "src"), join(dir, "src"));
    symlinkSync(join(repo, "node_modules"), join(dir, "node_modules"));
    const out = join(dir, "dist", "index.cjs");
    await build({ entryPoints: [join(repo, entry)], bundle: true, format: "cjs", platform: "node", outfile: out, logLevel: "silent", packages: "external", absWorkingDir: repo });
    const r = spawnSync(process.execPath, ["-e", `process.stdout.write(require(${JSON.stringify(out)}).${fn}())`], { encoding: "utf8", cwd: repo });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    return realpathSync(r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("shipped native files are found from the CJS build (import.meta is empty there)", () => {
  it("the prebuilt replication helper", async () => {
    expect(await callFromCjsBundle("src/mirror/helper.ts", "helperPath")).toBe(realpathSync(helperPath()));
  });

  it("the committed BPF object", async () => {
    expect(await callFromCjsBundle("src/farm/filter/ebpf.ts", "farmObjectPath")).toBe(realpathSync(farmObjectPath()));
  });
});
