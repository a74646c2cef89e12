/* The Manager server's Values, Queues and synchronization objects (server.h): each request
 * under the server's mutex; a blocking one tries, and while it must wait, waits for a
 * change (the waiter's wait releases the mutex meanwhile) until its deadline. */
#define _GNU_SOURCE
#include "manager/server.h"

#include <stdlib.h>
#include <string.h>

/* A request's timeout in ns (< 0: none) as a deadline. */
static int64_t deadline_of(int64_t t) {
  if (t < 0)
    return MPROC__NEVER;
  int64_t now = mproc__now_ns();
  return t > INT64_MAX - now ? MPROC__NEVER : now + t;
}

/* After a try that must wait: 0 to try again, or the status to return (timeout 0: take
 * says MPROC_EAGAIN, a wait MPROC_ETIMEDOUT). */
static int again(const mproc__mgr_waiter *w, int64_t t, int64_t deadline, bool take) {
  if (t == 0)
    return take ? MPROC_EAGAIN : MPROC_ETIMEDOUT;
  int rc = w->wait(w->ctx, deadline);
  return rc == -ETIMEDOUT ? MPROC_ETIMEDOUT : rc;
}

static int lock_acquire(mproc__mlock *l, const mproc__mgr_waiter *w, int64_t t) {
  int64_t dl = deadline_of(t);
  for (;;) {
    int rc = mproc__mlock_try(l, w->who);
    if (rc != -EBUSY || (rc = again(w, t, dl, true)))
      return rc;
  }
}

static int lock_op(mproc__mlock *l, const mproc__mgr_waiter *w, int rop, int64_t num) {
  if (rop == MPROC__R_ACQUIRE)
    return lock_acquire(l, w, num);
  if (rop != MPROC__R_RELEASE)
    return -EPROTO;
  int rc = mproc__mlock_release(l, w->who);
  if (rc == 0)
    w->changed(w->ctx);
  return rc;
}

static int sem_op(mproc__msem *m, const mproc__mgr_waiter *w, int rop, int64_t num,
                  int64_t *out) {
  switch (rop) {
  case MPROC__R_ACQUIRE: {
    int64_t dl = deadline_of(num);
    int rc;
    while (m->value == 0)
      if ((rc = again(w, num, dl, true)))
        return rc;
    m->value--;
    return 0;
  }
  case MPROC__R_RELEASE:
    if ((m->bounded && m->value >= m->initial) || m->value >= INT32_MAX)
      return MPROC_ESTATE;
    m->value++;
    w->changed(w->ctx);
    return 0;
  case MPROC__R_VALUE:
    *out = m->value;
    return 0;
  }
  return -EPROTO;
}

static int event_op(mproc__mevent *e, const mproc__mgr_waiter *w, int rop, int64_t num,
                    int64_t *out) {
  switch (rop) {
  case MPROC__R_SET:
    if (!e->set) {
      e->set = true;
      e->sets++;
      w->changed(w->ctx);
    }
    return 0;
  case MPROC__R_CLEAR:
    e->set = false;
    return 0;
  case MPROC__R_VALUE:
    *out = e->set;
    return 0;
  case MPROC__R_WAIT: {
    /* Set during the wait and cleared again before we looked: still 0 (threading.Event). */
    uint64_t sets = e->sets;
    int64_t dl = deadline_of(num);
    int rc;
    while (!e->set && e->sets == sets)
      if ((rc = again(w, num, dl, false)))
        return rc;
    return 0;
  }
  }
  return -EPROTO;
}

/* Condition.wait: the lock let go whole, a place in the line, notified or timed out, then
 * the lock taken back to the same depth (without a timeout, as Python does). */
static int cond_wait(mproc__mcond *c, const mproc__mgr_waiter *w, int64_t num) {
  mproc__mlock *l = c->lock;
  if (l->owner != w->who)
    return MPROC_ESTATE;
  uint64_t depth = l->depth;
  l->owner = 0;
  l->depth = 0;
  mproc__cwaiter me;
  mproc__mcond_enqueue(c, &me);
  w->changed(w->ctx);
  int64_t dl = deadline_of(num);
  int rc = 0;
  while (!me.notified && rc == 0)
    rc = num == 0 ? MPROC_ETIMEDOUT : again(w, num, dl, false);
  if (!me.notified)
    mproc__mcond_remove(c, &me);
  if (rc == MGR_GONE)
    return rc;
  int took;
  while ((took = mproc__mlock_try(l, w->who)) == -EBUSY)
    if (w->wait(w->ctx, MPROC__NEVER) != 0)
      return MGR_GONE;
  l->depth = depth;
  return took == MPROC_EOWNERDEAD ? took : rc;
}

static int cond_op(mproc__mcond *c, const mproc__mgr_waiter *w, int rop, int64_t num) {
  switch (rop) {
  case MPROC__R_ACQUIRE:
  case MPROC__R_RELEASE:
    return lock_op(c->lock, w, rop, num);
  case MPROC__R_WAIT:
    return cond_wait(c, w, num);
  case MPROC__R_NOTIFY:
    if (c->lock->owner != w->who)
      return MPROC_ESTATE;
    mproc__mcond_notify(c, num);
    w->changed(w->ctx);
    return 0;
  }
  return -EPROTO;
}

