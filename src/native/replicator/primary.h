/* Primary-side state shared by the FUSE operations (primary.c) and the resync passes (resync.c). */
#ifndef HF_PRIMARY_H
#define HF_PRIMARY_H
#define FUSE_USE_VERSION 314
#include "common.h"
#include <fuse.h>

enum { OP_NONE, OP_PENDING, OP_ACKED, OP_LOGGED, OP_LOG_SYNC };
enum { ST_DEGRADED, ST_RESYNC, ST_SYNC };
enum { RS_LOG, RS_CHECKSUM, RS_FULL, RS_VERIFY };
int parse_mode(const char *s);

/* One replicated operation, on the stack of the FUSE thread that performs it. */
struct op {
  uint8_t type, flags;
  struct hf_args a;
  const char *path, *path2;
  const void *data;
  uint64_t ino; /* backing inode of the file (data ops), recorded in the extent log */
  uint64_t seq, t0;
  int state, want_reply;
  int verify_on_loss;   /* completes content sent without waiters: if the link drops first, resync with verify */
  int sent;             /* op_submit sent it (set by the submitting thread; state may change under G.wl at once) */
  int err;              /* its extent-log record could not be made durable: the reply is this errno, never success */
  uint64_t syncs0;      /* logged: G.syncs then; once a later resync completes, the secondary has it */
  uint8_t *reply;
  uint32_t reply_len;
  pthread_cond_t cv;
  struct op *next, *prev;
};

struct primary {
  char *backing, *mount, *peer_host, *peer_port;
  char marker[4200];
  int bfd, logfd;
  uint8_t key[4096];
  size_t keylen;
  int ack_timeout_ms, reconnect_ms;
  struct fuse *fuse;
  volatile int stopping;
  int standalone;        /* --standalone: passthrough without replication (benchmarks) */
  int lazy_mtime;        /* --lazy-mtime: writes carry no mtime, it follows later (experimental, off by default) */
  int encrypt;           /* --encrypt: AES-256-GCM frames (the secondary must use it too) */
  pthread_mutex_t lk;    /* ordering: local apply + sequence number + send (or log append) */
  pthread_mutex_t wl;    /* waiter list and counters; never held while taking lk */
  pthread_cond_t gate_cv;
  int gate_closed;       /* set while a resync replays the namespace: new operations wait */
  struct conn *c;
  int connected, state, next_mode;
  int log_incomplete;    /* an operation applied here is in neither the log nor the secondary: verify next (log_lost) */
  uint64_t gen, seq;
  uint64_t syncs;        /* resync passes completed (atomic): everything logged before one started is on the secondary */
  struct op *whead, *wtail;
  int inflight;
  uint64_t bytes_sent, ack_count, ack_us_sum, ack_us_max, log_records, resync_bytes, degraded_count;
};
extern struct primary G;

/* Appends o's record (G.lk held); 0, or a positive errno (then the log ends where it was, log_lost was called). */
int log_append(const struct op *o);
/* A change applied here may be missing from the log: the next resync is a verify pass, and the marker stays (so a
 * restart verifies too). G.lk held. */
void log_lost(int err, const char *what);
void degrade_locked(const char *reason);
void degrade(const char *reason);
/* Sends one frame with no waiter (its ack is ignored). G.lk held, connected. 0 or -1 (then degraded). */
int send_raw(uint8_t type, uint8_t flags, struct hf_args *a, const char *path, const char *path2, const void *data);
/* 0 with G.lk held, or -EIO (stopping; lock not held). */
int op_begin(struct op *o);
void op_submit(struct op *o);
void op_end(struct op *o);
int op_wait(struct op *o);
void ack_received(uint64_t seq, int32_t status, uint8_t *data, uint32_t len);
void *resync_thread(void *arg);
/* Wakes the operations waiting for a permit or a completed resync (after a renewal, a resync, a stop). */
void permit_wake_all(void);
#endif
