/**
 * The FileReplicator's supervision logic against a fake helper (a shell script speaking the helper's JSON-lines
 * protocol): readiness, typed events, metrics, start failures and the bounded restart policy. No root, no FUSE.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ReplicatorError } from "../../src/mirror/errors.js";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";

const dir = mkdtempSync(join(tmpdir(), "hf-fake-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fake(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

const secondary = (helperPath: string, extra: object = {}): FileReplicator =>
  new FileReplicator({ role: "secondary", backingDir: "/nonexistent/b", keyFile: "/k", listen: { host: "198.18.0.2", port: 0 }, helperPath, ...extra });

describe("FileReplicator supervision (fake helper)", () => {
  it("reports readiness, the port and consistency; passes its options as arguments", async () => {
    const args = join(dir, "args.txt");
    const h = fake("ok", `echo "$@" > ${args}\necho '{"event":"listening","port":4567}'\necho '{"event":"peer","state":"connected"}'\necho '{"event":"inconsistent"}'\necho '{"event":"consistent"}'\nsleep 5`);
    const r = secondary(h, { restart: false });
    const events: string[] = [];
    r.on("connected", () => events.push("connected"));
    r.on("consistency", (c) => events.push(`consistent=${c.consistent}`));
    await r.start();
    expect(r.port).toBe(4567);
    const end = Date.now() + 5000;
    while (events.length < 3 && Date.now() < end) await new Promise((res) => setTimeout(res, 10));
    expect(events).toEqual(["connected", "consistent=false", "consistent=true"]);
    expect(r.consistent).toBe(true);
    await r.stop();
    const { readFileSync } = await import("node:fs");
    expect(readFileSync(args, "utf8").trim()).toBe("secondary --backing /nonexistent/b --listen 198.18.0.2:0 --key-file /k --state-file /nonexistent/.b.hfstate");
  });

  it("a helper that dies before ready rejects start() with its stderr", async () => {
    const r = secondary(fake("dies", "echo 'mount failed: no /dev/fuse' >&2\nexit 2"), { restart: false });
    const err = await r.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ReplicatorError);
    expect((err as ReplicatorError).code).toBe("HOLDFAST_MIRROR_START_FAILED");
    expect((err as ReplicatorError).stderr).toMatch(/no \/dev\/fuse/);
  });

  it("a silent helper times out", async () => {
    const r = secondary(fake("silent", "sleep 10"), { restart: false, startTimeoutMs: 300 });
    await expect(r.start()).rejects.toThrow(/did not report ready in time/);
  });

  it("restarts a dying helper at most maxRestarts times within the window, then reports it dead", async () => {
    const r = secondary(fake("flaky", `echo '{"event":"listening","port":1}'\nsleep 0.05\nexit 3`), { restart: { maxRestarts: 2, windowMs: 60_000 } });
    const exits: boolean[] = [];
    const restarts: number[] = [];
    r.on("exit", (e) => exits.push(e.restarting));
    r.on("restarted", (e) => restarts.push(e.attempt));
    const dead = r.waitFor("error", 10_000);
    await r.start();
    const err = await dead;
    expect(err.code).toBe("HOLDFAST_MIRROR_HELPER_DIED");
    expect(exits).toEqual([true, true, false]);
    expect(restarts).toEqual([1, 2]);
  });

  it("primary: metrics from the helper's stats lines (ack latency averaged over the interval)", async () => {
    const h = fake(
      "primary",
      `echo '{"event":"ready","mount":"/m","pid":'$$',"logBytes":0,"uncleanStart":false}'
n=0
while read line; do
  case "$line" in
    stats) n=$((n+1)); echo '{"event":"stats","state":"sync","bytesReplicated":'$((n*1000))',"acks":'$((n*10))',"ackUsSum":'$((n*2000))',"ackUsMax":700,"inflight":3,"logRecords":0,"resyncBytes":0,"degradedCount":1}';;
    stop) echo '{"event":"stopped","rc":0}'; exit 0;;
  esac
done`,
    );
    const r = new FileReplicator({ role: "primary", backingDir: "/a", mountPoint: "/m", keyFile: "/k", peer: { host: "198.18.0.2", port: 1 }, helperPath: h, mountNamespace: "host", statsIntervalMs: 50, restart: false });
    const second = r.waitFor("metrics", 5000).then(() => r.waitFor("metrics", 5000));
    await r.start();
    const m = await second;
    expect(m).toEqual({ bytesReplicated: 2000, acks: 20, ackLatencyAvgUs: 200, ackLatencyMaxUs: 700, queueDepth: 3, logRecords: 0, resyncBytes: 0, degradedCount: 1 });
    const exit = r.waitFor("exit", 5000);
    await r.stop();
    expect((await exit).expected).toBe(true);
    expect(r.state).toBe("stopped");
  });

  it("a malformed known event is reported as an error, unknown lines are ignored", async () => {
    const r = secondary(fake("odd", `echo 'garbage'\necho '{"event":"listening","port":9}'\necho '{"event":"future-thing"}'\necho '{"event":"degraded","reason":5}'\nsleep 5`), { restart: false });
    const err = r.waitFor("error", 5000);
    await r.start();
    expect((await err).message).toMatch(/malformed helper event/);
    await r.stop();
  });
});
