/**
 * The `holdfast` command line: parsing (node:util parseArgs) and the commands. `cli.ts` is the bin.
 */
import { spawn } from "node:child_process";
import { readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { parseArgs } from "node:util";
import { ConfigError, describeValue } from "holdfast";
import type { ModuleState } from "holdfast";
import { formatLogLine, type ModuleLogRecord } from "holdfast";
import { generateKey } from "holdfast";
import { generateToken, hashToken } from "./auth.js";
import { ApiClient, ApiError } from "./client.js";
import { checkConfigFileFully, loadConfig, redactedConfig } from "./config.js";
import { COMMANDS, type ClusterState } from "./daemon.js";
import { tarGz } from "./tar.js";

export const USAGE = `usage: holdfast COMMAND [options]

Daemon and setup:
  daemon --config FILE [--node-id ID] [--trace]
                                           run this node's modules (systemd: Type=notify); --trace: every
                                           membership, module, checker, farm and replication event as a
                                           JSON line on stdout (kind "trace")
  config check FILE [--node-id ID]         print OK, or every problem with its path and value (exit 0/1)
  keygen                                   print a new cluster key (base64)
  token new ROLE [NAME]                    print a new API token and its config entry (role: admin|control|monitor)
  token hash TOKEN                         print the sha256 of a token (for api.tokens)

Operation (against the control API):
  state [MODULE] [--json]                  module states; exit code: 0 serving (UP/PRIM/ALONE), 1 SECOND,
                                           2 WAIT or in transition or not ready, 3 STOP (the highest shown)
  start|stop|restart|stopstart|swap|prim|second|forcestop MODULE [--force]
                                           run a command (prim --force: make stale data primary)
  resync|fullsync MODULE                   mirror with replicated data, on its primary: send the secondary
                                           every block that differs (resync) or the whole tree (fullsync)
  logs MODULE [-f] [-n N] [--json]         the module's event log (-f: follow)
  exec MODULE -- CMD [ARGS...]             mirror with replicated data, on its primary's machine, as root: run
                                           CMD in the mount's namespace (where the application sees the
                                           replicated directory; HOLDFAST_MOUNT names it); exit code: CMD's
  snapshot [-o FILE]                       logs, config (secrets redacted) and states as one .tar.gz

Which node (default http://127.0.0.1:9453, or HOLDFAST_URL):
  --node URL|ID      one node (an ID is looked up in --config)
  --all              every node of --config (or HOLDFAST_CONFIG)
  --config FILE      the daemon config (node URLs)
Token (monitor for reading, control for commands, admin for snapshot):
  --token T | --token-file F | HOLDFAST_TOKEN | HOLDFAST_TOKEN_FILE
TLS: --ca FILE (trust this CA), --insecure (accept any certificate)
`;

/** Exit codes. */
export const EXIT = { ok: 0, second: 1, wait: 2, stop: 3, failure: 10, usage: 64 } as const;

export interface CliIO {
  out(s: string): void;
  err(s: string): void;
  env: Readonly<Record<string, string | undefined>>;
}

export const processIO: CliIO = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  env: process.env,
};

const OPTIONS = {
  config: { type: "string", short: "c" },
  "node-id": { type: "string" },
  node: { type: "string" },
  all: { type: "boolean", short: "a" },
  token: { type: "string" },
  "token-file": { type: "string" },
  ca: { type: "string" },
  insecure: { type: "boolean" },
  json: { type: "boolean" },
  follow: { type: "boolean", short: "f" },
  n: { type: "string", short: "n" },
  force: { type: "boolean" },
  output: { type: "string", short: "o" },
  help: { type: "boolean", short: "h" },
  trace: { type: "boolean" },
} as const;

