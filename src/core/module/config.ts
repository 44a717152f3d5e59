/**
 * Module definitions: the typed options (TSDoc gives unit, default and why), presets, and one io-ts
 * codec used both for definitions written in TypeScript and for JSON/YAML files, so a file and code
 * are validated by the same rules and a mistake is reported with its path and value.
 */
import * as t from "io-ts";
import { parse as parseYaml } from "yaml";
import { decodeOrThrow } from "../decode.js";
import { ConfigError } from "../errors.js";
import type { CheckerAction } from "../checker.js";
import type { HookName, ModuleState } from "./types.js";
import { HOOK_NAMES } from "./types.js";
import { optional } from "./codec-util.js";

/** What a hook function receives. */
export interface HookContext {
  readonly module: string;
  readonly hook: HookName;
  /** Current state of the module. */
  readonly state: ModuleState;
  /** The state the module goes to when the hook succeeds. */
  readonly nextState: ModuleState;
  /** Why the transition happens, e.g. `command start` or `peer b lost -> failover`. */
  readonly reason: string;
  /** Aborted when the hook times out or the module is force-stopped. */
  readonly signal: AbortSignal;
  /** Lines written here go to the module's event log (as a script's stdout would). */
  readonly log: (line: string) => void;
}

/** A hook written in code: resolves on success, throws (or rejects) on failure. */
export type HookFunction = (ctx: HookContext) => Promise<void> | void;

/** A hook that is a script (files) — run with `state nextState reason` appended to `args`. */
export interface ScriptHook {
  /** Path of an executable. */
  readonly path: string;
  /** Arguments placed before the three standard ones. Default: none. */
  readonly args?: readonly string[];
  /** Timeout, ms; default: the module's `hookTimeout`. At the timeout the whole process group is killed. */
  readonly timeout?: number;
  /** Filled in by {@link resolveModule} from the module's `hookEnv` (write that instead; if given, it must be equal). */
  readonly env?: HookEnv;
}

/** A hook in code with its own timeout. */
export interface FunctionHook {
  readonly fn: HookFunction;
  /** Timeout, ms; default: the module's `hookTimeout`. At the timeout the hook's signal is aborted. */
  readonly timeout?: number;
  /** As {@link ScriptHook.env}: the environment of the scripts this function runs through `runHook`. */
  readonly env?: HookEnv;
}

/**
 * What a module's script hooks see of the daemon's environment beyond the fixed list (`PATH`, `HOME`, `TMPDIR`, `TZ`,
 * `LANG`, `LC_*`) and holdfast's own `HOLDFAST_*` variables: nothing else reaches a hook unless named here, so a
 * secret of the daemon (`HOLDFAST_TOKEN`) never does.
 */
export interface HookEnv {
  /**
   * Variables passed through from the daemon's environment when set there: names, or a prefix ending with `*`
   * (`MY_*`). `HOLDFAST_*` names are never passed (holdfast sets its own). Default: none.
   */
  readonly pass?: readonly string[];
  /** Variables set to fixed values (over a passed or fixed-list one); names not starting with `HOLDFAST_`. Default: none. */
  readonly set?: Readonly<Record<string, string>>;
}

/** A hook: a script path, a script with args/timeout, a function, or a function with a timeout. */
export type HookSpec = string | ScriptHook | HookFunction | FunctionHook;

/** Restart policy (SafeKit's `maxloop` / `loop_interval`). */
export interface RestartPolicy {
  /**
   * Local restarts allowed within `loopInterval` before escalating (mirror: fail over to the peer,
   * or stop when there is none; farm: stop). Default 3 (as SafeKit): enough to ride over a transient
   * fault, few enough that a broken app does not flap forever.
   */
  readonly maxloop: number;
  /** The sliding window for `maxloop`, ms. Default 24 h (as SafeKit). */
  readonly loopInterval: number;
}

/**
 * One checker entry: the shape only (the probes validate their own options). `type` is e.g. `tcp`,
 * `ping`, `process`, `split-brain`; every other key is passed to the probe.
 */
export interface CheckerEntry {
  readonly type: string;
  /** Name unique within the module; the verdicts carry it. Default: assigned by the checker runner. */
  readonly name?: string;
  /** What to do on failure. Default depends on the checker (usually `restart`). */
  readonly action?: CheckerAction;
  /** Probe interval, ms. */
  readonly interval?: number;
  /** Probe timeout, ms. */
  readonly timeout?: number;
  /** Consecutive successes to be ok again. */
  readonly rise?: number;
  /** Consecutive failures to be failed. */
  readonly fall?: number;
  readonly [option: string]: unknown;
}

