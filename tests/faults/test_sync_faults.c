/* Faults in the sync layer: holders and waiters killed at any moment, and bad input. */
#define _GNU_SOURCE
#include "helpers.h"
#include "core/internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Waits until pid sleeps (in these tests: in a futex, after registering as a waiter). */
/* ---- a lock holder killed at random points ---- */

struct robust {
  mproc_lock *lock;
  long a, b; /* invariant under the lock: a == b; a holder killed mid-way leaves a == b + 1 */
};

static void increment_forever(struct robust *r) {
  for (;;) {
    int rc = mproc_lock_acquire(r->lock, MPROC_FOREVER);
    if (rc != 0 && rc != MPROC_EOWNERDEAD)
      _exit(1);
    r->a++;
    for (int k = 0; k < 50; k++)
      mproc__cpu_relax();
    r->b++;
    if (mproc_lock_release(r->lock) != 0)
      _exit(2);
  }
}

static void kill_holder_rounds(mproc_lock *lock, int rounds) {
  th_scope sc = th_begin();
  struct robust *r = th_shared(sizeof *r);
  r->lock = lock;
  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  int dead_holders = 0;
  for (int round = 0; round < rounds; round++) {
    pid_t pid = th_fork_tied();
    if (pid == 0)
      increment_forever(r);
    th_sleep_us(rand_r(&seed) % 1500);
    kill(pid, SIGKILL);
    cr_assert_eq(th_exitcode(pid), -SIGKILL);
    int rc = mproc_lock_acquire(r->lock, 5.0);
    cr_assert(rc == 0 || rc == MPROC_EOWNERDEAD, "round %d: rc %d (seed %u)", round, rc, seed);
    if (rc == MPROC_EOWNERDEAD) {
      dead_holders++;
      cr_assert(r->a == r->b || r->a == r->b + 1, "round %d: a %ld b %ld", round, r->a, r->b);
      r->b = r->a; /* repair */
    } else {
      cr_assert_eq(r->a, r->b, "round %d", round);
    }
    cr_assert_eq(mproc_lock_release(r->lock), 0);
  }
  /* The child holds the lock nearly all the time: some kills must have caught it there. */
  cr_assert_gt(dead_holders, 0);
  mproc__shared_unmap(r, sizeof *r);
  th_end(sc);
}

Test(sync_faults, lock_holder_killed_at_random_points, .timeout = 120) {
  mproc_lock *l;
  cr_assert_eq(mproc_lock_new(&l, false), 0);
  kill_holder_rounds(l, 200);
  mproc_lock_free(l);
}

Test(sync_faults, rlock_holder_killed_at_random_points, .timeout = 120) {
  mproc_lock *l;
  cr_assert_eq(mproc_lock_new(&l, true), 0);
  kill_holder_rounds(l, 100);
  mproc_lock_free(l);
}

Test(sync_faults, array_lock_holder_killed_at_random_points, .timeout = 120) {
  mproc_array *a;
  cr_assert_eq(mproc_array_new(&a, 8, 1, NULL, true), 0);
  kill_holder_rounds(mproc_array_lock(a), 60);
  mproc_array_free(a);
}

static int hold_and_die(mproc_lock *l, _Atomic uint32_t *flag) {
  if (mproc_lock_acquire(l, MPROC_FOREVER) != 0)
    return 1;
  atomic_store(flag, 1);
  mproc__futex_wake(flag, 1);
  th_sleep_us(50000); /* long enough for the parent to block on the lock */
  raise(SIGKILL);
  return 2;
}

