/**
 * Module probe: another module (on this node, or on another cluster) is in one of the given states.
 * Expresses dependencies between tiers: a web farm that needs its database mirror PRIM or ALONE.
 *
 * The state comes from a function (a module in the same process) or from the control API of the daemon
 * that runs the module:
 *
 * ```
 * GET <url>                          (e.g. http://198.18.0.10:7410/api/modules/db)
 * Authorization: Bearer <token>      (when `token` is set)
 * Accept: application/json
 *
 * 200 OK
 * Content-Type: application/json
 * { "state": "PRIM", "ready": true }
 * ```
 *
 * `state` is one of `STOP`, `WAIT`, `UP`, `ALONE`, `PRIM`, `SECOND` (other members are ignored, so the
 * endpoint may return a richer object). Any other status, a body that is not such JSON, a refused or timed
 * out connection: the probe fails and says why.
 */
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
  /** Where the status comes from: a function, or the URL of the daemon's control API for this module. */
  readonly source: ModuleStatusSource | { readonly url: string; readonly token?: string };
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
      let res: Response;
      try {
        res = await fetch(src.url, {
          signal,
          headers: { accept: "application/json", ...(src.token === undefined ? {} : { authorization: `Bearer ${src.token}` }) },
        });
      } catch (err) {
        if (signal.aborted) throw err;
        const cause = (err as { cause?: unknown }).cause;
        return { ok: false, detail: `module ${module}: GET ${src.url} failed: ${messageOf(cause ?? err)}` };
      }
      const text = await res.text();
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
