#!/usr/bin/env node
// The `holdfast` command line (grows with the daemon; see issue #6).
console.error("holdfast: no command yet");
process.exit(2);
