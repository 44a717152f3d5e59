import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { INCARNATION_FILE, nextIncarnation } from "../../src/runtime/incarnation.js";

const dir = () => mkdtempSync(join(tmpdir(), "hf-inc-"));

describe("nextIncarnation (monotonic across restarts and clock steps)", () => {
  it("starts at the wall clock, grows at every call, and persists before returning", () => {
    const d = dir();
    expect(nextIncarnation(d, { now: () => 1_700_000_000_000 })).toBe(1_700_000_000_000);
    expect(readFileSync(join(d, INCARNATION_FILE), "utf8")).toBe("1700000000000\n");
    expect(nextIncarnation(d, { now: () => 1_700_000_000_000 })).toBe(1_700_000_000_001);
    expect(nextIncarnation(d, { now: () => 1_700_000_005_000 })).toBe(1_700_000_005_000);
    expect(readdirSync(d).sort()).toEqual([INCARNATION_FILE]); // no temporary or lock file left
  });

  it("keeps growing when the clock steps backwards across restarts", () => {
    const d = dir();
    const a = nextIncarnation(d, { now: () => 1_700_000_000_000 });
    const b = nextIncarnation(d, { now: () => 1_600_000_000_000 }); // clock stepped back 100 000 000 s
    const c = nextIncarnation(d, { now: () => 1_600_000_000_001 });
    expect(b).toBe(a + 1);
    expect(c).toBe(a + 2);
  });

  it("a corrupt counter file is an error naming the file, never a reset", () => {
    for (const junk of ["", "garbage\n", "12x\n", "-5\n", "99999999999999999999\n", "1.5\n"]) {
      const d = dir();
      writeFileSync(join(d, INCARNATION_FILE), junk);
      expect(() => nextIncarnation(d)).toThrow(join(d, INCARNATION_FILE));
      expect(readFileSync(join(d, INCARNATION_FILE), "utf8")).toBe(junk); // left for a human to look at
    }
  });

  it("takes over the lock of a dead process, waits for a live one", () => {
    const d = dir();
    writeFileSync(join(d, `${INCARNATION_FILE}.lock`), "999999999\n"); // no such pid
    expect(nextIncarnation(d, { now: () => 5 })).toBe(5);
    writeFileSync(join(d, `${INCARNATION_FILE}.lock`), `${process.pid}\n`); // held (by ourselves, for the test)
    expect(() => nextIncarnation(d, { lockTimeoutMs: 50 })).toThrow(/lock held by another process/);
    expect(readFileSync(join(d, INCARNATION_FILE), "utf8")).toBe("5\n");
  });

  it("concurrent processes never get the same value", async () => {
    const d = dir();
    const perProcess = 25;
    const script = `import { nextIncarnation } from ${JSON.stringify(new URL("../../src/runtime/incarnation.ts", import.meta.url).pathname)};
      const out = []; for (let i = 0; i < ${perProcess}; i++) out.push(nextIncarnation(process.argv[1], { now: () => 1000 })); console.log(JSON.stringify(out));`;
    const run = () => promisify(execFile)(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script, d], { cwd: process.cwd() });
    const outs = await Promise.all([run(), run(), run()]);
    const all = outs.flatMap((o) => JSON.parse(o.stdout) as number[]);
    expect(new Set(all).size).toBe(3 * perProcess);
    expect(Math.max(...all)).toBe(1000 + 3 * perProcess - 1);
    expect(readFileSync(join(d, INCARNATION_FILE), "utf8")).toBe(`${1000 + 3 * perProcess - 1}\n`);
  }, 60_000);
});
