/* Pool under misbehaving tasks: crashes, kills, timeouts, failing initializers, a dying
 * parent, bad input. */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"
#include "testing.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* Shared with the workers (helpers.h: th_named_*), under any start method. */
static _Atomic int32_t *shared(void) { return th_named_buf; }
static void shared_setup(void) { th_named_new(4096); }
static void shared_teardown(void) { th_named_free(); }

/* Waits until the pool has its full worker count again. */
static bool full_again(mproc_pool *p, int n) {
  for (int i = 0; i < 2000; i++) {
    if (mproc__pool_worker_pids(p, NULL, 0) == n)
      return true;
    sleep_ms(1);
  }
  return false;
}

enum { OK, SEGV, ABORT, EXIT, KILLED };

static int kind_of(int i) {
  switch (i % 20) {
  case 3:
    return SEGV;
  case 7:
    return ABORT;
  case 11:
    return EXIT;
  case 13:
    return KILLED;
  default:
    return OK;
  }
}

static int misbehave(const void *arg, size_t len, mproc_result *res) {
  (void)len;
  int i = *(const int *)arg;
  switch (kind_of(i)) {
  case SEGV:
    raise(SIGSEGV);
    break;
  case ABORT:
    abort();
  case EXIT:
    _exit(5);
  case KILLED:
    /* Says who it is, then waits for the test to kill it from outside. */
    atomic_store(&shared()[i / 20], (int32_t)getpid());
    sleep_ms(30000);
    break;
  }
  int64_t v = (int64_t)i * i;
  return mproc_result_set(res, &v, sizeof v);
}

Test(pool_faults, crashing_tasks_fail_alone, .init = shared_setup, .fini = shared_teardown) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 2, .initializer = th_named_attach, .initargs = th_named_name,
                       .initargs_len = strlen(th_named_name) + 1};
  int rc = mproc_pool_new(&p, &o);
  cr_assert_eq(rc, 0, "mproc_pool_new: %s", mproc_err_name(rc));
  enum { N = 200 };
  mproc_async *a[N];
  int idx[N];
  for (int i = 0; i < N; i++) {
    idx[i] = i;
    cr_assert_eq(mproc_pool_apply_async(p, misbehave, &idx[i], sizeof(int), &a[i]), 0);
  }
  for (int k = 0; k < N / 20; k++) { /* the SIGKILL-from-outside tasks */
    pid_t pid;
    while ((pid = atomic_load(&shared()[k])) == 0)
      sleep_ms(1);
    kill(pid, SIGKILL);
  }
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    int rc = mproc_async_get(a[i], &r, NULL, MPROC_FOREVER);
    if (kind_of(i) == OK) {
      cr_expect_eq(rc, 0, "task %d: %d", i, rc);
      cr_expect_not_null(r, "task %d: no result", i);
      if (r)
        cr_expect_eq(*(int64_t *)r, (int64_t)i * i);
    } else {
      cr_expect_eq(rc, MPROC_ECRASHED, "task %d: %d", i, rc);
      const char *e = mproc_async_error(a[i]);
      cr_expect(e && strstr(e, "worker"), "task %d: %s", i, e ? e : "(null)");
      if (kind_of(i) == KILLED)
        cr_expect(e && strstr(e, "signal 9"), "task %d: %s", i, e ? e : "(null)");
      if (kind_of(i) == EXIT)
        cr_expect(e && strstr(e, "status 5"), "task %d: %s", i, e ? e : "(null)");
    }
    free(r);
    mproc_async_free(a[i]);
  }
  cr_expect(full_again(p, 2), "the pool did not get its 2 workers back");
  int64_t in[100], out[100];
  for (int i = 0; i < 100; i++)
    in[i] = i;
  int k = 0;
  void *r = NULL;
  cr_expect_eq(mproc_pool_apply(p, misbehave, &k, sizeof k, &r, NULL), 0);
  free(r);
  mproc_pool_free(p);
  (void)in, (void)out;
  th_end(s);
}

