#define _GNU_SOURCE
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_report(const char *case_name, const char *impl, double value, const char *unit) {
  printf("RESULT %s %s %.6g %s\n", case_name, impl, value, unit);
  fflush(stdout);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int bench_echo(const void *arg, size_t len, mproc_result *res) {
  return mproc_result_set(res, arg, len);
}

int bench_gen_next(void *ctx, const void **item, size_t *len) {
  bench_gen *g = ctx;
  if (g->next == g->end)
    return 0;
  g->buf = g->next++;
  *item = &g->buf;
  *len = 8;
  return 1;
}

int bench_square64(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

double bench_async_rate(mproc_pool *p) {
  enum { N = 100000, R = 5 };
  mproc_async **a = malloc(N * sizeof *a);
  if (!a)
    return 0;
  int64_t v = 7;
  double rate[R];
  for (int r = 0; r < R; r++) {
    double t0 = bench_now();
    for (int i = 0; i < N; i++)
      mproc_pool_apply_async(p, bench_echo, &v, sizeof v, &a[i]);
    for (int i = 0; i < N; i++) {
      mproc_async_wait(a[i], MPROC_FOREVER);
      mproc_async_free(a[i]);
    }
    rate[r] = N / (bench_now() - t0);
  }
  free(a);
  return bench_median(rate, R);
}