export type CliCommand =
  | { readonly kind: "help" }
  | { readonly kind: "daemon"; readonly config: string; readonly nodeId?: string; readonly trace?: boolean }
  | { readonly kind: "config-check"; readonly file: string; readonly nodeId?: string }
  | { readonly kind: "keygen" }
  | { readonly kind: "token-new"; readonly role: "admin" | "control" | "monitor"; readonly name: string }
  | { readonly kind: "token-hash"; readonly token: string }
  | { readonly kind: "state"; readonly module?: string; readonly json: boolean; readonly target: Target }
  | { readonly kind: "command"; readonly command: (typeof COMMANDS)[number]; readonly module: string; readonly force: boolean; readonly target: Target }
  | { readonly kind: "logs"; readonly module: string; readonly follow: boolean; readonly n: number; readonly json: boolean; readonly target: Target }
  | { readonly kind: "snapshot"; readonly output?: string; readonly target: Target }
  | { readonly kind: "exec"; readonly module: string; readonly argv: readonly [string, ...string[]]; readonly target: Target };

/** Where and how to reach the API. */
export interface Target {
  readonly node?: string;
  readonly all: boolean;
  readonly config?: string;
  readonly token?: string;
  readonly tokenFile?: string;
  readonly ca?: string;
  readonly insecure: boolean;
}

/** A command line that makes no sense: printed with the usage, exit 64. */
export class UsageError extends Error {}

/** Parses argv (without `node` and the script). Throws {@link UsageError}. */
export function parseCli(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = {}): CliCommand {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values: v, tokens } = parsed;
  // What follows `--` is a command line of its own (exec), never options of this one.
  const end = tokens.find((t) => t.kind === "option-terminator")?.index ?? argv.length;
  const p = parsed.positionals.slice(0, tokens.filter((t) => t.kind === "positional" && t.index < end).length);
  const afterTerminator = argv.slice(end + 1);
  if (v.help || p.length === 0 || p[0] === "help") return { kind: "help" };
  if (p[0] !== "exec" && end < argv.length) throw new UsageError(`\`--\` only applies to exec, got ${JSON.stringify(afterTerminator.join(" "))} after it`);
  const [cmd, ...rest] = p as [string, ...string[]];
  const nodeId = v["node-id"] ?? env.HOLDFAST_NODE;
  const target: Target = {
    ...(v.node !== undefined ? { node: v.node } : {}),
    all: v.all === true,
    ...((v.config ?? env.HOLDFAST_CONFIG) !== undefined ? { config: (v.config ?? env.HOLDFAST_CONFIG) as string } : {}),
    ...(v.token !== undefined ? { token: v.token } : {}),
    ...(v["token-file"] !== undefined ? { tokenFile: v["token-file"] } : {}),
    ...(v.ca !== undefined ? { ca: v.ca } : {}),
    insecure: v.insecure === true,
  };
  const arity = (n: number, what: string) => {
    if (rest.length !== n) throw new UsageError(`${cmd}: expected ${what}`);
  };
  if (target.node !== undefined && target.all) throw new UsageError("--node and --all exclude each other");
  if (target.all && target.config === undefined) throw new UsageError("--all needs --config FILE (or HOLDFAST_CONFIG) to know the nodes");
  switch (cmd) {
    case "daemon": {
      arity(0, "no arguments (daemon --config FILE)");
      if (v.config === undefined) throw new UsageError("daemon: --config FILE is required");
      return { kind: "daemon", config: v.config, ...(nodeId !== undefined ? { nodeId } : {}), ...(v.trace ? { trace: true } : {}) };
    }
    case "config": {
      if (rest[0] !== "check" || rest.length !== 2) throw new UsageError("config: expected `config check FILE`");
      return { kind: "config-check", file: rest[1] as string, ...(nodeId !== undefined ? { nodeId } : {}) };
    }
    case "keygen":
      arity(0, "no arguments");
      return { kind: "keygen" };
    case "token": {
      if (rest[0] === "hash" && rest.length === 2) return { kind: "token-hash", token: rest[1] as string };
      if (rest[0] === "new" && (rest.length === 2 || rest.length === 3)) {
        const role = rest[1] as string;
        if (role !== "admin" && role !== "control" && role !== "monitor") throw new UsageError(`token new: role must be admin, control or monitor, got ${JSON.stringify(role)}`);
        return { kind: "token-new", role, name: rest[2] ?? role };
      }
      throw new UsageError("token: expected `token new ROLE [NAME]` or `token hash TOKEN`");
    }
    case "state":
      if (rest.length > 1) throw new UsageError("state: expected at most one MODULE");
      return { kind: "state", ...(rest[0] !== undefined ? { module: rest[0] } : {}), json: v.json === true, target };
    case "logs": {
      arity(1, "logs MODULE");
      const n = v.n === undefined ? 200 : Number(v.n);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`logs: -n expects a positive integer, got ${JSON.stringify(v.n)}`);
      return { kind: "logs", module: rest[0] as string, follow: v.follow === true, n, json: v.json === true, target };
    }
    case "snapshot":
      arity(0, "no arguments (snapshot [-o FILE])");
      return { kind: "snapshot", ...(v.output !== undefined ? { output: v.output } : {}), target };
    case "exec": {
      const usage = "exec MODULE -- CMD [ARGS...]";
      if (rest.length === 0) throw new UsageError(`exec: expected ${usage}`);
      if (end === argv.length) throw new UsageError(`exec: expected \`--\` between MODULE and the command (${usage}), got ${JSON.stringify(rest.slice(1).join(" ") || "nothing")} after ${rest[0]}`);
      if (rest.length > 1) throw new UsageError(`exec: expected one MODULE before \`--\` (${usage}), got ${rest.map((x) => JSON.stringify(x)).join(", ")}`);
      const [cmd0, ...args] = afterTerminator;
      if (cmd0 === undefined || cmd0 === "") throw new UsageError(`exec: expected a command after \`--\` (${usage})`);
      if (target.all) throw new UsageError("exec: --all does not apply: the command runs on one machine, the primary's (give --node or run it there)");
      return { kind: "exec", module: rest[0] as string, argv: [cmd0, ...args], target };
    }
    default:
      if ((COMMANDS as readonly string[]).includes(cmd)) {
        arity(1, `${cmd} MODULE`);
        if (v.force && cmd !== "prim") throw new UsageError("--force only applies to prim");
        return { kind: "command", command: cmd as (typeof COMMANDS)[number], module: rest[0] as string, force: v.force === true, target };
      }
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