/** Mirror-only options. */
export interface MirrorOptions {
  /**
   * Node id whose data wins at the very first start (when no node has ever held a role). Default: none,
   * so the first start waits for an explicit `prim` command: choosing whose data wins is an admin decision.
   */
  readonly defaultPrimary?: string;
  /**
   * How long a starting node that was the last sole primary waits for its peer before going ALONE, ms.
   * Default 3000: longer than a membership join (about 1 s with the LAN preset), so two nodes booted
   * together see each other and pick one primary instead of both going ALONE and healing later.
   */
  readonly peerWait?: number;
}

/** A module as users write it (in code or in a file). */
export interface ModuleDefinition {
  /** Unique per node; `[A-Za-z0-9_.-]{1,64}`. */
  readonly name: string;
  readonly kind: "farm" | "mirror";
  /** VIPs with prefix length, e.g. `198.18.0.100/24` or `fd00:4844::100/64`. Default: none. */
  readonly vips?: readonly string[];
  readonly hooks?: Partial<Record<HookName, HookSpec>>;
  /** Default hook timeout, ms. Default 60 000: an app start on a loaded machine (as SafeKit's default). */
  readonly hookTimeout?: number;
  readonly restart?: Partial<RestartPolicy>;
  readonly checkers?: readonly CheckerEntry[];
  readonly mirror?: MirrorOptions;
  /** The hooks' environment beyond the fixed list ({@link HookEnv}). Default: the fixed list only. */
  readonly hookEnv?: HookEnv;
}

/** A definition with every default filled in (output of {@link resolveModule}). */
export interface ResolvedModule {
  readonly name: string;
  readonly kind: "farm" | "mirror";
  readonly vips: readonly string[];
  readonly hooks: Partial<Record<HookName, HookSpec>>;
  readonly hookTimeout: number;
  readonly restart: RestartPolicy;
  readonly checkers: readonly CheckerEntry[];
  readonly mirror: { readonly defaultPrimary?: string; readonly peerWait: number };
  /** Present when the definition has one; then also copied into every hook as `env` (the runner reads it there). */
  readonly hookEnv?: HookEnv;
}

/** Defaults and named presets. */
export const ModuleDefaults = {
  hookTimeout: 60_000,
  restart: { maxloop: 3, loopInterval: 24 * 3600_000 } as RestartPolicy,
  peerWait: 3_000,
} as const;

/** Named restart presets (pass as `restart:`). */
export const RestartPresets = {
  /** SafeKit's default: 3 restarts in 24 h, then escalate. */
  safekit: { maxloop: 3, loopInterval: 24 * 3600_000 } as RestartPolicy,
  /** Escalate quickly: 1 restart in 10 min, then fail over (for apps that never heal by restarting). */
  failFast: { maxloop: 1, loopInterval: 600_000 } as RestartPolicy,
  /** Never restart locally: the first failure escalates at once. */
  none: { maxloop: 0, loopInterval: 60_000 } as RestartPolicy,
} as const;

// ---- codecs ----------------------------------------------------------------------------------

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration: a number of ms, or a string such as `500ms`, `5s`, `2m`, `24h` (handy in YAML). */
export const DurationMs = new t.Type<number, number, unknown>(
  "duration (ms, or a string like \"5s\")",
  (u): u is number => typeof u === "number" && Number.isFinite(u) && u >= 0,
  (u, c) => {
    if (typeof u === "number" && Number.isFinite(u) && u >= 0) return t.success(u);
    if (typeof u === "string") {
      const m = DURATION_RE.exec(u.trim());
      if (m && m[1] !== undefined && m[2] !== undefined) return t.success(Math.round(Number(m[1]) * (UNIT_MS[m[2]] ?? 1)));
    }
    return t.failure(u, c);
  },
  (a) => a,
);

