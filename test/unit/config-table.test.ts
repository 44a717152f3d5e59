/**
 * Malformed configurations, one per row, each with the exact path-precise problems it must get: through the
 * daemon's `decodeConfig` (file checks on) and, for the node's part, through the SDK's `decodeHostConfig`
 * (the same codec, so the same problems). A typo must never pass silently: `checker:` for `checkers:` would run
 * the module with no health checks, `hooktimeout` would leave the 60 s default.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checkConfigFileFully, decodeConfig } from "../../examples/daemon/config.js";
import { resolveModule } from "../../src/core/module/config.js";
import { validateMembershipOptions } from "../../src/core/membership/config.js";
import { Module } from "../../src/runtime/module.js";
import { MemoryModuleStore, MemoryVipDriver } from "../../src/testing/index.js";
import { ConfigError } from "../../src/core/errors.js";
import { decodeHostConfig } from "../../src/host/config.js";
import { generateKey } from "../../src/runtime/crypto.js";

const dir = mkdtempSync(join(tmpdir(), "hf-config-table-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const KEY = join(dir, "cluster.key");
const LOOSE = join(dir, "loose.key");
const REPL = join(dir, "repl.key");
const HOOK = join(dir, "start.sh");
const PLAIN = join(dir, "plain.sh");
const CERT = join(dir, "api.crt");
writeFileSync(KEY, generateKey() + "\n", { mode: 0o600 });
writeFileSync(REPL, "r".repeat(32), { mode: 0o600 });
writeFileSync(LOOSE, generateKey() + "\n");
chmodSync(LOOSE, 0o644); // whatever the umask
writeFileSync(HOOK, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
writeFileSync(PLAIN, "#!/bin/sh\nexit 0\n", { mode: 0o644 });
writeFileSync(CERT, "not checked here\n", { mode: 0o644 });
writeFileSync(join(dir, "short.key"), "short", { mode: 0o600 });
const MISSING = join(dir, "missing.key");

type Config = Record<string, unknown>;
const nodes = [
  { id: "a", addresses: ["198.18.0.10"] },
  { id: "b", addresses: ["198.18.0.11"] },
];
const base = (over: Config = {}): Config => ({ cluster: { id: "c", keyFile: KEY, nodes }, node: "a", ...over });
const withCluster = (over: Config): Config => base({ cluster: { id: "c", keyFile: KEY, nodes, ...over } });
const web = (over: Config = {}): Config => ({ name: "web", kind: "farm", vips: ["198.18.0.100/24"], ...over });
const db = (over: Config = {}): Config => ({ name: "db", kind: "mirror", vips: ["198.18.0.200/24"], ...over });
const mods = (...modules: Config[]): Config => base({ modules });
const dbSync = (over: Config = {}): Config =>
  base({ modules: [db()], replication: { db: { mode: "sync", directories: [{ path: "/srv/db", backing: "/srv/db.backing" }], ...over } } });

interface Row {
  readonly name: string;
  readonly input: Config;
  /** `path: expected` of every problem, in order. */
  readonly problems: readonly string[];
  /** What `decodeHostConfig` says, when it differs (its top level has no `api`). */
  readonly host?: readonly string[];
  /** Only the daemon's decoder knows the field (its `api` section). */
  readonly daemonOnly?: boolean;
}

