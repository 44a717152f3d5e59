/**
 * The reference daemon's configuration file (JSON or YAML): a node's configuration exactly as a program passes
 * it to the SDK's `Host` (cluster, node, modules, `farm:`, `replication:`, directories; decoded by the same
 * codec), plus the daemon's control API (bind address, port, tokens, TLS). Every problem is reported with its
 * dotted path and the value found there, e.g. `cluster.nodes.1.addresses.0: expected an IPv4 or IPv6 address, got "x"`.
 *
 * ```yaml
 * cluster:
 *   id: shop
 *   keyFile: /etc/holdfast/cluster.key     # `holdfast keygen > /etc/holdfast/cluster.key`
 *   preset: lan
 *   nodes:
 *     - { id: n1, addresses: [198.18.0.10, 198.18.1.10] }
 *     - { id: n2, addresses: [198.18.0.11, 198.18.1.11] }
 * node: n1                                  # or `--node` / HOLDFAST_NODE
 * modules:
 *   - { name: web, kind: farm, hooks: { start_both: ./start.sh, stop_both: ./stop.sh } }
 * api:
 *   port: 9453
 *   tokens: [{ name: ops, role: admin, sha256: "<sha256 of the token in hex>" }]
 * logDir: /var/log/holdfast
 * stateDir: /var/lib/holdfast
 * ```
 *
 * Relative paths (key file, tokens file, TLS files, hook scripts, directories) are relative to the
 * directory of the configuration file.
 */
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import * as t from "io-ts";
import { ConfigError, DEFAULT_LOG_DIR, DEFAULT_REPLICATION_PORT, DEFAULT_STATE_DIR, decodeHostConfig, type ConfigProblem, type FarmEntry, type HostConfig, type HostNode, type ReplicationSyncEntry } from "holdfast";
import { NonEmptyString, Port, optional, parseConfigText as parseNodeConfigText, requireNodeId as requireHostNodeId, strict } from "holdfast/config";
import { parseTokensText, TokenEntryCodec, type TokenEntry } from "./auth.js";

export { DEFAULT_LOG_DIR, DEFAULT_REPLICATION_PORT, DEFAULT_STATE_DIR, type FarmEntry, type ReplicationSyncEntry };

const WHAT = "holdfast daemon config";

/** Default TCP port of the control API (HTTP or HTTPS). */
export const DEFAULT_API_PORT = 9453;
/** Default bind address of the control API: loopback, so nothing is exposed unless configured. */
export const DEFAULT_API_BIND = "127.0.0.1";

/** The daemon's own section: its control API. */
export const ApiConfigCodec = strict({
  /** Bind address. Default 127.0.0.1 (loopback only). */
  bind: optional(NonEmptyString),
  /** TCP port. Default 9453. */
  port: optional(Port),
  /** Tokens as sha256 hashes with a role (exact: a misspelt key is an error, not dropped). */
  tokens: optional(t.array(strict(TokenEntryCodec.type.props, "token entry"))),
  /** A file of tokens, one per line: `ROLE SECRET [NAME]` where SECRET is `sha256:<hex>` or the token itself. */
  tokensFile: optional(NonEmptyString),
  /** Serve HTTPS with this certificate and key (PEM files). */
  tls: optional(strict({ cert: NonEmptyString, key: NonEmptyString })),
  /** Also serve the API (plain HTTP, same tokens) on this unix socket, created 0600: local tools, no network. */
  socket: optional(NonEmptyString),
});
type ApiConfigInput = t.TypeOf<typeof ApiConfigCodec>;

export type DaemonConfigInput = Record<string, unknown>;

/** A node of the cluster as the daemon and the CLI see it. */
export type DaemonNode = HostNode & {
  /** Bind address of this node's API. */
  readonly apiBind: string;
  /** URL of this node's API (for the CLI's `--all` and the console). */
  readonly apiUrl: string;
};

/** A decoded, checked configuration: the node's (as `Host` takes it) and the daemon's API, every default filled in. */
export type DaemonConfig = Omit<HostConfig, "nodes"> & {
  readonly nodes: readonly DaemonNode[];
  readonly api: {
    readonly bind: string;
    readonly port: number;
    readonly tokens: readonly TokenEntry[];
    readonly tokensFile: string | undefined;
    readonly tls: { readonly cert: string; readonly key: string } | undefined;
    /** Unix socket the API is also served on (absolute path), if any. */
    readonly socket: string | undefined;
  };
};

export interface LoadOptions {
  /** This node's id; overrides the file's `node`. */
  readonly nodeId?: string;
  /** Also check the files the config names (key file, tokens file, TLS files, hook scripts). Default true. */
  readonly checkFiles?: boolean;
}

/** Parses the text of a configuration file (`.json`, or YAML for anything else). */
export function parseConfigText(text: string, file: string): unknown {
  return parseNodeConfigText(text, file, WHAT);
}

