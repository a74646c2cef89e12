/*
 * Collecting results, the caller's side of a pool: the collector (one caller thread at a
 * time, p->collecting) waits on the result ring, routes each result to its AsyncResult
 * (dispatch) and wakes the other waiting threads; a supervisor that died is noticed through
 * its pidfd. No thread is started for this: it happens inside mproc calls.
 * Lock order: the result ring's read side, then p->mu.
 */
#define _GNU_SOURCE
#include "pool/pool_collect.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLLECT_BATCH 256
#define SUPERVISOR_CHECK_NS (200 * 1000000)
#define SPIN_NS 50000
#define QUICK_NS 3000

/* MPROC_ECRASHED's own message is about a worker; this one says which process it was. */
static const char lost_msg[] = "the pool's supervisor process died before the task finished";

/* Routes one result message to its AsyncResult; unknown ids (freed, or a second delivery of
 * a task whose first reader died) are dropped. */
static void dispatch(mproc_pool *p, const void *msg, size_t len) {
  mproc__result_hdr h;
  if (len < sizeof h)
    return;
  memcpy(&h, msg, sizeof h);
  if (sizeof h + (uint64_t)h.msg_len + h.data_len > len)
    return;
  size_t i = mproc__tab_find(p, h.id);
  if (i == SIZE_MAX)
    return;
  staged *st = entry_staged(&p->tab[i]);
  mproc_async *a = entry_async(&p->tab[i]);
  mproc__tab_delete_at(p, i);
  const char *text = (const char *)msg + sizeof h;
  const char *data = text + h.msg_len;
  const mproc__route *route = st ? st->route : a->route;
  if (route) {
    route->result(p, a, st, &h, text, data);
    return;
  }
  int rc = h.status;
  if (rc == 0) {
    async_result *r = &a->r;
    bool small = h.data_len <= sizeof r->small_res && !r->hand_over;
    r->res = small ? r->small_res : malloc(h.data_len ? h.data_len : 1);
    if (r->res) {
      memcpy(r->res, data, h.data_len);
      r->len = h.data_len;
    } else {
      rc = MPROC_ENOMEM;
    }
  } else {
    a->err = mproc__pool_copy_msg(text, h.msg_len);
  }
  mproc__pool_finish(p, a, rc);
}

/* Every unfinished AsyncResult fails: MPROC_ECANCELLED after terminate, MPROC_ECRASHED when
 * the supervisor died under a running pool. */
void mproc__pool_cancel_all(mproc_pool *p) {
  int rc = p->sup_lost ? MPROC_ECRASHED : MPROC_ECANCELLED;
  const char *msg = p->sup_lost ? lost_msg : mproc_strerror(rc);
  for (size_t i = 0; i < p->tab_cap; i++) {
    if (!p->tab[i].id)
      continue;
    mproc_async *a = entry_async(&p->tab[i]);
    staged *st = entry_staged(&p->tab[i]);
    if (st)
      st->route->drop(p, st);
    if (!a || atomic_load(&a->ready))
      continue;
    if (a->route) {
      a->route->cancel(p, a, rc, msg);
    } else {
      free(a->err);
      a->err = mproc__pool_copy_msg(msg, strlen(msg));
      a->rc = rc;
    }
    mproc__pool_finish(p, a, a->rc);
  }
  if (p->tab)
    memset(p->tab, 0, p->tab_cap * sizeof *p->tab);
  p->tab_len = 0;
}

/* Whether the collector's sleep also watches the supervisor's pidfd (set by the collector
 * only, so a dead supervisor whose pool is being terminated is not reported in a loop). */
static bool watch_supervisor(const mproc_pool *p) {
  return p->sup_fd >= 0 && !p->sup_reaped && !p->sup_seen_dead;
}

/* With signals blocked: a short look at the ring, then a sleep in ppoll on notify_fd (which
 * the workers signal when armed) with the caller's mask back, atomically: a handler that
 * runs then interrupts it, one whose signal came before is delivered there at once. */
