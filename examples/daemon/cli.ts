#!/usr/bin/env node
// The `holdfast` command line: `holdfast --help` lists the commands (see commands.ts).
import { runCli } from "./commands.js";

const code = await runCli(process.argv.slice(2));
// -1: a long-running command (the daemon) that exits from its own signal handlers.
if (code >= 0) process.exit(code);
