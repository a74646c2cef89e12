/* The Manager's managed objects: Lock, RLock, Semaphore, BoundedSemaphore, Event,
 * Condition, Barrier, Queue, JoinableQueue (the local kinds' handles, driven by the local
 * calls), Value and Namespace. Each case across processes where it matters, results exact:
 * 4 processes x 10 000 get+set under a managed Lock, a blocked call that holds no one else
 * up. Runs under every start method (the server is born with it). */
#define _GNU_SOURCE
#include "helpers.h"
#include "mproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY "manager key"
#define KEYLEN (sizeof KEY - 1)

static mproc_manager *start(void) {
  mproc_manager_opts o = {.authkey = KEY, .authkey_len = KEYLEN};
  mproc_manager *m;
  cr_assert_eq(mproc_manager_new(&m, &o), 0);
  return m;
}

/* The call first, then its outputs (an argument list would read them before the call). */
#define EXPECT_BYTES(call, v, n, want)                                                         \
  do {                                                                                         \
    int rc_ = (call);                                                                          \
    expect_bytes(rc_, v, n, want);                                                             \
  } while (0)

static void expect_bytes(int rc, void *v, size_t n, const char *want) {
  cr_assert_eq(rc, 0, "%s", mproc_err_name(rc));
  cr_assert_eq(n, strlen(want));
  cr_assert(memcmp(v, want, n) == 0, "got %.*s, want %s", (int)n, (char *)v, want);
  free(v);
}

Test(manager_sync, lock_and_rlock) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_lock *l, *r;
  cr_assert_eq(mproc_manager_lock(m, "l", false, &l), 0);
  cr_assert_eq(mproc_manager_lock(m, "r", true, &r), 0);
  cr_assert_eq(mproc_lock_release(l), MPROC_ESTATE);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  cr_assert_eq(mproc_lock_acquire(l, 0), MPROC_EAGAIN);      /* a plain Lock: again waits */
  cr_assert_eq(mproc_lock_acquire(l, 0.02), MPROC_ETIMEDOUT);
  pid_t c = th_fork_tied();
  if (c == 0) /* another process: held, and not its to release */
    _exit(mproc_lock_acquire(l, 0) == MPROC_EAGAIN && mproc_lock_release(l) == MPROC_ESTATE &&
                  mproc_lock_acquire(l, 0.02) == MPROC_ETIMEDOUT
              ? 0 : 1);
  cr_assert_eq(th_exitcode(c), 0);
  cr_assert_eq(mproc_lock_release(l), 0);
  cr_assert_eq(mproc_lock_release(l), MPROC_ESTATE);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(mproc_lock_acquire(r, 0), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(mproc_lock_release(r), 0);
  cr_assert_eq(mproc_lock_release(r), MPROC_ESTATE);
  mproc_lock *other;
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  cr_assert_eq(mproc_manager_lock(m, "d", false, &other), MPROC_EINVAL); /* a dict's name */
  mproc_dict_free(d);
  mproc_lock_free(l);
  mproc_lock_free(r);
  mproc_manager_free(m);
  th_end(s);
}

#define WORKERS 4
#define ROUNDS 10000