const ROWS: readonly Row[] = [
  // ---- module definitions: unknown keys at every level
  { name: "module: checker instead of checkers", input: mods(web({ checker: [{ type: "tcp", host: "127.0.0.1", port: 80 }] })), problems: ["modules.0.checker: no such option: known options here are name, kind, vips, hooks, hookTimeout, restart, checkers, mirror, hookEnv"] },
  { name: "module: hooktimeout instead of hookTimeout", input: mods(web({ hooktimeout: "5s" })), problems: ["modules.0.hooktimeout: no such option: known options here are name, kind, vips, hooks, hookTimeout, restart, checkers, mirror, hookEnv"] },
  { name: "module: vip instead of vips", input: mods({ name: "web", kind: "farm", vip: ["198.18.0.100/24"] }), problems: ["modules.0.vip: no such option: known options here are name, kind, vips, hooks, hookTimeout, restart, checkers, mirror, hookEnv"] },
  { name: "hooks: unknown hook name", input: mods(web({ hooks: { start_bth: HOOK } })), problems: ["modules.0.hooks.start_bth: no such option: known options here are prestart, start_prim, stop_prim, start_second, stop_second, start_both, stop_both, poststop"] },
  { name: "hooks: unknown key of a script hook", input: mods(web({ hooks: { start_both: { path: HOOK, timout: "5s" } } })), problems: ["modules.0.hooks.start_both.timout: no such option: known options here are path, args, timeout, env"] },
  { name: "hooks: unknown key of a function hook", input: mods(web({ hooks: { start_both: { fn: () => undefined, timeot: 5 } } })), problems: ["modules.0.hooks.start_both.timeot: no such option: known options here are fn, timeout, env"] },
  { name: "hooks: a number", input: mods(web({ hooks: { start_both: 42 } })), problems: ["modules.0.hooks.start_both: script path, { path, args?, timeout? }, function or { fn, timeout? }"] },
  { name: "hooks: a script hook without path", input: mods(web({ hooks: { start_both: { args: ["x"] } } })), problems: ["modules.0.hooks.start_both.path: non-empty string"] },
  { name: "restart: unknown key", input: mods(web({ restart: { maxloops: 2 } })), problems: ["modules.0.restart.maxloops: no such option: known options here are maxloop, loopInterval"] },
  { name: "mirror options: unknown key", input: mods(db({ mirror: { defaultprimary: "a" } })), problems: ["modules.0.mirror.defaultprimary: no such option: known options here are defaultPrimary, peerWait"] },
  { name: "checker: unknown key", input: mods(web({ checkers: [{ type: "tcp", host: "127.0.0.1", port: 80, intervall: "1s" }] })), problems: ["modules.0.checkers.0.intervall: no such option: known options here are type, name, action, interval, timeout, rise, fall, initial, host, port, localAddress"] },
  { name: "checker: unknown key of a module checker's source", input: mods(web({ checkers: [{ type: "module", module: "x", states: ["UP"], source: { url: "http://127.0.0.1:9453", tokn: "t" } }] })), problems: ["modules.0.checkers.0.source.tokn: no such option: known options here are url, token, ca"] },
  // ---- module definitions: values
  { name: "module: bad name", input: mods(web({ name: "bad name!" })), problems: ["modules.0.name: module name ([A-Za-z0-9_.-]{1,64})"] },
  { name: "module: bad kind", input: mods(web({ kind: "cluster" })), problems: ["modules.0.kind: \"farm\" | \"mirror\""] },
  { name: "module: VIP without prefix length", input: mods(web({ vips: ["198.18.0.100"] })), problems: ["modules.0.vips.0: IP address with prefix length (e.g. 198.18.0.100/24)"] },
  { name: "module: hookTimeout not a duration", input: mods(web({ hookTimeout: "soon" })), problems: ["modules.0.hookTimeout: duration (ms, or a string like \"5s\")"] },
  { name: "module: negative maxloop", input: mods(web({ restart: { maxloop: -1 } })), problems: ["modules.0.restart.maxloop: non-negative integer"] },
  { name: "module: mirror options on a farm module", input: mods(web({ mirror: { defaultPrimary: "a" } })), problems: ["modules.0.mirror: no mirror options on a farm module"] },
  { name: "module: defaultPrimary not a node", input: mods(db({ mirror: { defaultPrimary: "z" } })), problems: ["modules.0.mirror.defaultPrimary: the id of one of cluster.nodes"] },
  { name: "modules: one name twice", input: mods(web(), web({ vips: ["198.18.0.101/24"] })), problems: ["modules.1.name: a name not already used by modules.0"] },
  { name: "modules: one VIP in two modules", input: mods(web(), db({ vips: ["198.18.0.100/24"] })), problems: ["modules.1.vips.0: a VIP not already used by modules.0.vips.0"] },
  { name: "modules: one VIP in two modules, other prefix and IPv6 spelling", input: mods(web({ vips: ["fd00:4844::100/64"] }), db({ vips: ["FD00:4844:0:0::100/128"] })), problems: ["modules.1.vips.0: a VIP not already used by modules.0.vips.0"] },
  { name: "hooks: a script that is not executable", input: mods(web({ hooks: { start_both: PLAIN } })), problems: ["modules.0.hooks.start_both: an executable file"] },
  { name: "hooks: a script that does not exist", input: mods(web({ hooks: { stop_both: { path: join(dir, "nope.sh") } } })), problems: ["modules.0.hooks.stop_both.path: an executable file"] },
  // ---- checkers
  { name: "checker: unknown type", input: mods(web({ checkers: [{ type: "http", url: "http://x" }] })), problems: ["modules.0.checkers.0.type: one of process, interface, ip, tcp, ping, custom, module, split-brain"] },
  { name: "checker: port out of range", input: mods(web({ checkers: [{ type: "tcp", host: "127.0.0.1", port: 70000 }] })), problems: ["modules.0.checkers.0.port: TCP port (1..65535)"] },
  { name: "checker: process without a target", input: mods(web({ checkers: [{ type: "process", min: 1 }] })), problems: ["modules.0.checkers.0: exactly one of process, cmdline, pid, pidFile (got none)"] },
  { name: "checker: ping of a name", input: mods(web({ checkers: [{ type: "ping", host: "router" }] })), problems: ["modules.0.checkers.0.host: IPv4 or IPv6 address"] },
  { name: "checker: bad action", input: mods(web({ checkers: [{ type: "tcp", host: "127.0.0.1", port: 80, action: "explode" }] })), problems: ["modules.0.checkers.0.action: \"restart\" | \"stopstart\" | \"failover\" | \"stop\" | \"wait\""] },
  { name: "checker: arbiter without keyFile", input: mods(db({ checkers: [{ type: "split-brain", arbiter: "198.18.0.1:7799", node: "a" }] })), problems: ["modules.0.checkers.0.keyFile: keyFile (required with arbiter)"] },
  { name: "checker: arbiter key file readable by others", input: mods(db({ checkers: [{ type: "split-brain", arbiter: "198.18.0.1:7799", node: "a", keyFile: LOOSE }] })), problems: [`modules.0.checkers.0.keyFile: a key file only its owner may read (mode 0644 here: chmod 600 ${dir}/loose.key)`] },
  // ---- cluster
  { name: "cluster: unknown key", input: withCluster({ colour: "red" }), problems: ["cluster.colour: no such option: known options here are id, keyFile, key, preset, timing, port, nodes"] },
  { name: "cluster: timing override misspelt", input: withCluster({ timing: { pulsems: 50 } }), problems: ["cluster.timing.pulsems: no such option: known options here are pulseMs, tickMs, lossTimeoutMs, stallMs, maxLocalHealth, healthDecayMs"] },
  { name: "cluster: tick slower than the pulse", input: withCluster({ timing: { pulseMs: 100, tickMs: 200 } }), problems: ["cluster.timing.tickMs: at most pulseMs (100)"] },
  { name: "cluster: bad preset", input: withCluster({ preset: "fast" }), problems: ["cluster.preset: \"lan\" | \"wan\" | \"slow\""] },
  { name: "cluster: port 0", input: withCluster({ port: 0 }), problems: ["cluster.port: a port number in 1..65535"] },
  { name: "cluster: node entry with a misspelt key", input: withCluster({ nodes: [{ id: "a", adresses: ["198.18.0.10"] }] }), problems: ["cluster.nodes.0.addresses: Array<string>", "cluster.nodes.0.adresses: no such option: known options here are id, addresses, weight, api"] },
  { name: "cluster: node api with a misspelt key", input: withCluster({ nodes: [{ id: "a", addresses: ["198.18.0.10"], api: { bnd: "198.18.0.10" } }, nodes[1]] }), problems: ["cluster.nodes.0.api.bnd: no such option: known options here are bind, url"] },
  { name: "cluster: two nodes with one address", input: withCluster({ nodes: [{ id: "a", addresses: ["198.18.0.10"] }, { id: "b", addresses: ["198.18.0.10"] }] }), problems: ["cluster.nodes.1.addresses.0: an address not already used by cluster.nodes.0.addresses.0"] },
  { name: "cluster: two nodes with one IPv6 address, spelt differently", input: withCluster({ nodes: [{ id: "a", addresses: ["fd00::a"] }, { id: "b", addresses: ["FD00:0::A"] }] }), problems: ["cluster.nodes.1.addresses.0: an address not already used by cluster.nodes.0.addresses.0"] },
  { name: "cluster: one node id twice", input: withCluster({ nodes: [{ id: "a", addresses: ["198.18.0.10"] }, { id: "a", addresses: ["198.18.0.11"] }] }), problems: ["cluster.nodes.1.id: a unique node id"] },
  { name: "cluster: not an address", input: withCluster({ nodes: [{ id: "a", addresses: ["x"] }, nodes[1]] }), problems: ["cluster.nodes.0.addresses.0: an IPv4 or IPv6 address"] },
  { name: "cluster: networks differ between nodes", input: withCluster({ nodes: [{ id: "a", addresses: ["198.18.0.10", "198.18.1.10"] }, nodes[1]] }), problems: ["cluster.nodes.1.addresses: 2 addresses, as nodes.0"] },
  { name: "cluster: keyFile and key", input: withCluster({ key: generateKey() }), problems: ["cluster.keyFile: exactly one of cluster.keyFile and cluster.key (the cluster key, from `holdfast keygen`)"] },
  { name: "cluster: key file readable by others", input: withCluster({ keyFile: LOOSE }), problems: [`cluster.keyFile: a key file only its owner may read (mode 0644 here: chmod 600 ${dir}/loose.key)`] },
  { name: "cluster: key file missing", input: withCluster({ keyFile: MISSING }), problems: [`cluster.keyFile: a readable key file (ENOENT: no such file or directory, open '${dir}/missing.key')`] },
  { name: "cluster: inline key not a key", input: base({ cluster: { id: "c", key: "short", nodes } }), problems: ["cluster.key: at least 32 bytes of key material (use `holdfast keygen`)"] },
  { name: "node: not one of the cluster's nodes", input: base({ node: "z" }), problems: ["node: the id of one of `nodes`"] },
  // ---- top level, kinds' sections
  { name: "top level: modlues", input: base({ modlues: [] }), problems: ["modlues: no such option: known options here are cluster, node, modules, autostart, replication, farm, logDir, stateDir, api"], host: ["modlues: no such option: known options here are cluster, node, modules, autostart, replication, farm, logDir, stateDir"] },
  { name: "top level: logdir", input: base({ logdir: "/tmp/x" }), problems: ["logdir: no such option: known options here are cluster, node, modules, autostart, replication, farm, logDir, stateDir, api"], host: ["logdir: no such option: known options here are cluster, node, modules, autostart, replication, farm, logDir, stateDir"] },
  { name: "farm: misspelt iface", input: base({ modules: [web()], farm: { web: { ifac: "eth0" } } }), problems: ["farm.web.iface: non-empty string", "farm.web.ifac: no such option: known options here are iface, mac, rules, backend, avoid, seed"] },
  { name: "farm: rule with a misspelt key", input: base({ modules: [web()], farm: { web: { iface: "eth0", rules: [{ protocol: "tcp", prot: 80, by: "address" }] } } }), problems: ["farm.web.rules.0.port: a port number in 1..65535", "farm.web.rules.0.prot: no such option: known options here are protocol, port, by"] },
  { name: "farm: no such module", input: base({ modules: [web()], farm: { wbe: { iface: "eth0" } } }), problems: ["farm.wbe: the name of a farm module of this config"] },
  { name: "replication: misspelt threads", input: dbSync({ trheads: 4 }), problems: ["replication.db.trheads: no such option: known options here are mode, directories, keyFile, port, nodes, ackTimeoutMs, reconnectMs, disconnectGraceMs, failoverFenceMs, threads, statsIntervalMs, mountNamespace, helperPath, options, iface"] },
  { name: "replication: unknown mode", input: dbSync({ mode: "async" }), problems: ["replication.db.mode: \"none\" | \"sync\""] },
  { name: "replication: directory with a misspelt key", input: dbSync({ directories: [{ path: "/srv/db", backnig: "/srv/b" }] }), problems: ["replication.db.directories.0.backing: non-empty string", "replication.db.directories.0.backnig: no such option: known options here are path, backing"] },
  { name: "replication: key file readable by others", input: dbSync({ keyFile: LOOSE }), problems: [`replication.db.keyFile: a key file only its owner may read (mode 0644 here: chmod 600 ${dir}/loose.key)`] },
  { name: "replication: key file too short", input: dbSync({ keyFile: KEY.replace("cluster", "short") }), problems: ["replication.db.keyFile: a key file of at least 16 bytes"] },
  // ---- the daemon's api section
  { name: "api: misspelt port", input: base({ api: { prot: 9000 } }), problems: ["api.prot: no such option: known options here are bind, port, tokens, tokensFile, tls, socket"], daemonOnly: true },
  { name: "api: token entry with a misspelt key", input: base({ api: { tokens: [{ name: "ops", rol: "admin", sha256: "a".repeat(64) }] } }), problems: ["api.tokens.0.role: \"monitor\" | \"control\" | \"admin\"", "api.tokens.0.rol: no such option: known options here are name, role, sha256"], daemonOnly: true },
  { name: "api: tls with a misspelt key", input: base({ api: { tls: { cert: CERT, keyfile: KEY } } }), problems: ["api.tls.key: non-empty string", "api.tls.keyfile: no such option: known options here are cert, key"], daemonOnly: true },
  { name: "api: tls key readable by others", input: base({ api: { tls: { cert: CERT, key: LOOSE } } }), problems: [`api.tls.key: a key file only its owner may read (mode 0644 here: chmod 600 ${dir}/loose.key)`], daemonOnly: true },
];

