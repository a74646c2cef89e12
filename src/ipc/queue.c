/*
 * Queue, SimpleQueue and JoinableQueue: the ring (ring.c) plus, for a JoinableQueue, a
 * shared count of unfinished items.
 *
 * Sizes: the ring's data area is a large MAP_NORESERVE reservation (about the machine's
 * memory), committed as the queue grows and given back when it drains; so put copies the
 * message into shared memory and returns, whatever its size and whether or not anyone reads
 * (no cpython#73983 trap), and only maxsize (in items) ever makes a put wait.
 *
 * JoinableQueue: the items put are the ring's own count of published messages (made under
 * the producers' lock with the message, so a put killed midway never counts and a failed put
 * never counts); the queue only counts task_done calls. join waits until the two are equal;
 * a task_done that would pass the items put is MPROC_ESTATE. A getter killed before its
 * task_done leaves join waiting (its timeout bounds that), as in Python.
 */
#define _GNU_SOURCE
#include "core/internal.h"
#include "core/ring.h"
#include "core/arena.h"
#include "core/start.h"

#include <stdlib.h>

typedef struct queue_shared {
  _Atomic uint64_t done;  /* task_done calls */
  _Atomic uint32_t seq;   /* bumped when done catches up with the items put: joiners sleep on it */
  _Atomic uint32_t joiners;
} queue_shared;

#define QUEUE_MAGIC 0x51554555u /* "QUEU" */

struct mproc_queue {
  uint32_t magic; /* first: how a handle's kind is told (start.h) */
  mproc__ring *ring;
  queue_shared *s; /* joinable only */
};

int mproc_queue_new(mproc_queue **q, const mproc_queue_opts *opts) {
  if (!q)
    return MPROC_EINVAL;
  *q = NULL;
  mproc_queue *nq = calloc(1, sizeof *nq);
  if (!nq)
    return MPROC_ENOMEM;
  mproc__ring_opts ro = {.max_items = opts ? opts->maxsize : 0};
  int rc = mproc__ring_new(&nq->ring, &ro);
  if (rc) {
    free(nq);
    return rc;
  }
  if (opts && opts->joinable && !(nq->s = mproc__shared_alloc(sizeof *nq->s))) {
    mproc__ring_free(nq->ring);
    free(nq);
    return MPROC_ENOMEM;
  }
  nq->magic = QUEUE_MAGIC;
  *q = nq;
  return 0;
}

void mproc_queue_free(mproc_queue *q) {
  if (MPROC__UNLIKELY(mproc__is_remote(q))) {
    ((mproc__remote *)q)->ops->free((mproc__remote *)q);
    return;
  }
  if (!q)
    return;
  mproc__ring_free(q->ring);
  if (q->s)
    mproc__shared_free(q->s, sizeof *q->s);
  free(q);
}

/* A timed call tries without a deadline first: the clock is read only when it must wait. */
static int64_t first_try(double timeout) { return timeout > 0 ? 0 : mproc__deadline(timeout); }

int mproc_queue_put(mproc_queue *q, const void *buf, size_t len, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return (len && !buf) ? MPROC_EINVAL : ((mproc__remote *)q)->ops->put((mproc__remote *)q, buf, len, timeout);
  if (!q || (len && !buf))
    return MPROC_EINVAL;
  int rc = mproc__ring_put(q->ring, buf, len, first_try(timeout));
  if (rc == -ETIMEDOUT && timeout > 0)
    rc = mproc__ring_put(q->ring, buf, len, mproc__deadline(timeout));
  return mproc__take_rc(rc, timeout);
}

int mproc_queue_get(mproc_queue *q, void **buf, size_t *len, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return !buf || !len ? MPROC_EINVAL : ((mproc__remote *)q)->ops->get((mproc__remote *)q, buf, len, timeout);
  if (!q || !buf)
    return MPROC_EINVAL;
  int rc = mproc__ring_get(q->ring, buf, len, first_try(timeout));
  if (rc == -ETIMEDOUT && timeout > 0)
    rc = mproc__ring_get(q->ring, buf, len, mproc__deadline(timeout));
  return mproc__take_rc(rc, timeout);
}

