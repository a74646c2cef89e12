/*
 * The map stage (pool_stage.c): an area of shared address space, reserved before the
 * supervisor is forked so every worker maps it at the same address, where big map chunks
 * cross with one copy in (or none) and none out. The caller's; used under p->mu.
 */
#ifndef MPROC_POOL_STAGE_H
#define MPROC_POOL_STAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mproc__stage_ext mproc__stage_ext;
typedef struct mproc__stage {
  char *base;             /* NULL: no stage (chunks go through the rings) */
  size_t reserved;        /* address space, shared with the supervisor and workers */
  size_t committed;       /* [base, base + committed) has its pages */
  size_t live;            /* blocks handed out and not freed or retired */
  size_t retired;         /* bytes a worker may still touch, free again at the next reset */
  mproc__stage_ext *free; /* the free extents, by offset, coalesced */
  /* Bumped whenever pages are given back: a worker that mapped [base, x) in earlier must
   * map it again (mproc__task_hdr.stage_gen). */
  uint32_t gen;
} mproc__stage;

/* Reserves the area (before the supervisor is forked). 0 also when no area could be had. */
int mproc__stage_init(mproc__stage *s);
void mproc__stage_destroy(mproc__stage *s);
/* A block of len bytes, page aligned, committed; NULL when there is no room or memory. */
void *mproc__stage_alloc(mproc__stage *s, size_t len);
/* Gives back a block no worker will touch again (its chunk's worker finished with it). */
void mproc__stage_free(mproc__stage *s, void *p, size_t len);
/* Sets aside a block a worker may still write (its chunk was abandoned, or its worker died
 * and the task may be delivered again): usable again only after mproc__stage_reset. */
void mproc__stage_retire(mproc__stage *s, size_t len);
/* Makes retired blocks free again. Only when no block is live and no worker holds or can
 * still take a staged chunk. */
void mproc__stage_reset(mproc__stage *s);

#endif /* MPROC_POOL_STAGE_H */