function problemsOf(decode: () => unknown): string[] {
  try {
    decode();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.problems.map((p) => `${p.path}: ${p.expected}`);
  }
  return [];
}

describe("config table: every malformed configuration gets its exact problems", () => {
  it("has at least 40 rows", () => expect(ROWS.length).toBeGreaterThanOrEqual(40));
  for (const row of ROWS) {
    it(row.name, () => {
      expect(problemsOf(() => decodeConfig(row.input, { file: join(dir, "holdfast.yaml") }))).toEqual(row.problems);
      if (!row.daemonOnly) expect(problemsOf(() => decodeHostConfig(row.input, { file: join(dir, "holdfast.yaml") }))).toEqual(row.host ?? row.problems);
    });
  }
});

describe("warnings: accepted, but probably a mistake", () => {
  it("a VIP whose subnet holds no node's address is a warning at its path; a host-prefix VIP names no subnet", () => {
    const cfg = decodeConfig(mods(web({ vips: ["10.9.9.100/24", "198.18.0.101/24", "10.9.9.101/32"] }), db({ vips: ["fd00:1::100/64"] })));
    expect(cfg.warnings.map((w) => `${w.path}: ${w.expected}, got ${String(w.value)}`)).toEqual([
      "modules.0.vips.0: a VIP whose subnet holds an address of one of cluster.nodes (else it answers only where it is routed to the nodes), got 10.9.9.100/24",
      "modules.1.vips.0: a VIP whose subnet holds an address of one of cluster.nodes (else it answers only where it is routed to the nodes), got fd00:1::100/64",
    ]);
    expect(decodeHostConfig(mods(web())).warnings).toEqual([]);
  });

  it("config check gets the warnings of a valid file, and only the problems of an invalid one", () => {
    const file = join(dir, "warn.json");
    writeFileSync(file, JSON.stringify(mods(web({ vips: ["10.9.9.100/24"] }))));
    expect(checkConfigFileFully(file)).toMatchObject({ problems: [], warnings: [{ path: "modules.0.vips.0", value: "10.9.9.100/24" }] });
    writeFileSync(file, JSON.stringify(mods(web({ vips: ["10.9.9.100/24"], checker: [] }))));
    expect(checkConfigFileFully(file)).toMatchObject({ problems: [{ path: "modules.0.checker" }], warnings: [] });
  });
});

