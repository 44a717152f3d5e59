/*
 * Secondary: listens, authenticates the primary, applies its operations strictly in sequence to the backing
 * directory and acks each one. fsync/fdatasync run on a small pool so that one slow flush does not stall the
 * stream; their acks are sent when the flush is done (this is what makes the primary's fsync "protocol C").
 */
#include "common.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static struct {
  int bfd;
  char *backing;
  char *state_path;
  uint8_t key[4096];
  size_t keylen;
  int encrypt;
  uint64_t applied, bytes;
  int stopping;   /* the supervisor is gone: nothing more is applied (under apply_lk) */
} S;
/* Held around each apply, so that once the supervisor is gone no operation starts on the backing directory. */
static pthread_mutex_t apply_lk = PTHREAD_MUTEX_INITIALIZER;

/* ---- fsync pool ---- */
struct fjob { int fd; int datasync; uint64_t seq; struct conn *c; struct fjob *next; };
static pthread_mutex_t fq_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fq_cv = PTHREAD_COND_INITIALIZER, fq_idle = PTHREAD_COND_INITIALIZER;
static struct fjob *fq_head, *fq_tail;
static int fq_busy;

static void send_ack(struct conn *c, uint64_t seq, int32_t status, const void *data, uint32_t len) {
  struct iovec v[2] = {{&status, 4}, {(void *)data, len}};
  pthread_mutex_lock(&c->tx_lock);
  /* a failed send ends the stream (the reader sees EOF): an ack is never dropped silently */
  if (send_frame(c, HF_ACK, 0, seq, v, len ? 2 : 1) < 0) shutdown(c->fd, SHUT_RDWR);
  pthread_mutex_unlock(&c->tx_lock);
}

static void *fsync_worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&fq_lock);
    while (!fq_head) pthread_cond_wait(&fq_cv, &fq_lock);
    struct fjob *j = fq_head;
    fq_head = j->next;
    if (!fq_head) fq_tail = NULL;
    fq_busy++;
    pthread_mutex_unlock(&fq_lock);
    int r = j->datasync ? fdatasync(j->fd) : fsync(j->fd);
    int st = r < 0 ? errno : 0;
    close(j->fd);
    send_ack(j->c, j->seq, st, NULL, 0);
    free(j);
    pthread_mutex_lock(&fq_lock);
    fq_busy--;
    if (!fq_busy && !fq_head) pthread_cond_broadcast(&fq_idle);
    pthread_mutex_unlock(&fq_lock);
  }
  return NULL;
}

static void fsync_drain(void) {
  pthread_mutex_lock(&fq_lock);
  while (fq_busy || fq_head) pthread_cond_wait(&fq_idle, &fq_lock);
  pthread_mutex_unlock(&fq_lock);
}

/* Records the copy's state durably: a temporary file written and fsync'd, renamed over the state file, and the
 * directory fsync'd (the rename itself is durable only then). This file decides whether the node may become
 * primary (mirror.ts refuses an inconsistent copy), so a failure is never ignored: 0, or a positive errno (an
 * `error` line says which step failed; the caller ends the stream instead of acknowledging). */
static int set_state(const char *st) {
  if (!S.state_path) { emit("{\"event\":\"%s\"}", st); return 0; }
  char tmp[4200];
  const char *step = "open";
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", S.state_path) >= sizeof tmp) { errno = ENAMETOOLONG; goto fail; }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) goto fail;
  char line[32];
  int n = snprintf(line, sizeof line, "%s\n", st);
  step = "write";
  if (write_full(fd, line, (size_t)n) < 0) { int e = errno; close(fd); errno = e; goto fail; }
  step = "fsync";
  if (fsync(fd) < 0) { int e = errno; close(fd); errno = e; goto fail; }
  step = "close";
  if (close(fd) < 0) goto fail;
  step = "rename";
  if (rename(tmp, S.state_path) < 0) goto fail;
  step = "fsync of the directory";
  if (fsync_parent(S.state_path) < 0) goto fail;
  emit("{\"event\":\"%s\"}", st);
  return 0;
fail:;
  int e = errno ? errno : EIO;
  char m[4400];
  snprintf(m, sizeof m, "state file %s: cannot record \"%s\" (%s failed: %s)", S.state_path, st, step, strerror(e));
  emit("{\"event\":\"error\",\"message\":%s,\"errno\":%d}", jstr(m), e);
  return e;
}

