/**
 * PacketFilter in a real namespace: automatic backend choice with its log line, forced backends, the
 * fallback when BPF is not permitted (a child process without CAP_BPF/CAP_SYS_ADMIN), stale state of a
 * crashed run found and replaced, everything removed on stop, option validation.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ConfigError } from "../../src/core/errors.js";
import { BUCKET_COUNT } from "../../src/core/buckets.js";
import { PacketFilter, MemoryFilterBackend, craftPacket } from "../../src/farm/filter/index.js";
import { Lab } from "../../src/testing/lab.js";

const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root) console.warn("skipping: PacketFilter lab tests need root");

const rules = [{ protocol: "tcp", port: 80, by: "address+port" }] as const;

describe("PacketFilter options", () => {
  it("reports the path and value of a bad option", () => {
    expect(() => new PacketFilter({ iface: "eth0", vips: ["198.18.0.100"], rules: [{ protocol: "tcp", port: "80" as unknown as number, by: "address" }] })).toThrow(ConfigError);
    expect(() => new PacketFilter({ iface: "eth0", vips: ["198.18.0.100"], rules: [], backend: "xdp" as "auto" })).toThrow(/backend/);
    expect(() => new PacketFilter({ iface: "eth0", vips: ["198.18.0.300"], rules: [] })).toThrow(RangeError);
  });

  it("runs on an in-memory backend with the same decisions", async () => {
    const mem = new MemoryFilterBackend({ config: { vips: ["198.18.0.100"], rules: [...rules] } });
    const f = new PacketFilter({ iface: "eth0", vips: ["198.18.0.100"], rules: [...rules], backend: mem });
    await f.start();
    expect(f.backend).toBe("memory");
    const syn = craftPacket({ src: "198.18.0.201", dst: "198.18.0.100", protocol: "tcp", sport: 5555, dport: 80 });
    expect(mem.deliver(syn).verdict).toBe("drop");
    await f.setOwned(new Set(Array.from({ length: BUCKET_COUNT }, (_, i) => i)));
    expect(mem.deliver(syn).verdict).toBe("pass");
    const c = await f.counters();
    expect(c.accepted.reduce((s, x) => s + x, 0)).toBe(1);
    expect(c.dropped.reduce((s, x) => s + x, 0)).toBe(1);
    await f.stop();
  });
});

describe.skipIf(!root)("PacketFilter backends in a namespace", () => {
  let lab: Lab;
  let ns: string;
  let vip: string;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1, clients: 0 });
    ns = `/run/netns/${lab.nodes[0]!.ns}`;
    vip = lab.spareAddr(0);
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  const tcFilters = async (): Promise<string> => (await lab.exec(lab.nodes[0]!, ["tc", "filter", "show", "dev", "eth0", "ingress"])).stdout;
  const nftTables = async (): Promise<string> => (await lab.exec(lab.nodes[0]!, ["nft", "list", "tables"])).stdout;

  it("chooses ebpf automatically, logs it, and removes its tc filter on stop", async () => {
    const logs: string[] = [];
    const f = new PacketFilter({ iface: "eth0", vips: [vip], rules: [...rules], netns: ns, log: (l) => logs.push(l) });
    const events: string[] = [];
    f.on("backend", (e) => events.push(e.name));
    await f.start();
    expect(f.backend).toBe("ebpf");
    expect(events).toEqual(["ebpf"]);
    expect(logs.join("\n")).toMatch(/using the ebpf backend on eth0 \(first choice/);
    expect(await tcFilters()).toContain("farm_ingress");
    await f.setOwned([1, 2, 3]);
    expect((await f.counters()).accepted).toHaveLength(BUCKET_COUNT);
    await f.stop();
    expect(await tcFilters()).not.toContain("farm_ingress");
  });

  it("replaces the tc program a crashed run left attached", async () => {
    const logs: string[] = [];
    const crashed = new PacketFilter({ iface: "eth0", vips: [vip], rules: [...rules], netns: ns, backend: "ebpf" });
    await crashed.start(); // never stopped: its program stays attached, as after a crash
    const f = new PacketFilter({ iface: "eth0", vips: [vip], rules: [...rules], netns: ns, backend: "ebpf", log: (l) => logs.push(l) });
    await f.start();
    expect(logs.join("\n")).toMatch(/replacing a stale farm tc program/);
    expect((await tcFilters()).match(/handle 0x4846/g)).toHaveLength(1);
    await f.stop();
    expect(await tcFilters()).not.toContain("farm_ingress");
  });

  it("falls back to nftables when ebpf is avoided, with a log line, and cleans up", async () => {
    const logs: string[] = [];
    const f = new PacketFilter({ iface: "eth0", vips: [vip], rules: [...rules], netns: ns, avoid: ["ebpf"], instance: "fb", log: (l) => logs.push(l) });
    await f.start();
    expect(f.backend).toBe("nftables");
    expect(logs.join("\n")).toMatch(/ebpf backend skipped \(disabled by the avoid option\)/);
    expect(logs.join("\n")).toMatch(/using the nftables backend on eth0 \(fallback after ebpf: disabled/);
    expect(await nftTables()).toContain("holdfast_fb");
    await f.stop();
    expect(await nftTables()).not.toContain("holdfast_fb");
  });

  it("forces the userspace backend", async () => {
    const f = new PacketFilter({ iface: "eth0", vips: [vip], rules: [...rules], netns: ns, backend: "userspace", instance: "us" });
    await f.start();
    expect(f.backend).toBe("userspace");
    await f.stop();
    const r = await lab.exec(lab.nodes[0]!, ["iptables", "-t", "mangle", "-S"]);
    expect(r.stdout).not.toContain("HF_us");
  });

  it("falls back to nftables in a process without CAP_BPF and CAP_SYS_ADMIN", async () => {
    const script = `
      import { PacketFilter } from ${JSON.stringify(resolve("src/farm/filter/index.ts"))};
      const f = new PacketFilter({ iface: "eth0", vips: [${JSON.stringify(vip)}], rules: [], instance: "nocap", log: (l) => console.log(l) });
      await f.start();
      console.log("BACKEND=" + f.backend);
      await f.stop();
    `;
    const dir = mkdtempSync(join(tmpdir(), "holdfast-nocap-"));
    const file = join(dir, "child.mts");
    writeFileSync(file, script);
    const out = await new Promise<string>((ok, fail) => {
      execFile(
        "nsenter",
        [`--net=${ns}`, "capsh", "--drop=cap_bpf,cap_sys_admin,cap_perfmon", "--", "-c", `exec ${resolve("node_modules/.bin/tsx")} ${file}`],
        { timeout: 60_000 },
        (err, stdout, stderr) => (err ? fail(new Error(`${err.message}\n${stderr}`)) : ok(stdout)),
      );
    }).finally(() => rmSync(dir, { recursive: true, force: true }));
    expect(out).toMatch(/ebpf backend not available on eth0 \(ebpf is not available: cannot load the farm tc program: bpf_object__load failed: EPERM/);
    expect(out).toMatch(/using the nftables backend on eth0 \(fallback after ebpf/);
    expect(out).toContain("BACKEND=nftables");
    expect(await nftTables()).not.toContain("holdfast_nocap");
  });
});
