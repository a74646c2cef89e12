/* A Pool used in a child forked after it was made: apply, apply_async, map and imap from the
 * child with exact results there, several children at once, the owner-only calls, and what
 * a child leaves behind (nothing: its registration with the supervisor goes with it). */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int crash(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  abort();
}

/* In a child, a failed check exits with its line: the parent's assertion names it. */
#define CHILD_CHECK(cond)                                                                      \
  do {                                                                                         \
    if (!(cond))                                                                               \
      _exit(__LINE__ % 200 + 1);                                                               \
  } while (0)

static int64_t apply_i64(mproc_pool *p, int64_t v) {
  void *r = NULL;
  size_t len = 0;
  int rc = mproc_pool_apply(p, th_times3, &v, sizeof v, &r, &len);
  int64_t out = rc == 0 && len == sizeof out ? *(int64_t *)r : INT64_MIN;
  free(r);
  return out;
}

/* n apply_async calls with arguments base..base+n-1, every result checked. */
static bool async_batch(mproc_pool *p, int64_t base, int n) {
  mproc_async **a = calloc((size_t)n, sizeof *a);
  bool ok = a != NULL;
  for (int i = 0; ok && i < n; i++) {
    int64_t v = base + i;
    ok = mproc_pool_apply_async(p, th_times3, &v, sizeof v, &a[i]) == 0;
  }
  for (int i = 0; ok && i < n; i++) {
    void *r = NULL;
    size_t len = 0;
    ok = mproc_async_get(a[i], &r, &len, MPROC_FOREVER) == 0 && len == sizeof(int64_t) &&
         *(int64_t *)r == 3 * (base + i);
    free(r);
  }
  for (int i = 0; a && i < n; i++)
    mproc_async_free(a[i]);
  free(a);
  return ok;
}

static bool map_squares(mproc_pool *p, size_t n) {
  int64_t *in = malloc(n * sizeof *in), *out = calloc(n, sizeof *out);
  bool ok = in && out;
  for (size_t i = 0; ok && i < n; i++)
    in[i] = (int64_t)i - 1000;
  ok = ok && mproc_pool_map(p, th_square64, in, n, sizeof *in, out, sizeof *out, NULL) == 0;
  for (size_t i = 0; ok && i < n; i++)
    ok = out[i] == in[i] * in[i];
  free(in);
  free(out);
  return ok;
}

static bool imap_in_order(mproc_pool *p, int n) {
  int64_t *args = malloc((size_t)n * sizeof *args);
  const void **items = malloc((size_t)n * sizeof *items);
  size_t *lens = malloc((size_t)n * sizeof *lens);
  bool ok = args && items && lens;
  for (int i = 0; ok && i < n; i++) {
    args[i] = i;
    items[i] = &args[i];
    lens[i] = sizeof *args;
  }
  mproc_imap *it = NULL;
  ok = ok && mproc_pool_imap(p, th_times3, items, lens, (size_t)n, NULL, &it) == 0;
  for (int i = 0; ok && i < n; i++) {
    const void *r;
    size_t len;
    ok = mproc_imap_next(it, &r, &len, MPROC_FOREVER) == 0 && len == sizeof(int64_t) &&
         *(const int64_t *)r == 3 * (int64_t)i;
  }
  ok = ok && mproc_imap_next(it, NULL, NULL, MPROC_FOREVER) == MPROC_EOF;
  mproc_imap_free(it);
  free(args);
  free(items);
  free(lens);
  return ok;
}

/* What one client does: everything a pool offers, exact, then the owner-only calls. */
static void client_body(mproc_pool *p, int64_t base) {
  CHILD_CHECK(apply_i64(p, base) == 3 * base);
  CHILD_CHECK(async_batch(p, base, 500));
  CHILD_CHECK(map_squares(p, 200000));
  CHILD_CHECK(imap_in_order(p, 300));
  CHILD_CHECK(mproc_pool_close(p) == MPROC_ESTATE);
  CHILD_CHECK(mproc_pool_join(p) == MPROC_ESTATE);
  CHILD_CHECK(mproc_pool_terminate(p) == MPROC_ESTATE);
  CHILD_CHECK(apply_i64(p, base + 1) == 3 * (base + 1)); /* still running */
}

/* The supervisor's open descriptors: a client's registration holds four. */
static int supervisor_fds(mproc_pool *p) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)mproc__pool_supervisor_pid(p));
  DIR *d = opendir(path);
  cr_assert_not_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Waits (up to 10 s) for the supervisor to let go of its clients: its count back at want. */
static int supervisor_fds_settle(mproc_pool *p, int want) {
  int n = supervisor_fds(p);
  for (int i = 0; i < 1000 && n != want; i++) {
    th_sleep_us(10000);
    n = supervisor_fds(p);
  }
  return n;
}

