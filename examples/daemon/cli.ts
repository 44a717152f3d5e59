#!/usr/bin/env node
// The `holdfast` command line: `holdfast --help` lists the commands (see commands.ts).
import { runCli } from "./commands.js";

// No top-level await: the bin is also built as CommonJS.
void runCli(process.argv.slice(2)).then(
  (code) => {
    // -1: a long-running command (the daemon) that exits from its own signal handlers.
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    process.stderr.write(`holdfast: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(10);
  },
);