const NonNegInt = new t.Type<number, number, unknown>(
  "non-negative integer",
  (u): u is number => typeof u === "number" && Number.isInteger(u) && u >= 0,
  (u, c) => (typeof u === "number" && Number.isInteger(u) && u >= 0 ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

const PosInt = new t.Type<number, number, unknown>(
  "positive integer",
  (u): u is number => typeof u === "number" && Number.isInteger(u) && u > 0,
  (u, c) => (typeof u === "number" && Number.isInteger(u) && u > 0 ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const ModuleName = new t.Type<string, string, unknown>(
  "module name ([A-Za-z0-9_.-]{1,64})",
  (u): u is string => typeof u === "string" && NAME_RE.test(u),
  (u, c) => (typeof u === "string" && NAME_RE.test(u) ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const IPV6_CIDR = /^[0-9A-Fa-f:]+(?:\/(\d{1,3}))$/;
function isVip(u: unknown): u is string {
  if (typeof u !== "string") return false;
  const m4 = IPV4_CIDR.exec(u);
  if (m4) return m4.slice(1, 5).every((o) => Number(o) <= 255) && Number(m4[5]) <= 32;
  const m6 = IPV6_CIDR.exec(u);
  return !!m6 && u.includes(":") && Number(m6[1]) <= 128 && (u.split("::").length <= 2);
}
/** A VIP with its prefix length: `198.18.0.100/24` or `fd00:4844::100/64`. */
export const VipCidr = new t.Type<string, string, unknown>(
  "IP address with prefix length (e.g. 198.18.0.100/24)",
  isVip,
  (u, c) => (isVip(u) ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

const HookFn = new t.Type<HookFunction, HookFunction, unknown>(
  "function",
  (u): u is HookFunction => typeof u === "function",
  (u, c) => (typeof u === "function" ? t.success(u as HookFunction) : t.failure(u, c)),
  (a) => a,
);

const NonEmptyString = new t.Type<string, string, unknown>(
  "non-empty string",
  (u): u is string => typeof u === "string" && u.length > 0,
  (u, c) => (typeof u === "string" && u.length > 0 ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

/** Drops keys whose value is undefined (so optional fields stay absent). */
function compact<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/**
 * An object type that also refuses unknown keys: a misspelt option (`checker:` for `checkers:`, `hooktimeout`)
 * is reported at its path with the known options, instead of being dropped silently as `t.exact` would.
 * Every configuration codec of holdfast uses it (re-exported by "holdfast/config").
 */
export function strict<P extends t.Props>(props: P, name?: string): t.Type<t.TypeOf<t.TypeC<P>>, t.OutputOf<t.TypeC<P>>, unknown> {
  const inner = t.type(props);
  const known = Object.keys(props);
  return new t.Type<t.TypeOf<t.TypeC<P>>, t.OutputOf<t.TypeC<P>>, unknown>(
    name ?? inner.name,
    inner.is,
    (u, c) => {
      const r = inner.validate(u, c);
      const extra = typeof u === "object" && u !== null && !Array.isArray(u) ? Object.keys(u).filter((k) => !known.includes(k)) : [];
      if (extra.length === 0) {
        if (r._tag === "Left") return r;
        // An optional key left undefined is left out (t.type would add it as undefined, which spreads over defaults).
        const out = r.right as Record<string, unknown>;
        const absent = known.filter((k) => k in out && out[k] === undefined);
        if (absent.length === 0) return r;
        const copy = { ...out };
        for (const k of absent) delete copy[k];
        return t.success(copy as t.TypeOf<t.TypeC<P>>);
      }
      const errs: t.Errors = extra.map((k) => ({
        value: (u as Record<string, unknown>)[k],
        context: [...c, { key: k, type: t.never, actual: (u as Record<string, unknown>)[k] }],
        message: unknownOptionMessage(known),
      }));
      return r._tag === "Left" ? t.failures([...r.left, ...errs]) : t.failures(errs);
    },
    inner.encode,
  );
}

/** The message of an unknown key, the same in every codec. */
export function unknownOptionMessage(known: readonly string[]): string {
  return `no such option: known options here are ${known.join(", ")}`;
}

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const ENV_PASS_RE = /^[A-Za-z_][A-Za-z0-9_]*\*?$/;
const notHoldfast = (u: string) => !u.toUpperCase().startsWith("HOLDFAST_");
/** A variable name a module may set: not one of holdfast's own (`HOLDFAST_*`). */
const EnvName = new t.Type<string, string, unknown>(
  "environment variable name ([A-Za-z_][A-Za-z0-9_]*, not HOLDFAST_*)",
  (u): u is string => typeof u === "string" && ENV_NAME_RE.test(u) && notHoldfast(u),
  (u, c) => (typeof u === "string" && ENV_NAME_RE.test(u) && notHoldfast(u) ? t.success(u) : t.failure(u, c)),
  (a) => a,
);
/** A variable name or a prefix ending with `*`, not `HOLDFAST_*`. */
const EnvPattern = new t.Type<string, string, unknown>(
  "environment variable name or prefix* ([A-Za-z_][A-Za-z0-9_]*, optionally ending with *; not HOLDFAST_*)",
  (u): u is string => typeof u === "string" && ENV_PASS_RE.test(u) && notHoldfast(u),
  (u, c) => (typeof u === "string" && ENV_PASS_RE.test(u) && notHoldfast(u) ? t.success(u) : t.failure(u, c)),
  (a) => a,
);
/** `{ pass?, set? }`: a bad name is reported at its own path (`hookEnv.pass.1`, `hookEnv.set.<name>`). */
const EnvSet = new t.Type<Record<string, string>, Record<string, string>, unknown>(
  "{ NAME: string value }",
  (u): u is Record<string, string> => typeof u === "object" && u !== null && !Array.isArray(u) && Object.entries(u).every(([k, v]) => EnvName.is(k) && typeof v === "string"),
  (u, c) => {
    if (typeof u !== "object" || u === null || Array.isArray(u)) return t.failure(u, c);
    const errs: t.Errors = [];
    for (const [k, v] of Object.entries(u)) {
      const at = [...c, { key: k, type: EnvName, actual: v }];
      if (!EnvName.is(k)) errs.push({ value: v, context: at, message: `${JSON.stringify(k)} is not a name a module may set: ${EnvName.name}` });
      else if (typeof v !== "string") errs.push({ value: v, context: at, message: "a string value" });
    }
    return errs.length > 0 ? t.failures(errs) : t.success(u as Record<string, string>);
  },
  (a) => a,
);
export const HookEnvCodec = strict({ pass: optional(t.array(EnvPattern)), set: optional(EnvSet) }, "{ pass?, set? }");

const ScriptHookCodec = strict({ path: NonEmptyString, args: optional(t.array(t.string)), timeout: optional(DurationMs), env: optional(HookEnvCodec) }, "{ path, args?, timeout? }");
const FunctionHookCodec = strict({ fn: HookFn, timeout: optional(DurationMs), env: optional(HookEnvCodec) }, "{ fn, timeout? }");
const HOOK_SPEC_NAME = "script path, { path, args?, timeout? }, function or { fn, timeout? }";

/**
 * A hook: the form is picked from the value (string, function, object with `fn`, other object), so that a
 * mistake is reported against that form only (an unknown key of `{ path, timout }` at its own path).
 */
export const HookSpecCodec = new t.Type<HookSpec, HookSpec, unknown>(
  HOOK_SPEC_NAME,
  (u): u is HookSpec => NonEmptyString.is(u) || HookFn.is(u) || ScriptHookCodec.is(u) || FunctionHookCodec.is(u),
  (u, c) => {
    if (typeof u === "string") return NonEmptyString.validate(u, c);
    if (typeof u === "function") return HookFn.validate(u, c);
    if (typeof u !== "object" || u === null || Array.isArray(u)) return t.failure(u, c, HOOK_SPEC_NAME);
    return (("fn" in u ? FunctionHookCodec : ScriptHookCodec) as t.Type<HookSpec, unknown, unknown>).validate(u, c);
  },
  t.identity,
);

const hookProps: Record<string, t.Type<HookSpec | undefined, HookSpec | undefined, unknown>> = {};
for (const h of HOOK_NAMES) hookProps[h] = optional(HookSpecCodec);
/** The hooks of a module, by hook name; an unknown hook name (`start_prm`) is an error. */
export const HooksCodec = strict(hookProps);

export const CheckerActionCodec = t.keyof({ restart: null, stopstart: null, failover: null, stop: null, wait: null });

/**
 * A checker entry: known fields checked here; other keys are the probe's options (kept as they are, and checked
 * exactly by the checker codec of "holdfast/checkers" when the checker is created, or by the host's config).
 */
export const CheckerEntryCodec = t.type({
  type: NonEmptyString,
  name: optional(NonEmptyString),
  action: optional(CheckerActionCodec),
  interval: optional(DurationMs),
  timeout: optional(DurationMs),
  rise: optional(PosInt),
  fall: optional(PosInt),
});

/**
 * A module definition. Exact: an unknown key is an error. A resolved module has the same keys (with defaults
 * filled in), so it decodes too (`Module.create` resolves what the host already resolved).
 */
export const ModuleDefinitionCodec = strict(
  {
    name: ModuleName,
    kind: t.keyof({ farm: null, mirror: null }),
    vips: optional(t.array(VipCidr)),
    hooks: optional(HooksCodec),
    hookTimeout: optional(DurationMs),
    restart: optional(strict({ maxloop: optional(NonNegInt), loopInterval: optional(DurationMs) })),
    checkers: optional(t.array(CheckerEntryCodec)),
    mirror: optional(strict({ defaultPrimary: optional(NonEmptyString), peerWait: optional(DurationMs) })),
    hookEnv: optional(HookEnvCodec),
  },
  "module definition",
);

/** A file holding several modules: `{ modules: [ ... ] }`. */
export const ModulesFileCodec = strict({ modules: t.array(ModuleDefinitionCodec) }, "modules file");

/**
 * Validates one definition (code or file) and fills defaults. Throws a path-precise ConfigError.
 * A resolved module is itself a valid definition (resolving twice gives the same result).
 */
export function resolveModule(input: unknown): ResolvedModule {
  const d = decodeOrThrow(ModuleDefinitionCodec, input, "module definition") as ModuleDefinition;
  return fillDefaults(d);
}

function fillDefaults(d: ModuleDefinition): ResolvedModule {
  if (d.kind === "farm" && d.mirror?.defaultPrimary !== undefined) {
    throw new ConfigError("module definition", [
      { path: "mirror", value: d.mirror, expected: "no mirror options on a farm module" },
    ]);
  }
  const env = d.hookEnv === undefined ? undefined : compact({ pass: d.hookEnv.pass, set: d.hookEnv.set });
  const hooks = Object.entries(d.hooks ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => [k, typeof v === "object" ? compact(v) : v] as [string, HookSpec]);
  // Each hook carries the module's environment option: the hook runner gets the spec only.
  const bad = hooks.filter(([, v]) => typeof v === "object" && v.env !== undefined && canonical(v.env) !== canonical(env ?? {}));
  if (bad.length > 0) {
    throw new ConfigError(
      "module definition",
      bad.map(([k, v]) => ({ path: `hooks.${k}.env`, value: (v as ScriptHook).env, expected: "no env on a hook: set the module's hookEnv (every hook of a module gets the same environment)" })),
    );
  }
  const withEnv = (v: HookSpec): HookSpec => {
    if (env === undefined) return v;
    if (typeof v === "string") return { path: v, env };
    if (typeof v === "function") return { fn: v, env };
    return { ...v, env };
  };
  return {
    name: d.name,
    kind: d.kind,
    vips: d.vips ?? [],
    hooks: Object.fromEntries(hooks.map(([k, v]) => [k, withEnv(v)])) as ResolvedModule["hooks"],
    hookTimeout: d.hookTimeout ?? ModuleDefaults.hookTimeout,
    restart: { ...ModuleDefaults.restart, ...compact(d.restart ?? {}) },
    checkers: (d.checkers ?? []).map((c) => compact(c)),
    mirror: {
      ...(d.mirror?.defaultPrimary !== undefined ? { defaultPrimary: d.mirror.defaultPrimary } : {}),
      peerWait: d.mirror?.peerWait ?? ModuleDefaults.peerWait,
    },
    ...(env !== undefined ? { hookEnv: env } : {}),
  };
}

/** JSON with sorted keys (compares two hook environment options). */
function canonical(e: HookEnv): string {
  return JSON.stringify({ pass: e.pass ?? [], set: Object.fromEntries(Object.entries(e.set ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) });
}

/** Validates several modules of one node; names must be unique. */
export function resolveModules(input: unknown): ResolvedModule[] {
  const f = decodeOrThrow(ModulesFileCodec, input, "modules file");
  const seen = new Map<string, number>();
  const out: ResolvedModule[] = [];
  f.modules.forEach((m, i) => {
    const prev = seen.get(m.name);
    if (prev !== undefined) {
      throw new ConfigError("modules file", [
        { path: `modules.${i}.name`, value: m.name, expected: `a name not already used by modules.${prev}` },
      ]);
    }
    seen.set(m.name, i);
    try {
      out.push(fillDefaults(m as ModuleDefinition));
    } catch (e) {
      if (e instanceof ConfigError) {
        throw new ConfigError(
          "modules file",
          e.problems.map((p) => ({ ...p, path: `modules.${i}.${p.path}` })),
        );
      }
      throw e;
    }
  });
  return out;
}

/**
 * Parses the text of a modules file (`format` from the file extension: `.json`, `.yaml`/`.yml`) and
 * validates it with the same codec as definitions in code.
 */
export function parseModulesText(text: string, format: "json" | "yaml"): ResolvedModule[] {
  let data: unknown;
  try {
    data = format === "json" ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError("modules file", [
      { path: "", value: undefined, expected: `valid ${format.toUpperCase()} (${(e as Error).message.split("\n")[0]})` },
    ]);
  }
  return resolveModules(data);
}

/** Typed helper for definitions in code (checks the shape at compile time; validation at run time). */
export function defineModule(def: ModuleDefinition): ModuleDefinition {
  return def;
}
