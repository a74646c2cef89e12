/*
 * Private view of the sync layer, for layers that embed a lock in their own shared memory
 * (an Array's lock lives inside the array's mapping). Not installed.
 */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include "core/internal.h"

/* How long to spin before a futex sleep, learnt per object (see sync.c). Zeroed is valid. */
typedef struct mproc__spin {
  _Atomic uint32_t budget;
  _Atomic uint32_t tries;
  _Atomic uint32_t probe_shift;
} mproc__spin;

struct mproc_lock {
  uint32_t magic; /* first in every object: how a handle's kind is told (start.h) */
  mproc__mutex m;
  bool recursive;
  bool embedded; /* inside another object's mapping: mproc_lock_free leaves it alone */
  mproc__spin spin;
};

/* Initializes a lock in place, in memory shared before any fork that uses it. */
int mproc__lock_init(mproc_lock *l, bool recursive, bool embedded);
/* Before unmapping an embedded lock: releases it if the calling thread holds it. */
void mproc__lock_drop(mproc_lock *l);

#endif /* MPROC_SYNC_H */