/* `selftest`: a state file that cannot be written is an error, never a silent success. 0 or failures. */
int state_selftest(void) {
  char *saved = S.state_path;
  S.state_path = "/nonexistent-holdfast-dir/state";
  int fails = set_state("consistent") != ENOENT;
  S.state_path = saved;
  if (fails) fprintf(stderr, "selftest state file: a failed write was not reported\n");
  return fails;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)flag;
  if (ftw->level == 0) return 0;
  return remove(p) < 0 ? -1 : 0;
}

/* ---- write fd cache ----
 * Data operations (write, truncate, fallocate) reuse an open fd per path instead of openat + close each time
 * (PostgreSQL writes 8 KiB pages to a few files: the path walk and the open/close were a large part of the
 * secondary's per-operation cost). Used only by the apply thread. An fd names an inode, so every operation
 * that can change which inode a path names (unlink, rmdir, rename, link, create, symlink, mknod, reset) empties
 * the cache first. */
#define WC_SLOTS 64
static struct { char *path; int fd; } wc[WC_SLOTS];
static void wc_clear(void) {
  for (int i = 0; i < WC_SLOTS; i++)
    if (wc[i].path) { close(wc[i].fd); free(wc[i].path); wc[i].path = NULL; }
}
static int wc_open(const char *r) {
  uint32_t h = 2166136261u;
  for (const char *q = r; *q; q++) h = (h ^ (uint8_t)*q) * 16777619u;
  int k = (int)(h % WC_SLOTS);
  if (wc[k].path && !strcmp(wc[k].path, r)) return wc[k].fd;
  int fd = b_open(S.bfd, r, O_WRONLY, 0);
  if (fd < 0) return -1;
  char *p = strdup(r);
  if (!p) { close(fd); errno = ENOMEM; return -1; }
  if (wc[k].path) { close(wc[k].fd); free(wc[k].path); }
  wc[k].path = p;
  wc[k].fd = fd;
  return fd;
}

/* ---- HF_CHECKSUM / HF_LIST replies ---- */
struct buf { uint8_t *p; size_t n, cap; };
/* 0, or -1 with errno ENOMEM (b unchanged). */
static int buf_add(struct buf *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = (b->n + n) * 2 + 4096;
    uint8_t *p = realloc(b->p, cap);
    if (!p) { errno = ENOMEM; return -1; }
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, d, n);
  b->n += n;
  return 0;
}
static struct buf list_buf;
static size_t list_prefix;
static int list_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)flag;
  if (ftw->level == 0) return 0;
  const char *r = p + list_prefix; /* "/x/y" */
  char target[4096];
  ssize_t tl = 0;
  if (S_ISLNK(sb->st_mode)) { tl = readlink(p, target, sizeof target); if (tl < 0) tl = 0; }
  struct hf_list_entry e = {.mode = sb->st_mode, .uid = sb->st_uid, .gid = sb->st_gid,
                            .path_len = (uint32_t)strlen(r), .target_len = (uint32_t)tl,
                            .size = (uint64_t)sb->st_size, .mtime_s = sb->st_mtim.tv_sec,
                            .mtime_ns = sb->st_mtim.tv_nsec};
  if (buf_add(&list_buf, &e, sizeof e) < 0 || buf_add(&list_buf, r, e.path_len) < 0 ||
      buf_add(&list_buf, target, (size_t)tl) < 0)
    return -1; /* nftw returns it, errno ENOMEM */
  return 0;
}

