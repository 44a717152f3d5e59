import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "src/native/**/*.o"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    // The pure core must stay deterministic: no node: imports, no timers, no clock, no randomness.
    files: ["src/core/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: ["node:*", "fs", "net", "dgram", "child_process", "os", "crypto"] }],
      "no-restricted-globals": ["error", "setTimeout", "setInterval", "setImmediate", "performance", "process"],
      "no-restricted-properties": [
        "error",
        { object: "Date", property: "now", message: "core is clock-free: take `now` as input" },
        { object: "Math", property: "random", message: "core is deterministic: take randomness as input" },
      ],
    },
  },
);
