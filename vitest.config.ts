import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// The package's own name inside the repository, as tsconfig.json's paths (examples and tests import "holdfast").
const src = (p: string) => fileURLToPath(new URL(`./src/${p}`, import.meta.url));
const resolve = {
  alias: [
    { find: /^holdfast$/, replacement: src("index.ts") },
    { find: /^holdfast\/testing$/, replacement: src("testing/index.ts") },
    { find: /^holdfast\/config$/, replacement: src("config.ts") },
    { find: /^holdfast\/internals$/, replacement: src("internals.ts") },
  ],
};

// Two projects: "unit" (pure logic, properties, deterministic simulation: fast, no privileges)
// and "lab" (real network namespaces, real kernel, real processes: root, run one file at a time).
export default defineConfig({
  test: {
    projects: [
      {
        resolve,
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts", "test/sim/**/*.test.ts"],
          testTimeout: 60_000,
        },
      },
      {
        resolve,
        test: {
          name: "lab",
          include: ["test/lab/**/*.test.ts"],
          testTimeout: 180_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
