/*
 * A pool whose tasks are run by something other than local workers: an "engine" driven
 * inside the caller's own mproc calls (no thread of ours). The MPI layer (src/mpi/) is the
 * one engine: it takes tasks off the task ring as a worker would and posts their results
 * on the result ring, so everything above (AsyncResult, map chunks, imap, callbacks) is
 * that of any pool. An engine pool has no supervisor and no local worker.
 *
 * Where the pool calls it: the collector's wait (instead of sleeping on notify_fd), the
 * submit path when the task ring is full (nothing else would drain it), join (until the
 * engine holds nothing), terminate and free.
 */
#ifndef MPROC_POOL_ENGINE_H
#define MPROC_POOL_ENGINE_H

#include "pool/pool.h"

typedef struct mproc__engine {
  /* Moves what it can (tasks out, results in), waiting up to deadline for something to
   * move: 0 when something did, -ETIMEDOUT, -EINTR (a signal handler ran), or an error. */
  int (*pump)(struct mproc__engine *e, int64_t deadline);
  /* The task ring is closed and drained and no task is out: join may end. */
  bool (*idle)(struct mproc__engine *e);
  /* Stops every task out now (their results will not come). */
  void (*terminate)(struct mproc__engine *e);
  /* The pool is being freed: the engine's last call. */
  void (*release)(struct mproc__engine *e);
  mproc__pool_ctx *pool; /* set by mproc__pool_new_engine */
} mproc__engine;

/* A pool run by e (which must outlive it), reporting nworkers workers (map's chunking and
 * imap's buffer count on them). opts as for mproc_pool_new (processes ignored). */
int mproc__pool_new_engine(mproc_pool **out, const mproc_pool_opts *opts, int nworkers,
                           mproc__engine *e);

/* Takes the oldest task off the ring, if any, and gives it to fn inside the read (body:
 * the bytes after the header, valid only during the call). 1: taken, 0: none now,
 * MPROC_ECLOSED: closed and drained. */
int mproc__engine_take(mproc__pool_ctx *ctx,
                       void (*fn)(void *arg, const mproc__task_hdr *h, const char *body,
                                  size_t len),
                       void *arg);
/* Posts one result (msg: h->msg_len bytes, data: h->data_len) for the collector: 0, or
 * -ETIMEDOUT when the ring is full now (post it again later). */
int mproc__engine_post(mproc__pool_ctx *ctx, const mproc__result_hdr *h, const char *msg,
                       const void *data);

/* An imap chunk's task carries the user's function inside its argument (pool_imap.c): true
 * when task is that chunk runner, with *off the function pointer's offset in the argument
 * (an engine sending tasks to another image must name that one too). */
bool mproc__engine_inner_fn(mproc_task_fn task, size_t *off);

#endif /* MPROC_POOL_ENGINE_H */
