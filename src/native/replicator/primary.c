/*
 * Primary: a FUSE passthrough of a backing directory whose every mutating operation is applied locally and
 * replicated, in order, to the secondary before the kernel gets its reply.
 *
 * Ordering. One mutex (G.lk) covers "apply locally, take the next sequence number, send the frame", so the
 * secondary applies operations in the very order the primary applied them (overlapping writes from two
 * threads end the same on both sides). The waiting for acks happens outside the lock, so many operations are in
 * flight at once (pipelining); one link thread reads acks and wakes the waiting FUSE threads.
 *
 * What a reply means. A write/create/rename/... returns once the secondary has applied it (its page cache);
 * an fsync/fdatasync returns once the primary's and the secondary's flushes are both done (DRBD protocol C).
 *
 * Degraded. If an ack does not come within --ack-timeout-ms, or the link fails, the primary stops waiting:
 * under G.lk it appends every unacked operation to the extent log, fdatasyncs it, wakes the waiters and from
 * then on logs (append + fdatasync before the reply) instead of sending. On reconnection it resyncs from the
 * log (see resync.c) while new operations keep replicating synchronously.
 */
#include "primary.h"
#include "filter.h"
#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

struct primary G = {.lk = PTHREAD_MUTEX_INITIALIZER, .wl = PTHREAD_MUTEX_INITIALIZER,
                    .gate_cv = PTHREAD_COND_INITIALIZER, .ack_timeout_ms = 2000, .reconnect_ms = 500};

/* ---------- extent log ---------- */
/* Record: u32 magic, u32 body length, 32-byte SHA-256 of the body, body = u8 type, u8 flags, u64 ino,
 * hf_args, path, path2, data. A torn or corrupt tail (crash mid-append) ends the log at the last good record. */
#define LOG_MAGIC 0x524c4648u
static uint64_t log_failures;
void log_lost(int err, const char *what) {
  G.log_incomplete = 1;
  if (G.next_mode == RS_LOG) G.next_mode = RS_VERIFY;
  /* one line per run of failures (a full disk fails every append; the supervisor reads these lines) */
  if (log_failures++ == 0)
    emit("{\"event\":\"error\",\"message\":%s,\"errno\":%d}", jstr(what), err);
}

int log_append(const struct op *o) {
  struct hf_args a = o->a;
  uint32_t dlen = o->type == HF_WRITE ? 0 : a.data_len; /* data extents are re-read from the file at resync */
  a.data_len = dlen;
  uint32_t blen = 2 + 8 + sizeof a + a.path_len + a.path2_len + dlen;
  uint8_t *rec = malloc(8 + 32 + blen), *b = rec + 40;
  if (!rec) { log_lost(ENOMEM, "extent log append failed: out of memory"); return ENOMEM; }
  b[0] = o->type; b[1] = o->flags;
  memcpy(b + 2, &o->ino, 8);
  memcpy(b + 10, &a, sizeof a);
  uint8_t *q = b + 10 + sizeof a;
  memcpy(q, o->path, a.path_len); q += a.path_len;
  if (a.path2_len) memcpy(q, o->path2, a.path2_len);
  q += a.path2_len;
  if (dlen) memcpy(q, o->data, dlen);
  uint32_t m = LOG_MAGIC;
  memcpy(rec, &m, 4);
  memcpy(rec + 4, &blen, 4);
  if (sha256(b, blen, rec + 8) < 0) {
    free(rec);
    log_lost(ENOMEM, "extent log append failed: SHA-256 failed");
    return ENOMEM;
  }
  off_t end = lseek(G.logfd, 0, SEEK_END);
  int err = 0;
  if (write_full(G.logfd, rec, 40 + blen) < 0) {
    err = errno ? errno : EIO;
    /* a torn record would end the replay there, hiding the records appended after it */
    if (end >= 0 && ftruncate(G.logfd, end) < 0) {}
    log_lost(err, "extent log append failed: the operation is not acknowledged");
  } else {
    G.log_records++;
    log_failures = 0; /* the next failure is reported again */
  }
  free(rec);
  return err;
}

/* Known-answer checks of the failure paths (`selftest`): an append to a full disk (/dev/full) is an error, never
 * success; it makes the next resync a verify pass and fails the operation with its errno. 0 or failures. */
int durability_selftest(void) {
  int fails = 0, saved = G.logfd, mode = G.next_mode, inc = G.log_incomplete;
  G.logfd = open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (G.logfd < 0) return 0; /* no /dev/full here: nothing to check against */
  G.next_mode = RS_LOG;
  G.log_incomplete = 0;
  struct op o = {.type = HF_WRITE, .path = "/f", .path2 = ""};
  o.a.path_len = 2;
  pthread_mutex_lock(&G.lk);
  o.err = log_append(&o);
  o.state = OP_LOG_SYNC;
  pthread_mutex_unlock(&G.lk);
  fails += o.err != ENOSPC;
  fails += !G.log_incomplete || G.next_mode != RS_VERIFY;
  fails += op_wait(&o) != -ENOSPC;
  close(G.logfd);
  G.logfd = saved;
  G.next_mode = mode;
  G.log_incomplete = inc;
  log_failures = 0;
  clockid_t clk = CLOCK_REALTIME;
  pthread_condattr_getclock(&mono_cond, &clk);
  fails += clk != CLOCK_MONOTONIC;
  if (fails) fprintf(stderr, "selftest durability: %d failures\n", fails);
  return fails;
}

/* ---------- waiters ---------- */
static void wl_add(struct op *o) {
  pthread_mutex_lock(&G.wl);
  o->prev = G.wtail; o->next = NULL;
  if (G.wtail) G.wtail->next = o; else G.whead = o;
  G.wtail = o;
  G.inflight++;
  pthread_mutex_unlock(&G.wl);
}
static void wl_del_locked(struct op *o) {
  if (o->prev) o->prev->next = o->next; else G.whead = o->next;
  if (o->next) o->next->prev = o->prev; else G.wtail = o->prev;
  o->next = o->prev = NULL;
  G.inflight--;
}

/* Called by the link thread for each ack. */
void ack_received(uint64_t seq, int32_t status, uint8_t *data, uint32_t len) {
  pthread_mutex_lock(&G.wl);
  struct op *o = G.whead;
  while (o && o->seq != seq) o = o->next;
  if (o && status == 0) {
    o->state = OP_ACKED;
    uint64_t lat = now_us() - o->t0;
    G.ack_count++; G.ack_us_sum += lat;
    if (lat > G.ack_us_max) G.ack_us_max = lat;
    if (o->want_reply) { o->reply = data; o->reply_len = len; data = NULL; }
    wl_del_locked(o);
    pthread_cond_signal(&o->cv);
  }
  pthread_mutex_unlock(&G.wl);
  free(data);
}

/* Switches to degraded. Caller holds G.lk. Idempotent. */
void degrade_locked(const char *reason) {
  if (!G.connected) return;
  G.connected = 0;
  G.gen++;
  shutdown(G.c->fd, SHUT_RDWR);
  pthread_mutex_lock(&G.wl);
  int n = 0;
  for (struct op *o = G.whead; o; o = o->next) {
    int e = log_append(o);
    if (e) o->err = e;
    o->syncs0 = G.syncs;
    n++;
    if (o->verify_on_loss && G.next_mode == RS_LOG) G.next_mode = RS_VERIFY;
  }
  if (n && fdatasync(G.logfd) < 0) {
    int e = errno;
    log_lost(e, "extent log fdatasync failed: the operations it held are not acknowledged");
    for (struct op *o = G.whead; o; o = o->next)
      if (!o->err) o->err = e;
  }
  while (G.whead) {
    struct op *o = G.whead;
    o->state = OP_LOGGED;
    wl_del_locked(o);
    pthread_cond_signal(&o->cv);
  }
  pthread_mutex_unlock(&G.wl);
  G.state = ST_DEGRADED;
  G.degraded_count++;
  emit("{\"event\":\"degraded\",\"reason\":%s,\"logged\":%d}", jstr(reason), n);
}

