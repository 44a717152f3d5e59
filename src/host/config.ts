/**
 * A node's configuration: the cluster (id, nodes with one address per heartbeat network, key, timing preset),
 * this node's id, the modules (each decoded by the module engine's own codec, checkers by the checker codec),
 * the module kinds' settings (`farm:` and `replication:`, by module name) and the directories. One io-ts codec
 * ({@link HOST_CONFIG_PROPS}) for what a program passes to {@link Host} in code and what the reference daemon
 * reads from its YAML file (which adds its control API's section). Decoded through `decodeOrThrow`: every
 * problem is reported with its dotted path and the value found there, e.g.
 * `cluster.nodes.1.addresses.0: expected an IPv4 or IPv6 address, got "x"`.
 *
 * ```yaml
 * cluster:
 *   id: shop
 *   keyFile: /etc/holdfast/cluster.key     # `holdfast keygen > /etc/holdfast/cluster.key` (or `key:` inline)
 *   preset: lan
 *   nodes:
 *     - { id: n1, addresses: [198.18.0.10, 198.18.1.10] }
 *     - { id: n2, addresses: [198.18.0.11, 198.18.1.11] }
 * node: n1
 * modules:
 *   - { name: web, kind: farm, vips: [198.18.0.100/32], hooks: { start_both: ./start.sh, stop_both: ./stop.sh } }
 * farm:
 *   web: { iface: eth0 }
 * logDir: /var/log/holdfast
 * stateDir: /var/lib/holdfast
 * ```
 *
 * Relative paths (key file, hook scripts, directories) are relative to the directory of the configuration
 * file, or to the working directory for a configuration built in code.
 */
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, relative, resolve } from "node:path";
import { BlockList, isIP } from "node:net";
import * as t from "io-ts";
import { parse as parseYaml } from "yaml";
import { CheckerConfigCodec } from "../checkers/config.js";
import { decodeOrThrow } from "../core/decode.js";
import { ConfigError, type ConfigProblem } from "../core/errors.js";
import { MembershipTimingOverridesC, validateMembershipOptions, type MembershipSettings } from "../core/membership/config.js";
import { HOOK_NAMES } from "../core/module/types.js";
import { resolveModule, strict, type ModuleDefinition, type ResolvedModule } from "../core/module/config.js";
import { optional } from "../core/module/codec-util.js";
import { parseKey } from "../runtime/crypto.js";
import { DEFAULT_HEARTBEAT_PORT } from "../runtime/membership.js";

/** Default directory of the per-module event logs. */
export const DEFAULT_LOG_DIR = "/var/log/holdfast";
/** Default directory of the persisted module states. */
export const DEFAULT_STATE_DIR = "/var/lib/holdfast";
/** Default TCP port of a mirror module's replication stream (each node's secondary listens on it). */
export const DEFAULT_REPLICATION_PORT = 7790;

// ---- codecs -------------------------------------------------------------------------------------

export const NonEmptyString = new t.Type<string, string, unknown>(
  "non-empty string",
  (u): u is string => typeof u === "string" && u.length > 0,
  (u, c) => (typeof u === "string" && u.length > 0 ? t.success(u) : t.failure(u, c)),
  t.identity,
);

export const Port = new t.Type<number, number, unknown>(
  "a port number in 1..65535",
  (u): u is number => typeof u === "number" && Number.isInteger(u) && u >= 1 && u <= 65535,
  (u, c) => (typeof u === "number" && Number.isInteger(u) && u >= 1 && u <= 65535 ? t.success(u) : t.failure(u, c)),
  t.identity,
);

/** The module codec's helpers, shared by every config codec: an object that refuses unknown keys, an optional field. */
export { strict, optional };

export const FarmEntryCodec = strict({
  iface: NonEmptyString,
  mac: optional(t.string),
  rules: optional(
    t.array(
      strict({
        protocol: t.keyof({ tcp: null, udp: null }),
        port: Port,
        by: t.keyof({ address: null, "address+port": null }),
      }),
    ),
  ),
  backend: optional(t.keyof({ auto: null, ebpf: null, nftables: null, userspace: null })),
  /** With `auto`: backends not to try (e.g. to measure a fallback). */
  avoid: optional(t.array(t.keyof({ ebpf: null, nftables: null, userspace: null }))),
  seed: optional(t.number),
});