Test(sync_faults, blocked_acquirer_gets_ownerdead_when_holder_killed) {
  th_scope sc = th_begin();
  for (int rec = 0; rec < 2; rec++) {
    mproc_lock *l;
    cr_assert_eq(mproc_lock_new(&l, rec), 0);
    _Atomic uint32_t *flag = th_shared(4096);
    pid_t pid = th_fork_tied();
    if (pid == 0)
      _exit(hold_and_die(l, flag));
    while (atomic_load(flag) == 0)
      mproc__futex_wait(flag, 0, mproc__deadline(1));
    cr_assert_eq(mproc_lock_acquire(l, 0), MPROC_EAGAIN);
    cr_assert_eq(mproc_lock_acquire(l, 30), MPROC_EOWNERDEAD);
    cr_assert_eq(mproc_lock_release(l), 0); /* held and consistent */
    cr_assert_eq(mproc_lock_acquire(l, 0), 0);
    cr_assert_eq(mproc_lock_release(l), 0);
    cr_assert_eq(th_exitcode(pid), -SIGKILL);
    mproc__shared_unmap((void *)flag, 4096);
    mproc_lock_free(l);
  }
  th_end(sc);
}

/* ---- Condition ---- */

struct condtest {
  mproc_cond *cond;
  int ready, woke;
  pid_t order[8];
};

static int cond_waiter(struct condtest *t) {
  if (mproc_cond_acquire(t->cond, MPROC_FOREVER) != 0)
    return 1;
  t->order[t->ready++] = getpid();
  int rc = mproc_cond_wait(t->cond, 20);
  if (rc == 0)
    t->woke++;
  mproc_cond_release(t->cond);
  return rc == 0 ? 0 : 2;
}

Test(sync_faults, notify_skips_a_killed_waiter) {
  th_scope sc = th_begin();
  enum { N = 3 };
  struct condtest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_cond_new(&t->cond, NULL), 0);
  pid_t pids[N];
  for (int i = 0; i < N; i++)
    if ((pids[i] = th_fork_tied()) == 0)
      _exit(cond_waiter(t));
  while (th_cond_read(t->cond, &t->ready) < N)
    th_sleep_us(1000);
  /* Kill the oldest waiter, the one notify would pick first. */
  pid_t victim = t->order[0];
  kill(victim, SIGKILL);
  for (int i = 0; i < N; i++)
    if (pids[i] == victim)
      cr_assert_eq(th_exitcode(pids[i]), -SIGKILL);
  cr_assert_eq(mproc_cond_acquire(t->cond, 1), 0);
  cr_assert_eq(mproc_cond_notify(t->cond, 2), 0);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  for (int i = 0; i < N; i++)
    if (pids[i] != victim)
      cr_assert_eq(th_exitcode(pids[i]), 0);
  cr_assert_eq(t->woke, 2);
  mproc_cond_free(t->cond);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

static int wait_expect_ownerdead(struct condtest *t) {
  if (mproc_cond_acquire(t->cond, MPROC_FOREVER) != 0)
    return 1;
  t->ready = 1;
  int rc = mproc_cond_wait(t->cond, 20);
  if (rc != MPROC_EOWNERDEAD)
    return 2;
  return mproc_cond_release(t->cond) == 0 ? 0 : 3; /* the lock is held on return */
}

static int notify_and_die(struct condtest *t) {
  if (mproc_cond_acquire(t->cond, MPROC_FOREVER) != 0)
    return 1;
  mproc_cond_notify(t->cond, 1);
  raise(SIGKILL); /* dies holding the condition's lock */
  return 2;
}

Test(sync_faults, cond_waiter_reacquires_with_ownerdead) {
  th_scope sc = th_begin();
  struct condtest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_cond_new(&t->cond, NULL), 0);
  pid_t w = th_fork_tied();
  if (w == 0)
    _exit(wait_expect_ownerdead(t));
  while (th_cond_read(t->cond, &t->ready) < 1)
    th_sleep_us(1000);
  pid_t h = th_fork_tied();
  if (h == 0)
    _exit(notify_and_die(t));
  cr_assert_eq(th_exitcode(h), -SIGKILL);
  cr_assert_eq(th_exitcode(w), 0);
  mproc_cond_free(t->cond);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

static int cond_wait_forever(mproc_cond *c) {
  mproc_cond_acquire(c, MPROC_FOREVER);
  mproc_cond_wait(c, 60);
  return 1;
}

