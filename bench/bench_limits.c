/* The cost of limits and the sandbox: apply_async throughput and map of 1 M int64 with them
 * on and off, in the same run (impl "off"; "mproc" with them on), and a pool's start to its
 * first result.
 * Python has no counterpart (its pools have no sandbox): compare on with off. */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"

#include <stdio.h>
#include <stdlib.h>

#define WORKERS 2

static mproc_pool *new_pool(bool on) {
  static mproc_sandbox sb = {0};
  static mproc_limits lim = {.cpu_seconds = 60, .open_files = 256, .processes = -1};
  mproc_pool_opts o = {.processes = WORKERS};
  if (on) {
    o.sandbox = &sb;
    o.limits = &lim;
    o.memory_limit = (size_t)1 << 30;
    o.max_memory_per_child = (size_t)1 << 30;
  }
  mproc_pool *p = NULL;
  int rc = mproc_pool_new(&p, &o);
  if (rc) {
    fprintf(stderr, "mproc_pool_new: %s\n", mproc_err_name(rc));
    exit(1);
  }
  return p;
}

static double map_rate(mproc_pool *p, const int64_t *in, int64_t *out, size_t n) {
  enum { R = 15 };
  double t[R];
  for (int i = 0; i < R; i++) {
    double t0 = bench_now();
    mproc_pool_map(p, bench_square64, in, n, 8, out, 8, NULL);
    t[i] = bench_now() - t0;
  }
  if (out[n - 1] != (int64_t)(n - 1) * (int64_t)(n - 1))
    fprintf(stderr, "map: wrong result\n");
  return (double)n / bench_median(t, R);
}

static double start_ms(bool on) {
  enum { R = 15 };
  double t[R];
  int64_t v = 42;
  for (int i = 0; i < R; i++) {
    double t0 = bench_now();
    mproc_pool *p = new_pool(on);
    void *r = NULL;
    mproc_pool_apply(p, bench_echo, &v, sizeof v, &r, NULL);
    t[i] = bench_now() - t0;
    free(r);
    mproc_pool_free(p);
  }
  return bench_median(t, R) * 1e3;
}

int main(void) {
  size_t n = 1000000;
  int64_t *in = malloc(n * 8), *out = malloc(n * 8);
  if (!in || !out)
    return 1;
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i;
  /* Alternate off and on, twice, so drift in a shared machine hits both alike. */
  double rate[2] = {0, 0}, map[2] = {0, 0};
  for (int round = 0; round < 2; round++)
    for (int on = 0; on < 2; on++) {
      mproc_pool *p = new_pool(on);
      double a = bench_async_rate(p), m = map_rate(p, in, out, n);
      rate[on] = a > rate[on] ? a : rate[on];
      map[on] = m > map[on] ? m : map[on];
      mproc_pool_free(p);
    }
  bench_report("limits_apply_async_throughput", "off", rate[0], "tasks/s");
  bench_report("limits_apply_async_throughput", "mproc", rate[1], "tasks/s");
  bench_report("limits_map_1M_int64", "off", map[0], "items/s");
  bench_report("limits_map_1M_int64", "mproc", map[1], "items/s");
  bench_report("limits_pool_start_first_result", "off", start_ms(false), "ms");
  bench_report("limits_pool_start_first_result", "mproc", start_ms(true), "ms");
  free(in);
  free(out);
  return 0;
}