/* The path of the operation being applied, for apply-error lines (apply thread only). */
static char apply_path[4097];
static const char *apply_why(int st) {
  static char m[4400];
  if (st == EXDEV || st == ELOOP)
    /* b_* (wire.c): a path through a symlink leading out of the backing directory, or a /proc magic link, or
     * O_NOFOLLOW on a last component that is a symlink */
    snprintf(m, sizeof m, "%s: %s: refused, resolving it would leave the backing directory (symlink)", apply_path,
             strerror(st));
  else
    snprintf(m, sizeof m, "%s: %s", apply_path, strerror(st));
  return m;
}

/* Applies one operation; returns 0 or a positive errno. May take ownership of the ack (returns -1). */
static int apply(struct conn *c, const struct hf_hdr *h, const uint8_t *pl) {
  if (h->type == HF_BARRIER) return 0;
  /* state changes: a failure answers with its errno, which ends the stream (serve) */
  if (h->type == HF_RESYNC_BEGIN) return set_state("inconsistent");
  if (h->type == HF_RESYNC_DONE) {
    fsync_drain();
    wc_clear(); /* close(2) of a written fd can report a late write error too: before syncfs, not after */
    if (syncfs(S.bfd) < 0) return errno; /* a lost writeback: the copy is not what was acked */
    return set_state("consistent");
  }
  if (h->type == HF_RESET) {
    fsync_drain();
    wc_clear();
    int e = set_state("inconsistent");
    if (e) return e;
    return nftw(S.backing, rm_cb, 32, FTW_DEPTH | FTW_PHYS) < 0 ? errno : 0;
  }
  if (h->type == HF_LIST) {
    list_buf.n = 0;
    list_prefix = strlen(S.backing);
    if (nftw(S.backing, list_cb, 32, FTW_PHYS) < 0) return errno;
    send_ack(c, h->seq, 0, list_buf.p, (uint32_t)list_buf.n);
    return -1;
  }
  apply_path[0] = 0;
  if (h->len < sizeof(struct hf_args)) return EPROTO;
  struct hf_args a;
  memcpy(&a, pl, sizeof a);
  if ((uint64_t)a.path_len + a.path2_len + a.data_len + sizeof a != h->len) return EPROTO;
  char *path = (char *)pl + sizeof a;
  char *path2 = path + a.path_len;
  const uint8_t *data = (const uint8_t *)path2 + a.path2_len;
  char p1[4097], p2[4097];
  if (a.path_len > 4096 || a.path2_len > 4096) return ENAMETOOLONG;
  if (!path_ok(path, a.path_len)) return EPERM;
  memcpy(p1, path, a.path_len); p1[a.path_len] = 0;
  memcpy(p2, path2, a.path2_len); p2[a.path2_len] = 0;
  memcpy(apply_path, p1, a.path_len + 1);
  const char *r1 = rel(p1), *r2 = rel(p2);
  int tolerant = h->flags & HF_F_RESYNC;
  int fd, r = 0;
  switch (h->type) {
  case HF_UNLINK: case HF_RMDIR: case HF_RENAME: case HF_LINK: case HF_CREATE: case HF_SYMLINK: case HF_MKNOD:
    wc_clear();
    break;
  default:
    break;
  }
  switch (h->type) {
  case HF_WRITE: {
    fd = wc_open(r1);
    if (fd < 0) return errno;
    size_t done = 0;
    while (done < a.data_len) {
      ssize_t w = pwrite(fd, data + done, a.data_len - done, (off_t)(a.off + done));
      if (w < 0) { r = errno; break; }
      done += (size_t)w;
    }
    if (!r && a.mtime_ns != UTIME_OMIT) {
      struct timespec ts[2] = {{0, UTIME_OMIT}, {a.mtime_s, a.mtime_ns}};
      futimens(fd, ts);
    }
    S.bytes += a.data_len;
    return r;
  }
  case HF_CREATE:
    fd = b_open(S.bfd, r1, O_WRONLY | O_CREAT | (a.flags & O_TRUNC), a.mode & 07777);
    if (fd < 0) return errno;
    if (fchown(fd, a.uid, a.gid) < 0 || fchmod(fd, a.mode & 07777) < 0) r = errno;
    if (!r && (a.mtime_s || a.mtime_ns) && a.mtime_ns != UTIME_OMIT) {
      struct timespec ts[2] = {{0, UTIME_OMIT}, {a.mtime_s, a.mtime_ns}};
      futimens(fd, ts);
    }
    close(fd);
    return r;
  case HF_MKNOD:
    if (b_mknodat(S.bfd, r1, a.mode, (dev_t)a.off) < 0 && !(tolerant && errno == EEXIST)) return errno;
    return b_fchownat(S.bfd, r1, a.uid, a.gid) < 0 ? errno : 0;
  case HF_MKDIR:
    if (b_mkdirat(S.bfd, r1, a.mode & 07777) < 0 && !(tolerant && errno == EEXIST)) return errno;
    if (b_fchownat(S.bfd, r1, a.uid, a.gid) < 0) return errno;
    return b_fchmodat(S.bfd, r1, a.mode & 07777) < 0 ? errno : 0;
  case HF_UNLINK:
    if (b_unlinkat(S.bfd, r1, 0) < 0 && !(tolerant && errno == ENOENT)) return errno;
    return 0;
  case HF_RMDIR:
    if (b_unlinkat(S.bfd, r1, AT_REMOVEDIR) < 0 && !(tolerant && errno == ENOENT)) return errno;
    return 0;
  case HF_SYMLINK:
    if (!path_ok(path, a.path_len)) return EPERM;
    if (b_symlinkat(p2, S.bfd, r1) < 0 && !(tolerant && errno == EEXIST)) return errno;
    return b_fchownat(S.bfd, r1, a.uid, a.gid) < 0 ? errno : 0;
  case HF_LINK:
    if (!path_ok(path2, a.path2_len)) return EPERM;
    if (b_linkat(S.bfd, r1, r2) < 0 && !(tolerant && (errno == EEXIST || errno == ENOENT))) return errno;
    return 0;
  case HF_RENAME:
    if (!path_ok(path2, a.path2_len)) return EPERM;
    if (b_renameat2(S.bfd, r1, r2, a.flags) < 0 && !(tolerant && (errno == ENOENT || errno == EEXIST)))
      return errno;
    return 0;
  case HF_CHMOD:
    if (b_fchmodat(S.bfd, r1, a.mode & 07777) < 0 && !(tolerant && errno == ENOENT)) return errno;
    return 0;
  case HF_CHOWN:
    if (b_fchownat(S.bfd, r1, a.uid, a.gid) < 0 && !(tolerant && errno == ENOENT)) return errno;
    return 0;
  case HF_TRUNCATE:
    fd = wc_open(r1);
    if (fd < 0) return tolerant && errno == ENOENT ? 0 : errno;
    if (ftruncate(fd, (off_t)a.off) < 0) r = errno;
    if (!r && a.mtime_ns != UTIME_OMIT) {
      struct timespec ts[2] = {{0, UTIME_OMIT}, {a.mtime_s, a.mtime_ns}};
      futimens(fd, ts);
    }
    return r;
  case HF_UTIMENS: {
    struct timespec ts[2] = {{a.atime_s, a.atime_ns}, {a.mtime_s, a.mtime_ns}};
    if (b_utimensat(S.bfd, r1, ts) < 0 && !(tolerant && errno == ENOENT)) return errno;
    return 0;
  }
  case HF_SETXATTR:
    if (b_lsetxattr(S.bfd, r1, p2, data, a.data_len, (int)a.flags) < 0 && !(tolerant && errno == ENOENT)) return errno;
    return 0;
  case HF_REMOVEXATTR:
    if (b_lremovexattr(S.bfd, r1, p2) < 0 && !(tolerant && (errno == ENOENT || errno == ENODATA))) return errno;
    return 0;
  case HF_FALLOCATE:
    fd = wc_open(r1);
    if (fd < 0) return tolerant && errno == ENOENT ? 0 : errno;
    if (fallocate(fd, (int)a.flags, (off_t)a.off, (off_t)a.len) < 0) r = errno;
    return r;
  case HF_FSYNC:
  case HF_FSYNCDIR: {
    fd = b_open(S.bfd, r1, O_RDONLY, 0);
    if (fd < 0) return tolerant && errno == ENOENT ? 0 : errno;
    struct fjob *j = calloc(1, sizeof *j);
    if (!j) { close(fd); return ENOMEM; }
    *j = (struct fjob){.fd = fd, .datasync = (int)(a.flags & 1), .seq = h->seq, .c = c};
    pthread_mutex_lock(&fq_lock);
    if (fq_tail) fq_tail->next = j; else fq_head = j;
    fq_tail = j;
    pthread_cond_signal(&fq_cv);
    pthread_mutex_unlock(&fq_lock);
    return -1;
  }
  case HF_CHECKSUM: {
    fd = b_open(S.bfd, r1, O_RDONLY, 0);
    struct buf b = {0};
    uint64_t size = 0;
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) size = (uint64_t)st.st_size;
    size_t bs = a.len ? a.len : 65536;
    uint8_t *blk = malloc(bs), sum[32];
    r = !blk || buf_add(&b, &size, 8) < 0 ? ENOMEM : 0;
    for (uint64_t off = 0; !r && fd >= 0 && off < size; off += bs) {
      ssize_t n = pread(fd, blk, bs, (off_t)off);
      if (n <= 0) break;
      if (sha256(blk, (size_t)n, sum) < 0 || buf_add(&b, sum, 32) < 0) r = ENOMEM;
    }
    free(blk);
    if (fd >= 0) close(fd);
    if (r) { free(b.p); return r; }
    send_ack(c, h->seq, 0, b.p, (uint32_t)b.n);
    free(b.p);
    return -1;
  }
  default:
    return EPROTO;
  }
}