void degrade(const char *reason) {
  pthread_mutex_lock(&G.lk);
  degrade_locked(reason);
  pthread_mutex_unlock(&G.lk);
}

/* ---------- op lifecycle used by every mutating FUSE operation ---------- */
static int permit_needed_locked(const struct op *o);
static int permit_wait_cond(int or_connected, const uint64_t *synced_after);

/* Takes G.lk (held until op_end) once the operation may touch the backing directory: never after the helper was
 * told to stop or lost its parent (-EIO, nothing applied), and any change of a replicated path (data, namespace,
 * metadata), while degraded, only under a permit: without one it waits here, before its local apply, for a
 * renewal or a reconnection (so a primary that lost its role changes nothing its peer never sees). */
int op_begin(struct op *o) {
  for (;;) {
    pthread_mutex_lock(&G.lk);
    while (G.gate_closed && !G.stopping) pthread_cond_wait(&G.gate_cv, &G.lk);
    if (G.stopping) { pthread_mutex_unlock(&G.lk); return -EIO; }
    if (!permit_needed_locked(o)) return 0;
    pthread_mutex_unlock(&G.lk);
    int r = permit_wait_cond(1, NULL);
    if (r) return r;
  }
}

int send_raw(uint8_t type, uint8_t flags, struct hf_args *a, const char *path, const char *path2, const void *data) {
  if (!G.connected) return -1;
  a->path_len = path ? (uint32_t)strlen(path) : 0;
  a->path2_len = path2 ? (uint32_t)strlen(path2) : 0;
  struct iovec v[4] = {{a, sizeof *a}, {(void *)path, a->path_len}, {(void *)path2, a->path2_len},
                       {(void *)data, a->data_len}};
  if (send_frame(G.c, type, flags, ++G.seq, v, 4) < 0) { degrade_locked("send to secondary failed"); return -1; }
  G.bytes_sent += a->data_len;
  return 0;
}

/* ---------- include/exclude (filter.h) ---------- */
static int is_dir_at(const char *path) {
  struct stat st;
  return b_fstatat(G.bfd, rel(path), &st) == 0 && S_ISDIR(st.st_mode);
}

/* `path` just entered the replicated set (a rename or link from an excluded name). A regular file, while
 * connected, is sent here: CREATE, its content and, as the operation the caller waits for, its size and mtime.
 * Anything else (a directory's subtree, a symlink, or no link) is left to a verify pass (forced now when
 * connected, chosen for the next resync when degraded). Returns 1 when o now describes the waited operation. */
static int send_into(struct op *o, const char *path) {
  struct stat st;
  int fd = b_open(G.bfd, rel(path), O_RDONLY, 0);
  if (!G.connected || fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0) close(fd);
    if (G.next_mode == RS_LOG) G.next_mode = RS_VERIFY;
    if (G.connected) degrade_locked("a path entered the replicated set: verify pass");
    return 0;
  }
  struct hf_args a = {.mode = st.st_mode, .uid = st.st_uid, .gid = st.st_gid, .flags = O_TRUNC, .mtime_ns = UTIME_OMIT};
  int ok = send_raw(HF_CREATE, 0, &a, path, NULL, NULL) == 0;
  uint8_t *buf = ok && st.st_size ? malloc(1u << 20) : NULL;
  if (st.st_size && !buf) ok = 0; /* not sent: a verify pass below */
  for (off_t off = 0; ok && off < st.st_size;) {
    ssize_t n = pread(fd, buf, 1u << 20, off);
    if (n <= 0) break;
    struct hf_args w = {.off = (uint64_t)off, .len = (uint64_t)n, .data_len = (uint32_t)n, .mtime_ns = UTIME_OMIT};
    ok = send_raw(HF_WRITE, 0, &w, path, NULL, buf) == 0;
    off += n;
  }
  free(buf);
  close(fd);
  if (!ok) { if (G.next_mode == RS_LOG) G.next_mode = RS_VERIFY; return 0; }
  memset(&o->a, 0, sizeof o->a);
  o->type = HF_TRUNCATE;
  o->path = path;
  o->path2 = "";
  o->a.off = (uint64_t)st.st_size;
  o->a.mtime_s = st.st_mtim.tv_sec;
  o->a.mtime_ns = st.st_mtim.tv_nsec;
  o->ino = st.st_ino;
  o->verify_on_loss = 1;
  o->a.path_len = (uint32_t)strlen(path);
  o->a.path2_len = 0;
  return 1;
}

/* Decides what a live operation becomes under the patterns: 1 = send/log o (maybe rewritten), 0 = nothing. */
static int filter_op(struct op *o) {
  int dir;
  switch (o->type) {
  case HF_MKDIR: case HF_RMDIR: case HF_FSYNCDIR: dir = 1; break;
  case HF_CHMOD: case HF_CHOWN: case HF_UTIMENS: case HF_SETXATTR: case HF_REMOVEXATTR: dir = is_dir_at(o->path); break;
  case HF_RENAME: dir = is_dir_at(o->path2); break; /* already renamed: the object is at path2 */
  default: dir = 0;
  }
  if (o->type != HF_RENAME && o->type != HF_LINK) return filter_replicated(o->path, dir);
  int from = filter_replicated(o->path, dir), to = filter_replicated(o->path2, dir);
  if (from && to) return 1;
  if (o->type == HF_RENAME && (o->a.flags & RENAME_EXCHANGE) && from != to) {
    /* two objects swapped across the boundary: let a verify pass sort out both names */
    if (G.next_mode == RS_LOG) G.next_mode = RS_VERIFY;
    if (G.connected) degrade_locked("an exchange across the include/exclude boundary: verify pass");
    return 0;
  }
  if (!to) {
    if (!from || o->type == HF_LINK) return 0;
    if (dir) return 1; /* a directory renamed out: renamed on the secondary too (then left alone there) */
    o->type = HF_UNLINK; /* a file renamed out: gone from the secondary */
    o->path2 = "";
    o->a.path2_len = 0;
    o->a.flags = 0;
    return 1;
  }
  return send_into(o, o->path2); /* renamed or linked in from an excluded name: the content goes over */
}

/* Sends (connected) or logs (degraded) an operation whose local part succeeded. Caller holds G.lk. */
void op_submit(struct op *o) {
  o->a.path_len = (uint32_t)strlen(o->path);
  o->a.path2_len = o->path2 ? (uint32_t)strlen(o->path2) : 0;
  if (!o->path2) o->path2 = "";
  if (!G.standalone && filter_active() && !(o->flags & HF_F_RESYNC) && !filter_op(o)) {
    o->state = OP_NONE;
  } else if (G.standalone) {
    o->state = OP_NONE;
  } else if (G.connected) {
    o->seq = ++G.seq;
    o->state = OP_PENDING;
    o->t0 = now_us();
    pthread_cond_init(&o->cv, &mono_cond); /* op_wait's timed wait runs on CLOCK_MONOTONIC */
    wl_add(o);
    struct iovec v[4] = {{&o->a, sizeof o->a}, {(void *)o->path, o->a.path_len},
                         {(void *)o->path2, o->a.path2_len}, {(void *)o->data, o->a.data_len}};
    if (send_frame(G.c, o->type, o->flags, o->seq, v, 4) < 0) degrade_locked("send to secondary failed");
    else { G.bytes_sent += o->a.data_len; o->sent = 1; }
  } else if (o->type != HF_FSYNC && o->type != HF_FSYNCDIR && o->type != HF_BARRIER) {
    o->err = log_append(o); /* applied here but not logged: op_wait fails it */
    o->syncs0 = G.syncs;
    o->state = OP_LOG_SYNC;
  } else {
    o->state = OP_NONE;
  }
}

