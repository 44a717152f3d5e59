// Shared by the daemon unit tests: a temporary directory with a key, hook scripts and a config.
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hashToken } from "../../examples/daemon/auth.js";
import { generateKey } from "../../src/runtime/crypto.js";

export const TOKENS = { admin: "admin-token-0123456789", control: "control-token-0123456789", monitor: "monitor-token-0123456789" } as const;

export function tempSetup(extra: Record<string, unknown> = {}): { dir: string; file: string; config: Record<string, unknown> } {
  const dir = mkdtempSync(join(tmpdir(), "hf-daemon-"));
  writeFileSync(join(dir, "cluster.key"), generateKey() + "\n", { mode: 0o600 });
  for (const name of ["start.sh", "stop.sh"]) {
    writeFileSync(join(dir, name), `#!/bin/sh\necho "${name} $1 -> $2"\n`);
    chmodSync(join(dir, name), 0o755);
  }
  const config = {
    cluster: { id: "unit", keyFile: "cluster.key", port: 20000 + Math.floor(Math.random() * 20000), nodes: [{ id: "a", addresses: ["127.0.0.1"] }] },
    node: "a",
    modules: [{ name: "web", kind: "farm", hooks: { start_both: "./start.sh", stop_both: "./stop.sh" } }],
    api: {
      port: 9453,
      tokens: [
        { name: "ops", role: "admin", sha256: hashToken(TOKENS.admin) },
        { name: "ctl", role: "control", sha256: hashToken(TOKENS.control) },
      ],
      tokensFile: "tokens",
    },
    logDir: "logs",
    stateDir: "state",
    ...extra,
  };
  writeFileSync(join(dir, "tokens"), `# role secret name\nmonitor ${TOKENS.monitor} watcher\n`);
  const file = join(dir, "holdfast.json");
  writeFileSync(file, JSON.stringify(config, null, 2));
  return { dir, file, config };
}
