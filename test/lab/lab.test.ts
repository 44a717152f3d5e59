// The namespace lab against the real kernel: reachability on every network in IPv4 and IPv6, link and
// nftables faults, process control (stop/cont/kill of whole process groups), /sys/fs/bpf visibility, and
// teardown in every way a test run can end (destroy, failed create, SIGTERM, SIGKILL + stale clean-up).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { Lab, LabError, cleanStaleLabs, type LabHost } from "../../src/testing/index.js";

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
if (!isRoot) console.warn("test/lab/lab.test.ts: SKIPPED: the namespace lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");

const repo = resolve(import.meta.dirname, "../..");

function namespaces(): string[] {
  const r = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  return r.stdout
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n !== "");
}

function withPrefix(prefix: string): string[] {
  return namespaces().filter((n) => n.startsWith(prefix));
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return undefined;
  }
}

/** Polls `cond` every 20 ms until it holds or `ms` pass; returns whether it held. */
async function eventually(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!isRoot)(`namespace lab${isRoot ? "" : " (SKIPPED: needs root)"}`, () => {
  describe("a 3-node + 1-client lab on 2 networks", () => {
    let lab: Lab;
    let n0: LabHost, n1: LabHost, n2: LabHost, c0: LabHost;

    beforeAll(async () => {
      lab = await Lab.create({ nodes: 3, clients: 1, networks: 2 });
      [n0, n1, n2] = lab.nodes as [LabHost, LabHost, LabHost];
      c0 = lab.clients[0] as LabHost;
    });

    afterAll(async () => {
      const prefix = lab?.prefix;
      await lab?.destroy();
      if (prefix) expect(withPrefix(prefix)).toEqual([]);
    });

    /** Pings every target from `from` in one shell; returns the targets that answered. */
    async function reachable(from: LabHost, targets: string[], deadlineS = 2): Promise<Set<string>> {
      const script = targets.map((a) => `ping -n -c1 -w${deadlineS} ${a} >/dev/null 2>&1 && echo ok ${a}`).join(" & ") + "; wait";
      const r = await lab.sh(from, script);
      return new Set(r.stdout.split("\n").filter((l) => l.startsWith("ok ")).map((l) => l.slice(3)));
    }

    it("names everything with the prefix and uses only the lab address ranges", async () => {
      expect(lab.prefix).toMatch(/^hf[a-z0-9]{6}$/);
      expect(withPrefix(lab.prefix).sort()).toEqual([`${lab.prefix}c0`, `${lab.prefix}n0`, `${lab.prefix}n1`, `${lab.prefix}n2`, `${lab.prefix}sw`]);
      expect(existsSync(`/run/holdfast-lab/${lab.prefix}.pid`)).toBe(true);
      for (const h of lab.hosts) {
        for (const k of [0, 1]) {
          expect(lab.addr(h, k)).toMatch(/^198\.1[89]\./);
          expect(lab.addr6(h, k)).toMatch(/^fd00:4844::/);
        }
        const r = await lab.exec(h, ["ip", "-j", "addr", "show"]);
        expect(r.code).toBe(0);
        const ifs = JSON.parse(r.stdout) as { ifname: string; addr_info: { local: string; family: string; scope: string }[] }[];
        const global = ifs.flatMap((i) => i.addr_info.filter((a) => a.scope === "global").map((a) => `${i.ifname} ${a.local}`));
        expect(global.sort()).toEqual(
          [0, 1].flatMap((k) => [`${lab.iface(h, k)} ${lab.addr(h, k)}`, `${lab.iface(h, k)} ${lab.addr6(h, k)}`]).sort(),
        );
      }
      // The switch side: bridges with multicast snooping off, ports named with the prefix.
      const sw = spawnSync("ip", ["-n", lab.switchNs, "-d", "-j", "link", "show", "type", "bridge"], { encoding: "utf8" });
      const bridges = JSON.parse(sw.stdout) as { ifname: string; linkinfo: { info_data: { mcast_snooping: number } } }[];
      expect(bridges.map((b) => [b.ifname, b.linkinfo.info_data.mcast_snooping])).toEqual([
        [lab.bridge(0), 0],
        [lab.bridge(1), 0],
      ]);
      const keep = await lab.exec(n0, ["sysctl", "-n", "net.ipv6.conf.all.keep_addr_on_down"]);
      expect(keep.stdout.trim()).toBe("1");
    });

    it("every host reaches every other on both networks, IPv4 and IPv6", async () => {
      const results = await Promise.all(
        lab.hosts.map(async (from) => {
          const targets = lab.hosts.filter((h) => h !== from).flatMap((h) => [0, 1].flatMap((k) => [lab.addr(h, k), lab.addr6(h, k)]));
          const ok = await reachable(from, targets);
          return { from: from.name, missing: targets.filter((t) => !ok.has(t)), count: targets.length };
        }),
      );
      expect(results.map((r) => r.count)).toEqual([12, 12, 12, 12]);
      expect(results.filter((r) => r.missing.length > 0)).toEqual([]);
    });

    it("linkDown breaks reachability on that network only, linkUp restores it", async () => {
      const t0 = [lab.addr(n1, 0), lab.addr6(n1, 0)];
      const t1 = [lab.addr(n1, 1), lab.addr6(n1, 1)];
      await lab.linkDown(n1, 0);
      try {
        // (Through netlink: /sys/class/net in a lab process shows the host's interfaces, see lab.ts.)
        const state = await lab.exec(n1, ["ip", "-j", "link", "show", "dev", lab.iface(n1, 0)]);
        expect((JSON.parse(state.stdout) as { operstate: string }[])[0]?.operstate).toBe("DOWN");
        const ok = await reachable(n0, [...t0, ...t1], 1);
        expect([...ok].sort()).toEqual([...t1].sort());
      } finally {
        await lab.linkUp(n1, 0);
      }
      // Addresses were kept (keep_addr_on_down) and routes come back: poll with a deadline.
      expect(await eventually(async () => (await reachable(n0, [...t0, ...t1], 1)).size === 4, 5_000)).toBe(true);

      // The switch side (a pulled cable): the host sees no carrier.
      await lab.linkDown(c0, 1, { side: "switch" });
      try {
        const link = await lab.exec(c0, ["ip", "-j", "link", "show", "dev", lab.iface(c0, 1)]);
        const info = (JSON.parse(link.stdout) as { flags: string[]; operstate: string }[])[0];
        expect(info?.flags).toContain("NO-CARRIER");
        expect(info?.flags).toContain("UP");
        const ok = await reachable(n0, [lab.addr(c0, 0), lab.addr(c0, 1)], 1);
        expect([...ok]).toEqual([lab.addr(c0, 0)]);
      } finally {
        await lab.linkUp(c0, 1, { side: "switch" });
      }
      expect(await eventually(async () => (await reachable(n0, [lab.addr(c0, 1), lab.addr6(c0, 1)], 1)).size === 2, 5_000)).toBe(true);
    });

    it("drop with oneWay blocks a->b but not b->a, per network, and heal removes it (UDP, v4 and v6)", async () => {
      const port = 47_000;
      const rxCode = `const s=require("dgram").createSocket({type:"udp6"});s.on("message",(m)=>console.log("got "+m));s.bind(${port},"::",()=>console.log("listening"))`;
      const rxA = lab.spawn(n0, ["node", "-e", rxCode]);
      const rxB = lab.spawn(n1, ["node", "-e", rxCode]);
      await Promise.all([rxA.waitForLine(/listening/, 10_000), rxB.waitForLine(/listening/, 10_000)]);
      /** Sends each tag 3 times to `addr` from `from` (a v4 address goes as v4, a v6 one as v6). */
      const send = async (from: LabHost, sends: [string, string][]): Promise<void> => {
        const code = `const d=require("dgram");const l=${JSON.stringify(sends)};(async()=>{for(const [a,t] of l){const s=d.createSocket(a.includes(":")?"udp6":"udp4");for(let i=0;i<3;i++)await new Promise(r=>s.send(t,${port},a,r));s.close()}})()`;
        const r = await lab.exec(from, ["node", "-e", code]);
        expect(r.code, r.stderr).toBe(0);
      };
      try {
        await lab.drop(n0, n1, { net: 0, oneWay: true });
        expect(lab.drops()).toEqual(["n0->n1@0"]);
        await send(n0, [
          [lab.addr(n1, 0), "a>b:0:v4"],
          [lab.addr6(n1, 0), "a>b:0:v6"],
        ]);
        // A datagram from c0 sent afterwards arrives; the dropped ones, sent first, would have matched first.
        await send(c0, [[lab.addr(n1, 0), "c>b"]]);
        expect((await rxB.waitForLine(/got (a>b:0:v[46]|c>b)/, 5_000))[1]).toBe("c>b");
        // The same pair on the other network is untouched.
        await send(n0, [[lab.addr6(n1, 1), "a>b:1:v6"]]);
        expect((await rxB.waitForLine(/got (a>b:0:v[46]|a>b:1:v6)/, 5_000))[1]).toBe("a>b:1:v6");
        // The reverse direction works on the cut network, v4 and v6.
        await send(n1, [
          [lab.addr(n0, 0), "b>a:0:v4"],
          [lab.addr6(n0, 0), "b>a:0:v6"],
        ]);
        await rxA.waitForLine(/got b>a:0:v4/, 5_000);
        await rxA.waitForLine(/got b>a:0:v6/, 5_000);
        // The rule lives in n1's namespace and counted the dropped packets; the host has no such table.
        const nft = await lab.exec(n1, ["nft", "list", "table", "inet", "holdfast_lab"]);
        expect(nft.stdout).toMatch(/counter packets [1-9]/);
        expect(spawnSync("nft", ["list", "table", "inet", "holdfast_lab"]).status).not.toBe(0);

        // A drop survives someone flushing the namespace's ruleset between two changes.
        await lab.exec(n1, ["nft", "flush", "ruleset"]);
        await lab.drop(c0, n1, { oneWay: true });
        await lab.drop(n0, n1, { net: 0, oneWay: true });
        await send(n0, [[lab.addr(n1, 0), "a>b:0:again"]]);
        await send(n2, [[lab.addr(n1, 0), "n2>b"]]);
        expect((await rxB.waitForLine(/got (a>b:0:again|n2>b)/, 5_000))[1]).toBe("n2>b");
        expect(lab.drops().sort()).toEqual(["c0->n1@0", "c0->n1@1", "n0->n1@0"]);

        await lab.heal(n0, n1);
        expect(lab.drops()).toEqual(["c0->n1@0", "c0->n1@1"]);
        await lab.heal(c0);
        expect(lab.drops()).toEqual([]);
        await send(n0, [[lab.addr(n1, 0), "a>b:0:healed"]]);
        await rxB.waitForLine(/got a>b:0:healed/, 5_000);
      } finally {
        await lab.heal();
        rxA.kill();
        rxB.kill();
      }
    });

    it("drop both ways on every network cuts the pair completely, others unaffected; heal() restores", async () => {
      await lab.drop(n0, n2);
      try {
        expect(lab.drops().sort()).toEqual(["n0->n2@0", "n0->n2@1", "n2->n0@0", "n2->n0@1"]);
        const n2addrs = [0, 1].flatMap((k) => [lab.addr(n2, k), lab.addr6(n2, k)]);
        const n0addrs = [0, 1].flatMap((k) => [lab.addr(n0, k), lab.addr6(n0, k)]);
        expect((await reachable(n0, n2addrs, 1)).size).toBe(0);
        expect((await reachable(n2, n0addrs, 1)).size).toBe(0);
        expect((await reachable(n1, [...n0addrs, ...n2addrs])).size).toBe(8);
      } finally {
        await lab.heal();
      }
      expect(lab.drops()).toEqual([]);
      expect((await reachable(n0, [0, 1].flatMap((k) => [lab.addr(n2, k), lab.addr6(n2, k)]))).size).toBe(4);
    });

    it("loss drops a share of the frames at random, on one network only", async () => {
      /** Echo requests answered out of 200 sent 2 ms apart (the loss applies to the requests only). */
      const answered = async (addr: string): Promise<number> => {
        const r = await lab.exec(n0, ["ping", "-n", "-q", "-c", "200", "-i", "0.002", "-W", "1", addr]);
        return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? -1);
      };
      await lab.loss(n0, n2, 50, { net: 0, oneWay: true });
      try {
        expect(lab.drops()).toEqual(["n0->n2@0 50%"]);
        const lossy = await answered(lab.addr(n2, 0));
        expect(lossy).toBeGreaterThan(40); // binomial(200, 0.5): 100 +- 7; these bounds are > 8 sd away
        expect(lossy).toBeLessThan(160);
        expect(await answered(lab.addr(n2, 1))).toBe(200);
        await lab.loss(n0, n2, 0, { net: 0, oneWay: true });
        expect(lab.drops()).toEqual([]);
        expect(await answered(lab.addr6(n2, 0))).toBe(200);
      } finally {
        await lab.heal();
      }
    });

    it("spawn + waitForLine; stop() freezes the process, cont() resumes it, kill() ends it", async () => {
      const p = lab.spawn(n2, ["node", "-e", "let i=0;setInterval(()=>console.log('count '+(i++)),10)"]);
      let latest = -1;
      void (async () => {
        for await (const l of p.lines()) latest = Number(l.split(" ")[1]);
      })();
      await p.waitForLine(/count 5$/, 10_000);
      p.stop();
      expect(await eventually(() => procState(p.pid) === "T", 2_000)).toBe(true);
      // Let what was already in the pipe arrive: no new line for 150 ms.
      let seen = latest;
      let since = Date.now();
      expect(
        await eventually(() => {
          if (latest !== seen) [seen, since] = [latest, Date.now()];
          return Date.now() - since >= 150;
        }, 5_000),
      ).toBe(true);
      const frozen = latest;
      await delay(400); // an observation window: a running process prints ~40 lines in it
      expect(latest).toBe(frozen);
      p.cont();
      await p.waitForLine(new RegExp(`count ${frozen + 10}$`), 5_000);
      p.kill();
      const ex = await p.exited;
      expect(ex).toEqual({ code: null, signal: "SIGKILL" });
      // lines() replays from the start.
      const first: string[] = [];
      for await (const l of p.lines()) {
        first.push(l);
        if (first.length === 2) break;
      }
      expect(first).toEqual(["count 0", "count 1"]);
    });

    it("kill() and stop() reach the children in the process group (a node crash)", async () => {
      const p = lab.spawn(n1, ["bash", "-c", "sleep 300 & echo child $!; sleep 300 & echo child $!; wait"]);
      const c1 = Number((await p.waitForLine(/child (\d+)/, 5_000))[1]);
      const c2 = Number((await p.waitForLine(/child (\d+)/, 5_000))[1]);
      expect(alive(c1) && alive(c2)).toBe(true);
      p.stop();
      expect(await eventually(() => procState(c1) === "T" && procState(c2) === "T", 2_000)).toBe(true);
      p.kill();
      await p.exited;
      expect(await eventually(() => !alive(c1) && !alive(c2), 3_000)).toBe(true);
    });

    it("signalHost kills every process in the host's namespace, spawned by the lab or not", async () => {
      const r = await lab.sh(n2, "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!");
      const stray = Number(r.stdout.trim());
      const p = lab.spawn(n2, ["bash", "-c", "sleep 300 & echo child $!; wait"]);
      const child = Number((await p.waitForLine(/child (\d+)/, 5_000))[1]);
      const other = lab.spawn(n1, ["sleep", "300"]);
      expect(alive(stray) && alive(p.pid) && alive(child)).toBe(true);
      const hit = lab.signalHost(n2);
      expect(hit).toEqual(expect.arrayContaining([stray, p.pid]));
      expect(hit).not.toContain(child); // signalled once, through its group, not a second time by pid
      expect(hit).not.toContain(other.pid);
      await p.exited;
      expect(await eventually(() => !alive(stray) && !alive(child), 3_000)).toBe(true);
      expect(alive(other.pid)).toBe(true);
      other.kill();
    });

    it("waitForLine rejects on timeout and on exit, quoting the output", async () => {
      const p = lab.spawn(n0, ["bash", "-c", "echo hello; echo oops >&2; sleep 1.5; exit 7"]);
      await p.waitForLine(/hello/, 5_000);
      await expect(p.waitForLine(/never/, 100)).rejects.toThrow(/within 100 ms[\s\S]*hello/);
      const err = await p.waitForLine(/never/, 5_000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LabError);
      expect((err as LabError).code).toBe("HOLDFAST_LAB_PROCESS_EXITED");
      expect((err as LabError).message).toMatch(/code 7[\s\S]*oops/);
      expect(await p.exited).toEqual({ code: 7, signal: null });
    });

    it("exec reports exit codes, stdout and stderr, input and timeouts without throwing", async () => {
      const r = await lab.sh(c0, "echo out; echo err >&2; exit 3");
      expect(r).toEqual({ stdout: "out\n", stderr: "err\n", code: 3 });
      const cat = await lab.exec(c0, ["cat"], { input: "fed through stdin" });
      expect(cat).toEqual({ stdout: "fed through stdin", stderr: "", code: 0 });
      const t = Date.now();
      const slow = await lab.exec(c0, ["sleep", "30"], { timeoutMs: 200 });
      expect(slow.code).toBe(124);
      expect(Date.now() - t).toBeLessThan(5_000);
      // A background job holding stdout open does not hold the result back.
      const t2 = Date.now();
      const bg = await lab.sh(c0, "sleep 300 & echo started $!");
      expect(Date.now() - t2).toBeLessThan(5_000);
      expect(bg.code).toBe(0);
      const job = Number(/started (\d+)/.exec(bg.stdout)?.[1]);
      expect(alive(job)).toBe(true);
      expect(lab.signalHost(c0)).toContain(job);
      expect(await eventually(() => !alive(job), 3_000)).toBe(true);
      const missing = await lab.exec(c0, ["/nonexistent/tool"]);
      expect(missing.code).not.toBe(0);
      // The command ran in c0's namespace: it sees c0's address, not n0's.
      const ip = await lab.exec(c0, ["ip", "-br", "-4", "addr", "show", "dev", lab.iface(c0, 0)]);
      expect(ip.stdout).toContain(lab.addr(c0, 0));
      expect(ip.stdout).not.toContain(lab.addr(n0, 0));
    });

    it("/sys/fs/bpf is the host's bpf filesystem inside the namespaces", async () => {
      const probe = `/sys/fs/bpf/${lab.prefix}probe`;
      mkdirSync(probe);
      try {
        const p = lab.spawn(n0, ["bash", "-c", "stat -f -c %T /sys/fs/bpf; ls /sys/fs/bpf"]);
        await p.waitForLine(/^bpf_fs$/, 5_000);
        await p.waitForLine(new RegExp(`^${lab.prefix}probe$`), 5_000);
        expect((await p.exited).code).toBe(0);
      } finally {
        rmdirSync(probe);
      }
    });

    it("ownSysfs shows the namespace's own /sys/class/net and keeps the host's /sys/fs/bpf; binds give per-node paths", async () => {
      const probe = `/sys/fs/bpf/${lab.prefix}probe2`;
      mkdirSync(probe);
      const target = mkdtempSync(join(tmpdir(), "hf-lab-bind-"));
      try {
        // Without the option: the host's sysfs (its interfaces, not eth1 of the namespace with the lab's MAC).
        const plain = await lab.sh(n1, `cat /sys/class/net/${lab.iface(n1, 1)}/address 2>/dev/null || echo none`);
        expect(plain.stdout.trim()).not.toBe(lab.mac(n1, 1));
        const own = await lab.sh(n1, `cat /sys/class/net/${lab.iface(n1, 1)}/address; stat -f -c %T /sys/fs/bpf; ls /sys/fs/bpf`, { ownSysfs: true });
        expect(own.code, own.stderr).toBe(0);
        expect(own.stdout.split("\n").slice(0, 2)).toEqual([lab.mac(n1, 1), "bpf_fs"]);
        expect(own.stdout).toContain(`${lab.prefix}probe2`);
        // Two nodes write "the same" path; each lands in its own directory, the host's path stays empty.
        for (const h of [n0, n1]) {
          const r = await lab.sh(h, `echo ${h.name} > ${target}/who`, { binds: { [target]: lab.dir(h) } });
          expect(r.code, r.stderr).toBe(0);
          expect(readFileSync(join(lab.dir(h), "who"), "utf8")).toBe(`${h.name}\n`);
        }
        expect(existsSync(join(target, "who"))).toBe(false);
        // And the host's mounts are untouched.
        expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(target);
      } finally {
        rmdirSync(probe);
        rmSync(target, { recursive: true, force: true });
      }
    });

    it("respawn starts a killed process again with the same command and options", async () => {
      const p = lab.spawn(n2, ["bash", "-c", 'echo "pid $$ env $HF_X"; exec sleep 300'], { env: { HF_X: "kept" } });
      const first = await p.waitForLine(/pid (\d+) env (\w+)/, 5_000);
      p.kill();
      await p.exited;
      const q = lab.respawn(p);
      const again = await q.waitForLine(/pid (\d+) env (\w+)/, 5_000);
      expect(again[2]).toBe("kept");
      expect(again[1]).not.toBe(first[1]);
      expect(q.host).toBe(n2);
      q.kill();
    });

    it("rejects hosts and networks that are not in the lab", async () => {
      expect(() => lab.addr(n0, 2)).toThrow(RangeError);
      expect(() => lab.addr({ name: "n9", ns: `${lab.prefix}n9`, kind: "node", index: 9 })).toThrow(RangeError);
      await expect(lab.drop(n0, n0)).rejects.toThrow(RangeError);
      expect(lab.host("c0")).toBe(c0);
    });
  });

  it("an invalid option is rejected naming the field, and nothing is created", async () => {
    const before = namespaces();
    const err = await Lab.create({ nodes: 0, prefix: "hfbad000" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => [p.path, p.value])).toEqual([["nodes", 0]]);
    const err2 = await Lab.create({ nodes: 2, networks: 99, prefix: "Bad-Prefix", nodez: 1 } as never).catch((e: unknown) => e);
    expect((err2 as ConfigError).problems.map((p) => p.path)).toEqual(["networks", "prefix", "nodez"]);
    expect(namespaces()).toEqual(before);
    expect(existsSync("/run/holdfast-lab/hfbad000.pid")).toBe(false);
  });

  it("a create that fails halfway tears down what it made and rethrows", async () => {
    // A PATH without sysctl: the namespaces get created, then configuring the switch fails.
    const bin = mkdtempSync(join(tmpdir(), "hf-lab-path-"));
    for (const tool of ["ip", "nsenter", "sh", "mount"]) {
      const found = spawnSync("bash", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim();
      symlinkSync(found, join(bin, tool));
    }
    const savedPath = process.env.PATH;
    process.env.PATH = bin;
    let err: unknown;
    try {
      err = await Lab.create({ nodes: 2, prefix: "hfhalf00" }).catch((e: unknown) => e);
    } finally {
      process.env.PATH = savedPath;
      rmSync(bin, { recursive: true, force: true });
    }
    expect(err).toBeInstanceOf(LabError);
    expect((err as LabError).message).toMatch(/sysctl/);
    expect(withPrefix("hfhalf00")).toEqual([]);
    expect(existsSync("/run/holdfast-lab/hfhalf00.pid")).toBe(false);
  });

  it("never touches namespaces it did not create, even with a colliding prefix", async () => {
    // Not of the default "hf" + 6 form, so no stale clean-up (ours or a concurrent run's) takes it for a leftover.
    spawnSync("ip", ["netns", "add", "xmine00n1"]);
    try {
      const err = await Lab.create({ nodes: 2, prefix: "xmine00" }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message).toMatch(/xmine00n1/);
      expect(withPrefix("xmine00")).toEqual(["xmine00n1"]);
      expect(existsSync("/run/holdfast-lab/xmine00.pid")).toBe(false);
    } finally {
      spawnSync("ip", ["netns", "del", "xmine00n1"]);
    }
  });

  it("a 5-node + 1-client lab is created in well under the budget and destroy() removes everything", async () => {
    const t0 = performance.now();
    const lab = await Lab.create({ nodes: 5, clients: 1, ipv6: false });
    const createMs = performance.now() - t0;
    let stray = 0;
    try {
      const v6 = await lab.exec(lab.nodes[4] as LabHost, ["ip", "-6", "addr", "show", "scope", "global"]);
      expect(v6).toEqual({ stdout: "", stderr: "", code: 0 }); // ipv6: false
      const ping = await lab.exec(lab.clients[0] as LabHost, ["ping", "-n", "-c1", "-w2", lab.addr(lab.nodes[4] as LabHost)]);
      expect(ping.code).toBe(0);
      stray = Number((await lab.sh(lab.nodes[3] as LabHost, "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!")).stdout.trim());
      lab.spawn(lab.nodes[4] as LabHost, ["sleep", "300"]);
      expect(alive(stray)).toBe(true);
    } finally {
      const t1 = performance.now();
      await lab.destroy();
      console.log(`lab 5 nodes + 1 client: create ${createMs.toFixed(0)} ms, destroy ${(performance.now() - t1).toFixed(0)} ms`);
    }
    expect(createMs).toBeLessThan(3_000);
    expect(withPrefix(lab.prefix)).toEqual([]);
    expect(await eventually(() => !alive(stray), 3_000)).toBe(true);
    await lab.destroy(); // idempotent
  });

  describe("teardown when the test process dies", () => {
    const dir = mkdtempSync(join(tmpdir(), "hf-lab-child-"));
    const script = join(dir, "child.mts");
    writeFileSync(
      script,
      `import { Lab } from ${JSON.stringify(join(repo, "src/testing/lab.ts"))};\n` +
        `const lab = await Lab.create({ nodes: 2, clients: 1, prefix: process.argv[2], cleanStale: false });\n` +
        `const p = lab.spawn(lab.nodes[0], ["sleep", "300"]);\n` +
        `console.log("ready " + p.pid);\n` +
        `setInterval(() => {}, 1000);\n`,
    );
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    /** Starts a child process that creates a lab and reports the pid of a process it started in it. */
    async function childLab(prefix: string): Promise<{ pid: number; sleeper: number; done: Promise<number | null> }> {
      const child = spawn(process.execPath, ["--import", "tsx", script, prefix], { cwd: repo, stdio: ["ignore", "pipe", "inherit"] });
      const done = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      const sleeper = await new Promise<number>((res, rej) => {
        let out = "";
        child.stdout.on("data", (b: Buffer) => {
          out += b.toString();
          const m = /ready (\d+)/.exec(out);
          if (m) res(Number(m[1]));
        });
        void done.then(() => rej(new Error(`child exited before ready: ${out}`)));
      });
      expect(withPrefix(prefix).length).toBe(4);
      return { pid: child.pid as number, sleeper, done };
    }

    it("SIGTERM: the exit handler deletes the namespaces and kills the lab's processes", async () => {
      const c = await childLab("hfterm00");
      process.kill(c.pid, "SIGTERM");
      await c.done;
      expect(withPrefix("hfterm00")).toEqual([]);
      expect(existsSync("/run/holdfast-lab/hfterm00.pid")).toBe(false);
      expect(await eventually(() => !alive(c.sleeper), 3_000)).toBe(true);
    });

    it("SIGKILL: cleanStaleLabs() removes the abandoned lab (creator dead), sparing live ones", async () => {
      const live = await Lab.create({ nodes: 1, clients: 0 });
      try {
        const c = await childLab("hfkill00");
        process.kill(c.pid, "SIGKILL");
        await c.done;
        expect(withPrefix("hfkill00").length).toBe(4); // nothing could run in the killed process
        const deleted = await cleanStaleLabs();
        expect(deleted.every((n) => n.startsWith("hf"))).toBe(true);
        expect(withPrefix("hfkill00")).toEqual([]);
        expect(existsSync("/run/holdfast-lab/hfkill00.pid")).toBe(false);
        expect(await eventually(() => !alive(c.sleeper), 3_000)).toBe(true);
        expect(withPrefix(live.prefix).length).toBe(2); // a lab whose creator is alive is never touched
      } finally {
        await live.destroy();
      }
    });

    it("SIGKILL: scripts/lab-clean.sh removes the abandoned lab too", async () => {
      const c = await childLab("hfkill01");
      process.kill(c.pid, "SIGKILL");
      await c.done;
      const leftBehind = withPrefix("hfkill01");
      const r = spawnSync("bash", [join(repo, "scripts/lab-clean.sh")], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      // (A concurrent run's Lab.create may clean it first; when it did not, the script must report each one.)
      for (const ns of leftBehind) expect(r.stdout).toContain(`deleted ${ns}`);
      expect(withPrefix("hfkill01")).toEqual([]);
      expect(existsSync("/run/holdfast-lab/hfkill01.pid")).toBe(false);
      expect(await eventually(() => !alive(c.sleeper), 3_000)).toBe(true);
    });
  });
});
