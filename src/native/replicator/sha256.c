#include "sha256.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int (*o_init)(void *);
static int (*o_update)(void *, const void *, size_t);
static int (*o_final)(unsigned char *, void *);
static pthread_once_t o_once = PTHREAD_ONCE_INIT;
static int o_disabled;
static void o_load(void) {
  const char *off = getenv("HF_NO_LIBCRYPTO");
  if (off && *off && strcmp(off, "0")) return;
  void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (!h) return;
  o_init = (int (*)(void *))dlsym(h, "SHA256_Init");
  o_update = (int (*)(void *, const void *, size_t))dlsym(h, "SHA256_Update");
  o_final = (int (*)(unsigned char *, void *))dlsym(h, "SHA256_Final");
  if (!o_init || !o_update || !o_final) o_init = NULL;
}
static int use_ext(void) {
  pthread_once(&o_once, o_load);
  return o_init != NULL && !o_disabled;
}
const char *sha256_impl(void) { return use_ext() ? "libcrypto" : "builtin"; }

static const uint32_t K[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(sha256_ctx *c, const uint8_t *p) {
  uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
  for (int i = 0; i < 64; i++) {
    t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
    h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
  }
  c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

void sha256_init(sha256_ctx *c) {
  c->ext = use_ext();
  if (c->ext) { o_init(c->ossl); return; }
  static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(c->h, H0, sizeof H0);
  c->len = 0;
  c->n = 0;
}

void sha256_update(sha256_ctx *c, const void *data, size_t len) {
  if (c->ext) { o_update(c->ossl, data, len); return; }
  const uint8_t *p = data;
  c->len += len;
  if (c->n) {
    size_t take = 64 - c->n < len ? 64 - c->n : len;
    memcpy(c->buf + c->n, p, take);
    c->n += take; p += take; len -= take;
    if (c->n < 64) return;
    block(c, c->buf);
    c->n = 0;
  }
  while (len >= 64) { block(c, p); p += 64; len -= 64; }
  if (len) { memcpy(c->buf, p, len); c->n = len; }
}

void sha256_final(sha256_ctx *c, uint8_t out[32]) {
  if (c->ext) { o_final(out, c->ossl); return; }
  uint64_t bits = c->len * 8;
  uint8_t pad = 0x80, zero = 0, lenb[8];
  sha256_update(c, &pad, 1);
  while (c->n != 56) sha256_update(c, &zero, 1);
  for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_update(c, lenb, 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(c->h[i] >> 24); out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(c->h[i] >> 8); out[4 * i + 3] = (uint8_t)c->h[i];
  }
}

void sha256(const void *data, size_t len, uint8_t out[32]) {
  sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, data, len);
  sha256_final(&c, out);
}

void hmac_init(hmac_ctx *h, const uint8_t *key, size_t keylen) {
  uint8_t k[64] = {0}, pad[64];
  if (keylen > 64) sha256(key, keylen, k); else memcpy(k, key, keylen);
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  sha256_init(&h->inner); sha256_update(&h->inner, pad, 64);
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  sha256_init(&h->outer); sha256_update(&h->outer, pad, 64);
}
void hmac_update(hmac_ctx *h, const void *data, size_t len) { sha256_update(&h->inner, data, len); }
void hmac_final(hmac_ctx *h, uint8_t out[32]) {
  uint8_t ih[32];
  sha256_final(&h->inner, ih);
  sha256_update(&h->outer, ih, 32);
  sha256_final(&h->outer, out);
}
void hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t len, uint8_t out[32]) {
  hmac_ctx h;
  hmac_init(&h, key, keylen);
  hmac_update(&h, data, len);
  hmac_final(&h, out);
}
int mac_differs(const uint8_t a[32], const uint8_t b[32]) {
  uint8_t d = 0;
  for (int i = 0; i < 32; i++) d |= a[i] ^ b[i];
  return d != 0;
}

static int check(const char *name, const uint8_t got[32], const char *hex) {
  char s[65];
  for (int i = 0; i < 32; i++) sprintf(s + 2 * i, "%02x", got[i]);
  if (strcmp(s, hex) == 0) return 0;
  fprintf(stderr, "selftest %s: got %s want %s\n", name, s, hex);
  return 1;
}

static int selftest_once(void);
int sha256_selftest(void) {
  int fails = 0;
  if (use_ext()) {
    fails += selftest_once(); /* libcrypto */
    o_disabled = 1;
  }
  fails += selftest_once(); /* built-in */
  o_disabled = 0;
  return fails;
}

static int selftest_once(void) {
  uint8_t out[32];
  int fails = 0;
  sha256("abc", 3, out);
  fails += check("sha256(abc)", out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  sha256("", 0, out);
  fails += check("sha256()", out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  sha256(m2, strlen(m2), out);
  fails += check("sha256(448 bits)", out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  static uint8_t mil[1000000];
  memset(mil, 'a', sizeof mil);
  sha256(mil, sizeof mil, out);
  fails += check("sha256(a x 1e6)", out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  /* RFC 4231 test cases 1, 2 and 6 (key longer than the block). */
  uint8_t k1[20];
  memset(k1, 0x0b, 20);
  hmac_sha256(k1, 20, "Hi There", 8, out);
  fails += check("hmac tc1", out, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  hmac_sha256((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28, out);
  fails += check("hmac tc2", out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  uint8_t k6[131];
  memset(k6, 0xaa, sizeof k6);
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  hmac_sha256(k6, sizeof k6, m6, strlen(m6), out);
  fails += check("hmac tc6", out, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  return fails;
}
