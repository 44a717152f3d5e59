/* The helper's cryptography, all from OpenSSL 3's libcrypto (linked; headers from libssl-dev, run time
 * libcrypto.so.3 from libssl3): SHA-256 (extent-log records, CHECKSUM blocks), HMAC-SHA256 (handshake proofs,
 * session keys, plain-mode frame MACs) and AES-256-GCM (encrypted frames). Nothing here is implemented by hand;
 * these are thin wrappers that fetch each algorithm once and report every failure. */
#ifndef HF_CRYPTO_H
#define HF_CRYPTO_H
#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* SHA-256 of data. 0, or -1 (libcrypto failed, e.g. out of memory). */
int sha256(const void *data, size_t len, uint8_t out[32]);

/* HMAC-SHA256 of the concatenation of iov under key. 0 or -1. */
int hmac_sha256v(const uint8_t *key, size_t keylen, const struct iovec *iov, int iovcnt, uint8_t out[32]);
/* A keyed HMAC-SHA256 context for many messages under one key (a session's frames), or NULL. */
EVP_MAC_CTX *mac_new(const uint8_t *key, size_t keylen);
/* MAC of the concatenation of iov with the context's key (the context is reset first). 0 or -1. */
int mac_compute(EVP_MAC_CTX *m, const struct iovec *iov, int iovcnt, uint8_t out[32]);
void mac_free(EVP_MAC_CTX *m);
/* Constant-time comparison of two 32-byte MACs: 0 when equal. */
int mac_differs(const uint8_t a[32], const uint8_t b[32]);

/* AES-256-GCM with a fixed key (one context per direction), or NULL. enc: 1 seal, 0 open. */
EVP_CIPHER_CTX *aead_new(const uint8_t key[32], int enc);
void aead_free(EVP_CIPHER_CTX *x);
/* Seals the concatenation of iov into out (same length) with iv = 4 zero bytes || ctr (little-endian) and aad;
 * writes the 16-byte tag. 0 or -1. */
int aead_seal(EVP_CIPHER_CTX *x, uint64_t ctr, const void *aad, size_t aadlen, const struct iovec *iov, int iovcnt,
              uint8_t *out, uint8_t tag[16]);
/* Opens buf (len bytes, in place) against tag. 0, or -1 when the tag does not verify. */
int aead_open(EVP_CIPHER_CTX *x, uint64_t ctr, const void *aad, size_t aadlen, uint8_t *buf, size_t len,
              const uint8_t tag[16]);

/* Known-answer tests of the wrappers (FIPS 180-2 SHA-256, RFC 4231 HMAC, GCM test case 14): failures, or 0. */
int crypto_selftest(void);
/* The libcrypto in use, e.g. "OpenSSL 3.0.11 19 Sep 2023". */
const char *crypto_version(void);
#endif
