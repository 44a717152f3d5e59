import { spawnSync } from "node:child_process";
import { mkdtempSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";
import { helperPath } from "../../src/mirror/helper.js";

const repo = resolve(import.meta.dirname, "../..");

describe("helperPath in the CJS build", () => {
  it("finds the prebuilt helper from a CommonJS bundle (import.meta is empty there)", async () => {
    // The same shape as the package: dist/index.cjs next to src/native (tsup bundles helper.ts like this).
    const dir = mkdtempSync(join(tmpdir(), "hf-cjs-"));
    try {
      symlinkSync(join(repo, "src"), join(dir, "src"));
      symlinkSync(join(repo, "node_modules"), join(dir, "node_modules"));
      const out = join(dir, "dist", "index.cjs");
      await build({ entryPoints: [join(repo, "src/mirror/helper.ts")], bundle: true, format: "cjs", platform: "node", outfile: out, logLevel: "silent", packages: "external", absWorkingDir: repo });
      const r = spawnSync(process.execPath, ["-e", `process.stdout.write(require(${JSON.stringify(out)}).helperPath())`], { encoding: "utf8", cwd: repo });
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      expect(realpathSync(r.stdout)).toBe(realpathSync(helperPath()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