Test(pool_fork, child_uses_the_pool) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  int base_fds = supervisor_fds(p);
  /* One of the owner's, in flight across the fork: the owner's alone. */
  int64_t v = 7;
  mproc_async *before = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, th_times3, &v, sizeof v, &before), 0);
  pid_t child = th_fork_tied();
  cr_assert_geq(child, 0);
  if (child == 0) {
    CHILD_CHECK(mproc_async_get(before, NULL, NULL, 0.1) == MPROC_ESTATE ||
                mproc_async_ready(before)); /* it may have come before the fork */
    mproc_async_free(before);
    client_body(p, 1000);
    mproc_pool_free(p);
    _exit(0);
  }
  cr_expect_eq(th_exitcode(child), 0);
  void *r = NULL;
  size_t len = 0;
  cr_assert_eq(mproc_async_get(before, &r, &len, MPROC_FOREVER), 0);
  cr_expect_eq(*(int64_t *)r, 21);
  free(r);
  mproc_async_free(before);
  cr_expect_eq(apply_i64(p, 5), 15);
  cr_expect(map_squares(p, 50000));
  /* The child's free let go of its ring and descriptors in the supervisor. */
  cr_expect_eq(supervisor_fds_settle(p, base_fds), base_fds);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_fork, two_children_submit_at_once) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  pid_t kids[2];
  for (int k = 0; k < 2; k++) {
    kids[k] = th_fork_tied();
    cr_assert_geq(kids[k], 0);
    if (kids[k] == 0) {
      client_body(p, 1000000 * (k + 1));
      CHILD_CHECK(async_batch(p, 5000000 * (k + 1), 2000));
      mproc_pool_free(p);
      _exit(0);
    }
  }
  /* The owner submits meanwhile: its results are not mixed with theirs. */
  cr_expect(async_batch(p, -7000, 2000));
  cr_expect(map_squares(p, 100000));
  for (int k = 0; k < 2; k++)
    cr_expect_eq(th_exitcode(kids[k]), 0, "child %d", k);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_fork, child_of_a_child_and_a_child_that_never_frees) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  int base_fds = supervisor_fds(p);
  pid_t child = th_fork_tied();
  cr_assert_geq(child, 0);
  if (child == 0) {
    CHILD_CHECK(apply_i64(p, 11) == 33);
    pid_t grandchild = th_fork_tied();
    CHILD_CHECK(grandchild >= 0);
    if (grandchild == 0) {
      CHILD_CHECK(apply_i64(p, 12) == 36);
      CHILD_CHECK(map_squares(p, 30000));
      _exit(0); /* no free: the supervisor notices the end */
    }
    CHILD_CHECK(th_exitcode(grandchild) == 0);
    CHILD_CHECK(async_batch(p, 40, 100));
    _exit(0);
  }
  cr_expect_eq(th_exitcode(child), 0);
  cr_expect_eq(supervisor_fds_settle(p, base_fds), base_fds);
  cr_expect_eq(apply_i64(p, 2), 6);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_fork, a_crash_in_a_childs_task_fails_that_task_alone) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(2);
  pid_t child = th_fork_tied();
  cr_assert_geq(child, 0);
  if (child == 0) {
    mproc_async *a = NULL;
    CHILD_CHECK(mproc_pool_apply_async(p, crash, NULL, 0, &a) == 0);
    CHILD_CHECK(mproc_async_wait(a, MPROC_FOREVER) == 0);
    CHILD_CHECK(!mproc_async_successful(a));
    CHILD_CHECK(mproc_async_get(a, NULL, NULL, 0) == MPROC_ECRASHED);
    CHILD_CHECK(strstr(mproc_async_error(a), "signal 6") != NULL);
    mproc_async_free(a);
    CHILD_CHECK(async_batch(p, 1, 50));
    mproc_pool_free(p);
    _exit(0);
  }
  cr_expect_eq(th_exitcode(child), 0);
  cr_expect_eq(apply_i64(p, 3), 9);
  mproc_pool_free(p);
  th_end(s);
}

static int slow(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  th_sleep_us(30 * 1000 * 1000);
  return 0;
}

Test(pool_fork, the_owners_terminate_ends_a_childs_wait) {
  th_scope s = th_begin();
  mproc_pool *p = th_pool(1);
  int pipefd[2];
  cr_assert_eq(pipe(pipefd), 0);
  pid_t child = th_fork_tied();
  cr_assert_geq(child, 0);
  if (child == 0) {
    close(pipefd[0]);
    mproc_async *a = NULL;
    CHILD_CHECK(mproc_pool_apply_async(p, slow, NULL, 0, &a) == 0);
    CHILD_CHECK(write(pipefd[1], "x", 1) == 1);
    int rc = mproc_async_get(a, NULL, NULL, MPROC_FOREVER);
    CHILD_CHECK(rc == MPROC_ECANCELLED);
    mproc_async_free(a);
    CHILD_CHECK(apply_i64(p, 1) == INT64_MIN); /* the pool is gone */
    mproc_pool_free(p);
    _exit(0);
  }
  close(pipefd[1]);
  char c;
  cr_assert_eq(read(pipefd[0], &c, 1), 1);
  close(pipefd[0]);
  th_wait_asleep(child);
  cr_expect_eq(mproc_pool_terminate(p), 0);
  cr_expect_eq(th_exitcode(child), 0);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_fork, a_child_of_a_joined_pool_and_a_null_pool) {
  th_scope s = th_begin();
  cr_expect_eq(mproc_pool_apply(NULL, th_times3, NULL, 0, NULL, NULL), MPROC_EINVAL);
  mproc_pool *p = th_pool(1);
  cr_assert_eq(mproc_pool_close(p), 0);
  cr_assert_eq(mproc_pool_join(p), 0);
  pid_t child = th_fork_tied();
  cr_assert_geq(child, 0);
  if (child == 0) {
    /* The supervisor has gone: registering finds nobody, and says so. */
    int64_t v = 1;
    CHILD_CHECK(mproc_pool_apply(p, th_times3, &v, sizeof v, NULL, NULL) == MPROC_ECLOSED);
    mproc_pool_free(p);
    _exit(0);
  }
  cr_expect_eq(th_exitcode(child), 0);
  mproc_pool_free(p);
  th_end(s);
}
