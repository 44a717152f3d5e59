/**
 * Checker configuration: one io-ts codec for the eight checker types, with defaults, decoded through
 * {@link decodeOrThrow} so that a wrong entry is reported with its path and value
 * (`invalid checker: port: expected TCP port (1..65535), got 70000`), and a factory that turns a decoded
 * entry into a running {@link CheckerRunner}.
 *
 * The shape is flat, as in a module definition's `checkers:` list (YAML or code):
 *
 * ```yaml
 * checkers:
 *   - { type: tcp, host: 198.18.0.10, port: 8080, action: restart }
 *   - { type: ping, host: 198.18.0.1, interval: 250ms, fall: 4, action: wait }
 *   - { type: split-brain, witnesses: [198.18.0.1, 198.18.0.2] }
 * ```
 *
 * Unknown keys are errors (a typo such as `intervall` must not silently keep the default).
 */
import * as t from "io-ts";
import { isLeft } from "fp-ts/lib/Either.js";
import { isIP } from "node:net";
import type { CheckerAction } from "../core/checker.js";
import { decodeOrThrow } from "../core/decode.js";
import { unknownOptionMessage } from "../core/module/config.js";
import type { HysteresisState } from "../core/hysteresis.js";
import type { Clock } from "../runtime/clock.js";
import { CustomProbe, type CustomCheckFunction } from "./custom.js";
import { InterfaceProbe } from "./interface.js";
import { IpProbe } from "./ip.js";
import { ModuleProbe, type ModuleHttpSource, type ModuleStatusSource } from "./module.js";
import { PingProbe } from "./ping.js";
import type { Probe } from "./probe.js";
import { ProcessProbe } from "./process.js";
import { CheckerRunner } from "./runner.js";
import { SplitBrainProbe } from "./split-brain.js";
import { ARBITER_DEFAULTS, ArbiterProbe } from "./arbiter.js";
import { readFileSync } from "node:fs";
import { parseKey } from "../runtime/crypto.js";
import { TcpProbe } from "./tcp.js";

/**
 * Reads a cluster key file: base64 text (`holdfast keygen`) or raw bytes (a mirror replication key, 32 random
 * bytes). At least 32 bytes of key material either way.
 */
export function readKeyFile(path: string): Uint8Array {
  const raw = readFileSync(path);
  const text = raw.toString("latin1").trim();
  if (/^[A-Za-z0-9+/]+={0,2}$/.test(text) && Buffer.from(text, "base64").length >= 32) return parseKey(text, "keyFile");
  return parseKey(Uint8Array.from(raw), "keyFile");
}

/** `HOST:PORT` with an IP literal host (IPv6 in brackets) and a port 1..65535, or undefined. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s.trim());
  if (m === null) return undefined;
  const host = m[1] ?? m[2] ?? "";
  const port = Number(m[3]);
  if (isIP(host) === 0 || port < 1 || port > 65535) return undefined;
  return { host, port };
}

/** The eight checker types. */
export const CHECKER_TYPES = ["process", "interface", "ip", "tcp", "ping", "custom", "module", "split-brain"] as const;
export type CheckerType = (typeof CHECKER_TYPES)[number];

/** Options common to every checker. All have defaults (see {@link CheckerDefaults}). */
export interface CheckerCommon {
  /** Name unique within the module, carried by verdicts. Default: the probe's name, e.g. `tcp:198.18.0.10:8080`. */
  readonly name: string | undefined;
  /** What the module does when this checker fails. Default: per type, see {@link CheckerDefaults}. */
  readonly action: CheckerAction;
  /** Time between the starts of two probe runs, ms (or `"250ms"`, `"2s"` in files). */
  readonly interval: number;
  /** A run that takes longer fails, ms. */
  readonly timeout: number;
  /** Consecutive successes to turn ok again. */
  readonly rise: number;
  /** Consecutive failures to turn failed. */
  readonly fall: number;
  /** Assumed state before the first verdict: `unknown` (default), `ok` or `failed` (see `Hysteresis`). */
  readonly initial: HysteresisState;
}