/* get, add one, set: exact only if the managed Lock excludes. */
Test(manager_sync, four_processes_get_set_under_a_lock_exactly) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_dict *d;
  mproc_lock *l;
  cr_assert_eq(mproc_manager_dict(m, "counts", &d), 0);
  cr_assert_eq(mproc_manager_lock(m, "guard", false, &l), 0);
  int64_t zero = 0;
  cr_assert_eq(mproc_dict_set(d, "k", 1, &zero, sizeof zero), 0);
  pid_t pids[WORKERS];
  for (int w = 0; w < WORKERS; w++) {
    if ((pids[w] = th_fork_tied()) == 0) {
      for (int i = 0; i < ROUNDS; i++) {
        void *v;
        size_t n;
        int64_t x;
        if (mproc_lock_acquire(l, MPROC_FOREVER) || mproc_dict_get(d, "k", 1, &v, &n) ||
            n != sizeof x)
          _exit(1);
        memcpy(&x, v, sizeof x);
        free(v);
        x++;
        if (mproc_dict_set(d, "k", 1, &x, sizeof x) || mproc_lock_release(l))
          _exit(2);
      }
      _exit(0);
    }
    cr_assert(pids[w] > 0);
  }
  for (int w = 0; w < WORKERS; w++)
    cr_assert_eq(th_exitcode(pids[w]), 0);
  int64_t now = -1;
  cr_assert_eq(mproc_dict_add_i64(d, "k", 1, 0, &now), 0);
  cr_assert_eq(now, WORKERS * ROUNDS);
  mproc_dict_free(d);
  mproc_lock_free(l);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_sync, semaphores) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_sem *a, *b;
  cr_assert_eq(mproc_manager_sem(m, "a", 2, false, &a), 0);
  cr_assert_eq(mproc_manager_sem(m, "b", 1, true, &b), 0);
  cr_assert_eq(mproc_sem_value(a), 2);
  cr_assert_eq(mproc_sem_acquire(a, 0), 0);
  cr_assert_eq(mproc_sem_acquire(a, 0), 0);
  cr_assert_eq(mproc_sem_acquire(a, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc_sem_acquire(a, 0.02), MPROC_ETIMEDOUT);
  pid_t c = th_fork_tied();
  if (c == 0) /* released by another process: not owned */
    _exit(mproc_sem_release(a) == 0 ? 0 : 1);
  cr_assert_eq(mproc_sem_acquire(a, MPROC_FOREVER), 0);
  cr_assert_eq(th_exitcode(c), 0);
  cr_assert_eq(mproc_sem_release(a), 0);
  cr_assert_eq(mproc_sem_release(a), 0);
  cr_assert_eq(mproc_sem_release(a), 0); /* unbounded: past its start */
  cr_assert_eq(mproc_sem_value(a), 3);
  cr_assert_eq(mproc_sem_release(b), MPROC_ESTATE); /* bounded, at its start */
  cr_assert_eq(mproc_sem_acquire(b, 0), 0);
  cr_assert_eq(mproc_sem_release(b), 0);
  cr_assert_eq(mproc_manager_sem(m, "c", (unsigned)INT32_MAX + 1u, false, &a), MPROC_EINVAL);
  mproc_sem_free(a);
  mproc_sem_free(b);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_sync, event_wakes_a_waiter_in_another_process) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_event *e;
  cr_assert_eq(mproc_manager_event(m, "e", &e), 0);
  cr_assert(!mproc_event_is_set(e));
  cr_assert_eq(mproc_event_wait(e, 0), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_event_wait(e, 0.02), MPROC_ETIMEDOUT);
  pid_t c = th_fork_tied();
  if (c == 0)
    _exit(mproc_event_wait(e, MPROC_FOREVER) == 0 && mproc_event_is_set(e) ? 0 : 1);
  th_wait_asleep(c);
  cr_assert_eq(mproc_event_set(e), 0);
  cr_assert_eq(th_exitcode(c), 0);
  cr_assert_eq(mproc_event_wait(e, 0), 0);
  cr_assert_eq(mproc_event_clear(e), 0);
  cr_assert(!mproc_event_is_set(e));
  mproc_event_free(e);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_sync, condition_wait_and_notify) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_lock *l;
  mproc_cond *c, *own;
  mproc_dict *d;
  cr_assert_eq(mproc_manager_lock(m, "l", false, &l), 0);
  cr_assert_eq(mproc_manager_cond(m, "c", l, &c), 0);
  cr_assert_eq(mproc_manager_cond(m, "own", NULL, &own), 0);
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  cr_assert_eq(mproc_cond_wait(c, 0), MPROC_ESTATE);   /* the lock not held */
  cr_assert_eq(mproc_cond_notify(c, 1), MPROC_ESTATE);
  cr_assert_eq(mproc_cond_notify(c, -1), MPROC_EINVAL);
  pid_t kids[2];
  for (int k = 0; k < 2; k++)
    if ((kids[k] = th_fork_tied()) == 0) {
      /* Wait for "go", under the condition's lock, as Python's wait_for does. */
      if (mproc_cond_acquire(c, MPROC_FOREVER))
        _exit(1);
      mproc_dict_add_i64(d, "waiting", 7, 1, NULL);
      for (;;) {
        if (mproc_dict_contains(d, "go", 2) == 1)
          break;
        if (mproc_cond_wait(c, MPROC_FOREVER))
          _exit(2);
      }
      _exit(mproc_cond_release(c) == 0 ? 0 : 3);
    }
  int64_t waiting = 0;
  while (waiting < 2) {
    th_sleep_us(2000);
    cr_assert_eq(mproc_dict_add_i64(d, "waiting", 7, 0, &waiting), 0);
  }
  cr_assert_eq(mproc_cond_acquire(c, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_dict_set(d, "go", 2, "", 0), 0);
  cr_assert_eq(mproc_cond_notify_all(c), 0);
  cr_assert_eq(mproc_cond_release(c), 0);
  for (int k = 0; k < 2; k++)
    cr_assert_eq(th_exitcode(kids[k]), 0);
  /* A timed wait with no one notifying, on the own RLock held twice: back to depth 2. */
  cr_assert_eq(mproc_cond_acquire(own, 0), 0);
  cr_assert_eq(mproc_cond_acquire(own, 0), 0);
  cr_assert_eq(mproc_cond_wait(own, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_cond_release(own), 0);
  cr_assert_eq(mproc_cond_release(own), 0);
  cr_assert_eq(mproc_cond_release(own), MPROC_ESTATE);
  mproc_lock *local;
  cr_assert_eq(mproc_lock_new(&local, false), 0);
  cr_assert_eq(mproc_manager_cond(m, "x", local, &c), MPROC_EINVAL);
  mproc_lock_free(local);
  mproc_cond_free(c);
  mproc_cond_free(own);
  mproc_lock_free(l);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_sync, barrier_indices_abort_reset) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_barrier *b;
  cr_assert_eq(mproc_manager_barrier(m, "b", 3, &b), 0);
  pid_t kids[2];
  for (int k = 0; k < 2; k++)
    if ((kids[k] = th_fork_tied()) == 0)
      _exit(th_barrier_once(b, MPROC_FOREVER));
  int me = mproc_barrier_wait(b, MPROC_FOREVER);
  cr_assert(me >= 0 && me < 3, "%d", me);
  int seen = 1 << me;
  for (int k = 0; k < 2; k++) {
    int code = th_exitcode(kids[k]);
    cr_assert(code >= 10 && code < 13, "%d", code);
    seen |= 1 << (code - 10);
  }
  cr_assert_eq(seen, 7, "the indices were not distinct");
  /* A timeout breaks it for everyone until reset. */
  cr_assert_eq(mproc_barrier_wait(b, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_barrier_wait(b, 0), MPROC_ESTATE);
  cr_assert_eq(mproc_barrier_reset(b), 0);
  pid_t c = th_fork_tied();
  if (c == 0)
    _exit(th_barrier_once(b, MPROC_FOREVER));
  th_wait_asleep(c);
  cr_assert_eq(mproc_barrier_abort(b), 0);
  cr_assert_eq(th_exitcode(c), 1); /* MPROC_ESTATE */
  cr_assert_eq(mproc_barrier_reset(b), 0);
  cr_assert_eq(mproc_manager_barrier(m, "z", 0, &b), MPROC_EINVAL);
  mproc_barrier_free(b);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_sync, queue_across_processes) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_queue *q, *small;
  cr_assert_eq(mproc_manager_queue(m, "q", NULL, &q), 0);
  cr_assert_eq(mproc_manager_queue(m, "small", &(mproc_queue_opts){.maxsize = 2}, &small), 0);
  void *v;
  size_t n;
  cr_assert(mproc_queue_empty(q));
  cr_assert_eq(mproc_queue_get(q, &v, &n, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc_queue_get(q, &v, &n, 0.02), MPROC_ETIMEDOUT);
  /* A getter blocked in another process, woken by a put. */
  pid_t c = th_fork_tied();
  if (c == 0) {
    int ok = 1;
    for (int i = 0; i < 100 && ok; i++) {
      char want[16];
      snprintf(want, sizeof want, "m%d", i);
      ok = mproc_queue_get(q, &v, &n, MPROC_FOREVER) == 0 && n == strlen(want) &&
           memcmp(v, want, n) == 0;
      free(ok ? v : NULL);
    }
    _exit(ok && mproc_queue_get(q, &v, &n, MPROC_FOREVER) == MPROC_ECLOSED ? 0 : 1);
  }
  th_wait_asleep(c);
  for (int i = 0; i < 100; i++) {
    char msg[16];
    snprintf(msg, sizeof msg, "m%d", i);
    cr_assert_eq(mproc_queue_put(q, msg, strlen(msg), MPROC_FOREVER), 0);
  }
  cr_assert_eq(mproc_queue_close(q), 0);
  cr_assert_eq(th_exitcode(c), 0, "FIFO order or the close not seen");
  cr_assert_eq(mproc_queue_put(q, "x", 1, 0), MPROC_ECLOSED);
  /* Bounded: full, then a put that waits for a get from another process. */
  cr_assert_eq(mproc_queue_put(small, "a", 1, 0), 0);
  cr_assert_eq(mproc_queue_put(small, "", 0, 0), 0);
  cr_assert(mproc_queue_full(small));
  cr_assert_eq(mproc_queue_qsize(small), 2);
  cr_assert_eq(mproc_queue_put(small, "c", 1, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc_queue_put(small, "c", 1, 0.02), MPROC_ETIMEDOUT);
  if ((c = th_fork_tied()) == 0) {
    th_sleep_us(20000);
    int rc = mproc_queue_get(small, &v, &n, 0);
    _exit(rc == 0 && n == 1 && memcmp(v, "a", 1) == 0 ? 0 : 1);
  }
  cr_assert_eq(mproc_queue_put(small, "c", 1, MPROC_FOREVER), 0);
  cr_assert_eq(th_exitcode(c), 0);
  EXPECT_BYTES(mproc_queue_get(small, &v, &n, 0), v, n, "");
  EXPECT_BYTES(mproc_queue_get(small, &v, &n, 0), v, n, "c");
  cr_assert_eq(mproc_queue_task_done(small), MPROC_ESTATE); /* not joinable */
  cr_assert_eq(mproc_queue_put(q, NULL, 1, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_queue_get(q, NULL, &n, 0), MPROC_EINVAL);
  mproc_queue_free(q);
  mproc_queue_free(small);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_sync, joinable_queue) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_queue *q;
  cr_assert_eq(mproc_manager_queue(m, "jq", &(mproc_queue_opts){.joinable = true}, &q), 0);
  cr_assert_eq(mproc_queue_join(q, 0), 0);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(mproc_queue_put(q, "t", 1, 0), 0);
  cr_assert_eq(mproc_queue_join(q, 0.02), MPROC_ETIMEDOUT);
  pid_t c = th_fork_tied();
  if (c == 0) {
    void *v;
    size_t n;
    for (int i = 0; i < 5; i++) {
      if (mproc_queue_get(q, &v, &n, MPROC_FOREVER))
        _exit(1);
      free(v);
      if (mproc_queue_task_done(q))
        _exit(2);
    }
    _exit(0);
  }
  cr_assert_eq(mproc_queue_join(q, MPROC_FOREVER), 0);
  cr_assert_eq(th_exitcode(c), 0);
  cr_assert_eq(mproc_queue_task_done(q), MPROC_ESTATE); /* one too many */
  mproc_queue_free(q);
  mproc_manager_free(m);
  th_end(s);
}

/* A call blocked in the server (a get on an empty queue) holds no one else up. */
Test(manager_sync, a_blocked_call_holds_no_one_up) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_queue *q;
  mproc_dict *d;
  cr_assert_eq(mproc_manager_queue(m, "q", NULL, &q), 0);
  cr_assert_eq(mproc_manager_dict(m, "d", &d), 0);
  pid_t c = th_fork_tied();
  if (c == 0) {
    void *v;
    size_t n;
    int rc = mproc_queue_get(q, &v, &n, MPROC_FOREVER);
    _exit(rc == 0 && n == 4 && memcmp(v, "done", 4) == 0 ? 0 : 1);
  }
  th_wait_asleep(c);
  for (int i = 0; i < 1000; i++)
    cr_assert_eq(mproc_dict_add_i64(d, "n", 1, 1, NULL), 0);
  cr_assert(th_pid_alive(c));
  cr_assert_eq(mproc_queue_put(q, "done", 4, 0), 0);
  cr_assert_eq(th_exitcode(c), 0);
  mproc_queue_free(q);
  mproc_dict_free(d);
  mproc_manager_free(m);
  th_end(s);
}

Test(manager_sync, value_and_namespace) {
  th_scope s = th_begin();
  mproc_manager *m = start();
  mproc_value *v, *again;
  void *p;
  size_t n;
  cr_assert_eq(mproc_manager_value(m, "v", "init", 4, &v), 0);
  EXPECT_BYTES(mproc_value_get(v, &p, &n), p, n, "init");
  cr_assert_eq(mproc_manager_value(m, "v", "other", 5, &again), 0); /* opened: kept */
  EXPECT_BYTES(mproc_value_get(again, &p, &n), p, n, "init");
  cr_assert_eq(mproc_value_set(v, "new", 3), 0);
  EXPECT_BYTES(mproc_value_get(again, &p, &n), p, n, "new");
  cr_assert_eq(mproc_value_set(v, "", 0), 0);
  EXPECT_BYTES(mproc_value_get(v, &p, &n), p, n, "");
  cr_assert_eq(mproc_value_set(v, NULL, 1), MPROC_EINVAL);
  mproc_value_free(v);
  mproc_value_free(again);
  mproc_namespace *ns;
  cr_assert_eq(mproc_manager_namespace(m, "ns", &ns), 0);
  cr_assert_eq(mproc_ns_get(ns, "x", &p, &n), MPROC_ENOTFOUND); /* AttributeError */
  cr_assert_eq(mproc_ns_set(ns, "x", "1", 1), 0);
  cr_assert_eq(mproc_ns_set(ns, "y", "2", 1), 0);
  cr_assert_eq(mproc_ns_set(ns, "x", "one", 3), 0);
  pid_t c = th_fork_tied();
  if (c == 0) {
    int rc = mproc_ns_get(ns, "x", &p, &n);
    _exit(rc == 0 && n == 3 && memcmp(p, "one", 3) == 0 && mproc_ns_set(ns, "z", "3", 1) == 0
              ? 0 : 1);
  }
  cr_assert_eq(th_exitcode(c), 0);
  mproc_bytes *names;
  cr_assert_eq(mproc_ns_attrs(ns, &names, &n), 0);
  cr_assert_eq(n, 3);
  free(names);
  cr_assert_eq(mproc_ns_del(ns, "y"), 0);
  cr_assert_eq(mproc_ns_del(ns, "y"), MPROC_ENOTFOUND);
  EXPECT_BYTES(mproc_ns_get(ns, "z", &p, &n), p, n, "3");
  cr_assert_eq(mproc_ns_set(ns, NULL, "v", 1), MPROC_EINVAL);
  mproc_dict *d;
  cr_assert_eq(mproc_manager_dict(m, "ns", &d), MPROC_EINVAL); /* another kind's name */
  mproc_ns_free(ns);
  mproc_manager_free(m);
  th_end(s);
}
