#include "common.h"
#include <dlfcn.h>
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

/* ---------- AES-256-GCM through libcrypto (dlopen'ed: the helper links only libfuse3) ---------- */
#define EVP_CTRL_GCM_GET_TAG 0x10
#define EVP_CTRL_GCM_SET_TAG 0x11
static struct {
  void *(*ctx_new)(void);
  void (*ctx_free)(void *);
  const void *(*gcm)(void);
  int (*einit)(void *, const void *, void *, const uint8_t *, const uint8_t *);
  int (*eupd)(void *, uint8_t *, int *, const uint8_t *, int);
  int (*efin)(void *, uint8_t *, int *);
  int (*dinit)(void *, const void *, void *, const uint8_t *, const uint8_t *);
  int (*dupd)(void *, uint8_t *, int *, const uint8_t *, int);
  int (*dfin)(void *, uint8_t *, int *);
  int (*ctrl)(void *, int, int, void *);
  int ok;
} E;
static pthread_once_t e_once = PTHREAD_ONCE_INIT;
static void e_load(void) {
  const char *off = getenv("HF_NO_LIBCRYPTO"); /* tests: behave as on a machine without libcrypto */
  if (off && *off && strcmp(off, "0")) return;
  void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (!h) return;
#define SYM(f, n) *(void **)(&E.f) = dlsym(h, n)
  SYM(ctx_new, "EVP_CIPHER_CTX_new"); SYM(ctx_free, "EVP_CIPHER_CTX_free"); SYM(gcm, "EVP_aes_256_gcm");
  SYM(einit, "EVP_EncryptInit_ex"); SYM(eupd, "EVP_EncryptUpdate"); SYM(efin, "EVP_EncryptFinal_ex");
  SYM(dinit, "EVP_DecryptInit_ex"); SYM(dupd, "EVP_DecryptUpdate"); SYM(dfin, "EVP_DecryptFinal_ex");
  SYM(ctrl, "EVP_CIPHER_CTX_ctrl");
#undef SYM
  E.ok = E.ctx_new && E.ctx_free && E.gcm && E.einit && E.eupd && E.efin && E.dinit && E.dupd && E.dfin && E.ctrl;
}
const char *aead_unavailable(void) {
  pthread_once(&e_once, e_load);
  return E.ok ? NULL : "--encrypt needs libcrypto.so.3 (OpenSSL 3; Debian package libssl3), which was not found";
}
static void *aead_ctx(const uint8_t key[32], int enc) {
  void *x = E.ctx_new();
  if (!x) return NULL;
  if ((enc ? E.einit : E.dinit)(x, E.gcm(), NULL, key, NULL) != 1) { E.ctx_free(x); return NULL; }
  return x;
}
static void aead_iv(uint64_t ctr, uint8_t iv[12]) {
  memset(iv, 0, 4);
  memcpy(iv + 4, &ctr, 8); /* little-endian (x86-64/arm64), as every integer on the wire */
}
/* Seals the concatenation of iov into out (same length) and writes the tag. 0 or -1. */
static int aead_seal(void *x, uint64_t ctr, const void *aad, size_t aadlen, const struct iovec *iov, int iovcnt,
                     uint8_t *out, uint8_t tag[HF_TAG_LEN]) {
  uint8_t iv[12];
  int n;
  aead_iv(ctr, iv);
  if (E.einit(x, NULL, NULL, NULL, iv) != 1 || E.eupd(x, NULL, &n, aad, (int)aadlen) != 1) return -1;
  for (int i = 0; i < iovcnt; i++) {
    if (!iov[i].iov_len) continue;
    if (E.eupd(x, out, &n, iov[i].iov_base, (int)iov[i].iov_len) != 1) return -1;
    out += n;
  }
  if (E.efin(x, out, &n) != 1) return -1;
  return E.ctrl(x, EVP_CTRL_GCM_GET_TAG, HF_TAG_LEN, tag) == 1 ? 0 : -1;
}
/* Opens buf (len bytes, in place) against tag. 0, or -1 when the tag does not verify. */
static int aead_open(void *x, uint64_t ctr, const void *aad, size_t aadlen, uint8_t *buf, size_t len,
                     const uint8_t tag[HF_TAG_LEN]) {
  uint8_t iv[12], t[HF_TAG_LEN];
  int n;
  aead_iv(ctr, iv);
  memcpy(t, tag, HF_TAG_LEN);
  if (E.dinit(x, NULL, NULL, NULL, iv) != 1 || E.dupd(x, NULL, &n, aad, (int)aadlen) != 1) return -1;
  if (len && E.dupd(x, buf, &n, buf, (int)len) != 1) return -1;
  if (E.ctrl(x, EVP_CTRL_GCM_SET_TAG, HF_TAG_LEN, t) != 1) return -1;
  return E.dfin(x, buf + len, &n) == 1 ? 0 : -1;
}
int aead_selftest(void) {
  if (aead_unavailable()) return -1;
  /* NIST SP 800-38D / McGrew-Viega GCM test case 14: AES-256, zero key, zero IV, one zero block */
  static const uint8_t ct[16] = {0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e, 0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3, 0x9d, 0x18};
  static const uint8_t tg[16] = {0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0, 0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a, 0xb9, 0x19};
  uint8_t key[32] = {0}, pt[16] = {0}, out[16], tag[16];
  int fails = 0;
  void *e = aead_ctx(key, 1), *d = aead_ctx(key, 0);
  struct iovec v = {pt, 16};
  if (!e || !d || aead_seal(e, 0, "", 0, &v, 1, out, tag) < 0) fails++;
  else {
    fails += memcmp(out, ct, 16) != 0;
    fails += memcmp(tag, tg, 16) != 0;
    fails += aead_open(d, 0, "", 0, out, 16, tag) != 0 || memcmp(out, pt, 16) != 0;
    out[3] ^= 1;
    fails += aead_open(d, 0, "", 0, out, 16, tag) == 0; /* altered ciphertext must fail */
  }
  if (e) E.ctx_free(e);
  if (d) E.ctx_free(d);
  return fails;
}

