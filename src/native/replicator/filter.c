/* Include/exclude patterns: see filter.h. */
#include "filter.h"
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXPAT 256
struct pat {
  char *glob;   /* anchored form: no leading '/', "**" + "/" prepended when unanchored */
  int dir_only;
};
static struct pat inc[MAXPAT], exc[MAXPAT];
static int ninc, nexc;

int filter_add(int include, const char *pattern) {
  size_t n = strlen(pattern);
  if (n == 0 || n > 4000) return -1;
  if ((include ? ninc : nexc) >= MAXPAT) return -1;
  char *p = malloc(n + 4);
  if (!p) return -1;
  int dir_only = 0;
  const char *s = pattern;
  if (n > 1 && s[n - 1] == '/') { dir_only = 1; n--; }
  int anchored = 0;
  if (s[0] == '/') { anchored = 1; s++; n--; }
  if (!anchored && memchr(s, '/', n)) anchored = 1;
  if (n == 0) { free(p); return -1; }
  if (anchored) snprintf(p, n + 4, "%.*s", (int)n, s);
  else snprintf(p, n + 4, "**/%.*s", (int)n, s);
  struct pat *t = include ? &inc[ninc++] : &exc[nexc++];
  t->glob = p;
  t->dir_only = dir_only;
  return 0;
}

int filter_active(void) { return ninc + nexc > 0; }

/* [class] at p (p points after '['); sets *end after ']'; -1 when malformed (then '[' is a literal). */
static int class_match(const char *p, unsigned char c, const char **end) {
  int neg = 0, ok = 0;
  if (*p == '!' || *p == '^') { neg = 1; p++; }
  const char *start = p;
  while (*p && (*p != ']' || p == start)) {
    unsigned char lo = (unsigned char)*p, hi;
    if (lo == '\\' && p[1]) lo = (unsigned char)*++p;
    if (p[1] == '-' && p[2] && p[2] != ']') {
      hi = (unsigned char)p[2];
      if (hi == '\\' && p[3]) { hi = (unsigned char)p[3]; p++; }
      p += 3;
    } else {
      hi = lo;
      p++;
    }
    if (c >= lo && c <= hi) ok = 1;
  }
  if (*p != ']') return -1;
  *end = p + 1;
  return c != '/' && (ok ^ neg);
}

static int glob(const char *p, const char *s) {
  for (;;) {
    if (p[0] == '*' && p[1] == '*' && (p[2] == '/' || p[2] == 0)) {
      if (p[2] == 0) return 1; /* trailing "**": anything, any depth */
      /* "**" + "/": zero or more whole components */
      if (glob(p + 3, s)) return 1;
      for (const char *q = s; *q; q++)
        if (*q == '/' && glob(p + 3, q + 1)) return 1;
      return 0;
    }
    switch (*p) {
    case 0:
      return *s == 0;
    case '*': {
      while (*p == '*') p++;
      for (const char *q = s;; q++) {
        if (glob(p, q)) return 1;
        if (*q == 0 || *q == '/') return 0;
      }
    }
    case '?':
      if (*s == 0 || *s == '/') return 0;
      p++; s++;
      break;
    case '[': {
      const char *end;
      if (*s == 0) return 0;
      int m = class_match(p + 1, (unsigned char)*s, &end);
      if (m < 0) { if (*s != '[') return 0; p++; s++; break; }
      if (!m) return 0;
      p = end; s++;
      break;
    }
    case '\\':
      if (p[1]) p++;
      /* fall through */
    default:
      if (*p != *s) return 0;
      p++; s++;
    }
  }
}

static int any(const struct pat *ps, int n, const char *path, int is_dir) {
  for (int i = 0; i < n; i++)
    if ((!ps[i].dir_only || is_dir) && glob(ps[i].glob, path)) return 1;
  return 0;
}

int filter_replicated(const char *path, int is_dir) {
  if (!filter_active()) return 1;
  while (*path == '/') path++;
  if (!*path) return 1;
  char buf[4097];
  size_t n = strlen(path);
  if (n >= sizeof buf) n = sizeof buf - 1;
  memcpy(buf, path, n);
  buf[n] = 0;
  int included = ninc == 0 || is_dir;
  /* each ancestor ("a", "a/b", ...) then the path itself */
  for (size_t i = 0; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    char saved = buf[i];
    buf[i] = 0;
    int d = saved == '/' ? 1 : is_dir;
    if (any(exc, nexc, buf, d)) return 0;
    if (!included && any(inc, ninc, buf, d)) included = 1;
    buf[i] = saved;
  }
  return included;
}

int run_match(int argc, char **argv) {
  static struct option lopts[] = {{"include", 1, 0, 'i'}, {"exclude", 1, 0, 'e'}, {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
    if ((o != 'i' && o != 'e') || filter_add(o == 'i', optarg) < 0) {
      fprintf(stderr, "usage: holdfast-replicator match [--include P]... [--exclude P]... < lines of \"d|f PATH\"\n");
      return 2;
    }
  }
  char line[8200];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    if (!line[0]) continue;
    printf("%d\n", filter_replicated(line + 2, line[0] == 'd'));
  }
  return 0;
}
