/* First calls against later ones, each case in a fresh process (bench/run.py runs this
 * program once per case): the first map on a fresh pool against the 10th, the first
 * burst of 10 000 x 1 MiB queue messages against a later one, the first imap_unordered of
 * 100 k items against a later one. Prints the first call's rate as impl "mproc" and the
 * later call's as "warm"; bench/py_first.py does the same with multiprocessing. */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static mproc_pool *new_pool(void) {
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 2};
  if (mproc_pool_new(&p, &o) != 0)
    exit(1);
  return p;
}

/* One map of n int64 into out: items/s. out was written before (it is the user's memory,
 * resident: its first-touch faults are the program's, the same for any library; the
 * whole-program cases of bench/run.py count them). */
static double map_once(mproc_pool *p, const int64_t *in, int64_t *out, size_t n) {
  memset(out, 0, n * sizeof *out);
  double t0 = bench_now();
  if (mproc_pool_map(p, bench_square64, in, n, 8, out, 8, NULL) != 0)
    exit(1);
  double dt = bench_now() - t0;
  for (size_t i = 0; i < n; i++)
    if (out[i] != in[i] * in[i])
      exit(1);
  return (double)n / dt;
}

static void first_map(void) {
  size_t n = 1000000;
  int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  if (!in || !out)
    exit(1);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i;
  mproc_pool *p = new_pool();
  double first = map_once(p, in, out, n), tenth = 0;
  for (int k = 2; k <= 10; k++)
    tenth = map_once(p, in, out, n);
  mproc_pool_free(p);
  free(in);
  free(out);
  bench_report("first_map_1M_int64", "mproc", first, "items/s");
  bench_report("first_map_1M_int64", "warm", tenth, "items/s");
}

/* A burst of n messages of len bytes from a forked producer: GB/s at the consumer. */
static double burst(mproc_queue *q, long n, size_t len) {
  pid_t pid = fork();
  if (pid == 0) {
    char *m = malloc(len);
    memset(m, 7, len);
    for (long i = 0; i < n; i++)
      if (mproc_queue_put(q, m, len, MPROC_FOREVER) != 0)
        _exit(1);
    _exit(0);
  }
  double t0 = bench_now();
  for (long i = 0; i < n; i++) {
    void *b;
    size_t got;
    if (mproc_queue_get(q, &b, &got, MPROC_FOREVER) != 0 || got != len)
      exit(1);
    free(b);
  }
  double dt = bench_now() - t0;
  int st;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    exit(1);
  return (double)n * (double)len / dt / 1e9;
}

static void first_queue(void) {
  mproc_queue *q = NULL;
  if (mproc_queue_new(&q, NULL) != 0)
    exit(1);
  double first = burst(q, 10000, 1 << 20), later = 0;
  for (int k = 0; k < 2; k++)
    later = burst(q, 10000, 1 << 20);
  mproc_queue_free(q);
  bench_report("first_queue_10k_1MiB", "mproc", first, "GB/s");
  bench_report("first_queue_10k_1MiB", "warm", later, "GB/s");
}

static double imap_once(mproc_pool *p, uint64_t n) {
  bench_gen g = {0, n, 0};
  mproc_imap *it = NULL;
  mproc_imap_opts o = {.unordered = true};
  double t0 = bench_now();
  if (mproc_pool_imap_gen(p, bench_echo, bench_gen_next, &g, &o, &it) != 0)
    exit(1);
  uint64_t sum = 0, count = 0, x;
  const void *res;
  size_t len;
  int rc;
  while ((rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER)) == 0) {
    memcpy(&x, res, 8);
    sum += x;
    count++;
  }
  double dt = bench_now() - t0;
  mproc_imap_free(it);
  if (rc != MPROC_EOF || count != n || sum != n * (n - 1) / 2)
    exit(1);
  return (double)n / dt;
}

static void first_imap(void) {
  mproc_pool *p = new_pool();
  double first = imap_once(p, 100000), later = 0;
  for (int k = 2; k <= 10; k++)
    later = imap_once(p, 100000);
  mproc_pool_free(p);
  bench_report("first_imap_unordered_100k", "mproc", first, "items/s");
  bench_report("first_imap_unordered_100k", "warm", later, "items/s");
}

static const struct {
  const char *name;
  void (*run)(void);
} cases[] = {{"map", first_map}, {"queue", first_queue}, {"imap", first_imap}};

/* No argument: each case in a fresh process (this program again, with the case's name). */
int main(int argc, char **argv) {
  size_t ncases = sizeof cases / sizeof *cases;
  for (size_t i = 0; argc > 1 && i < ncases; i++)
    if (strcmp(argv[1], cases[i].name) == 0) {
      cases[i].run();
      return 0;
    }
  if (argc > 1)
    return 2;
  for (size_t i = 0; i < ncases; i++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      execl("/proc/self/exe", argv[0], cases[i].name, (char *)NULL);
      _exit(127);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
      fprintf(stderr, "bench_first: case %s failed\n", cases[i].name);
  }
  return 0;
}
