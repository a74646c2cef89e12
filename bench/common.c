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