/** `type: process` — see `ProcessProbe`. Exactly one of `process`, `cmdline`, `pid`, `pidFile`. */
export interface ProcessCheckerConfig extends CheckerCommon {
  readonly type: "process";
  /** Exact executable name as in `/proc/PID/comm` (at most 15 characters), e.g. `nginx`. */
  readonly process?: string;
  /** Regular expression (JavaScript syntax) on the command line, arguments joined by spaces. */
  readonly cmdline?: string;
  /** One process id. */
  readonly pid?: number;
  /** A file holding the process id, read at every run (e.g. `/run/nginx.pid`). */
  readonly pidFile?: string;
  /** Fewest live matching processes for ok. Default 1. */
  readonly min: number;
  /** Most live matching processes for ok (1 = "a single instance"). Default: unbounded. */
  readonly max?: number;
}
/** `type: interface` — see `InterfaceProbe`. */
export interface InterfaceCheckerConfig extends CheckerCommon {
  readonly type: "interface";
  /** Interface name in this node's network namespace, e.g. `eth0`. */
  readonly interface: string;
  /** Also require carrier (a pulled cable fails even if the interface is still administratively up). Default true. */
  readonly carrier: boolean;
}
/** `type: ip` — see `IpProbe`. */
export interface IpCheckerConfig extends CheckerCommon {
  readonly type: "ip";
  /** IPv4 or IPv6 address without prefix length. Tentative (DAD running) or DAD-failed counts as absent. */
  readonly address: string;
  /** Only on this interface. Default: any. */
  readonly interface?: string;
}
/** `type: tcp` — see `TcpProbe`. */
export interface TcpCheckerConfig extends CheckerCommon {
  readonly type: "tcp";
  /** Address (or name, resolved at each run) to connect to. */
  readonly host: string;
  /** TCP port, 1..65535. */
  readonly port: number;
  /** Source address of the connection. Default: chosen by the kernel. */
  readonly localAddress?: string;
}
/** `type: ping` — see `PingProbe` (needs CAP_NET_RAW). */
export interface PingCheckerConfig extends CheckerCommon {
  readonly type: "ping";
  /** IPv4 or IPv6 address (no names: a checker must not depend on DNS). */
  readonly host: string;
}
/** `type: custom` — see `CustomProbe`. Exactly one of `run`, `script`, `shell`. */
export interface CustomCheckerConfig extends CheckerCommon {
  readonly type: "custom";
  /** A function (code only): `true`/`false`, a `ProbeResult`, or a throw (= failed). */
  readonly run?: CustomCheckFunction;
  /** An executable; exit code 0 = ok. Killed with its whole process group at `timeout`. */
  readonly script?: string;
  /** Arguments of `script`. */
  readonly args?: readonly string[];
  /** A `/bin/sh -c` command line; exit code 0 = ok. */
  readonly shell?: string;
  /** Extra environment variables of the script. */
  readonly env?: Readonly<Record<string, string>>;
  /** Working directory of the script. Default: the daemon's. */
  readonly cwd?: string;
}
/** `type: module` — see `ModuleProbe` (the expected HTTP answer is documented there). */
export interface ModuleCheckerConfig extends CheckerCommon {
  readonly type: "module";
  /** Name of the module depended upon. */
  readonly module: string;
  /** Accepted states, e.g. `[PRIM, ALONE]`. */
  readonly states: readonly string[];
  /** Also require the module to report `ready: true`. Default false. */
  readonly ready: boolean;
  /** A function (a module in this process), or the control API of that module (URL, bearer token, CA). */
  readonly source: ModuleStatusSource | ModuleHttpSource;
}
/**
 * `type: split-brain` — see `SplitBrainProbe`: ok when any witness answers. With `arbiter` instead (or as well:
 * then the arbiter alone decides), see `ArbiterProbe`: ok while this node holds the witness arbiter's lease, so
 * two nodes cut from each other that both reach the witness never both go ALONE.
 */
