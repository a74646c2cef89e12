/*
 * Waiting for results (pool_collect.c): the collector takes them off the result ring and
 * routes each to its AsyncResult. For pool.c, pool_map.c and pool_imap.c (mproc__pool_await
 * through pool_feed.h).
 */
#ifndef MPROC_POOL_COLLECT_H
#define MPROC_POOL_COLLECT_H

#include "pool/pool_async.h"

/* Waits (under p->mu, which it lets go while collecting) until a is ready (a NULL: until the
 * result ring is drained and closed) or the deadline, collecting meanwhile. 0,
 * MPROC_ETIMEDOUT or -EINTR (a handler of the caller's ran). */
int mproc__pool_await_locked(mproc_pool *p, mproc_async *a, int64_t deadline);
/* The same, not under p->mu, then what every wait ends with (mproc__pool_after_wait). A ready
 * a is not looked into further (its pool may be gone). */
int mproc__pool_await(mproc_async *a, int64_t deadline);
/* After every wait: the callbacks due, and the descriptor kept truthful (readable while
 * results or callbacks wait) for a caller that watches it. Not under p->mu. */
void mproc__pool_after_wait(mproc_pool *p);
/* Every unfinished AsyncResult fails: MPROC_ECANCELLED after terminate, MPROC_ECRASHED when
 * the supervisor died under a running pool. Under p->mu. */
void mproc__pool_cancel_all(mproc_pool *p);

#endif /* MPROC_POOL_COLLECT_H */