export const ReplicationSyncCodec = strict({
  mode: t.literal("sync"),
  directories: t.array(strict({ path: NonEmptyString, backing: NonEmptyString })),
  keyFile: optional(NonEmptyString),
  port: optional(Port),
  nodes: optional(t.record(t.string, strict({ address: optional(NonEmptyString), port: optional(Port) }))),
  ackTimeoutMs: optional(t.number),
  reconnectMs: optional(t.number),
  disconnectGraceMs: optional(t.number),
  failoverFenceMs: optional(t.number),
  threads: optional(t.number),
  statsIntervalMs: optional(t.number),
  mountNamespace: optional(t.keyof({ private: null, host: null })),
  helperPath: optional(NonEmptyString),
  options: optional(t.record(t.string, t.unknown)),
  iface: optional(NonEmptyString),
});

const ReplicationNoneCodec = strict({ mode: t.literal("none") });

/** `mode` picks the branch, so a mistake is reported against that branch only (not against every union member). */
export const ReplicationEntryCodec = new t.Type<t.TypeOf<typeof ReplicationNoneCodec> | t.TypeOf<typeof ReplicationSyncCodec>, unknown, unknown>(
  "replication entry",
  (u): u is t.TypeOf<typeof ReplicationNoneCodec> | t.TypeOf<typeof ReplicationSyncCodec> => ReplicationNoneCodec.is(u) || ReplicationSyncCodec.is(u),
  (u, c) => {
    const mode = typeof u === "object" && u !== null ? (u as { mode?: unknown }).mode : undefined;
    if (mode === "none") return ReplicationNoneCodec.validate(u, c);
    if (mode === "sync") return ReplicationSyncCodec.validate(u, c);
    return t.failure(mode, [...c, { key: "mode", type: t.keyof({ none: null, sync: null }), actual: mode }]);
  },
  t.identity,
);

export const NodeEntryCodec = strict({
  /** Node id, unique in the cluster. */
  id: t.string,
  /** One address per heartbeat network, in the same order on every node. */
  addresses: t.array(t.string),
  /** Relative share of farm buckets. Default 1. */
  weight: optional(t.number),
  /**
   * Where this node's control API listens: `bind` overrides `api.bind` on that node (e.g. its LAN
   * address), `url` is what `holdfast --all` and the console use to reach it.
   * Default url: `http(s)://<bind or first address>:<api.port>`.
   */
  api: optional(strict({ bind: optional(NonEmptyString), url: optional(NonEmptyString) })),
});


/**
 * The fields of a node's configuration. The reference daemon's file has these and its `api` section; a program
 * passes the same object to {@link Host} (modules' hooks may then be functions).
 */
export const HOST_CONFIG_PROPS = {
  cluster: strict({
    /** Cluster name; heartbeats of another cluster are dropped. */
    id: NonEmptyString,
    /** File holding the cluster key (base64, from `holdfast keygen`), readable by root only. One of keyFile and key. */
    keyFile: optional(NonEmptyString),
    /** The cluster key itself (base64), e.g. from a secret store. One of keyFile and key; never logged. */
    key: optional(NonEmptyString),
    /** Timing preset: lan (default, detection < 1 s), wan, slow (SafeKit-compatible). */
    preset: optional(t.keyof({ lan: null, wan: null, slow: null })),
    /** Single timing overrides, ms. */
    timing: optional(MembershipTimingOverridesC),
    /** UDP heartbeat port on every heartbeat network. Default 4844. */
    port: optional(Port),
    nodes: t.array(NodeEntryCodec),
  }),
  /** This node's id (the daemon also takes `--node` / HOLDFAST_NODE). */
  node: optional(NonEmptyString),
  /** The modules this node runs (module engine definitions; hooks are script paths, or functions in code). */
  modules: optional(t.array(t.unknown)),
  /** Start every module when the host starts (as SafeKit's boot start). Default true. */
  autostart: optional(t.boolean),
  /**
   * Replication of mirror modules, by module name. `none`: the module has no replicated data (the app keeps its
   * state elsewhere), so its secondary is in sync as soon as it sees the primary. `sync`: directories replicated
   * synchronously by the FUSE helper ({@link ReplicationSyncEntry}).
   */
  replication: optional(t.record(t.string, ReplicationEntryCodec)),
  /** Farm modules, by module name: where the VIP lives and how the load is balanced ({@link FarmEntry}). */
  farm: optional(t.record(t.string, FarmEntryCodec)),
  /** Per-module event logs (`<module>.jsonl` + `<module>.log`) and `membership.jsonl`. Default /var/log/holdfast. */
  logDir: optional(NonEmptyString),
  /** Persisted module states (generation, up-to-date flag, restart history). Default /var/lib/holdfast. */
  stateDir: optional(NonEmptyString),
};

