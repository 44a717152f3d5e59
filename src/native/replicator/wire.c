#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>

size_t load_key(const char *path, uint8_t *key, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { fprintf(stderr, "holdfast-replicator: cannot open key file %s: %s\n", path, strerror(errno)); exit(2); }
  ssize_t n = read(fd, key, cap);
  close(fd);
  if (n < 16) { fprintf(stderr, "holdfast-replicator: key file %s must hold at least 16 bytes\n", path); exit(2); }
  return (size_t)n;
}

int write_full(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n < 0) { if (errno == EINTR) continue; return -1; }
    p += n; len -= (size_t)n;
  }
  return 0;
}

int fsync_parent(const char *path) {
  char d[4200];
  const char *s = strrchr(path, '/');
  if (!s) snprintf(d, sizeof d, ".");
  else if (s == path) snprintf(d, sizeof d, "/");
  else if ((size_t)(s - path) >= sizeof d) { errno = ENAMETOOLONG; return -1; }
  else snprintf(d, sizeof d, "%.*s", (int)(s - path), path);
  int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int r = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return r;
}

int read_full(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len) {
    ssize_t n = read(fd, p, len);
    if (n < 0) { if (errno == EINTR) continue; return -1; }
    if (n == 0) { errno = ECONNRESET; return -1; }
    p += n; len -= (size_t)n;
  }
  return 0;
}

/* ---------- handshake ---------- */
/* HMAC-SHA256(K, label || snonce || cnonce): handshake proofs and session keys (proto.h). 0 or -1. */
static int derive(const uint8_t *key, size_t keylen, const char *label, const uint8_t *sn, const uint8_t *cn,
                  uint8_t out[32]) {
  struct iovec v[3] = {{(void *)label, strlen(label)}, {(void *)sn, HF_NONCE_LEN}, {(void *)cn, HF_NONCE_LEN}};
  return hmac_sha256v(key, keylen, v, 3, out);
}

static int conn_init(struct conn *c, int fd, const uint8_t *key, size_t keylen, const uint8_t *sn,
                     const uint8_t *cn, int primary, int encrypt) {
  uint8_t kps[32], ksp[32];
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->aead = encrypt;
  if (derive(key, keylen, encrypt ? "p2s-aead" : "p2s", sn, cn, kps) < 0 ||
      derive(key, keylen, encrypt ? "s2p-aead" : "s2p", sn, cn, ksp) < 0)
    return -1;
  if (encrypt) {
    c->etx = aead_new(primary ? kps : ksp, 1);
    c->erx = aead_new(primary ? ksp : kps, 0);
  } else {
    c->mtx = mac_new(primary ? kps : ksp, 32);
    c->mrx = mac_new(primary ? ksp : kps, 32);
  }
  OPENSSL_cleanse(kps, sizeof kps);
  OPENSSL_cleanse(ksp, sizeof ksp);
  if (encrypt ? !c->etx || !c->erx : !c->mtx || !c->mrx) { conn_destroy(c); return -1; }
  c->tx_ctr = c->rx_ctr = 0;
  pthread_mutex_init(&c->tx_lock, NULL);
  return 0;
}

void conn_destroy(struct conn *c) {
  aead_free(c->etx);
  aead_free(c->erx);
  mac_free(c->mtx);
  mac_free(c->mrx);
  c->mtx = c->mrx = NULL;
  free(c->txbuf);
  free(c->rbuf);
  c->rbuf = NULL;
  c->etx = c->erx = NULL;
  c->txbuf = NULL;
  c->txcap = 0;
}