static int wait_blocked(mproc_pool *p, int64_t deadline, const sigset_t *old, bool spin) {
  mproc__ring *r = p->ctx.results;
  int64_t soon = mproc__now_ns() + SPIN_NS;
  if (spin && mproc__ring_wait_readable(r, deadline < soon ? deadline : soon) == 0)
    return 0;
  for (;;) {
    atomic_store(mproc__pool_armed(p), 1);
    if (mproc__ring_wait_readable(r, 0) == 0)
      return 0;
    /* The supervisor's pidfd turns readable when it dies: a supervisor killed from
     * outside is noticed at once, with no periodic check. */
    struct pollfd pf[2] = {{.fd = p->ctx.notify_fd, .events = POLLIN},
                           {.fd = p->sup_fd, .events = POLLIN}};
    size_t nfds = watch_supervisor(p) ? 2 : 1;
    int n = mproc__ppoll(pf, nfds, deadline, old);
    if (n == -EINTR)
      return -EINTR;
    if (n > 0 && nfds == 2 && pf[1].revents)
      return -ESRCH;
    if (n > 0)
      mproc__eventfd_drain(p->ctx.notify_fd);
    else if (mproc__remaining_ns(deadline) == 0)
      return -ETIMEDOUT;
  }
}

/* An engine pool's wait: the engine moves tasks and results until one is on the ring. */
static int engine_wait(mproc_pool *p, int64_t deadline) {
  for (;;) {
    if (mproc__ring_wait_readable(p->ctx.results, 0) == 0)
      return 0;
    int rc = p->engine->pump(p->engine, deadline);
    if (rc < 0)
      return rc == -ETIMEDOUT || rc == -EINTR ? rc : MPROC_ECLOSED;
  }
}

/* Waits until the result ring has a message (or is closed): 0, -ETIMEDOUT, or -EINTR when
 * a signal handler of the caller's ran meanwhile (Ctrl-C: blocking calls return). Futex
 * waits never tell (they restart), hence the blocked signals and ppoll; the synchronous
 * ones stay open, so a fault still kills at once. spin: see may_spin. */
static int wait_results(mproc_pool *p, int64_t deadline, bool spin) {
  if (p->engine)
    return engine_wait(p, deadline);
  /* A result due within microseconds is waited for without the two mask syscalls; a
   * handler that runs in that instant is seen at the next wait. */
  int64_t quick = mproc__now_ns() + QUICK_NS;
  if (mproc__ring_wait_readable(p->ctx.results, deadline < quick ? deadline : quick) == 0)
    return 0;
  if (mproc__remaining_ns(deadline) == 0)
    return -ETIMEDOUT;
  sigset_t old;
  mproc__block_async_signals(&old);
  int rc = wait_blocked(p, deadline, &old, spin);
  if (rc != -EINTR && mproc__handler_pending(&old))
    rc = -EINTR; /* it came during the look: delivered below, reported now */
  mproc__set_signal_mask(&old);
  return rc;
}

/* Takes results off the ring until the deadline brings one, then whatever else is there.
 * Called by the collector without p->mu. 0, -ETIMEDOUT, MPROC_ECLOSED, -EINTR, or -ESRCH
 * when the supervisor died. */
static int collect(mproc_pool *p, int64_t deadline, bool spin) {
  mproc__ring_msg m;
  int rc = wait_results(p, deadline, spin);
  if (rc == 0)
    rc = mproc__ring_read_begin(p->ctx.results, &m, 0);
  if (rc == -ETIMEDOUT)
    return mproc__remaining_ns(deadline) ? 0 : rc;
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&p->mu);
  for (int n = 0;; n++) {
    dispatch(p, m.data, m.len);
    mproc__ring_read_end(p->ctx.results, &m, true);
    /* Only the collector reads this ring, so a no-wait read under p->mu cannot deadlock. */
    if (n == COLLECT_BATCH || mproc__ring_read_begin(p->ctx.results, &m, 0) != 0)
      break;
  }
  if (p->poll_wake)
    atomic_store(&p->poll_wake->ready, true);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

/* A supervisor that died without being asked to (the collector's check, between slices):
 * closing the result ring lets the collector drain it and then fail what is left. A
 * client's supervisor may also have ended by the owner's terminate, or after the owner's
 * close once every task was done: it moved every result it had to us before it exited. */
static void check_supervisor(mproc_pool *p) {
  if (p->sup_fd < 0 || mproc__poll_fd(p->sup_fd, POLLIN, 0, NULL) != 1)
    return;
  bool terminated = atomic_load(&p->ctx.sh->flags) & MPROC__FLAG_TERMINATE;
  if (terminated && !p->ticket)
    return; /* the owner's terminate settles its pool itself */
  pthread_mutex_lock(&p->mu);
  /* Closed, it exits on its own once every task is done; then nothing is left to lose. */
  bool lost = p->state == POOL_RUNNING || p->state == POOL_CLOSED;
  if (lost) {
    p->sup_lost = !terminated;
    if (p->state == POOL_RUNNING)
      p->state = POOL_TERMINATED; /* later submissions: MPROC_ECLOSED */
  }
  pthread_mutex_unlock(&p->mu);
  if (lost) {
    if (!p->ticket) /* the owner's to close */
      mproc__ring_close(p->ctx.tasks);
    mproc__ring_close(p->ctx.results);
  }
}