export const HostConfigCodec = strict(HOST_CONFIG_PROPS, "holdfast node config");
/** `T` with every field that may be undefined made optional, at every depth (what a caller writes). */
export type Written<T> = T extends readonly (infer U)[]
  ? readonly Written<U>[]
  : T extends (...args: never[]) => unknown
    ? T
    : T extends object
      ? { readonly [K in keyof T as undefined extends T[K] ? never : K]: Written<T[K]> } & { readonly [K in keyof T as undefined extends T[K] ? K : never]?: Written<T[K]> }
      : T;

/** A node's configuration as written (YAML, JSON, or an object in code, where hooks may be functions). */
export type HostConfigInput = Written<Omit<t.TypeOf<typeof HostConfigCodec>, "modules">> & { readonly modules?: readonly (ModuleDefinition | ResolvedModule)[] };

/** A farm module's data path (module `vips` are the farm's VIPs). */
export type FarmEntry = t.TypeOf<typeof FarmEntryCodec>;

/**
 * A mirror module's replicated data (`replication: { <module>: { mode: sync, ... } }`), decoded, with paths
 * made absolute and each of the module's two nodes resolved to its replication endpoint.
 *
 * ```yaml
 * replication:
 *   db:
 *     mode: sync
 *     directories: [{ path: /srv/db, backing: /srv/db.backing }]
 *     keyFile: /etc/holdfast/db.key          # default: the cluster key file
 *     nodes: { n1: {}, n2: { address: 198.18.1.11 } }   # needed when the cluster has more than 2 nodes
 *     ackTimeoutMs: 1000
 * ```
 */
export interface ReplicationSyncEntry {
  readonly mode: "sync";
  /**
   * The replicated directory: `path` is where the application sees it on the primary (a FUSE mount; an empty
   * directory, created when missing), `backing` holds the real files on each node (any directory on any local
   * file system, also the system disk; not inside `path`). One per module for now: put the module's data under
   * one directory.
   */
  readonly directories: readonly { readonly path: string; readonly backing: string }[];
  /** File whose bytes authenticate the replication stream (>= 16 bytes, the same on both nodes). Default: the cluster key file. */
  readonly keyFile: string;
  /**
   * The module's two nodes and where each one's secondary listens for the primary: `address` (default: the
   * node's first heartbeat address), `port` (default `port` of this section, else 7790).
   */
  readonly nodes: Readonly<Record<string, { readonly host: string; readonly port: number }>>;
  /**
   * Bounded wait for the secondary's ack before the primary goes degraded (ALONE: changes go to the extent
   * log), ms. Default 2000 (FileReplicator's): a busy secondary's fsync fits; the app stalls at most this long
   * when the secondary dies.
   */
  readonly ackTimeoutMs?: number;
  /** Delay between the primary's connection attempts while degraded, ms. Default 500. */
  readonly reconnectMs?: number;
  /** See {@link MirrorDriverOptions.disconnectGraceMs}. Default 3000. */
  readonly disconnectGraceMs?: number;
  /** See {@link MirrorDriverOptions.failoverFenceMs}. Default 300 when the module has a split-brain checker, else 0. */
  readonly failoverFenceMs?: number;
  /** FUSE worker threads of the primary helper. Default 16. */
  readonly threads?: number;
  /** Interval of the replication counters (metrics, API), ms. Default 1000 here. */
  readonly statsIntervalMs?: number;
  /** Mount in a private mount namespace (`private`, default; hooks run inside it) or the daemon's (`host`). */
  readonly mountNamespace?: "private" | "host";
  /** The replication helper binary. Default: the committed prebuilt. */
  readonly helperPath?: string;
  /** Further FileReplicator options, passed as they are (it validates them). */
  readonly options?: Readonly<Record<string, unknown>>;
  /** The interface that carries the module's VIP on the primary. Default: the one routing the VIP's subnet. */
  readonly iface?: string;
}

