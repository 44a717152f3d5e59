/*
 * Resync passes, run on the primary each time the link comes up, while the application keeps writing.
 *
 *  log      (default) replay the namespace/metadata records of the extent log in order, then send the logged
 *           data extents read from the files' current content (files found by inode number, so renames
 *           after the write are followed), then each dirty file's size and mtime.
 *  checksum the log is not trusted: recreate the namespace idempotently, remove what the secondary has and the
 *           primary has not, then compare every file by 64 KiB block SHA-256 and send only differing blocks.
 *  full     the secondary empties its directory and receives the whole tree.
 *  verify   log, then rsync's quick check over the whole tree: files whose size or mtime differ from the
 *           secondary's (mtimes are replicated exactly), and files the log names, are compared block by block
 *           after their logged extents were sent. Catches what a crash left unlogged (an operation applied on
 *           the old primary but never acked) while still sending about what changed. Used after an unclean
 *           start, and the right first pass when a failed primary returns as secondary.
 *
 * Ordering with live writes: the namespace phase runs with the gate closed (no new operation can start), and
 * every data chunk is read and sent under G.lk, the same lock that orders live operations, so a chunk read
 * from the file is never older on the wire than a live write to the same range.
 */
#include "primary.h"
#include "filter.h"
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1u << 20)
#define BLOCK (64u << 10)

struct ext { uint64_t off, len; };
struct dirty {
  uint64_t ino;
  char *path;      /* "/rel/path" found by the tree walk */
  struct ext *ex;
  int nex, cap;
  int whole;       /* send the whole file (full mode) */
  int compare;     /* then compare it block by block with the secondary's copy (checksum/verify) */
};
static struct dirty *D;
static size_t Dn, Dcap;
/* An allocation failed during this pass: it ends (the link is cycled, the log kept) and the next one starts over. */
static int oom;
static void *grow(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) oom = 1;
  return q;
}

/* NULL when create and out of memory (oom set). */
static struct dirty *dirty_get(uint64_t ino, int create) {
  for (size_t i = 0; i < Dn; i++) if (D[i].ino == ino) return &D[i]; /* few files per outage: linear is fine */
  if (!create) return NULL;
  if (Dn == Dcap) {
    struct dirty *n = grow(D, (Dcap * 2 + 64) * sizeof *D);
    if (!n) return NULL;
    D = n;
    Dcap = Dcap * 2 + 64;
  }
  memset(&D[Dn], 0, sizeof *D);
  D[Dn].ino = ino;
  return &D[Dn++];
}
/* 0, or -1 when out of memory. */
static int dirty_add(uint64_t ino, uint64_t off, uint64_t len) {
  struct dirty *d = dirty_get(ino, 1);
  if (!d) return -1;
  if (!len) return 0;
  if (d->nex == d->cap) {
    struct ext *n = grow(d->ex, ((size_t)d->cap * 2 + 8) * sizeof *d->ex);
    if (!n) return -1;
    d->ex = n;
    d->cap = d->cap * 2 + 8;
  }
  d->ex[d->nex++] = (struct ext){off, len};
  return 0;
}
static void dirty_free(void) {
  for (size_t i = 0; i < Dn; i++) { free(D[i].path); free(D[i].ex); }
  free(D); D = NULL; Dn = Dcap = 0;
}
static int ext_cmp(const void *a, const void *b) {
  const struct ext *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}
static void merge(struct dirty *d) {
  if (d->nex < 2) return;
  qsort(d->ex, (size_t)d->nex, sizeof *d->ex, ext_cmp);
  int k = 0;
  for (int i = 1; i < d->nex; i++) {
    struct ext *e = &d->ex[k];
    if (d->ex[i].off <= e->off + e->len) {
      uint64_t end = d->ex[i].off + d->ex[i].len;
      if (end > e->off + e->len) e->len = end - e->off;
    } else d->ex[++k] = d->ex[i];
  }
  d->nex = k + 1;
}