int handshake_primary(int fd, const uint8_t *key, size_t keylen, int encrypt, struct conn *c, const char **why) {
  uint8_t hello[4 + HF_NONCE_LEN], out[HF_NONCE_LEN + 32], mac[32], want[32];
  if (read_full(fd, hello, sizeof hello) < 0) { *why = "no hello from secondary"; return -1; }
  uint32_t magic;
  memcpy(&magic, hello, 4);
  if (magic != HF_MAGIC && magic != HF_MAGIC_ENC) { *why = "peer is not a holdfast secondary"; return HS_REFUSED; }
  const uint8_t *sn = hello + 4;
  if (getrandom(out, HF_NONCE_LEN, 0) != HF_NONCE_LEN) { *why = "getrandom failed"; return -1; }
  /* our proof carries our setting, so a secondary set differently can say so too */
  if (derive(key, keylen, encrypt ? "hf-pe" : "hf-p", sn, out, out + HF_NONCE_LEN) < 0) { *why = "HMAC failed"; return -1; }
  if (write_full(fd, out, sizeof out) < 0) { *why = "send failed"; return -1; }
  if ((magic == HF_MAGIC_ENC) != !!encrypt) {
    *why = encrypt ? "encryption mismatch: this primary uses --encrypt, the secondary does not"
                   : "encryption mismatch: the secondary uses --encrypt, this primary does not";
    return -1;
  }
  if (read_full(fd, mac, 32) < 0) { *why = "secondary refused the key (connection closed)"; return -1; }
  if (derive(key, keylen, encrypt ? "hf-se" : "hf-s", sn, out, want) < 0) { *why = "HMAC failed"; return -1; }
  if (mac_differs(mac, want)) { *why = "secondary failed authentication"; return HS_REFUSED; }
  if (conn_init(c, fd, key, keylen, sn, out, 1, encrypt) < 0) { *why = "cipher set-up failed"; return -1; }
  return 0;
}

int handshake_secondary(int fd, const uint8_t *key, size_t keylen, int encrypt, struct conn *c, const char **why) {
  uint8_t hello[4 + HF_NONCE_LEN], in[HF_NONCE_LEN + 32], want[32];
  uint32_t magic = encrypt ? HF_MAGIC_ENC : HF_MAGIC;
  memcpy(hello, &magic, 4);
  if (getrandom(hello + 4, HF_NONCE_LEN, 0) != HF_NONCE_LEN) { *why = "getrandom failed"; return -1; }
  if (write_full(fd, hello, sizeof hello) < 0) { *why = "send failed"; return -1; }
  if (read_full(fd, in, sizeof in) < 0) { *why = "no answer from peer"; return -1; }
  if (derive(key, keylen, encrypt ? "hf-pe" : "hf-p", hello + 4, in, want) < 0) { *why = "HMAC failed"; return -1; }
  if (mac_differs(in + HF_NONCE_LEN, want)) {
    if (derive(key, keylen, encrypt ? "hf-p" : "hf-pe", hello + 4, in, want) < 0) { *why = "HMAC failed"; return -1; }
    if (mac_differs(in + HF_NONCE_LEN, want)) { *why = "peer failed authentication"; return HS_REFUSED; }
    *why = encrypt ? "encryption mismatch: this secondary uses --encrypt, the primary does not"
                   : "encryption mismatch: the primary uses --encrypt, this secondary does not";
    return -1;
  }
  if (derive(key, keylen, encrypt ? "hf-se" : "hf-s", hello + 4, in, want) < 0) { *why = "HMAC failed"; return -1; }
  if (write_full(fd, want, 32) < 0) { *why = "send failed"; return -1; }
  if (conn_init(c, fd, key, keylen, hello + 4, in, 0, encrypt) < 0) { *why = "cipher set-up failed"; return -1; }
  return 0;
}

/* ---------- frames ---------- */
static int writev_all(int fd, struct iovec *v, int n) {
  int k = 0;
  while (k < n) {
    ssize_t w = writev(fd, v + k, n - k);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    while (k < n && (size_t)w >= v[k].iov_len) { w -= (ssize_t)v[k].iov_len; k++; }
    if (k < n) { v[k].iov_base = (uint8_t *)v[k].iov_base + w; v[k].iov_len -= (size_t)w; }
  }
  return 0;
}