static void serve(struct conn *c) {
  uint64_t expect = 0;
  for (;;) {
    struct hf_hdr h;
    uint8_t *pl;
    const char *why;
    if (recv_frame(c, &h, &pl, &why) < 0) {
      emit("{\"event\":\"peer\",\"state\":\"disconnected\",\"reason\":%s}", jstr(why));
      break;
    }
    if (expect && h.seq != expect) {
      emit("{\"event\":\"error\",\"message\":\"sequence gap: got %llu want %llu\"}", (unsigned long long)h.seq,
           (unsigned long long)expect);
      free(pl);
      break;
    }
    expect = h.seq + 1;
    pthread_mutex_lock(&apply_lk);
    if (S.stopping) { pthread_mutex_unlock(&apply_lk); free(pl); break; }
    int st = apply(c, &h, pl);
    pthread_mutex_unlock(&apply_lk);
    free(pl);
    S.applied++;
    if (st >= 0) send_ack(c, h.seq, st, NULL, 0);
    if (st > 0) {
      /* The primary drops the link on this ack and logs what follows, but frames already in flight would still
       * be applied here, a RESYNC_DONE among them marking this copy consistent while it lacks an acked write.
       * So: this copy is inconsistent, and nothing more is applied from this stream. */
      set_state("inconsistent"); /* its own failure says so in an error line; the stream ends either way */
      emit("{\"event\":\"apply-error\",\"seq\":%llu,\"op\":%u,\"errno\":%d,\"message\":%s}",
           (unsigned long long)h.seq, h.type, st, jstr(apply_why(st)));
      break;
    }
  }
  fsync_drain();
  wc_clear();
  shutdown(c->fd, SHUT_RDWR); /* the primary sees the end at once; the fd is closed when replaced */
}