Test(sync_faults, slots_of_killed_waiters_are_reclaimed) {
  th_scope sc = th_begin();
  enum { N = 16 };
  mproc_cond *c;
  cr_assert_eq(mproc_cond_new(&c, NULL), 0);
  for (int round = 0; round < 3; round++) {
    pid_t pids[N];
    for (int i = 0; i < N; i++)
      if ((pids[i] = th_fork_tied()) == 0)
        _exit(cond_wait_forever(c));
    for (int i = 0; i < N; i++)
      th_wait_asleep(pids[i]);
    for (int i = 0; i < N; i++) {
      kill(pids[i], SIGKILL);
      cr_assert_eq(th_exitcode(pids[i]), -SIGKILL);
    }
  }
  /* Only dead waiters are registered: nobody is there to notify or to time out early. */
  cr_assert_eq(mproc_cond_acquire(c, 0), 0);
  cr_assert_eq(mproc_cond_notify_all(c), 0);
  cr_assert_eq(mproc_cond_wait(c, 0.01), MPROC_ETIMEDOUT);
  cr_assert_eq(mproc_cond_release(c), 0);
  mproc_cond_free(c);
  th_end(sc);
}

static void cond_churn(mproc_cond *c) {
  for (;;) {
    int rc = mproc_cond_acquire(c, MPROC_FOREVER);
    if (rc != 0 && rc != MPROC_EOWNERDEAD)
      _exit(1);
    mproc_cond_notify(c, 1);
    rc = mproc_cond_wait(c, 0.0005);
    if (rc != 0 && rc != MPROC_ETIMEDOUT && rc != MPROC_EOWNERDEAD)
      _exit(2);
    if (mproc_cond_release(c) != 0)
      _exit(3);
  }
}

/* Two processes notifying and waiting on one condition are killed at random moments, over
 * and over: the condition stays usable, and notify still reaches the live waiter past the
 * slots the dead left behind. */
Test(sync_faults, condition_survives_random_kills, .timeout = 120) {
  th_scope sc = th_begin();
  struct condtest *t = th_shared(sizeof *t);
  cr_assert_eq(mproc_cond_new(&t->cond, NULL), 0);
  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  for (int round = 0; round < 100; round++) {
    pid_t p[2];
    for (int i = 0; i < 2; i++)
      if ((p[i] = th_fork_tied()) == 0)
        cond_churn(t->cond);
    th_sleep_us(rand_r(&seed) % 2000);
    for (int i = 0; i < 2; i++) {
      kill(p[i], SIGKILL);
      cr_assert_eq(th_exitcode(p[i]), -SIGKILL, "round %d (seed %u)", round, seed);
    }
    int rc = mproc_cond_acquire(t->cond, 5);
    cr_assert(rc == 0 || rc == MPROC_EOWNERDEAD, "round %d: %d (seed %u)", round, rc, seed);
    cr_assert_eq(mproc_cond_wait(t->cond, 0), MPROC_ETIMEDOUT);
    cr_assert_eq(mproc_cond_release(t->cond), 0);
  }
  pid_t w = th_fork_tied();
  if (w == 0)
    _exit(cond_waiter(t));
  while (th_cond_read(t->cond, &t->ready) < 1)
    th_sleep_us(1000);
  cr_assert_eq(mproc_cond_acquire(t->cond, 5), 0);
  cr_assert_eq(mproc_cond_notify(t->cond, 1), 0);
  cr_assert_eq(mproc_cond_release(t->cond), 0);
  cr_assert_eq(th_exitcode(w), 0);
  cr_assert_eq(t->woke, 1);
  mproc_cond_free(t->cond);
  mproc__shared_unmap(t, sizeof *t);
  th_end(sc);
}

static void barrier_churn(mproc_barrier *b) {
  for (;;) {
    int rc = mproc_barrier_wait(b, 0.002);
    if (rc == MPROC_ESTATE || rc == MPROC_ETIMEDOUT)
      mproc_barrier_reset(b);
    else if (rc < 0 || rc > 1)
      _exit(1);
  }
}

/* Two processes using a barrier (with timeouts and resets) are killed at random moments:
 * after a reset it works for the survivors. */
