/*
 * Queue, SimpleQueue and JoinableQueue: the ring (ring.c) plus, for a JoinableQueue, a
 * shared count of unfinished items.
 *
 * Sizes: the ring's data area is a large MAP_NORESERVE reservation (about the machine's
 * memory), committed as the queue grows and given back when it drains; so put copies the
 * message into shared memory and returns, whatever its size and whether or not anyone reads
 * (no cpython#73983 trap), and only maxsize (in items) ever makes a put wait.
 *
 * JoinableQueue: a put counts the item as unfinished before it is published (so a fast
 * getter's task_done cannot come first) and uncounts it if the put fails. A producer killed
 * between the two leaves a count that join waits for in vain (join's timeout bounds that),
 * as in Python.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "ring.h"

#include <stdlib.h>

typedef struct queue_shared {
  _Atomic int64_t unfinished; /* items put and not yet task_done */
  _Atomic uint32_t seq;       /* bumped when unfinished reaches 0: joiners sleep on it */
  _Atomic uint32_t joiners;
} queue_shared;

struct mproc_queue {
  mproc__ring *ring;
  queue_shared *s; /* joinable only */
  bool joinable;
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
  nq->joinable = opts && opts->joinable;
  if (nq->joinable && !(nq->s = mproc__shared_map(mproc__page_size()))) {
    mproc__ring_free(nq->ring);
    free(nq);
    return MPROC_ENOMEM;
  }
  *q = nq;
  return 0;
}

void mproc_queue_free(mproc_queue *q) {
  if (!q)
    return;
  mproc__ring_free(q->ring);
  if (q->s)
    mproc__shared_unmap(q->s, mproc__page_size());
  free(q);
}

static void unfinished_sub(queue_shared *s) {
  if (atomic_fetch_sub(&s->unfinished, 1) == 1) {
    atomic_fetch_add(&s->seq, 1);
    if (atomic_load(&s->joiners))
      mproc__futex_wake(&s->seq, INT32_MAX);
  }
}

int mproc_queue_put(mproc_queue *q, const void *buf, size_t len, double timeout) {
  if (!q || (len && !buf))
    return MPROC_EINVAL;
  if (q->joinable)
    atomic_fetch_add(&q->s->unfinished, 1);
  int rc = mproc__ring_put(q->ring, buf, len, mproc__deadline(timeout));
  if (rc && q->joinable)
    unfinished_sub(q->s);
  return mproc__take_rc(rc, timeout);
}

int mproc_queue_get(mproc_queue *q, void **buf, size_t *len, double timeout) {
  if (!q || !buf)
    return MPROC_EINVAL;
  return mproc__take_rc(mproc__ring_get(q->ring, buf, len, mproc__deadline(timeout)), timeout);
}

long mproc_queue_qsize(mproc_queue *q) {
  if (!q)
    return MPROC_EINVAL;
  return (long)mproc__ring_count(q->ring);
}

bool mproc_queue_empty(mproc_queue *q) { return !q || mproc__ring_count(q->ring) == 0; }

bool mproc_queue_full(mproc_queue *q) {
  if (!q)
    return false;
  size_t max = mproc__ring_max_items(q->ring);
  return max && mproc__ring_count(q->ring) >= max;
}

int mproc_queue_close(mproc_queue *q) {
  if (!q)
    return MPROC_EINVAL;
  return mproc__ring_close(q->ring);
}

int mproc_queue_task_done(mproc_queue *q) {
  if (!q || !q->joinable)
    return MPROC_EINVAL;
  int64_t v = atomic_load(&q->s->unfinished);
  do {
    if (v <= 0)
      return MPROC_ESTATE;
  } while (!atomic_compare_exchange_weak(&q->s->unfinished, &v, v - 1));
  if (v == 1) {
    atomic_fetch_add(&q->s->seq, 1);
    if (atomic_load(&q->s->joiners))
      mproc__futex_wake(&q->s->seq, INT32_MAX);
  }
  return 0;
}

int mproc_queue_join(mproc_queue *q, double timeout) {
  if (!q || !q->joinable)
    return MPROC_EINVAL;
  queue_shared *s = q->s;
  int64_t deadline = mproc__deadline(timeout);
  for (;;) {
    if (atomic_load(&s->unfinished) <= 0)
      return 0;
    /* Count ourselves, then look again: task_done bumps seq after its decrement and wakes
     * only when it sees a joiner (both seq_cst, so one of us sees the other). */
    atomic_fetch_add(&s->joiners, 1);
    uint32_t seq = atomic_load(&s->seq);
    int rc = 0;
    if (atomic_load(&s->unfinished) > 0)
      rc = mproc__futex_wait(&s->seq, seq, deadline);
    atomic_fetch_sub(&s->joiners, 1);
    if (atomic_load(&s->unfinished) <= 0)
      return 0;
    if (rc == -ETIMEDOUT)
      return MPROC_ETIMEDOUT;
    if (rc < 0 && rc != -EINTR)
      return rc;
  }
}