/* ---------- handshake ---------- */
static void derive(const uint8_t *key, size_t keylen, const char *label, const uint8_t *sn, const uint8_t *cn,
                   uint8_t out[32]) {
  hmac_ctx h;
  hmac_init(&h, key, keylen);
  hmac_update(&h, label, strlen(label));
  hmac_update(&h, sn, HF_NONCE_LEN);
  hmac_update(&h, cn, HF_NONCE_LEN);
  hmac_final(&h, out);
}

static int conn_init(struct conn *c, int fd, const uint8_t *key, size_t keylen, const uint8_t *sn,
                     const uint8_t *cn, int primary, int encrypt) {
  uint8_t kps[32], ksp[32];
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->aead = encrypt;
  if (encrypt) {
    derive(key, keylen, "p2s-aead", sn, cn, kps);
    derive(key, keylen, "s2p-aead", sn, cn, ksp);
    c->etx = aead_ctx(primary ? kps : ksp, 1);
    c->erx = aead_ctx(primary ? ksp : kps, 0);
    if (!c->etx || !c->erx) { conn_destroy(c); return -1; }
  } else {
    derive(key, keylen, "p2s", sn, cn, kps);
    derive(key, keylen, "s2p", sn, cn, ksp);
    hmac_init(&c->tx, primary ? kps : ksp, 32);
    hmac_init(&c->rx, primary ? ksp : kps, 32);
  }
  c->tx_ctr = c->rx_ctr = 0;
  pthread_mutex_init(&c->tx_lock, NULL);
  return 0;
}

void conn_destroy(struct conn *c) {
  if (c->etx) E.ctx_free(c->etx);
  if (c->erx) E.ctx_free(c->erx);
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
  derive(key, keylen, encrypt ? "hf-pe" : "hf-p", sn, out, out + HF_NONCE_LEN);
  if (write_full(fd, out, sizeof out) < 0) { *why = "send failed"; return -1; }
  if ((magic == HF_MAGIC_ENC) != !!encrypt) {
    *why = encrypt ? "encryption mismatch: this primary uses --encrypt, the secondary does not"
                   : "encryption mismatch: the secondary uses --encrypt, this primary does not";
    return -1;
  }
  if (read_full(fd, mac, 32) < 0) { *why = "secondary refused the key (connection closed)"; return -1; }
  derive(key, keylen, encrypt ? "hf-se" : "hf-s", sn, out, want);
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
  derive(key, keylen, encrypt ? "hf-pe" : "hf-p", hello + 4, in, want);
  if (mac_differs(in + HF_NONCE_LEN, want)) {
    derive(key, keylen, encrypt ? "hf-p" : "hf-pe", hello + 4, in, want);
    if (mac_differs(in + HF_NONCE_LEN, want)) { *why = "peer failed authentication"; return HS_REFUSED; }
    *why = encrypt ? "encryption mismatch: this secondary uses --encrypt, the primary does not"
                   : "encryption mismatch: the primary uses --encrypt, this secondary does not";
    return -1;
  }
  derive(key, keylen, encrypt ? "hf-se" : "hf-s", hello + 4, in, want);
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
  hmac_ctx m = c->tx;
  hmac_update(&m, &c->tx_ctr, 8);
  hmac_update(&m, &h, sizeof h);
  for (int i = 0; i < iovcnt; i++) hmac_update(&m, iov[i].iov_base, iov[i].iov_len);
  uint8_t mac[32];
  hmac_final(&m, mac);
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
    hmac_ctx m = c->rx;
    hmac_update(&m, &c->rx_ctr, 8);
    hmac_update(&m, h, sizeof *h);
    hmac_update(&m, p, h->len);
    uint8_t mac[32];
    hmac_final(&m, mac);
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
