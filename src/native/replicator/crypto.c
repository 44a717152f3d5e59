#include "crypto.h"
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Each algorithm is fetched once (an implicit fetch per call costs a lookup and a lock). */
static EVP_MD *md_sha256;
static EVP_MAC *mac_hmac;
static EVP_CIPHER *ciph_gcm;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static void fetch(void) {
  md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  mac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  ciph_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}
static int fetched(void) {
  pthread_once(&fetch_once, fetch);
  return md_sha256 && mac_hmac && ciph_gcm;
}

const char *crypto_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

int sha256(const void *data, size_t len, uint8_t out[32]) {
  unsigned n = 0;
  return fetched() && EVP_Digest(data, len, out, &n, md_sha256, NULL) == 1 && n == 32 ? 0 : -1;
}

EVP_MAC_CTX *mac_new(const uint8_t *key, size_t keylen) {
  if (!fetched()) return NULL;
  EVP_MAC_CTX *m = EVP_MAC_CTX_new(mac_hmac);
  if (!m) return NULL;
  OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0), OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(m, key, keylen, p) != 1) { EVP_MAC_CTX_free(m); return NULL; }
  return m;
}
void mac_free(EVP_MAC_CTX *m) { EVP_MAC_CTX_free(m); }

int mac_compute(EVP_MAC_CTX *m, const struct iovec *iov, int iovcnt, uint8_t out[32]) {
  /* a NULL key re-initialises with the key set by mac_new (no re-derivation of the HMAC pads) */
  if (EVP_MAC_init(m, NULL, 0, NULL) != 1) return -1;
  for (int i = 0; i < iovcnt; i++)
    if (iov[i].iov_len && EVP_MAC_update(m, iov[i].iov_base, iov[i].iov_len) != 1) return -1;
  size_t n = 0;
  return EVP_MAC_final(m, out, &n, 32) == 1 && n == 32 ? 0 : -1;
}

int hmac_sha256v(const uint8_t *key, size_t keylen, const struct iovec *iov, int iovcnt, uint8_t out[32]) {
  EVP_MAC_CTX *m = mac_new(key, keylen);
  if (!m) return -1;
  int r = mac_compute(m, iov, iovcnt, out);
  EVP_MAC_CTX_free(m);
  return r;
}

int mac_differs(const uint8_t a[32], const uint8_t b[32]) { return CRYPTO_memcmp(a, b, 32) != 0; }

EVP_CIPHER_CTX *aead_new(const uint8_t key[32], int enc) {
  if (!fetched()) return NULL;
  EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
  if (!x) return NULL;
  if ((enc ? EVP_EncryptInit_ex2 : EVP_DecryptInit_ex2)(x, ciph_gcm, key, NULL, NULL) != 1) {
    EVP_CIPHER_CTX_free(x);
    return NULL;
  }
  return x;
}
void aead_free(EVP_CIPHER_CTX *x) { EVP_CIPHER_CTX_free(x); }

static void aead_iv(uint64_t ctr, uint8_t iv[12]) {
  memset(iv, 0, 4);
  memcpy(iv + 4, &ctr, 8); /* little-endian (x86-64/arm64), as every integer on the wire */
}

int aead_seal(EVP_CIPHER_CTX *x, uint64_t ctr, const void *aad, size_t aadlen, const struct iovec *iov, int iovcnt,
              uint8_t *out, uint8_t tag[16]) {
  uint8_t iv[12];
  int n;
  aead_iv(ctr, iv);
  if (EVP_EncryptInit_ex2(x, NULL, NULL, iv, NULL) != 1 || EVP_EncryptUpdate(x, NULL, &n, aad, (int)aadlen) != 1)
    return -1;
  for (int i = 0; i < iovcnt; i++) {
    if (!iov[i].iov_len) continue;
    if (EVP_EncryptUpdate(x, out, &n, iov[i].iov_base, (int)iov[i].iov_len) != 1) return -1;
    out += n;
  }
  if (EVP_EncryptFinal_ex(x, out, &n) != 1) return -1;
  return EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1 ? 0 : -1;
}