export interface SplitBrainCheckerConfig extends CheckerCommon {
  readonly type: "split-brain";
  /** Witness addresses (e.g. the router), IPv4 or IPv6. Required unless `arbiter` is given. */
  readonly witnesses: readonly string[];
  /** A witness arbiter (`examples/witness.ts`, `WitnessServer`) as `HOST:PORT` (IPv6 in brackets). */
  readonly arbiter?: string;
  /** The cluster key file (base64, as `holdfast keygen` writes); required with `arbiter`. */
  readonly keyFile?: string;
  /** This node's id at the arbiter; required with `arbiter`. */
  readonly node?: string;
  /** The lease's name at the arbiter, the same on both nodes of a mirror. Default `mirror`. */
  readonly lease?: string;
  /** Lease length, ms (or `"1s"`). Default 1000: a failover waits up to this long after the primary's last renewal. */
  readonly ttl?: number;
  /** Claim period, ms. Default 100 (ttl / 10). */
  readonly renew?: number;
  /**
   * A run is ok only while the lease stays valid this much longer, ms: a cut-off primary leaves the role that long
   * (minus a checker interval + 100 ms) before the witness may grant the peer. Default 400 (0.4 x ttl). With
   * `arbiter`, the checker's own defaults are interval 50 ms, timeout 150 ms, rise 1, fall 1 (`ARBITER_DEFAULTS`,
   * src/checkers/arbiter.ts: the timing chain). A replication permit is bounded by the lease itself, not by this
   * verdict: see `onProbe`.
   */
  readonly reportMargin?: number;
  /**
   * Code only: called with the arbiter probe once built, e.g. to bound a MirrorDriver's replication permit by the
   * lease (`permitCap: () => probe.permitBudgetMs()`), so the permit always ends before the witness can grant the peer.
   */
  readonly onProbe?: (probe: ArbiterProbe) => void;
  /** Code only: whether this node wants the lease now (default always). See `ArbiterProbeOptions.shouldClaim`. */
  readonly shouldClaim?: () => boolean;
  /** Code only: whether to hand a held lease back (default never). See `ArbiterProbeOptions.yieldWhen`. */
  readonly yieldWhen?: () => boolean;
  /** `ping` (ICMP echo) or `tcp` (connect to `port`). Default `ping`. */
  readonly method: "ping" | "tcp";
  /** Witness TCP port; required with `method: tcp`. */
  readonly port?: number;
}

/** A decoded checker entry, every default filled in. */
export type CheckerConfig =
  | ProcessCheckerConfig
  | InterfaceCheckerConfig
  | IpCheckerConfig
  | TcpCheckerConfig
  | PingCheckerConfig
  | CustomCheckerConfig
  | ModuleCheckerConfig
  | SplitBrainCheckerConfig;

/**
 * Defaults. Common to all types: `interval` 500 ms, `timeout` 400 ms (below the interval, so a hung probe
 * never delays the next one), `fall` 3, `rise` 2. Failure detection therefore takes between
 * `(fall - 1) * interval` and `fall * interval + timeout`, i.e. 1.0 to 1.9 s by default; recovery takes about
 * `rise * interval` = 1 s. Lower `interval` for faster detection (the probes are cheap: a /proc scan, a
 * netlink dump, one packet), raise `fall` on lossy paths.
 *
 * `custom` scripts get `interval` 2 s and `timeout` 5 s: starting a process costs more, and user scripts
 * are often slow (a SQL query).
 *
 * Default actions: `process`, `tcp`, `ip`, `custom` -> `restart` (the application is at fault: restart it
 * locally, bounded by the restart policy); `interface`, `ping`, `module`, `split-brain` -> `wait` (the cause is
 * outside the application: a restart cannot help, wait in WAIT until it comes back).
 */
