// Every checker against the real thing, in network namespaces: the probes run inside node n0's namespace (the
// stand-alone checker host, src/checkers/cli.ts, spawned with lab.spawn), and each fault is injected for real:
// a killed process, a link down (carrier lost, then admin down), a removed address, a closed port, an
// unreachable ping target (nftables drop), a failing script, a hanging script killed at its timeout, a dependent
// module's state flipping (a tiny HTTP control API in n1), a witness cut off. For each, the test waits for the
// verdict change and then for the recovery, and prints the detection time.
//
// Layout: nodes n0, n1; clients c0, c1; two networks (eth0, eth1). Needs root.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync, rmSync, writeFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { Lab, type LabHost, type LabProcess } from "../../src/testing/lab.js";
import type { CheckerVerdict } from "../../src/core/checker.js";

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
const repo = join(import.meta.dirname, "..", "..");

/** Fast settings so that the whole file stays well under a minute: detection in about fall x interval. */
const FAST = { interval: 200, timeout: 300, fall: 2, rise: 1 };

interface Fixture {
  lab: Lab;
  n0: LabHost;
  n1: LabHost;
  c0: LabHost;
  c1: LabHost;
  host: LabProcess; // the checker host in n0
  marker: string;
  files: { flag: string; hang: string; pids: string; state: string };
  sleeper: LabProcess;
  app: LabProcess;
  control: LabProcess;
}

let f: Fixture | undefined;
const detections: Record<string, number> = {};

function fx(): Fixture {
  if (f === undefined) throw new Error("lab not created");
  return f;
}

interface HostEvent {
  event: string;
  checker?: string;
  ok?: boolean;
  at: number;
  durationMs?: number;
  detail?: string;
}

/**
 * The checker host's JSON lines, collected in the background, with one read cursor per checker (verdicts of
 * different checkers arrive in any order, and several tests wait for several checkers at once).
 */
class HostLog {
  readonly events: HostEvent[] = [];
  readonly #cursors = new Map<string, number>();
  #wakers: (() => void)[] = [];
  #ended = false;

  constructor(p: LabProcess) {
    void (async () => {
      for await (const line of p.lines()) {
        if (!line.startsWith("{")) continue;
        try {
          this.events.push(JSON.parse(line) as HostEvent);
        } catch {
          continue;
        }
        this.#wake();
      }
      this.#ended = true;
      this.#wake();
    })();
  }

