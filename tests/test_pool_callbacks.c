/* Callbacks, progress and the pool's descriptor: each callback once, in the caller's process
 * and thread, only inside an mproc call; progress counts; a pool driven by a poll() loop. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 8-byte v -> v + 1000; fails for odd v. */
static int plus_task(const void *arg, size_t len, mproc_result *res) {
  uint64_t v;
  if (len != 8)
    return 1;
  memcpy(&v, arg, 8);
  if (v % 2)
    return mproc_result_fail(res, "odd %llu", (unsigned long long)v);
  v += 1000;
  return mproc_result_set(res, &v, 8);
}

/* Where callbacks may run: set around every mproc call the test makes. */
static volatile bool in_call;
static pthread_t main_thread;
static pid_t main_pid;

#define CALL(expr) (in_call = true, (expr), in_call = false)

typedef struct log {
  int order[64];
  int n, ok, failed;
} log_t;

static void check_context(void) {
  cr_assert(in_call, "a callback ran outside an mproc call");
  cr_assert(pthread_equal(pthread_self(), main_thread), "a callback ran on another thread");
  cr_assert_eq(getpid(), main_pid);
}

static void on_ok(mproc_async *r, void *ctx) {
  check_context();
  log_t *l = ctx;
  uint64_t *v = NULL;
  size_t len = 0;
  cr_assert_eq(mproc_async_get(r, (void **)&v, &len, 0), 0); /* ready at once */
  cr_assert_eq(len, 8);
  cr_assert_eq(*v % 2, 0);
  l->order[l->n++] = (int)(*v - 1000);
  l->ok++;
  free(v);
}

static void on_err(mproc_async *r, void *ctx) {
  check_context();
  log_t *l = ctx;
  cr_assert_eq(mproc_async_get(r, NULL, NULL, 0), MPROC_ETASK);
  int v = -1;
  cr_assert_eq(sscanf(mproc_async_error(r), "odd %d", &v), 1);
  l->order[l->n++] = v;
  l->failed++;
}

Test(pool_callbacks, apply_async_order_and_context) {
  th_scope s = th_begin();
  main_thread = pthread_self();
  main_pid = getpid();
  mproc_pool *p = th_pool(1); /* one worker: tasks finish in submission order */
  log_t l = {0};
  mproc_async_opts cb = {.callback = on_ok, .error_callback = on_err, .ctx = &l};
  mproc_async *r[20];
  for (uint64_t i = 0; i < 20; i++)
    cr_assert_eq(CALL(mproc_pool_apply_async_ex(p, plus_task, &i, 8, &cb, &r[i])), 0);
  /* Waiting on the last one collects (and calls back) all of them. */
  int rc;
  CALL(rc = mproc_async_wait(r[19], MPROC_FOREVER));
  cr_assert_eq(rc, 0);
  cr_expect_eq(l.n, 20);
  cr_expect_eq(l.ok, 10);
  cr_expect_eq(l.failed, 10);
  for (int i = 0; i < l.n; i++)
    cr_expect_eq(l.order[i], i);
  /* Nothing runs twice. */
  CALL(mproc_pool_poll(p, 0));
  for (int i = 0; i < 20; i++)
    CALL(mproc_async_get(r[i], NULL, NULL, 0));
  cr_expect_eq(l.n, 20);
  for (int i = 0; i < 20; i++)
    mproc_async_free(r[i]);
  in_call = true;
  mproc_pool_free(p);
  in_call = false;
  th_end(s);
}

static int slow_task(const void *arg, size_t len, mproc_result *res) {
  (void)arg;
  (void)len;
  (void)res;
  sleep(30);
  return 0;
}

static void count(mproc_async *r, void *ctx) {
  check_context();
  cr_assert_eq(mproc_async_get(r, NULL, NULL, 0), MPROC_ECANCELLED);
  (*(int *)ctx)++;
}

/* Freed with a callback still due (terminated): its error_callback runs inside free, and
 * an AsyncResult freed before its callback ran never calls back. */
