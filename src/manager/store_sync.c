/* The Manager server's Locks, Conditions and Queues (store.h): their state and the rules of
 * each step; waiting for a change is the server's (server.c). */
#define _GNU_SOURCE
#include "manager/store.h"

#include <stdlib.h>
#include <string.h>

int mproc__mlock_try(mproc__mlock *l, uint64_t who) {
  if (l->owner == 0) {
    l->owner = who;
    l->depth = 1;
    bool dead = l->dead;
    l->dead = false;
    return dead ? MPROC_EOWNERDEAD : 0;
  }
  if (l->owner == who && l->recursive) {
    l->depth++;
    return 0;
  }
  return -EBUSY; /* a plain Lock its holder takes again waits, as in Python */
}

int mproc__mlock_release(mproc__mlock *l, uint64_t who) {
  if (l->owner != who || l->depth == 0)
    return MPROC_ESTATE;
  if (--l->depth == 0)
    l->owner = 0;
  return 0;
}

void mproc__mcond_enqueue(mproc__mcond *c, mproc__cwaiter *w) {
  w->next = NULL;
  w->notified = false;
  *c->tail = w;
  c->tail = &w->next;
}

void mproc__mcond_remove(mproc__mcond *c, mproc__cwaiter *w) {
  for (mproc__cwaiter **p = &c->head; *p; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      if (c->tail == &w->next)
        c->tail = p;
      return;
    }
}

void mproc__mcond_notify(mproc__mcond *c, int64_t n) {
  while (c->head && n != 0) {
    mproc__cwaiter *w = c->head;
    c->head = w->next;
    if (!c->head)
      c->tail = &c->head;
    w->notified = true;
    if (n > 0)
      n--;
  }
}

size_t mproc__mqueue_len(const mproc__mqueue *q) { return q->n; }

int mproc__mqueue_put_try(mproc__mqueue *q, const void *v, size_t vl) {
  if (q->closed)
    return MPROC_ECLOSED;
  if (q->maxsize && q->n >= q->maxsize)
    return -EBUSY;
  if (q->head + q->n == q->cap) {
    if (q->head > q->cap / 2) { /* half the array taken: slide down rather than grow */
      memmove(q->v, q->v + q->head, q->n * sizeof *q->v);
      q->head = 0;
    } else {
      size_t cap = q->cap ? q->cap * 2 : 16;
      mproc__blob *nv = realloc(q->v, cap * sizeof *nv);
      if (!nv)
        return MPROC_ENOMEM;
      q->v = nv;
      q->cap = cap;
    }
  }
  int rc = mproc__blob_set(&q->v[q->head + q->n], v, vl);
  if (rc)
    return rc;
  q->n++;
  if (q->joinable)
    q->unfinished++;
  return 0;
}

int mproc__mqueue_get_try(mproc__mqueue *q, mproc__blob *out) {
  if (q->n == 0)
    return q->closed ? MPROC_ECLOSED : -EBUSY;
  *out = q->v[q->head++];
  if (--q->n == 0)
    q->head = 0;
  return 0;
}
