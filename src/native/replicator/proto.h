/*
 * holdfast replication stream: wire format shared by the primary and the secondary helper.
 *
 * One TCP connection per replicated directory. The secondary listens; the primary connects.
 *
 * Handshake (all fixed-size, before any framed message):
 *   S -> P  "HFR1" snonce[32]
 *   P -> S  cnonce[32] HMAC(K, "hf-p" snonce cnonce)
 *   S -> P  HMAC(K, "hf-s" snonce cnonce)
 * K is the shared key (the key file's bytes). Both sides prove they hold K; a peer that fails is dropped.
 * Session keys: kps = HMAC(K, "p2s" snonce cnonce) for P->S frames, ksp = HMAC(K, "s2p" snonce cnonce).
 *
 * Frame: struct hf_hdr, then hdr.len payload bytes, then HMAC(session key, ctr64 || hdr || payload),
 * where ctr64 counts frames in that direction from 0. A replayed, reordered, truncated or forged frame fails
 * the MAC and the connection is closed. This plain mode is authenticated, not encrypted.
 *
 * Encrypted mode (--encrypt on both sides). The secondary's hello magic is "HFE1" instead of "HFR1", and the
 * handshake labels are "hf-pe"/"hf-se" instead of "hf-p"/"hf-s", so a side whose setting differs is told so
 * (either side checks the other label after a failure) and a tampered hello fails the proofs.
 * Session keys: eps = HMAC(K, "p2s-aead" snonce cnonce), esp = HMAC(K, "s2p-aead" snonce cnonce).
 * Frame: struct hf_hdr in clear (its len = payload length), then AES-256-GCM(key of the direction,
 * iv = 4 zero bytes || ctr64 little-endian, aad = hdr, payload) = hdr.len bytes of ciphertext, then the 16-byte
 * GCM tag. The counter is the nonce: never reused under a key (keys are fresh per connection: both nonces),
 * and a replayed, reordered, dropped or altered frame fails the tag.
 *
 * P -> S frames carry an operation (hf_op) with a sequence number; the secondary applies them strictly in
 * sequence order and answers each with an HF_ACK frame (hdr.seq = the acked sequence number, payload =
 * int32 status (0 or a positive errno) then optional reply data). Acks may arrive out of order (fsyncs run on a
 * pool), every other op is acked in order once applied to the secondary's page cache.
 */
#ifndef HF_PROTO_H
#define HF_PROTO_H
#include <stdint.h>

#define HF_MAGIC 0x31524648u /* "HFR1" little-endian: frame magic; secondary hello of the plain mode */
#define HF_MAGIC_ENC 0x31454648u /* "HFE1": secondary hello of the encrypted mode */
#define HF_TAG_LEN 16
#define HF_MAC_LEN 32
#define HF_NONCE_LEN 32
#define HF_MAX_PAYLOAD (8u << 20)

enum hf_op {
  HF_ACK = 1,
  HF_WRITE = 2,       /* path, off, data; mtime set after the write */
  HF_CREATE = 3,      /* path, mode, uid, gid: regular file, O_CREAT (no O_EXCL; replays are idempotent) */
  HF_MKNOD = 4,       /* path, mode, uid, gid, rdev(off) */
  HF_MKDIR = 5,       /* path, mode, uid, gid */
  HF_UNLINK = 6,      /* path */
  HF_RMDIR = 7,       /* path */
  HF_SYMLINK = 8,     /* path (link), path2 (target), uid, gid */
  HF_LINK = 9,        /* path (existing), path2 (new name) */
  HF_RENAME = 10,     /* path (from), path2 (to), flags */
  HF_CHMOD = 11,      /* path, mode */
  HF_CHOWN = 12,      /* path, uid, gid (uint32 -1 = unchanged) */
  HF_TRUNCATE = 13,   /* path, off = new size; mtime */
  HF_UTIMENS = 14,    /* path, atime, mtime (nsec may be UTIME_NOW/UTIME_OMIT) */
  HF_SETXATTR = 15,   /* path, path2 (name), data (value), flags */
  HF_REMOVEXATTR = 16,/* path, path2 (name) */
  HF_FSYNC = 17,      /* path, flags (1 = datasync); acked after the secondary's fsync completes */
  HF_FALLOCATE = 18,  /* path, flags (mode), off, len */
  HF_BARRIER = 19,    /* nothing: acked once every earlier op is applied */
  HF_RESYNC_BEGIN = 20, /* secondary marks itself inconsistent (state file, fsync'd) */
  HF_RESYNC_DONE = 21,  /* secondary syncs its tree, marks itself consistent */
  HF_LIST = 22,       /* reply data: listing of the secondary's tree (hf_list_entry records) */
  HF_CHECKSUM = 23,   /* path, len = block size; reply data: size(u64) then 32-byte SHA-256 per block */
  HF_RESET = 24,      /* secondary empties its backing directory (full sync) */
  HF_FSYNCDIR = 25,   /* path */
};

/* Frame header. Little-endian (the helper is built for x86-64/arm64 Linux). */
struct hf_hdr {
  uint32_t magic;
  uint8_t type;
  uint8_t flags;    /* HF_F_* */
  uint16_t reserved;
  uint32_t len;     /* payload length */
  uint32_t reserved2;
  uint64_t seq;
} __attribute__((packed));

/* hf_hdr.flags */
#define HF_F_RESYNC 1 /* sent by a resync pass: ENOENT/EEXIST on replayed namespace ops are not errors */

/* Payload of every operation frame: fixed arguments, then path, path2, data. */
struct hf_args {
  uint64_t off;
  uint64_t len;
  int64_t atime_s, atime_ns;
  int64_t mtime_s, mtime_ns;
  uint32_t mode, uid, gid, flags;
  uint32_t path_len, path2_len, data_len;
  uint32_t reserved;
} __attribute__((packed));

/* HF_LIST reply record: hf_list_entry then the path (no NUL), then for symlinks the target. */
struct hf_list_entry {
  uint32_t mode, uid, gid, path_len, target_len;
  uint64_t size;
  int64_t mtime_s, mtime_ns;
} __attribute__((packed));

#endif
