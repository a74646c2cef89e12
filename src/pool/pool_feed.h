/*
 * The caller's pool machinery (pool_async.c, pool_collect.c) as pool_imap.c's iterators
 * use it, without its structures: an iterator sees a pool and its AsyncResults as handles
 * only. pool_async.h, for the files that see the structures, includes this.
 */
#ifndef MPROC_POOL_FEED_H
#define MPROC_POOL_FEED_H

#include "mproc.h"

#include <stdbool.h>
#include <stdint.h>

/* An iterator that will submit its input over time: like a windowed map, it keeps the task
 * ring open after close (Python's imap goes on after close too) until feed_end, or until
 * join cuts it off. MPROC_ECLOSED if the pool is not running. */
int mproc__pool_feed_begin(mproc_pool *p, unsigned *epoch);
void mproc__pool_feed_end(mproc_pool *p, unsigned epoch);
/* apply_async (for a feeder of that epoch) whose on_ready(a, arg) runs under the pool's
 * mutex, in whichever caller thread is collecting, as a becomes ready (cancelled too). */
int mproc__pool_apply_hooked(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                             void (*on_ready)(mproc_async *, void *), void *hook_arg,
                             unsigned epoch, mproc_async **r);
/* An AsyncResult never submitted: waiting on it collects results until someone marks it
 * ready (mproc__pool_sentinel_set, under the pool's mutex) or the deadline passes. */
mproc_async *mproc__pool_sentinel_new(mproc_pool *p);
void mproc__pool_sentinel_free(mproc_async *a);
void mproc__pool_sentinel_set(mproc_async *a, bool ready);
/* Collects until a is ready: 0, MPROC_ETIMEDOUT, or an error (the pool lost, -EINTR). */
int mproc__pool_await(mproc_async *a, int64_t deadline);
void mproc__pool_lock(mproc_pool *p);
void mproc__pool_unlock(mproc_pool *p);
int mproc__pool_nworkers(const mproc_pool *p);
/* 0, or MPROC_EINVAL when fn lies in no object file the workers could open (pool.h's
 * mproc__pool_fn_check). */
int mproc__pool_check_fn(mproc_pool *p, const void *fn);
/* 0 in the pool's owner; MPROC_ESTATE in a forked child (its results are not its own). */
int mproc__pool_owned(mproc_pool *p);
/* A ready result's code, data and message, not copied (owned by a). */
int mproc__async_view(const mproc_async *a, const void **res, size_t *len, const char **err);
/* msg[0..len) as a malloc'd string; NULL without memory. */
char *mproc__pool_copy_msg(const char *msg, size_t len);

#endif /* MPROC_POOL_FEED_H */
