/* Benchmark helpers. Every case prints one machine-readable line:
 *   RESULT <case> <impl> <value> <unit>
 * impl is mproc, raw (the same work by hand in C: pipe(2), futex, ...), or openmp; the
 * Python twins (bench/py_*.py) print impl "python". bench/run.py joins them into a table. */
#ifndef MPROC_BENCH_COMMON_H
#define MPROC_BENCH_COMMON_H
#include "mproc.h"

#include <stddef.h>
#include <stdint.h>

double bench_now(void); /* seconds, CLOCK_MONOTONIC */
void bench_report(const char *case_name, const char *impl, double value, const char *unit);
/* Sorts v[0..n) and returns the median. */
double bench_median(double *v, int n);

/* A task that returns its argument. */
int bench_echo(const void *arg, size_t len, mproc_result *res);
/* A map function: out = in * in, int64. */
int bench_square64(const void *in, void *out, const void *args);
/* apply_async of bench_echo on 8 bytes, 100 000 in flight then all waited, median of 5:
 * tasks/s. */
double bench_async_rate(mproc_pool *p);
/* An imap generator of the integers [next, end), 8 bytes each (ctx: a bench_gen). */
typedef struct bench_gen {
  uint64_t next, end, buf;
} bench_gen;
int bench_gen_next(void *ctx, const void **item, size_t *len);
#endif