static int crash_at_50(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  if (v == 50)
    _exit(3);
  *(int64_t *)out = -v;
  return 0;
}

Test(pool_faults, map_with_a_crashing_element) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 2};
  cr_assert_eq(mproc_pool_new(&p, &o), 0);
  int64_t in[100], out[100] = {0};
  for (int i = 0; i < 100; i++)
    in[i] = i;
  mproc_map_opts mo = {.chunksize = 8};
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_map_async(p, crash_at_50, in, 100, 8, out, 8, &mo, &a), 0);
  cr_expect_eq(mproc_async_get(a, NULL, NULL, MPROC_FOREVER), MPROC_ECRASHED);
  cr_expect_eq(mproc_async_fail_index(a), 50);
  cr_expect(mproc_async_error(a) && strstr(mproc_async_error(a), "status 3"));
  for (int i = 0; i < 100; i++)
    if (i / 8 != 50 / 8)
      cr_expect_eq(out[i], -i, "element %d", i);
  mproc_async_free(a);
  cr_expect_eq(mproc_pool_map(p, crash_at_50, in, 100, 8, out, 8, NULL), MPROC_ECRASHED);
  cr_expect(full_again(p, 2));
  mproc_pool_free(p);
  th_end(s);
}

/* Big chunks cross through the pool's stage (a shared block the worker writes in place).
 * A block whose worker died is set aside (the task may be delivered again) and freed once
 * no worker can touch it; results stay exact throughout. */
static int staged_misbehave(const void *in, void *out, const void *args) {
  int64_t v = *(const int64_t *)in, bad = *(const int64_t *)args;
  if (v == bad)
    _exit(5);
  if (v == -bad)
    sleep_ms(30000);
  *(int64_t *)out = 3 * v;
  return 0;
}

static void expect_staged(mproc_pool *p, const int64_t *out, size_t n, size_t skip_from,
                          size_t skip_to) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if ((i < skip_from || i >= skip_to) && out[i] != 3 * (int64_t)i)
      bad++;
  cr_expect_eq(bad, 0, "%zu results wrong", bad);
  size_t live, retired, committed;
  mproc__pool_stage_usage(p, &live, &retired, &committed);
  cr_expect_eq(live, 0);
  cr_expect_gt(committed, 0, "nothing was staged");
}

static void clean_maps_free_the_stage(mproc_pool *p, const int64_t *in, int64_t *out, size_t n,
                                      const mproc_map_opts *mo) {
  size_t live, retired = 1, committed;
  /* The set-aside blocks are freed when a map starts or ends with every worker idle. */
  for (int i = 0; i < 200 && retired; i++) {
    memset(out, 0, n * sizeof *out);
    cr_assert_eq(mproc_pool_map(p, staged_misbehave, in, n, 8, out, 8, mo), 0);
    expect_staged(p, out, n, 0, 0);
    mproc__pool_stage_usage(p, &live, &retired, &committed);
  }
  cr_expect_eq(retired, 0, "set-aside blocks were never freed");
}

Test(pool_faults, staged_chunk_crash_and_timeout) {
  th_scope s = th_begin();
  size_t n = 65536, cs = 8192; /* 64 KiB in, 64 KiB out a chunk: staged */
  int64_t *in = malloc(n * 8), *out = calloc(n, 8);
  cr_assert(in && out);
  for (size_t i = 0; i < n; i++)
    in[i] = (int64_t)i;
  int64_t crash_at = 40000, none = INT64_MAX;
  for (int timeout = 0; timeout < 2; timeout++) {
    mproc_pool *p = NULL;
    mproc_pool_opts o = {.processes = 2, .task_timeout = timeout ? 0.3 : 0};
    cr_assert_eq(mproc_pool_new(&p, &o), 0);
    int64_t arg = timeout ? -crash_at : crash_at; /* -x: element x hangs */
    mproc_map_opts mo = {.chunksize = cs, .args = &arg, .args_len = sizeof arg};
    int want = timeout ? MPROC_EEXPIRED : MPROC_ECRASHED;
    cr_expect_eq(mproc_pool_map(p, staged_misbehave, in, n, 8, out, 8, &mo), want);
    size_t from = (size_t)crash_at / cs * cs;
    expect_staged(p, out, n, from, from + cs);
    mproc_map_opts clean = {.chunksize = cs, .args = &none, .args_len = sizeof none};
    clean_maps_free_the_stage(p, in, out, n, &clean);
    cr_expect(full_again(p, 2));
    mproc_pool_free(p);
  }
  free(in);
  free(out);
  th_end(s);
}

