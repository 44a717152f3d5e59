/**
 * The hooks' environment (issue "Hardening", item 6): a script hook sees the fixed list, the module's `hookEnv`
 * (passed and set variables) and holdfast's own `HOLDFAST_*` variables, and nothing else of the daemon's
 * environment (not `HOLDFAST_TOKEN`, not an unlisted variable); the module codec checks `hookEnv` path by path.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { resolveModule, type HookSpec } from "../../src/core/module/config.js";
import { hookEnvironment, runHook } from "../../src/runtime/hooks.js";

const dir = mkdtempSync(join(tmpdir(), "hf-hook-env-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A /bin/sh script printing its environment, one NAME=value per line. */
const script = join(dir, "env.sh");
writeFileSync(script, "#!/bin/sh\nexec env\n");
chmodSync(script, 0o755);

/** Variables a shell adds by itself. */
const SHELL_OWN = new Set(["PWD", "OLDPWD", "SHLVL", "_"]);

const DAEMON_ENV: Record<string, string> = {
  HOLDFAST_TOKEN: "s3cret",
  HOLDFAST_TOKEN_FILE: "/etc/holdfast/token",
  HOLDFAST_LAB_PREFIX: "hfxxxxxx",
  AWS_SECRET_ACCESS_KEY: "nope",
  PGDATA: "/var/lib/pg",
  MY_A: "a",
  MY_B: "b",
  MYC: "not matched by MY_*",
  PATH: "/usr/bin:/bin",
  HOME: "/root",
  LANG: "C.UTF-8",
  LC_TIME: "C",
  TZ: "UTC",
};
let saved: NodeJS.ProcessEnv;
beforeEach(() => {
  saved = { ...process.env };
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, DAEMON_ENV);
});
afterEach(() => {
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, saved);
});

function parse(lines: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf("=");
    if (i > 0 && !SHELL_OWN.has(l.slice(0, i))) out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

const HOST_ENV = { HOLDFAST_NODE: "n1", HOLDFAST_CLUSTER: "c1", HOLDFAST_PGROUP_RECORD: join(dir, "m.pgroups") };
const base = { module: "m", state: "WAIT", nextState: "UP", reason: "command start", defaultTimeout: 5000, env: HOST_ENV } as const;

describe("script hook environment", () => {
  it("is the fixed list, the module's hookEnv and holdfast's variables, nothing else", async () => {
    const def = resolveModule({ name: "m", kind: "farm", hooks: { start_both: script }, hookEnv: { pass: ["PGDATA", "MY_*", "UNSET_ONE"], set: { APP_MODE: "ha", LANG: "en_US.UTF-8" } } });
    const r = await runHook({ ...base, hook: "start_both", spec: def.hooks.start_both as HookSpec });
    expect(r.ok).toBe(true);
    expect(parse(r.output)).toEqual({
      PATH: "/usr/bin:/bin",
      HOME: "/root",
      LANG: "en_US.UTF-8",
      LC_TIME: "C",
      TZ: "UTC",
      PGDATA: "/var/lib/pg",
      MY_A: "a",
      MY_B: "b",
      APP_MODE: "ha",
      ...HOST_ENV,
      HOLDFAST_MODULE: "m",
      HOLDFAST_HOOK: "start_both",
      HOLDFAST_STATE: "WAIT",
      HOLDFAST_NEXT_STATE: "UP",
      HOLDFAST_REASON: "command start",
    });
  });

  it("without hookEnv: the fixed list and holdfast's variables only", async () => {
    const r = await runHook({ ...base, hook: "start_both", spec: script });
    const env = parse(r.output);
    expect(Object.keys(env).sort()).toEqual(
      ["PATH", "HOME", "LANG", "LC_TIME", "TZ", ...Object.keys(HOST_ENV), "HOLDFAST_MODULE", "HOLDFAST_HOOK", "HOLDFAST_STATE", "HOLDFAST_NEXT_STATE", "HOLDFAST_REASON"].sort(),
    );
  });

  it("a script run through runHook by a function hook gets the function hook's variables and hookEnv", async () => {
    let inner: readonly string[] = [];
    const fn: HookSpec = async (ctx) => {
      const r = await runHook({ ...ctx, spec: script, defaultTimeout: 5000, env: { HOLDFAST_MOUNT: "/srv/db" } });
      inner = r.output;
    };
    const def = resolveModule({ name: "m", kind: "mirror", hooks: { start_prim: fn }, hookEnv: { pass: ["PGDATA"] } });
    const r = await runHook({ ...base, hook: "start_prim", spec: def.hooks.start_prim as HookSpec });
    expect(r.ok).toBe(true);
    const env = parse(inner);
    expect(env).toMatchObject({ PGDATA: "/var/lib/pg", HOLDFAST_NODE: "n1", HOLDFAST_CLUSTER: "c1", HOLDFAST_MOUNT: "/srv/db", HOLDFAST_PGROUP_RECORD: HOST_ENV.HOLDFAST_PGROUP_RECORD });
    expect(Object.keys(env).filter((k) => /TOKEN|SECRET|MY_|LAB/.test(k))).toEqual([]);
  });

  it("never passes a HOLDFAST_ variable of the daemon, and has a PATH", () => {
    const env = hookEnvironment({ HOLDFAST_TOKEN: "x", HOLDFAST_NODE: "spoofed" }, { pass: ["H*"] }, {});
    expect(env).toEqual({ PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" });
  });
});

function problems(fn: () => unknown): [string, unknown][] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => [p.path, p.value]);
    throw e;
  }
  throw new Error("no error");
}

describe("hookEnv in the module codec", () => {
  it("reports each mistake at its path", () => {
    expect(problems(() => resolveModule({ name: "m", kind: "farm", hookEnv: { pass: ["PGDATA", "HOLDFAST_TOKEN", "a-b"] } }))).toEqual([
      ["hookEnv.pass.1", "HOLDFAST_TOKEN"],
      ["hookEnv.pass.2", "a-b"],
    ]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", hookEnv: { set: { OK: "1", HOLDFAST_NODE: "x", N: 3 } } }))).toEqual([
      ["hookEnv.set.HOLDFAST_NODE", "x"],
      ["hookEnv.set.N", 3],
    ]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", hookEnv: { passthrough: ["A"] } }))).toEqual([["hookEnv.passthrough", ["A"]]]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", hookEnv: { pass: "PGDATA" } }))).toEqual([["hookEnv.pass", "PGDATA"]]);
    expect(problems(() => resolveModule({ name: "m", kind: "farm", hooks: { start_both: { path: "/x", env: { pass: ["A"] } } } }))).toEqual([
      ["hooks.start_both.env", { pass: ["A"] }],
    ]);
  });

  it("copies hookEnv into every hook, and a resolved module resolves to itself", () => {
    const fn = async () => {};
    const r = resolveModule({ name: "m", kind: "farm", hooks: { start_both: "/s", stop_both: { path: "/t", timeout: 5 }, prestart: fn }, hookEnv: { pass: ["A"] } });
    expect(r.hookEnv).toEqual({ pass: ["A"] });
    expect(r.hooks).toEqual({ start_both: { path: "/s", env: { pass: ["A"] } }, stop_both: { path: "/t", timeout: 5, env: { pass: ["A"] } }, prestart: { fn, env: { pass: ["A"] } } });
    expect(resolveModule(r)).toEqual(r);
    expect(resolveModule({ name: "m", kind: "farm", hooks: { start_both: "/s" } }).hooks).toEqual({ start_both: "/s" });
  });
});
