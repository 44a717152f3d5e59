/**
 * The daemon's HTTP control API (node:http, or node:https when TLS is configured). Routes:
 *
 * | route                                         | role    | what |
 * | --------------------------------------------- | ------- | ---- |
 * | `GET /health/:module`                          | none    | 200 when the module is UP, PRIM or ALONE and ready on this node, else 404 (cloud load balancer health check) |
 * | `GET /api/v1/state`                            | monitor | nodes, view, modules (state, ready, transient, reason, details), checkers |
 * | `GET /api/v1/modules/:m`                       | monitor | this node's status of one module (`{ state, ready, ..., upToDate, generation }`, what the `module` checker reads) |
 * | `GET /api/v1/modules/:m/logs?n=100&follow=1`   | monitor | event log as JSON lines; `follow=1` keeps streaming; `Accept: text/event-stream` gives SSE |
 * | `GET /api/v1/modules/:m/namespace`             | monitor | where the replicated directory is mounted on this node, for `holdfast exec`: `{ mode: "private", pid, mountPoint, mntNs, bootId }` or `{ mode: "host", ... }`; 409 unless primary here (entering the namespace needs root on the node: the token only tells where it is) |
 * | `POST /api/v1/modules/:m/commands/:cmd?force=1`| control | start, stop, restart, stopstart, swap, prim (force=1 for stale data), second, forcestop, resync, fullsync |
 * | `GET /api/v1/snapshot`                         | admin   | logs, redacted config, state and metrics as `{ files: { name: text } }` (the CLI archives it) |
 * | `* /api/v1/nodes/:node/...`                    | (peer)  | the same API of another node of the cluster, proxied (the console uses it) |
 * | `GET /metrics`                                 | monitor | Prometheus text |
 * | `GET /`, `/console/*`                          | none    | the web console (static; it asks for a token and calls the API with it) |
 *
 * Errors are JSON `{ error, code }`: 401 without a known token, 403 when the role does not allow it,
 * 404 unknown module/route, 409 command refused by the module's state, 400 bad request.
 */