/* ---- accepting and handshakes ----
 * The replication port needs no key to connect to, so nothing a connection does before it has authenticated
 * may hold up another one. The accept loop only accepts: each handshake runs in its own (detached) thread, at
 * most HS_MAX at once, each cut off HS_DEADLINE_MS after its accept (the accept loop shuts the socket down).
 * When all slots are busy, the oldest pending handshake is cut to make room: a flood of silent or slow
 * connections cannot starve a real primary, whose handshake takes a round trip (it would have to be followed
 * by HS_MAX newer connections within that round trip to be cut). Each failure is counted; the `auth-failed`
 * lines are rate-limited (HS_LOG_PER_S a second, the rest counted in the next line's `suppressed`), and a
 * `stats` line with the counters follows changes at most once a second. */
#define HS_MAX 64
#define HS_DEADLINE_MS 2000
#define HS_LOG_PER_S 5
struct session {
  struct conn c;
  int finished; /* serve() returned (under act_lk) */
};
static pthread_mutex_t hs_lk = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hs_cv; /* timed wait: CLOCK_MONOTONIC (initialised in run_secondary) */
static struct { int fd; int cut; uint64_t t0; } hs_slot[HS_MAX]; /* fd -1: free */
static int hs_busy;
static uint64_t hs_failures, hs_cut, hs_overflow, hs_log_window, hs_suppressed, hs_stats_at;
static int hs_logged_in_window;
static pthread_mutex_t act_lk = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t act_cv = PTHREAD_COND_INITIALIZER;
static struct session *active;

