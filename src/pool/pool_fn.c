/*
 * Functions sent to the workers of a pool whose supervisor was spawned (or forked by the
 * forkserver): they cross as the caller's address, which the worker turns into its own by
 * way of the object file that holds it (see pool.h's mproc__fn_table). Both ends cache the
 * last function, so a stream of tasks of one function pays a compare per task.
 */
#define _GNU_SOURCE
#include "pool/pool.h"

#include <stdbool.h>
#include <string.h>

/* ---- the caller's side ---- */

static bool in_table(const mproc__fn_table *t, uint32_t n, uintptr_t a) {
  for (uint32_t i = 0; i < n; i++)
    if (a >= t->objs[i].lo && a < t->objs[i].hi)
      return true;
  return false;
}

int mproc__pool_fn_check(mproc__pool_ctx *ctx, const void *fn) {
  mproc__fn_table *t = ctx->fns;
  if (!t)
    return 0;
  uintptr_t a = (uintptr_t)fn;
  if (in_table(t, atomic_load_explicit(&t->n, memory_order_acquire), a))
    return 0;
  /* Shared, robust: the caller and its forked clients append, each in its own process; a
   * holder that died left at most an entry it had not published. */
  int lrc = mproc__mutex_lock(&t->mu, MPROC__NEVER);
  if (lrc != 0 && lrc != MPROC_EOWNERDEAD)
    return lrc;
  uint32_t n = atomic_load_explicit(&t->n, memory_order_relaxed);
  int rc = 0;
  if (!in_table(t, n, a)) {
    mproc__fn_obj *o = &t->objs[n];
    uintptr_t span[3];
    if (n == MPROC__FN_OBJS)
      rc = MPROC_ETOOBIG;
    else if (mproc__fn_object(fn, o->path, sizeof o->path, span) != 0)
      rc = MPROC_EINVAL; /* no object file holds it: a worker could never find it */
    if (rc == 0) {
      o->base = span[0];
      o->lo = span[1];
      o->hi = span[2];
      atomic_store_explicit(&t->n, n + 1, memory_order_release);
    }
  }
  mproc__mutex_unlock(&t->mu);
  return rc;
}

/* ---- the worker's side (one thread) ---- */

static const mproc__fn_table *w_fns;
static intptr_t w_delta[MPROC__FN_OBJS]; /* our base minus the caller's */
static bool w_known[MPROC__FN_OBJS];

void mproc__pool_fn_setup(const mproc__pool_ctx *ctx) { w_fns = ctx->fns; }

void *mproc__pool_fn_local(const void *fn) {
  static const void *last_in;
  static void *last_out;
  if (!w_fns)
    return (void *)fn;
  if (fn == last_in)
    return last_out;
  uintptr_t a = (uintptr_t)fn;
  uint32_t n = atomic_load_explicit(&w_fns->n, memory_order_acquire);
  for (uint32_t i = 0; i < n; i++) {
    const mproc__fn_obj *o = &w_fns->objs[i];
    if (a < o->lo || a >= o->hi)
      continue;
    if (!w_known[i]) {
      void *base;
      if (mproc__fn_resolve(o->path, 0, &base) != 0)
        return NULL;
      w_delta[i] = (intptr_t)((uintptr_t)base - (uintptr_t)o->base);
      w_known[i] = true;
    }
    last_in = fn;
    last_out = (void *)(a + (uintptr_t)w_delta[i]);
    return last_out;
  }
  return NULL;
}