/* Sends a frame with no waiter (its ack is ignored; a failed apply still degrades the link). G.lk held. */
static int send_nowait(uint8_t type, struct hf_args *a, const char *path, const char *path2, const void *data) {
  if (!G.connected) return -1;
  a->path_len = path ? (uint32_t)strlen(path) : 0;
  a->path2_len = path2 ? (uint32_t)strlen(path2) : 0;
  struct iovec v[4] = {{a, sizeof *a}, {(void *)path, a->path_len}, {(void *)path2, a->path2_len},
                       {(void *)data, a->data_len}};
  if (send_frame(G.c, type, HF_F_RESYNC, ++G.seq, v, 4) < 0) { degrade_locked("send to secondary failed"); return -1; }
  G.bytes_sent += a->data_len;
  return 0;
}

/* Sends an op and waits for its ack outside the lock. 0 when acked by the same connection generation. */
static int send_wait(uint64_t gen, uint8_t type, struct hf_args *a, const char *path, uint8_t **reply, uint32_t *rlen) {
  struct op o = {.type = type, .flags = HF_F_RESYNC, .path = path ? path : "/", .want_reply = reply != NULL};
  if (a) o.a = *a;
  pthread_mutex_lock(&G.lk);
  if (!G.connected || G.gen != gen) { pthread_mutex_unlock(&G.lk); return -1; }
  op_submit(&o);
  pthread_mutex_unlock(&G.lk);
  if (op_wait(&o) < 0 || o.state != OP_ACKED) return -1;
  if (reply) { *reply = o.reply; *rlen = o.reply_len; }
  return 0;
}

/* The secondary's regular files (from HF_LIST), sorted by path, for the quick check of the verify mode. */
struct remote { char *path; uint64_t size; int64_t mt_s, mt_ns; };
static struct remote *R;
static size_t Rn;
static int remote_cmp(const void *a, const void *b) {
  return strcmp(((const struct remote *)a)->path, ((const struct remote *)b)->path);
}
static const struct remote *remote_find(const char *path) {
  struct remote key = {.path = (char *)path};
  return Rn ? bsearch(&key, R, Rn, sizeof *R, remote_cmp) : NULL;
}
static void remote_free(void) {
  for (size_t i = 0; i < Rn; i++) free(R[i].path);
  free(R); R = NULL; Rn = 0;
}

/* ---- tree walks ---- */
static int walk_mode;          /* RS_* */
static int walk_send;          /* 1: also recreate the namespace on the secondary (full/checksum) */
static size_t bprefix;
struct seen { uint64_t ino; char *path; };
static struct seen *seen;
static size_t seen_n, seen_cap;

static int walk_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)flag;
  if (ftw->level == 0) return 0;
  const char *r = p + bprefix;
  /* excluded paths are never sent, compared or followed by inode; an excluded directory's subtree is skipped */
  if (!filter_replicated(r, S_ISDIR(sb->st_mode))) return S_ISDIR(sb->st_mode) ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
  if (walk_send) {
    struct hf_args a = {.mode = sb->st_mode, .uid = sb->st_uid, .gid = sb->st_gid, .mtime_ns = UTIME_OMIT};
    if (S_ISDIR(sb->st_mode)) {
      if (send_nowait(HF_MKDIR, &a, r, NULL, NULL) < 0) return 1;
    } else if (S_ISLNK(sb->st_mode)) {
      char t[4096];
      ssize_t n = readlink(p, t, sizeof t - 1);
      if (n < 0) return 0;
      t[n] = 0;
      if (walk_mode != RS_FULL) { struct hf_args u = {0}; send_nowait(HF_UNLINK, &u, r, NULL, NULL); }
      if (send_nowait(HF_SYMLINK, &a, r, t, NULL) < 0) return 1;
    } else if (S_ISREG(sb->st_mode) && sb->st_nlink > 1) {
      for (size_t i = 0; i < seen_n; i++)
        if (seen[i].ino == sb->st_ino) {
          struct hf_args u = {0};
          if (walk_mode != RS_FULL) send_nowait(HF_UNLINK, &u, r, NULL, NULL);
          return send_nowait(HF_LINK, &u, seen[i].path, r, NULL) < 0;
        }
      if (seen_n == seen_cap) {
        struct seen *n = grow(seen, (seen_cap * 2 + 16) * sizeof *seen);
        if (!n) return FTW_STOP;
        seen = n;
        seen_cap = seen_cap * 2 + 16;
      }
      char *sp = strdup(r);
      if (!sp) { oom = 1; return FTW_STOP; }
      seen[seen_n++] = (struct seen){sb->st_ino, sp};
      if (send_nowait(HF_CREATE, &a, r, NULL, NULL) < 0) return 1;
    } else if (S_ISREG(sb->st_mode)) {
      if (send_nowait(HF_CREATE, &a, r, NULL, NULL) < 0) return 1;
    } else {
      a.off = sb->st_rdev;
      if (send_nowait(HF_MKNOD, &a, r, NULL, NULL) < 0) return 1;
    }
    if (!S_ISLNK(sb->st_mode)) send_nowait(HF_CHOWN, &a, r, NULL, NULL);
    if (S_ISREG(sb->st_mode)) {
      struct dirty *d = NULL;
      if (walk_mode == RS_FULL) { if ((d = dirty_get(sb->st_ino, 1))) d->whole = 1; }
      else if (walk_mode == RS_CHECKSUM) { if ((d = dirty_get(sb->st_ino, 1))) d->compare = 1; }
      else { /* verify: the quick check, plus every file the log names */
        const struct remote *rm = remote_find(r);
        d = dirty_get(sb->st_ino, 0);
        if (d || !rm || rm->size != (uint64_t)sb->st_size || rm->mt_s != sb->st_mtim.tv_sec ||
            rm->mt_ns != sb->st_mtim.tv_nsec)
          if ((d = dirty_get(sb->st_ino, 1))) d->compare = 1;
      }
      if (oom) return FTW_STOP;
    }
  }
  if (S_ISREG(sb->st_mode)) {
    struct dirty *d = dirty_get(sb->st_ino, 0);
    if (d && !d->path && !(d->path = strdup(r))) { oom = 1; return FTW_STOP; }
  }
  return 0;
}