/** The token to send: --token, --token-file, HOLDFAST_TOKEN, HOLDFAST_TOKEN_FILE (first found). */
export function resolveToken(t: Target, env: Readonly<Record<string, string | undefined>>): string | undefined {
  if (t.token !== undefined) return t.token;
  const file = t.tokenFile ?? (env.HOLDFAST_TOKEN === undefined ? env.HOLDFAST_TOKEN_FILE : undefined);
  if (t.tokenFile === undefined && env.HOLDFAST_TOKEN !== undefined) return env.HOLDFAST_TOKEN;
  if (file !== undefined) {
    try {
      return readFileSync(file, "utf8").trim();
    } catch (e) {
      throw new UsageError(`cannot read the token file ${file}: ${(e as Error).message}`);
    }
  }
  return undefined;
}

/** The API URLs a command goes to, each with its node label. */
export function resolveNodes(t: Target, env: Readonly<Record<string, string | undefined>>): { label: string; url: string }[] {
  if (t.all || (t.node !== undefined && !/^https?:\/\//.test(t.node))) {
    if (t.config === undefined) throw new UsageError(`--node ${t.node ?? ""} is not a URL: give --config FILE to look the node up`);
    const cfg = loadConfig(t.config, { checkFiles: false });
    if (t.all) return cfg.nodes.map((n) => ({ label: n.id, url: n.apiUrl }));
    const n = cfg.nodes.find((x) => x.id === t.node);
    if (!n) throw new UsageError(`no node ${JSON.stringify(t.node)} in ${t.config} (nodes: ${cfg.nodes.map((x) => x.id).join(", ")})`);
    return [{ label: n.id, url: n.apiUrl }];
  }
  const url = t.node ?? env.HOLDFAST_URL ?? "http://127.0.0.1:9453";
  return [{ label: url, url }];
}

/** Exit code of one module state (see USAGE). */
export function stateExitCode(s: { state: ModuleState; ready: boolean; transient: boolean }): number {
  if (s.state === "STOP" && !s.transient) return EXIT.stop;
  if (s.transient || !s.ready || s.state === "WAIT" || s.state === "STOP") return EXIT.wait;
  if (s.state === "SECOND") return EXIT.second;
  return EXIT.ok;
}

function pad(rows: string[][]): string {
  const w = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i] ?? 0))).join("  ")).join("\n") + "\n";
}

