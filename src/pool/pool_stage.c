/*
 * The map stage: a pool's shared memory for big map chunks. The caller copies a chunk's
 * input into a block here, the worker reads it and writes the chunk's output in place, and
 * the caller copies the output out: two copies per byte, both the caller's, where the rings
 * take four (the worker's copy out of the task ring and into the result ring).
 *
 * The area is reserved before the supervisor is forked, so that every worker sees it at the
 * same address; pages are committed as blocks first reach them. Only the caller allocates,
 * under p->mu; the free list is process-local.
 */
#define _GNU_SOURCE
#include "pool/pool_stage.h"
#include "core/internal.h"

#include <stdlib.h>

/* Address space to reserve (halved until the system agrees), and what stays committed
 * while nothing is staged: a pool that maps big arrays again and again keeps its pages
 * (and every worker keeps them mapped: no page faults), one that did a huge map_async
 * gives the rest back. */
#define STAGE_RESERVE ((size_t)64 << 30)
#define STAGE_RESERVE_MIN ((size_t)64 << 20)
#define STAGE_KEEP ((size_t)32 << 20)

struct mproc__stage_ext {
  size_t off, len;
  struct mproc__stage_ext *next;
};

static int all_free(mproc__stage *s) {
  mproc__stage_ext *e = s->free;
  if (!e) {
    if (!(e = malloc(sizeof *e)))
      return MPROC_ENOMEM;
    e->next = NULL;
  }
  while (e->next) {
    mproc__stage_ext *n = e->next;
    e->next = n->next;
    free(n);
  }
  *e = (mproc__stage_ext){0, s->reserved, NULL};
  s->free = e;
  s->retired = 0;
  return 0;
}

int mproc__stage_init(mproc__stage *s) {
  *s = (mproc__stage){0};
  for (size_t len = STAGE_RESERVE; len >= STAGE_RESERVE_MIN; len /= 2) {
    if ((s->base = mproc__shared_reserve(len)) != NULL) {
      s->reserved = len;
      break;
    }
  }
  if (!s->base)
    return 0; /* no stage: every chunk goes through the rings */
  int rc = all_free(s);
  if (rc) {
    mproc__shared_unmap(s->base, s->reserved);
    s->base = NULL;
  }
  return rc;
}

void mproc__stage_destroy(mproc__stage *s) {
  while (s->free) {
    mproc__stage_ext *n = s->free->next;
    free(s->free);
    s->free = n;
  }
  if (s->base)
    mproc__shared_unmap(s->base, s->reserved);
  s->base = NULL;
}

/* Blocks are whole pages (mproc__page_round): commit and discard work on pages, and no two
 * chunks share a cache line. */

void *mproc__stage_alloc(mproc__stage *s, size_t len) {
  if (!s->base || len == 0 || len > s->reserved)
    return NULL;
  len = mproc__page_round(len);
  mproc__stage_ext **link = &s->free;
  while (*link && (*link)->len < len)
    link = &(*link)->next;
  mproc__stage_ext *e = *link;
  if (!e)
    return NULL;
  size_t off = e->off;
  /* Committed now, so that running out of memory is a failed allocation (and the chunk
   * goes through the rings, or fails cleanly) rather than SIGBUS in a worker. */
  if (off + len > s->committed) {
    size_t from = s->committed > off ? s->committed : off;
    if (mproc__shared_commit(s->base + from, off + len - from) != 0)
      return NULL;
    s->committed = off + len;
  }
  e->off += len;
  e->len -= len;
  if (e->len == 0) {
    *link = e->next;
    free(e);
  }
  s->live++;
  return s->base + off;
}

static void trim(mproc__stage *s) {
  if (s->live || s->retired || s->committed <= STAGE_KEEP)
    return;
  s->gen++;
  if (mproc__shared_discard(s->base + STAGE_KEEP, s->committed - STAGE_KEEP) == 0)
    s->committed = STAGE_KEEP;
}

void mproc__stage_free(mproc__stage *s, void *p, size_t len) {
  size_t off = (size_t)((char *)p - s->base);
  len = mproc__page_round(len);
  s->live--;
  mproc__stage_ext *prev = NULL, *next = s->free;
  while (next && next->off < off) {
    prev = next;
    next = next->next;
  }
  bool join_prev = prev && prev->off + prev->len == off;
  bool join_next = next && off + len == next->off;
  if (join_prev && join_next) {
    prev->len += len + next->len;
    prev->next = next->next;
    free(next);
  } else if (join_prev) {
    prev->len += len;
  } else if (join_next) {
    next->off = off;
    next->len += len;
  } else {
    mproc__stage_ext *e = malloc(sizeof *e);
    if (!e) {
      s->retired += len; /* back at the next reset */
      return;
    }
    *e = (mproc__stage_ext){off, len, next};
    if (prev)
      prev->next = e;
    else
      s->free = e;
  }
  trim(s);
}

void mproc__stage_retire(mproc__stage *s, size_t len) {
  s->live--;
  s->retired += mproc__page_round(len);
}

void mproc__stage_reset(mproc__stage *s) {
  if (s->live || !s->retired)
    return;
  if (all_free(s) == 0)
    trim(s);
}
