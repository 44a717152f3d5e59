// Include/exclude patterns of the primary (--include P / --exclude P, repeatable): which paths of the mount are
// replicated. Semantics (gitignore-like; the TypeScript twin is src/mirror/pathFilter.ts, and both are checked
// against each other on generated cases by test/unit/mirror-filter.test.ts through `holdfast-replicator match`):
//
//  - Patterns are relative to the replicated directory. `*` matches any run of characters except `/`, `?` one
//    character except `/`, `[abc]` / `[a-z]` / `[!a-z]` a class, `\x` the character x; `**` as a whole component
//    matches any number of components (`**` alone, `a/**` = everything under a, `**` + `/x`, `a/**` + `/b`).
//  - A pattern with no `/` except a trailing one matches a name at any depth (`*.tmp`); one with a leading or
//    inner `/` is anchored at the replicated directory (`/core`, `cache/**`, `a/*.log`).
//  - A trailing `/` matches directories only (`pg_stat_tmp/`).
//  - A path is excluded when it or one of its ancestor directories matches an exclude pattern (so an excluded
//    directory excludes its whole subtree).
//  - With include patterns, a non-directory is replicated only when it or an ancestor directory matches one;
//    directories are always replicated (so an included file has a place), unless excluded. Exclude wins.
//
#ifndef HF_FILTER_H
#define HF_FILTER_H
/* Adds a pattern; 0, or -1 when it is empty or too long. */
int filter_add(int include, const char *pattern);
/* 1 when any pattern is configured. */
int filter_active(void);
/* 1 when `path` ("/a/b" or "a/b"; "/" and "" are the root) is replicated; is_dir says what the path itself is. */
int filter_replicated(const char *path, int is_dir);
/* The `match` subcommand: reads "d PATH" / "f PATH" lines on stdin, prints 1 (replicated) or 0 per line. */
int run_match(int argc, char **argv);
#endif