static int walk(int mode, int send) {
  walk_mode = mode;
  walk_send = send;
  bprefix = strlen(G.backing);
  int r = nftw(G.backing, walk_cb, 64, FTW_PHYS | FTW_ACTIONRETVAL);
  if (oom) r = -1;
  for (size_t i = 0; i < seen_n; i++) free(seen[i].path);
  free(seen); seen = NULL; seen_n = seen_cap = 0;
  return r;
}

/* Removes from the secondary what the primary does not have (checksum/verify). G.lk held, gate closed. */
static int prune_extras(uint64_t gen) {
  uint8_t *rep = NULL;
  uint32_t rlen = 0;
  pthread_mutex_unlock(&G.lk);
  int r = send_wait(gen, HF_LIST, NULL, "/", &rep, &rlen);
  pthread_mutex_lock(&G.lk);
  if (r < 0) return -1;
  /* entries come in preorder; delete deepest first by walking the list backwards */
  size_t n = 0, cap = 0;
  size_t *offs = NULL;
  for (size_t o = 0; o + sizeof(struct hf_list_entry) <= rlen;) {
    struct hf_list_entry e;
    memcpy(&e, rep + o, sizeof e);
    if (n == cap) {
      size_t *no = grow(offs, (cap * 2 + 64) * sizeof *offs);
      if (!no) { free(offs); free(rep); return -1; }
      offs = no;
      cap = cap * 2 + 64;
    }
    offs[n++] = o;
    o += sizeof e + e.path_len + e.target_len;
  }
  for (size_t i = n; i-- > 0;) {
    struct hf_list_entry e;
    memcpy(&e, rep + offs[i], sizeof e);
    char p[4097];
    snprintf(p, sizeof p, "%.*s", (int)e.path_len, (char *)rep + offs[i] + sizeof e);
    struct stat st;
    if (!filter_replicated(p, S_ISDIR(e.mode))) continue; /* the secondary's excluded paths are left alone */
    if (S_ISREG(e.mode)) {
      struct remote *nr = grow(R, (Rn + 1) * sizeof *R);
      char *rp = nr ? strdup(p) : NULL;
      if (!rp) { oom = 1; if (nr) R = nr; free(offs); free(rep); return -1; }
      R = nr;
      R[Rn++] = (struct remote){rp, e.size, e.mtime_s, e.mtime_ns};
    }
    int gone = b_fstatat(G.bfd, rel(p), &st) < 0 && (errno == ENOENT || errno == ENOTDIR);
    int kind_differs = !gone && ((st.st_mode & S_IFMT) != (e.mode & S_IFMT));
    if (gone || kind_differs) {
      struct hf_args a = {0};
      send_nowait(S_ISDIR(e.mode) ? HF_RMDIR : HF_UNLINK, &a, p, NULL, NULL);
    }
  }
  free(offs);
  free(rep);
  qsort(R, Rn, sizeof *R, remote_cmp);
  return 0;
}