  #wake(): void {
    const w = this.#wakers;
    this.#wakers = [];
    for (const f of w) f();
  }

  /** The first event at or after `from` matching `pred`, waiting for it; returns it and its index. */
  async find(pred: (e: HostEvent) => boolean, from: number, timeoutMs: number, what: string): Promise<[HostEvent, number]> {
    const end = Date.now() + timeoutMs;
    let i = from;
    for (;;) {
      for (; i < this.events.length; i++) {
        const e = this.events[i] as HostEvent;
        if (pred(e)) return [e, i];
      }
      const left = end - Date.now();
      if (left <= 0 || this.#ended) {
        const tail = this.events.slice(-8).map((e) => JSON.stringify(e)).join("\n");
        throw new Error(`no ${what} within ${timeoutMs} ms (host ${this.#ended ? "exited" : "running"}); last events:\n${tail}`);
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#wakers.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** The next verdict of `checker` not returned yet. */
  async verdict(checker: string, timeoutMs: number): Promise<HostEvent> {
    const [e, i] = await this.find((x) => x.event === "verdict" && x.checker === checker, this.#cursors.get(checker) ?? 0, timeoutMs, `verdict of ${checker}`);
    this.#cursors.set(checker, i + 1);
    return e;
  }
}

let log: HostLog | undefined;

/** Waits for the next verdict of `checker` and checks its ok flag. */
async function verdict(checker: string, ok: boolean, timeoutMs = 5000): Promise<CheckerVerdict & { at: number }> {
  if (log === undefined) throw new Error("no checker host");
  const v = (await log.verdict(checker, timeoutMs)) as unknown as CheckerVerdict & { at: number };
  expect({ checker: v.checker, ok: v.ok, reason: v.reason }).toEqual({ checker, ok, reason: v.reason });
  return v;
}

/** Waits for a probe result of `checker` from a run that started after `since`. */
async function resultAfter(checker: string, since: number, timeoutMs = 3000): Promise<{ ok: boolean; detail: string }> {
  if (log === undefined) throw new Error("no checker host");
  const [e] = await log.find(
    (x) => x.event === "result" && x.checker === checker && x.at - (x.durationMs ?? 0) >= since,
    0,
    timeoutMs,
    `result of ${checker}`,
  );
  return { ok: e.ok === true, detail: e.detail ?? "" };
}

/** Records the time from fault to verdict. */
function detected(name: string, faultAt: number, v: { at: number }): void {
  detections[name] = v.at - faultAt;
}

async function must(lab: Lab, host: LabHost, script: string): Promise<void> {
  const r = await lab.sh(host, script);
  expect(r, `${script}: ${r.stderr}`).toMatchObject({ code: 0 });
}

describe.skipIf(!isRoot)("checkers against the real thing (namespaces)", () => {
  beforeAll(async () => {
    const lab = await Lab.create({ nodes: 2, clients: 2, networks: 2 });
    try {
      const [n0, n1] = lab.nodes as [LabHost, LabHost];
      const [c0, c1] = lab.clients as [LabHost, LabHost];
      const marker = String(process.pid % 100000) + String(Date.now() % 1000);
      const dir = lab.dir(n0);
      const files = { flag: join(dir, "healthy"), hang: join(dir, "hang"), pids: join(dir, "hang.pids"), state: join(lab.dir(n1), "db.json") };
      writeFileSync(files.flag, "");
      writeFileSync(files.state, JSON.stringify({ state: "PRIM", ready: true }));

      // The checked things: an application process, a VIP (v4 and v6), a TCP service and a control API on n1.
      const sleeper = lab.spawn(n0, ["sleep", `3600.${marker}`]);
      await must(lab, n0, `ip addr add ${lab.spareAddr(0)}/32 dev eth0 && ip addr add ${lab.spareAddr6(0)}/128 dev eth0 nodad`);
      const app = lab.spawn(n1, [
        process.execPath,
        "-e",
        // "::" is dual-stack: the same socket answers on n1's IPv4 and IPv6 addresses.
        `require("net").createServer((s) => s.end()).listen(8080, "::", () => console.log("listening"))`,
      ]);
      // A self-signed certificate for n1's address, so that the control API is also served over TLS.
      const cert = join(lab.dir(n1), "api.crt");
      const key = join(lab.dir(n1), "api.key");
      const ossl = await lab.exec(n1, [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=holdfast-test", "-addext", `subjectAltName=IP:${lab.addr(n1)}`, "-keyout", key, "-out", cert,
      ]);
      expect(ossl.code, ossl.stderr).toBe(0);
      const control = lab.spawn(
        n1,
        [
          process.execPath,
          "-e",
          `const fs = require("fs");
           const handler = (req, res) => {
             if (req.headers.authorization !== "Bearer s3cret") { res.writeHead(401); res.end(); return; }
             if (req.url !== "/api/v1/modules/db") { res.writeHead(404); res.end(); return; }
             res.writeHead(200, { "content-type": "application/json" });
             res.end(fs.readFileSync(process.env.STATE_FILE, "utf8"));
           };
           const addr = ${JSON.stringify(lab.addr(n1))};
           require("http").createServer(handler).listen(7410, addr, () => {
             require("https").createServer({ cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY) }, handler)
               .listen(7411, addr, () => console.log("listening"));
           });`,
        ],
        { env: { STATE_FILE: files.state, CERT: cert, KEY: key } },
      );
      await app.waitForLine(/listening/, 10_000);
      await control.waitForLine(/listening/, 10_000);

      // c0's link-local address (a router is often a witness only by its fe80:: address), once DAD is done.
      let linkLocal = "";
      for (const end = Date.now() + 5000; linkLocal === "" && Date.now() < end; ) {
        const r = await lab.exec(c0, ["ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope", "link"]);
        // (`ip -j` leaves an empty object for each address that the scope filter hides.)
        const links = JSON.parse(r.stdout || "[]") as { addr_info?: { local?: string; tentative?: boolean }[] }[];
        const info = links[0]?.addr_info?.find((a) => a.local?.startsWith("fe80:") === true);
        if (info?.local !== undefined && info.tentative !== true) linkLocal = info.local;
        else await new Promise((res) => setTimeout(res, 100));
      }
      expect(linkLocal).toMatch(/^fe80:/);

      const url = `http://${lab.addr(n1)}:7410/api/v1/modules/db`;
      const tlsUrl = `https://${lab.addr(n1)}:7411/api/v1/modules/db`;
      const checkers = [
        { type: "process", name: "app-proc", cmdline: `^sleep 3600\\.${marker}$`, min: 1, max: 1 },
        { type: "interface", name: "hb-link", interface: "eth1" },
        { type: "ip", name: "vip", address: lab.spareAddr(0), interface: "eth0" },
        { type: "ip", name: "vip6", address: lab.spareAddr6(0) },
        { type: "tcp", name: "app-port", host: lab.addr(n1), port: 8080 },
        { type: "tcp", name: "app-port6", host: lab.addr6(n1), port: 8080 },
        { type: "ping", name: "gw", host: lab.addr(c0) },
        { type: "ping", name: "gw6", host: lab.addr6(c0) },
        { type: "ping", name: "gw6ll", host: `${linkLocal}%eth0` },
        { type: "custom", name: "script", shell: `echo checking; test -e ${files.flag}` },
        {
          type: "custom",
          name: "hang",
          shell: `if [ -e ${files.hang} ]; then sleep 60.${marker} & echo $$ $! >> ${files.pids}; sleep 60.${marker}; fi`,
          timeout: 500,
        },
        { type: "module", name: "db", module: "db", states: ["PRIM", "ALONE"], ready: true, source: { url, token: "s3cret" } },
        { type: "module", name: "db-badtoken", module: "db", states: ["PRIM", "ALONE"], source: { url, token: "wrong" } },
        { type: "module", name: "db-tls", module: "db", states: ["PRIM", "ALONE"], source: { url: tlsUrl, token: "s3cret", ca: cert } },
        { type: "module", name: "db-tls-untrusted", module: "db", states: ["PRIM", "ALONE"], source: { url: tlsUrl, token: "s3cret" } },
        { type: "split-brain", name: "witness", witnesses: [lab.addr(c0), lab.addr(c1)] },
        { type: "split-brain", name: "witness-tcp", witnesses: [lab.addr(n1)], method: "tcp", port: 7410 },
      ].map((c) => ({ ...FAST, ...c }));
      const host = lab.spawn(n0, [process.execPath, "--import", "tsx", "src/checkers/cli.ts"], {
        cwd: repo,
        env: { HOLDFAST_CHECKERS: JSON.stringify(checkers), HOLDFAST_CHECKERS_RESULTS: "1" },
      });
      f = { lab, n0, n1, c0, c1, host, marker, files, sleeper, app, control };
      log = new HostLog(host);
      await log.find((e) => e.event === "ready", 0, 20_000, "ready line");
    } catch (e) {
      await lab.destroy();
      f = undefined;
      throw e;
    }
  }, 60_000);

  afterAll(async () => {
    if (Object.keys(detections).length > 0) console.log(`checker detection times (ms, fault -> verdict): ${JSON.stringify(detections)}`);
    if (log !== undefined) {
      // Cost of one successful probe run, per checker (median wall time, ms).
      const by = new Map<string, number[]>();
      for (const e of log.events) {
        if (e.event !== "result" || e.ok !== true || e.checker === undefined || e.durationMs === undefined) continue;
        by.set(e.checker, [...(by.get(e.checker) ?? []), e.durationMs]);
      }
      const med = Object.fromEntries([...by].map(([k, v]) => [k, Number(v.sort((a, b) => a - b)[Math.floor(v.length / 2)]?.toFixed(1))]));
      console.log(`probe run time when ok (median ms): ${JSON.stringify(med)}`);
    }
    await f?.lab.destroy();
    if (f !== undefined) {
      expect(existsSync(`/run/netns/${f.lab.prefix}n0`)).toBe(false);
    }
  });

  it("every checker first reports ok; a wrong bearer token fails with 401", async () => {
    const oks = ["app-proc", "hb-link", "vip", "vip6", "app-port", "app-port6", "gw", "gw6", "gw6ll", "script", "hang", "db", "db-tls", "witness", "witness-tcp"];
    const got = await Promise.all(oks.map((c) => verdict(c, true, 10_000)));
    expect(got.map((v) => v.reason).join("\n")).toMatch(/connect .*:8080 ok in/);
    expect(got.find((v) => v.checker === "gw6")?.reason).toMatch(/^ping fd00:4844:.* reply in/);
    const bad = await verdict("db-badtoken", false);
    expect(bad.reason).toContain("answered 401");
    // Over TLS, a certificate the checker was not told to trust is refused.
    expect((await verdict("db-tls-untrusted", false)).reason).toMatch(/failed: .*self-signed certificate/i);
  });

  it("a checker host frozen 5 times for 400 ms (SIGSTOP, beyond the 300 ms timeouts) does not blame the checked things", async () => {
    const { host } = fx();
    const l = log as HostLog;
    const from = l.events.length;
    let resumed = 0;
    const freezes: [number, number][] = [];
    for (let i = 0; i < 5; i++) {
      const stoppedAt = Date.now();
      host.stop();
      await new Promise((r) => setTimeout(r, 400));
      resumed = Date.now();
      freezes.push([stoppedAt, resumed]);
      host.cont();
      await new Promise((r) => setTimeout(r, 50 + 37 * i));
    }
    // Every run that was in flight during the freeze reports within a second after it.
    await l.find((e) => e.event === "result" && e.at >= resumed + 1000, from, 5000, "results after the freeze");
    const failures = l.events
      .slice(from)
      .filter((e) => e.event === "result" && e.ok === false && !["db-badtoken", "db-tls-untrusted"].includes(e.checker ?? ""));
    // A run is blamed on a freeze when it overlaps one (its span is [at - durationMs, at], 100 ms of slack): none may
    // fail. A failed run clear of every freeze is the loaded machine's (a ping child slow to start), not the freeze's.
    const overlaps = (e: HostEvent) => freezes.some(([a, b]) => e.at - (e.durationMs ?? 0) < b + 100 && e.at > a - 100);
    const failed = failures.filter(overlaps);
    if (failures.length > failed.length) console.log(`failed runs clear of the freezes (load): ${failures.filter((e) => !overlaps(e)).map((e) => `${e.checker}: ${e.detail}`).join("; ")}`);
    const verdicts = l.events.slice(from).filter((e) => e.event === "verdict");
    expect(verdicts).toEqual([]);
    expect(failed.map((e) => `${e.checker}: ${e.detail}`)).toEqual([]);
  });

  it("process: a killed process fails the checker; a new one restores it", async () => {
    const { lab, n0, sleeper, marker } = fx();
    const t0 = Date.now();
    sleeper.kill("SIGKILL");
    const v = await verdict("app-proc", false);
    detected("process", t0, v);
    expect(v.reason).toMatch(/0 running, expected exactly 1 \(2\/2\)$/);
    expect(v.action).toBe("restart");
    const again = lab.spawn(n0, ["sleep", `3600.${marker}`]);
    expect((await verdict("app-proc", true)).reason).toContain(`1 running [${again.pid}]`);
  });

  it("interface: carrier lost (switch port down), then admin down", async () => {
    const { lab, n0 } = fx();
    let t0 = Date.now();
    await lab.linkDown(n0, 1, { side: "switch" });
    const v = await verdict("hb-link", false);
    detected("interface-carrier", t0, v);
    expect(v.reason).toContain("interface eth1 has no carrier");
    expect(v.action).toBe("wait");
    await lab.linkUp(n0, 1, { side: "switch" });
    await verdict("hb-link", true);
    t0 = Date.now();
    await lab.linkDown(n0, 1);
    const w = await verdict("hb-link", false);
    detected("interface-admin", t0, w);
    expect(w.reason).toContain("interface eth1 is administratively down");
    await lab.linkUp(n0, 1);
    await verdict("hb-link", true);
  });

  it("ip: a removed address (v4 and v6) fails the checker", async () => {
    const { lab, n0 } = fx();
    const t0 = Date.now();
    await must(lab, n0, `ip addr del ${lab.spareAddr(0)}/32 dev eth0 && ip addr del ${lab.spareAddr6(0)}/128 dev eth0`);
    const [v4, v6] = await Promise.all([verdict("vip", false), verdict("vip6", false)]);
    detected("ip", t0, v4);
    expect(v4.reason).toBe(`address ${lab.spareAddr(0)} absent on eth0 (2/2)`);
    expect(v6.reason).toBe(`address ${lab.spareAddr6(0)} absent (2/2)`);
    await must(lab, n0, `ip addr add ${lab.spareAddr(0)}/32 dev eth0`);
    await verdict("vip", true);
  });

  it("tcp: a closed port (server killed) is refused", async () => {
    const { app } = fx();
    const t0 = Date.now();
    app.kill("SIGKILL");
    const [v, v6] = await Promise.all([verdict("app-port", false), verdict("app-port6", false)]);
    detected("tcp", t0, v);
    expect(v.reason).toBe(`connect ${fx().lab.addr(fx().n1)}:8080 refused (2/2)`);
    expect(v6.reason).toBe(`connect [${fx().lab.addr6(fx().n1)}]:8080 refused (2/2)`);
  });

  it("ping and split-brain: an unreachable target (nft drop); a witness cut off, then all of them", async () => {
    const { lab, n0, c0, c1 } = fx();
    const t0 = Date.now();
    await lab.drop(n0, c0, { net: 0 });
    const [v4, v6] = await Promise.all([verdict("gw", false), verdict("gw6", false), verdict("gw6ll", false)]);
    detected("ping", t0, v4);
    expect(v4.reason).toBe(`ping:${lab.addr(c0)} timed out after 300 ms (2/2)`);
    expect(v6.action).toBe("wait");
    // One witness (c0) is cut off, the other (c1) still answers: the split-brain checker stays ok.
    const still = await resultAfter("witness", Date.now());
    expect(still).toMatchObject({ ok: true, detail: `witness answered: ping ${lab.addr(c1)} reply in ${still.detail.split(" reply in ")[1]}` });
    const t1 = Date.now();
    await lab.drop(n0, c1, { net: 0 });
    const w = await verdict("witness", false);
    detected("split-brain", t1, w);
    expect(w.kind).toBe("split-brain");
    expect(w.reason).toContain("no witness answered");
    await lab.heal();
    await Promise.all([verdict("gw", true), verdict("gw6", true), verdict("gw6ll", true), verdict("witness", true)]);
  });

  it("custom: a failing script", async () => {
    const { files } = fx();
    const t0 = Date.now();
    unlinkSync(files.flag);
    const v = await verdict("script", false);
    detected("custom-script", t0, v);
    expect(v.reason).toBe("custom:script exited with 1: checking (2/2)");
    writeFileSync(files.flag, "");
    await verdict("script", true);
  });

  it("custom: a hanging script is killed at its timeout, with its children", async () => {
    const { files, marker, lab, n0 } = fx();
    const t0 = Date.now();
    writeFileSync(files.hang, "");
    const v = await verdict("hang", false);
    detected("custom-hang", t0, v);
    expect(v.reason).toBe("custom:hang timed out after 500 ms (2/2)");
    rmSync(files.hang);
    await verdict("hang", true);
    // Every shell and background sleep that the hanging runs started is gone.
    const pids = readFileSync(files.pids, "utf8").trim().split(/\s+/).map(Number);
    expect(pids.length).toBeGreaterThanOrEqual(4);
    const left = await lab.sh(n0, `pgrep -f '^sleep 60\\.${marker}$' || true`);
    expect(left.stdout.trim()).toBe("");
    for (const pid of pids) {
      const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, "utf8") : "";
      expect(stat === "" || /\) [ZX] /.test(stat), `pid ${pid} still alive: ${stat}`).toBe(true);
    }
  });

  it("module: the dependent module's state flips (HTTP control API)", async () => {
    const { files } = fx();
    const t0 = Date.now();
    writeFileSync(files.state, JSON.stringify({ state: "SECOND", ready: true }));
    const [v, vt] = await Promise.all([verdict("db", false), verdict("db-tls", false)]);
    detected("module", t0, v);
    expect(v.reason).toBe("module db is SECOND ready, expected PRIM|ALONE and ready (2/2)");
    expect(vt.reason).toBe("module db is SECOND ready, expected PRIM|ALONE (2/2)");
    writeFileSync(files.state, JSON.stringify({ state: "ALONE", ready: true }));
    await Promise.all([verdict("db", true), verdict("db-tls", true)]);
    // The control API going away also fails it, and the TCP witness (the same port) is cut off.
    fx().control.kill("SIGKILL");
    expect((await verdict("db", false)).reason).toMatch(/GET .* failed: .*ECONNREFUSED/);
    expect((await verdict("witness-tcp", false)).reason).toBe(`no witness answered: connect ${fx().lab.addr(fx().n1)}:7410 refused (2/2)`);
  });
});

// The issue's acceptance: the expected *action* observed on a module. A farm module runs inside node n0 (a
// script spawned in the namespace: Module + CheckerGroup from the public API). Its start_both hook starts the
// application (a TCP server); a tcp checker (action restart) watches it and a ping checker (action wait)
// watches the gateway (c0). Killing the application makes the module restart it; cutting the gateway off
// sends the module to WAIT until the gateway answers again.
describe.skipIf(!isRoot)("checker verdicts drive a module (namespaces)", () => {
  let lab: Lab | undefined;
  let events: HostLog | undefined;

  afterAll(async () => {
    const mod = Object.entries(detections).filter(([k]) => k.startsWith("module-"));
    if (mod.length > 0) console.log(`module reaction times (ms): ${JSON.stringify(Object.fromEntries(mod))}`);
    await lab?.destroy();
  });

  it("kill the app -> restart; gateway unreachable -> WAIT, then UP", async () => {
    lab = await Lab.create({ nodes: 1, clients: 1 });
    const [n0] = lab.nodes as [LabHost];
    const [c0] = lab.clients as [LabHost];
    const appAddr = lab.addr(n0);
    const code = `
      import { spawn } from "node:child_process";
      import { Module, CheckerGroup } from ${JSON.stringify(join(repo, "src/index.ts"))};
      import { MemoryModuleStore, MemoryVipDriver } from ${JSON.stringify(join(repo, "src/testing/index.ts"))};
      const out = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
      let app;
      const hooks = {
        start_both: () => new Promise((resolve, reject) => {
          app = spawn(process.execPath, ["-e", 'require("net").createServer((s) => s.end()).listen(8080, process.env.ADDR, () => console.log("listening"))'],
            { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ADDR: ${JSON.stringify(appAddr)} } });
          app.stdout.once("data", () => { out({ event: "app", pid: app.pid }); resolve(); });
          app.once("error", reject);
        }),
        stop_both: async () => { app?.kill("SIGKILL"); },
      };
      const checkers = [
        { type: "tcp", name: "app-port", host: ${JSON.stringify(appAddr)}, port: 8080, action: "restart", interval: 200, timeout: 300, rise: 1, fall: 2 },
        { type: "ping", name: "gw", host: ${JSON.stringify(lab.addr(c0))}, action: "wait", interval: 200, timeout: 300, rise: 1, fall: 2 },
      ];
      const m = await Module.create({ name: "web", kind: "farm", hooks, checkers, restart: { maxloop: 3, loopInterval: 60000 } }, { nodeId: "n0", vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
      const group = new CheckerGroup(m.definition.checkers, "module web");
      m.attachCheckers(group);
      m.on("state", (s) => out({ event: "state", state: s.state, transient: s.transient, reason: s.reason, at: Date.now() }));
      m.on("record", (r) => out({ event: "record", text: r.text, at: Date.now() }));
      group.on("verdict", (v) => out({ event: "verdict", checker: v.checker, ok: v.ok, reason: v.reason, at: Date.now() }));
      group.start();
      await m.start();
    `;
    const p = lab.spawn(n0, [process.execPath, "--import", "tsx", "--input-type=module", "-e", code], { cwd: repo });
    events = new HostLog(p);
    const log = events;
    type E = HostEvent & { state?: string; transient?: boolean; reason?: string; text?: string; pid?: number };
    const up = (from: number) => log.find((e: E) => e.event === "state" && e.state === "UP" && e.transient === false, from, 20_000, "state UP");
    const [, iUp] = await up(0);
    const [firstApp] = (await log.find((e) => e.event === "app", 0, 5000, "app started")) as [E, number];
    // The checkers start with the module: wait until both saw the application and the gateway healthy.
    await log.find((e) => e.event === "verdict" && e.checker === "app-port" && e.ok === true, 0, 5000, "app-port ok");
    await log.find((e) => e.event === "verdict" && e.checker === "gw" && e.ok === true, 0, 5000, "gw ok");

    // 1. The application dies: the tcp checker fails (2 runs) -> restart -> start_both again -> UP.
    const t0 = Date.now();
    process.kill(firstApp.pid as number, "SIGKILL");
    const [decision, iDecision] = (await log.find((e: E) => e.event === "record" && /^checker app-port failed/.test(e.text ?? ""), iUp, 5000, "restart decision")) as [E, number];
    expect(decision.text).toMatch(/connect .*:8080 refused \(2\/2\).*-> restart \(1 of 3 in 1m\)$/);
    const [secondApp, iSecond] = (await log.find((e) => e.event === "app", iDecision, 5000, "app restarted")) as [E, number];
    expect(secondApp.pid).not.toBe(firstApp.pid);
    const [back, iBack] = await up(iSecond);
    detections["module-restart(kill->UP)"] = back.at - t0;

    // 2. The gateway becomes unreachable: the ping checker (action wait) sends the module to WAIT...
    const t1 = Date.now();
    await lab.drop(n0, c0);
    const [waiting, iWait] = (await log.find((e: E) => e.event === "state" && e.state === "WAIT" && e.transient === false, iBack, 5000, "state WAIT")) as [E, number];
    expect(waiting.reason).toMatch(/gw failed/);
    detections["module-wait(drop->WAIT)"] = waiting.at - t1;
    // ... and back to UP once it answers again, without using the restart budget.
    await lab.heal();
    await up(iWait);
    const restarts = log.events.filter((e: E) => e.event === "record" && /^checker .*-> restart/.test(e.text ?? ""));
    expect(restarts.map((e: E) => e.text)).toEqual([decision.text]);
    p.kill();
  });
});
