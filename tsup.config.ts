import { defineConfig } from "tsup";

export default defineConfig({
  entry: {
    index: "src/index.ts",
    "testing/index": "src/testing/index.ts",
    config: "src/config.ts",
    internals: "src/internals.ts",
    cli: "examples/daemon/cli.ts",
  },
  format: ["esm", "cjs"],
  dts: { entry: { index: "src/index.ts", "testing/index": "src/testing/index.ts", config: "src/config.ts", internals: "src/internals.ts" } },
  sourcemap: true,
  clean: true,
  target: "node20",
  splitting: false,
});