Test(sync_faults, barrier_survives_random_kills, .timeout = 120) {
  th_scope sc = th_begin();
  mproc_barrier *b;
  cr_assert_eq(mproc_barrier_new(&b, 2), 0);
  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  for (int round = 0; round < 60; round++) {
    pid_t p[2];
    for (int i = 0; i < 2; i++)
      if ((p[i] = th_fork_tied()) == 0)
        barrier_churn(b);
    th_sleep_us(rand_r(&seed) % 2000);
    for (int i = 0; i < 2; i++) {
      kill(p[i], SIGKILL);
      cr_assert_eq(th_exitcode(p[i]), -SIGKILL, "round %d (seed %u)", round, seed);
    }
    cr_assert_eq(mproc_barrier_reset(b), 0);
    pid_t e = th_fork_tied();
    if (e == 0)
      _exit(th_barrier_once(b, 20));
    int mine = mproc_barrier_wait(b, 20);
    int theirs = th_exitcode(e) - 10;
    cr_assert(mine >= 0 && theirs >= 0 && mine + theirs == 1, "round %d: %d %d (seed %u)", round,
              mine, theirs, seed);
  }
  mproc_barrier_free(b);
  th_end(sc);
}

/* ---- Barrier, Semaphore, Event ---- */

Test(sync_faults, barrier_participant_killed_after_arriving_still_counts) {
  th_scope sc = th_begin();
  mproc_barrier *b;
  cr_assert_eq(mproc_barrier_new(&b, 3), 0);
  pid_t d = th_fork_tied();
  if (d == 0)
    _exit(th_barrier_once(b, 20));
  th_wait_asleep(d); /* it has arrived (index 0) and sleeps */
  kill(d, SIGKILL);
  cr_assert_eq(th_exitcode(d), -SIGKILL);
  pid_t e = th_fork_tied();
  if (e == 0)
    _exit(th_barrier_once(b, 20));
  int mine = mproc_barrier_wait(b, 20);
  int theirs = th_exitcode(e) - 10;
  cr_assert(mine >= 1 && theirs >= 1 && mine + theirs == 3, "indices %d %d", mine, theirs);
  mproc_barrier_free(b);
  th_end(sc);
}

Test(sync_faults, barrier_participant_that_never_arrives_times_out) {
  th_scope sc = th_begin();
  mproc_barrier *b;
  cr_assert_eq(mproc_barrier_new(&b, 3), 0);
  pid_t w = th_fork_tied();
  if (w == 0)
    _exit(th_barrier_once(b, 20));
  th_wait_asleep(w);
  /* The third party died before arriving: indistinguishable from a slow one. */
  cr_assert_eq(mproc_barrier_wait(b, 0.05), MPROC_ETIMEDOUT);
  cr_assert_eq(th_exitcode(w), 1);
  mproc_barrier_free(b);
  th_end(sc);
}

static int sem_wait_forever(mproc_sem *s) {
  mproc_sem_acquire(s, 60);
  return 1;
}

static int event_wait_forever(mproc_event *e) {
  mproc_event_wait(e, 60);
  return 1;
}

Test(sync_faults, killed_sem_and_event_waiters_leave_them_usable) {
  th_scope sc = th_begin();
  mproc_sem *s;
  mproc_event *e;
  cr_assert_eq(mproc_sem_new(&s, 0, false), 0);
  cr_assert_eq(mproc_event_new(&e), 0);
  pid_t p1 = th_fork_tied();
  if (p1 == 0)
    _exit(sem_wait_forever(s));
  pid_t p2 = th_fork_tied();
  if (p2 == 0)
    _exit(event_wait_forever(e));
  th_wait_asleep(p1);
  th_wait_asleep(p2);
  kill(p1, SIGKILL);
  kill(p2, SIGKILL);
  cr_assert_eq(th_exitcode(p1), -SIGKILL);
  cr_assert_eq(th_exitcode(p2), -SIGKILL);
  /* The same semaphore: the dead waiter took nothing, a unit released now is ours. */
  cr_assert_eq(mproc_sem_value(s), 0);
  cr_assert_eq(mproc_sem_release(s), 0);
  cr_assert_eq(mproc_sem_value(s), 1);
  cr_assert_eq(mproc_sem_acquire(s, 0), 0);
  cr_assert_eq(mproc_sem_value(s), 0);
  cr_assert_eq(mproc_sem_acquire(s, 0), MPROC_EAGAIN);
  cr_assert_eq(mproc_event_set(e), 0);
  cr_assert_eq(mproc_event_wait(e, 0), 0);
  mproc_sem_free(s);
  mproc_event_free(e);
  th_end(sc);
}