/** Runs a parsed command line; resolves with the exit code. */
export async function runCli(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  let cmd: CliCommand;
  try {
    cmd = parseCli(argv, io.env);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`holdfast: ${e.message}\n\n${USAGE}`);
      return EXIT.usage;
    }
    throw e;
  }
  try {
    return await execute(cmd, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`holdfast: ${e.message}\n`);
      return EXIT.usage;
    }
    if (e instanceof ConfigError) {
      io.err(`holdfast: ${e.message.split(":")[0]}:\n${e.problems.map((p) => `  ${p.path === "" ? "(root)" : p.path}: expected ${p.expected}, got ${describeValue(p.value)}\n`).join("")}`);
      return EXIT.failure;
    }
    if (e instanceof ApiError) {
      const hint = e.status === 401 ? " (give a token: --token, --token-file or HOLDFAST_TOKEN)" : e.status === 403 ? " (this token's role does not allow it)" : "";
      io.err(`holdfast: ${e.message}${hint}\n`);
      return EXIT.failure;
    }
    io.err(`holdfast: ${(e as Error).message}\n`);
    return EXIT.failure;
  }
}

async function execute(cmd: CliCommand, io: CliIO): Promise<number> {
  switch (cmd.kind) {
    case "help":
      io.out(USAGE);
      return EXIT.ok;
    case "keygen":
      io.out(generateKey() + "\n");
      return EXIT.ok;
    case "token-hash":
      io.out(hashToken(cmd.token) + "\n");
      return EXIT.ok;
    case "token-new": {
      const tok = generateToken();
      io.out(`token: ${tok}\nconfig entry (api.tokens): { name: ${JSON.stringify(cmd.name)}, role: ${cmd.role}, sha256: "${hashToken(tok)}" }\n`);
      return EXIT.ok;
    }
    case "config-check": {
      const { problems, warnings } = checkConfigFileFully(cmd.file, cmd.nodeId !== undefined ? { nodeId: cmd.nodeId } : {});
      // Warnings are printed but do not fail the check.
      for (const w of warnings) io.out(`${cmd.file}: warning: ${w.path}: expected ${w.expected}, got ${describeValue(w.value)}\n`);
      if (problems.length === 0) {
        io.out(`OK ${cmd.file}\n`);
        return EXIT.ok;
      }
      for (const p of problems) io.out(`${cmd.file}: ${p.path === "" ? "(root)" : p.path}: expected ${p.expected}, got ${describeValue(p.value)}\n`);
      return 1;
    }
    case "daemon": {
      const { runDaemon } = await import("./run.js");
      await runDaemon({ config: cmd.config, ...(cmd.nodeId !== undefined ? { nodeId: cmd.nodeId } : {}), ...(cmd.trace ? { trace: true } : {}) });
      return -1; // keeps running; the signal handlers exit
    }
    case "state":
      return state(cmd, io);
    case "command":
      return command(cmd, io);
    case "logs":
      return logs(cmd, io);
    case "snapshot":
      return snapshot(cmd, io);
    case "exec":
      return exec(cmd, io);
  }
}

function clients(t: Target, io: CliIO): { label: string; client: ApiClient }[] {
  const token = resolveToken(t, io.env);
  const ca = t.ca === undefined ? undefined : readFileSync(t.ca, "utf8");
  return resolveNodes(t, io.env).map(({ label, url }) => ({
    label,
    client: new ApiClient(url, { ...(token !== undefined ? { token } : {}), ...(ca !== undefined ? { ca } : {}), insecure: t.insecure }),
  }));
}