void op_end(struct op *o) {
  (void)o;
  pthread_mutex_unlock(&G.lk);
}

/* ---------- permit (fencing) ----------
 * Without the secondary's ack (degraded, ALONE) an operation may be acknowledged only while a permit holds: a
 * CLOCK_MONOTONIC deadline set by the supervisor's `permit <ms>` command (computed here on receipt, so no clock
 * is compared across processes). No permit at start (`--permit always` for standalone use: unsafe for HA). A
 * frozen or partitioned-and-stepping-down supervisor stops renewing, so the helper stops acknowledging alone
 * by itself. Past the deadline the FUSE thread waits (the operation is applied and logged, just not
 * acknowledged) until a renewal, or returns EIO when the helper stops. */
static pthread_mutex_t permit_lk = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t permit_cv;
static uint64_t permit_until_ns; /* 0: none */
static int permit_always;
static uint64_t permit_waits, permit_waiting;
static int permit_expired_said;

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void permit_init(void) { pthread_cond_init(&permit_cv, &mono_cond); }

/* `permit <ms>`: a deadline ms from now (0 revokes). */
static void permit_set(long ms) {
  pthread_mutex_lock(&permit_lk);
  permit_until_ns = ms > 0 ? mono_ns() + (uint64_t)ms * 1000000u : 0;
  if (ms > 0) permit_expired_said = 0;
  pthread_cond_broadcast(&permit_cv);
  pthread_mutex_unlock(&permit_lk);
}

void permit_wake_all(void) {
  pthread_mutex_lock(&permit_lk);
  pthread_cond_broadcast(&permit_cv);
  pthread_mutex_unlock(&permit_lk);
}

/* Milliseconds the permit still holds: -1 = standing permit, 0 = none or expired. */
static long long permit_remaining_ms(void) {
  if (permit_always) return -1;
  pthread_mutex_lock(&permit_lk);
  uint64_t now = mono_ns(), until = permit_until_ns;
  pthread_mutex_unlock(&permit_lk);
  return until > now ? (long long)((until - now) / 1000000u) : 0;
}

/* 0 once a permit covers now (or, with or_connected, once the link is up: acks then need none); -EIO if the
 * helper stops first (a standing permit acknowledges nothing alone after a stop either). */
static int permit_wait_cond(int or_connected, const uint64_t *synced_after) {
  if (permit_always) return G.stopping ? -EIO : 0;
  pthread_mutex_lock(&permit_lk);
  int waited = 0, r = 0;
  while (mono_ns() >= permit_until_ns && !(or_connected && G.connected) &&
         !(synced_after && __atomic_load_n(&G.syncs, __ATOMIC_ACQUIRE) > *synced_after)) {
    if (G.stopping) { r = -EIO; break; }
    if (!waited) {
      waited = 1;
      permit_waits++;
      permit_waiting++;
      if (!permit_expired_said) {
        permit_expired_said = 1;
        emit("{\"event\":\"permit-expired\",\"waiting\":%llu}", (unsigned long long)permit_waiting);
      }
    }
    struct timespec dl = mono_deadline(1000); /* renewals and stop broadcast; the bound only re-checks G.stopping */
    pthread_cond_timedwait(&permit_cv, &permit_lk, &dl);
  }
  if (waited) permit_waiting--;
  if (G.stopping) r = -EIO;
  pthread_mutex_unlock(&permit_lk);
  return r;
}
/* A logged operation (applied here, in the extent log, not acked by the secondary) returns success under a permit,
 * or once a resync pass that started after it was logged has completed: the secondary has it then. The supervisor
 * withholds the permit while its peer still counts as an in-sync secondary that may take over, so a write logged
 * across a short break of the stream waits for the reconnection's resync instead of being acknowledged alone. */
static int logged_wait(const struct op *o) { return permit_wait_cond(0, &o->syncs0); }

/* Whether o, about to be applied, must first wait for a permit (see op_begin): every change to the backing
 * directory (data, namespace, metadata); flushes change nothing. An operation whose every path is excluded never
 * needs one. G.lk held. */
static int permit_needed_locked(const struct op *o) {
  if (permit_always || G.standalone || G.connected) return 0;
  if (o->type == HF_FSYNC || o->type == HF_FSYNCDIR || o->type == HF_BARRIER) return 0;
  if (filter_active() && !filter_replicated(o->path, 0) && !(o->path2 && o->path2[0] == '/' && filter_replicated(o->path2, 0)))
    return 0;
  pthread_mutex_lock(&permit_lk);
  int expired = mono_ns() >= permit_until_ns;
  pthread_mutex_unlock(&permit_lk);
  return expired;
}

/* Waits for the ack (bounded), or for the log record to be durable. Returns 0, or -EIO if a reply was wanted
 * but the secondary is gone, or if the helper stops while the operation waits for a permit. A success that is
 * not the secondary's ack (logged alone) is returned only under a permit. */
int op_wait(struct op *o) {
  if (o->state == OP_LOG_SYNC) {
    if (o->err) return -o->err;
    if (fdatasync(G.logfd) < 0) {
      /* after a failed fdatasync the kernel may have dropped the dirty pages: the record is not durable, and a
       * later fdatasync that succeeds would not say so; the next resync verifies instead */
      int e = errno;
      pthread_mutex_lock(&G.lk);
      log_lost(e, "extent log fdatasync failed: the operation is not acknowledged");
      pthread_mutex_unlock(&G.lk);
      return -e;
    }
    return logged_wait(o);
  }
  if (o->state == OP_NONE) return o->want_reply ? -EIO : 0;
  pthread_mutex_lock(&G.wl);
  struct timespec dl = mono_deadline(G.ack_timeout_ms);
  while (o->state == OP_PENDING) {
    if (pthread_cond_timedwait(&o->cv, &G.wl, &dl) == ETIMEDOUT && o->state == OP_PENDING) {
      pthread_mutex_unlock(&G.wl);
      degrade("ack timeout");
      pthread_mutex_lock(&G.wl);
    }
  }
  pthread_mutex_unlock(&G.wl);
  pthread_cond_destroy(&o->cv);
  if (o->state == OP_ACKED) return 0;
  if (o->err) return -o->err; /* degraded while waiting, and its log record failed */
  if (o->want_reply) return -EIO;
  return (o->flags & HF_F_RESYNC) ? 0 : logged_wait(o);
}

/* ---------- lazy mtimes (writes) ----------
 * A write's frame carries no mtime (UTIME_OMIT): reading it needs a stat of the backing file, and since Linux
 * 6.13 (multigrain timestamps) a stat that reports the ctime/mtime makes the next write take a fresh
 * fine-grained timestamp, i.e. dirty the inode: every write then made the next fdatasync write the inode block
 * too (about twice the block requests of the application's own fdatasync on ext4), on both sides since the
 * secondary set each mtime with futimens. Instead the open file is noted here, and its current mtime is sent
 * (HF_UTIMENS, atime omitted, ENOENT tolerated) on close (FUSE flush: close() returns once the secondary
 * applied it), before a full fsync of it, before any rename/unlink/rmdir/link (so the noted path still names
 * the file on both sides), and at most MT_LAZY_MS after the first unsent write while the file stays open.
 * The ino for the extent log comes from statx(STATX_INO), which queries no timestamp. While degraded the notes
 * wait (the resync sends the logged files' mtimes itself); a namespace operation or a close then drops them.
 * A lost note leaves the secondary's own write time: the verify quick check then compares that file block by
 * block. Replies to writes are unchanged: a write returns once the secondary applied its data.
 * Opt-in (--lazy-mtime, experimental): with it the module lab test "link flapping" saw fewer degradations
 * than link cuts (2-3 of 4) and once no SECOND within 60 s after the flaps; not understood yet (the faster
 * writer may end before the last cuts), so the default stays an mtime with every write. */