static int sleeper(const void *arg, size_t len, mproc_result *res) {
  (void)len, (void)res;
  sleep_ms(*(const int *)arg);
  return 0;
}

static int slow_elem(const void *in, void *out, const void *args) {
  (void)args;
  int64_t v = *(const int64_t *)in;
  if (v == 5)
    sleep_ms(30000);
  *(int64_t *)out = v;
  return 0;
}

Test(pool_faults, task_timeout) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 2, .task_timeout = 0.5};
  cr_assert_eq(mproc_pool_new(&p, &o), 0);
  int slow = 30000, quick = 10;
  mproc_async *a = NULL, *b = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, sleeper, &slow, sizeof slow, &a), 0);
  cr_assert_eq(mproc_pool_apply_async(p, sleeper, &quick, sizeof quick, &b), 0);
  cr_expect_eq(mproc_async_get(a, NULL, NULL, MPROC_FOREVER), MPROC_EEXPIRED);
  cr_expect(mproc_async_error(a) && strstr(mproc_async_error(a), "task_timeout"));
  cr_expect_eq(mproc_async_get(b, NULL, NULL, MPROC_FOREVER), 0);
  mproc_async_free(a);
  mproc_async_free(b);
  int64_t in[10], out[10];
  for (int i = 0; i < 10; i++)
    in[i] = i;
  mproc_map_opts mo = {.chunksize = 1};
  mproc_async *m = NULL;
  cr_assert_eq(mproc_pool_map_async(p, slow_elem, in, 10, 8, out, 8, &mo, &m), 0);
  cr_expect_eq(mproc_async_get(m, NULL, NULL, MPROC_FOREVER), MPROC_EEXPIRED);
  cr_expect_eq(mproc_async_fail_index(m), 5);
  for (int i = 0; i < 10; i++)
    if (i != 5)
      cr_expect_eq(out[i], i);
  mproc_async_free(m);
  /* A hang among many short tasks: the supervisor's deadline moves with each of them. */
  mproc_async *many[31];
  int shortish = 20;
  for (int i = 0; i < 31; i++)
    cr_assert_eq(mproc_pool_apply_async(p, sleeper, i == 15 ? &slow : &shortish, sizeof(int),
                                        &many[i]),
                 0);
  for (int i = 0; i < 31; i++) {
    cr_expect_eq(mproc_async_get(many[i], NULL, NULL, MPROC_FOREVER), i == 15 ? MPROC_EEXPIRED : 0,
                 "task %d", i);
    mproc_async_free(many[i]);
  }
  cr_expect(full_again(p, 2));
  mproc_pool_free(p);
  th_end(s);
}

static int init_fails(const void *args, size_t len) {
  (void)args, (void)len;
  return 1;
}

Test(pool_faults, initializer_fails_at_start) {
  th_scope s = th_begin();
  mproc_pool *p = (mproc_pool *)1;
  mproc_pool_opts o = {.processes = 2, .initializer = init_fails};
  cr_expect_eq(mproc_pool_new(&p, &o), MPROC_ETASK);
  cr_expect_null(p);
  th_end(s);
}

static int init_crashes(const void *args, size_t len) {
  (void)args, (void)len;
  abort();
}

Test(pool_faults, initializer_crashes_at_start) {
  th_scope s = th_begin();
  mproc_pool *p = (mproc_pool *)1;
  mproc_pool_opts o = {.processes = 2, .initializer = init_crashes};
  cr_expect_eq(mproc_pool_new(&p, &o), MPROC_ECRASHED);
  cr_expect_null(p);
  th_end(s);
}

