/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104). The helper needs only libfuse3: the portable C SHA-256
 * below is always there, and when libcrypto.so.3 can be dlopen'ed its SHA-256 is used instead (about 6x faster
 * with SHA-NI; the stream is hashed on both sides, so this bounds sequential write throughput).
 * HF_NO_LIBCRYPTO=1 forces the built-in code. Checked against the FIPS/RFC 4231 vectors by `selftest`. */
#ifndef HF_SHA256_H
#define HF_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
  int ext;         /* 1: the state below is OpenSSL's SHA256_CTX (libcrypto found at run time) */
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t n;
  uint64_t ossl[16]; /* room for OpenSSL's SHA256_CTX (112 bytes); plain data, so contexts copy by value */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
void sha256(const void *data, size_t len, uint8_t out[32]);

typedef struct {
  sha256_ctx inner, outer;
} hmac_ctx;

void hmac_init(hmac_ctx *h, const uint8_t *key, size_t keylen);
void hmac_update(hmac_ctx *h, const void *data, size_t len);
void hmac_final(hmac_ctx *h, uint8_t out[32]);
void hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t len, uint8_t out[32]);
/* Constant-time comparison of two 32-byte MACs: 0 when equal. */
int mac_differs(const uint8_t a[32], const uint8_t b[32]);
/* Runs the known-answer tests (on every available implementation); returns the number of failures. */
int sha256_selftest(void);
/* "libcrypto" when OpenSSL's SHA-256 (SHA-NI/AVX2 accelerated) is in use, else "builtin". */
const char *sha256_impl(void);
#endif
