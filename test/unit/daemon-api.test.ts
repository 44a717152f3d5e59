/**
 * The daemon in-process on loopback (one node, a farm module whose hooks are shell scripts) and its HTTP
 * API: roles (no token 401, monitor 403 on commands, control and admin ok), state, commands, health URL,
 * logs (JSON lines and follow), metrics, snapshot, the peer proxy, the console's static files, and a clean
 * stop that runs the stop hook.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiServer } from "../../examples/daemon/api.js";
import { loadConfig } from "../../examples/daemon/config.js";
import { Daemon, type ClusterState } from "../../examples/daemon/daemon.js";
import { ModuleProbe } from "../../src/checkers/module.js";
import { MemoryVipDriver } from "../../src/runtime/module.js";
import { tempSetup, TOKENS } from "./daemon-helpers.js";

let daemon: Daemon;
let api: ApiServer;
let base: string;
let dir: string;
const vip = new MemoryVipDriver();

const call = (method: string, path: string, token?: string) =>
  fetch(base + path, { method, headers: token ? { Authorization: `Bearer ${token}` } : {} });

async function waitUntil(pred: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("condition not met in time");
}

beforeAll(async () => {
  const s = tempSetup({ modules: [{ name: "web", kind: "farm", vips: ["198.18.200.1/24"], hooks: { start_both: "./start.sh", stop_both: "./stop.sh" } }] });
  dir = s.dir;
  daemon = new Daemon(loadConfig(s.file), { vip });
  api = new ApiServer({ daemon, port: 0 });
  const addr = await api.listen();
  base = `http://127.0.0.1:${addr.port}`;
  await daemon.start();
  await daemon.host("web").module.waitFor("UP");
});

afterAll(async () => {
  await daemon?.stop(5_000);
  await api?.close();
});

describe("control API", () => {
  it("refuses a request with no token (401) or an unknown one (401)", async () => {
    const r = await call("GET", "/api/v1/state");
    expect(r.status).toBe(401);
    expect(r.headers.get("www-authenticate")).toContain("Bearer");
    expect((await call("GET", "/api/v1/state", "wrong")).status).toBe(401);
    expect((await call("POST", "/api/v1/modules/web/commands/stop")).status).toBe(401);
    expect((await call("GET", "/metrics")).status).toBe(401);
  });

  it("lets a monitor token read but refuses its commands (403), and the module is untouched", async () => {
    expect((await call("GET", "/api/v1/state", TOKENS.monitor)).status).toBe(200);
    const r = await call("POST", "/api/v1/modules/web/commands/stop", TOKENS.monitor);
    expect(r.status).toBe(403);
    expect(((await r.json()) as { code: string }).code).toBe("HOLDFAST_FORBIDDEN");
    expect(daemon.host("web").module.status.state).toBe("UP");
    expect((await call("GET", "/api/v1/snapshot", TOKENS.monitor)).status).toBe(403);
    expect((await call("GET", "/api/v1/snapshot", TOKENS.control)).status).toBe(403);
  });

  it("shows the state of nodes and modules", async () => {
    const s = (await (await call("GET", "/api/v1/state", TOKENS.monitor)).json()) as ClusterState;
    expect(s.node).toBe("a");
    expect(s.nodes).toHaveLength(1);
    expect(s.nodes[0]?.modules.web).toMatchObject({ state: "UP", ready: true, transient: false });
    expect(s.modules[0]).toMatchObject({ name: "web", kind: "farm", vips: ["198.18.200.1/24"] });
    const one = (await (await call("GET", "/api/v1/modules/web", TOKENS.monitor)).json()) as { state: string; ready: boolean };
    expect(one).toMatchObject({ state: "UP", ready: true });
    expect((await call("GET", "/api/v1/modules/nope", TOKENS.monitor)).status).toBe(404);
  });

  it("answers the `module` checker of another module or cluster (its documented endpoint shape)", async () => {
    const probe = (states: string[], token?: string) =>
      new ModuleProbe({ module: "web", states, ready: true, source: { url: `${base}/api/v1/modules/web`, ...(token ? { token } : {}) } }).run(new AbortController().signal);
    expect((await probe(["UP"], TOKENS.monitor)).ok).toBe(true);
    expect((await probe(["PRIM", "ALONE"], TOKENS.monitor)).ok).toBe(false);
    expect((await probe(["UP"])).ok).toBe(false);
  });

  it("runs commands with a control token, answers 409 when the state refuses, 400 for an unknown command", async () => {
    expect((await call("GET", "/health/web")).status).toBe(200);
    const r = await call("POST", "/api/v1/modules/web/commands/stop", TOKENS.control);
    expect(r.status).toBe(200);
    await daemon.host("web").module.waitFor("STOP");
    expect((await call("GET", "/health/web")).status).toBe(404);
    const refused = await call("POST", "/api/v1/modules/web/commands/restart", TOKENS.control);
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { error: string }).error).toContain("nothing to restart in STOP");
    expect((await call("POST", "/api/v1/modules/web/commands/explode", TOKENS.admin)).status).toBe(400);
    expect((await call("POST", "/api/v1/modules/web/commands/start", TOKENS.admin)).status).toBe(200);
    await daemon.host("web").module.waitFor("UP");
    expect((await call("GET", "/health/web")).status).toBe(200);
    const audit = readFileSync(join(dir, "logs", "audit.jsonl"), "utf8");
    expect(audit).toContain('"by":"ctl"');
    expect(audit).toContain('"by":"ops"');
  });

  it("serves the event log as JSON lines, and follows it", async () => {
    const text = await (await call("GET", "/api/v1/modules/web/logs?n=50", TOKENS.monitor)).text();
    const lines = text.trim().split("\n").map((l) => JSON.parse(l) as { text: string; module: string });
    expect(lines.some((l) => l.text.includes("hook start_both stdout: start.sh"))).toBe(true);
    expect(lines.every((l) => l.module === "web")).toBe(true);

    const sse = await fetch(`${base}/api/v1/modules/web/logs?n=2`, { headers: { Authorization: `Bearer ${TOKENS.monitor}`, Accept: "text/event-stream" } });
    expect(sse.headers.get("content-type")).toBe("text/event-stream");
    expect(await sse.text()).toMatch(/^data: \{.*\}\n\ndata: \{.*\}\n\n$/s);

    const ac = new AbortController();
    const res = await fetch(`${base}/api/v1/modules/web/logs?n=1&follow=1`, { headers: { Authorization: `Bearer ${TOKENS.monitor}` }, signal: ac.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let got = "";
    await reader.read().then((c) => (got += new TextDecoder().decode(c.value)));
    const restarted = daemon.command("web", "restart");
    const end = Date.now() + 10_000;
    while (!got.includes("command restart") && Date.now() < end) got += new TextDecoder().decode((await reader.read()).value);
    ac.abort();
    await restarted;
    expect(got).toContain("command restart");
    await daemon.host("web").module.waitFor("UP");
  });

  it("exposes Prometheus metrics", async () => {
    const text = await (await call("GET", "/metrics", TOKENS.monitor)).text();
    expect(text).toMatch(/holdfast_module_state\{node="a",module="web",state="UP"\} 1/);
    expect(text).toMatch(/holdfast_module_transitions_total\{node="a",module="web",from="UP",to="STOP"\} 1/);
    expect(text).toMatch(/holdfast_module_commands_total\{node="a",module="web",command="restart",result="refused"\} 1/);
    expect(text).toMatch(/holdfast_heartbeats_dropped_total\{node="a",reason="[a-zA-Z]+"\} 0/);
    expect(text).toContain("# TYPE holdfast_module_failovers_total counter");
  });

  it("gives admins a snapshot with logs, state and a redacted config", async () => {
    const r = (await (await call("GET", "/api/v1/snapshot", TOKENS.admin)).json()) as { files: Record<string, string> };
    expect(Object.keys(r.files)).toEqual(expect.arrayContaining(["config.redacted.json", "state.json", "metrics.txt", "logs/web.jsonl", "logs/web.log", "logs/audit.jsonl"]));
    expect(r.files["config.redacted.json"]).not.toMatch(/[0-9a-f]{64}/);
  });

  it("proxies /api/v1/nodes/:self to itself and 404s unknown nodes", async () => {
    expect((await call("GET", "/api/v1/nodes/a/modules/web", TOKENS.monitor)).status).toBe(200);
    expect((await call("GET", "/api/v1/nodes/a/modules/web")).status).toBe(401);
    expect((await call("POST", "/api/v1/nodes/a/modules/web/commands/stop", TOKENS.monitor)).status).toBe(403);
    expect((await call("GET", "/api/v1/nodes/zz/state", TOKENS.monitor)).status).toBe(404);
  });

  it("serves the console without a token, and nothing outside its directory", async () => {
    const r = await call("GET", "/");
    expect(r.status).toBe(200);
    expect(await r.text()).toContain("/console/app.js");
    expect((await call("GET", "/console/app.js")).headers.get("content-type")).toContain("javascript");
    expect((await call("GET", "/console/../config.ts")).status).not.toBe(200);
  });

  it("stops cleanly: the stop hook runs and the VIP goes", async () => {
    await waitUntil(async () => daemon.host("web").module.status.state === "UP" && !daemon.host("web").module.status.transient);
    expect([...vip.held]).toEqual(["198.18.200.1/24"]);
    await daemon.stop(5_000);
    expect(vip.held.size).toBe(0);
    const log = readFileSync(join(dir, "logs", "web.log"), "utf8");
    expect(log).toMatch(/hook stop_both stdout: stop.sh UP -> STOP/);
  });
});