/* Reads [off, off+len) of the file and sends it, under G.lk. Returns bytes sent, 0 when the file moved, -1. */
static long send_chunk(uint64_t gen, struct dirty *d, uint64_t off, uint64_t len, uint8_t *buf) {
  pthread_mutex_lock(&G.lk);
  if (!G.connected || G.gen != gen) { pthread_mutex_unlock(&G.lk); return -1; }
  int fd = b_open(G.bfd, rel(d->path), O_RDONLY, 0);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0 || st.st_ino != d->ino) {
    if (fd >= 0) close(fd);
    pthread_mutex_unlock(&G.lk);
    return 0;
  }
  if (off >= (uint64_t)st.st_size) { close(fd); pthread_mutex_unlock(&G.lk); return 1; }
  if (off + len > (uint64_t)st.st_size) len = (uint64_t)st.st_size - off;
  ssize_t n = pread(fd, buf, len, (off_t)off);
  close(fd);
  if (n <= 0) { pthread_mutex_unlock(&G.lk); return 1; }
  struct hf_args a = {.off = off, .len = (uint64_t)n, .data_len = (uint32_t)n, .mtime_ns = UTIME_OMIT};
  long r = send_nowait(HF_WRITE, &a, d->path, NULL, buf) < 0 ? -1 : n;
  pthread_mutex_unlock(&G.lk);
  return r;
}

/* Sends the file's current size and mtime. */
static int send_size(uint64_t gen, struct dirty *d) {
  pthread_mutex_lock(&G.lk);
  int r = 0;
  struct stat st;
  if (!G.connected || G.gen != gen) r = -1;
  else if (b_fstatat(G.bfd, rel(d->path), &st) == 0 && st.st_ino == d->ino) {
    struct hf_args a = {.off = (uint64_t)st.st_size, .mtime_s = st.st_mtim.tv_sec, .mtime_ns = st.st_mtim.tv_nsec};
    r = send_nowait(HF_TRUNCATE, &a, d->path, NULL, NULL);
  }
  pthread_mutex_unlock(&G.lk);
  return r;
}

static void progress(uint64_t done, uint64_t total) {
  emit("{\"event\":\"resync-progress\",\"bytes\":%llu,\"total\":%llu,\"percent\":%.1f}", (unsigned long long)done,
       (unsigned long long)total, total ? 100.0 * (double)done / (double)total : 100.0);
}

static const char *mode_name(int mode) {
  return mode == RS_FULL ? "full" : mode == RS_CHECKSUM ? "checksum" : mode == RS_VERIFY ? "verify" : "log";
}

/* Compares the file with the secondary's copy block by block and sends the blocks that differ. */
static int compare_file(uint64_t gen, struct dirty *d, uint8_t *buf, uint64_t *done, uint64_t *since_barrier) {
  uint8_t *rep = NULL;
  uint32_t rlen = 0;
  struct hf_args a = {.len = BLOCK};
  if (send_wait(gen, HF_CHECKSUM, &a, d->path, &rep, &rlen) < 0) return -1;
  uint32_t nsum = rlen >= 8 ? (rlen - 8) / 32 : 0;
  const uint8_t *sums = rep + 8;
  int rc = 0;
  for (uint64_t off = 0;; off += BLOCK) {
    /* read and decide under the lock so a concurrent write cannot slip between read and decision */
    pthread_mutex_lock(&G.lk);
    int fd = b_open(G.bfd, rel(d->path), O_RDONLY, 0);
    struct stat st;
    ssize_t n = -1;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == d->ino) n = pread(fd, buf, BLOCK, (off_t)off);
    if (fd >= 0) close(fd);
    if (n <= 0) { pthread_mutex_unlock(&G.lk); break; }
    uint8_t h[32];
    int same = sha256(buf, (size_t)n, h) == 0 && off / BLOCK < nsum && !memcmp(h, sums + (off / BLOCK) * 32, 32);
    if (!same) {
      struct hf_args w = {.off = off, .len = (uint64_t)n, .data_len = (uint32_t)n, .mtime_ns = UTIME_OMIT};
      if (!G.connected || G.gen != gen || send_nowait(HF_WRITE, &w, d->path, NULL, buf) < 0) rc = -1;
      else { G.resync_bytes += (uint64_t)n; *since_barrier += (uint64_t)n; }
    }
    pthread_mutex_unlock(&G.lk);
    if (rc) break;
    *done += (uint64_t)n;
    if (*since_barrier >= (16u << 20)) {
      *since_barrier = 0;
      if (send_wait(gen, HF_BARRIER, NULL, NULL, NULL, NULL) < 0) { rc = -1; break; }
    }
  }
  free(rep);
  return rc;
}

