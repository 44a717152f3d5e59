import { spawnSync } from "node:child_process";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/core/errors.js";
import { FileReplicator } from "../../src/mirror/FileReplicator.js";
import { helperPath } from "../../src/mirror/helper.js";
import { globMatch, PathFilter } from "../../src/mirror/pathFilter.js";

/** Asks the C matcher (`holdfast-replicator match`) about each [path, isDir]; 1 = replicated. */
function cMatch(include: string[], exclude: string[], cases: Array<[string, boolean]>): boolean[] {
  const args = ["match", ...include.flatMap((p) => ["--include", p]), ...exclude.flatMap((p) => ["--exclude", p])];
  const r = spawnSync(helperPath(), args, { input: cases.map(([p, d]) => `${d ? "d" : "f"} ${p}\n`).join(""), encoding: "utf8" });
  if (r.status !== 0) throw new Error(`match failed: ${r.stderr}`);
  return r.stdout.trim().split("\n").filter((l) => l !== "").map((l) => l === "1");
}

describe("include/exclude patterns", () => {
  it("follow the documented gitignore-like rules", () => {
    const f = new PathFilter([], ["*.tmp", "cache/**", "pg_stat_tmp/", "/core"]);
    const cases: Array<[string, boolean, boolean]> = [
      ["/x.tmp", false, false],
      ["/a/b/x.tmp", false, false], // no slash in the pattern: any depth
      ["/x.tmpl", false, true],
      ["/cache", true, true], // cache/** is what is under cache, not cache itself
      ["/cache/a", false, false],
      ["/cache/d/e", false, false],
      ["/sub/cache/a", false, true], // anchored: a slash inside the pattern
      ["/pg_stat_tmp", true, false],
      ["/pg_stat_tmp/s.stat", false, false], // under an excluded directory
      ["/base/pg_stat_tmp", false, true], // trailing slash: directories only
      ["/base/pg_stat_tmp", true, false],
      ["/core", false, false],
      ["/a/core", false, true], // leading slash: anchored
      ["/", true, true],
    ];
    for (const [p, d, want] of cases) expect([p, d, f.replicated(p, d)]).toEqual([p, d, want]);
    expect(cMatch([], ["*.tmp", "cache/**", "pg_stat_tmp/", "/core"], cases.map(([p, d]) => [p, d]))).toEqual(cases.map((c) => c[2]));

    const inc = new PathFilter(["*.conf", "base/"], ["*.tmp"]);
    expect(inc.replicated("/a/b.conf", false)).toBe(true);
    expect(inc.replicated("/a/b.txt", false)).toBe(false);
    expect(inc.replicated("/a", true)).toBe(true); // directories always, so included files have a place
    expect(inc.replicated("/base/1/2", false)).toBe(true); // under an included directory
    expect(inc.replicated("/base/1/2.tmp", false)).toBe(false); // exclude wins
  });

  it("glob: *, ?, classes, escapes, **", () => {
    expect(globMatch("a*c", "abbc")).toBe(true);
    expect(globMatch("a*c", "ab/c")).toBe(false);
    expect(globMatch("a?c", "abc")).toBe(true);
    expect(globMatch("a[bx]c", "axc")).toBe(true);
    expect(globMatch("a[!bx]c", "axc")).toBe(false);
    expect(globMatch("a[b-d]c", "acc")).toBe(true);
    expect(globMatch("a\\*c", "a*c")).toBe(true);
    expect(globMatch("a\\*c", "abc")).toBe(false);
    expect(globMatch("a/**/b", "a/b")).toBe(true);
    expect(globMatch("a/**/b", "a/x/y/b")).toBe(true);
    expect(globMatch("a/**", "a")).toBe(false);
    expect(globMatch("**/b", "x/b")).toBe(true);
    expect(globMatch("a[b", "a[b")).toBe(true); // malformed class: a literal [
  });

  it("rejects unusable patterns", () => {
    expect(() => new PathFilter([], [""])).toThrow(RangeError);
    expect(() => new PathFilter(["/"], [])).toThrow(RangeError);
    expect(spawnSync(helperPath(), ["match", "--exclude", ""], { encoding: "utf8" }).status).toBe(2);
    const base = { role: "primary" as const, backingDir: "/tmp/a", mountPoint: "/tmp/m", keyFile: "/tmp/k", peer: { host: "127.0.0.1", port: 1 } };
    expect(() => new FileReplicator({ ...base, exclude: ["*.tmp", ""] })).toThrow(ConfigError);
    expect(() => new FileReplicator({ ...base, exclude: ["*.tmp", ""] })).toThrow(/exclude\.1/);
    expect(() => new FileReplicator({ ...base, include: ["*.conf"], exclude: ["cache/**"] })).not.toThrow();
  });

  it("the TypeScript and C matchers agree on generated patterns and paths", () => {
    const tok = fc.constantFrom("a", "b", "ab", "*", "**", "?", "[ab]", "[!a]", "[a-c]", "/", ".tmp", "\\*", "x");
    const pattern = fc.array(tok, { minLength: 1, maxLength: 6 }).map((t) => t.join("")).filter((p) => p.replace(/\/+$/, "").replace(/^\//, "") !== "" && p !== "/");
    const comp = fc.constantFrom("a", "b", "ab", "x.tmp", "c", "*", "ba", "[a");
    const path = fc.tuple(fc.array(comp, { minLength: 1, maxLength: 5 }), fc.boolean()).map(([cs, d]) => [`/${cs.join("/")}`, d] as [string, boolean]);
    fc.assert(
      fc.property(fc.array(pattern, { maxLength: 2 }), fc.array(pattern, { maxLength: 3 }), fc.array(path, { minLength: 1, maxLength: 30 }), (include, exclude, paths) => {
        const f = new PathFilter(include, exclude);
        expect(cMatch(include, exclude, paths)).toEqual(paths.map(([p, d]) => f.replicated(p, d)));
      }),
      { numRuns: 300 },
    );
  });
});
