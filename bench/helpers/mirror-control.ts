// A request on examples/mirror-node.ts's control socket (a unix socket: `GET /status`, `POST /command`,
// `POST /resync`), for the benches and the chaos suite.
import { request as httpRequest } from "node:http";

/** The JSON answer, or undefined when the node does not answer within `timeoutMs` (down, frozen) or not with JSON. */
export function mirrorControl(sock: string, method: "GET" | "POST", path: string, timeoutMs: number, body?: unknown): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers = data === undefined ? undefined : { "content-type": "application/json", "content-length": Buffer.byteLength(data) };
    const req = httpRequest({ socketPath: sock, method, path, timeout: timeoutMs, ...(headers ? { headers } : {}) }, (res) => {
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
