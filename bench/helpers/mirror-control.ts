// Requests on a unix socket: examples/mirror-node.ts's control socket (`GET /status`, `POST /command`,
// `POST /resync`), and the shipped daemon's control API (`api.socket`, with a token), for the benches, the chaos
// suite and the lab harness.
import { request as httpRequest } from "node:http";

/** The JSON answer, or undefined when the node does not answer within `timeoutMs` (down, frozen) or not with JSON. */
export function mirrorControl(sock: string, method: "GET" | "POST", path: string, timeoutMs: number, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers = { ...extraHeaders, ...(data === undefined ? {} : { "content-type": "application/json", "content-length": String(Buffer.byteLength(data)) }) };
    const req = httpRequest({ socketPath: sock, method, path, timeout: timeoutMs, headers }, (res) => {
      let s = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (s += d));
      res.on("end", () => {
        try {
          resolve(JSON.parse(s) as Record<string, unknown>);
        } catch {
          resolve(undefined);
        }
      });
      res.on("error", () => resolve(undefined));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(undefined));
    req.end(data);
  });
}

/** A request on the daemon's control API over its unix socket, with a bearer token (same answers as over TCP). */
export function daemonApi(sock: string, token: string, method: "GET" | "POST", path: string, timeoutMs: number): Promise<Record<string, unknown> | undefined> {
  return mirrorControl(sock, method, path, timeoutMs, undefined, { authorization: `Bearer ${token}` });
}