int aead_open(EVP_CIPHER_CTX *x, uint64_t ctr, const void *aad, size_t aadlen, uint8_t *buf, size_t len,
              const uint8_t tag[16]) {
  uint8_t iv[12], t[16];
  int n;
  aead_iv(ctr, iv);
  memcpy(t, tag, 16);
  if (EVP_DecryptInit_ex2(x, NULL, NULL, iv, NULL) != 1 || EVP_DecryptUpdate(x, NULL, &n, aad, (int)aadlen) != 1)
    return -1;
  if (len && EVP_DecryptUpdate(x, buf, &n, buf, (int)len) != 1) return -1;
  if (EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, t) != 1) return -1;
  return EVP_DecryptFinal_ex(x, buf + len, &n) == 1 ? 0 : -1;
}

static int check(const char *name, int r, const uint8_t *got, const char *hex, size_t n) {
  char s[129];
  for (size_t i = 0; i < n; i++) sprintf(s + 2 * i, "%02x", got[i]);
  if (r == 0 && strcmp(s, hex) == 0) return 0;
  fprintf(stderr, "selftest %s: %s, got %s want %s\n", name, r ? "failed" : "differs", s, hex);
  return 1;
}

int crypto_selftest(void) {
  uint8_t out[32];
  int fails = 0;
  fails += check("sha256(abc)", sha256("abc", 3, out), out,
                 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 32);
  /* RFC 4231 test cases 1, 2 (split over two parts) and 6 (key longer than the block) */
  uint8_t k1[20], k6[131];
  memset(k1, 0x0b, sizeof k1);
  memset(k6, 0xaa, sizeof k6);
  struct iovec v1 = {"Hi There", 8};
  fails += check("hmac tc1", hmac_sha256v(k1, sizeof k1, &v1, 1, out), out,
                 "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", 32);
  struct iovec v2[2] = {{"what do ya want ", 16}, {"for nothing?", 12}};
  fails += check("hmac tc2", hmac_sha256v((const uint8_t *)"Jefe", 4, v2, 2, out), out,
                 "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", 32);
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  struct iovec v6 = {(void *)m6, strlen(m6)};
  fails += check("hmac tc6", hmac_sha256v(k6, sizeof k6, &v6, 1, out), out,
                 "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", 32);
  /* a reused keyed context gives the same MAC each time */
  EVP_MAC_CTX *m = mac_new(k1, sizeof k1);
  for (int i = 0; i < 2; i++)
    fails += check("hmac tc1 (reused context)", m ? mac_compute(m, &v1, 1, out) : -1, out,
                   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", 32);
  mac_free(m);
  /* McGrew-Viega GCM test case 14: AES-256, zero key, zero IV, one zero block */
  uint8_t key[32] = {0}, pt[16] = {0}, ct[16], tag[16];
  EVP_CIPHER_CTX *e = aead_new(key, 1), *d = aead_new(key, 0);
  struct iovec v = {pt, 16};
  int r = e && d ? aead_seal(e, 0, "", 0, &v, 1, ct, tag) : -1;
  fails += check("aes-256-gcm tc14 ciphertext", r, ct, "cea7403d4d606b6e074ec5d3baf39d18", 16);
  fails += check("aes-256-gcm tc14 tag", r, tag, "d0d1c8a799996bf0265b98b5d48ab919", 16);
  if (!r) {
    fails += aead_open(d, 0, "", 0, ct, 16, tag) != 0 || memcmp(ct, pt, 16) != 0;
    ct[3] ^= 1;
    fails += aead_open(d, 0, "", 0, ct, 16, tag) == 0; /* altered ciphertext must fail */
  }
  aead_free(e);
  aead_free(d);
  return fails;
}
