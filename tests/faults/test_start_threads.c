/* A program with threads running the whole time (8 of them taking one mutex in turn and
 * calling malloc/free in a loop) makes 200 Processes and 20 Pools under forkserver and under
 * spawn: no deadlock, no crash, every result exact (issue 13). The same under fork may hang
 * (a child can inherit the mutex or a malloc arena lock held) and is not tested. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTHREADS 8
#define NPROCS 200
#define BATCH 20
#define NPOOLS 20
#define MAPN 1000

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool g_stop;
static long g_turns; /* under g_mu */
static atomic_long g_allocs;

static void *churn(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
  while (!atomic_load(&g_stop)) {
    pthread_mutex_lock(&g_mu);
    g_turns++;
    /* Allocate while holding the mutex too: a child forked now would inherit both. */
    size_t n = 16 + rand_r(&seed) % 65536;
    char *p = malloc(n);
    if (p)
      memset(p, (int)n, n);
    pthread_mutex_unlock(&g_mu);
    free(p);
    void *q[4];
    for (int i = 0; i < 4; i++)
      q[i] = malloc(1 + rand_r(&seed) % 4096);
    for (int i = 0; i < 4; i++)
      free(q[i]);
    atomic_fetch_add(&g_allocs, 5);
  }
  return NULL;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int ret_code(void *arg) { return *(const int *)arg; }

static int add_one(const void *arg, size_t len, mproc_result *res) {
  if (len != sizeof(int))
    return mproc_result_fail(res, "len %zu", len);
  int v = *(const int *)arg + 1;
  return mproc_result_set(res, &v, sizeof v);
}

static int square(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int32_t *)in;
  *(int64_t *)out = v * v;
  return 0;
}

static void with_threads(mproc_start_method m) {
  th_scope s = th_begin();
  pthread_t t[NTHREADS];
  atomic_store(&g_stop, false);
  for (int i = 0; i < NTHREADS; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)i), 0);
  double t0 = now_s();

  /* 200 processes, 20 at a time, each exit code exact. */
  for (int b = 0; b < NPROCS / BATCH; b++) {
    mproc_process *p[BATCH];
    for (int i = 0; i < BATCH; i++) {
      int code = (b * BATCH + i) % 251;
      mproc_process_opts o = {.daemon = true, .start_method = m, .arg_len = sizeof code};
      cr_assert_eq(mproc_process_new(&p[i], ret_code, &code, &o), 0);
      int rc = mproc_process_start(p[i]);
      cr_assert_eq(rc, 0, "process %d: %s", b * BATCH + i, mproc_err_name(rc));
    }
    for (int i = 0; i < BATCH; i++) {
      int code = -1;
      cr_assert_eq(mproc_process_join(p[i], 60), 0, "process %d hangs", b * BATCH + i);
      cr_assert_eq(mproc_process_exitcode(p[i], &code), 0);
      cr_expect_eq(code, (b * BATCH + i) % 251, "process %d", b * BATCH + i);
      mproc_process_free(p[i]);
    }
  }
  double t1 = now_s();

  /* 20 pools of 2 workers: one apply and one map each, exact. */
  int32_t in[MAPN];
  int64_t out[MAPN], want = 0;
  for (int i = 0; i < MAPN; i++) {
    in[i] = i - 300;
    want += (int64_t)in[i] * in[i];
  }
  for (int k = 0; k < NPOOLS; k++) {
    mproc_pool *p = NULL;
    mproc_pool_opts o = {.processes = 2, .start_method = m};
    int rc = mproc_pool_new(&p, &o);
    cr_assert_eq(rc, 0, "pool %d: %s", k, mproc_err_name(rc));
    void *r = NULL;
    size_t len = 0;
    rc = mproc_pool_apply(p, add_one, &k, sizeof k, &r, &len);
    cr_assert_eq(rc, 0, "pool %d apply: %s", k, mproc_err_name(rc));
    cr_assert_eq(len, sizeof(int));
    cr_expect_eq(*(int *)r, k + 1);
    free(r);
    memset(out, 0, sizeof out);
    rc = mproc_pool_map(p, square, in, MAPN, sizeof *in, out, sizeof *out, NULL);
    cr_assert_eq(rc, 0, "pool %d map: %s", k, mproc_err_name(rc));
    int64_t sum = 0;
    for (int i = 0; i < MAPN; i++)
      sum += out[i];
    cr_expect_eq(sum, want, "pool %d", k);
    mproc_pool_free(p);
  }
  double t2 = now_s();

  atomic_store(&g_stop, true);
  for (int i = 0; i < NTHREADS; i++)
    cr_assert_eq(pthread_join(t[i], NULL), 0);
  pthread_mutex_lock(&g_mu);
  long turns = g_turns;
  pthread_mutex_unlock(&g_mu);
  cr_expect_gt(turns, NTHREADS, "the threads did not run");
  cr_log_info("%s: %d processes %.2f s, %d pools %.2f s; mutex turns %ld, allocations %ld",
              mproc_start_method_name(m), NPROCS, t1 - t0, NPOOLS, t2 - t1, turns,
              atomic_load(&g_allocs));
  fprintf(stderr, "start_threads %s: %d processes %.2f s, %d pools %.2f s, %ld mutex turns\n",
          mproc_start_method_name(m), NPROCS, t1 - t0, NPOOLS, t2 - t1, turns);
  mproc_forkserver_stop();
  th_end(s);
}

Test(start_threads, forkserver) { with_threads(MPROC_START_FORKSERVER); }
Test(start_threads, spawn) { with_threads(MPROC_START_SPAWN); }
