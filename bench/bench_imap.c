/* imap / imap_unordered throughput; bench/py_imap.py does the same with multiprocessing.Pool.
 * Each item is 8 bytes, the task returns them: the cost measured is the pool's, per item. */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKERS 2

/* Items per second over n items, median of R runs; exits on a wrong count or sum. */
static double run(mproc_pool *p, uint64_t n, const mproc_imap_opts *o) {
  enum { R = 3 };
  double v[R];
  for (int r = 0; r < R; r++) {
    bench_gen g = {0, n, 0};
    mproc_imap *it = NULL;
    double t0 = bench_now();
    if (mproc_pool_imap_gen(p, bench_echo, bench_gen_next, &g, o, &it) != 0)
      exit(1);
    uint64_t sum = 0, count = 0;
    const void *res;
    size_t len;
    int rc;
    while ((rc = mproc_imap_next(it, &res, &len, MPROC_FOREVER)) == 0) {
      uint64_t x;
      memcpy(&x, res, 8);
      sum += x;
      count++;
    }
    v[r] = (double)n / (bench_now() - t0);
    mproc_imap_free(it);
    if (rc != MPROC_EOF || count != n || sum != n * (n - 1) / 2) {
      fprintf(stderr, "imap: rc %d, %llu items\n", rc, (unsigned long long)count);
      exit(1);
    }
  }
  return bench_median(v, R);
}

int main(void) {
  mproc_pool *p = NULL;
  mproc_pool_opts po = {.processes = WORKERS};
  if (mproc_pool_new(&p, &po) != 0)
    return 1;
  mproc_imap_opts c1u = {.unordered = true, .chunksize = 1};
  mproc_imap_opts c1o = {.chunksize = 1};
  mproc_imap_opts c100u = {.unordered = true, .chunksize = 100};
  bench_report("pool_imap_unordered_c1", "mproc", run(p, 2000000, &c1u), "items/s");
  bench_report("pool_imap_ordered_c1", "mproc", run(p, 2000000, &c1o), "items/s");
  bench_report("pool_imap_unordered_default", "mproc",
               run(p, 2000000, &(mproc_imap_opts){.unordered = true}), "items/s");
  bench_report("pool_imap_unordered_c100", "mproc", run(p, 20000000, &c100u), "items/s");
  mproc_pool_free(p);
  return 0;
}