async function state(cmd: Extract<CliCommand, { kind: "state" }>, io: CliIO): Promise<number> {
  const targets = clients(cmd.target, io);
  const results = await Promise.all(targets.map(async (t) => ({ t, r: await t.client.call<ClusterState>("GET", "api/v1/state").catch((e: unknown) => e as Error) })));
  let code: number = EXIT.ok;
  const rows: string[][] = [["NODE", "MODULE", "STATE", "READY", "REASON"]];
  const json: unknown[] = [];
  let shown = 0;
  for (const { t, r } of results) {
    if (r instanceof Error) {
      io.err(`holdfast: ${r.message}\n`);
      code = Math.max(code, EXIT.failure);
      continue;
    }
    json.push(r);
    // One node: every node as it sees them (peers from heartbeats). --all: each node's own modules.
    for (const n of r.nodes) {
      if (cmd.target.all && !n.self) continue;
      for (const [name, s] of Object.entries(n.modules)) {
        if (cmd.module !== undefined && name !== cmd.module) continue;
        shown++;
        if (n.self) code = Math.max(code, stateExitCode(s));
        const st = s.transient && s.next ? `${s.state}->${s.next}` : s.state;
        rows.push([n.self ? n.id : `${n.id}${n.up ? "" : " (down)"}`, name, st, s.ready ? "ready" : s.transient ? "transient" : "-", s.reason]);
      }
    }
    void t;
  }
  if (json.length === 0) return code;
  if (cmd.module !== undefined && shown === 0) {
    io.err(`holdfast: no module ${JSON.stringify(cmd.module)}\n`);
    return EXIT.failure;
  }
  io.out(cmd.json ? JSON.stringify(cmd.target.all ? json : json[0], null, 2) + "\n" : pad(rows));
  return code;
}

async function command(cmd: Extract<CliCommand, { kind: "command" }>, io: CliIO): Promise<number> {
  let code: number = EXIT.ok;
  for (const { label, client } of clients(cmd.target, io)) {
    try {
      const r = await client.call<{ state: string; next?: string; transient: boolean; reason: string }>(
        "POST",
        `api/v1/modules/${encodeURIComponent(cmd.module)}/commands/${cmd.command}${cmd.force ? "?force=1" : ""}`,
      );
      io.out(`${label}: ${cmd.command} ${cmd.module}: accepted, now ${r.state}${r.transient && r.next ? ` -> ${r.next}` : ""} (${r.reason})\n`);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 0 || e.status === 401) throw e;
      io.err(`${label}: ${cmd.command} ${cmd.module}: refused: ${e.message}\n`);
      code = EXIT.failure;
    }
  }
  return code;
}

async function logs(cmd: Extract<CliCommand, { kind: "logs" }>, io: CliIO): Promise<number> {
  const targets = clients(cmd.target, io);
  const path = `api/v1/modules/${encodeURIComponent(cmd.module)}/logs?n=${cmd.n}${cmd.follow ? "&follow=1" : ""}`;
  const show = (r: ModuleLogRecord) => io.out(cmd.json ? JSON.stringify(r) + "\n" : formatLogLine(r) + "\n");
  if (!cmd.follow) {
    const all: ModuleLogRecord[] = [];
    for (const { client } of targets) {
      const text = await client.call<string>("GET", path);
      for (const l of String(text).split("\n")) if (l.trim()) all.push(JSON.parse(l) as ModuleLogRecord);
    }
    all.sort((a, b) => a.ts.localeCompare(b.ts));
    all.forEach(show);
    return EXIT.ok;
  }
  await Promise.all(
    targets.map(async ({ client }) => {
      const res = await client.open("GET", path);
      let buf = "";
      for await (const chunk of res) {
        buf += String(chunk);
        let i: number;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim()) show(JSON.parse(line) as ModuleLogRecord);
        }
      }
    }),
  );
  return EXIT.ok;
}

/** What `GET /api/v1/modules/:m/namespace` answers. */
interface NamespaceAnswer {
  readonly node: string;
  readonly mode: "private" | "host";
  readonly pid?: number;
  readonly mountPoint: string;
  readonly mntNs?: string;
  readonly bootId?: string;
}

function readTrim(path: string, f: (p: string) => string): string | undefined {
  try {
    return f(path).trim();
  } catch {
    return undefined;
  }
}

/**
 * `exec MODULE -- CMD`: asks the node's API where the module's mount is, checks that it is on this machine (boot
 * id) and that the namespace is the one named (its id), then runs CMD there (nsenter, in the caller's working
 * directory), or plainly when the mount is in the host namespace. Resolves with CMD's exit code (128 + the
 * signal's number when a signal ended it); failures before CMD runs are errors (exit 10).
 */