#define MT_SLOTS 64
#define MT_LAZY_MS 1000
static struct { int fd; char *path; } mtp[MT_SLOTS];
static int mtp_n;
static uint64_t mtp_since_us;
static pthread_cond_t mtp_cv;
static pthread_mutex_t mtl = PTHREAD_MUTEX_INITIALIZER; /* the notes; taken after G.lk, never before it */

static int mt_find(int fd) {
  for (int i = 0; i < mtp_n; i++)
    if (mtp[i].fd == fd) return i;
  return -1;
}
static int mt_has(int fd) {
  pthread_mutex_lock(&mtl);
  int r = mtp_n && mt_find(fd) >= 0;
  pthread_mutex_unlock(&mtl);
  return r;
}
/* Removes note i; returns its path (caller frees) with the file's current mtime in *a. G.lk and mtl held. */
static char *mt_take(int i, struct hf_args *a) {
  struct stat st;
  char *path = mtp[i].path;
  int ok = fstat(mtp[i].fd, &st) == 0;
  mtp[i] = mtp[--mtp_n];
  if (!ok) { free(path); return NULL; }
  memset(a, 0, sizeof *a);
  a->atime_ns = UTIME_OMIT;
  a->mtime_s = st.st_mtim.tv_sec;
  a->mtime_ns = st.st_mtim.tv_nsec;
  return path;
}
/* Sends note i without waiting (dropped when degraded). G.lk and mtl held. */
static void mt_send(int i) {
  if (!G.connected) {
    free(mtp[i].path);
    mtp[i] = mtp[--mtp_n];
    return;
  }
  struct hf_args a;
  char *path = mt_take(i, &a);
  if (path) send_raw(HF_UTIMENS, HF_F_RESYNC, &a, path, NULL, NULL);
  free(path);
}
/* Every note: sent (connected) or dropped (degraded: their paths may stop naming the files). G.lk held. */
static void mt_flush_locked(void) {
  pthread_mutex_lock(&mtl);
  while (mtp_n) mt_send(mtp_n - 1);
  pthread_mutex_unlock(&mtl);
}
/* The note of one fd, if any. G.lk held. */
static void mt_flush_fd_locked(int fd) {
  pthread_mutex_lock(&mtl);
  int i = mt_find(fd);
  if (i >= 0) mt_send(i);
  pthread_mutex_unlock(&mtl);
}
static void mt_note_locked(int fd, const char *path) {
  if (!G.lazy_mtime) return;
  pthread_mutex_lock(&mtl);
  int i = mt_find(fd);
  char *p = NULL;
  if (i >= 0 && !strcmp(mtp[i].path, path)) {
    /* noted already */
  } else if (!(p = strdup(path))) {
    /* out of memory: the note is lost, the secondary keeps its own write time; the verify quick check sees it */
    if (i >= 0) { free(mtp[i].path); mtp[i] = mtp[--mtp_n]; }
    if (G.next_mode == RS_LOG) G.next_mode = RS_VERIFY;
  } else if (i >= 0) {
    free(mtp[i].path);
    mtp[i].path = p;
  } else {
    if (mtp_n == MT_SLOTS) while (mtp_n) mt_send(mtp_n - 1);
    if (!mtp_n) { mtp_since_us = now_us(); pthread_cond_signal(&mtp_cv); }
    mtp[mtp_n].fd = fd;
    mtp[mtp_n].path = p;
    mtp_n++;
  }
  pthread_mutex_unlock(&mtl);
}
/* Sends due notes, also while no operation comes. Waits on mtp_cv with G.lk. */
static void *mtime_thread(void *arg) {
  (void)arg;
  pthread_mutex_lock(&G.lk);
  while (!G.stopping) {
    pthread_mutex_lock(&mtl);
    int n = mtp_n;
    uint64_t age_us = now_us() - mtp_since_us;
    pthread_mutex_unlock(&mtl);
    if (!n) { pthread_cond_wait(&mtp_cv, &G.lk); continue; }
    if (age_us >= MT_LAZY_MS * 1000u && G.connected && !G.gate_closed) { mt_flush_locked(); continue; }
    uint64_t wait_us = age_us >= MT_LAZY_MS * 1000u ? MT_LAZY_MS * 1000u : MT_LAZY_MS * 1000u - age_us;
    struct timespec dl = mono_deadline((long)(wait_us / 1000u) + 1);
    pthread_cond_timedwait(&mtp_cv, &G.lk, &dl);
  }
  pthread_mutex_unlock(&G.lk);
  return NULL;
}
static void mtime_init(void) { pthread_cond_init(&mtp_cv, &mono_cond); }

/* ---------- FUSE operations ---------- */
#define CTX fuse_get_context()
#define RET(x) ((x) < 0 ? -errno : 0)

static void *f_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  cfg->use_ino = 1;
  cfg->nullpath_ok = 0;
  cfg->hard_remove = 0; /* unlinked-open files become .fuse_hidden*: renames, replicated like any other */
  conn->max_write = 1 << 20;
  /* more requests in flight per mount than libfuse's default 12 (PostgreSQL: backends, WAL writer,
   * checkpointer, bgwriter all at once); the kernel blocks new background requests above the threshold */
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE; /* slower, and the kernel would ack writes the secondary has not seen */
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;  /* truncation arrives as its own setattr, replicated as such */
  /* Page cache kept across opens (keep_cache in open/create) and not dropped when a getattr shows a new mtime:
   * only this mount changes the primary's backing files while it is mounted (resync.c only reads them; the
   * secondary's copy is another directory, mounted only after a promotion, by a fresh mount), writes go
   * through the kernel's cache (no writeback_cache) and truncate/fallocate invalidate their range. Before,
   * every open by another process (PostgreSQL backends) and every getattr after a write dropped the file's
   * cached pages, and the reads went to this helper again. */
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  return NULL;
}

static int f_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  if (fi) return RET(fstat((int)fi->fh, st));
  return RET(b_fstatat(G.bfd, rel(path), st));
}
static int f_access(const char *path, int mask) { return RET(b_faccessat(G.bfd, rel(path), mask)); }
static int f_readlink(const char *path, char *buf, size_t size) {
  ssize_t n = b_readlinkat(G.bfd, rel(path), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = 0;
  return 0;
}
static int f_opendir(const char *path, struct fuse_file_info *fi) {
  int fd = b_open(G.bfd, rel(path), O_RDONLY | O_DIRECTORY, 0);
  if (fd < 0) return -errno;
  DIR *d = fdopendir(fd);
  if (!d) { close(fd); return -errno; }
  fi->fh = (uint64_t)(uintptr_t)d;
  return 0;
}
static int f_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                     enum fuse_readdir_flags flags) {
  (void)path; (void)off; (void)flags;
  DIR *d = (DIR *)(uintptr_t)fi->fh;
  rewinddir(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    struct stat st = {.st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type)};
    if (filler(buf, e->d_name, &st, 0, 0)) break;
  }
  return 0;
}
static int f_releasedir(const char *path, struct fuse_file_info *fi) {
  (void)path;
  closedir((DIR *)(uintptr_t)fi->fh);
  return 0;
}
static int f_statfs(const char *path, struct statvfs *st) { (void)path; return RET(fstatvfs(G.bfd, st)); }

