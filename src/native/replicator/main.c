/* holdfast-replicator: the replicated data path of holdfast's mirror module (see proto.h, primary.c,
 * secondary.c). Driven by src/mirror/FileReplicator.ts through JSON lines on stdout and commands on stdin. */
#include "common.h"
#include "filter.h"
#include <signal.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  /* a peer that vanishes must show up as EPIPE on the stream, not kill the helper */
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && !strcmp(argv[1], "primary")) return run_primary(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "secondary")) return run_secondary(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "selftest")) {
    int f = sha256_selftest(), a = aead_selftest();
    if (a > 0) f += a;
    printf("{\"event\":\"selftest\",\"failures\":%d,\"sha256\":\"%s\",\"aead\":%s,\"hdr\":%zu,\"args\":%zu}\n", f,
           sha256_impl(), a < 0 ? "false" : "true", sizeof(struct hf_hdr), sizeof(struct hf_args));
    return f ? 1 : 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "match")) return run_match(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "version")) { printf("holdfast-replicator 1 (protocol HFR1)\n"); return 0; }
  fprintf(stderr, "usage: holdfast-replicator primary|secondary|selftest|match|version [options]\n");
  return 2;
}