/** A node of the cluster, as configured. */
export interface HostNode {
  readonly id: string;
  readonly addresses: readonly string[];
  readonly weight: number;
  /** Where this node's control API listens, when it runs one (the reference daemon). */
  readonly api?: { readonly bind?: string | undefined; readonly url?: string | undefined } | undefined;
}

/** A decoded, checked node configuration with every default filled in and every path made absolute. */
export interface HostConfig {
  /** Absolute path of the file it was read from ("" when built in code). */
  readonly file: string;
  readonly clusterId: string;
  /** This node's id; undefined when neither the configuration nor the caller named it (allowed for checks and the CLI). */
  readonly nodeId: string | undefined;
  readonly nodes: readonly HostNode[];
  /** The cluster key file, or undefined when the key is given inline. */
  readonly keyFile: string | undefined;
  /** The cluster key's text (read from keyFile, or inline); never logged. */
  readonly key: () => string;
  readonly preset: "lan" | "wan" | "slow";
  readonly timing: MembershipSettings["timing"];
  readonly heartbeatPort: number;
  readonly modules: readonly ResolvedModule[];
  readonly autostart: boolean;
  readonly replication: Readonly<Record<string, { readonly mode: "none" } | ReplicationSyncEntry>>;
  readonly farm: Readonly<Record<string, FarmEntry>>;
  readonly logDir: string;
  readonly stateDir: string;
  /** The raw decoded input (for support snapshots, with secrets redacted). */
  readonly raw: Record<string, unknown>;
  /**
   * What is accepted but probably a mistake (a VIP in no node's subnet), in the shape of the problems of a
   * ConfigError; `holdfast config check` prints them. Empty when there is nothing to say.
   */
  readonly warnings: readonly ConfigProblem[];
}

export interface DecodeOptions {
  /** This node's id; overrides the configuration's `node`. */
  readonly nodeId?: string;
  /** Also check the files the configuration names (key file, hook scripts). Default true. */
  readonly checkFiles?: boolean;
  /** The file the configuration came from: relative paths are relative to its directory. */
  readonly file?: string;
  /** Further top-level fields a caller adds to the codec (the daemon's `api`), decoded at once with the rest. */
  readonly extraProps?: t.Props;
  /** Checks of the extra fields, run with the others so that every problem is reported at once. */
  readonly checkExtra?: (raw: Record<string, unknown>, abs: (p: string) => string, problems: ConfigProblem[]) => void;
  /** What to call the configuration in errors. Default "holdfast node config". */
  readonly what?: string;
}

/** Parses the text of a configuration file (`.json`, or YAML for anything else). */
export function parseConfigText(text: string, file: string, what = "holdfast node config"): unknown {
  const json = file.endsWith(".json");
  try {
    return json ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(what, [{ path: "", value: undefined, expected: `valid ${json ? "JSON" : "YAML"} (${(e as Error).message.split("\n")[0]})` }]);
  }
}

/** Reads a configuration file (JSON or YAML) and decodes it with {@link decodeHostConfig}. */
export function loadHostConfig(file: string, opts: Omit<DecodeOptions, "file"> = {}): HostConfig {
  const abs = resolve(file);
  const what = opts.what ?? "holdfast node config";
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (e) {
    throw new ConfigError(what, [{ path: "", value: abs, expected: `a readable file (${(e as Error).message})` }]);
  }
  return decodeHostConfig(parseConfigText(text, abs, what), { ...opts, file: abs });
}

const BRAND = Symbol.for("holdfast.HostConfig");

/** True for an object {@link decodeHostConfig} returned. */
export function isHostConfig(x: unknown): x is HostConfig {
  return typeof x === "object" && x !== null && (x as Record<symbol, unknown>)[BRAND] === true;
}

/**
 * Decodes and checks a node's configuration. Structure problems are reported all at once; then the cross-checks
 * (membership rules, modules, checkers, kinds' settings, files) are reported all at once. Throws a
 * {@link ConfigError} listing every problem.
 */
