/* Reference generator for test/vectors/jhash.json: the kernel's jhash() (include/linux/jhash.h), copied
 * as plain C, run on x86-64. Build and run: cc -O2 -o /tmp/jhash-ref test/vectors/jhash-ref.c && /tmp/jhash-ref */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef uint32_t u32;
typedef uint8_t u8;
static inline u32 rol32(u32 w, unsigned s) { return (w << s) | (w >> ((-s) & 31)); }
#define __jhash_mix(a, b, c) { \
  a -= c; a ^= rol32(c, 4); c += b; b -= a; b ^= rol32(a, 6); a += c; \
  c -= b; c ^= rol32(b, 8); b += a; a -= c; a ^= rol32(c, 16); c += b; \
  b -= a; b ^= rol32(a, 19); a += c; c -= b; c ^= rol32(b, 4); b += a; }
#define __jhash_final(a, b, c) { \
  c ^= b; c -= rol32(b, 14); a ^= c; a -= rol32(c, 11); b ^= a; b -= rol32(a, 25); \
  c ^= b; c -= rol32(b, 16); a ^= c; a -= rol32(c, 4); b ^= a; b -= rol32(a, 14); \
  c ^= b; c -= rol32(b, 24); }
static u32 get32(const u8 *p) { u32 v; memcpy(&v, p, 4); return v; }
static u32 jhash(const void *key, u32 length, u32 initval) {
  u32 a, b, c; const u8 *k = key;
  a = b = c = 0xdeadbeef + length + initval;
  while (length > 12) { a += get32(k); b += get32(k + 4); c += get32(k + 8); __jhash_mix(a, b, c); length -= 12; k += 12; }
  switch (length) {
  case 12: c += (u32)k[11] << 24; /* fallthrough */
  case 11: c += (u32)k[10] << 16; /* fallthrough */
  case 10: c += (u32)k[9] << 8; /* fallthrough */
  case 9: c += k[8]; /* fallthrough */
  case 8: b += (u32)k[7] << 24; /* fallthrough */
  case 7: b += (u32)k[6] << 16; /* fallthrough */
  case 6: b += (u32)k[5] << 8; /* fallthrough */
  case 5: b += k[4]; /* fallthrough */
  case 4: a += (u32)k[3] << 24; /* fallthrough */
  case 3: a += (u32)k[2] << 16; /* fallthrough */
  case 2: a += (u32)k[1] << 8; /* fallthrough */
  case 1: a += k[0]; __jhash_final(a, b, c); break;
  case 0: break;
  }
  return c;
}
int main(void) {
  u8 key[40];
  u32 x = 12345;
  printf("[\n");
  int first = 1;
  for (int len = 0; len <= 40; len++) {
    for (int rep = 0; rep < 2; rep++) {
      for (int i = 0; i < len; i++) { x = x * 1103515245u + 12345u; key[i] = (u8)(x >> 16); }
      x = x * 1103515245u + 12345u;
      u32 seed = rep == 0 ? 0 : x;
      printf("%s  {\"key\": \"", first ? "" : ",\n");
      first = 0;
      for (int i = 0; i < len; i++) printf("%02x", key[i]);
      printf("\", \"seed\": %u, \"hash\": %u}", seed, jhash(key, len, seed));
    }
  }
  printf("\n]\n");
  return 0;
}
