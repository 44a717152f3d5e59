/**
 * Module probe: another module (on this node, or on another cluster) is in one of the given states.
 * Expresses dependencies between tiers: a web farm that needs its database mirror PRIM or ALONE.
 *
 * The state comes from a function (a module in the same process) or from the control API of the daemon
 * that runs the module:
 *
 * ```
 * GET <url>                          (e.g. https://198.18.0.10:7410/api/v1/modules/db)
 * Authorization: Bearer <token>      (when `token` is set)
 * Accept: application/json
 *
 * 200 OK
 * Content-Type: application/json
 * { "state": "PRIM", "ready": true }
 * ```
 *
 * `state` is one of `STOP`, `WAIT`, `UP`, `ALONE`, `PRIM`, `SECOND` (other members are ignored, so the
 * endpoint may return a richer object: the reference daemon's `GET /api/v1/modules/:m` answers the module's
 * full status). For `https://`, a private CA is given with `ca`. Any other status, a body that is not such JSON, a refused or timed
 * out connection: the probe fails and says why.
 */
import { readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { messageOf, type Probe, type ProbeResult } from "./probe.js";

/**
 * What a module state source reports: the part of the module engine's status that this probe reads (the
 * engine's full `ModuleStatus` fits, so a local source can return it as is).
 */
export interface ModuleStateSnapshot {
  readonly state: string;
  /** Whether the module is ready to serve in that state (e.g. SECOND in sync). */
  readonly ready?: boolean;
}

/** A local source: returns the current status of the named module. */
export type ModuleStatusSource = (module: string, signal: AbortSignal) => ModuleStateSnapshot | Promise<ModuleStateSnapshot>;

export interface ModuleProbeOptions {
  /** The module's name (used in details, and passed to a function source). */
  readonly module: string;
  /** Accepted states, e.g. `["PRIM", "ALONE"]`. */
  readonly states: readonly string[];
  /** Also require `ready: true` from the source. Default `false`. */
  readonly ready?: boolean;
  /** Where the status comes from: a function, or the daemon's control API for this module. */
  readonly source: ModuleStatusSource | ModuleHttpSource;
}

/** The control API of the daemon that runs the module. */
export interface ModuleHttpSource {
  /** `http://` or `https://` URL of the module's status, e.g. `https://198.18.0.10:7410/api/v1/modules/db`. */
  readonly url: string;
  /** Bearer token sent as `Authorization: Bearer <token>` (a `monitor` role is enough). Default: none. */
  readonly token?: string;
  /**
   * Certificate authority to trust for `https://` (PEM text, or the path of a PEM file), for a daemon with a
   * private CA or a self-signed certificate. Default: the system's CAs.
   */
  readonly ca?: string;
}

/** Largest response body read, bytes: a status is a few hundred bytes; more is a wrong endpoint. */
const MAX_BODY = 64 * 1024;

/** GET with node:http/https (not fetch, so that a private CA can be given), abortable, body size bounded. */
function httpGet(src: ModuleHttpSource, signal: AbortSignal): Promise<{ status: number; text: string }> {
  const url = new URL(src.url);
  const tls = url.protocol === "https:";
  const ca = src.ca === undefined ? undefined : src.ca.includes("-----BEGIN") ? src.ca : readFileSync(src.ca, "utf8");
  return new Promise((resolve, reject) => {
    const req = (tls ? httpsRequest : httpRequest)(url, {
      method: "GET",
      signal,
      headers: { accept: "application/json", ...(src.token === undefined ? {} : { authorization: `Bearer ${src.token}` }) },
      ...(tls && ca !== undefined ? { ca } : {}),
    });
    req.once("error", reject);
    req.once("response", (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) {
          req.destroy(new Error(`response larger than ${MAX_BODY} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.once("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
      res.once("error", reject);
    });
    req.end();
  });
}

function isStatus(x: unknown): x is ModuleStateSnapshot {
  if (typeof x !== "object" || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o.state === "string" && (o.ready === undefined || typeof o.ready === "boolean");
}

/** Another module's state in a set. See {@link ModuleProbeOptions}. */
export class ModuleProbe implements Probe {
  readonly name: string;
  readonly #opts: ModuleProbeOptions;

  constructor(opts: ModuleProbeOptions) {
    if (opts.states.length === 0) throw new TypeError("module probe needs at least one accepted state");
    this.#opts = opts;
    this.name = `module:${opts.module}`;
  }

  async run(signal: AbortSignal): Promise<ProbeResult> {
    const { module, states } = this.#opts;
    const src = this.#opts.source;
    let status: ModuleStateSnapshot;
    if (typeof src === "function") {
      try {
        status = await src(module, signal);
      } catch (err) {
        if (signal.aborted) throw err;
        return { ok: false, detail: `module ${module}: source failed: ${messageOf(err)}` };
      }
    } else {
      let res: { status: number; text: string };
      try {
        res = await httpGet(src, signal);
      } catch (err) {
        if (signal.aborted) throw err;
        return { ok: false, detail: `module ${module}: GET ${src.url} failed: ${messageOf(err)}` };
      }
      const text = res.text;
      if (res.status !== 200) return { ok: false, detail: `module ${module}: GET ${src.url} answered ${res.status}` };
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        return { ok: false, detail: `module ${module}: GET ${src.url} answered no JSON` };
      }
      if (!isStatus(body)) return { ok: false, detail: `module ${module}: GET ${src.url} answered no {state, ready}` };
      status = body;
    }
    const seen = `${status.state}${status.ready === undefined ? "" : status.ready ? " ready" : " not ready"}`;
    const want = `${states.join("|")}${this.#opts.ready === true ? " and ready" : ""}`;
    const ok = states.includes(status.state) && (this.#opts.ready !== true || status.ready === true);
    return { ok, detail: `module ${module} is ${seen}, ${ok ? "as required" : "expected"} ${want}` };
  }
}