export function decodeHostConfig(input: unknown, opts: DecodeOptions = {}): HostConfig {
  const what = opts.what ?? "holdfast node config";
  const file = opts.file ?? "";
  const base = file === "" ? process.cwd() : dirname(file);
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const codec = opts.extraProps ? strict({ ...HOST_CONFIG_PROPS, ...opts.extraProps }, what) : HostConfigCodec;
  const raw = decodeOrThrow(codec, input, what) as t.TypeOf<typeof HostConfigCodec> & Record<string, unknown>;
  const problems: ConfigProblem[] = [];
  const checkFiles = opts.checkFiles ?? true;
  const nodeId = opts.nodeId ?? raw.node;

  // Membership rules (node ids, addresses, timing), with paths mapped onto this layout.
  let timing = undefined as MembershipSettings["timing"] | undefined;
  try {
    const s = validateMembershipOptions({
      clusterId: raw.cluster.id,
      nodeId: nodeId ?? raw.cluster.nodes[0]?.id ?? "",
      nodes: raw.cluster.nodes.map((n) => ({ id: n.id, addresses: n.addresses, ...(n.weight !== undefined ? { weight: n.weight } : {}) })),
      ...(raw.cluster.preset ? { preset: raw.cluster.preset } : {}),
      ...(raw.cluster.timing ? { timing: raw.cluster.timing } : {}),
    });
    timing = s.timing;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const p of e.problems) {
      if (p.path === "nodeId") {
        if (nodeId !== undefined) problems.push({ ...p, path: opts.nodeId !== undefined ? "(--node)" : "node" });
      } else problems.push({ ...p, path: `cluster.${p.path}` });
    }
  }
  // Two nodes (or two networks) with one address: heartbeats would be sent to the wrong node.
  const addressAt = new Map<string, string>();
  raw.cluster.nodes.forEach((n, i) =>
    n.addresses.forEach((a, j) => {
      const key = canonicalIp(a);
      if (key === undefined) return;
      const prev = addressAt.get(key);
      if (prev !== undefined) problems.push({ path: `cluster.nodes.${i}.addresses.${j}`, value: a, expected: `an address not already used by ${prev}` });
      else addressAt.set(key, `cluster.nodes.${i}.addresses.${j}`);
    }),
  );

  // The key: a file, or inline.
  const keyFile = raw.cluster.keyFile === undefined ? undefined : abs(raw.cluster.keyFile);
  if ((keyFile === undefined) === (raw.cluster.key === undefined)) {
    problems.push({ path: "cluster.keyFile", value: keyFile, expected: "exactly one of cluster.keyFile and cluster.key (the cluster key, from `holdfast keygen`)" });
  } else if (raw.cluster.key !== undefined) {
    try {
      parseKey(raw.cluster.key, "cluster.key");
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  } else if (keyFile !== undefined && checkFiles) {
    try {
      parseKey(readFileSync(keyFile, "utf8"), "cluster.keyFile");
      ownerOnly(keyFile, "cluster.keyFile", problems);
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems.map((p) => ({ ...p, value: keyFile })));
      else problems.push({ path: "cluster.keyFile", value: keyFile, expected: `a readable key file (${(e as Error).message})` });
    }
  }

  // Modules: hook script paths made absolute, then the module engine's own codec; checkers by the checker codec.
  const rawModules = (raw.modules ?? []).map((m) => absolutiseHooks(m, abs));
  const modules: ResolvedModule[] = [];
  const moduleIndex: number[] = [];
  const names = new Map<string, number>();
  rawModules.forEach((m, i) => {
    try {
      const r = resolveModule(m as ModuleDefinition);
      const prev = names.get(r.name);
      if (prev !== undefined) problems.push({ path: `modules.${i}.name`, value: r.name, expected: `a name not already used by modules.${prev}` });
      names.set(r.name, i);
      modules.push(r);
      moduleIndex.push(i);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems.map((p) => ({ ...p, path: p.path === "" ? `modules.${i}` : `modules.${i}.${p.path}` })));
    }
  });
  const ids = new Set(raw.cluster.nodes.map((n) => n.id));
  const warnings: ConfigProblem[] = [];
  const vipAt = new Map<string, string>();
  modules.forEach((m, k) => {
    const i = moduleIndex[k] as number;
    m.vips.forEach((vip, j) => {
      // One VIP in two modules: both would add it and remove it, each for its own reasons.
      const key = canonicalIp(vip.split("/")[0] ?? "");
      const prev = key === undefined ? undefined : vipAt.get(key);
      if (prev !== undefined) problems.push({ path: `modules.${i}.vips.${j}`, value: vip, expected: `a VIP not already used by ${prev}` });
      else if (key !== undefined) vipAt.set(key, `modules.${i}.vips.${j}`);
      if (!vipNearNodes(vip, raw.cluster.nodes))
        warnings.push({ path: `modules.${i}.vips.${j}`, value: vip, expected: "a VIP whose subnet holds an address of one of cluster.nodes (else it answers only where it is routed to the nodes)" });
    });
    try {
      const decoded = decodeOrThrow(t.type({ checkers: t.array(CheckerConfigCodec) }), { checkers: m.checkers }, `module ${m.name} checkers`);
      if (checkFiles)
        decoded.checkers.forEach((c, n) => {
          if (c.type === "split-brain" && c.keyFile !== undefined) {
            const path = abs(c.keyFile);
            try {
              ownerOnly(path, `modules.${i}.checkers.${n}.keyFile`, problems);
            } catch (err) {
              problems.push({ path: `modules.${i}.checkers.${n}.keyFile`, value: path, expected: `a readable key file (${(err as Error).message})` });
            }
          }
        });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(...e.problems.map((p) => ({ ...p, path: `modules.${i}.${p.path}` })));
    }
    if (m.mirror.defaultPrimary !== undefined && !ids.has(m.mirror.defaultPrimary))
      problems.push({ path: `modules.${i}.mirror.defaultPrimary`, value: m.mirror.defaultPrimary, expected: "the id of one of cluster.nodes" });
    if (checkFiles) {
      for (const [hook, spec] of Object.entries(m.hooks)) {
        const path = typeof spec === "string" ? spec : typeof spec === "object" && spec !== null && "path" in spec ? spec.path : undefined;
        if (path === undefined) continue;
        try {
          accessSync(path, constants.X_OK);
        } catch {
          const where = typeof spec === "string" ? `modules.${i}.hooks.${hook}` : `modules.${i}.hooks.${hook}.path`;
          problems.push({ path: where, value: path, expected: "an executable file" });
        }
      }
    }
  });

  for (const [name, f] of Object.entries(raw.farm ?? {})) {
    const m = modules.find((x) => x.name === name);
    if (!m || m.kind !== "farm") problems.push({ path: `farm.${name}`, value: f, expected: "the name of a farm module of this config" });
    else if (m.vips.length === 0) problems.push({ path: `farm.${name}`, value: f, expected: `module ${name} to have vips (the farm's VIPs)` });
  }
  const replication: Record<string, { readonly mode: "none" } | ReplicationSyncEntry> = {};
  for (const [name, r] of Object.entries(raw.replication ?? {})) {
    const m = modules.find((x) => x.name === name);
    if (!m || m.kind !== "mirror") problems.push({ path: `replication.${name}`, value: r, expected: "the name of a mirror module of this config" });
    if (r.mode === "none") {
      replication[name] = { mode: "none" };
      continue;
    }
    const e = resolveSyncEntry(name, r, raw, keyFile, abs, problems);
    if (e) replication[name] = e;
    // This node runs the module (it is in this configuration's modules), so it must be one of the module's two nodes.
    if (e && nodeId !== undefined && ids.has(nodeId) && !(nodeId in e.nodes))
      problems.push({ path: `replication.${name}.nodes`, value: r.nodes, expected: `to include this node (${nodeId}), which runs module ${name}` });
    if (e && checkFiles) {
      try {
        if (statSync(e.keyFile).size < 16) problems.push({ path: `replication.${name}.keyFile`, value: e.keyFile, expected: "a key file of at least 16 bytes" });
        // The cluster key file (the default) is reported once, at cluster.keyFile.
        else if (e.keyFile !== keyFile) ownerOnly(e.keyFile, `replication.${name}.keyFile`, problems);
      } catch (err) {
        problems.push({ path: `replication.${name}.keyFile`, value: e.keyFile, expected: `a readable key file (${(err as Error).message})` });
      }
    }
  }
  opts.checkExtra?.(raw, abs, problems);
  if (problems.length > 0) throw new ConfigError(what, problems);

  const inlineKey = raw.cluster.key;
  const cfg: HostConfig = {
    file,
    clusterId: raw.cluster.id,
    nodeId,
    nodes: raw.cluster.nodes.map((n) => ({ id: n.id, addresses: n.addresses, weight: n.weight ?? 1, ...(n.api ? { api: n.api } : {}) })),
    keyFile,
    key: () => inlineKey ?? readFileSync(keyFile as string, "utf8"),
    preset: raw.cluster.preset ?? "lan",
    timing: timing as MembershipSettings["timing"],
    heartbeatPort: raw.cluster.port ?? DEFAULT_HEARTBEAT_PORT,
    modules,
    autostart: raw.autostart ?? true,
    replication,
    farm: raw.farm ?? {},
    logDir: abs(raw.logDir ?? DEFAULT_LOG_DIR),
    stateDir: abs(raw.stateDir ?? DEFAULT_STATE_DIR),
    raw,
    warnings,
  };
  // Enumerable, so that a caller's extension of the object (`{ ...cfg, api }`) stays a decoded configuration.
  (cfg as unknown as Record<symbol, unknown>)[BRAND] = true;
  return cfg;
}