export const CheckerDefaults = {
  interval: 500,
  timeout: 400,
  rise: 2,
  fall: 3,
  initial: "unknown" as HysteresisState,
  custom: { interval: 2000, timeout: 5000 },
  action: {
    process: "restart",
    interface: "wait",
    ip: "restart",
    tcp: "restart",
    ping: "wait",
    custom: "restart",
    module: "wait",
    "split-brain": "wait",
  } satisfies Record<CheckerType, CheckerAction>,
} as const;

// ---- small codecs ----------------------------------------------------------------------------

function refined<A>(name: string, test: (u: unknown) => u is A): t.Type<A, A, unknown> {
  return new t.Type<A, A, unknown>(name, test, (u, c) => (test(u) ? t.success(u) : t.failure(u, c)), t.identity);
}

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/** A positive duration: ms as a number, or a string like `250ms`, `2s`, `1m`. */
export const PositiveDuration = new t.Type<number, number, unknown>(
  'positive duration (ms, or a string like "250ms", "2s")',
  (u): u is number => typeof u === "number" && Number.isFinite(u) && u > 0,
  (u, c) => {
    if (typeof u === "number" && Number.isFinite(u) && u > 0) return t.success(u);
    if (typeof u === "string") {
      const m = DURATION_RE.exec(u.trim());
      const unit = m?.[2];
      if (m !== null && unit !== undefined) {
        const v = Number(m[1]) * (UNIT_MS[unit] ?? 1);
        if (v > 0) return t.success(v);
      }
    }
    return t.failure(u, c);
  },
  t.identity,
);

const PositiveInt = refined("integer >= 1", (u): u is number => typeof u === "number" && Number.isInteger(u) && u >= 1);
const NonNegInt = refined("integer >= 0", (u): u is number => typeof u === "number" && Number.isInteger(u) && u >= 0);
const Port = refined("TCP port (1..65535)", (u): u is number => typeof u === "number" && Number.isInteger(u) && u >= 1 && u <= 65535);
const IpAddress = refined("IPv4 or IPv6 address", (u): u is string => typeof u === "string" && isIP(u) !== 0);
const NonEmptyString = refined("non-empty string", (u): u is string => typeof u === "string" && u.length > 0);
const IfName = refined("interface name (1..15 characters, no / or space)", (u): u is string => typeof u === "string" && /^[^/\s]{1,15}$/.test(u));
const RegexString = refined("valid regular expression", (u): u is string => {
  if (typeof u !== "string" || u.length === 0) return false;
  try {
    new RegExp(u);
    return true;
  } catch {
    return false;
  }
});
const Action = t.keyof({ restart: null, stopstart: null, failover: null, stop: null, wait: null }, "one of restart, stopstart, failover, stop, wait");
const Initial = t.keyof({ unknown: null, ok: null, failed: null }, "one of unknown, ok, failed");
const Fn = refined("function", (u): u is (...args: never[]) => unknown => typeof u === "function");
const StringArray = t.array(t.string, "array of strings");
const StringRecord = t.record(t.string, t.string, "object of strings");

/** Decodes `undefined` as `undefined` (kept out of the output object), anything else with `codec`. */
function optional<A, O>(codec: t.Type<A, O, unknown>): t.Type<A | undefined, O | undefined, unknown> {
  return new t.Type<A | undefined, O | undefined, unknown>(
    codec.name,
    (u): u is A | undefined => u === undefined || codec.is(u),
    (u, c) => (u === undefined ? t.success(undefined) : codec.validate(u, c)),
    (a) => (a === undefined ? undefined : codec.encode(a)),
  );
}

/** Decodes `undefined` as `def`. */
function withDefault<A, O>(codec: t.Type<A, O, unknown>, def: A): t.Type<A, O, unknown> {
  return new t.Type<A, O, unknown>(codec.name, codec.is, (u, c) => (u === undefined ? t.success(def) : codec.validate(u, c)), codec.encode);
}