static int barrier_wait(mproc__mbarrier *b, const mproc__mgr_waiter *w, int64_t num,
                        int64_t *out) {
  if (b->broken)
    return MPROC_ESTATE;
  uint64_t gen = b->gen;
  *out = (int64_t)b->count++;
  if (b->count == b->parties) {
    b->count = 0;
    b->gen++;
    w->changed(w->ctx);
    return 0;
  }
  int64_t dl = deadline_of(num);
  for (;;) {
    if (b->gen != gen)
      return b->reset_gen == gen ? MPROC_ESTATE : 0;
    if (b->broken)
      return MPROC_ESTATE;
    int rc = again(w, num, dl, false);
    if (rc == MPROC_ETIMEDOUT) {
      b->broken = true; /* as threading.Barrier: a timeout breaks it for everyone */
      w->changed(w->ctx);
    }
    if (rc)
      return rc;
  }
}

static int barrier_op(mproc__mbarrier *b, const mproc__mgr_waiter *w, int rop, int64_t num,
                      int64_t *out) {
  switch (rop) {
  case MPROC__R_WAIT:
    return barrier_wait(b, w, num, out);
  case MPROC__R_ABORT:
    b->broken = true;
    w->changed(w->ctx);
    return 0;
  case MPROC__R_RESET:
    if (b->count) { /* those waiting now get MPROC_ESTATE */
      b->reset_gen = b->gen;
      b->gen++;
      b->count = 0;
    }
    b->broken = false;
    w->changed(w->ctx);
    return 0;
  }
  return -EPROTO;
}

static int queue_op(mproc__mqueue *q, const mproc__mgr_waiter *w, int rop, int64_t num,
                    int64_t *out) {
  switch (rop) {
  case MPROC__R_VALUE:
    *out = (int64_t)q->n;
    return 0;
  case MPROC__R_FULL:
    *out = q->maxsize && q->n >= q->maxsize;
    return 0;
  case MPROC__R_CLOSE:
    q->closed = true;
    w->changed(w->ctx);
    return 0;
  case MPROC__R_TASK_DONE:
    if (!q->joinable || q->unfinished == 0)
      return MPROC_ESTATE;
    if (--q->unfinished == 0)
      w->changed(w->ctx);
    return 0;
  case MPROC__R_JOIN: {
    if (!q->joinable)
      return MPROC_ESTATE;
    int64_t dl = deadline_of(num);
    int rc;
    while (q->unfinished)
      if ((rc = again(w, num, dl, false)))
        return rc;
    return 0;
  }
  }
  return -EPROTO;
}

static int queue_put(mproc__mqueue *q, const mproc__mgr_waiter *w, const mproc__mgr_msg *m) {
  if (m->nf != 1)
    return -EPROTO;
  int64_t dl = deadline_of(m->num);
  int rc;
  while ((rc = mproc__mqueue_put_try(q, m->f[0], m->flen[0])) == -EBUSY)
    if ((rc = again(w, m->num, dl, true)))
      return rc;
  if (rc == 0)
    w->changed(w->ctx);
  return rc;
}

static int queue_get(mproc__mqueue *q, const mproc__mgr_waiter *w, const mproc__mgr_msg *m,
                     mproc__mgr_msg *r, mproc__blob *scratch) {
  int64_t dl = deadline_of(m->num);
  int rc;
  while ((rc = mproc__mqueue_get_try(q, scratch)) == -EBUSY)
    if ((rc = again(w, m->num, dl, true)))
      return rc;
  if (rc == 0) {
    r->nf = 1;
    r->f[0] = scratch->p;
    r->flen[0] = scratch->len;
    w->changed(w->ctx);
  }
  return rc;
}

static int value_op(mproc__blob *v, const mproc__mgr_msg *m, mproc__mgr_msg *r) {
  if (m->op == MGR_V_GET) {
    r->nf = 1;
    r->f[0] = v->p;
    r->flen[0] = v->len;
    return 0;
  }
  mproc__blob nv;
  if (m->nf != 1)
    return -EPROTO;
  if (mproc__blob_set(&nv, m->f[0], m->flen[0]))
    return MPROC_ENOMEM;
  free(v->p);
  *v = nv;
  return 0;
}

int mproc__mgr_sync(mproc__store *s, const mproc__mgr_waiter *w, const mproc__mgr_msg *m,
                    mproc__mgr_msg *r, mproc__blob *scratch) {
  int kind = mproc__store_kind(s, m->id);
  void *o = kind < 0 ? NULL : mproc__store_get(s, m->id, kind);
  int rop = m->op - MGR_X;
  bool queue = kind == MGR_K_QUEUE || kind == MGR_K_JQUEUE;
  if (!o || !w)
    return MPROC_EINVAL;
  if (m->op == MGR_V_GET || m->op == MGR_V_SET)
    return kind == MGR_K_VALUE ? value_op(o, m, r) : MPROC_EINVAL;
  if (m->op == MGR_Q_PUT || m->op == MGR_Q_GET) {
    if (!queue)
      return MPROC_EINVAL;
    return m->op == MGR_Q_PUT ? queue_put(o, w, m) : queue_get(o, w, m, r, scratch);
  }
  if (m->op < MGR_X || rop <= 0 || rop >= MPROC__R_END)
    return -EPROTO;
  switch (kind) {
  case MGR_K_LOCK:
  case MGR_K_RLOCK:
    return lock_op(o, w, rop, m->num);
  case MGR_K_SEM:
  case MGR_K_BSEM:
    return sem_op(o, w, rop, m->num, &r->num);
  case MGR_K_EVENT:
    return event_op(o, w, rop, m->num, &r->num);
  case MGR_K_COND:
    return cond_op(o, w, rop, m->num);
  case MGR_K_BARRIER:
    return barrier_op(o, w, rop, m->num, &r->num);
  case MGR_K_QUEUE:
  case MGR_K_JQUEUE:
    return queue_op(o, w, rop, m->num, &r->num);
  }
  return MPROC_EINVAL;
}