/** Checks a `mode: sync` replication entry and resolves its paths and endpoints (problems go to `problems`). */
function resolveSyncEntry(
  name: string,
  r: t.TypeOf<typeof ReplicationSyncCodec>,
  raw: t.TypeOf<typeof HostConfigCodec>,
  clusterKeyFile: string | undefined,
  abs: (p: string) => string,
  problems: ConfigProblem[],
): ReplicationSyncEntry | undefined {
  const at = `replication.${name}`;
  const n0 = problems.length;
  if (r.directories.length !== 1)
    problems.push({ path: `${at}.directories`, value: r.directories, expected: "exactly one directory (one replicated directory per module for now: put the module's data under it)" });
  const directories = r.directories.map((d, i) => {
    const path = abs(d.path);
    const backing = abs(d.backing);
    const inside = (a: string, b: string) => a === b || !relative(b, a).startsWith("..");
    if (inside(path, backing) || inside(backing, path))
      problems.push({ path: `${at}.directories.${i}.backing`, value: d.backing, expected: `a directory neither inside nor containing path ${path}` });
    return { path, backing };
  });
  const all = raw.cluster.nodes.map((n) => n.id);
  const named = r.nodes ? Object.keys(r.nodes) : all;
  if (!r.nodes && all.length !== 2) problems.push({ path: `${at}.nodes`, value: undefined, expected: `the module's two nodes (the cluster has ${all.length}: ${all.join(", ")})` });
  else if (named.length !== 2) problems.push({ path: `${at}.nodes`, value: r.nodes, expected: "exactly two nodes (a mirror module runs on two nodes)" });
  for (const id of named) if (!all.includes(id)) problems.push({ path: `${at}.nodes.${id}`, value: r.nodes?.[id], expected: "the id of one of cluster.nodes" });
  for (const k of ["ackTimeoutMs", "reconnectMs", "disconnectGraceMs", "failoverFenceMs", "threads", "statsIntervalMs"] as const) {
    const v = r[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= (k === "failoverFenceMs" ? 0 : 1)))
      problems.push({ path: `${at}.${k}`, value: v, expected: k === "failoverFenceMs" ? "an integer >= 0" : "an integer >= 1" });
  }
  const keyFile = r.keyFile !== undefined ? abs(r.keyFile) : clusterKeyFile;
  if (keyFile === undefined) problems.push({ path: `${at}.keyFile`, value: undefined, expected: "a key file for the replication stream (needed when the cluster key is given inline)" });
  const nodes: Record<string, { host: string; port: number }> = {};
  for (const id of named) {
    const own = r.nodes?.[id];
    const host = own?.address ?? raw.cluster.nodes.find((n) => n.id === id)?.addresses[0];
    if (host === undefined) continue;
    if (isIP(host) === 0) problems.push({ path: `${at}.nodes.${id}.address`, value: host, expected: "an IPv4 or IPv6 address" });
    nodes[id] = { host, port: own?.port ?? r.port ?? DEFAULT_REPLICATION_PORT };
  }
  if (problems.length > n0 || keyFile === undefined) return undefined;
  return {
    mode: "sync",
    directories,
    keyFile,
    nodes,
    ...(r.ackTimeoutMs !== undefined ? { ackTimeoutMs: r.ackTimeoutMs } : {}),
    ...(r.reconnectMs !== undefined ? { reconnectMs: r.reconnectMs } : {}),
    ...(r.disconnectGraceMs !== undefined ? { disconnectGraceMs: r.disconnectGraceMs } : {}),
    ...(r.failoverFenceMs !== undefined ? { failoverFenceMs: r.failoverFenceMs } : {}),
    ...(r.threads !== undefined ? { threads: r.threads } : {}),
    ...(r.statsIntervalMs !== undefined ? { statsIntervalMs: r.statsIntervalMs } : {}),
    ...(r.mountNamespace !== undefined ? { mountNamespace: r.mountNamespace } : {}),
    ...(r.helperPath !== undefined ? { helperPath: abs(r.helperPath) } : {}),
    ...(r.options !== undefined ? { options: r.options } : {}),
    ...(r.iface !== undefined ? { iface: r.iface } : {}),
  };
}

