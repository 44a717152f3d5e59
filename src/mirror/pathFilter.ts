/**
 * Include/exclude patterns of a replicated directory (FileReplicator `include` / `exclude`): which paths are
 * replicated. The TypeScript twin of src/native/replicator/filter.c (the helper applies them; this copy
 * validates options and lets tools and tests ask the same question). Semantics, gitignore-like:
 *
 * - Patterns are relative to the replicated directory. `*` matches any run of characters except `/`, `?` one
 *   character except `/`, `[abc]` / `[a-z]` / `[!a-z]` a class, `\x` the character x; `**` as a whole path
 *   component matches any number of components (`**`; `cache/**` = everything under cache; `**` then `/x` = x at any depth).
 * - A pattern with no `/` except a trailing one matches a name at any depth (`*.tmp`); a leading or inner `/`
 *   anchors it at the replicated directory (`/core`, `cache/**`, `log/*.old`).
 * - A trailing `/` matches directories only (`pg_stat_tmp/`).
 * - A path is excluded when it or one of its ancestor directories matches an exclude pattern: an excluded
 *   directory excludes its subtree.
 * - With include patterns, a non-directory is replicated only when it or an ancestor directory matches one;
 *   directories are always replicated (so included files have a place) unless excluded. Exclude wins.
 *
 * Classes compare characters (UTF-16 units here, bytes in C): keep ranges ASCII.
 */

interface Pat {
  glob: string;
  dirOnly: boolean;
}

/** Parses one pattern; throws RangeError when it is empty (or only `/`) or longer than 4000 characters. */
function compile(pattern: string): Pat {
  let s = pattern;
  if (s.length === 0 || s.length > 4000 || s.includes("\0") || s.includes("\n")) throw new RangeError(`bad pattern: ${JSON.stringify(pattern)}`);
  let dirOnly = false;
  if (s.length > 1 && s.endsWith("/")) {
    dirOnly = true;
    s = s.slice(0, -1);
  }
  let anchored = false;
  if (s.startsWith("/")) {
    anchored = true;
    s = s.slice(1);
  }
  if (!anchored && s.includes("/")) anchored = true;
  if (s.length === 0) throw new RangeError(`bad pattern: ${JSON.stringify(pattern)}`);
  return { glob: anchored ? s : `**/${s}`, dirOnly };
}

/** `[class]` starting after `[` at i; [matched, index after `]`] or undefined when malformed (`[` is literal). */
function classMatch(p: string, i: number, c: string): [boolean, number] | undefined {
  let neg = false;
  let ok = false;
  if (p[i] === "!" || p[i] === "^") {
    neg = true;
    i++;
  }
  const start = i;
  while (i < p.length && (p[i] !== "]" || i === start)) {
    let lo = p[i] as string;
    if (lo === "\\" && i + 1 < p.length) lo = p[++i] as string;
    let hi: string;
    if (p[i + 1] === "-" && i + 2 < p.length && p[i + 2] !== "]") {
      hi = p[i + 2] as string;
      if (hi === "\\" && i + 3 < p.length) {
        hi = p[i + 3] as string;
        i++;
      }
      i += 3;
    } else {
      hi = lo;
      i++;
    }
    if (c >= lo && c <= hi) ok = true;
  }
  if (p[i] !== "]") return undefined;
  return [c !== "/" && ok !== neg, i + 1];
}

/** Glob match of a whole path (no leading `/`), as filter.c's `glob`. */
export function globMatch(p: string, s: string, pi = 0, si = 0): boolean {
  for (;;) {
    if (p[pi] === "*" && p[pi + 1] === "*" && (p[pi + 2] === "/" || pi + 2 === p.length)) {
      if (pi + 2 === p.length) return true;
      if (globMatch(p, s, pi + 3, si)) return true;
      for (let q = si; q < s.length; q++) if (s[q] === "/" && globMatch(p, s, pi + 3, q + 1)) return true;
      return false;
    }
    if (pi === p.length) return si === s.length;
    const ch = p[pi] as string;
    if (ch === "*") {
      while (p[pi] === "*") pi++;
      for (let q = si; ; q++) {
        if (globMatch(p, s, pi, q)) return true;
        if (q === s.length || s[q] === "/") return false;
      }
    }
    if (ch === "?") {
      if (si === s.length || s[si] === "/") return false;
      pi++;
      si++;
      continue;
    }
    if (ch === "[") {
      if (si === s.length) return false;
      const m = classMatch(p, pi + 1, s[si] as string);
      if (m === undefined) {
        if (s[si] !== "[") return false;
        pi++;
        si++;
        continue;
      }
      if (!m[0]) return false;
      pi = m[1];
      si++;
      continue;
    }
    let lit = ch;
    if (ch === "\\" && pi + 1 < p.length) lit = p[++pi] as string;
    if (si === s.length || lit !== s[si]) return false;
    pi++;
    si++;
  }
}

/** Compiled include/exclude patterns. */
export class PathFilter {
  private readonly inc: Pat[];
  private readonly exc: Pat[];

  /** Throws RangeError for an unusable pattern (empty, `/`, a NUL or newline, over 4000 characters). */
  constructor(include: readonly string[] = [], exclude: readonly string[] = []) {
    this.inc = include.map(compile);
    this.exc = exclude.map(compile);
  }

  get active(): boolean {
    return this.inc.length + this.exc.length > 0;
  }

  /** True when `path` (relative or with a leading `/`; "" = the root) is replicated; `isDir`: what it is. */
  replicated(path: string, isDir: boolean): boolean {
    if (!this.active) return true;
    const rel = path.replace(/^\/+/, "");
    if (rel === "") return true;
    let included = this.inc.length === 0 || isDir;
    for (let i = 0; i <= rel.length; i++) {
      if (i < rel.length && rel[i] !== "/") continue;
      const prefix = rel.slice(0, i);
      const d = i < rel.length ? true : isDir;
      if (this.exc.some((p) => (!p.dirOnly || d) && globMatch(p.glob, prefix))) return false;
      if (!included && this.inc.some((p) => (!p.dirOnly || d) && globMatch(p.glob, prefix))) included = true;
    }
    return included;
  }
}