type Props = Record<string, t.Mixed>;

function common(type: CheckerType): Props {
  const d = type === "custom" ? { ...CheckerDefaults, ...CheckerDefaults.custom } : CheckerDefaults;
  return {
    type: t.literal(type),
    name: optional(NonEmptyString),
    action: withDefault(Action, CheckerDefaults.action[type]),
    interval: withDefault(PositiveDuration, d.interval),
    timeout: withDefault(PositiveDuration, d.timeout),
    rise: withDefault(PositiveInt, d.rise),
    fall: withDefault(PositiveInt, d.fall),
    initial: withDefault(Initial, d.initial),
  };
}

const ModuleSource = new t.Type<ModuleCheckerConfig["source"], unknown, unknown>(
  "function or { url, token?, ca? }",
  (u): u is ModuleCheckerConfig["source"] => typeof u === "function" || (typeof u === "object" && u !== null),
  (u, c) => {
    if (typeof u === "function") return t.success(u as ModuleStatusSource);
    if (typeof u !== "object" || u === null || Array.isArray(u)) return t.failure(u, c);
    return strictType({
      url: refined("http(s) URL", (v): v is string => typeof v === "string" && /^https?:\/\/\S+$/.test(v)),
      token: optional(t.string),
      ca: optional(NonEmptyString),
    }).validate(u, c) as t.Validation<ModuleCheckerConfig["source"]>;
  },
  t.identity,
);

/** The option keys of each type, beside the common ones, with their codecs. */
const BRANCH_PROPS: Record<CheckerType, Props> = {
  process: {
    process: optional(NonEmptyString),
    cmdline: optional(RegexString),
    pid: optional(PositiveInt),
    pidFile: optional(NonEmptyString),
    min: withDefault(NonNegInt, 1),
    max: optional(NonNegInt),
  },
  interface: { interface: IfName, carrier: withDefault(t.boolean, true) },
  ip: { address: IpAddress, interface: optional(IfName) },
  tcp: { host: NonEmptyString, port: Port, localAddress: optional(IpAddress) },
  ping: { host: IpAddress },
  custom: {
    run: optional(Fn),
    script: optional(NonEmptyString),
    args: optional(StringArray),
    shell: optional(NonEmptyString),
    env: optional(StringRecord),
    cwd: optional(NonEmptyString),
  },
  module: {
    module: NonEmptyString,
    states: refined("non-empty array of states", (u): u is string[] => Array.isArray(u) && u.length > 0 && u.every((s) => typeof s === "string")),
    ready: withDefault(t.boolean, false),
    source: ModuleSource,
  },
  "split-brain": {
    witnesses: withDefault(refined("array of IP addresses", (u): u is string[] => Array.isArray(u) && u.every((s) => typeof s === "string" && isIP(s) !== 0)), []),
    method: withDefault(t.keyof({ ping: null, tcp: null }, "ping or tcp"), "ping"),
    port: optional(Port),
    arbiter: optional(refined("HOST:PORT (an IP literal, IPv6 in brackets)", (u): u is string => typeof u === "string" && parseHostPort(u) !== undefined)),
    keyFile: optional(NonEmptyString),
    node: optional(NonEmptyString),
    lease: optional(NonEmptyString),
    ttl: optional(PositiveDuration),
    shouldClaim: optional(Fn),
    yieldWhen: optional(Fn),
    onProbe: optional(Fn),
    renew: optional(PositiveDuration),
    reportMargin: optional(PositiveDuration),
  },
};

/** Exactly one of these keys must be present, per type. */
const ONE_OF: Partial<Record<CheckerType, readonly string[]>> = {
  process: ["process", "cmdline", "pid", "pidFile"],
  custom: ["run", "script", "shell"],
};