async function exec(cmd: Extract<CliCommand, { kind: "exec" }>, io: CliIO): Promise<number> {
  const targets = clients(cmd.target, io);
  const { label, client } = targets[0] as (typeof targets)[number];
  let ns: NamespaceAnswer;
  try {
    ns = await client.call<NamespaceAnswer>("GET", `api/v1/modules/${encodeURIComponent(cmd.module)}/namespace`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 409) throw new Error(`exec ${cmd.module}: ${e.message.replace(/^\S+: 409 /, "")}`, { cause: e });
    throw e;
  }
  const bootId = readTrim("/proc/sys/kernel/random/boot_id", (p) => readFileSync(p, "utf8"));
  if (ns.bootId !== undefined && bootId !== undefined && ns.bootId !== bootId) {
    throw new Error(`exec ${cmd.module}: the daemon at ${label} (node ${ns.node}) runs on another machine: run holdfast exec on that machine`);
  }
  let argv: string[] = [...cmd.argv];
  if (ns.mode === "private") {
    if (typeof ns.pid !== "number") throw new Error(`exec ${cmd.module}: the daemon at ${label} named no namespace pid (answer: ${JSON.stringify(ns)})`);
    const link = `/proc/${ns.pid}/ns/mnt`;
    const here = readTrim(link, readlinkSync);
    if (ns.mntNs !== undefined && here !== ns.mntNs) {
      throw new Error(`exec ${cmd.module}: ${link} is ${here ?? "absent"} here, not the namespace ${ns.mntNs} node ${ns.node} named (another pid namespace, or the helper just restarted: try again)`);
    }
    if (process.geteuid?.() !== 0) throw new Error(`exec ${cmd.module}: entering the mount namespace of pid ${ns.pid} needs root (run it with sudo)`);
    argv = ["nsenter", `--mount=${link}`, `--wd=${process.cwd()}`, "--", ...argv];
  }
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: "inherit", env: { ...io.env, HOLDFAST_MOUNT: ns.mountPoint, HOLDFAST_MODULE: cmd.module } });
  // As system(3): a terminal's Ctrl-C / Ctrl-\ reach CMD (same process group), not this process; a SIGTERM or
  // SIGHUP sent to this process is passed on.
  const ignore = (): void => undefined;
  const pass = (sig: NodeJS.Signals) => () => child.kill(sig);
  const handlers: [NodeJS.Signals, () => void][] = [["SIGINT", ignore], ["SIGQUIT", ignore], ["SIGTERM", pass("SIGTERM")], ["SIGHUP", pass("SIGHUP")]];
  for (const [sig, h] of handlers) process.on(sig, h);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.on("error", (e) => reject(new Error(`exec ${cmd.module}: cannot run ${argv[0]}: ${e.message}`)));
      child.on("exit", (code, signal) => resolve(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0)));
    });
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
}

async function snapshot(cmd: Extract<CliCommand, { kind: "snapshot" }>, io: CliIO): Promise<number> {
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const files: Record<string, string> = {};
  let failures = 0;
  for (const { label, client } of clients(cmd.target, io)) {
    const dir = label.replace(/^https?:\/\//, "").replace(/[^A-Za-z0-9._-]/g, "_");
    try {
      const r = await client.call<{ files: Record<string, string> }>("GET", "api/v1/snapshot");
      for (const [name, text] of Object.entries(r.files)) files[`holdfast-snapshot-${stamp}/${dir}/${name}`] = text;
    } catch (e) {
      failures++;
      files[`holdfast-snapshot-${stamp}/${dir}/ERROR.txt`] = `${(e as Error).message}\n`;
      io.err(`holdfast: ${(e as Error).message}\n`);
    }
  }
  if (cmd.target.config !== undefined) {
    try {
      files[`holdfast-snapshot-${stamp}/config.redacted.json`] = JSON.stringify(redactedConfig(loadConfig(cmd.target.config, { checkFiles: false })), null, 2) + "\n";
    } catch {
      /* a broken local config must not prevent the snapshot */
    }
  }
  const out = cmd.output ?? `holdfast-snapshot-${stamp}.tar.gz`;
  writeFileSync(out, tarGz(files));
  io.out(`${out}: ${Object.keys(files).length} files${failures ? ` (${failures} node(s) unreachable, see ERROR.txt)` : ""}\n`);
  return failures > 0 ? EXIT.failure : EXIT.ok;
}