/* Data phase: every dirty file's extents (whole files in full mode), then the block comparison if asked. */
static int data_phase(uint64_t gen, int mode) {
  uint8_t *buf = malloc(CHUNK);
  if (!buf) { oom = 1; return -1; }
  uint64_t total = 0, done = 0, since_barrier = 0;
  for (size_t i = 0; i < Dn; i++) {
    struct dirty *d = &D[i];
    merge(d);
    struct stat st;
    if (d->path && b_fstatat(G.bfd, rel(d->path), &st) == 0) {
      if (d->whole) {
        d->nex = 0;
        if (dirty_add(d->ino, 0, (uint64_t)st.st_size) < 0) { free(buf); return -1; }
        d = &D[i];
      }
      for (int k = 0; k < d->nex; k++) {
        uint64_t end = d->ex[k].off + d->ex[k].len;
        if (end > (uint64_t)st.st_size) end = (uint64_t)st.st_size;
        if (end > d->ex[k].off) total += end - d->ex[k].off;
      }
      if (d->compare) total += (uint64_t)st.st_size;
    }
  }
  emit("{\"event\":\"resync-start\",\"mode\":\"%s\",\"files\":%zu,\"total\":%llu}", mode_name(mode), Dn,
       (unsigned long long)total);
  int rc = 0;
  for (size_t i = 0; i < Dn && !rc; i++) {
    struct dirty *d = &D[i];
    if (!d->path) continue; /* deleted since: its unlink was replicated */
    for (int k = 0; k < d->nex && !rc; k++) {
      for (uint64_t off = d->ex[k].off; off < d->ex[k].off + d->ex[k].len && !rc;) {
        uint64_t len = d->ex[k].off + d->ex[k].len - off;
        if (len > CHUNK) len = CHUNK;
        long n = send_chunk(gen, d, off, len, buf);
        if (n < 0) { rc = -1; break; }
        if (n == 0) break; /* renamed or deleted meanwhile: its namespace op was replicated live */
        G.resync_bytes += (uint64_t)n;
        done += (uint64_t)n;
        since_barrier += (uint64_t)n;
        off += (uint64_t)n;
        if (since_barrier >= (16u << 20)) {
          since_barrier = 0;
          if (send_wait(gen, HF_BARRIER, NULL, NULL, NULL, NULL) < 0) { rc = -1; break; }
          progress(done, total);
        }
      }
    }
    if (!rc && d->compare) rc = compare_file(gen, d, buf, &done, &since_barrier);
    if (!rc && send_size(gen, d) < 0) rc = -1;
    if (!rc && d->compare) progress(done, total);
  }
  free(buf);
  if (!rc) progress(total, total);
  return rc;
}

