// Issue #3's namespace acceptance: every checker against the real thing, with the expected action observed
// on a real module run by the reference daemon (one daemon in node n0, the client c0 as a ping witness).
// Each module has one checker, so each fault's effect is attributable:
//   process -> restart, interface -> wait, ip -> stop, tcp -> restart, ping -> wait, custom -> stop,
//   module (another module stopped) -> wait. (split-brain on a real mirror pair: test/lab/hooks.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Lab, type LabHost } from "../../src/testing/lab.js";
import { DaemonCluster, type DaemonNodeRun } from "../../examples/daemon/lab-cluster.js";

const root = process.getuid?.() === 0;
const FAST = { interval: 200, timeout: 300, fall: 2, rise: 1 };

describe.skipIf(!root)("every checker drives its module's action (daemon in a namespace)", () => {
  let lab: Lab;
  let d: DaemonCluster;
  let n0: DaemonNodeRun;
  let witness: LabHost;
  let dir: string;
  const extraIp = "198.18.1.50";

  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clients: 1, networks: 2 });
    witness = lab.clients[0] as LabHost;
    const r = await lab.exec(lab.nodes[0] as LabHost, ["ip", "addr", "add", `${extraIp}/24`, "dev", "eth1"]);
    expect(r.code).toBe(0);
    d = await DaemonCluster.start(lab, {
      modules: (base, _node, tokens) => {
        dir = base;
        // An app for the process and tcp modules: a detached listener whose pid is kept for the test.
        const app = (name: string, port: number) => {
          const start = join(base, "hooks", `${name}_start.sh`);
          writeFileSync(start, `#!/bin/sh\nsetsid ${process.execPath} -e 'require("net").createServer().listen(${port}, "127.0.0.1"); setInterval(() => {}, 1e9)' hfapp-${name} >/dev/null 2>&1 < /dev/null &\necho $! > "${base}/${name}.pid"\nfor i in $(seq 1 50); do ss -ltn | grep -q ':${port} ' && exit 0; sleep 0.1; done; exit 1\n`);
          const stop = join(base, "hooks", `${name}_stop.sh`);
          writeFileSync(stop, `#!/bin/sh\nkill "$(cat "${base}/${name}.pid")" 2>/dev/null; exit 0\n`);
          chmodSync(start, 0o755);
          chmodSync(stop, 0o755);
          return { start_both: start, stop_both: stop };
        };
        writeFileSync(join(base, "custom-ok"), "");
        const farm = (name: string, checker: object, hooks: object = {}) => ({ name, kind: "farm", hooks, checkers: [{ ...FAST, ...checker }] });
        return [
          farm("m_process", { type: "process", cmdline: "hfapp-m_process", min: 1, action: "restart" }, app("m_process", 7101)),
          farm("m_interface", { type: "interface", interface: "eth1", action: "wait" }),
          farm("m_ip", { type: "ip", address: extraIp, action: "stop" }),
          farm("m_tcp", { type: "tcp", host: "127.0.0.1", port: 7102, action: "restart" }, app("m_tcp", 7102)),
          farm("m_ping", { type: "ping", host: lab.addr(witness, 0), action: "wait", timeout: 300 }),
          farm("m_custom", { type: "custom", shell: `test -f ${join(base, "custom-ok")}`, action: "stop", interval: 300, timeout: 1000 }),
          { name: "m_dep", kind: "farm" },
          farm("m_module", { type: "module", module: "m_dep", states: ["UP"], action: "wait", source: { url: `http://${lab.addr(lab.nodes[0] as LabHost, 0)}:9453/api/v1/modules/m_dep`, token: tokens.monitor } }),
        ];
      },
    });
    n0 = d.node("n0");
    for (const m of ["m_process", "m_interface", "m_ip", "m_tcp", "m_ping", "m_custom", "m_dep", "m_module"]) await until(m, (s) => s.state === "UP" && s.ready, 20_000);
  });
  afterAll(async () => {
    await d?.stop();
    await lab?.destroy();
  });

  interface Status {
    state: string;
    ready: boolean;
    reason: string;
  }
  async function status(m: string): Promise<Status> {
    const r = await lab.exec(n0.host, ["curl", "-s", "-m", "2", "-H", `authorization: Bearer ${d.tokens.monitor}`, `${n0.url}/api/v1/modules/${m}`]);
    return JSON.parse(r.stdout) as Status;
  }
  async function until(m: string, pred: (s: Status) => boolean, timeoutMs: number): Promise<Status> {
    let last: Status | undefined;
    for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      last = await status(m);
      if (pred(last)) return last;
    }
    throw new Error(`${m}: condition not reached in ${timeoutMs} ms; last ${JSON.stringify(last)}`);
  }
  async function logText(m: string): Promise<string> {
    const r = await lab.exec(n0.host, ["curl", "-s", "-m", "2", "-H", `authorization: Bearer ${d.tokens.monitor}`, `${n0.url}/api/v1/modules/${m}/logs?n=200&format=text`]);
    return r.stdout;
  }
  const kill = (name: string) => process.kill(Number(readFileSync(join(dir, `${name}.pid`), "utf8")), "SIGKILL");

  it("process: the app killed -> the module restarts it (restart), back UP with a new app process", async () => {
    const before = readFileSync(join(dir, "m_process.pid"), "utf8");
    kill("m_process");
    await until("m_process", () => readFileSync(join(dir, "m_process.pid"), "utf8") !== before, 10_000);
    await until("m_process", (s) => s.state === "UP" && s.ready, 10_000);
    expect(await logText("m_process")).toMatch(/process.*-> restart/);
  });

  it("interface: link down -> WAIT; link up -> UP again", async () => {
    await lab.linkDown(n0.host, 1);
    try {
      await until("m_interface", (s) => s.state === "WAIT", 10_000);
    } finally {
      await lab.linkUp(n0.host, 1);
    }
    await until("m_interface", (s) => s.state === "UP" && s.ready, 10_000);
  });

  it("tcp: the port closed -> restart, the listener is back and the module UP", async () => {
    const before = readFileSync(join(dir, "m_tcp.pid"), "utf8");
    kill("m_tcp");
    await until("m_tcp", () => readFileSync(join(dir, "m_tcp.pid"), "utf8") !== before, 15_000);
    await until("m_tcp", (s) => s.state === "UP" && s.ready, 15_000);
    expect(await logText("m_tcp")).toMatch(/tcp.*-> restart/);
    const r = await lab.exec(n0.host, ["bash", "-c", "ss -ltn | grep -c ':7102 '"]);
    expect(r.stdout.trim()).toBe("1");
  });

  it("ping: the witness unreachable (nft drop) -> WAIT; reachable again -> UP", async () => {
    await lab.drop(n0.host, witness);
    try {
      await until("m_ping", (s) => s.state === "WAIT", 10_000);
    } finally {
      await lab.heal();
    }
    await until("m_ping", (s) => s.state === "UP" && s.ready, 10_000);
  });

  it("module: the module it depends on stopped -> WAIT; started again -> UP", async () => {
    const stop = await d.cli(n0, ["stop", "m_dep"], { token: d.tokens.control });
    expect(stop.code).toBe(0);
    await until("m_module", (s) => s.state === "WAIT", 10_000);
    const start = await d.cli(n0, ["start", "m_dep"], { token: d.tokens.control });
    expect(start.code).toBe(0);
    await until("m_module", (s) => s.state === "UP" && s.ready, 10_000);
  });

  it("ip: the address removed -> stop (STOP)", async () => {
    const r = await lab.exec(n0.host, ["ip", "addr", "del", `${extraIp}/24`, "dev", "eth1"]);
    expect(r.code).toBe(0);
    const s = await until("m_ip", (x) => x.state === "STOP", 10_000);
    expect(s.reason).toMatch(/ip/);
  });

  it("custom: the script fails -> stop (STOP)", async () => {
    rmSync(join(dir, "custom-ok"));
    expect(existsSync(join(dir, "custom-ok"))).toBe(false);
    const s = await until("m_custom", (x) => x.state === "STOP", 15_000);
    expect(s.reason).toMatch(/custom|script|exit/);
  });
});