describe("exact codecs and definitions in code", () => {
  it("a resolved module (function hooks, defaults filled) resolves again to the same, and Module.create takes it", async () => {
    const fn = () => undefined;
    const once = resolveModule({ name: "db", kind: "mirror", hooks: { start_prim: fn, stop_prim: { fn, timeout: 5000 }, start_second: { path: HOOK, args: ["x"] } }, checkers: [{ type: "tcp", host: "127.0.0.1", port: 80, onProbe: fn }] });
    const twice = resolveModule(once);
    expect(twice).toEqual(once);
    expect(twice.hooks.start_prim).toBe(fn);
    const m = await Module.create(once, { nodeId: "a", vip: new MemoryVipDriver(), store: new MemoryModuleStore() });
    expect(m.definition).toEqual(once);
  });

  it("an unknown key of a definition in code is refused too", () => {
    expect(problemsOf(() => resolveModule({ name: "web", kind: "farm", checker: [] }))).toEqual([
      "checker: no such option: known options here are name, kind, vips, hooks, hookTimeout, restart, checkers, mirror, hookEnv",
    ]);
  });

  it("membership timing overrides in code are exact", () => {
    expect(problemsOf(() => validateMembershipOptions({ clusterId: "c", nodeId: "a", nodes, timing: { pulsems: 50 } }))).toEqual([
      "timing.pulsems: no such option: known options here are pulseMs, tickMs, lossTimeoutMs, stallMs, maxLocalHealth, healthDecayMs",
    ]);
    expect(validateMembershipOptions({ clusterId: "c", nodeId: "a", nodes, timing: { pulseMs: 200 } }).timing).toMatchObject({ pulseMs: 200, lossTimeoutMs: 600 });
  });
});