Test(pool_callbacks, cancelled_and_freed) {
  th_scope s = th_begin();
  main_thread = pthread_self();
  main_pid = getpid();
  mproc_pool *p = th_pool(1);
  log_t l = {0};
  int cancelled = 0;
  mproc_async_opts cb = {.callback = on_ok, .error_callback = on_err, .ctx = &l};
  mproc_async *quick, *slow, *dropped;
  uint64_t two = 2;
  cr_assert_eq(mproc_pool_apply_async_ex(p, plus_task, &two, 8, &cb, &quick), 0);
  cr_assert_eq(CALL(mproc_async_wait(quick, MPROC_FOREVER)), 0);
  cr_expect_eq(l.ok, 1);
  cr_assert_eq(mproc_pool_apply_async_ex(p, plus_task, &two, 8, &cb, &dropped), 0);
  mproc_async_free(dropped);
  mproc_async_opts cb2 = {.error_callback = count, .ctx = &cancelled};
  cr_assert_eq(mproc_pool_apply_async_ex(p, slow_task, NULL, 0, &cb2, &slow), 0);
  in_call = true;
  mproc_pool_free(p);
  in_call = false;
  cr_expect_eq(cancelled, 1);
  cr_expect_eq(l.ok, 1);
  cr_expect_eq(mproc_async_get(slow, NULL, NULL, 0), MPROC_ECANCELLED);
  mproc_async_free(quick);
  mproc_async_free(slow);
  th_end(s);
}


static int dbl(const void *in, void *out, const void *args) {
  (void)args;
  *(int64_t *)out = 2 * *(const int64_t *)in;
  return 0;
}

typedef struct prog {
  size_t last, calls, total;
  bool done_seen;
} prog;

static void on_progress(size_t done, size_t total, void *ctx) {
  check_context();
  prog *g = ctx;
  cr_assert(!g->done_seen, "progress after the completion callback");
  cr_assert_gt(done, g->last);
  cr_assert_leq(done, total);
  g->last = done;
  g->total = total;
  g->calls++;
}

static void on_map_done(mproc_async *r, void *ctx) {
  check_context();
  prog *g = ctx;
  cr_assert_eq(mproc_async_get(r, NULL, NULL, 0), 0);
  cr_assert_eq(g->last, g->total);
  g->done_seen = true;
}

Test(pool_callbacks, map_progress) {
  th_scope s = th_begin();
  main_thread = pthread_self();
  main_pid = getpid();
  mproc_pool *p = th_pool(2);
  enum { N = 10000 };
  int64_t *in = malloc(N * 8), *out = malloc(N * 8);
  for (int i = 0; i < N; i++)
    in[i] = i;
  mproc_map_opts mo = {.chunksize = 100};
  prog g = {0};
  mproc_async_opts cb = {.progress = on_progress, .callback = on_map_done, .ctx = &g};
  int rc;
  CALL(rc = mproc_pool_map_ex(p, dbl, in, N, 8, out, 8, &mo, &cb));
  cr_assert_eq(rc, 0);
  cr_expect_eq(g.last, N);
  cr_expect_eq(g.total, N);
  cr_expect(g.done_seen);
  cr_expect_geq(g.calls, 1);
  cr_expect_leq(g.calls, N / 100);
  for (int i = 0; i < N; i++)
    cr_assert_eq(out[i], 2 * i);

  prog g2 = {0};
  cb.ctx = &g2;
  mproc_async *a;
  cr_assert_eq(CALL(mproc_pool_map_async_ex(p, dbl, in, N, 8, out, 8, NULL, &cb, &a)), 0);
  CALL(rc = mproc_async_wait(a, MPROC_FOREVER));
  cr_assert_eq(rc, 0);
  cr_expect_eq(g2.last, N);
  cr_expect(g2.done_seen);
  mproc_async_free(a);
  free(in);
  free(out);
  mproc_pool_free(p);
  th_end(s);
}

