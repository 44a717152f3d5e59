/**
 * `holdfast exec MODULE -- CMD`: argument handling (the `--` is required, what follows it is never parsed as
 * options), and the run against a stand-in API: a refusal (not primary) is an error naming the module and the
 * state (exit 10), a host-namespace mount runs CMD as it is with HOLDFAST_MOUNT set and CMD's exit code is the
 * CLI's, another machine's daemon (boot id) or a namespace that is not the one named is refused before CMD runs.
 */
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { EXIT, parseCli, runCli, UsageError, type CliIO } from "../../examples/daemon/commands.js";

function io(env: Record<string, string> = {}): CliIO & { stdout: string; stderr: string } {
  const o = { stdout: "", stderr: "", env, out: (s: string) => void (o.stdout += s), err: (s: string) => void (o.stderr += s) };
  return o;
}

describe("exec: parsing", () => {
  it("takes MODULE before `--` and the command line after it, options of its own included", () => {
    expect(parseCli(["exec", "db", "--", "sh", "-c", "echo x > $HOLDFAST_MOUNT/f"])).toMatchObject({
      kind: "exec",
      module: "db",
      argv: ["sh", "-c", "echo x > $HOLDFAST_MOUNT/f"],
      target: { all: false },
    });
    expect(parseCli(["exec", "--node", "http://x:1", "db", "--", "ls", "--json", "-n", "--", "x"])).toMatchObject({
      kind: "exec",
      module: "db",
      argv: ["ls", "--json", "-n", "--", "x"],
      target: { node: "http://x:1" },
    });
  });

  it("refuses what makes no sense, with a reason", () => {
    const bad: [string[], RegExp][] = [
      [["exec"], /exec: expected exec MODULE -- CMD/],
      [["exec", "db"], /expected `--` between MODULE and the command .*got "nothing" after db/],
      [["exec", "db", "ls", "-l"], /Unknown option '-l'/],
      [["exec", "db", "ls"], /expected `--` between MODULE and the command .*got "ls" after db/],
      [["exec", "db", "x", "--", "ls"], /expected one MODULE before `--` .*got "db", "x"/],
      [["exec", "db", "--"], /expected a command after `--`/],
      [["exec", "db", "--", ""], /expected a command after `--`/],
      [["exec", "db", "--all", "--config", "c.yaml", "--", "ls"], /--all does not apply/],
      [["state", "db", "--", "x"], /`--` only applies to exec, got "x"/],
    ];
    for (const [argv, re] of bad) {
      expect(() => parseCli(argv), argv.join(" ")).toThrow(UsageError);
      expect(() => parseCli(argv), argv.join(" ")).toThrow(re);
    }
  });

  it("a usage error exits 64 with the usage, which lists exec", async () => {
    const o = io();
    expect(await runCli(["exec", "db", "ls"], o)).toBe(EXIT.usage);
    expect(o.stderr).toMatch(/^holdfast: exec: expected `--`/);
    expect(o.stderr).toMatch(/exec MODULE -- CMD \[ARGS\.\.\.\]/);
  });
});

describe("exec: against the API", () => {
  let server: Server | undefined;
  afterEach(async () => {
    const s = server;
    server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  });

  /** A stand-in API answering the namespace route with `status` and `body`; returns its URL. */
  async function api(status: number, body: unknown): Promise<{ url: string; paths: string[]; auth: (string | undefined)[] }> {
    const paths: string[] = [];
    const auth: (string | undefined)[] = [];
    server = createServer((req, res) => {
      paths.push(req.url ?? "");
      auth.push(req.headers.authorization);
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body));
    });
    const s = server;
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
    return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, paths, auth };
  }
  const bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();

  it("a module that is not primary here: the daemon's refusal, exit 10, CMD not run", async () => {
    const a = await api(409, { error: "module db is SECOND on node n1: its replicated directory is mounted on the primary only", code: "HOLDFAST_COMMAND_REFUSED" });
    const o = io({ HOLDFAST_URL: a.url, HOLDFAST_TOKEN: "t0k" });
    expect(await runCli(["exec", "db", "--", "sh", "-c", "echo ran"], o)).toBe(EXIT.failure);
    expect(o.stderr).toBe("holdfast: exec db: module db is SECOND on node n1: its replicated directory is mounted on the primary only\n");
    expect(a.paths).toEqual(["/api/v1/modules/db/namespace"]);
    expect(a.auth).toEqual(["Bearer t0k"]);
  });

  it("no such module: the API's 404, exit 10", async () => {
    const a = await api(404, { error: 'no module "dbx" on node n1 (modules: db)', code: "HOLDFAST_NO_SUCH_MODULE" });
    const o = io({ HOLDFAST_URL: a.url });
    expect(await runCli(["exec", "dbx", "--", "true"], o)).toBe(EXIT.failure);
    expect(o.stderr).toMatch(/404 no module "dbx" on node n1/);
  });

  it("host namespace: runs CMD as it is, with HOLDFAST_MOUNT and HOLDFAST_MODULE, and exits with its code", async () => {
    const a = await api(200, { node: "n1", module: "db", state: "PRIM", mode: "host", mountPoint: "/srv/db", bootId });
    const o = io({ HOLDFAST_URL: a.url, PATH: process.env.PATH ?? "/usr/bin:/bin" });
    expect(await runCli(["exec", "db", "--", "sh", "-c", 'test "$HOLDFAST_MOUNT:$HOLDFAST_MODULE" = /srv/db:db && exit 7'], o)).toBe(7);
    expect(await runCli(["exec", "db", "--", "sh", "-c", "kill -TERM $$"], o)).toBe(128 + 15);
    expect(await runCli(["exec", "db", "--", "/nonexistent/cmd"], o)).toBe(EXIT.failure);
    expect(o.stderr).toMatch(/exec db: cannot run \/nonexistent\/cmd: .*ENOENT/);
  });

  it("refuses a daemon on another machine, and a namespace that is not the one named, before CMD runs", async () => {
    const other = await api(200, { node: "n2", module: "db", state: "PRIM", mode: "host", mountPoint: "/srv/db", bootId: "00000000-0000-0000-0000-000000000000" });
    const o = io({ HOLDFAST_URL: other.url });
    expect(await runCli(["exec", "db", "--", "true"], o)).toBe(EXIT.failure);
    expect(o.stderr).toMatch(/exec db: the daemon at http:\/\/127\.0\.0\.1:\d+ \(node n2\) runs on another machine/);
    await new Promise<void>((r) => (server as Server).close(() => r()));
    const wrong = await api(200, { node: "n1", module: "db", state: "PRIM", mode: "private", pid: process.pid, mountPoint: "/srv/db", mntNs: "mnt:[1]", bootId });
    const o2 = io({ HOLDFAST_URL: wrong.url });
    expect(await runCli(["exec", "db", "--", "true"], o2)).toBe(EXIT.failure);
    expect(o2.stderr).toMatch(new RegExp(`/proc/${process.pid}/ns/mnt is mnt:\\[\\d+\\] here, not the namespace mnt:\\[1\\] node n1 named`));
  });
});