/** A `t.type` that also rejects unknown keys (the message of every config codec) and leaves out undefined optionals. */
function strictType(props: Props): t.Type<Record<string, unknown>, unknown, unknown> {
  const inner = t.type(props);
  const known = Object.keys(props);
  return new t.Type<Record<string, unknown>, unknown, unknown>(
    inner.name,
    (u): u is Record<string, unknown> => inner.is(u),
    (u, c) => {
      if (typeof u !== "object" || u === null || Array.isArray(u)) return t.failure(u, c, "an object");
      const extra = Object.keys(u).filter((k) => !known.includes(k));
      if (extra.length > 0) {
        return t.failures(
          extra.map((k) => ({
            value: (u as Record<string, unknown>)[k],
            context: t.appendContext(c, k, t.never, (u as Record<string, unknown>)[k]),
            message: unknownOptionMessage(known),
          })),
        );
      }
      const r = inner.validate(u, c);
      if (isLeft(r)) return r;
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(r.right)) if (v !== undefined) out[k] = v;
      return t.success(out);
    },
    t.identity,
  );
}

const BRANCHES = Object.fromEntries(
  CHECKER_TYPES.map((type) => [type, strictType({ ...common(type), ...BRANCH_PROPS[type] })]),
) as Record<CheckerType, t.Type<Record<string, unknown>, unknown, unknown>>;

const CheckerTypeCodec = t.keyof(Object.fromEntries(CHECKER_TYPES.map((k) => [k, null])) as Record<CheckerType, null>, `one of ${CHECKER_TYPES.join(", ")}`);

/**
 * The codec of one checker entry: dispatches on `type`, fills defaults, rejects unknown keys, and checks
 * the cross-field rules (exactly one target for `process` and `custom`, `port` with `method: tcp`,
 * `min <= max`).
 */
export const CheckerConfigCodec = new t.Type<CheckerConfig, unknown, unknown>(
  "CheckerConfig",
  (u): u is CheckerConfig => typeof u === "object" && u !== null && CHECKER_TYPES.includes((u as { type?: unknown }).type as CheckerType),
  (u, c) => {
    if (typeof u !== "object" || u === null || Array.isArray(u)) return t.failure(u, c, "a checker object with a type");
    const type = (u as { type?: unknown }).type;
    if (!CheckerTypeCodec.is(type)) return t.failure(type, t.appendContext(c, "type", CheckerTypeCodec, type), CheckerTypeCodec.name);
    const r = BRANCHES[type].validate(u, c);
    if (isLeft(r)) return r;
    const v = r.right;
    const oneOf = ONE_OF[type];
    if (oneOf !== undefined) {
      const given = oneOf.filter((k) => v[k] !== undefined);
      if (given.length !== 1) return t.failure(u, c, `exactly one of ${oneOf.join(", ")} (got ${given.join(", ") || "none"})`);
    }
    if (type === "process" && typeof v.max === "number" && v.max < (v.min as number)) {
      return t.failure(v.max, t.appendContext(c, "max", NonNegInt, v.max), `max >= min (${String(v.min)})`);
    }
    if (type === "split-brain" && v.arbiter === undefined && (v.witnesses as string[]).length === 0) {
      return t.failure(v.witnesses, t.appendContext(c, "witnesses", t.never, v.witnesses), "non-empty array of IP addresses (or an arbiter)");
    }
    if (type === "split-brain" && v.arbiter !== undefined) {
      for (const k of ["keyFile", "node"] as const) {
        if (v[k] === undefined) return t.failure(undefined, t.appendContext(c, k, NonEmptyString, undefined), `${k} (required with arbiter)`);
      }
      // The arbiter's checker defaults (its timing chain), where the entry does not say otherwise.
      for (const [k, d] of Object.entries(ARBITER_DEFAULTS.checker)) if ((u as Record<string, unknown>)[k] === undefined) v[k] = d;
    }
    if (type === "split-brain" && v.method === "tcp" && v.port === undefined) {
      return t.failure(undefined, t.appendContext(c, "port", Port, undefined), "a TCP port (required with method tcp)");
    }
    return t.success(v as unknown as CheckerConfig);
  },
  t.identity,
);