/* ---- bad input ---- */

Test(sync_faults, null_handles_and_bad_arguments) {
  th_scope sc = th_begin();
  cr_assert_eq(mproc_lock_new(NULL, false), MPROC_EINVAL);
  cr_assert_eq(mproc_lock_acquire(NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_lock_release(NULL), MPROC_EINVAL);
  mproc_lock_free(NULL);
  cr_assert_eq(mproc_sem_new(NULL, 1, false), MPROC_EINVAL);
  mproc_sem *s = (mproc_sem *)1;
  cr_assert_eq(mproc_sem_new(&s, (unsigned)INT32_MAX + 1u, false), MPROC_EINVAL);
  cr_assert_null(s);
  cr_assert_eq(mproc_sem_acquire(NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_sem_release(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_sem_value(NULL), MPROC_EINVAL);
  mproc_sem_free(NULL);
  cr_assert_eq(mproc_event_new(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_event_set(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_event_clear(NULL), MPROC_EINVAL);
  cr_assert(!mproc_event_is_set(NULL));
  cr_assert_eq(mproc_event_wait(NULL, 0), MPROC_EINVAL);
  mproc_event_free(NULL);
  cr_assert_eq(mproc_cond_new(NULL, NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_cond_acquire(NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_cond_release(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_cond_wait(NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_cond_notify(NULL, 1), MPROC_EINVAL);
  cr_assert_eq(mproc_cond_notify_all(NULL), MPROC_EINVAL);
  mproc_cond_free(NULL);
  cr_assert_eq(mproc_barrier_new(NULL, 2), MPROC_EINVAL);
  mproc_barrier *b = (mproc_barrier *)1;
  cr_assert_eq(mproc_barrier_new(&b, 0), MPROC_EINVAL);
  cr_assert_null(b);
  cr_assert_eq(mproc_barrier_new(&b, UINT32_MAX), MPROC_EINVAL);
  cr_assert_eq(mproc_barrier_wait(NULL, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_barrier_abort(NULL), MPROC_EINVAL);
  cr_assert_eq(mproc_barrier_reset(NULL), MPROC_EINVAL);
  mproc_barrier_free(NULL);
  th_end(sc);
}

Test(sync_faults, handle_of_the_wrong_type_is_einval) {
  th_scope sc = th_begin();
  mproc_sem *s;
  mproc_event *e;
  cr_assert_eq(mproc_sem_new(&s, 1, false), 0);
  cr_assert_eq(mproc_event_new(&e), 0);
  cr_assert_eq(mproc_lock_acquire((mproc_lock *)(void *)s, 0), MPROC_EINVAL);
  cr_assert_eq(mproc_lock_release((mproc_lock *)(void *)e), MPROC_EINVAL);
  cr_assert_eq(mproc_event_set((mproc_event *)(void *)s), MPROC_EINVAL);
  cr_assert_eq(mproc_sem_release((mproc_sem *)(void *)e), MPROC_EINVAL);
  cr_assert_eq(mproc_cond_new(&(mproc_cond *){NULL}, (mproc_lock *)(void *)s), MPROC_EINVAL);
  cr_assert_eq(mproc_barrier_wait((mproc_barrier *)(void *)e, 0), MPROC_EINVAL);
  mproc_lock_free((mproc_lock *)(void *)s); /* not a lock: left alone */
  cr_assert_eq(mproc_sem_acquire(s, 0), 0);
  mproc_sem_free(s);
  mproc_event_free(e);
  th_end(sc);
}
