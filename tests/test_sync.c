/* The sync layer: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier across
 * processes. Fault cases (killed holders and waiters, bad input) are in
 * tests/faults/test_sync_faults.c. */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- Lock and RLock ---- */

Test(lock, acquire_release_and_states) {
  th_scope sc = th_begin();
  mproc_lock *l;
  cr_assert_eq(mproc_lock_new(&l, false), 0);
  cr_assert_eq(mproc_lock_release(l), MPROC_ESTATE);
  cr_assert_eq(mproc_lock_acquire(l, MPROC_FOREVER), 0);
  /* A plain lock relocked by its holder waits (Python's rule). */
  cr_assert_eq(mproc_lock_acquire(l, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc_lock_acquire(l, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_lock_release(l), 0);
  cr_assert_eq(mproc_lock_release(l), MPROC_ESTATE);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  cr_assert_eq(mproc_lock_release(l), 0);
  cr_assert_eq(mproc_lock_acquire(l, 5.0), 0);
  cr_assert_eq(mproc_lock_release(l), 0);
  mproc_lock_free(l);
  th_end(sc);
}

Test(lock, rlock_counts_recursion) {
  th_scope sc = th_begin();
  mproc_lock *l;
  cr_assert_eq(mproc_lock_new(&l, true), 0);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(mproc_lock_acquire(l, i == 0 ? MPROC_FOREVER : 0), 0);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(mproc_lock_release(l), 0);
  cr_assert_eq(mproc_lock_release(l), MPROC_ESTATE);
  mproc_lock_free(l);
  th_end(sc);
}

static int try_from_child(mproc_lock *l) {
  if (mproc_lock_acquire(l, 0) != MPROC_EAGAIN)
    return 1;
  if (mproc_lock_acquire(l, 0.02) != MPROC_ETIMEDOUT)
    return 2;
  if (mproc_lock_release(l) != MPROC_ESTATE) /* held by the parent, not by us */
    return 3;
  return 0;
}

Test(lock, other_process_cannot_take_or_release) {
  th_scope sc = th_begin();
  for (int rec = 0; rec < 2; rec++) {
    mproc_lock *l;
    cr_assert_eq(mproc_lock_new(&l, rec), 0);
    cr_assert_eq(mproc_lock_acquire(l, MPROC_FOREVER), 0);
    pid_t pid = th_fork_tied();
    if (pid == 0)
      _exit(try_from_child(l));
    cr_assert_eq(th_exitcode(pid), 0);
    cr_assert_eq(mproc_lock_release(l), 0);
    mproc_lock_free(l);
  }
  th_end(sc);
}

static int hold_then_release(mproc_lock *l, _Atomic uint32_t *flag) {
  if (mproc_lock_acquire(l, MPROC_FOREVER) != 0)
    return 1;
  atomic_store(flag, 1);
  mproc__futex_wake(flag, 1);
  /* Held until the parent has seen it taken; then a little longer, so that its acquire
   * below blocks. */
  int64_t deadline = mproc__deadline(10);
  while (atomic_load(flag) != 2 && mproc__remaining_ns(deadline) > 0)
    mproc__futex_wait(flag, 1, deadline);
  th_sleep_us(20 * 1000);
  return mproc_lock_release(l) == 0 ? 0 : 2;
}

Test(lock, blocked_acquire_gets_it_when_released) {
  th_scope sc = th_begin();
  mproc_lock *l;
  cr_assert_eq(mproc_lock_new(&l, false), 0);
  _Atomic uint32_t *flag = th_shared(4096);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(hold_then_release(l, flag));
  int64_t deadline = mproc__deadline(10);
  while (atomic_load(flag) == 0 && mproc__remaining_ns(deadline) > 0)
    mproc__futex_wait(flag, 0, deadline);
  cr_assert_eq(atomic_load(flag), 1, "the child never took the lock");
  cr_assert_eq(mproc_lock_acquire(l, 0), MPROC_EAGAIN);
  atomic_store(flag, 2);
  mproc__futex_wake(flag, 1);
  cr_assert_eq(mproc_lock_acquire(l, 10.0), 0);
  cr_assert_eq(mproc_lock_release(l), 0);
  cr_assert_eq(th_exitcode(pid), 0);
  mproc__shared_unmap((void *)flag, 4096);
  mproc_lock_free(l);
  th_end(sc);
}

enum { NPROC = 4, NINC = 20000 };

struct counter {
  mproc_lock *lock;
  long a, b;
};

static int lock_incrementer(struct counter *c) {
  for (int i = 0; i < NINC; i++) {
    if (mproc_lock_acquire(c->lock, MPROC_FOREVER) != 0)
      return 1;
    c->a++;
    c->b += 3;
    if (mproc_lock_release(c->lock) != 0)
      return 2;
  }
  return 0;
}

static void exact_counter(bool recursive) {
  th_scope sc = th_begin();
  struct counter *c = th_shared(sizeof *c);
  cr_assert_eq(mproc_lock_new(&c->lock, recursive), 0);
  pid_t pids[NPROC];
  for (int i = 0; i < NPROC; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(lock_incrementer(c));
  for (int i = 0; i < NPROC; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  cr_assert_eq(c->a, (long)NPROC * NINC);
  cr_assert_eq(c->b, 3L * NPROC * NINC);
  mproc_lock_free(c->lock);
  mproc__shared_unmap(c, sizeof *c);
  th_end(sc);
}

Test(lock, exact_counter_under_contention) { exact_counter(false); }
Test(lock, exact_counter_under_rlock) { exact_counter(true); }

/* ---- Semaphore ---- */

Test(sem, counts_and_timeouts) {
  th_scope sc = th_begin();
  mproc_sem *s;
  cr_assert_eq(mproc_sem_new(&s, 2, false), 0);
  cr_assert_eq(mproc_sem_value(s), 2);
  cr_assert_eq(mproc_sem_acquire(s, 0), 0);
  cr_assert_eq(mproc_sem_acquire(s, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_sem_value(s), 0);
  cr_assert_eq(mproc_sem_acquire(s, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc_sem_acquire(s, 0.02), MPROC_ETIMEDOUT);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(mproc_sem_release(s), 0); /* unbounded: above the initial value is fine */
  cr_assert_eq(mproc_sem_value(s), 5);
  mproc_sem_free(s);
  th_end(sc);
}

Test(sem, bounded_refuses_release_above_initial) {
  th_scope sc = th_begin();
  mproc_sem *s;
  cr_assert_eq(mproc_sem_new(&s, 2, true), 0);
  cr_assert_eq(mproc_sem_release(s), MPROC_ESTATE);
  cr_assert_eq(mproc_sem_value(s), 2);
  cr_assert_eq(mproc_sem_acquire(s, 0), 0);
  cr_assert_eq(mproc_sem_release(s), 0);
  cr_assert_eq(mproc_sem_release(s), MPROC_ESTATE);
  cr_assert_eq(mproc_sem_value(s), 2);
  mproc_sem_free(s);
  cr_assert_eq(mproc_sem_new(&s, 0, true), 0);
  cr_assert_eq(mproc_sem_release(s), MPROC_ESTATE);
  mproc_sem_free(s);
  th_end(sc);
}

struct semtest {
  mproc_sem *sem;
  _Atomic int inside, max_inside, total;
};

static int sem_worker(struct semtest *t) {
  for (int i = 0; i < 300; i++) {
    if (mproc_sem_acquire(t->sem, MPROC_FOREVER) != 0)
      return 1;
    int now = atomic_fetch_add(&t->inside, 1) + 1;
    int m = atomic_load(&t->max_inside);
    while (now > m && !atomic_compare_exchange_weak(&t->max_inside, &m, now))
      ;
    atomic_fetch_add(&t->total, 1);
    for (int k = 0; k < 200; k++)
      mproc__cpu_relax();
    atomic_fetch_sub(&t->inside, 1);
    if (mproc_sem_release(t->sem) != 0)
      return 2;
  }
  return 0;
}

Test(sem, concurrency_never_above_value) {
  th_scope sc = th_begin();
  struct semtest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_sem_new(&t->sem, 2, true), 0);
  pid_t pids[6];
  for (int i = 0; i < 6; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(sem_worker(t));
  for (int i = 0; i < 6; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  cr_assert_leq(atomic_load(&t->max_inside), 2);
  cr_assert_geq(atomic_load(&t->max_inside), 1);
  cr_assert_eq(atomic_load(&t->total), 6 * 300);
  cr_assert_eq(mproc_sem_value(t->sem), 2);
  mproc_sem_free(t->sem);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

static int sem_ping(mproc_sem **s) {
  for (int i = 0; i < 2000; i++) {
    if (mproc_sem_acquire(s[0], 10) != 0)
      return 1;
    if (mproc_sem_release(s[1]) != 0)
      return 2;
  }
  return 0;
}

Test(sem, ping_pong_between_processes) {
  th_scope sc = th_begin();
  mproc_sem **s = th_shared(4096);
  cr_assert_eq(mproc_sem_new(&s[0], 0, false), 0);
  cr_assert_eq(mproc_sem_new(&s[1], 0, false), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(sem_ping(s));
  for (int i = 0; i < 2000; i++) {
    cr_assert_eq(mproc_sem_release(s[0]), 0);
    cr_assert_eq(mproc_sem_acquire(s[1], 10), 0);
  }
  cr_assert_eq(th_exitcode(pid), 0);
  cr_assert_eq(mproc_sem_value(s[0]), 0);
  cr_assert_eq(mproc_sem_value(s[1]), 0);
  mproc_sem_free(s[0]);
  mproc_sem_free(s[1]);
  mproc__shared_unmap(s, 4096);
  th_end(sc);
}

/* ---- Event ---- */

Test(event, set_clear_wait) {
  th_scope sc = th_begin();
  mproc_event *e;
  cr_assert_eq(mproc_event_new(&e), 0);
  cr_assert(!mproc_event_is_set(e));
  cr_assert_eq(mproc_event_wait(e, 0), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_event_wait(e, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_event_set(e), 0);
  cr_assert_eq(mproc_event_set(e), 0);
  cr_assert(mproc_event_is_set(e));
  cr_assert_eq(mproc_event_wait(e, 0), 0);
  cr_assert_eq(mproc_event_wait(e, MPROC_FOREVER), 0);
  cr_assert_eq(mproc_event_clear(e), 0);
  cr_assert_eq(mproc_event_clear(e), 0);
  cr_assert(!mproc_event_is_set(e));
  cr_assert_eq(mproc_event_wait(e, 0), MPROC_ETIMEDOUT);
  mproc_event_free(e);
  th_end(sc);
}

struct evtest {
  mproc_event *go, *done[8];
  _Atomic int started;
};

static int event_waiter(struct evtest *t, int i) {
  atomic_fetch_add(&t->started, 1);
  if (mproc_event_wait(t->go, 30) != 0)
    return 1;
  if (!mproc_event_is_set(t->go))
    return 2;
  return mproc_event_set(t->done[i]) == 0 ? 0 : 3;
}

Test(event, wakes_every_waiting_process) {
  th_scope sc = th_begin();
  enum { N = 5 };
  struct evtest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_event_new(&t->go), 0);
  for (int i = 0; i < N; i++)
    cr_assert_eq(mproc_event_new(&t->done[i]), 0);
  pid_t pids[N];
  for (int i = 0; i < N; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(event_waiter(t, i));
  while (atomic_load(&t->started) < N)
    th_sleep_us(1 * 1000);
  th_sleep_us(20 * 1000); /* most are asleep in the futex by now; either way they must wake */
  for (int i = 0; i < N; i++)
    cr_assert(!mproc_event_is_set(t->done[i]));
  cr_assert_eq(mproc_event_set(t->go), 0);
  for (int i = 0; i < N; i++)
    cr_assert_eq(mproc_event_wait(t->done[i], 30), 0);
  for (int i = 0; i < N; i++) {
    cr_expect_eq(th_exitcode(pids[i]), 0);
    mproc_event_free(t->done[i]);
  }
  mproc_event_free(t->go);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

/* ---- Condition ---- */

Test(cond, needs_the_lock) {
  th_scope sc = th_begin();
  mproc_cond *c;
  cr_assert_eq(mproc_cond_new(&c, NULL), 0);
  cr_assert_eq(mproc_cond_wait(c, 0), MPROC_ESTATE);
  cr_assert_eq(mproc_cond_notify(c, 1), MPROC_ESTATE);
  cr_assert_eq(mproc_cond_notify_all(c), MPROC_ESTATE);
  cr_assert_eq(mproc_cond_release(c), MPROC_ESTATE);
  cr_assert_eq(mproc_cond_acquire(c, 0), 0);
  cr_assert_eq(mproc_cond_notify(c, 1), 0); /* nobody waiting: fine */
  cr_assert_eq(mproc_cond_notify(c, -1), MPROC_EINVAL);
  cr_assert_eq(mproc_cond_notify_all(c), 0);
  cr_assert_eq(mproc_cond_wait(c, 0), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_cond_wait(c, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_cond_release(c), 0);
  cr_assert_eq(mproc_cond_release(c), MPROC_ESTATE);
  mproc_cond_free(c);
  th_end(sc);
}

Test(cond, wait_restores_rlock_depth) {
  th_scope sc = th_begin();
  mproc_cond *c;
  cr_assert_eq(mproc_cond_new(&c, NULL), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(mproc_cond_acquire(c, 0), 0);
  cr_assert_eq(mproc_cond_wait(c, 0.01), MPROC_ETIMEDOUT);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(mproc_cond_release(c), 0);
  cr_assert_eq(mproc_cond_release(c), MPROC_ESTATE);
  mproc_cond_free(c);
  th_end(sc);
}

Test(cond, with_user_lock) {
  th_scope sc = th_begin();
  mproc_lock *l;
  mproc_cond *c;
  cr_assert_eq(mproc_lock_new(&l, false), 0);
  cr_assert_eq(mproc_cond_new(&c, l), 0);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  cr_assert_eq(mproc_cond_acquire(c, 0), MPROC_EAGAIN); /* a plain lock: not reentrant */
  cr_assert_eq(mproc_cond_wait(c, 0), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_cond_release(c), 0);
  cr_assert_eq(mproc_lock_release(l), MPROC_ESTATE);
  mproc_cond_free(c);
  mproc_lock_free(l);
  th_end(sc);
}

enum { NVALUES = 1000 };

struct handover {
  mproc_cond *cond;
  int value;
  bool full;
};

static int consumer(struct handover *h) {
  for (int i = 0; i < NVALUES; i++) {
    if (mproc_cond_acquire(h->cond, MPROC_FOREVER) != 0)
      return 1;
    while (!h->full)
      if (mproc_cond_wait(h->cond, 30) != 0)
        return 2;
    if (h->value != i * 7)
      return 3;
    h->full = false;
    if (mproc_cond_notify(h->cond, 1) != 0 || mproc_cond_release(h->cond) != 0)
      return 4;
  }
  return 0;
}

static void handover(mproc_lock *lock) {
  th_scope sc = th_begin();
  struct handover *h = th_shared(sizeof *h);
  cr_assert_eq(mproc_cond_new(&h->cond, lock), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(consumer(h));
  for (int i = 0; i < NVALUES; i++) {
    cr_assert_eq(mproc_cond_acquire(h->cond, MPROC_FOREVER), 0);
    while (h->full)
      cr_assert_eq(mproc_cond_wait(h->cond, 30), 0);
    h->value = i * 7;
    h->full = true;
    cr_assert_eq(mproc_cond_notify(h->cond, 1), 0);
    cr_assert_eq(mproc_cond_release(h->cond), 0);
  }
  cr_assert_eq(th_exitcode(pid), 0);
  cr_assert(!h->full);
  mproc_cond_free(h->cond);
  mproc__shared_unmap(h, sizeof *h);
  th_end(sc);
}

Test(cond, hands_over_1000_values_in_order) { handover(NULL); }

Test(cond, hands_over_with_a_plain_lock) {
  mproc_lock *l;
  cr_assert_eq(mproc_lock_new(&l, false), 0);
  handover(l);
  mproc_lock_free(l);
}

struct notifytest {
  mproc_cond *cond;
  int ready, woke, timedout;
};

static int notify_waiter(struct notifytest *t) {
  if (mproc_cond_acquire(t->cond, MPROC_FOREVER) != 0)
    return 1;
  t->ready++;
  int rc = mproc_cond_wait(t->cond, 30);
  if (rc == 0)
    t->woke++;
  else
    t->timedout++;
  return mproc_cond_release(t->cond) == 0 && rc == 0 ? 0 : 2;
}

/* Reads a field under the condition's lock. */
/* Forks n notify_waiter processes into pids and returns once all n are waiting: ready is
 * counted under the lock just before cond_wait, which registers the waiter before releasing
 * it, so when we hold the lock and see n, all n are waiting. */
static void start_waiters(struct notifytest *t, pid_t *pids, int n) {
  for (int i = 0; i < n; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(notify_waiter(t));
  while (th_cond_read(t->cond, &t->ready) < n)
    th_sleep_us(1000);
}

Test(cond, notify_n_wakes_exactly_n) {
  th_scope sc = th_begin();
  enum { N = 5 };
  struct notifytest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_cond_new(&t->cond, NULL), 0);
  pid_t pids[N];
  start_waiters(t, pids, N);
  cr_assert_eq(mproc_cond_acquire(t->cond, 0.5), 0);
  cr_assert_eq(mproc_cond_notify(t->cond, 2), 0);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  while (th_cond_read(t->cond, &t->woke) < 2)
    th_sleep_us(1 * 1000);
  th_sleep_us(50 * 1000); /* room for a wrong third wake-up to show */
  cr_assert_eq(th_cond_read(t->cond, &t->woke), 2);
  cr_assert_eq(mproc_cond_acquire(t->cond, 0.5), 0);
  cr_assert_eq(mproc_cond_notify(t->cond, 0), 0);
  cr_assert_eq(mproc_cond_notify(t->cond, 1), 0);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  while (th_cond_read(t->cond, &t->woke) < 3)
    th_sleep_us(1 * 1000);
  th_sleep_us(50 * 1000);
  cr_assert_eq(th_cond_read(t->cond, &t->woke), 3);
  cr_assert_eq(mproc_cond_acquire(t->cond, 0.5), 0);
  cr_assert_eq(mproc_cond_notify(t->cond, 100), 0);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  for (int i = 0; i < N; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  cr_assert_eq(t->woke, N);
  cr_assert_eq(t->timedout, 0);
  mproc_cond_free(t->cond);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

Test(cond, notify_all_wakes_all_waiting) {
  th_scope sc = th_begin();
  enum { N = 4 };
  struct notifytest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_cond_new(&t->cond, NULL), 0);
  pid_t pids[N];
  start_waiters(t, pids, N);
  cr_assert_eq(mproc_cond_acquire(t->cond, 0.5), 0);
  cr_assert_eq(mproc_cond_notify_all(t->cond), 0);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  for (int i = 0; i < N; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  cr_assert_eq(t->woke, N);
  mproc_cond_free(t->cond);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

Test(cond, timed_out_waiter_is_not_counted_by_notify) {
  th_scope sc = th_begin();
  struct notifytest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_cond_new(&t->cond, NULL), 0);
  cr_assert_eq(mproc_cond_acquire(t->cond, 0), 0);
  cr_assert_eq(mproc_cond_wait(t->cond, 0.01), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(notify_waiter(t));
  while (th_cond_read(t->cond, &t->ready) < 1)
    th_sleep_us(1 * 1000);
  /* notify(1) must reach the live waiter, not the slot our timed-out wait used. */
  cr_assert_eq(mproc_cond_acquire(t->cond, 0.5), 0);
  cr_assert_eq(mproc_cond_notify(t->cond, 1), 0);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  cr_assert_eq(th_exitcode(pid), 0);
  cr_assert_eq(t->woke, 1);
  mproc_cond_free(t->cond);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

/* ---- Barrier ---- */

enum { BPROC = 4, BROUNDS = 200 };

struct bartest {
  mproc_barrier *b;
  int index[BROUNDS][BPROC];
};

static int barrier_worker(struct bartest *t, int me) {
  for (int r = 0; r < BROUNDS; r++) {
    int rc = mproc_barrier_wait(t->b, 30);
    if (rc < 0)
      return 1;
    t->index[r][me] = rc;
  }
  return 0;
}

Test(barrier, indices_distinct_every_round) {
  th_scope sc = th_begin();
  struct bartest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_barrier_new(&t->b, BPROC), 0);
  pid_t pids[BPROC];
  for (int i = 0; i < BPROC; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(barrier_worker(t, i));
  for (int i = 0; i < BPROC; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  for (int r = 0; r < BROUNDS; r++) {
    unsigned seen = 0;
    for (int i = 0; i < BPROC; i++) {
      cr_assert(t->index[r][i] >= 0 && t->index[r][i] < BPROC);
      seen |= 1u << t->index[r][i];
    }
    cr_assert_eq(seen, (1u << BPROC) - 1, "round %d", r);
  }
  mproc_barrier_free(t->b);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

Test(barrier, one_party_returns_at_once) {
  mproc_barrier *b;
  cr_assert_eq(mproc_barrier_new(&b, 1), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(mproc_barrier_wait(b, 0), 0);
  mproc_barrier_free(b);
}

Test(barrier, timeout_breaks_until_reset) {
  th_scope sc = th_begin();
  mproc_barrier *b;
  cr_assert_eq(mproc_barrier_new(&b, 2), 0);
  cr_assert_eq(mproc_barrier_wait(b, 0.02), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_barrier_wait(b, 1), MPROC_ESTATE);
  cr_assert_eq(mproc_barrier_wait(b, 0), MPROC_ESTATE);
  cr_assert_eq(mproc_barrier_reset(b), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(th_barrier_once(b, 30));
  int mine = mproc_barrier_wait(b, 30);
  int theirs = th_exitcode(pid) - 10;
  cr_assert(mine >= 0 && theirs >= 0 && mine + theirs == 1, "indices %d and %d", mine, theirs);
  /* timeout 0 never blocks: it times out and breaks the barrier */
  cr_assert_eq(mproc_barrier_wait(b, 0), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_barrier_wait(b, 0), MPROC_ESTATE);
  mproc_barrier_free(b);
  th_end(sc);
}

/* Waits until pid sleeps (in our tests: in the barrier's futex, after it has arrived). */
Test(barrier, waiters_see_estate_when_another_times_out) {
  th_scope sc = th_begin();
  mproc_barrier *b;
  cr_assert_eq(mproc_barrier_new(&b, 3), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(th_barrier_once(b, 30));
  th_wait_asleep(pid);
  cr_assert_eq(mproc_barrier_wait(b, 0.05), MPROC_ETIMEDOUT);
  cr_assert_eq(th_exitcode(pid), 1); /* MPROC_ESTATE */
  mproc_barrier_free(b);
  th_end(sc);
}

Test(barrier, abort_and_reset_release_waiters_with_estate) {
  th_scope sc = th_begin();
  mproc_barrier *b;
  cr_assert_eq(mproc_barrier_new(&b, 3), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(th_barrier_once(b, 30));
  th_wait_asleep(pid);
  cr_assert_eq(mproc_barrier_abort(b), 0);
  cr_assert_eq(th_exitcode(pid), 1);
  cr_assert_eq(mproc_barrier_wait(b, 1), MPROC_ESTATE);
  cr_assert_eq(mproc_barrier_reset(b), 0);
  pid = th_fork_tied();
  if (pid == 0)
    _exit(th_barrier_once(b, 30));
  th_wait_asleep(pid);
  cr_assert_eq(mproc_barrier_reset(b), 0); /* breaks the round it was waiting in */
  cr_assert_eq(th_exitcode(pid), 1);
  /* usable again, with fresh indices */
  pid_t p2[2];
  for (int i = 0; i < 2; i++)
    if ((p2[i] = th_fork_tied()) == 0)
      _exit(th_barrier_once(b, 30));
  int mine = mproc_barrier_wait(b, 30);
  int sum = mine;
  for (int i = 0; i < 2; i++)
    sum += th_exitcode(p2[i]) - 10;
  cr_assert_eq(sum, 0 + 1 + 2);
  mproc_barrier_free(b);
  th_end(sc);
}

/* ---- free, threads ---- */

static int acquire_after_free(mproc_lock *l) {
  int rc = mproc_lock_acquire(l, 20);
  return rc == 0 && mproc_lock_release(l) == 0 ? 0 : 1;
}

Test(lock, free_by_its_holder_releases_it_for_the_others) {
  th_scope sc = th_begin();
  mproc_lock *l;
  cr_assert_eq(mproc_lock_new(&l, true), 0);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  cr_assert_eq(mproc_lock_acquire(l, 0), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(acquire_after_free(l));
  mproc_lock_free(l); /* the child's view stays valid */
  cr_assert_eq(th_exitcode(pid), 0);
  th_end(sc);
}

#include <pthread.h>

struct threaded {
  mproc_lock *lock;
  mproc_sem *sem;
  long count;
};

static void *thread_incrementer(void *arg) {
  struct threaded *t = arg;
  for (int i = 0; i < 20000; i++) {
    if (mproc_lock_acquire(t->lock, MPROC_FOREVER) != 0)
      return (void *)1;
    t->count++;
    if (mproc_lock_release(t->lock) != 0)
      return (void *)2;
  }
  return NULL;
}

/* Two processes with two threads each (the library's objects are thread-safe; the test
 * makes the threads, mproc never does). */
static int threads_in_process(struct threaded *t) {
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    if (pthread_create(&th[i], NULL, thread_incrementer, t) != 0)
      return 10;
  int rc = 0;
  for (int i = 0; i < 2; i++) {
    void *r;
    pthread_join(th[i], &r);
    if (r)
      rc = (int)(intptr_t)r;
  }
  return rc;
}

Test(lock, exact_counter_threads_and_processes) {
  th_scope sc = th_begin();
  struct threaded *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_lock_new(&t->lock, false), 0);
  pid_t pid = th_fork_tied();
  if (pid == 0)
    _exit(threads_in_process(t));
  cr_assert_eq(threads_in_process(t), 0);
  cr_assert_eq(th_exitcode(pid), 0);
  cr_assert_eq(t->count, 4L * 20000);
  mproc_lock_free(t->lock);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

struct thread_lock_test {
  mproc_lock *lock;
  int rc_release, rc_acquire;
};

static void *other_thread_release(void *arg) {
  struct thread_lock_test *t = arg;
  t->rc_release = mproc_lock_release(t->lock);
  t->rc_acquire = mproc_lock_acquire(t->lock, 0);
  return NULL;
}

Test(lock, owned_by_the_thread_not_the_process) {
  th_scope sc = th_begin();
  struct thread_lock_test t = {0};
  cr_assert_eq(mproc_lock_new(&t.lock, true), 0);
  cr_assert_eq(mproc_lock_acquire(t.lock, 0), 0);
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, other_thread_release, &t), 0);
  pthread_join(th, NULL);
  cr_assert_eq(t.rc_release, MPROC_ESTATE);
  cr_assert_eq(t.rc_acquire, MPROC_EAGAIN); /* an RLock held by another thread */
  cr_assert_eq(mproc_lock_release(t.lock), 0);
  mproc_lock_free(t.lock);
  th_end(sc);
}

/* ---- heavier mixes ---- */

enum { PC = 3, ITEMS = 400, CAP = 4 };

struct bounded_buffer {
  mproc_cond *not_empty, *not_full; /* sharing one lock */
  mproc_lock *lock;
  long buf[CAP];
  int head, count;
  long consumed_sum;
  int consumed;
};

static int bb_put(struct bounded_buffer *b, long v) {
  if (mproc_lock_acquire(b->lock, MPROC_FOREVER) != 0)
    return 1;
  while (b->count == CAP)
    if (mproc_cond_wait(b->not_full, 30) != 0)
      return 2;
  b->buf[(b->head + b->count++) % CAP] = v;
  mproc_cond_notify(b->not_empty, 1);
  return mproc_lock_release(b->lock) ? 3 : 0;
}

static int bb_get(struct bounded_buffer *b) {
  if (mproc_lock_acquire(b->lock, MPROC_FOREVER) != 0)
    return 1;
  while (b->count == 0)
    if (mproc_cond_wait(b->not_empty, 30) != 0)
      return 2;
  b->consumed_sum += b->buf[b->head];
  b->consumed++;
  b->head = (b->head + 1) % CAP;
  b->count--;
  mproc_cond_notify(b->not_full, 1);
  return mproc_lock_release(b->lock) ? 3 : 0;
}

static int producer(struct bounded_buffer *b, int me) {
  for (int i = 0; i < ITEMS; i++) {
    int rc = bb_put(b, (long)me * 100000 + i);
    if (rc)
      return rc;
  }
  return 0;
}

static int consumer_n(struct bounded_buffer *b) {
  for (int i = 0; i < ITEMS; i++) {
    int rc = bb_get(b);
    if (rc)
      return 10 + rc;
  }
  return 0;
}

/* notify(1) with several producers and consumers on two conditions: a lost or doubled
 * wake-up shows as a stuck process (timeout) or a wrong sum. */
Test(cond, bounded_buffer_many_producers_and_consumers) {
  th_scope sc = th_begin();
  struct bounded_buffer *b = th_shared(sizeof *b);
  cr_assert_eq(mproc_lock_new(&b->lock, false), 0);
  cr_assert_eq(mproc_cond_new(&b->not_empty, b->lock), 0);
  cr_assert_eq(mproc_cond_new(&b->not_full, b->lock), 0);
  pid_t pids[2 * PC];
  for (int i = 0; i < PC; i++) {
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(producer(b, i));
    if ((pids[PC + i] = th_fork_tied()) == 0)
      _exit(consumer_n(b));
  }
  for (int i = 0; i < 2 * PC; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0, "process %d", i);
  long want = 0;
  for (int p = 0; p < PC; p++)
    for (int i = 0; i < ITEMS; i++)
      want += (long)p * 100000 + i;
  cr_assert_eq(b->consumed, PC * ITEMS);
  cr_assert_eq(b->consumed_sum, want);
  mproc_cond_free(b->not_empty);
  mproc_cond_free(b->not_full);
  mproc_lock_free(b->lock);
  mproc__shared_unmap(b, sizeof *b);
  th_end(sc);
}

struct overbooked {
  mproc_barrier *b;
  _Atomic int count[2];
};

static int overbooked_worker(struct overbooked *t) {
  for (;;) {
    int rc = mproc_barrier_wait(t->b, 30);
    if (rc == MPROC_ESTATE)
      return 0; /* aborted: the end */
    if (rc < 0 || rc > 1)
      return 1;
    atomic_fetch_add(&t->count[rc], 1);
  }
}

/* Four processes on a barrier of two: rounds must not mix (each index once per round). A
 * process may end up without a partner at the end, so the parent stops them with abort. */
Test(barrier, more_processes_than_parties) {
  th_scope sc = th_begin();
  struct overbooked *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_barrier_new(&t->b, 2), 0);
  pid_t pids[4];
  for (int i = 0; i < 4; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(overbooked_worker(t));
  while (atomic_load(&t->count[0]) < 300)
    th_sleep_us(1 * 1000);
  cr_assert_eq(mproc_barrier_abort(t->b), 0);
  for (int i = 0; i < 4; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  cr_assert_geq(atomic_load(&t->count[0]), 300);
  cr_assert_eq(atomic_load(&t->count[0]), atomic_load(&t->count[1]));
  mproc_barrier_free(t->b);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

enum { XW = 3, XROUNDS = 300 };

struct exact {
  mproc_cond *cond;
  int ready, woke, bad;
};

static int exact_waiter(struct exact *t) {
  for (int r = 0; r < XROUNDS; r++) {
    if (mproc_cond_acquire(t->cond, MPROC_FOREVER) != 0)
      return 1;
    t->ready++;
    if (mproc_cond_wait(t->cond, 30) != 0) {
      t->bad++;
      mproc_cond_release(t->cond);
      return 2;
    }
    t->woke++;
    mproc_cond_release(t->cond);
  }
  return 0;
}

/* Notifies 1 or 2 at a time, as fast as waiters come back (so notify often meets waiters
 * still spinning, not yet asleep): never more wake than were notified, none is lost. */
Test(cond, notify_exact_under_churn) {
  th_scope sc = th_begin();
  struct exact *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_cond_new(&t->cond, NULL), 0);
  pid_t pids[XW];
  for (int i = 0; i < XW; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(exact_waiter(t));
  int granted = 0, step = 0;
  int64_t deadline = mproc__deadline(60);
  while (granted < XW * XROUNDS && mproc__now_ns() < deadline) {
    cr_assert_eq(mproc_cond_acquire(t->cond, MPROC_FOREVER), 0);
    int waiting = t->ready - granted, k = 1 + step++ % 2;
    if (k > waiting)
      k = waiting;
    if (k > 0) {
      cr_assert_eq(mproc_cond_notify(t->cond, k), 0);
      granted += k;
    }
    cr_assert_leq(t->woke, granted);
    cr_assert_eq(mproc_cond_release(t->cond), 0);
  }
  for (int i = 0; i < XW; i++)
    cr_expect_eq(th_exitcode(pids[i]), 0);
  cr_assert_eq(t->woke, XW * XROUNDS);
  cr_assert_eq(granted, XW * XROUNDS);
  cr_assert_eq(t->bad, 0);
  mproc_cond_free(t->cond);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}