/* Reads the extent log: replays its namespace records (G.lk held) and collects the dirty extents. */
static int replay_log(void) {
  off_t size = lseek(G.logfd, 0, SEEK_END);
  if (size < 0) return -1;
  uint8_t *L = malloc((size_t)size + 1);
  if (!L) { oom = 1; return -1; }
  if (pread(G.logfd, L, (size_t)size, 0) != size) { free(L); return -1; }
  int replayed = 0;
  for (off_t o = 0; o + 40 <= size;) {
    uint32_t m, blen;
    memcpy(&m, L + o, 4);
    memcpy(&blen, L + o + 4, 4);
    if (m != 0x524c4648u || o + 40 + blen > size) break; /* torn tail */
    uint8_t *b = L + o + 40, h[32];
    if (sha256(b, blen, h) < 0) { free(L); oom = 1; return -1; }
    if (memcmp(h, L + o + 8, 32)) break;
    uint8_t type = b[0];
    uint64_t ino;
    struct hf_args a;
    memcpy(&ino, b + 2, 8);
    memcpy(&a, b + 10, sizeof a);
    char *p1 = (char *)b + 10 + sizeof a;
    char path[4097], path2[4097];
    snprintf(path, sizeof path, "%.*s", (int)a.path_len, p1);
    snprintf(path2, sizeof path2, "%.*s", (int)a.path2_len, p1 + a.path_len);
    const uint8_t *data = (uint8_t *)p1 + a.path_len + a.path2_len;
    if (type == HF_WRITE || type == HF_FALLOCATE) {
      if (dirty_add(ino, a.off, a.len) < 0) { free(L); return -1; }
    } else if ((type == HF_CREATE || type == HF_TRUNCATE) && !dirty_get(ino, 1)) {
      free(L);
      return -1;
    }
    if (type != HF_WRITE) {
      if (send_nowait(type, &a, path, path2, data) < 0) { free(L); return -1; }
      replayed++;
    }
    o += 40 + blen;
  }
  free(L);
  emit("{\"event\":\"resync-replay\",\"records\":%d,\"files\":%zu}", replayed, Dn);
  return 0;
}

void *resync_thread(void *arg) {
  uint64_t gen = (uint64_t)(uintptr_t)arg;
  pthread_mutex_lock(&G.lk);
  int mode = G.next_mode, rc = 0;
  oom = 0;
  /* a change applied here is missing from the log (log_lost): the log alone cannot bring the secondary level */
  if (mode == RS_LOG && G.log_incomplete) mode = RS_VERIFY;
  struct hf_args z = {0};
  if (!G.connected || G.gen != gen) rc = -1;
  if (!rc) rc = send_nowait(HF_RESYNC_BEGIN, &z, "/", NULL, NULL);
  if (!rc && mode == RS_FULL) {
    rc = send_nowait(HF_RESET, &z, "/", NULL, NULL);
    if (!rc) rc = walk(mode, 1) ? -1 : 0;
  } else if (!rc && mode == RS_CHECKSUM) {
    rc = prune_extras(gen);
    if (!rc) rc = walk(mode, 1) ? -1 : 0;
  } else if (!rc && mode == RS_VERIFY) {
    rc = replay_log();
    if (!rc) rc = prune_extras(gen);
    if (!rc) rc = walk(mode, 1) ? -1 : 0;
  } else if (!rc) {
    rc = replay_log();
    if (!rc && Dn) rc = walk(mode, 0) ? -1 : 0; /* inode -> current path */
  }
  G.gate_closed = 0;
  pthread_cond_broadcast(&G.gate_cv);
  pthread_mutex_unlock(&G.lk);
  if (!rc) rc = data_phase(gen, mode);
  dirty_free();
  remote_free();
  if (!rc) rc = send_wait(gen, HF_RESYNC_DONE, NULL, NULL, NULL, NULL);
  if (rc) {
    /* the link failed (the log still holds everything; the next connection starts over), or this pass could not
     * go on (out of memory, the log unreadable): then the link is cycled so that a new pass runs */
    pthread_mutex_lock(&G.lk);
    if (G.connected && G.gen == gen) degrade_locked(oom ? "resync failed: out of memory" : "resync failed");
    pthread_mutex_unlock(&G.lk);
    return NULL;
  }
  pthread_mutex_lock(&G.lk);
  if (G.connected && G.gen == gen) {
    /* everything logged is now on the secondary, and everything since was acked live; a log that cannot be
     * emptied is replayed again next time (idempotent), so its errors only cost time */
    if (ftruncate(G.logfd, 0) == 0) fdatasync(G.logfd);
    G.log_incomplete = 0; /* this pass was a verify (at least): what the log lacked is on the secondary now */
    G.log_records = 0;
    G.state = ST_SYNC;
    G.next_mode = RS_LOG;
    __atomic_add_fetch(&G.syncs, 1, __ATOMIC_RELEASE); /* the operations logged before this pass may now return */
    emit("{\"event\":\"synced\",\"mode\":\"%s\"}", mode_name(mode));
  }
  pthread_mutex_unlock(&G.lk);
  permit_wake_all();
  return NULL;
}