long mproc_queue_qsize(mproc_queue *q) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return (long)mproc__rnum(q, MPROC__R_VALUE);
  if (!q)
    return MPROC_EINVAL;
  return (long)mproc__ring_count(q->ring);
}

bool mproc_queue_empty(mproc_queue *q) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return mproc__rnum(q, MPROC__R_VALUE) <= 0;
  return !q || mproc__ring_count(q->ring) == 0;
}

bool mproc_queue_full(mproc_queue *q) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return mproc__rnum(q, MPROC__R_FULL) == 1;
  if (!q)
    return false;
  size_t max = mproc__ring_max_items(q->ring);
  return max && mproc__ring_count(q->ring) >= max;
}

int mproc_queue_close(mproc_queue *q) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return mproc__rcall(q, MPROC__R_CLOSE, 0, 0, NULL);
  if (!q)
    return MPROC_EINVAL;
  return mproc__ring_close(q->ring);
}

int mproc_queue_task_done(mproc_queue *q) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return mproc__rcall(q, MPROC__R_TASK_DONE, 0, 0, NULL);
  if (!q || !q->s)
    return MPROC_EINVAL;
  queue_shared *s = q->s;
  uint64_t d = atomic_load(&s->done);
  do {
    if (d >= mproc__ring_total_put(q->ring))
      return MPROC_ESTATE;
  } while (!atomic_compare_exchange_weak(&s->done, &d, d + 1));
  /* seq_cst: a joiner that counted itself in before looking at done is seen here. */
  if (d + 1 == mproc__ring_total_put(q->ring)) {
    atomic_fetch_add(&s->seq, 1);
    if (atomic_load(&s->joiners))
      mproc__futex_wake(&s->seq, INT32_MAX);
  }
  return 0;
}

/* done first: it never passes the items put, so reading it first never says "all done" while
 * an item put before the call is unfinished. */
static bool all_done(mproc_queue *q) {
  uint64_t done = atomic_load(&q->s->done);
  return done >= mproc__ring_total_put(q->ring);
}

int mproc_queue_join(mproc_queue *q, double timeout) {
  if (MPROC__UNLIKELY(mproc__is_remote(q)))
    return mproc__rcall(q, MPROC__R_JOIN, 0, timeout, NULL);
  if (!q || !q->s)
    return MPROC_EINVAL;
  queue_shared *s = q->s;
  int64_t deadline = mproc__deadline(timeout);
  for (;;) {
    if (all_done(q))
      return 0;
    /* Count ourselves, then look again: task_done bumps seq after its increment and wakes
     * only when it sees a joiner (both seq_cst, so one of us sees the other). */
    atomic_fetch_add(&s->joiners, 1);
    uint32_t seq = atomic_load(&s->seq);
    int rc = 0;
    if (!all_done(q))
      rc = mproc__futex_wait(&s->seq, seq, deadline);
    atomic_fetch_sub(&s->joiners, 1);
    if (all_done(q))
      return 0;
    if (rc == -ETIMEDOUT)
      return MPROC_ETIMEDOUT;
    if (rc < 0 && rc != -EINTR)
      return rc;
  }
}

/* ---- crossing to a child that was not forked ---- */

static int queue_export(const void *h, mproc__msg *m) {
  const mproc_queue *q = h;
  int rc = mproc__ring_export(q->ring, m);
  if (q->s)
    mproc__msg_put_mem(m, q->s);
  mproc__msg_put_u64(m, (uintptr_t)q->s);
  return rc ? rc : m->err;
}

static void *queue_import(mproc__rd *r) {
  mproc_queue *q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->ring = mproc__ring_import(r);
  q->s = (queue_shared *)(uintptr_t)mproc__rd_u64(r);
  if (!q->ring || r->bad) {
    mproc__ring_free(q->ring);
    free(q);
    return NULL;
  }
  q->magic = QUEUE_MAGIC;
  return q;
}

__attribute__((constructor(MPROC__CTOR_KINDS))) static void queue_kind(void) {
  static const mproc__kind k = {QUEUE_MAGIC, queue_export, queue_import};
  mproc__kind_register(&k);
}
