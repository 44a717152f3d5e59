/** The committed farm.bpf.o is what scripts/build-bpf.sh builds from the source (reproducible build). */
import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

let clang = true;
try {
  execFileSync("clang", ["--version"], { stdio: "ignore" });
} catch {
  clang = false;
  console.warn("skipping: clang is not installed (only needed to rebuild the BPF object)");
}

describe.skipIf(!clang)("farm.bpf.o", () => {
  it("rebuilds to the same bytes as the committed object", () => {
    const dir = mkdtempSync(join(tmpdir(), "holdfast-bpf-"));
    try {
      const out = join(dir, "farm.bpf.o");
      execFileSync("bash", ["scripts/build-bpf.sh", out], { stdio: "pipe" });
      const rebuilt = readFileSync(out);
      const committed = readFileSync("src/native/farm.bpf.o");
      expect(rebuilt.length).toBe(committed.length);
      expect(rebuilt.equals(committed)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
