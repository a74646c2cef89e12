/* Pool benchmarks; bench/py_pool.py does the same work with multiprocessing.Pool. */
#define _GNU_SOURCE
#include "common.h"
#include "mproc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef MPROC_HAVE_OPENMP
#include <omp.h>
#endif

#define WORKERS 2

static mproc_pool *new_pool(void) {
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = WORKERS};
  if (mproc_pool_new(&p, &o) != 0) {
    fprintf(stderr, "mproc_pool_new failed\n");
    exit(1);
  }
  return p;
}

static int tiny(const void *arg, size_t len, mproc_result *res) {
  return mproc_result_set(res, arg, len);
}

static void start_first_result(void) {
  enum { R = 30 };
  double t[R];
  int64_t v = 42;
  for (int i = 0; i < R; i++) {
    double t0 = bench_now();
    mproc_pool *p = new_pool();
    void *r = NULL;
    mproc_pool_apply(p, tiny, &v, sizeof v, &r, NULL);
    t[i] = bench_now() - t0;
    free(r);
    mproc_pool_free(p);
  }
  bench_report("pool_start_first_result", "mproc", bench_median(t, R) * 1e3, "ms");
}

static void map_1m(mproc_pool *p) {
  size_t n = 1000000;
  int64_t *in = malloc(n * 8), *out = malloc(n * 8);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i;
  /* Enough runs that the median is the steady state (the first few pay page faults as
   * the rings first grow, and the spin budgets adapt). */
  enum { R = 21 };
  double t[R];
  for (int i = 0; i < R; i++) {
    double t0 = bench_now();
    mproc_pool_map(p, bench_square64, in, n, 8, out, 8, NULL);
    t[i] = bench_now() - t0;
  }
  if (out[n - 1] != (int64_t)(n - 1) * (int64_t)(n - 1))
    fprintf(stderr, "map_1m: wrong result\n");
  bench_report("pool_map_1M_int64", "mproc", (double)n / bench_median(t, R), "items/s");
  free(in);
  free(out);
}

static void apply_async_throughput(mproc_pool *p) {
  bench_report("pool_apply_async_throughput", "mproc", bench_async_rate(p), "tasks/s");
}

static double one_apply_us(mproc_pool *p) {
  int64_t v = 7;
  void *r = NULL;
  double t0 = bench_now();
  mproc_pool_apply(p, tiny, &v, sizeof v, &r, NULL);
  double t = bench_now() - t0;
  free(r);
  return t * 1e6;
}

/* The same pool from a child forked after it was made (Python's pool hangs there): the
 * child's first call (it registers with the supervisor) and its apply_async rate, beside
 * the owner's round trip and rate. */
static void client(mproc_pool *p) {
  enum { R = 9 };
  double first[R], owner_rt[R], rate = 0;
  for (int r = 0; r < R; r++) {
    owner_rt[r] = one_apply_us(p);
    int fd[2];
    if (pipe(fd) != 0)
      exit(1);
    pid_t pid = fork();
    if (pid == 0) {
      double got[2] = {one_apply_us(p), r == 0 ? bench_async_rate(p) : 0};
      _exit(write(fd[1], got, sizeof got) == sizeof got ? 0 : 1);
    }
    double got[2] = {0, 0};
    if (pid < 0 || read(fd[0], got, sizeof got) != sizeof got || waitpid(pid, NULL, 0) != pid)
      exit(1);
    close(fd[0]);
    close(fd[1]);
    first[r] = got[0];
    rate = r == 0 ? got[1] : rate;
  }
  bench_report("pool_client_first_call", "mproc", bench_median(first, R), "us");
  bench_report("pool_client_first_call", "owner", bench_median(owner_rt, R), "us");
  bench_report("pool_client_apply_async_throughput", "mproc", rate, "tasks/s");
  bench_report("pool_client_apply_async_throughput", "owner", bench_async_rate(p), "tasks/s");
}

static void apply_roundtrip(mproc_pool *p) {
  enum { R = 3000 };
  double *t = malloc(R * sizeof *t);
  int64_t v = 7;
  for (int i = 0; i < R; i++) {
    double t0 = bench_now();
    mproc_async *a;
    mproc_pool_apply_async(p, tiny, &v, sizeof v, &a);
    void *r;
    mproc_async_get(a, &r, NULL, MPROC_FOREVER);
    t[i] = bench_now() - t0;
    free(r);
    mproc_async_free(a);
  }
  bench_report("pool_apply_roundtrip", "mproc", bench_median(t, R) * 1e6, "us");
  free(t);
}

#define BIG (1u << 20)