/** Reads, decodes and checks a configuration file. Throws a {@link ConfigError} listing every problem. */
export function loadConfig(file: string, opts: LoadOptions = {}): DaemonConfig {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (e) {
    throw new ConfigError(WHAT, [{ path: "", value: abs, expected: `a readable file (${(e as Error).message})` }]);
  }
  return decodeConfig(parseConfigText(text, abs), { ...opts, file: abs });
}

/**
 * Decodes and checks a configuration object: the node's part by the SDK's codec (`decodeHostConfig`), the `api`
 * section here, every problem reported at once.
 */
export function decodeConfig(input: unknown, opts: LoadOptions & { file?: string } = {}): DaemonConfig {
  const checkFiles = opts.checkFiles ?? true;
  let tokens: TokenEntry[] = [];
  let tokensFile: string | undefined;
  let tls: { cert: string; key: string } | undefined;
  const host = decodeHostConfig(input, {
    what: WHAT,
    ...(opts.nodeId !== undefined ? { nodeId: opts.nodeId } : {}),
    ...(opts.checkFiles !== undefined ? { checkFiles: opts.checkFiles } : {}),
    ...(opts.file !== undefined ? { file: opts.file } : {}),
    extraProps: { api: optional(ApiConfigCodec) },
    checkExtra: (raw, abs, problems: ConfigProblem[]) => {
      const api = (raw.api ?? {}) as ApiConfigInput;
      tokens = [...(api.tokens ?? [])];
      tokensFile = api.tokensFile === undefined ? undefined : abs(api.tokensFile);
      if (tokensFile !== undefined && checkFiles) {
        try {
          tokens.push(...parseTokensText(readFileSync(tokensFile, "utf8"), "api.tokensFile"));
        } catch (e) {
          if (e instanceof ConfigError) problems.push(...e.problems);
          else problems.push({ path: "api.tokensFile", value: tokensFile, expected: `a readable tokens file (${(e as Error).message})` });
        }
      }
      tls = api.tls ? { cert: abs(api.tls.cert), key: abs(api.tls.key) } : undefined;
      if (tls && checkFiles) {
        for (const k of ["cert", "key"] as const) {
          try {
            accessSync(tls[k], constants.R_OK);
            // The private key, as ssh does: nobody but its owner may read it.
            const mode = statSync(tls[k]).mode & 0o777;
            if (k === "key" && (mode & 0o077) !== 0)
              problems.push({ path: "api.tls.key", value: tls.key, expected: `a key file only its owner may read (mode ${mode.toString(8).padStart(4, "0")} here: chmod 600 ${tls.key})` });
          } catch {
            problems.push({ path: `api.tls.${k}`, value: tls[k], expected: "a readable PEM file" });
          }
        }
      }
    },
  });
  const api = (host.raw.api ?? {}) as ApiConfigInput;
  const port = api.port ?? DEFAULT_API_PORT;
  const scheme = tls ? "https" : "http";
  const apiBind = api.bind ?? DEFAULT_API_BIND;
  return {
    ...host,
    nodes: host.nodes.map((n) => {
      const bind = n.api?.bind ?? apiBind;
      const h = n.api?.bind ?? (apiBind === "127.0.0.1" || apiBind === "0.0.0.0" || apiBind === "::" ? n.addresses[0] ?? "127.0.0.1" : apiBind);
      return { ...n, apiBind: bind, apiUrl: n.api?.url ?? `${scheme}://${h.includes(":") ? `[${h}]` : h}:${port}` };
    }),
    api: { bind: apiBind, port, tokens, tokensFile, tls, socket: api.socket === undefined ? undefined : resolve(opts.file === undefined ? process.cwd() : dirname(opts.file), api.socket) },
  };
}

/** The problems of a configuration file, or [] when it is valid (what `holdfast config check` prints). */
export function checkConfigFile(file: string, opts: LoadOptions = {}): ConfigProblem[] {
  return checkConfigFileFully(file, opts).problems;
}

/**
 * The problems of a configuration file and, when it is valid, its warnings (accepted, but probably a mistake:
 * a VIP in no node's subnet). `holdfast config check` prints both; only problems make it fail.
 */
export function checkConfigFileFully(file: string, opts: LoadOptions = {}): { readonly problems: ConfigProblem[]; readonly warnings: ConfigProblem[] } {
  try {
    return { problems: [], warnings: [...loadConfig(file, opts).warnings] };
  } catch (e) {
    if (e instanceof ConfigError) return { problems: [...e.problems], warnings: [] };
    throw e;
  }
}

/** The node this daemon runs as; throws a ConfigError naming the option when none was given. */
export function requireNodeId(cfg: DaemonConfig): string {
  return requireHostNodeId(cfg, WHAT);
}

/** The configuration as plain data with every secret replaced (for the support snapshot). */
export function redactedConfig(cfg: DaemonConfig): unknown {
  const r = JSON.parse(JSON.stringify(cfg.raw)) as Record<string, unknown> & { api?: { tokens?: { sha256?: string }[] }; cluster?: { key?: string } };
  for (const tok of r.api?.tokens ?? []) tok.sha256 = "(redacted)";
  if (r.cluster?.key !== undefined) r.cluster.key = "(redacted)";
  return r;
}