/* Succeeds in the first worker only. */
static int init_once(const void *args, size_t len) {
  if (th_named_attach(args, len) != 0)
    return 2;
  return atomic_fetch_add(&shared()[0], 1) == 0 ? 0 : 1;
}

static int crash_now(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  _exit(9);
}

Test(pool_faults, initializer_fails_in_replacements, .init = shared_setup,
     .fini = shared_teardown) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  mproc_pool_opts o = {.processes = 1, .initializer = init_once, .initargs = th_named_name,
                       .initargs_len = strlen(th_named_name) + 1};
  cr_assert_eq(mproc_pool_new(&p, &o), 0);
  mproc_async *c = NULL, *a[5];
  cr_assert_eq(mproc_pool_apply_async(p, crash_now, NULL, 0, &c), 0);
  int ms = 1;
  for (int i = 0; i < 5; i++)
    cr_assert_eq(mproc_pool_apply_async(p, sleeper, &ms, sizeof ms, &a[i]), 0);
  cr_expect_eq(mproc_async_get(c, NULL, NULL, MPROC_FOREVER), MPROC_ECRASHED);
  for (int i = 0; i < 5; i++) {
    cr_expect_eq(mproc_async_get(a[i], NULL, NULL, MPROC_FOREVER), MPROC_ECRASHED);
    const char *e = mproc_async_error(a[i]);
    cr_expect(e && strstr(e, "initializer"), "%s", e ? e : "(null)");
    mproc_async_free(a[i]);
  }
  mproc_async_free(c);
  /* Later tasks fail too, instead of waiting forever. */
  cr_expect_eq(mproc_pool_apply(p, sleeper, &ms, sizeof ms, NULL, NULL), MPROC_ECRASHED);
  cr_expect_lt(atomic_load(&shared()[0]), 10, "respawned endlessly");
  cr_expect_eq(mproc_pool_close(p), 0);
  cr_expect_eq(mproc_pool_join(p), 0);
  mproc_pool_free(p);
  th_end(s);
}

static _Noreturn int wait_forever(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  for (;;)
    pause();
}

Test(pool_faults, parent_killed_takes_everything_down) {
  th_scope s = th_begin();
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t child = th_fork_tied();
  cr_assert_geq(child, 0);
  if (child == 0) {
    close(fds[0]);
    mproc_pool *p = NULL;
    mproc_pool_opts o = {.processes = 2};
    if (mproc_pool_new(&p, &o) != 0)
      _exit(1);
    pid_t pids[3] = {mproc__pool_supervisor_pid(p)};
    mproc__pool_worker_pids(p, pids + 1, 2);
    mproc_async *a;
    mproc_pool_apply_async(p, wait_forever, NULL, 0, &a);
    if (write(fds[1], pids, sizeof pids) != (ssize_t)sizeof pids)
      _exit(1);
    for (;;)
      pause();
  }
  close(fds[1]);
  pid_t pids[3] = {0};
  cr_assert_eq(read(fds[0], pids, sizeof pids), (ssize_t)sizeof pids);
  close(fds[0]);
  for (int i = 0; i < 3; i++)
    cr_assert(th_pid_alive(pids[i]), "pid %d", pids[i]);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  for (int i = 0; i < 3; i++)
    cr_expect(th_wait_gone(pids[i], 1.0), "%s %d outlived its parent",
              i ? "worker" : "supervisor", pids[i]);
  th_end(s);
}

static int noop_task(const void *arg, size_t len, mproc_result *res) {
  (void)arg, (void)len, (void)res;
  return 0;
}

static int noop_map(const void *in, void *out, const void *args) {
  (void)in, (void)out, (void)args;
  return 0;
}