/**
 * Refuses a key file that its group or others may read or write (as ssh does with a private key): the key
 * authenticates heartbeats, the replication stream or arbiter claims, so whoever reads it can forge them.
 * Throws when the file cannot be stat'ed (the caller reports that as unreadable).
 */
function ownerOnly(file: string, path: string, problems: ConfigProblem[]): void {
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0)
    problems.push({ path, value: file, expected: `a key file only its owner may read (mode ${mode.toString(8).padStart(4, "0")} here: chmod 600 ${file})` });
}

/** A canonical text of an IP literal (IPv6 compressed and lower-case), or undefined when it is none. */
function canonicalIp(a: string): string | undefined {
  const family = isIP(a);
  if (family === 4) return a;
  if (family !== 6) return undefined;
  try {
    return new URL(`http://[${a}]/`).hostname;
  } catch {
    return undefined;
  }
}

/**
 * True when the VIP's subnet holds an address of one of the nodes, or when the VIP has a host prefix (/32,
 * /128): such a VIP names no subnet, the interface and its routes decide, so there is nothing to compare.
 */
function vipNearNodes(vip: string, nodes: readonly { readonly addresses: readonly string[] }[]): boolean {
  const [addr = "", len = ""] = vip.split("/");
  const family = isIP(addr);
  if (family === 0 || (family === 4 ? Number(len) >= 32 : Number(len) >= 128)) return true;
  const type = family === 4 ? "ipv4" : "ipv6";
  const list = new BlockList();
  try {
    list.addSubnet(addr, Number(len), type);
  } catch {
    return true;
  }
  return nodes.some((n) => n.addresses.some((a) => isIP(a) === family && list.check(a, type)));
}

/** Makes the script paths of a module's hooks absolute (relative to the configuration file). */
function absolutiseHooks(m: unknown, abs: (p: string) => string): unknown {
  if (typeof m !== "object" || m === null || Array.isArray(m)) return m;
  const hooks = (m as { hooks?: unknown }).hooks;
  if (typeof hooks !== "object" || hooks === null || Array.isArray(hooks)) return m;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(hooks)) {
    if (!(HOOK_NAMES as readonly string[]).includes(k)) out[k] = v;
    else if (typeof v === "string" && v.length > 0) out[k] = abs(v);
    else if (typeof v === "object" && v !== null && typeof (v as { path?: unknown }).path === "string" && (v as { path: string }).path.length > 0)
      out[k] = { ...v, path: abs((v as { path: string }).path) };
    else out[k] = v;
  }
  return { ...m, hooks: out };
}

/** The node this host runs as; throws a ConfigError naming the option when none was given. */
export function requireNodeId(cfg: Pick<HostConfig, "nodeId">, what = "holdfast node config"): string {
  if (cfg.nodeId === undefined) throw new ConfigError(what, [{ path: "node", value: undefined, expected: "this node's id (in the configuration, or --node / HOLDFAST_NODE)" }]);
  return cfg.nodeId;
}
