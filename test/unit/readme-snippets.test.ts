/**
 * The README's "Use it as a library" snippets compile against the package's public entry points ("holdfast",
 * resolved to src/ by tsconfig.json's paths), so the documented API and the code cannot drift apart.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";

const REPO = join(import.meta.dirname, "..", "..");
const DIR = join(REPO, "test", ".readme-snippets");

/** The ```ts blocks between the section's heading and the next heading of the same level. */
function snippets(): string[] {
  const md = readFileSync(join(REPO, "README.md"), "utf8");
  const start = md.indexOf("## Use it as a library");
  const end = md.indexOf("\n## ", start + 3);
  const section = md.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

afterAll(() => rmSync(DIR, { recursive: true, force: true }));

it("the README's library snippets (farm, mirror, membership) typecheck against the public API", () => {
  const code = snippets();
  expect(code.length).toBeGreaterThanOrEqual(3);
  expect(code.some((c) => c.includes('kind: "farm"'))).toBe(true);
  expect(code.some((c) => c.includes('kind: "mirror"'))).toBe(true);
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  code.forEach((c, i) => writeFileSync(join(DIR, `snippet${i}.ts`), c));
  writeFileSync(join(DIR, "tsconfig.json"), JSON.stringify({ extends: "../../tsconfig.json", compilerOptions: { rootDir: "../.." }, include: ["*.ts", "../../src/**/*.d.ts"] }));
  let out = "";
  try {
    execFileSync(join(REPO, "node_modules", ".bin", "tsc"), ["--noEmit", "-p", DIR], { cwd: REPO, encoding: "utf8" });
  } catch (e) {
    out = String((e as { stdout?: string }).stdout ?? e);
  }
  expect(out).toBe("");
}, 120_000);
