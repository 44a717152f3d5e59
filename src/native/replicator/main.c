/* holdfast-replicator: the replicated data path of holdfast's mirror module (see proto.h, primary.c,
 * secondary.c). Driven by src/mirror/FileReplicator.ts through JSON lines on stdout and commands on stdin. */
#include "common.h"
#include "filter.h"
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------- parent liveness (common.h) ---------- */
#define HF_PDEATH_SIG SIGUSR2
static pid_t start_ppid;

int parent_watch_setup(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, HF_PDEATH_SIG);
  pthread_sigmask(SIG_BLOCK, &s, NULL); /* inherited by every thread; read through a signalfd */
  /* fires when the parent *thread* that spawned us exits (Node spawns from its main thread) */
  prctl(PR_SET_PDEATHSIG, HF_PDEATH_SIG);
  if (getppid() != start_ppid) return 1; /* died between main() and the prctl */
  const char *sup = getenv("HOLDFAST_PARENT_PID"); /* died before main(): ppid was already the reaper */
  long pid = sup ? strtol(sup, NULL, 10) : 0;
  if (pid > 1 && getppid() != (pid_t)pid && kill((pid_t)pid, 0) < 0 && errno == ESRCH) return 1;
  return 0;
}

int stdin_is_channel(void) {
  struct stat st;
  return fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

static void (*gone_cb)(const char *);
static int gone_stdin;

static void *parent_watch_thread(void *arg) {
  (void)arg;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, HF_PDEATH_SIG);
  int sfd = signalfd(-1, &s, SFD_CLOEXEC);
  struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = gone_stdin ? 0 : -1, .events = POLLIN}};
  for (;;) {
    if (poll(p, 2, sfd < 0 ? 200 : -1) < 0 && errno != EINTR) break;
    if (sfd < 0) { /* no signalfd: poll the ppid instead */
      if (getppid() != start_ppid) { gone_cb("parent process gone"); return NULL; }
    } else if (p[0].revents) {
      gone_cb("parent process gone");
      return NULL;
    }
    if (p[1].revents) {
      char buf[256];
      ssize_t n = read(0, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) { gone_cb("end of stdin"); return NULL; }
    }
  }
  return NULL;
}

void parent_watch_start(int watch_stdin, void (*on_gone)(const char *why)) {
  gone_cb = on_gone;
  gone_stdin = watch_stdin;
  pthread_t t;
  if (pthread_create(&t, NULL, parent_watch_thread, NULL) != 0) {
    /* without it the helper could outlive its supervisor: not started at all rather than unwatched */
    fprintf(stderr, "holdfast-replicator: cannot start the parent watch thread\n");
    _exit(2);
  }
}

int main(int argc, char **argv) {
  /* a peer that vanishes must show up as EPIPE on the stream, not kill the helper */
  signal(SIGPIPE, SIG_IGN);
  mono_setup();
  start_ppid = getppid();
  if (argc >= 2 && !strcmp(argv[1], "primary")) return run_primary(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "secondary")) return run_secondary(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "selftest")) {
    emit_quiet = 1;
    int f = crypto_selftest() + durability_selftest() + state_selftest(), nv = 0;
    /* selftest --vectors FILE: also the shared wire vectors (test/vectors/wire.json) */
    if (argc >= 4 && !strcmp(argv[2], "--vectors")) f += vectors_selftest(argv[3], &nv);
    printf("{\"event\":\"selftest\",\"failures\":%d,\"crypto\":%s,\"hdr\":%zu,\"args\":%zu", f,
           jstr(crypto_version()), sizeof(struct hf_hdr), sizeof(struct hf_args));
    if (nv) printf(",\"vectors\":%d", nv);
    printf("}\n");
    return f ? 1 : 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "match")) return run_match(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "version")) { printf("holdfast-replicator 1 (protocol HFR1)\n"); return 0; }
  fprintf(stderr, "usage: holdfast-replicator primary|secondary|selftest|match|version [options]\n");
  return 2;
}