static void hs_failed(const char *why, int refused) {
  pthread_mutex_lock(&hs_lk);
  hs_failures++;
  uint64_t now = now_us(), win = now / 1000000u;
  if (win != hs_log_window) { hs_log_window = win; hs_logged_in_window = 0; }
  int log = hs_logged_in_window < HS_LOG_PER_S;
  uint64_t sup = hs_suppressed;
  if (log) { hs_logged_in_window++; hs_suppressed = 0; } else hs_suppressed++;
  pthread_mutex_unlock(&hs_lk);
  if (log)
    emit("{\"event\":\"auth-failed\",\"reason\":%s,\"refused\":%s,\"suppressed\":%llu}", jstr(why),
         refused ? "true" : "false", (unsigned long long)sup);
}

/* The secondary's stats line: the primary's fields (the supervisor's decoder wants them; bytesReplicated = data
 * bytes applied, acks = operations applied, the rest 0) plus role and the handshake counters. */
static void hs_stats_locked(void) {
  emit("{\"event\":\"stats\",\"role\":\"secondary\",\"state\":\"%s\",\"bytesReplicated\":%llu,\"acks\":%llu,"
       "\"ackUsSum\":0,\"ackUsMax\":0,\"inflight\":0,\"logRecords\":0,\"resyncBytes\":0,\"degradedCount\":0,"
       "\"handshakeFailures\":%llu,\"handshakesCut\":%llu,\"handshakesRefusedBusy\":%llu,\"handshakesPending\":%d}",
       active ? "connected" : "listening", (unsigned long long)S.bytes, (unsigned long long)S.applied,
       (unsigned long long)(hs_failures + hs_overflow), (unsigned long long)hs_cut, (unsigned long long)hs_overflow,
       hs_busy);
}

