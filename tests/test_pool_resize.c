/* mproc_pool_resize and mproc_pool_workers: a running pool grows and shrinks under load with
 * no task lost, and lists its workers. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int slow_square(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int64_t v = *(const int64_t *)arg;
  struct timespec ts = {0, 200 * 1000}; /* 0.2 ms: the load outlasts the resizes */
  nanosleep(&ts, NULL);
  v *= v;
  return mproc_result_set(res, &v, sizeof v);
}

/* Waits (up to 20 s) until the pool lists n workers. */
static bool workers_become(mproc_pool *p, int n) {
  for (int i = 0; i < 20000; i++) {
    if (mproc_pool_workers(p, NULL, 0) == n)
      return true;
    th_sleep_us(1000);
  }
  return false;
}

static void submit(mproc_pool *p, mproc_async **a, int from, int to) {
  for (int64_t i = from; i < to; i++)
    cr_assert_eq(mproc_pool_apply_async(p, slow_square, &i, sizeof i, &a[i]), 0);
}

Test(pool_resize, grows_and_shrinks_under_load_with_no_task_lost) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  enum { N = 6000 };
  mproc_async **a = calloc(N, sizeof *a);
  cr_assert(a);
  submit(p, a, 0, N / 3);
  cr_assert_eq(mproc_pool_resize(p, 4), 0);
  cr_assert(workers_become(p, 4), "grown to 4: %d", mproc_pool_workers(p, NULL, 0));
  pid_t pids[8];
  cr_assert_eq(mproc_pool_workers(p, pids, 8), 4);
  for (int i = 0; i < 4; i++) {
    cr_assert_gt(pids[i], 0);
    for (int j = 0; j < i; j++)
      cr_assert_neq(pids[i], pids[j]);
  }
  submit(p, a, N / 3, 2 * N / 3);
  cr_assert_eq(mproc_pool_resize(p, 1), 0);
  submit(p, a, 2 * N / 3, N);
  for (int64_t i = 0; i < N; i++) {
    void *r = NULL;
    size_t len = 0;
    cr_assert_eq(mproc_async_get(a[i], &r, &len, 60), 0, "task %lld", (long long)i);
    cr_assert_eq(len, sizeof(int64_t));
    cr_assert_eq(*(int64_t *)r, i * i);
    free(r);
    mproc_async_free(a[i]);
  }
  cr_assert(workers_become(p, 1), "shrunk to 1: %d", mproc_pool_workers(p, NULL, 0));
  cr_assert_eq(mproc_pool_resize(p, 3), 0);
  cr_assert(workers_become(p, 3));
  int64_t v = 9;
  void *r = NULL;
  cr_assert_eq(mproc_pool_apply(p, slow_square, &v, sizeof v, &r, NULL), 0);
  cr_assert_eq(*(int64_t *)r, 81);
  free(r);
  free(a);
  cr_assert_eq(mproc_pool_close(p), 0);
  cr_assert_eq(mproc_pool_join(p), 0);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_resize, bad_sizes_and_states_are_refused) {
  th_scope s = th_begin();
  cr_assert_eq(mproc_pool_resize(NULL, 2), MPROC_EINVAL);
  cr_assert_eq(mproc_pool_workers(NULL, NULL, 0), MPROC_EINVAL);
  mproc_pool *p = th_pool(1);
  cr_assert_eq(mproc_pool_resize(p, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_pool_resize(p, -3), MPROC_EINVAL);
  cr_assert_eq(mproc_pool_resize(p, 5000), MPROC_EINVAL);
  cr_assert_eq(mproc_pool_workers(p, NULL, 4), MPROC_EINVAL);
  pid_t pid = 0;
  cr_assert_eq(mproc_pool_workers(p, &pid, 1), 1);
  cr_assert_gt(pid, 0);
  cr_assert_eq(mproc_pool_close(p), 0);
  cr_assert_eq(mproc_pool_resize(p, 2), MPROC_ESTATE);
  cr_assert_eq(mproc_pool_join(p), 0);
  mproc_pool_free(p);
  th_end(s);
}