static int copy_mib(const void *in, void *out, const void *args) {
  (void)args;
  memcpy(out, in, BIG);
  return 0;
}

static void map_big(mproc_pool *p) {
  size_t n = 256;
  char *in = malloc(n * BIG), *out = malloc(n * BIG);
  memset(in, 1, n * BIG);
  memset(out, 0, n * BIG);
  enum { R = 5 };
  double t[R];
  for (int i = 0; i < R; i++) {
    double t0 = bench_now();
    mproc_pool_map(p, copy_mib, in, n, BIG, out, BIG, NULL);
    t[i] = bench_now() - t0;
  }
  bench_report("pool_map_256x1MiB", "mproc", (double)(n * BIG) / bench_median(t, R) / 1e9,
               "GB/s");
  free(in);
  free(out);
}

/* The same over mproc shared arrays made before the pool: the data crosses by address. */
static void map_big_shared(mproc_array *ai, mproc_array *ao) {
  mproc_pool *p = new_pool();
  size_t n = 256;
  char *in = mproc_array_data(ai), *out = mproc_array_data(ao);
  memset(in, 1, n * BIG);
  memset(out, 0, n * BIG);
  enum { R = 5 };
  double t[R];
  for (int i = 0; i < R; i++) {
    double t0 = bench_now();
    mproc_pool_map(p, copy_mib, in, n, BIG, out, BIG, NULL);
    t[i] = bench_now() - t0;
  }
  bench_report("pool_map_256x1MiB_shared", "mproc",
               (double)(n * BIG) / bench_median(t, R) / 1e9, "GB/s");
  mproc_pool_free(p);
}

/* CPU-bound: every element costs the same few hundred microseconds of arithmetic. */
static int burn(const void *in, void *out, const void *args) {
  (void)args;
  double x = *(const double *)in, acc = 0;
  for (int i = 0; i < 40000; i++)
    acc += sqrt(x + i) * 1.0000001;
  *(double *)out = acc;
  return 0;
}

static double serial_burn(const double *in, double *out, size_t n) {
  double t0 = bench_now();
  for (size_t i = 0; i < n; i++)
    burn(&in[i], &out[i], NULL);
  return bench_now() - t0;
}

/* Each figure is the best of R runs, the three kinds interleaved, so that a noisy moment on
 * a shared machine does not favour one of them. */
static void cpu_speedup(mproc_pool *p) {
  size_t n = 4000;
  double *in = malloc(n * 8), *out = malloc(n * 8);
  for (size_t i = 0; i < n; i++)
    in[i] = (double)i;
  enum { R = 5 };
  double serial = 1e9, par = 1e9, omp = 1e9;
  for (int r = 0; r < R; r++) {
    double s = serial_burn(in, out, n);
    serial = s < serial ? s : serial;
    double t0 = bench_now();
    mproc_pool_map(p, burn, in, n, 8, out, 8, NULL);
    double t = bench_now() - t0;
    par = t < par ? t : par;
#ifdef MPROC_HAVE_OPENMP
    t0 = bench_now();
#pragma omp parallel for num_threads(WORKERS) schedule(static)
    for (size_t i = 0; i < n; i++)
      burn(&in[i], &out[i], NULL);
    t = bench_now() - t0;
    omp = t < omp ? t : omp;
#endif
  }
  bench_report("pool_cpu_speedup_2", "mproc", serial / par, "x");
#ifdef MPROC_HAVE_OPENMP
  bench_report("pool_cpu_speedup_2", "openmp", serial / omp, "x");
#endif
  (void)omp;
  free(in);
  free(out);
}

/* Usage: bench_pool [substring of a case name] */
int main(int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : "";
#define WANT(name) (strstr(name, only) != NULL)
  if (WANT("pool_start_first_result"))
    start_first_result();
  mproc_pool *p = new_pool();
  if (WANT("pool_map_1M_int64"))
    map_1m(p);
  if (WANT("pool_apply_async_throughput"))
    apply_async_throughput(p);
  if (WANT("pool_apply_roundtrip"))
    apply_roundtrip(p);
  if (WANT("pool_client"))
    client(p);
  if (WANT("pool_map_256x1MiB"))
    map_big(p);
  if (WANT("pool_cpu_speedup_2"))
    cpu_speedup(p);
  mproc_pool_free(p);
  if (WANT("pool_map_256x1MiB_shared")) {
    mproc_array *ai = NULL, *ao = NULL;
    if (mproc_array_new(&ai, BIG, 256, NULL, false) == 0 &&
        mproc_array_new(&ao, BIG, 256, NULL, false) == 0)
      map_big_shared(ai, ao);
    mproc_array_free(ai);
    mproc_array_free(ao);
  }
  return 0;
}