static void *session_thread(void *arg) {
  int k = (int)(intptr_t)arg;
  pthread_mutex_lock(&hs_lk);
  int fd = hs_slot[k].fd;
  pthread_mutex_unlock(&hs_lk);
  struct session *se = calloc(1, sizeof *se);
  const char *why = "out of memory";
  int hs = se ? handshake_secondary(fd, S.key, S.keylen, S.encrypt, &se->c, &why) : -1;
  pthread_mutex_lock(&hs_lk);
  int cut = hs_slot[k].cut;
  hs_slot[k].fd = -1; /* from here the accept loop no longer touches fd */
  hs_busy--;
  pthread_cond_broadcast(&hs_cv);
  pthread_mutex_unlock(&hs_lk);
  if (hs < 0 || cut) {
    hs_failed(cut ? "handshake cut: not done within its deadline (or evicted by newer connections)" : why,
              !cut && hs == HS_REFUSED);
    close(fd);
    if (se) { conn_destroy(&se->c); free(se); }
    return NULL;
  }
  struct timeval tv = {0, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  /* A primary that reconnects wins: the old stream (maybe half-dead after a crash or a cut link) is shut down
   * and its serve() waited for before this one is served, so operations never interleave. */
  pthread_mutex_lock(&act_lk);
  struct session *old = active;
  active = se;
  if (old) {
    shutdown(old->c.fd, SHUT_RDWR);
    while (!old->finished) pthread_cond_wait(&act_cv, &act_lk);
    close(old->c.fd);
    conn_destroy(&old->c);
    free(old);
  }
  pthread_mutex_unlock(&act_lk);
  emit("{\"event\":\"peer\",\"state\":\"connected\"}");
  serve(&se->c);
  pthread_mutex_lock(&act_lk);
  se->finished = 1;
  pthread_cond_broadcast(&act_cv);
  pthread_mutex_unlock(&act_lk);
  return NULL; /* the next session frees se and closes its fd */
}

static __attribute__((noreturn)) void accept_loop(int ls) {
  int one = 1;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&at, 256 * 1024);
  for (int i = 0; i < HS_MAX; i++) hs_slot[i].fd = -1;
  uint64_t reported = 0;
  for (;;) {
    /* wake for a connection, the next handshake deadline, or the next stats line */
    int wait_ms = 1000;
    uint64_t now = now_us();
    pthread_mutex_lock(&hs_lk);
    for (int i = 0; i < HS_MAX; i++) {
      if (hs_slot[i].fd < 0 || hs_slot[i].cut) continue;
      uint64_t dl = hs_slot[i].t0 + HS_DEADLINE_MS * 1000u;
      if (dl <= now) {
        hs_slot[i].cut = 1; /* the handshake's read fails at once; its thread counts and logs it */
        hs_cut++;
        shutdown(hs_slot[i].fd, SHUT_RDWR);
      } else if ((int)((dl - now) / 1000u) + 1 < wait_ms) wait_ms = (int)((dl - now) / 1000u) + 1;
    }
    uint64_t total = hs_failures + hs_overflow;
    if (total != reported && now - hs_stats_at >= 1000000u) {
      reported = total;
      hs_stats_at = now;
      hs_stats_locked();
    }
    pthread_mutex_unlock(&hs_lk);
    struct pollfd pf = {.fd = ls, .events = POLLIN};
    if (poll(&pf, 1, wait_ms) <= 0) continue;
    int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) continue;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    struct timeval tv = {HS_DEADLINE_MS / 1000 + 1, 0}; /* a backstop: the deadline above cuts first */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&hs_lk);
    if (hs_busy == HS_MAX) {
      /* full: cut the oldest pending handshake and wait (briefly) for its thread to free the slot */
      int o = -1;
      for (int i = 0; i < HS_MAX; i++)
        if (hs_slot[i].fd >= 0 && !hs_slot[i].cut && (o < 0 || hs_slot[i].t0 < hs_slot[o].t0)) o = i;
      if (o >= 0) { hs_slot[o].cut = 1; hs_cut++; shutdown(hs_slot[o].fd, SHUT_RDWR); }
      struct timespec dl = mono_deadline(200);
      while (hs_busy == HS_MAX && pthread_cond_timedwait(&hs_cv, &hs_lk, &dl) == 0) {}
    }
    int k = -1;
    for (int i = 0; i < HS_MAX && k < 0; i++)
      if (hs_slot[i].fd < 0) k = i;
    if (k < 0) {
      hs_overflow++;
      pthread_mutex_unlock(&hs_lk);
      close(fd);
      continue;
    }
    hs_slot[k].fd = fd;
    hs_slot[k].cut = 0;
    hs_slot[k].t0 = now_us();
    hs_busy++;
    pthread_mutex_unlock(&hs_lk);
    pthread_t t;
    if (pthread_create(&t, &at, session_thread, (void *)(intptr_t)k) != 0) {
      pthread_mutex_lock(&hs_lk);
      hs_slot[k].fd = -1;
      hs_busy--;
      hs_overflow++;
      pthread_mutex_unlock(&hs_lk);
      close(fd);
    }
  }
}

