/**
 * Golden scenario scripts (test/scenarios/*.txt), in the manner of etcd raft's testdata: each script drives
 * module cores with a fake clock; the transcript of every effect and event is compared with the checked-in
 * `.golden` file. `UPDATE_GOLDEN=1 npx vitest run test/unit/scenarios.test.ts` rewrites them (review the diff).
 */
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { Harness } from "../scenarios/harness.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "scenarios");
const scripts = readdirSync(dir).filter((f) => f.endsWith(".txt")).sort();
const update = process.env.UPDATE_GOLDEN === "1";

describe("module scenarios (golden)", () => {
  it("has scripts", () => expect(scripts.length).toBeGreaterThan(0));
  for (const file of scripts) {
    it(file.replace(/\.txt$/, ""), () => {
      const text = readFileSync(join(dir, file), "utf8");
      const out = new Harness().runScript(text.replace(/\n$/, ""));
      const golden = join(dir, file.replace(/\.txt$/, ".golden"));
      if (update || !existsSync(golden)) {
        if (!update) throw new Error(`missing ${golden}: run with UPDATE_GOLDEN=1`);
        writeFileSync(golden, out);
      }
      expect(out).toBe(readFileSync(golden, "utf8"));
    });
  }
});
