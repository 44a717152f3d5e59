import { defineConfig } from "vitest/config";

// Two projects: "unit" (pure logic, properties, deterministic simulation: fast, no privileges)
// and "lab" (real network namespaces, real kernel, real processes: root, run one file at a time).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts", "test/sim/**/*.test.ts"],
          testTimeout: 60_000,
        },
      },
      {
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