Test(pool_faults, bad_input) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  cr_expect_eq(mproc_pool_new(NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_new(&p, &(mproc_pool_opts){.processes = -1}), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_new(&p, &(mproc_pool_opts){.processes = 1 << 30}), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_new(&p, &(mproc_pool_opts){.task_timeout = -1}), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_new(&p, &(mproc_pool_opts){.initargs_len = 4}), MPROC_EINVAL);
  cr_expect_null(p);

  mproc_async *a = NULL;
  int64_t x = 1, y = 0;
  cr_expect_eq(mproc_pool_apply(NULL, noop_task, NULL, 0, NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_apply_async(NULL, noop_task, NULL, 0, &a), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(NULL, noop_map, &x, 1, 8, &y, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map_async(NULL, noop_map, &x, 1, 8, &y, 8, NULL, &a), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_close(NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_join(NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_terminate(NULL), MPROC_EINVAL);
  mproc_pool_free(NULL);
  cr_expect_eq(mproc_async_get(NULL, NULL, NULL, 0), MPROC_EINVAL);
  cr_expect_eq(mproc_async_wait(NULL, 0), MPROC_EINVAL);
  cr_expect(!mproc_async_ready(NULL));
  cr_expect(!mproc_async_successful(NULL));
  cr_expect_null(mproc_async_error(NULL));
  cr_expect_eq(mproc_async_fail_index(NULL), SIZE_MAX);
  mproc_async_free(NULL);
  cr_expect_null(mproc_result_alloc(NULL, 1));
  cr_expect_eq(mproc_result_set(NULL, "x", 1), MPROC_EINVAL);
  cr_expect_neq(mproc_result_fail(NULL, "x"), 0);

  cr_assert_eq(mproc_pool_new(&p, &(mproc_pool_opts){.processes = 1}), 0);
  cr_expect_eq(mproc_pool_apply(p, NULL, NULL, 0, NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_apply(p, noop_task, NULL, 5, NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_apply_async(p, noop_task, NULL, 0, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, NULL, &x, 1, 8, &y, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, noop_map, &x, 1, 0, &y, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, noop_map, NULL, 0, 0, NULL, 0, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, noop_map, NULL, 1, 8, &y, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, noop_map, &x, 1, 8, NULL, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, noop_map, &x, 1, 8, NULL, 0, NULL), 0);
  cr_expect_eq(mproc_pool_map(p, noop_map, &x, SIZE_MAX / 2, 8, &y, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, noop_map, &x, 1, SIZE_MAX, &y, 8, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map(p, noop_map, &x, 1, 8, &y, 8,
                              &(mproc_map_opts){.args_len = 3}),
               MPROC_EINVAL);
  cr_expect_eq(mproc_pool_map_async(p, noop_map, &x, 1, 8, &y, 8, NULL, NULL), MPROC_EINVAL);
  cr_expect_eq(mproc_pool_join(p), MPROC_ESTATE);
  mproc_pool_free(p);
  th_end(s);
}

Test(pool_faults, supervisor_killed_from_outside) {
  th_scope s = th_begin();
  mproc_pool *p = NULL;
  cr_assert_eq(mproc_pool_new(&p, &(mproc_pool_opts){.processes = 2}), 0);
  int slow = 30000;
  mproc_async *a = NULL;
  cr_assert_eq(mproc_pool_apply_async(p, sleeper, &slow, sizeof slow, &a), 0);
  pid_t w[2];
  cr_assert_eq(mproc__pool_worker_pids(p, w, 2), 2);
  kill(mproc__pool_supervisor_pid(p), SIGKILL);
  cr_expect_eq(mproc_async_get(a, NULL, NULL, MPROC_FOREVER), MPROC_ECRASHED);
  cr_expect(mproc_async_error(a) && strstr(mproc_async_error(a), "supervisor"));
  mproc_async_free(a);
  cr_expect_eq(mproc_pool_apply(p, sleeper, &slow, sizeof slow, NULL, NULL), MPROC_ECLOSED);
  for (int i = 0; i < 2; i++)
    cr_expect(th_wait_gone(w[i], 1.0));
  mproc_pool_free(p);
  th_end(s);
}