static int f_mknod(const char *path, mode_t mode, dev_t rdev) {
  struct op o = {.type = HF_MKNOD, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = RET(b_mknodat(G.bfd, rel(path), mode, rdev));
  if (!r) r = RET(b_fchownat(G.bfd, rel(path), CTX->uid, CTX->gid));
  if (!r) {
    o.a.mode = mode; o.a.uid = CTX->uid; o.a.gid = CTX->gid; o.a.off = rdev;
    op_submit(&o);
  }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int f_mkdir(const char *path, mode_t mode) {
  struct op o = {.type = HF_MKDIR, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = RET(b_mkdirat(G.bfd, rel(path), mode));
  if (!r) r = RET(b_fchownat(G.bfd, rel(path), CTX->uid, CTX->gid));
  struct stat st;
  if (!r) r = RET(b_fstatat(G.bfd, rel(path), &st));
  if (!r) {
    o.a.mode = st.st_mode; o.a.uid = CTX->uid; o.a.gid = CTX->gid;
    op_submit(&o);
  }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int simple_path_op(uint8_t type, const char *path, const char *path2, int (*fn)(const char *, const char *,
                                                                                      unsigned),
                          unsigned flags) {
  struct op o = {.type = type, .path = path, .path2 = path2};
  int b0 = op_begin(&o);
  if (b0) return b0;
  mt_flush_locked(); /* unlink/rmdir/link/rename: the noted paths must still name their files */
  int r = fn(path, path2, flags);
  if (!r) { o.a.flags = flags; op_submit(&o); }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int do_unlink(const char *p, const char *q, unsigned f) { (void)q; (void)f; return RET(b_unlinkat(G.bfd, rel(p), 0)); }
static int do_rmdir(const char *p, const char *q, unsigned f) { (void)q; (void)f; return RET(b_unlinkat(G.bfd, rel(p), AT_REMOVEDIR)); }
static int do_link(const char *p, const char *q, unsigned f) { (void)f; return RET(b_linkat(G.bfd, rel(p), rel(q))); }
static int do_rename(const char *p, const char *q, unsigned f) { return RET(b_renameat2(G.bfd, rel(p), rel(q), f)); }
static int f_unlink(const char *path) { return simple_path_op(HF_UNLINK, path, NULL, do_unlink, 0); }
static int f_rmdir(const char *path) { return simple_path_op(HF_RMDIR, path, NULL, do_rmdir, 0); }
static int f_link(const char *from, const char *to) { return simple_path_op(HF_LINK, from, to, do_link, 0); }
static int f_rename(const char *from, const char *to, unsigned flags) {
  return simple_path_op(HF_RENAME, from, to, do_rename, flags);
}
static int f_symlink(const char *target, const char *path) {
  struct op o = {.type = HF_SYMLINK, .path = path, .path2 = target};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = RET(b_symlinkat(target, G.bfd, rel(path)));
  if (!r) r = RET(b_fchownat(G.bfd, rel(path), CTX->uid, CTX->gid));
  if (!r) { o.a.uid = CTX->uid; o.a.gid = CTX->gid; op_submit(&o); }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int f_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
  struct op o = {.type = HF_CHMOD, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = fi ? RET(fchmod((int)fi->fh, mode)) : RET(b_fchmodat(G.bfd, rel(path), mode));
  if (!r) { o.a.mode = mode; op_submit(&o); }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int f_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
  struct op o = {.type = HF_CHOWN, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = fi ? RET(fchown((int)fi->fh, uid, gid)) : RET(b_fchownat(G.bfd, rel(path), uid, gid));
  if (!r) { o.a.uid = uid; o.a.gid = gid; op_submit(&o); }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static void set_mtime(struct op *o, const struct stat *st) {
  o->a.mtime_s = st->st_mtim.tv_sec; o->a.mtime_ns = st->st_mtim.tv_nsec;
  o->ino = st->st_ino;
}
static int f_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  struct op o = {.type = HF_TRUNCATE, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int fd = fi ? (int)fi->fh : b_open(G.bfd, rel(path), O_WRONLY, 0);
  int r = fd < 0 ? -errno : RET(ftruncate(fd, size));
  struct stat st;
  if (!r && fstat(fd, &st) == 0) set_mtime(&o, &st);
  if (!fi && fd >= 0) close(fd);
  if (!r) { o.a.off = (uint64_t)size; op_submit(&o); }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int f_utimens(const char *path, const struct timespec ts[2], struct fuse_file_info *fi) {
  struct op o = {.type = HF_UTIMENS, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = fi ? RET(futimens((int)fi->fh, ts)) : RET(b_utimensat(G.bfd, rel(path), ts));
  struct stat st;
  /* UTIME_NOW must mean the same instant on both sides: send what the primary actually stored */
  if (!r) r = fi ? RET(fstat((int)fi->fh, &st)) : RET(b_fstatat(G.bfd, rel(path), &st));
  if (!r) {
    o.a.atime_s = st.st_atim.tv_sec; o.a.atime_ns = st.st_atim.tv_nsec;
    o.a.mtime_s = st.st_mtim.tv_sec; o.a.mtime_ns = st.st_mtim.tv_nsec;
    op_submit(&o);
  }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int f_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
  struct op o = {.type = HF_CREATE, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int fd = b_open(G.bfd, rel(path), (fi->flags & ~(O_APPEND | O_DIRECT)) | O_CREAT, mode);
  int r = fd < 0 ? -errno : 0;
  if (!r && fchown(fd, CTX->uid, CTX->gid) < 0) r = -errno;
  struct stat st;
  if (!r && fstat(fd, &st) == 0) set_mtime(&o, &st);
  if (!r) {
    fi->fh = (uint64_t)fd;
    fi->keep_cache = 1; /* see f_init: only this mount changes the backing files */
    o.a.mode = st.st_mode; o.a.uid = CTX->uid; o.a.gid = CTX->gid; o.a.flags = (uint32_t)(fi->flags & O_TRUNC);
    op_submit(&o);
  } else if (fd >= 0) close(fd);
  op_end(&o);
  if (!r && (r = op_wait(&o)) != 0) close(fd);
  return r;
}
static int f_open(const char *path, struct fuse_file_info *fi) {
  /* O_APPEND is dropped on the backing fd: the kernel hands us the append offset, and pwrite on an O_APPEND fd
   * would ignore it (the two sides must write at the same offset). O_DIRECT is dropped too: FUSE's buffers are
   * not aligned for it, and it promises no durability anyway (fsync does, on both sides). */
  int flags = (fi->flags & ~(O_APPEND | O_DIRECT)) | O_CLOEXEC;
  if (!(fi->flags & O_TRUNC)) {
    int fd = b_open(G.bfd, rel(path), flags, 0);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    fi->keep_cache = 1;
    return 0;
  }
  struct op o = {.type = HF_TRUNCATE, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int fd = b_open(G.bfd, rel(path), flags, 0);
  int r = fd < 0 ? -errno : 0;
  struct stat st;
  if (!r && fstat(fd, &st) == 0) set_mtime(&o, &st);
  if (!r) { fi->fh = (uint64_t)fd; fi->keep_cache = 1; o.a.off = 0; op_submit(&o); }
  op_end(&o);
  if (!r && (r = op_wait(&o)) != 0) close(fd);
  return r;
}
static int f_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  ssize_t n = pread((int)fi->fh, buf, size, off);
  return n < 0 ? -errno : (int)n;
}
static int f_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  struct op o = {.type = HF_WRITE, .path = path, .data = buf};
  int b0 = op_begin(&o);
  if (b0) return b0;
  ssize_t n = pwrite((int)fi->fh, buf, size, off);
  int r = n < 0 ? -errno : 0;
  if (G.lazy_mtime) {
    struct statx sx; /* the ino only: no timestamp queried (see "lazy mtimes") */
    if (!r && statx((int)fi->fh, "", AT_EMPTY_PATH, STATX_INO, &sx) == 0) o.ino = sx.stx_ino;
    o.a.mtime_ns = UTIME_OMIT;
  } else {
    struct stat st;
    if (!r && fstat((int)fi->fh, &st) == 0) set_mtime(&o, &st);
  }
  if (!r && n > 0) {
    o.a.off = (uint64_t)off; o.a.len = (uint64_t)n; o.a.data_len = (uint32_t)n;
    op_submit(&o);
    if (o.sent) mt_note_locked((int)fi->fh, path); /* not o.state: the ack may have come already */
  }
  op_end(&o);
  if (!r && n > 0) r = op_wait(&o);
  return r ? r : (int)n;
}
/* close(): the file's noted mtime goes to the secondary before close returns (see "lazy mtimes"). */
static int f_flush(const char *path, struct fuse_file_info *fi) {
  (void)path;
  int fd = (int)fi->fh;
  if (!mt_has(fd)) return 0;
  struct op o = {.type = HF_UTIMENS, .flags = HF_F_RESYNC};
  char *p = NULL;
  pthread_mutex_lock(&G.lk);
  if (G.connected && !G.gate_closed) {
    pthread_mutex_lock(&mtl);
    int i = mt_find(fd);
    if (i >= 0) p = mt_take(i, &o.a);
    pthread_mutex_unlock(&mtl);
    if (p) { o.path = p; op_submit(&o); }
  }
  pthread_mutex_unlock(&G.lk);
  if (p) op_wait(&o); /* a lost mtime is not the close's error: the verify quick check covers it */
  free(p);
  return 0;
}
static int f_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  int fd = (int)fi->fh;
  if (!mt_has(fd)) { close(fd); return 0; } /* no note can appear now: no write is in flight on a released file */
  pthread_mutex_lock(&G.lk); /* also orders the close with the note's fstat (the fd number is reused at once) */
  mt_flush_fd_locked(fd); /* a close without flush (or one during a resync's namespace phase) */
  close(fd);
  pthread_mutex_unlock(&G.lk);
  return 0;
}
static int f_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  struct op o = {.type = HF_FSYNC, .path = path};
  o.a.flags = datasync ? 1 : 0;
  int b0 = op_begin(&o);
  if (b0) return b0;
  if (!datasync) mt_flush_fd_locked((int)fi->fh); /* fsync makes the mtime durable too: on both sides */
  op_submit(&o); /* the secondary flushes while we flush */
  op_end(&o);
  int r = RET(datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh));
  int w = op_wait(&o);
  return r ? r : w;
}
static int f_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)datasync;
  struct op o = {.type = HF_FSYNCDIR, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  op_submit(&o);
  op_end(&o);
  int r = RET(fsync(dirfd((DIR *)(uintptr_t)fi->fh)));
  int w = op_wait(&o);
  return r ? r : w;
}
static int f_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi) {
  struct op o = {.type = HF_FALLOCATE, .path = path};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = RET(fallocate((int)fi->fh, mode, off, len));
  struct stat st;
  if (!r && fstat((int)fi->fh, &st) == 0) set_mtime(&o, &st);
  if (!r) { o.a.flags = (uint32_t)mode; o.a.off = (uint64_t)off; o.a.len = (uint64_t)len; op_submit(&o); }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int f_setxattr(const char *path, const char *name, const char *value, size_t size, int flags) {
  struct op o = {.type = HF_SETXATTR, .path = path, .path2 = name, .data = value};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = RET(b_lsetxattr(G.bfd, rel(path), name, value, size, flags));
  if (!r) { o.a.data_len = (uint32_t)size; o.a.flags = (uint32_t)flags; op_submit(&o); }
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}
static int f_getxattr(const char *path, const char *name, char *value, size_t size) {
  ssize_t n = b_lgetxattr(G.bfd, rel(path), name, value, size);
  return n < 0 ? -errno : (int)n;
}
static int f_listxattr(const char *path, char *list, size_t size) {
  ssize_t n = b_llistxattr(G.bfd, rel(path), list, size);
  return n < 0 ? -errno : (int)n;
}
static int f_removexattr(const char *path, const char *name) {
  struct op o = {.type = HF_REMOVEXATTR, .path = path, .path2 = name};
  int b0 = op_begin(&o);
  if (b0) return b0;
  int r = RET(b_lremovexattr(G.bfd, rel(path), name));
  if (!r) op_submit(&o);
  op_end(&o);
  if (!r) r = op_wait(&o);
  return r;
}

static const struct fuse_operations ops = {
  .init = f_init, .getattr = f_getattr, .access = f_access, .readlink = f_readlink, .opendir = f_opendir,
  .readdir = f_readdir, .releasedir = f_releasedir, .statfs = f_statfs, .mknod = f_mknod, .mkdir = f_mkdir,
  .unlink = f_unlink, .rmdir = f_rmdir, .symlink = f_symlink, .rename = f_rename, .link = f_link,
  .chmod = f_chmod, .chown = f_chown, .truncate = f_truncate, .utimens = f_utimens, .create = f_create,
  .open = f_open, .read = f_read, .write = f_write, .flush = f_flush, .release = f_release, .fsync = f_fsync,
  .fsyncdir = f_fsyncdir, .fallocate = f_fallocate, .setxattr = f_setxattr, .getxattr = f_getxattr,
  .listxattr = f_listxattr, .removexattr = f_removexattr,
};

/* ---------- link thread: connect, handshake, read acks, reconnect ---------- */
static int dial(void) {
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai;
  if (getaddrinfo(G.peer_host, G.peer_port, &hints, &ai) != 0) return -1;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  struct timeval tv = {G.ack_timeout_ms / 1000, (G.ack_timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* a stuck peer cannot block a sender forever */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) { close(fd); freeaddrinfo(ai); return -1; }
  freeaddrinfo(ai);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  return fd;
}

static void *link_thread(void *arg) {
  (void)arg;
  const char *last_err = NULL;
  while (!G.stopping) {
    int fd = dial();
    if (fd < 0) {
      if (last_err != (const char *)1) emit("{\"event\":\"connecting\",\"peer\":%s}", jstr(G.peer_host));
      last_err = (const char *)1;
      usleep((useconds_t)G.reconnect_ms * 1000);
      continue;
    }
    struct conn *c = calloc(1, sizeof *c);
    const char *why;
    if (!c) {
      emit("{\"event\":\"error\",\"message\":%s}", jstr("out of memory: cannot set up the link"));
      close(fd);
      usleep((useconds_t)G.reconnect_ms * 1000);
      continue;
    }
    int hs = handshake_primary(fd, G.key, G.keylen, G.encrypt, c, &why);
    if (hs < 0) {
      emit("{\"event\":\"auth-failed\",\"reason\":%s,\"refused\":%s}", jstr(why), hs == HS_REFUSED ? "true" : "false");
      conn_destroy(c); close(fd); free(c);
      usleep((useconds_t)G.reconnect_ms * 1000);
      continue;
    }
    last_err = NULL;
    /* no receive timeout on the ack stream: slowness is judged by the waiters' bounded wait */
    struct timeval tv = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&G.lk);
    if (G.stopping) { /* stopped while dialling: no new link, no resync */
      pthread_mutex_unlock(&G.lk);
      conn_destroy(c); close(fd); free(c);
      break;
    }
    G.c = c;
    G.connected = 1;
    G.gen++;
    G.state = ST_RESYNC;
    G.gate_closed = 1; /* no new operation until the resync thread has replayed the namespace log */
    uint64_t gen = G.gen;
    pthread_mutex_unlock(&G.lk);
    emit("{\"event\":\"connected\"}");
    permit_wake_all(); /* data writes held for a permit may go now: the secondary acks them */
    pthread_t rt;
    int have_rt = pthread_create(&rt, NULL, resync_thread, (void *)(uintptr_t)gen) == 0;
    if (!have_rt) degrade("cannot start the resync thread"); /* ends the link: the read below fails at once */
    for (;;) {
      struct hf_hdr h;
      uint8_t *pl;
      if (recv_frame(c, &h, &pl, &why) < 0) break;
      if (h.type != HF_ACK || h.len < 4) { free(pl); why = "unexpected frame from secondary"; break; }
      int32_t st;
      memcpy(&st, pl, 4);
      if (st != 0) {
        emit("{\"event\":\"error\",\"message\":%s,\"seq\":%llu,\"errno\":%d}",
             jstr("secondary failed to apply an operation"), (unsigned long long)h.seq, st);
        free(pl);
        why = "secondary apply error";
        break;
      }
      uint8_t *data = NULL; /* a plain ack (the common case) carries nothing: no allocation */
      if (h.len > 4) {
        if (!(data = malloc(h.len - 4 + 1))) { free(pl); why = "out of memory for a reply from the secondary"; break; }
        memcpy(data, pl + 4, h.len - 4);
      }
      free(pl);
      ack_received(h.seq, st, data, h.len - 4);
    }
    shutdown(fd, SHUT_RDWR);
    degrade(why);
    if (have_rt) pthread_join(rt, NULL);
    pthread_mutex_lock(&G.lk);
    G.c = NULL;
    if (G.gate_closed) { G.gate_closed = 0; pthread_cond_broadcast(&G.gate_cv); }
    pthread_mutex_unlock(&G.lk);
    close(fd);
    conn_destroy(c);
    free(c);
    if (!G.stopping) usleep((useconds_t)G.reconnect_ms * 1000);
  }
  return NULL;
}

int parse_mode(const char *s) {
  return !strcmp(s, "full") ? RS_FULL : !strcmp(s, "checksum") ? RS_CHECKSUM : !strcmp(s, "verify") ? RS_VERIFY : RS_LOG;
}

/* ---------- stop ----------
 * Three ways in: the `stop` command, the end of stdin (the supervisor closed it or died) and the parent-death
 * signal (parent_watch_start). In each: no operation touches the backing directory any more (op_begin refuses,
 * G.stopping is set under G.lk), waiting operations get EIO, and the helper exits.
 * The `stop` command (an orderly stop: the stop hook ran) detaches the mount and lets in-flight operations get
 * their acks first. When the supervisor is gone, the mount is NOT detached: an application it started may still
 * be alive, and a detached mount would let its next open() resolve to the directory underneath, where a write
 * succeeds and is never replicated. The helper exits at once instead: its /dev/fuse fds close, the kernel aborts
 * the connection, and every access to the mount (open files, cwd, new opens) fails with ENOTCONN. The dead mount
 * goes with the private namespace's last process, or (host mode) the supervisor's next start detaches it. In
 * private mode a read-only empty tmpfs lies under the FUSE mount (--guard), so even a detached mount reveals no
 * writable directory. The extent-log lock goes with the process. */
static pthread_mutex_t exit_lk = PTHREAD_MUTEX_INITIALIZER;

/* The last step, taken once (by the main thread after the FUSE loop, or by the stopping thread). clean: every
 * operation applied here is acked or in the log, so the next start need not verify. Does not return. */
static void finish(int clean, int rc) {
  pthread_mutex_lock(&exit_lk); /* never released: the process ends here */
  if (fdatasync(G.logfd) < 0) clean = 0;
  /* the marker stays when a change applied here may be missing from the log: the next start verifies */
  if (clean && !G.log_incomplete) unlink(G.marker);
  emit("{\"event\":\"stopped\",\"rc\":%d}", rc);
  fflush(stdout);
  _exit(0); /* link/resync threads hold no state that needs an orderly end; the log is durable */
}

static int lock_within(pthread_mutex_t *m, int ms) {
  struct timespec dl = mono_deadline(ms);
  return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &dl) == 0;
}

/* Sets G.stopping under G.lk (bounded wait: an operation holds it at most one send timeout). With degrade, the
 * link is dropped too: unacked operations go to the log and their callers get EIO. 1 when G.lk was taken. */
static int stop_locked_state(const char *why, int degrade_too, int wait_ms) {
  int locked = lock_within(&G.lk, wait_ms);
  G.stopping = 1;
  if (locked) {
    pthread_cond_broadcast(&G.gate_cv);
    if (degrade_too && !G.standalone) degrade_locked(why);
    fdatasync(G.logfd);
    pthread_mutex_unlock(&G.lk);
  }
  permit_wake_all();
  return locked;
}

/* parent_gone: the supervisor is gone (end of stdin, parent-death signal): out at once, the mount left dead (see
 * above). Otherwise (the `stop` command) in-flight operations get their acks first, for up to ack timeout + 1 s. */
static int stop_hurry; /* the parent went during a `stop`'s grace: cut it short */
static void primary_stop(const char *why, int parent_gone) {
  static int once;
  if (parent_gone) __atomic_store_n(&stop_hurry, 1, __ATOMIC_SEQ_CST);
  if (__atomic_exchange_n(&once, 1, __ATOMIC_SEQ_CST)) return;
  int locked = stop_locked_state(why, parent_gone, 200);
  if (parent_gone) finish(locked, -1);
  fuse_exit(G.fuse);
  umount2(G.mount, MNT_DETACH);
  /* the main thread finishes (and exits) if the FUSE loop ends meanwhile */
  int grace_ms = G.ack_timeout_ms + 1000;
  for (int t = 0; t < grace_ms && !(t >= 150 && __atomic_load_n(&stop_hurry, __ATOMIC_SEQ_CST)); t += 10) usleep(10000);
  locked = stop_locked_state(why, 1, 200); /* drop the link: unacked ops logged */
  finish(locked, -1);
}

static void primary_parent_gone(const char *why) { primary_stop(why, 1); }

/* ---------- control channel (stdin) ---------- */
static void *control_thread(void *arg) {
  (void)arg;
  char line[512];
  int eof = 1;
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "stats", 5)) {
      pthread_mutex_lock(&G.wl);
      emit("{\"event\":\"stats\",\"state\":\"%s\",\"bytesReplicated\":%llu,\"acks\":%llu,\"ackUsSum\":%llu,"
           "\"ackUsMax\":%llu,\"inflight\":%d,\"logRecords\":%llu,\"resyncBytes\":%llu,\"degradedCount\":%llu,"
           "\"permitWaits\":%llu,\"permitWaiting\":%llu,\"permitMs\":%lld}",
           G.state == ST_SYNC ? "sync" : G.state == ST_RESYNC ? "resync" : "degraded",
           (unsigned long long)G.bytes_sent, (unsigned long long)G.ack_count, (unsigned long long)G.ack_us_sum,
           (unsigned long long)G.ack_us_max, G.inflight, (unsigned long long)G.log_records,
           (unsigned long long)G.resync_bytes, (unsigned long long)G.degraded_count,
           (unsigned long long)permit_waits, (unsigned long long)permit_waiting, permit_remaining_ms());
      G.ack_us_max = 0;
      pthread_mutex_unlock(&G.wl);
    } else if (!strncmp(line, "resync ", 7)) {
      line[strcspn(line, "\r\n")] = 0;
      int mode = parse_mode(line + 7);
      pthread_mutex_lock(&G.lk);
      G.next_mode = mode;
      /* when in sync, cycling the link makes the link thread reconnect and run this pass */
      if (G.connected) degrade_locked("resync requested");
      pthread_mutex_unlock(&G.lk);
    } else if (!strncmp(line, "permit ", 7)) {
      permit_set(strtol(line + 7, NULL, 10));
    } else if (!strncmp(line, "stop", 4)) {
      eof = 0;
      break;
    }
  }
  /* the end of stdin is the liveness channel: the supervisor closed it or died */
  primary_stop(eof ? "end of stdin: supervisor gone" : "stop", eof);
  return NULL;
}

static void usage(void) {
  fprintf(stderr, "usage: holdfast-replicator primary --backing DIR --mount DIR --peer HOST:PORT --key-file F "
                  "--log FILE [--ack-timeout-ms N] [--reconnect-ms N] [--initial log|verify|checksum|full] [--threads N] "
                  "[--encrypt] [--include PATTERN]... [--exclude PATTERN]... [--permit renewed|always] [--lazy-mtime] [--guard]\n"
                  "       holdfast-replicator primary --standalone --backing DIR --mount DIR --log FILE (no replication)\n");
  exit(2);
}

int run_primary(int argc, char **argv) {
  static struct option lopts[] = {{"backing", 1, 0, 'b'},        {"mount", 1, 0, 'm'},  {"peer", 1, 0, 'p'},
                                  {"key-file", 1, 0, 'k'},       {"log", 1, 0, 'l'},    {"ack-timeout-ms", 1, 0, 't'},
                                  {"reconnect-ms", 1, 0, 'r'},   {"initial", 1, 0, 'i'}, {"threads", 1, 0, 'T'},
                                  {"standalone", 0, 0, 'S'},      {"encrypt", 0, 0, 'E'},
                                  {"include", 1, 0, 'I'},         {"exclude", 1, 0, 'X'},
                                  {"permit", 1, 0, 'P'},           {"lazy-mtime", 0, 0, 'L'},
                                  {"guard", 0, 0, 'g'},
                                  {0, 0, 0, 0}};
  char *peer = NULL, *keyf = NULL, *logp = NULL;
  int o, threads = 16, guard = 0;
  if (parent_watch_setup()) { fprintf(stderr, "holdfast-replicator: parent gone before start\n"); return 3; }
  G.next_mode = RS_LOG;
  permit_init();
  mtime_init();
  while ((o = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
    switch (o) {
    case 'b': G.backing = realpath(optarg, NULL); break; /* NULL (not found): usage() below */
    case 'm':
      if (!(G.mount = strdup(optarg))) { perror("holdfast-replicator"); return 2; }
      break;
    case 'p': peer = optarg; break;
    case 'k': keyf = optarg; break;
    case 'l': logp = optarg; break;
    case 't': G.ack_timeout_ms = atoi(optarg); break;
    case 'r': G.reconnect_ms = atoi(optarg); break;
    case 'T': threads = atoi(optarg); break;
    case 'E': G.encrypt = 1; break;
    case 'I':
    case 'X':
      if (filter_add(o == 'I', optarg) < 0) { fprintf(stderr, "holdfast-replicator: bad pattern %s\n", optarg); return 2; }
      break;
    case 'P':
      if (!strcmp(optarg, "always")) permit_always = 1;
      else if (strcmp(optarg, "renewed")) usage();
      break;
    case 'L': G.lazy_mtime = 1; break;
    case 'g': guard = 1; break;
    case 'S': G.standalone = 1; break; /* FUSE passthrough only, no replication: to measure FUSE's own cost */
    case 'i': G.next_mode = parse_mode(optarg); break;
    default: usage();
    }
  }
  if (G.standalone && !peer) peer = "127.0.0.1:0";
  if (G.standalone && !keyf) keyf = "/dev/null";
  if (!G.backing || !G.mount || !peer || !keyf || !logp) usage();
  char *colon = strrchr(peer, ':');
  if (!colon) usage();
  G.peer_host = strndup(peer[0] == '[' ? peer + 1 : peer, (size_t)(colon - peer) - (peer[0] == '[' ? 2 : 0));
  if (!G.peer_host) { perror("holdfast-replicator"); return 2; }
  G.peer_port = colon + 1;
  if (!G.standalone) G.keylen = load_key(keyf, G.key, sizeof G.key);
  umask(0);
  G.bfd = open(G.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (G.bfd < 0) { perror(G.backing); return 2; }
  G.logfd = open(logp, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (G.logfd < 0 || flock(G.logfd, LOCK_EX | LOCK_NB) < 0) {
    fprintf(stderr, "holdfast-replicator: cannot open/lock extent log %s: %s\n", logp, strerror(errno));
    return 2;
  }
  /* A marker that exists only while a primary runs. Found at start, it means the last run crashed: operations
   * applied locally but neither acked nor logged may exist, so the log alone cannot be trusted for the first
   * resync and a checksum pass is used instead (unless a full one was asked for). */
  snprintf(G.marker, sizeof G.marker, "%s.running", logp);
  int unclean = access(G.marker, F_OK) == 0;
  if (unclean && G.next_mode == RS_LOG) G.next_mode = RS_VERIFY;
  /* the marker must be durable before any operation: without it a crash would go unnoticed at the next start */
  int mfd = open(G.marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (mfd < 0 || fsync(mfd) < 0 || fsync_parent(G.marker) < 0) {
    fprintf(stderr, "holdfast-replicator: cannot create %s durably: %s\n", G.marker, strerror(errno));
    return 2;
  }
  close(mfd);
  G.state = ST_DEGRADED;
  char *fargv[] = {argv[0], "-o", "allow_other,default_permissions,fsname=holdfast,subtype=holdfast", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
  G.fuse = fuse_new(&args, &ops, sizeof ops, NULL);
  if (!G.fuse) return 2;
  /* --guard (a private mount namespace only: the mount would show in the host's otherwise): an empty read-only
   * tmpfs under the FUSE mount, so that the mount point never resolves to a writable directory here, even once
   * the FUSE mount is detached while an application still runs (see "stop"). */
  if (guard && mount("holdfast-guard", G.mount, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") != 0) {
    fprintf(stderr, "holdfast-replicator: cannot mount the read-only guard on %s: %s\n", G.mount, strerror(errno));
    return 2;
  }
  if (fuse_mount(G.fuse, G.mount) != 0) { fprintf(stderr, "holdfast-replicator: mount failed\n"); return 2; }
  /* No libfuse signal handlers: SIGTERM/SIGINT/SIGHUP would end the loop and detach the mount under a running
   * application. A service manager stopping the whole service signals every process of it at once, while the
   * daemon still runs the stop hooks that need the mount: the supervisor ends this helper (`stop`, or its own
   * death), nothing else does, short of SIGKILL. */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  off_t logsize = lseek(G.logfd, 0, SEEK_END);
  emit("{\"event\":\"ready\",\"mount\":%s,\"pid\":%d,\"logBytes\":%lld,\"uncleanStart\":%s}", jstr(G.mount),
       (int)getpid(), (long long)logsize, unclean ? "true" : "false");
  if (!G.standalone) emit("{\"event\":\"degraded\",\"reason\":\"not connected yet\",\"logged\":0}");
  pthread_t lt, ct, mt;
  if ((!G.standalone && pthread_create(&lt, NULL, link_thread, NULL) != 0) ||
      (!G.standalone && G.lazy_mtime && pthread_create(&mt, NULL, mtime_thread, NULL) != 0) ||
      pthread_create(&ct, NULL, control_thread, NULL) != 0) {
    fprintf(stderr, "holdfast-replicator: cannot start the helper's threads\n");
    _exit(2); /* the mount dies with the process; the marker stays: the next start verifies */
  }
  parent_watch_start(0, primary_parent_gone); /* stdin is the control thread's: its end stops too */
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 1);
  fuse_loop_cfg_set_max_threads(cfg, (unsigned)threads);
  int rc = fuse_loop_mt(G.fuse, cfg);
  G.stopping = 1;
  fuse_unmount(G.fuse);
  /* a clean stop: the loop's workers are done, so every operation the application saw complete is on the
   * secondary or in the log */
  finish(1, rc);
  return 0;
}