/* The supervisor is gone (parent-death signal, end of stdin): apply nothing more and exit. The primary sees the
 * connection end and goes degraded; an apply in progress (bounded wait for it) completes first. */
static void secondary_parent_gone(const char *why) {
  struct timespec dl = mono_deadline(500);
  int locked = pthread_mutex_clocklock(&apply_lk, CLOCK_MONOTONIC, &dl) == 0;
  S.stopping = 1;
  (void)locked; /* kept: the process ends below, no apply starts after this point */
  emit("{\"event\":\"stopped\",\"rc\":0,\"reason\":%s}", jstr(why));
  fflush(stdout);
  _exit(0);
}

static void usage(void) {
  fprintf(stderr, "usage: holdfast-replicator secondary --backing DIR --listen HOST:PORT --key-file F "
                  "[--state-file F] [--encrypt]\n");
  exit(2);
}

int run_secondary(int argc, char **argv) {
  static struct option opts[] = {{"backing", 1, 0, 'b'}, {"listen", 1, 0, 'l'}, {"key-file", 1, 0, 'k'},
                                 {"state-file", 1, 0, 's'}, {"encrypt", 0, 0, 'E'}, {0, 0, 0, 0}};
  char *listen_at = NULL, *keyf = NULL;
  int o;
  if (parent_watch_setup()) { fprintf(stderr, "holdfast-replicator: parent gone before start\n"); return 3; }
  pthread_cond_init(&hs_cv, &mono_cond);
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (o == 'b') S.backing = realpath(optarg, NULL);
    else if (o == 'l') listen_at = optarg;
    else if (o == 'k') keyf = optarg;
    else if (o == 's') S.state_path = optarg;
    else if (o == 'E') S.encrypt = 1;
    else usage();
  }
  if (!S.backing || !listen_at || !keyf) usage();
  S.keylen = load_key(keyf, S.key, sizeof S.key);
  umask(0);
  S.bfd = open(S.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (S.bfd < 0) { perror(S.backing); return 2; }
  char host[256];
  const char *colon = strrchr(listen_at, ':');
  if (!colon) usage();
  snprintf(host, sizeof host, "%.*s", (int)(colon - listen_at), listen_at);
  if (host[0] == '[') { memmove(host, host + 1, strlen(host)); host[strlen(host) - 1] = 0; }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST}, *ai;
  if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) { fprintf(stderr, "bad listen address\n"); return 2; }
  int ls = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, ai->ai_addr, ai->ai_addrlen) < 0 || listen(ls, 128) < 0) { perror("listen"); return 2; }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(ls, (struct sockaddr *)&ss, &sl);
  int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
  for (int i = 0; i < 4; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, fsync_worker, NULL) != 0) { fprintf(stderr, "holdfast-replicator: cannot start the fsync pool\n"); return 2; }
  }
  /* stdin: a pipe from the supervisor (FileReplicator) is a liveness channel; /dev/null or a tty is not */
  parent_watch_start(stdin_is_channel(), secondary_parent_gone);
  emit("{\"event\":\"listening\",\"port\":%d}", port);
  accept_loop(ls);
}
