#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
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

static void derive(const uint8_t *key, size_t keylen, const char *label, const uint8_t *sn, const uint8_t *cn,
                   uint8_t out[32]) {
  hmac_ctx h;
  hmac_init(&h, key, keylen);
  hmac_update(&h, label, strlen(label));
  hmac_update(&h, sn, HF_NONCE_LEN);
  hmac_update(&h, cn, HF_NONCE_LEN);
  hmac_final(&h, out);
}

static void conn_init(struct conn *c, int fd, const uint8_t *key, size_t keylen, const uint8_t *sn, const uint8_t *cn,
                      int primary) {
  uint8_t kps[32], ksp[32];
  derive(key, keylen, "p2s", sn, cn, kps);
  derive(key, keylen, "s2p", sn, cn, ksp);
  c->fd = fd;
  hmac_init(&c->tx, primary ? kps : ksp, 32);
  hmac_init(&c->rx, primary ? ksp : kps, 32);
  c->tx_ctr = c->rx_ctr = 0;
  pthread_mutex_init(&c->tx_lock, NULL);
}

int handshake_primary(int fd, const uint8_t *key, size_t keylen, struct conn *c, const char **why) {
  uint8_t hello[4 + HF_NONCE_LEN], out[HF_NONCE_LEN + 32], mac[32], want[32];
  if (read_full(fd, hello, sizeof hello) < 0) { *why = "no hello from secondary"; return -1; }
  uint32_t magic;
  memcpy(&magic, hello, 4);
  if (magic != HF_MAGIC) { *why = "peer is not a holdfast secondary"; return -1; }
  const uint8_t *sn = hello + 4;
  if (getrandom(out, HF_NONCE_LEN, 0) != HF_NONCE_LEN) { *why = "getrandom failed"; return -1; }
  derive(key, keylen, "hf-p", sn, out, out + HF_NONCE_LEN);
  if (write_full(fd, out, sizeof out) < 0) { *why = "send failed"; return -1; }
  if (read_full(fd, mac, 32) < 0) { *why = "secondary refused the key (connection closed)"; return -1; }
  derive(key, keylen, "hf-s", sn, out, want);
  if (mac_differs(mac, want)) { *why = "secondary failed authentication"; return -1; }
  conn_init(c, fd, key, keylen, sn, out, 1);
  return 0;
}

int handshake_secondary(int fd, const uint8_t *key, size_t keylen, struct conn *c, const char **why) {
  uint8_t hello[4 + HF_NONCE_LEN], in[HF_NONCE_LEN + 32], want[32];
  uint32_t magic = HF_MAGIC;
  memcpy(hello, &magic, 4);
  if (getrandom(hello + 4, HF_NONCE_LEN, 0) != HF_NONCE_LEN) { *why = "getrandom failed"; return -1; }
  if (write_full(fd, hello, sizeof hello) < 0) { *why = "send failed"; return -1; }
  if (read_full(fd, in, sizeof in) < 0) { *why = "no answer from peer"; return -1; }
  derive(key, keylen, "hf-p", hello + 4, in, want);
  if (mac_differs(in + HF_NONCE_LEN, want)) { *why = "peer failed authentication"; return -1; }
  derive(key, keylen, "hf-s", hello + 4, in, want);
  if (write_full(fd, want, 32) < 0) { *why = "send failed"; return -1; }
  conn_init(c, fd, key, keylen, hello + 4, in, 0);
  return 0;
}

int send_frame(struct conn *c, uint8_t type, uint8_t flags, uint64_t seq, const struct iovec *iov, int iovcnt) {
  struct hf_hdr h = {.magic = HF_MAGIC, .type = type, .flags = flags, .seq = seq};
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++) len += iov[i].iov_len;
  h.len = (uint32_t)len;
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
  /* writev until everything is out */
  int k = 0;
  while (k < n) {
    ssize_t w = writev(c->fd, v + k, n - k);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    while (k < n && (size_t)w >= v[k].iov_len) { w -= (ssize_t)v[k].iov_len; k++; }
    if (k < n) { v[k].iov_base = (uint8_t *)v[k].iov_base + w; v[k].iov_len -= (size_t)w; }
  }
  return 0;
}

int recv_frame(struct conn *c, struct hf_hdr *h, uint8_t **payload, const char **why) {
  *payload = NULL;
  if (read_full(c->fd, h, sizeof *h) < 0) { *why = "connection closed"; return -1; }
  /* acks may carry a tree listing or block checksums: allow them more room than operations */
  uint32_t max = h->type == HF_ACK ? (512u << 20) : HF_MAX_PAYLOAD + 4096;
  if (h->magic != HF_MAGIC || h->len > max) { *why = "malformed frame"; return -1; }
  uint8_t *p = malloc(h->len + 32 + 1);
  if (!p) { *why = "out of memory"; return -1; }
  if (read_full(c->fd, p, h->len + 32) < 0) { free(p); *why = "connection closed mid-frame"; return -1; }
  hmac_ctx m = c->rx;
  hmac_update(&m, &c->rx_ctr, 8);
  hmac_update(&m, h, sizeof *h);
  hmac_update(&m, p, h->len);
  uint8_t mac[32];
  hmac_final(&m, mac);
  if (mac_differs(mac, p + h->len)) { free(p); *why = "frame failed authentication"; return -1; }
  c->rx_ctr++;
  p[h->len] = 0;
  *payload = p;
  return 0;
}

static pthread_mutex_t emit_lock = PTHREAD_MUTEX_INITIALIZER;
void emit(const char *fmt, ...) {
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
