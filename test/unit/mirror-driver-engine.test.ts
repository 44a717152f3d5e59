/**
 * MirrorDriver goes through createFileReplicator: its `engine` option picks the primary's data path and the
 * choice is in the driver's log (the module log). Constructs replicators only (the probe runs `helper version`).
 */
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { JsFuseReplicator, probeEngines } from "../../src/mirror/jsfuse/index.js";
import { MirrorDriver } from "../../src/mirror/mirror.js";
import type { FileReplicatorOptions } from "../../src/mirror/FileReplicator.js";

const probe = probeEngines();
const primary: FileReplicatorOptions = { role: "primary", backingDir: "/tmp/hf-a", mountPoint: "/tmp/hf-m", keyFile: "/tmp/hf-k", peer: { host: "198.18.0.2", port: 7790 } };

function driver(engine?: "native" | "js" | "auto"): { d: MirrorDriver; lines: string[] } {
  const lines: string[] = [];
  const d = new MirrorDriver({
    nodeId: "n1",
    backingDir: "/tmp/hf-a",
    mountPoint: "/tmp/hf-m",
    keyFile: "/tmp/hf-k",
    listen: { host: "198.18.0.1", port: 7790 },
    peer: { host: "198.18.0.2", port: 7790 },
    log: (l) => lines.push(l),
    ...(engine ? { engine } : {}),
  });
  return { d, lines };
}
const create = (d: MirrorDriver, o: FileReplicatorOptions): unknown => (d as unknown as { create(o: FileReplicatorOptions): unknown }).create(o);

describe.skipIf(!existsSync("/dev/fuse") || !probe.helperRuns || probe.js !== true)("MirrorDriver engine option", () => {
  it("auto (default) picks the compiled helper here, js asks for the JavaScript engine; the choice is logged", () => {
    const a = driver();
    const r = create(a.d, primary);
    expect(r).toBeInstanceOf(FileReplicator);
    expect(r).not.toBeInstanceOf(JsFuseReplicator);
    expect(a.lines).toEqual([expect.stringMatching(/primary data path = native \(auto: the compiled helper runs here\)/)]);
    const j = driver("js");
    expect(create(j.d, primary)).toBeInstanceOf(JsFuseReplicator);
    expect(j.lines).toEqual([expect.stringMatching(/primary data path = js \(engine js requested\)/)]);
    // the secondary is the helper whatever the engine
    const s = create(j.d, { role: "secondary", backingDir: "/tmp/hf-b", keyFile: "/tmp/hf-k", listen: { host: "198.18.0.1", port: 7790 } });
    expect(s).toBeInstanceOf(FileReplicator);
    expect(s).not.toBeInstanceOf(JsFuseReplicator);
  });
});