int send_frame(struct conn *c, uint8_t type, uint8_t flags, uint64_t seq, const struct iovec *iov, int iovcnt) {
  struct hf_hdr h = {.magic = HF_MAGIC, .type = type, .flags = flags, .seq = seq};
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++) len += iov[i].iov_len;
  h.len = (uint32_t)len;
  if (c->aead) {
    if (c->txcap < len + HF_TAG_LEN) {
      size_t cap = len + HF_TAG_LEN < 65536 ? 65536 : len + HF_TAG_LEN;
      uint8_t *b = realloc(c->txbuf, cap);
      if (!b) return -1;
      c->txbuf = b; c->txcap = cap;
    }
    if (aead_seal(c->etx, c->tx_ctr, &h, sizeof h, iov, iovcnt, c->txbuf, c->txbuf + len) < 0) return -1;
    c->tx_ctr++;
    struct iovec v[2] = {{&h, sizeof h}, {c->txbuf, len + HF_TAG_LEN}};
    return writev_all(c->fd, v, 2);
  }
  /* MAC over ctr64 || header || payload (the payload's iovecs: at most 5) */
  struct iovec mv[7] = {{&c->tx_ctr, 8}, {&h, sizeof h}};
  int mn = 2;
  for (int i = 0; i < iovcnt && mn < 7; i++) mv[mn++] = iov[i];
  uint8_t mac[32];
  if (iovcnt > 5 || mac_compute(c->mtx, mv, mn, mac) < 0) return -1;
  c->tx_ctr++;
  struct iovec v[8];
  int n = 0;
  v[n++] = (struct iovec){&h, sizeof h};
  for (int i = 0; i < iovcnt && n < 7; i++)
    if (iov[i].iov_len) v[n++] = iov[i];
  v[n++] = (struct iovec){mac, 32};
  return writev_all(c->fd, v, n);
}

/* Buffered read of exactly len bytes: one read() can bring several frames (acks, small operations), so a
 * frame usually costs no syscall of its own; large payloads go straight to their destination. */
#define RBUF (64u << 10)
static int conn_read(struct conn *c, void *dst, size_t len) {
  uint8_t *d = dst;
  while (len) {
    if (c->rpos < c->rlen) {
      size_t n = c->rlen - c->rpos < len ? c->rlen - c->rpos : len;
      memcpy(d, c->rbuf + c->rpos, n);
      c->rpos += n; d += n; len -= n;
      continue;
    }
    if (len >= RBUF) return read_full(c->fd, d, len);
    if (!c->rbuf && !(c->rbuf = malloc(RBUF))) return -1;
    ssize_t n = read(c->fd, c->rbuf, RBUF);
    if (n < 0) { if (errno == EINTR) continue; return -1; }
    if (n == 0) { errno = ECONNRESET; return -1; }
    c->rpos = 0;
    c->rlen = (size_t)n;
  }
  return 0;
}

int recv_frame(struct conn *c, struct hf_hdr *h, uint8_t **payload, const char **why) {
  *payload = NULL;
  if (conn_read(c, h, sizeof *h) < 0) { *why = "connection closed"; return -1; }
  /* acks may carry a tree listing or block checksums: allow them more room than operations */
  uint32_t max = h->type == HF_ACK ? (512u << 20) : HF_MAX_PAYLOAD + 4096;
  if (h->magic != HF_MAGIC || h->len > max) { *why = "malformed frame"; return -1; }
  size_t tl = c->aead ? HF_TAG_LEN : HF_MAC_LEN;
  uint8_t *p = malloc(h->len + tl + 1);
  if (!p) { *why = "out of memory"; return -1; }
  if (conn_read(c, p, h->len + tl) < 0) { free(p); *why = "connection closed mid-frame"; return -1; }
  if (c->aead) {
    if (aead_open(c->erx, c->rx_ctr, h, sizeof *h, p, h->len, p + h->len) < 0) {
      free(p); *why = "frame failed authentication"; return -1;
    }
  } else {
    struct iovec mv[3] = {{&c->rx_ctr, 8}, {h, sizeof *h}, {p, h->len}};
    uint8_t mac[32];
    if (mac_compute(c->mrx, mv, 3, mac) < 0) { free(p); *why = "HMAC failed"; return -1; }
    if (mac_differs(mac, p + h->len)) { free(p); *why = "frame failed authentication"; return -1; }
  }
  c->rx_ctr++;
  p[h->len] = 0;
  *payload = p;
  return 0;
}

static pthread_mutex_t emit_lock = PTHREAD_MUTEX_INITIALIZER;
int emit_quiet;
void emit(const char *fmt, ...) {
  if (emit_quiet) return;
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&emit_lock);
  vfprintf(stdout, fmt, ap);
  fputc('\n', stdout);
  fflush(stdout);
  pthread_mutex_unlock(&emit_lock);
  va_end(ap);
}

const char *jstr(const char *s) {
  static __thread char buf[4][2048];
  static __thread int k;
  char *o = buf[k = (k + 1) & 3];
  size_t n = 0;
  o[n++] = '"';
  for (; s && *s && n < sizeof buf[0] - 8; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') { o[n++] = '\\'; o[n++] = (char)ch; }
    else if (ch < 0x20) n += (size_t)snprintf(o + n, 8, "\\u%04x", ch);
    else o[n++] = (char)ch;
  }
  o[n++] = '"';
  o[n] = 0;
  return o;
}

uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

pthread_condattr_t mono_cond;
void mono_setup(void) {
  pthread_condattr_init(&mono_cond);
  pthread_condattr_setclock(&mono_cond, CLOCK_MONOTONIC);
}
struct timespec mono_deadline(long ms) {
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += ms / 1000;
  dl.tv_nsec += (ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
  return dl;
}

const char *rel(const char *path) { return path[0] == '/' && path[1] ? path + 1 : "."; }

int path_ok(const char *p, size_t len) {
  if (len == 0 || p[0] != '/' || memchr(p, 0, len)) return 0;
  for (size_t i = 0; i < len;) {
    size_t j = i + 1;
    while (j < len && p[j] != '/') j++;
    size_t clen = j - i - 1;
    if (clen == 2 && p[i + 1] == '.' && p[i + 2] == '.') return 0;
    i = j;
  }
  return 1;
}

/* ---------- paths resolved beneath a root directory fd ----------
 * Every path the helper gets (from the stream on the secondary, from FUSE or a resync walk on the primary) is
 * resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): an absolute symlink, a ".." or a relative
 * symlink leading out of the root fails with EXDEV, a /proc magic link with ELOOP, wherever they are in the
 * path. A plain openat(root, "a/b") follows a symlink "a" -> /elsewhere (O_NOFOLLOW guards the last component
 * only), which let a stream write outside the backing directory. Non-open operations open the parent beneath
 * the root (O_PATH) and act on the last component with the *at() call, which does not follow it. In-tree
 * symlinks that stay beneath the root are still followed in non-final components. */
#define B_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
static int openat2_beneath(int root, const char *p, uint64_t flags, uint64_t mode) {
  struct open_how how = {.flags = flags, .mode = mode, .resolve = B_RESOLVE};
  for (int i = 0;; i++) {
    long fd = syscall(SYS_openat2, root, p, &how, sizeof how);
    /* EAGAIN: a concurrent rename somewhere in the tree; the kernel asks for a retry */
    if (fd >= 0 || errno != EAGAIN || i >= 16) return (int)fd;
  }
}

int b_open(int root, const char *p, int flags, mode_t mode) {
  /* openat2 refuses bits it does not know (EINVAL); FUSE open flags can carry kernel-internal ones */
  flags &= O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC | O_SYNC | O_DIRECT |
           O_LARGEFILE | O_DIRECTORY | O_NOATIME | O_PATH | __O_TMPFILE;
  flags |= O_NOFOLLOW | O_CLOEXEC;
  /* openat2 also refuses a mode with bits beyond 07777 (FUSE's create passes S_IFREG) or without O_CREAT */
  return openat2_beneath(root, p, (uint64_t)(unsigned)flags, (flags & (O_CREAT | __O_TMPFILE)) ? (mode & 07777) : 0);
}

/* The directory holding p's last component, opened beneath root (root itself when p has no '/'); *leaf points
 * into p. A ".." leaf is refused (it would name the parent's parent: outside for the root). */
static int b_parent(int root, const char *p, const char **leaf) {
  const char *s = strrchr(p, '/');
  *leaf = s ? s + 1 : p;
  if (!**leaf) *leaf = ".";
  if (!strcmp(*leaf, "..")) { errno = EPERM; return -1; }
  if (!s) return root;
  char d[4097];
  size_t n = (size_t)(s - p);
  if (n >= sizeof d) { errno = ENAMETOOLONG; return -1; }
  memcpy(d, p, n);
  d[n] = 0;
  return openat2_beneath(root, n ? d : ".", O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
}
static void b_put(int root, int d) {
  if (d != root) { int e = errno; close(d); errno = e; }
}
#define B_CALL(root, p, leaf, d, expr)                                                                         \
  do {                                                                                                         \
    const char *leaf;                                                                                          \
    int d = b_parent(root, p, &leaf);                                                                          \
    if (d < 0) return -1;                                                                                      \
    long r_ = (long)(expr);                                                                                    \
    b_put(root, d);                                                                                            \
    return r_;                                                                                                 \
  } while (0)

int b_fstatat(int root, const char *p, struct stat *st) { B_CALL(root, p, l, d, fstatat(d, l, st, AT_SYMLINK_NOFOLLOW)); }
int b_faccessat(int root, const char *p, int mask) { B_CALL(root, p, l, d, faccessat(d, l, mask, AT_EACCESS | AT_SYMLINK_NOFOLLOW)); }
ssize_t b_readlinkat(int root, const char *p, char *buf, size_t n) { B_CALL(root, p, l, d, readlinkat(d, l, buf, n)); }
int b_mkdirat(int root, const char *p, mode_t mode) { B_CALL(root, p, l, d, mkdirat(d, l, mode)); }
int b_mknodat(int root, const char *p, mode_t mode, dev_t dev) { B_CALL(root, p, l, d, mknodat(d, l, mode, dev)); }
int b_unlinkat(int root, const char *p, int flags) { B_CALL(root, p, l, d, unlinkat(d, l, flags)); }
int b_symlinkat(const char *target, int root, const char *p) { B_CALL(root, p, l, d, symlinkat(target, d, l)); }
/* a symlink's own mode cannot be changed on Linux: EOPNOTSUPP for one (never the target's mode) */
int b_fchmodat(int root, const char *p, mode_t mode) { B_CALL(root, p, l, d, fchmodat(d, l, mode, AT_SYMLINK_NOFOLLOW)); }
int b_fchownat(int root, const char *p, uid_t u, gid_t g) { B_CALL(root, p, l, d, fchownat(d, l, u, g, AT_SYMLINK_NOFOLLOW)); }
int b_utimensat(int root, const char *p, const struct timespec ts[2]) { B_CALL(root, p, l, d, utimensat(d, l, ts, AT_SYMLINK_NOFOLLOW)); }

static int b_two(int root, const char *p1, const char *p2, int op, int flags) {
  const char *l1, *l2;
  int d1 = b_parent(root, p1, &l1);
  if (d1 < 0) return -1;
  int d2 = b_parent(root, p2, &l2);
  if (d2 < 0) { b_put(root, d1); return -1; }
  int r = op ? renameat2(d1, l1, d2, l2, (unsigned)flags) : linkat(d1, l1, d2, l2, 0);
  b_put(root, d1);
  b_put(root, d2);
  return r;
}
int b_linkat(int root, const char *p1, const char *p2) { return b_two(root, p1, p2, 0, 0); }
int b_renameat2(int root, const char *p1, const char *p2, unsigned flags) { return b_two(root, p1, p2, 1, (int)flags); }

/* xattrs have no *at() calls: the l*xattr() path goes through the parent opened beneath the root
 * (/proc/self/fd/N/leaf: the magic link names exactly that directory; the leaf is not followed). */
#define B_XATTR(root, p, expr)                                                                                 \
  do {                                                                                                         \
    const char *l;                                                                                             \
    int d = b_parent(root, p, &l);                                                                             \
    if (d < 0) return -1;                                                                                      \
    char x[4200];                                                                                              \
    snprintf(x, sizeof x, "/proc/self/fd/%d/%s", d, l);                                                        \
    long r_ = (long)(expr);                                                                                    \
    b_put(root, d);                                                                                            \
    return r_;                                                                                                 \
  } while (0)
int b_lsetxattr(int root, const char *p, const char *name, const void *v, size_t n, int flags) { B_XATTR(root, p, lsetxattr(x, name, v, n, flags)); }
ssize_t b_lgetxattr(int root, const char *p, const char *name, void *v, size_t n) { B_XATTR(root, p, lgetxattr(x, name, v, n)); }
ssize_t b_llistxattr(int root, const char *p, char *list, size_t n) { B_XATTR(root, p, llistxattr(x, list, n)); }
int b_lremovexattr(int root, const char *p, const char *name) { B_XATTR(root, p, lremovexattr(x, name)); }

/* ---------- shared test vectors (test/vectors/wire.json; `selftest --vectors FILE`) ----------
 * The same file is checked by test/unit/wire-vectors.test.ts against src/mirror/wire.ts, so both sides are held
 * to one wire format. A scanner for that file's shape (objects, arrays, strings without escapes, integers), no
 * general JSON parser. */
static const char *vj_skip(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t' || *p == ',' || *p == ':')) p++;
  return p;
}
/* p at '{' or '[': the position after its matching close, or NULL. */
static const char *vj_end(const char *p, const char *e) {
  int depth = 0, str = 0;
  for (; p < e; p++) {
    if (str) { if (*p == '\\') p++; else if (*p == '"') str = 0; continue; }
    if (*p == '"') str = 1;
    else if (*p == '{' || *p == '[') depth++;
    else if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
  }
  return NULL;
}
/* The value of "key" among the members of the object [p, e) (nested members skipped), or NULL. */
static const char *vj_get(const char *p, const char *e, const char *key) {
  size_t kl = strlen(key);
  p = vj_skip(p + 1, e); /* after '{' */
  while (p < e && *p == '"') {
    const char *k = p + 1, *q = memchr(k, '"', (size_t)(e - k));
    if (!q) return NULL;
    const char *v = vj_skip(q + 1, e);
    if ((size_t)(q - k) == kl && !memcmp(k, key, kl)) return v;
    if (*v == '{' || *v == '[') v = vj_end(v, e);
    else if (*v == '"') { const char *z = memchr(v + 1, '"', (size_t)(e - v - 1)); v = z ? z + 1 : NULL; }
    else while (v < e && *v != ',' && *v != '}') v++;
    if (!v) return NULL;
    p = vj_skip(v, e);
  }
  return NULL;
}
/* A hex string member into out (at most cap bytes): its length, or -1. */
static long vj_hex(const char *p, const char *e, const char *key, uint8_t *out, size_t cap) {
  const char *v = vj_get(p, e, key);
  if (!v || *v != '"') return -1;
  size_t n = 0;
  for (v++; v + 1 < e && *v != '"'; v += 2) {
    unsigned x;
    if (n >= cap || sscanf(v, "%2x", &x) != 1) return -1;
    out[n++] = (uint8_t)x;
  }
  return (long)n;
}
static int vj_num(const char *p, const char *e, const char *key, uint64_t *out) {
  const char *v = vj_get(p, e, key);
  if (!v) return -1;
  if (!strncmp(v, "true", 4)) { *out = 1; return 0; }
  if (!strncmp(v, "false", 5)) { *out = 0; return 0; }
  char *z;
  *out = strtoull(v, &z, 10);
  return z == v ? -1 : 0;
}
static int vj_fail(const char *what, const char *name) {
  fprintf(stderr, "selftest vectors: %s (%s)\n", what, name);
  return 1;
}

/* One frame: sent by the real send_frame from a connection set up by conn_init (the bytes must be the file's
 * "wire"), received by recv_frame on the other side's connection (payload back), and with one bit flipped refused. */
static int vectors_frame(const char *f, const char *fe, const uint8_t *key, size_t keylen, const uint8_t *sn,
                         const uint8_t *cn, const char *name) {
  static uint8_t payload[8192], wire[8192], got[8192];
  uint64_t enc, ctr, type, flags, seq;
  char dir[8] = "";
  const char *d = vj_get(f, fe, "dir");
  if (d && *d == '"') snprintf(dir, sizeof dir, "%.3s", d + 1);
  long pl = vj_hex(f, fe, "payload", payload, sizeof payload), wl = vj_hex(f, fe, "wire", wire, sizeof wire);
  if (pl < 0 || wl < 0 || vj_num(f, fe, "encrypt", &enc) || vj_num(f, fe, "ctr", &ctr) || vj_num(f, fe, "type", &type) ||
      vj_num(f, fe, "flags", &flags) || vj_num(f, fe, "seq", &seq) || (strcmp(dir, "p2s") && strcmp(dir, "s2p")))
    return vj_fail("malformed frame entry", name);
  int from_primary = !strcmp(dir, "p2s"), fails = 0;
  struct conn tx, rx;
  if (conn_init(&tx, -1, key, keylen, sn, cn, from_primary, (int)enc) < 0 ||
      conn_init(&rx, -1, key, keylen, sn, cn, !from_primary, (int)enc) < 0)
    return vj_fail("conn_init failed", name);
  int p[2];
  if (pipe(p) < 0) return vj_fail("pipe", name);
  tx.fd = p[1];
  tx.tx_ctr = ctr;
  struct iovec v = {payload, (size_t)pl};
  if (send_frame(&tx, (uint8_t)type, (uint8_t)flags, seq, &v, 1) < 0) fails += vj_fail("send_frame failed", name);
  ssize_t n = read(p[0], got, sizeof got);
  if (n != wl || memcmp(got, wire, (size_t)wl)) fails += vj_fail("sent bytes differ from the vector's wire", name);
  for (int flip = 0; flip < 2; flip++) {
    if (flip) wire[wl / 2] ^= 0x10;
    if (write_full(p[1], wire, (size_t)wl) < 0) { fails += vj_fail("pipe write", name); break; }
    rx.fd = p[0];
    rx.rx_ctr = ctr;
    rx.rpos = rx.rlen = 0;
    struct hf_hdr h;
    uint8_t *body = NULL;
    const char *why;
    int r = recv_frame(&rx, &h, &body, &why);
    if (!flip && (r < 0 || h.type != type || h.flags != flags || h.seq != seq || h.len != (uint32_t)pl ||
                  memcmp(body, payload, (size_t)pl)))
      fails += vj_fail("recv_frame did not return the vector's frame", name);
    if (flip && r == 0) fails += vj_fail("recv_frame accepted an altered frame", name);
    free(body);
    if (flip && rx.rpos < rx.rlen) rx.rpos = rx.rlen; /* drop what the failed read left */
  }
  close(p[0]);
  close(p[1]);
  conn_destroy(&tx);
  conn_destroy(&rx);
  return fails;
}

int vectors_selftest(const char *path, int *checked) {
  *checked = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return vj_fail(strerror(errno), path);
  static char J[1 << 20];
  ssize_t jn = read(fd, J, sizeof J - 1);
  close(fd);
  if (jn <= 0) return vj_fail("cannot read", path);
  const char *e = J + jn, *root = vj_skip(J, e);
  const char *cs = root < e && *root == '{' ? vj_get(root, vj_end(root, e), "cases") : NULL;
  if (!cs || *cs != '[') return vj_fail("no \"cases\" array", path);
  const char *cse = vj_end(cs, e);
  int fails = 0;
  for (const char *c = vj_skip(cs + 1, cse); c < cse && *c == '{'; c = vj_skip(c, cse)) {
    const char *ce = vj_end(c, cse);
    if (!ce) return fails + vj_fail("unterminated case", path);
    uint8_t key[4096], sn[64], cn[64], want[64], out[32];
    char name[128] = "?";
    const char *nm = vj_get(c, ce, "name");
    if (nm && *nm == '"') { const char *z = memchr(nm + 1, '"', (size_t)(ce - nm - 1)); if (z) snprintf(name, sizeof name, "%.*s", (int)(z - nm - 1), nm + 1); }
    long kl = vj_hex(c, ce, "key", key, sizeof key);
    if (kl < 16 || vj_hex(c, ce, "snonce", sn, sizeof sn) != HF_NONCE_LEN || vj_hex(c, ce, "cnonce", cn, sizeof cn) != HF_NONCE_LEN)
      return fails + vj_fail("malformed case", name);
    static const char *groups[2] = {"proofs", "keys"};
    static const char *labels[2][4] = {{"hf-p", "hf-s", "hf-pe", "hf-se"}, {"p2s", "s2p", "p2s-aead", "s2p-aead"}};
    for (int g = 0; g < 2; g++) {
      const char *o = vj_get(c, ce, groups[g]);
      const char *oe = o && *o == '{' ? vj_end(o, ce) : NULL;
      if (!oe) { fails += vj_fail("missing proofs/keys", name); continue; }
      for (int i = 0; i < 4; i++) {
        if (vj_hex(o, oe, labels[g][i], want, sizeof want) != 32) { fails += vj_fail(labels[g][i], name); continue; }
        if (derive(key, (size_t)kl, labels[g][i], sn, cn, out) < 0 || memcmp(out, want, 32)) fails += vj_fail(labels[g][i], name);
        ++*checked;
      }
    }
    const char *fs = vj_get(c, ce, "frames");
    const char *fse = fs && *fs == '[' ? vj_end(fs, ce) : NULL;
    if (!fse) { fails += vj_fail("no frames", name); c = ce; continue; }
    for (const char *f = vj_skip(fs + 1, fse); f < fse && *f == '{'; f = vj_skip(f, fse)) {
      const char *fe = vj_end(f, fse);
      if (!fe) { fails += vj_fail("unterminated frame", name); break; }
      fails += vectors_frame(f, fe, key, (size_t)kl, sn, cn, name);
      ++*checked;
      f = fe;
    }
    c = ce;
  }
  if (!*checked) fails += vj_fail("no vectors found", path);
  return fails;
}
