/* Shared by the primary and the secondary: framing, handshake, control-channel output, small utilities. */
#ifndef HF_COMMON_H
#define HF_COMMON_H
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>
#include "proto.h"
#include "crypto.h"

struct conn {
  int fd;
  int aead;               /* 1: frames are AES-256-GCM sealed (--encrypt), 0: HMAC-SHA256 only */
  EVP_MAC_CTX *mtx, *mrx; /* HMAC-SHA256 keyed with the direction's session key (plain mode) */
  EVP_CIPHER_CTX *etx, *erx; /* AES-256-GCM with the direction's key set (aead mode) */
  uint8_t *txbuf;         /* ciphertext of the frame being sent (aead mode; under tx_lock / the sender's lock) */
  size_t txcap;
  uint8_t *rbuf;          /* received bytes not yet consumed (one reader thread per connection) */
  size_t rpos, rlen;
  uint64_t tx_ctr, rx_ctr;
  pthread_mutex_t tx_lock; /* serialises frames from several threads (acks on the secondary) */
};

/* Key file: its raw bytes are the key (at least 16). Exits with a message when unusable. */
size_t load_key(const char *path, uint8_t *key, size_t cap);
int write_full(int fd, const void *buf, size_t len);
/* fsyncs the directory holding path (so a create or rename of path is durable). 0, or -1 and errno. */
int fsync_parent(const char *path);
int read_full(int fd, void *buf, size_t len);
/* Handshake; returns 0 and fills c, HS_REFUSED when the peer is no holdfast peer or failed authentication (a wrong
 * key), or -1 (an --encrypt mismatch or an I/O error); the reason in *why. encrypt: this side wants AES-256-GCM
 * frames; both sides must agree. */
#define HS_REFUSED (-2)
int handshake_primary(int fd, const uint8_t *key, size_t keylen, int encrypt, struct conn *c, const char **why);
int handshake_secondary(int fd, const uint8_t *key, size_t keylen, int encrypt, struct conn *c, const char **why);
/* Frees what a handshake allocated (cipher contexts, buffers); does not close the fd. */
void conn_destroy(struct conn *c);
/* Sends one frame: header + the concatenation of iov + MAC. Caller holds c->tx_lock if shared. 0 or -1. */
int send_frame(struct conn *c, uint8_t type, uint8_t flags, uint64_t seq, const struct iovec *iov, int iovcnt);
/* Receives one frame; *payload is malloc'd (caller frees). 0, or -1 on EOF/error/bad MAC (*why says). */
int recv_frame(struct conn *c, struct hf_hdr *h, uint8_t **payload, const char **why);

/* Control channel: one JSON object per line on stdout, written whole under a lock. */
void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* JSON-escapes s into a static-per-thread buffer. */
const char *jstr(const char *s);
uint64_t now_us(void);
/* Timeouts never follow the wall clock: condition variables with a timed wait are created with mono_cond
 * (CLOCK_MONOTONIC, set up by mono_setup() at the start of main), and mono_deadline gives their deadlines (and
 * pthread_mutex_clocklock's). */
extern pthread_condattr_t mono_cond;
void mono_setup(void);
struct timespec mono_deadline(long ms);
/* "/a/b" -> "a/b", "/" -> "." (paths relative to the backing directory fd). */
const char *rel(const char *path);
/* Rejects empty paths, paths not starting with '/', and any ".." component. */
int path_ok(const char *p, size_t len);

/* Path operations relative to a root directory fd, every component resolved beneath it (wire.c: openat2 with
 * RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); the last component is never followed (b_open adds O_NOFOLLOW).
 * p is relative ("a/b", "."), as rel() gives. -1 and errno (EXDEV: the path leads out of the root). */
#include <sys/stat.h>
#include <sys/types.h>
int b_open(int root, const char *p, int flags, mode_t mode);
int b_fstatat(int root, const char *p, struct stat *st);
int b_faccessat(int root, const char *p, int mask);
ssize_t b_readlinkat(int root, const char *p, char *buf, size_t n);
int b_mkdirat(int root, const char *p, mode_t mode);
int b_mknodat(int root, const char *p, mode_t mode, dev_t dev);
int b_unlinkat(int root, const char *p, int flags);
int b_symlinkat(const char *target, int root, const char *p);
int b_fchmodat(int root, const char *p, mode_t mode);
int b_fchownat(int root, const char *p, uid_t u, gid_t g);
int b_utimensat(int root, const char *p, const struct timespec ts[2]);
int b_linkat(int root, const char *p1, const char *p2);
int b_renameat2(int root, const char *p1, const char *p2, unsigned flags);
int b_lsetxattr(int root, const char *p, const char *name, const void *v, size_t n, int flags);
ssize_t b_lgetxattr(int root, const char *p, const char *name, void *v, size_t n);
ssize_t b_llistxattr(int root, const char *p, char *list, size_t n);
int b_lremovexattr(int root, const char *p, const char *name);

/* Parent liveness (main.c). The helper must not outlive the process that spawned it (its supervisor): an
 * orphan primary would keep serving a copy that may no longer be primary and hold the extent-log lock.
 * parent_watch_setup: from the main thread (which lives as long as the helper), before any other thread: blocks
 * HF_PDEATH_SIG in every thread to come and asks the kernel for it when the parent dies (PR_SET_PDEATHSIG);
 * returns 1 when the parent is already gone (it died before the request: the ppid changed since main started, or
 * the supervisor named by HOLDFAST_PARENT_PID no longer exists).
 * parent_watch_start: a thread that calls on_gone(why) once, when that signal arrives or, with watch_stdin, at
 * the end of stdin (the supervisor's end of the pipe closed: it is gone). */
int parent_watch_setup(void);
void parent_watch_start(int watch_stdin, void (*on_gone)(const char *why));
/* 1 when stdin is a pipe or socket: something holds its other end, so its end means that holder is gone. */
int stdin_is_channel(void);

int run_primary(int argc, char **argv);
/* selftest parts (primary.c, secondary.c): failures, 0 when all pass */
int durability_selftest(void);
/* Checks the handshake proofs, session keys and frames of a test/vectors/wire.json file through the real code
 * (derive, conn_init, send_frame, recv_frame); *checked = vectors checked. Failures, 0 when all pass. */
int vectors_selftest(const char *path, int *checked);
int state_selftest(void);
/* 1: emit() prints nothing (selftest runs failure paths that report themselves) */
extern int emit_quiet;
int run_secondary(int argc, char **argv);
#endif
