/*
 * The caller's side of a pool, shared by pool.c (making and ending a pool, submission,
 * AsyncResult, callbacks), pool_collect.c (waiting for results and routing them) and
 * pool_map.c (map: chunks, the stage, windowed feeding).
 * Everything here is the owner process's memory, used under p->mu unless said otherwise.
 */
#ifndef MPROC_POOL_CALLER_H
#define MPROC_POOL_CALLER_H

#include "pool/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum { POOL_RUNNING, POOL_CLOSED, POOL_TERMINATED, POOL_JOINED };
enum { EV_DONE = 1u, EV_PROGRESS = 2u };

/* How a map's n elements are cut: head chunks of cs elements, then the rest in chunks of
 * tail_cs (all of cs when the caller chose the chunksize). */
typedef struct chunk_plan {
  size_t n, cs, head, tail_cs;
} chunk_plan;

/* One map call's input, for putting its chunks. */
typedef struct map_args {
  mproc_map_fn fn;
  const char *in;
  char *out;
  size_t in_size, out_size, n;
  chunk_plan plan;
  const void *args;
  size_t args_len;
  uint32_t flags; /* MPROC__MAP_IN_SHARED / _OUT_SHARED: that side crosses by address */
} map_args;

/* A map chunk that crossed through the stage (pool_stage.c): its block, where the worker
 * writes its output there (NULL: the output is not staged), and its AsyncResult (NULL once
 * abandoned: an orphan, kept until its result says the worker is done with the block). */
typedef struct staged {
  mproc_async *a;
  char *blk;
  size_t blk_len;
  char *blk_out;
} staged;

/* 16 bytes, so that a group of 4 consecutive ids shares one cache line (see home). v is the
 * AsyncResult, or a staged record with the low bit set. */
typedef struct entry {
  uint64_t id; /* 0: free */
  uintptr_t v;
} entry;

static inline staged *entry_staged(const entry *e) {
  return e->v & 1 ? (staged *)(e->v & ~(uintptr_t)1) : NULL;
}

static inline mproc_async *entry_async(const entry *e) {
  staged *st = entry_staged(e);
  return st ? st->a : (mproc_async *)e->v;
}

struct mproc_async {
  mproc_pool *pool; /* meaningful only while not ready */
  _Atomic bool ready;
  int rc;
  char *err;
  void *res; /* the result: small ones in small_res, bigger ones from malloc */
  size_t len;
  bool is_map;
  bool hand_over; /* apply: the caller takes a malloc'd result as it is */
  _Alignas(max_align_t) char small_res[32]; /* handed out in place by imap: aligned */
  /* map_async */
  char *out;
  size_t out_size, nchunks, left, fail_index;
  chunk_plan plan;
  uint64_t first_id;
  /* Chunks are put a window at a time while feed is set (map: the caller waits inside the
   * call anyway), so a big map never holds more than the window in the rings. */
  const map_args *feed;
  size_t sent, window;
  /* pool_imap.c's hook: runs under p->mu in the collecting thread as a becomes ready. */
  void (*on_ready)(mproc_async *a, void *arg);
  void *on_ready_arg;
  /* Callbacks (the _ex calls): queued on p->cb_head as events happen, run by run_callbacks
   * outside p->mu in the caller's thread that is inside an mproc call. */
  mproc_async_opts cb;
  size_t done_items; /* map: elements whose chunk came back */
  unsigned events;   /* EV_* not yet delivered */
  bool queued;
  mproc_async *cb_next;
};

struct mproc_pool {
  mproc__pool_ctx ctx;
  pid_t owner;
  pid_t sup_pid;
  int sup_fd;
  int ncpu; /* CPUs this process may use */
  mproc__stage stage;
  bool sup_reaped;
  bool sup_lost; /* the supervisor died on its own (killed from outside) */
  bool sup_seen_dead; /* the collector saw its pidfd readable */
  pthread_mutex_t join_mu; /* one thread waits for the supervisor's exit */
  pthread_mutex_t mu;      /* everything below */
  pthread_cond_t cv;
  int state;
  bool collecting;
  int feeding; /* map calls with chunks still to put: close waits for them */
  uint64_t next_id;
  entry *tab;
  size_t tab_cap, tab_len;
  /* Callbacks and the descriptor (mproc_pool_fileno / mproc_pool_poll). */
  mproc_async *cb_head, *cb_tail;
  _Atomic size_t cb_queued;
  _Atomic bool fd_wanted;
  mproc_async *poll_wake; /* set after every batch collected, for mproc_pool_poll */
  /* imap iterators that may still submit after close (counted in feeding too); join cuts
   * them off (epoch + 1), so that the task ring closes and the workers can finish. */
  int imap_feeders;
  unsigned feed_epoch;
};

/* ---- pool.c, for pool_map.c ---- */

/* MPROC_EINVAL / MPROC_ESTATE unless p may be driven from this process. */
int mproc__pool_check(const mproc_pool *p);
size_t mproc__tab_find(const mproc_pool *p, uint64_t id);
void mproc__tab_insert(mproc_pool *p, uint64_t id, mproc_async *a);
void mproc__tab_delete(mproc_pool *p, uint64_t id);
/* The same, for the slot i that mproc__tab_find gave (no second look-up). */
void mproc__tab_delete_at(mproc_pool *p, size_t i);
/* Room for more entries: 0 or MPROC_ENOMEM. */
int mproc__tab_reserve(mproc_pool *p, size_t more);
/* Gives a the ids of total tasks and puts the first count (put(p, id, i, arg)); on failure
 * nothing of a stays in the table. */
int mproc__pool_submit(mproc_pool *p, mproc_async *a, size_t total, size_t count,
                       int (*put)(mproc_pool *, uint64_t, size_t, void *), void *arg);
/* a is ready with rc: its hook and callbacks are queued. */
void mproc__pool_finish(mproc_pool *p, mproc_async *a, int rc);
void mproc__pool_cb_queue(mproc_pool *p, mproc_async *a, unsigned ev);
/* Runs the queued callbacks outside p->mu (not under it). Returns how many ran. */
int mproc__pool_run_callbacks(mproc_pool *p);
/* Forgets a's unfinished tasks (their results are dropped). Not under p->mu. */
void mproc__pool_abandon(mproc_pool *p, mproc_async *a);
extern const char mproc__pool_zeros[16];

/* ---- pool_collect.c, for pool.c ---- */

/* Waits (under p->mu, which it lets go while collecting) until a is ready (a NULL: until the
 * result ring is drained and closed) or the deadline, collecting meanwhile. 0,
 * MPROC_ETIMEDOUT or -EINTR (a handler of the caller's ran). */
int mproc__pool_await_locked(mproc_pool *p, mproc_async *a, int64_t deadline);
/* Every unfinished AsyncResult fails: MPROC_ECANCELLED after terminate, MPROC_ECRASHED when
 * the supervisor died under a running pool. Under p->mu. */
void mproc__pool_cancel_all(mproc_pool *p);

/* ---- pool_map.c, for pool.c ---- */

/* Routes a map chunk's result (a NULL: an orphan, whose block only is settled). */
void mproc__map_dispatch(mproc_pool *p, mproc_async *a, staged *st, const mproc__result_hdr *h,
                         const char *text, const char *data);
/* A staged chunk whose result will never come (the pool is going): its block is set aside. */
void mproc__map_staged_drop(mproc_pool *p, staged *st);

#endif /* MPROC_POOL_CALLER_H */
