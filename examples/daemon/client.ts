/**
 * The CLI's client of the control API: node:http/https (not fetch) so that a private CA (`--ca`) or a
 * self-signed certificate (`--insecure`) can be used without an extra package.
 */
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { HoldfastError } from "holdfast";

export interface ClientOptions {
  readonly token?: string;
  /** PEM text of a CA to trust. */
  readonly ca?: string;
  /** Accept any certificate (self-signed test setups). */
  readonly insecure?: boolean;
  /** Per request, ms. Default 10 000. */
  readonly timeoutMs?: number;
}

/** An API answer that is not 2xx. `status` 0 = not reachable. */
export class ApiError extends HoldfastError {
  constructor(
    readonly url: string,
    readonly status: number,
    message: string,
  ) {
    super(status === 0 ? "HOLDFAST_API_UNREACHABLE" : status === 401 ? "HOLDFAST_UNAUTHENTICATED" : status === 403 ? "HOLDFAST_FORBIDDEN" : "HOLDFAST_API_ERROR", message);
  }
}

export class ApiClient {
  constructor(
    readonly base: string,
    private readonly opts: ClientOptions = {},
  ) {}

  /** Sends a request; resolves with the open response (status checked) for streaming. */
  open(method: string, path: string, signal?: AbortSignal): Promise<IncomingMessage> {
    const url = new URL(path, this.base.endsWith("/") ? this.base : this.base + "/");
    const req = (url.protocol === "https:" ? httpsRequest : httpRequest)(url, {
      method,
      headers: { Accept: "application/json", ...(this.opts.token ? { Authorization: `Bearer ${this.opts.token}` } : {}) },
      ...(url.protocol === "https:" ? { ...(this.opts.ca ? { ca: this.opts.ca } : {}), rejectUnauthorized: !this.opts.insecure } : {}),
      ...(signal ? { signal } : {}),
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.opts.timeoutMs ?? 10_000} ms`)), this.opts.timeoutMs ?? 10_000);
      req.on("response", async (res) => {
        clearTimeout(timer);
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(res);
        let body = "";
        for await (const c of res) body += String(c);
        let msg = body.trim();
        try {
          msg = (JSON.parse(body) as { error?: string }).error ?? msg;
        } catch {
          /* not JSON */
        }
        reject(new ApiError(url.href, status, `${this.base}: ${status} ${msg}`));
      });
      req.on("error", (e) => {
        clearTimeout(timer);
        reject(new ApiError(url.href, 0, `${this.base}: not reachable (${e.message})`));
      });
      req.end();
    });
  }

  async call<T = unknown>(method: string, path: string): Promise<T> {
    const res = await this.open(method, path);
    let body = "";
    for await (const c of res) body += String(c);
    return (res.headers["content-type"] ?? "").startsWith("application/json") ? (JSON.parse(body) as T) : (body as T);
  }
}