/** Decodes one checker entry; throws a path-precise `ConfigError` (code `HOLDFAST_CONFIG_INVALID`). */
export function decodeCheckerConfig(input: unknown, what = "checker"): CheckerConfig {
  return decodeOrThrow(CheckerConfigCodec, input, what);
}

/** Builds the probe of a decoded entry. */
export function createProbe(config: CheckerConfig): Probe {
  switch (config.type) {
    case "process":
      return new ProcessProbe({
        ...(config.process === undefined ? {} : { name: config.process }),
        ...(config.cmdline === undefined ? {} : { cmdline: config.cmdline }),
        ...(config.pid === undefined ? {} : { pid: config.pid }),
        ...(config.pidFile === undefined ? {} : { pidFile: config.pidFile }),
        min: config.min,
        ...(config.max === undefined ? {} : { max: config.max }),
      });
    case "interface":
      return new InterfaceProbe({ interface: config.interface, carrier: config.carrier });
    case "ip":
      return new IpProbe({ address: config.address, ...(config.interface === undefined ? {} : { interface: config.interface }) });
    case "tcp":
      return new TcpProbe({ host: config.host, port: config.port, ...(config.localAddress === undefined ? {} : { localAddress: config.localAddress }) });
    case "ping":
      return new PingProbe({ host: config.host });
    case "custom":
      return new CustomProbe({
        ...(config.run === undefined ? {} : { run: config.run }),
        ...(config.script === undefined ? {} : { script: config.script }),
        ...(config.args === undefined ? {} : { args: config.args }),
        ...(config.shell === undefined ? {} : { shell: config.shell }),
        ...(config.env === undefined ? {} : { env: config.env }),
        ...(config.cwd === undefined ? {} : { cwd: config.cwd }),
        ...(config.name === undefined ? {} : { label: config.name }),
      });
    case "module":
      return new ModuleProbe({ module: config.module, states: config.states, ready: config.ready, source: config.source });
    case "split-brain":
      if (config.arbiter !== undefined) {
        const hp = parseHostPort(config.arbiter) as { host: string; port: number };
        const probe = new ArbiterProbe({
          ...hp,
          key: readKeyFile(config.keyFile as string),
          node: config.node as string,
          ...(config.lease === undefined ? {} : { lease: config.lease }),
          ...(config.ttl === undefined ? {} : { ttlMs: config.ttl }),
          ...(config.shouldClaim === undefined ? {} : { shouldClaim: config.shouldClaim }),
          ...(config.yieldWhen === undefined ? {} : { yieldWhen: config.yieldWhen }),
          ...(config.renew === undefined ? {} : { renewMs: config.renew }),
          ...(config.reportMargin === undefined ? {} : { reportMarginMs: config.reportMargin }),
        });
        config.onProbe?.(probe);
        return probe;
      }
      return new SplitBrainProbe({ witnesses: config.witnesses, method: config.method, ...(config.port === undefined ? {} : { port: config.port }) });
  }
}

/**
 * Decodes a checker entry (raw, from code or a file) and builds its runner (not started).
 * Throws `ConfigError` on a bad entry.
 */
export function createChecker(input: unknown, what?: string, options: { readonly clock?: Clock } = {}): CheckerRunner {
  const config = decodeCheckerConfig(input, what);
  return new CheckerRunner({
    probe: createProbe(config),
    kind: config.type,
    action: config.action,
    interval: config.interval,
    timeout: config.timeout,
    rise: config.rise,
    fall: config.fall,
    initial: config.initial,
    ...(config.name === undefined ? {} : { name: config.name }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
}