static int cond_wait_until(mproc_pool *p, int64_t deadline) {
  if (deadline == MPROC__NEVER)
    return pthread_cond_wait(&p->cv, &p->mu);
  struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
  return pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* Whether the collector may spin long for a result (under p->mu). Not while every CPU has
 * a worker with a task: the spin would take a CPU from one of them, and the result it waits
 * for comes later by as much (2 workers on 2 CPUs, map of 1M int64: the caller spent a
 * quarter of its time spinning). A few microseconds it always spins: results of short
 * tasks come that quickly, and a sleep costs each of them a wake-up. */
static bool may_spin(const mproc_pool *p) {
  size_t busy = p->tab_len < (size_t)p->ctx.nworkers ? p->tab_len : (size_t)p->ctx.nworkers;
  return busy < (size_t)p->ncpu;
}

/* Waits (under p->mu) until a is ready (a NULL: until the ring is drained and closed) or
 * the deadline, collecting meanwhile. 0 or MPROC_ETIMEDOUT. */
int mproc__pool_await_locked(mproc_pool *p, mproc_async *a, int64_t deadline) {
  while (!(a && atomic_load(&a->ready))) {
    if (p->collecting) {
      if (cond_wait_until(p, deadline) == ETIMEDOUT && !(a && atomic_load(&a->ready)))
        return MPROC_ETIMEDOUT;
      continue;
    }
    p->collecting = true;
    bool spin = may_spin(p);
    pthread_mutex_unlock(&p->mu);
    /* Without the supervisor's pidfd to watch, long waits go in slices so that a
     * supervisor killed from outside is still noticed. */
    int64_t until = deadline;
    if (!watch_supervisor(p) && deadline - mproc__now_ns() > SUPERVISOR_CHECK_NS)
      until = mproc__now_ns() + SUPERVISOR_CHECK_NS;
    int rc = collect(p, until, spin);
    if (rc == -ESRCH) {
      p->sup_seen_dead = true; /* seen once; from now on the slices above look again */
      check_supervisor(p);
      rc = 0;
    } else if (rc == -ETIMEDOUT && deadline > until) {
      check_supervisor(p);
      rc = 0;
    }
    pthread_mutex_lock(&p->mu);
    p->collecting = false;
    pthread_cond_broadcast(&p->cv);
    if (rc == MPROC_ECLOSED) {
      mproc__pool_cancel_all(p); /* the supervisor is gone: nothing more will come */
      return 0;
    }
    if (rc == -ETIMEDOUT && !(a && atomic_load(&a->ready)))
      return MPROC_ETIMEDOUT;
    if (rc < 0 && rc != -ETIMEDOUT)
      return rc;
  }
  return 0;
}

int mproc__pool_await(mproc_async *a, int64_t deadline) {
  /* A ready result's pool may be gone already: nothing of it is touched then. */
  if (atomic_load_explicit(&a->ready, memory_order_acquire))
    return 0;
  /* Submitted by another process's view (this one was forked since): its results go
   * there, and this copy would wait for ever. */
  if (a->view != (uint32_t)mproc__getpid())
    return MPROC_ESTATE;
  mproc_pool *p = a->pool;
  pthread_mutex_lock(&p->mu);
  int rc = mproc__pool_await_locked(p, a, deadline);
  pthread_mutex_unlock(&p->mu);
  mproc__pool_after_wait(p);
  return rc;
}

void mproc__pool_after_wait(mproc_pool *p) {
  if (mproc__pool_in_callbacks())
    return; /* the outer call does it when they are done */
  if (atomic_load_explicit(&p->cb_queued, memory_order_relaxed))
    mproc__pool_run_callbacks(p);
  if (atomic_load_explicit(&p->fd_wanted, memory_order_relaxed)) {
    atomic_store(mproc__pool_armed(p), 1);
    if (mproc__ring_wait_readable(p->ctx.results, 0) == 0 || atomic_load(&p->cb_queued))
      mproc__eventfd_signal(p->ctx.notify_fd);
  }
}
