// libbpf prints the kernel's message of every failed netlink request to stderr. The tc calls whose failure is an
// expected answer (the clsact qdisc already there, no filter at a handle) must not: at every daemon start they
// read as errors ("Exclusivity flag on, cannot modify", "Cannot find specified filter chain").
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Lab } from "../../src/testing/lab.js";

const REPO = new URL("../..", import.meta.url).pathname;

describe("libbpf's own logging", () => {
  let lab: Lab;
  let dir: string;
  beforeAll(async () => {
    lab = await Lab.create({ nodes: 1 });
    dir = mkdtempSync(join(tmpdir(), "holdfast-libbpf-"));
  });
  afterAll(async () => {
    await lab?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the expected failures of the tc calls print nothing; the answers are still right", () => {
    const script = join(dir, "tc.mts");
    writeFileSync(
      script,
      `import { ifIndex, tcDetach, tcHookCreate, tcHookDestroy, tcQuery, withNetns } from ${JSON.stringify(join(REPO, "src/native/libbpf.ts"))};
const out = withNetns(${JSON.stringify(`/run/netns/${lab.nodes[0]!.ns}`)}, () => {
  const i = ifIndex("eth0");
  tcHookCreate(i);
  tcHookCreate(i); // the qdisc is there now: EEXIST, fine
  const r = { query: tcQuery(i, 1, 1) ?? null, detach: tcDetach(i, 1, 1) };
  tcHookDestroy(i);
  tcHookDestroy(i); // gone already
  return r;
});
console.log(JSON.stringify(out));
`,
    );
    const r = spawnSync(process.execPath, ["--import", "tsx", script], { encoding: "utf8", cwd: REPO, timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toEqual({ query: null, detach: false });
    expect(r.stderr).not.toMatch(/libbpf/);
  });
});
