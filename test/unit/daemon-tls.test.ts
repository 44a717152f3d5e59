/**
 * The control API over TLS (node:https, with the config's cert and key), used by the CLI with a private CA
 * (`--ca`), refused without it, accepted with `--insecure`; and the CLI's commands and log follow over it.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiServer } from "../../examples/daemon/api.js";
import { runCli, type CliIO } from "../../examples/daemon/commands.js";
import { decodeConfig } from "../../examples/daemon/config.js";
import { Daemon } from "../../examples/daemon/daemon.js";
import { MemoryVipDriver } from "../../src/runtime/module.js";
import { tempSetup, TOKENS } from "./daemon-helpers.js";

function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"]);
    return true;
  } catch {
    return false;
  }
}

function io(env: Record<string, string> = {}): CliIO & { stdout: string; stderr: string } {
  const o = { stdout: "", stderr: "", env, out: (s: string) => void (o.stdout += s), err: (s: string) => void (o.stderr += s) };
  return o;
}

describe.skipIf(!hasOpenssl())("control API over TLS", () => {
  let daemon: Daemon;
  let api: ApiServer;
  let url: string;
  let cert: string;

  beforeAll(async () => {
    const s = tempSetup();
    cert = join(s.dir, "cert.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=holdfast-test", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(s.dir, "key.pem"), "-out", cert], { stdio: "ignore" });
    const cfg = decodeConfig({ ...s.config, api: { ...(s.config.api as object), tls: { cert: "cert.pem", key: "key.pem" } } }, { file: s.file });
    expect(cfg.nodes[0]?.apiUrl).toBe("https://127.0.0.1:9453");
    daemon = new Daemon(cfg, { vip: new MemoryVipDriver() });
    api = new ApiServer({ daemon, port: 0 });
    url = `https://127.0.0.1:${(await api.listen()).port}`;
    await daemon.start();
    await daemon.host("web").module.waitFor("UP");
  });

  afterAll(async () => {
    await daemon?.stop(5_000);
    await api?.close();
  });

  it("serves HTTPS only: the CLI trusts it with --ca, refuses it without, accepts it with --insecure", async () => {
    const ok = io({ HOLDFAST_TOKEN: TOKENS.monitor });
    expect(await runCli(["state", "web", "--node", url, "--ca", cert], ok)).toBe(0);
    expect(ok.stdout).toMatch(/^a\s+web\s+UP\s+ready/m);
    const untrusted = io({ HOLDFAST_TOKEN: TOKENS.monitor });
    expect(await runCli(["state", "--node", url], untrusted)).toBe(10);
    expect(untrusted.stderr).toMatch(/certificate/i);
    const insecure = io({ HOLDFAST_TOKEN: TOKENS.monitor });
    expect(await runCli(["state", "--node", url, "--insecure"], insecure)).toBe(0);
    const plain = await fetch(url.replace("https:", "http:") + "/health/web").then(
      () => "answered",
      () => "refused",
    );
    expect(plain).toBe("refused");
  });

  it("runs commands and reads logs over TLS", async () => {
    const o = io({ HOLDFAST_TOKEN: TOKENS.control });
    expect(await runCli(["restart", "web", "--node", url, "--ca", cert], o)).toBe(0);
    expect(o.stdout).toMatch(/restart web: accepted/);
    await daemon.host("web").module.waitFor((s) => s.state === "UP" && !s.transient);
    const l = io({ HOLDFAST_TOKEN: TOKENS.monitor });
    expect(await runCli(["logs", "web", "-n", "20", "--node", url, "--ca", cert], l)).toBe(0);
    expect(l.stdout).toMatch(/ a web command restart/);
  });

  it("follows the log (logs -f) until the daemon closes the stream", async () => {
    const f = io({ HOLDFAST_TOKEN: TOKENS.monitor });
    const following = runCli(["logs", "web", "-f", "-n", "1", "--node", url, "--ca", cert], f);
    await new Promise((r) => setTimeout(r, 300));
    await daemon.command("web", "stop");
    const end = Date.now() + 10_000;
    while (!/hook stop_both stdout/.test(f.stdout) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(f.stdout).toMatch(/ a web command stop\n/);
    expect(f.stdout).toMatch(/hook stop_both stdout: stop.sh UP -> STOP/);
    await api.close();
    expect(await following).toBe(0);
  });
});