import { appendFileSync, chmodSync, existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { CommandRefusedError, HoldfastError, mirrorDriverOf } from "holdfast";
import { isPrimaryState } from "holdfast";
import { formatLogLine, type ModuleLogRecord } from "holdfast";
import { Authenticator, type Need, type TokenEntry } from "./auth.js";
import { redactedConfig } from "./config.js";
import { COMMANDS, type CommandName, type Daemon } from "./daemon.js";
import { renderMetrics } from "./metrics.js";

// `import.meta` is empty in the CommonJS build of the bin: use __dirname there.
const HERE = typeof __dirname === "string" ? __dirname : dirname(fileURLToPath(import.meta.url));
/** Where the console's static files are: beside this file, or (bundled in dist/) in the package's examples. */
export const CONSOLE_DIR = [join(HERE, "console"), join(HERE, "../examples/daemon/console")].find((d) => existsSync(join(d, "index.html"))) ?? join(HERE, "console");

const MIME: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml" };

export interface ApiServerOptions {
  readonly daemon: Daemon;
  /** Default: the daemon config's `api.bind`, or the node's own `api.bind`. */
  readonly bind?: string;
  /** Default: the daemon config's `api.port`; 0 picks a free port. */
  readonly port?: number;
}

export class ApiServer {
  readonly daemon: Daemon;
  readonly auth: Authenticator;
  private server: Server | undefined;
  private socketServer: Server | undefined;
  private readonly streams = new Set<ServerResponse>();
  private readonly opts: ApiServerOptions;

  constructor(opts: ApiServerOptions) {
    this.opts = opts;
    this.daemon = opts.daemon;
    this.auth = new Authenticator(opts.daemon.config.api.tokens);
  }

  /** Listens; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    const cfg = this.daemon.config;
    const self = cfg.nodes.find((n) => n.id === this.daemon.nodeId);
    const bind = this.opts.bind ?? self?.apiBind ?? cfg.api.bind;
    const port = this.opts.port ?? cfg.api.port;
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((e: unknown) => this.sendError(res, e));
    };
    this.server = cfg.api.tls
      ? createHttpsServer({ cert: readFileSync(cfg.api.tls.cert), key: readFileSync(cfg.api.tls.key) }, handler)
      : createHttpServer(handler);
    const server = this.server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, bind, () => {
        server.off("error", reject);
        resolve();
      });
    });
    if (cfg.api.socket !== undefined) await this.listenSocket(cfg.api.socket, handler);
    return server.address() as AddressInfo;
  }

  /** The same API on a unix socket (plain HTTP: it never leaves the machine), readable by root only. */
  private async listenSocket(path: string, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<void> {
    rmSync(path, { force: true });
    const server = createHttpServer(handler);
    this.socketServer = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    chmodSync(path, 0o600);
  }

  get address(): AddressInfo | undefined {
    return (this.server?.address() as AddressInfo | null) ?? undefined;
  }

  async close(): Promise<void> {
    for (const s of this.streams) s.end();
    this.streams.clear();
    const sock = this.socketServer;
    if (sock) await new Promise<void>((r) => sock.close(() => r()));
    const server = this.server;
    if (!server) return;
    await new Promise<void>((r) => server.close(() => r()));
    server.closeAllConnections?.();
  }

  // ---- routing --------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const path = url.pathname;
    const method = req.method ?? "GET";
    res.setHeader("Cache-Control", "no-store");
    res.setHeader("X-Content-Type-Options", "nosniff");

    let m: RegExpExecArray | null;
    if (method === "GET" && (m = /^\/health\/([^/]+)$/.exec(path))) return this.health(res, decodeURIComponent(m[1] as string));
    if (method === "GET" && (path === "/" || path.startsWith("/console/"))) return this.staticFile(res, path === "/" ? "/index.html" : path.slice("/console".length));

    const need: Need | undefined =
      method === "GET" && (path === "/metrics" || path.startsWith("/api/v1/")) && path !== "/api/v1/snapshot"
        ? "read"
        : method === "GET" && path === "/api/v1/snapshot"
          ? "admin"
          : method === "POST" && /^\/api\/v1\/modules\/[^/]+\/commands\/[^/]+$/.test(path)
            ? "command"
            : undefined;
    if ((m = /^\/api\/v1\/nodes\/([^/]+)(\/.*)$/.exec(path))) {
      // Proxy to a peer's API (the console reaches every node through the one it was loaded from). The
      // peer checks the token itself; here it must at least be known.
      const a = this.auth.check(req.headers.authorization, "read");
      if (!a.ok) return this.json(res, a.status, { error: a.error, code: a.status === 401 ? "HOLDFAST_UNAUTHENTICATED" : "HOLDFAST_FORBIDDEN" });
      return this.proxy(req, res, decodeURIComponent(m[1] as string), `/api/v1${m[2] as string}${url.search}`);
    }
    if (need === undefined) return this.json(res, 404, { error: `no route ${method} ${path}`, code: "HOLDFAST_NO_ROUTE" });
    const a = this.auth.check(req.headers.authorization, need);
    if (!a.ok) {
      if (a.status === 401) res.setHeader("WWW-Authenticate", 'Bearer realm="holdfast"');
      return this.json(res, a.status, { error: a.error, code: a.status === 401 ? "HOLDFAST_UNAUTHENTICATED" : "HOLDFAST_FORBIDDEN" });
    }

    if (path === "/metrics") return this.text(res, 200, renderMetrics(this.daemon), "text/plain; version=0.0.4; charset=utf-8");
    if (path === "/api/v1/state") return this.json(res, 200, this.daemon.state());
    if (path === "/api/v1/snapshot") return this.json(res, 200, this.snapshot());
    if ((m = /^\/api\/v1\/modules\/([^/]+)$/.exec(path))) {
      const h = this.daemon.host(decodeURIComponent(m[1] as string));
      const p = h.module.persisted;
      return this.json(res, 200, { node: this.daemon.nodeId, kind: h.module.definition.kind, ...h.module.status, upToDate: p.upToDate, generation: p.generation });
    }
    if ((m = /^\/api\/v1\/modules\/([^/]+)\/logs$/.exec(path))) return this.logs(req, res, decodeURIComponent(m[1] as string), url);
    if ((m = /^\/api\/v1\/modules\/([^/]+)\/namespace$/.exec(path))) return this.namespace(res, decodeURIComponent(m[1] as string));
    if ((m = /^\/api\/v1\/modules\/([^/]+)\/commands\/([^/]+)$/.exec(path))) {
      return this.command(res, decodeURIComponent(m[1] as string), decodeURIComponent(m[2] as string), url.searchParams.get("force") === "1", a.token);
    }
    return this.json(res, 404, { error: `no route ${method} ${path}`, code: "HOLDFAST_NO_ROUTE" });
  }

  private health(res: ServerResponse, name: string): void {
    const h = this.daemon.modules.get(name);
    const s = h?.module.status;
    const ok = !!s && s.ready && !s.transient && (s.state === "UP" || isPrimaryState(s.state));
    this.text(res, ok ? 200 : 404, ok ? `OK ${name} ${s.state}\n` : `NOT SERVING ${name} ${s ? s.state : "(no such module)"}\n`, "text/plain; charset=utf-8");
  }

  /**
   * Where module `name`'s replicated directory is mounted on this node (`holdfast exec`). `mntNs` (the namespace's
   * id) and `bootId` let the CLI check that it runs on this machine and enters the namespace it was told about.
   */
  private namespace(res: ServerResponse, name: string): void {
    const h = this.daemon.host(name);
    const node = this.daemon.nodeId;
    const driver = mirrorDriverOf(this.daemon, name);
    if (!driver) {
      throw new CommandRefusedError(`module ${name} has no replicated directory on node ${node} (kind ${h.module.definition.kind}, not replication mode sync): there is no mount namespace to enter`);
    }
    const s = h.module.status;
    let ns;
    try {
      ns = driver.mountNamespace();
    } catch (e) {
      const st = s.transient && s.next ? `${s.state} -> ${s.next}` : s.state;
      throw new CommandRefusedError(
        `module ${name} is ${st} on node ${node}: its replicated directory is mounted on the primary only (${(e as Error).message}); run holdfast exec on the primary's node`,
        { cause: e },
      );
    }
    const read = (p: string, f: (p: string) => string): string | undefined => {
      try {
        return f(p).trim();
      } catch {
        return undefined;
      }
    };
    const bootId = read("/proc/sys/kernel/random/boot_id", (p) => readFileSync(p, "utf8"));
    const mntNs = ns.mode === "private" ? read(`/proc/${ns.pid}/ns/mnt`, readlinkSync) : undefined;
    this.json(res, 200, { node, module: name, state: s.state, ...ns, ...(mntNs !== undefined ? { mntNs } : {}), ...(bootId !== undefined ? { bootId } : {}) });
  }

  private async command(res: ServerResponse, name: string, cmd: string, force: boolean, token: TokenEntry): Promise<void> {
    if (!(COMMANDS as readonly string[]).includes(cmd)) return this.json(res, 400, { error: `unknown command "${cmd}" (commands: ${COMMANDS.join(", ")})`, code: "HOLDFAST_BAD_COMMAND" });
    const audit = (result: string) => {
      try {
        appendFileSync(join(this.daemon.config.logDir, "audit.jsonl"), JSON.stringify({ ts: new Date().toISOString(), node: this.daemon.nodeId, module: name, command: cmd, force, by: token.name, role: token.role, result }) + "\n");
      } catch {
        /* the audit log is best effort; the module's own log has the command */
      }
    };
    try {
      const status = await this.daemon.command(name, cmd as CommandName, { force, by: token.name });
      audit("accepted");
      this.json(res, 200, { node: this.daemon.nodeId, command: cmd, ...status });
    } catch (e) {
      audit(`refused: ${(e as Error).message}`);
      throw e;
    }
  }

  private logs(req: IncomingMessage, res: ServerResponse, name: string, url: URL): void {
    const h = this.daemon.host(name);
    const n = Math.min(Math.max(Number(url.searchParams.get("n") ?? 200) || 200, 1), 10_000);
    const follow = url.searchParams.get("follow") === "1";
    const sse = (req.headers.accept ?? "").includes("text/event-stream");
    const text = url.searchParams.get("format") === "text";
    const fmt = (r: ModuleLogRecord) => (sse ? `data: ${JSON.stringify(r)}\n\n` : text ? formatLogLine(r) + "\n" : JSON.stringify(r) + "\n");
    res.writeHead(200, { "Content-Type": sse ? "text/event-stream" : text ? "text/plain; charset=utf-8" : "application/x-ndjson" });
    for (const r of h.module.log.recent(n)) res.write(fmt(r));
    if (!follow) {
      res.end();
      return;
    }
    this.streams.add(res);
    const on = (r: ModuleLogRecord) => res.write(fmt(r));
    h.module.on("record", on);
    const keepalive = setInterval(() => res.write(sse ? ": keepalive\n\n" : ""), 15_000);
    res.on("close", () => {
      clearInterval(keepalive);
      h.module.off("record", on);
      this.streams.delete(res);
    });
  }

  private async proxy(req: IncomingMessage, res: ServerResponse, nodeId: string, rest: string): Promise<void> {
    const cfg = this.daemon.config;
    const node = cfg.nodes.find((n) => n.id === nodeId);
    if (!node) return this.json(res, 404, { error: `no node "${nodeId}" in cluster ${cfg.clusterId}`, code: "HOLDFAST_NO_SUCH_NODE" });
    if (node.id === this.daemon.nodeId) {
      req.url = rest;
      return this.handle(req, res);
    }
    const target = new URL(rest, node.apiUrl);
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 10_000);
    res.on("close", () => ac.abort());
    try {
      const preq = (target.protocol === "https:" ? httpsRequest : httpRequest)(target, {
        method: req.method ?? "GET",
        headers: { ...(req.headers.authorization ? { Authorization: req.headers.authorization } : {}), Accept: req.headers.accept ?? "application/json" },
        signal: ac.signal,
        // Peers of one cluster share the certificate setup; a private CA is the operator's (NODE_EXTRA_CA_CERTS).
      });
      const pres = await new Promise<IncomingMessage>((resolve, reject) => {
        preq.on("response", resolve);
        preq.on("error", reject);
        preq.end();
      });
      clearTimeout(timer);
      res.writeHead(pres.statusCode ?? 502, { "Content-Type": pres.headers["content-type"] ?? "application/octet-stream" });
      for await (const chunk of pres) res.write(chunk);
      res.end();
    } catch (e) {
      clearTimeout(timer);
      if (!res.headersSent) this.json(res, 502, { error: `node ${nodeId} (${node.apiUrl}) not reachable: ${(e as Error).message}`, code: "HOLDFAST_PEER_UNREACHABLE" });
      else res.end();
    }
  }

  private snapshot(): { files: Record<string, string> } {
    const d = this.daemon;
    const files: Record<string, string> = {
      "config.redacted.json": JSON.stringify(redactedConfig(d.config), null, 2) + "\n",
      "state.json": JSON.stringify(d.state(), null, 2) + "\n",
      "metrics.txt": renderMetrics(d),
      "versions.txt": `node ${process.version}\nplatform ${process.platform} ${process.arch}\nuptime ${Math.round((Date.now() - d.startedAt) / 1000)} s\n`,
    };
    const dir = d.config.logDir;
    const MAX = 8 * 1024 * 1024;
    for (const f of existsSync(dir) ? readdirSync(dir) : []) {
      const p = join(dir, f);
      try {
        const st = statSync(p);
        if (!st.isFile()) continue;
        const buf = readFileSync(p);
        files[`logs/${f}`] = buf.length > MAX ? buf.subarray(buf.length - MAX).toString("utf8") : buf.toString("utf8");
      } catch {
        /* a file that vanished meanwhile */
      }
    }
    return { files };
  }

  private staticFile(res: ServerResponse, rel: string): void {
    const p = normalize(join(CONSOLE_DIR, rel));
    if (!p.startsWith(CONSOLE_DIR) || !existsSync(p) || !statSync(p).isFile()) return this.text(res, 404, "not found\n", "text/plain");
    res.setHeader("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'");
    this.text(res, 200, readFileSync(p, "utf8"), MIME[extname(p)] ?? "application/octet-stream");
  }

  // ---- responses ------------------------------------------------------------------------------

  private json(res: ServerResponse, status: number, body: unknown): void {
    this.text(res, status, JSON.stringify(body) + "\n", "application/json");
  }

  private text(res: ServerResponse, status: number, body: string, type: string): void {
    res.writeHead(status, { "Content-Type": type });
    res.end(body);
  }

  private sendError(res: ServerResponse, e: unknown): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    if (e instanceof CommandRefusedError) return this.json(res, 409, { error: e.message, code: e.code });
    if (e instanceof HoldfastError && e.code === "HOLDFAST_NO_SUCH_MODULE") return this.json(res, 404, { error: e.message, code: e.code });
    if (e instanceof HoldfastError) return this.json(res, 400, { error: e.message, code: e.code });
    this.json(res, 500, { error: (e as Error).message ?? String(e), code: "HOLDFAST_INTERNAL" });
  }
}