static void imap_progress(size_t done, size_t total, void *ctx) {
  check_context();
  size_t *last = ctx;
  cr_assert_eq(done, *last + 1);
  cr_assert_eq(total, 50);
  *last = done;
}

Test(pool_callbacks, imap_progress) {
  th_scope s = th_begin();
  main_thread = pthread_self();
  main_pid = getpid();
  mproc_pool *p = th_pool(2);
  uint64_t vals[50];
  const void *items[50];
  size_t lens[50];
  for (int i = 0; i < 50; i++) {
    vals[i] = 2 * (uint64_t)i;
    items[i] = &vals[i];
    lens[i] = 8;
  }
  size_t last = 0;
  mproc_imap_opts o = {.chunksize = 3, .progress = imap_progress, .progress_ctx = &last};
  mproc_imap *it;
  cr_assert_eq(CALL(mproc_pool_imap(p, plus_task, items, lens, 50, &o, &it)), 0);
  int rc;
  for (;;) {
    CALL(rc = mproc_imap_next(it, NULL, NULL, MPROC_FOREVER));
    if (rc == MPROC_EOF)
      break;
    cr_assert_eq(rc, 0);
  }
  cr_expect_eq(last, 50);
  mproc_imap_free(it);
  mproc_pool_free(p);
  th_end(s);
}

/* An event loop: the only blocking call is poll(2) on the pool's descriptor; the work is
 * done by mproc_pool_poll(p, 0) when it is readable. */
Test(pool_callbacks, poll_loop) {
  th_scope s = th_begin();
  main_thread = pthread_self();
  main_pid = getpid();
  mproc_pool *p = th_pool(2);
  int fd = mproc_pool_fileno(p);
  cr_assert_geq(fd, 0);
  cr_expect_eq(mproc_pool_fileno(p), fd);
  log_t l = {0};
  mproc_async_opts cb = {.callback = on_ok, .error_callback = on_err, .ctx = &l};
  enum { N = 40 };
  mproc_async *r[N];
  int submitted = 0, loops = 0;
  while (l.n < N) {
    /* Submit in waves, from inside the loop, as an event-driven program would. */
    while (submitted < N && submitted < l.n + 8) {
      uint64_t v = (uint64_t)submitted;
      cr_assert_eq(mproc_pool_apply_async_ex(p, plus_task, &v, 8, &cb, &r[submitted]), 0);
      submitted++;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int n = poll(&pf, 1, 20000);
    cr_assert_eq(n, 1, "the descriptor never became readable (%d of %d done)", l.n, N);
    int ran;
    CALL(ran = mproc_pool_poll(p, 0));
    cr_assert_geq(ran, 0);
    loops++;
  }
  cr_expect_eq(l.ok, N / 2);
  cr_expect_eq(l.failed, N / 2);
  bool seen[N] = {0};
  for (int i = 0; i < N; i++) {
    cr_assert(!seen[l.order[i]]);
    seen[l.order[i]] = true;
  }
  /* Nothing pending: once the last announcement is taken, not readable any more. */
  cr_expect_eq(CALL(mproc_pool_poll(p, 0)), 0);
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  cr_expect_eq(poll(&pf, 1, 0), 0);
  for (int i = 0; i < N; i++)
    mproc_async_free(r[i]);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_callbacks, bad_input) {
  th_scope s = th_begin();
  mproc_async *a = NULL;
  cr_expect_eq(mproc_pool_fileno(NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_poll(NULL, 0), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_apply_async_ex(NULL, plus_task, NULL, 0, NULL, &a), MPROC_EINVAL);
  cr_expect_null(a);
  mproc_pool *p = th_pool(1);
  cr_expect_eq(mproc_pool_apply_async_ex(p, plus_task, NULL, 0, NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map_ex(p, NULL, NULL, 0, 8, NULL, 8, NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_poll(p, 0), 0);
  cr_expect_eq(mproc_pool_map_ex(p, dbl, NULL, 0, 8, NULL, 8, NULL, NULL), 0);
  mproc_pool_free(p);
  th_end(s);
}
