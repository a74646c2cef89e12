/*
 * The caller's side of a pool: its structures, and the machinery every feature builds on
 * (pool_async.c): the id table that routes each result to its AsyncResult, submission onto
 * the task ring, completion, the callback queue, and the feeders that keep the task ring
 * open. Collecting is pool_collect.c's (pool_collect.h); the features on top are pool.c
 * (the pool's life, apply, AsyncResult), pool_map.c and, through pool_feed.h, pool_imap.c.
 * Everything here is the owner process's memory, used under p->mu unless said otherwise.
 */
#ifndef MPROC_POOL_ASYNC_H
#define MPROC_POOL_ASYNC_H

#include "pool/pool.h"
#include "pool/pool_engine.h"
#include "pool/pool_feed.h"
#include "pool/pool_stage.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum { POOL_RUNNING, POOL_CLOSED, POOL_TERMINATED, POOL_JOINED };
enum { EV_DONE = 1u, EV_PROGRESS = 2u };

typedef struct mproc__route mproc__route;

/* A task whose input crossed through the map stage: a table entry points to this record
 * (low bit set) instead of the AsyncResult, so that the block is settled when the result
 * comes even after the AsyncResult is gone (a NULL: an orphan). The feature that staged it
 * extends the record with the block (pool_map.c's map_staged). */
typedef struct staged {
  mproc_async *a;
  const mproc__route *route;
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

/* How the results of a feature's tasks reach it, when they are not one apply result each
 * (pool_map.c's chunks). Each runs under p->mu, in the collecting thread. */
struct mproc__route {
  /* One result, h with its message text and data; a NULL: st's AsyncResult was abandoned. */
  void (*result)(mproc_pool *p, mproc_async *a, staged *st, const mproc__result_hdr *h,
                 const char *text, const char *data);
  /* The pool is going and a's remaining results will never come: rc and msg say why. a is
   * finished right after. */
  void (*cancel)(mproc_pool *p, mproc_async *a, int rc, const char *msg);
  /* The pool is going: st's result will never come, but its worker may be alive yet. */
  void (*drop)(mproc_pool *p, staged *st);
};

/* apply's result: small ones in place (imap hands them out there: aligned), bigger ones
 * from malloc; hand_over: the caller takes a malloc'd one as it is (mproc_pool_apply). */
typedef struct async_result {
  void *res;
  size_t len;
  bool hand_over;
  _Alignas(max_align_t) char small_res[32];
} async_result;

/* pool_imap.c's hook: runs under p->mu in the collecting thread as a becomes ready. */
typedef struct async_hook {
  void (*on_ready)(mproc_async *a, void *arg);
  void *arg;
} async_hook;

/* Callbacks (the _ex calls): queued on p->cb_head as events happen, run by
 * mproc__pool_run_callbacks outside p->mu in the caller's thread that is inside an mproc
 * call. done/total: the elements the progress callback reports (map). */
typedef struct async_cb {
  mproc_async_opts opts;
  size_t done, total;
  unsigned events; /* EV_* not yet delivered */
  bool queued;
  mproc_async *next;
} async_cb;

/* An AsyncResult: what every one has, then each feature's own part. A map's is the first
 * member of pool_map.c's map_async, which carries the rest of a map's state. */
struct mproc_async {
  mproc_pool *pool; /* meaningful only while not ready */
  uint32_t view; /* the process whose view of the pool submitted it (its results go there) */
  _Atomic bool ready;
  int rc;
  char *err;
  uint64_t first_id; /* its tasks' ids: [first_id, first_id + ntasks) */
  size_t ntasks;
  bool is_map; /* a map's: no result bytes (they went to the caller's out) */
  const mproc__route *route; /* NULL: one apply result */
  async_result r;
  async_hook hook;
  async_cb cb;
};

struct mproc_pool {
  mproc__pool_ctx ctx;
  pid_t owner;
  /* Whose view of the pool this memory holds: the owner's, or (pool_client.c) a forked
   * child's once it first used the pool, with its own result ring, eventfd and ticket. */
  _Atomic uint32_t view;  /* pid */
  _Atomic uint32_t claim; /* pid of the process making its view now */
  int view_rc;            /* a client's registration failed with it */
  uint32_t ticket;        /* 0: the owner */
  _Atomic uint32_t own_armed; /* a client's stand-in for sh->notify_armed (it is always signalled) */
  pid_t sup_pid;
  int sup_fd;
  int ncpu; /* CPUs this process may use */
  mproc__stage stage;
  bool sup_reaped;
  bool sup_served; /* the forkserver's child, not ours: watched through sup_fd only */
  mproc_start_method method;
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
  mproc__engine *engine; /* NULL but for a pool run by an engine (pool_engine.h) */
};

/* ---- who drives the pool (pool_client.c) ---- */

/* 0 when p may be driven from this process: the owner, or a forked child whose view is
 * made here at its first call (that registration's error otherwise). MPROC_EINVAL: NULL. */
int mproc__pool_check(mproc_pool *p);
/* 0 for the owner; MPROC_ESTATE elsewhere (close, join, terminate are the owner's). */
int mproc__pool_owner_check(const mproc_pool *p);
/* pool.c's lock and condition variable, (re)made. 0 or -errno. */
int mproc__pool_init_sync(mproc_pool *p);
/* A client frees the pool: the supervisor lets go of its ring now. */
void mproc__pool_client_leave(mproc_pool *p);

/* The word the collector sets before it sleeps on notify_fd. */
static inline _Atomic uint32_t *mproc__pool_armed(mproc_pool *p) {
  return p->ticket ? &p->own_armed : &p->ctx.sh->notify_armed;
}

/* ---- the id table ---- */

/* The slot of id, or SIZE_MAX. */
size_t mproc__tab_find(const mproc_pool *p, uint64_t id);
void mproc__tab_insert(mproc_pool *p, uint64_t id, mproc_async *a);
void mproc__tab_delete(mproc_pool *p, uint64_t id);
/* The same, for the slot i that mproc__tab_find gave (no second look-up). */
void mproc__tab_delete_at(mproc_pool *p, size_t i);
/* Room for more entries: 0 or MPROC_ENOMEM. */
int mproc__tab_reserve(mproc_pool *p, size_t more);

/* ---- submission ---- */

/* Puts one task message (under p->mu): blocks while the task ring is full; an engine pool
 * runs its engine meanwhile, since nothing else would drain the ring. */
int mproc__pool_put_task(mproc_pool *p, const struct iovec *iov, int n);

/* Gives a the ids of total tasks and puts the first count (put(p, id, i, arg)); on failure
 * nothing of a stays in the table. epoch NULL: only while the pool runs; else for an imap
 * feeder of that epoch, after close too, until join cuts it off. */
int mproc__pool_submit(mproc_pool *p, mproc_async *a, size_t total, size_t count,
                       int (*put)(mproc_pool *, uint64_t, size_t, void *), void *arg,
                       const unsigned *epoch);
/* One apply task for a (epoch as above). Not under p->mu. */
int mproc__pool_submit_apply(mproc_pool *p, mproc_async *a, mproc_task_fn fn, const void *arg,
                             size_t len, const unsigned *epoch);
/* A new AsyncResult (with callbacks cb and hook, each optional) for one apply task, in *r;
 * nothing is left on failure. Not under p->mu. */
int mproc__pool_apply_new(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                          const async_cb *cb, const async_hook *hook, const unsigned *epoch,
                          mproc_async **r);
/* Forgets a's unfinished tasks (their results are dropped) and its queued callbacks. Not
 * under p->mu. */
void mproc__pool_abandon(mproc_pool *p, mproc_async *a);
/* A feeder (a windowed map) has put its last task: close waits for no more. */
void mproc__pool_feed_done(mproc_pool *p);
/* join: imap feeders may submit no more. Not under p->mu. */
void mproc__pool_cut_feeders(mproc_pool *p);
/* A base for empty iovecs (never NULL) and for padding. */
extern const char mproc__pool_zeros[16];

/* ---- completion ---- */

/* a is ready with rc: its hook runs and its callbacks are queued. */
void mproc__pool_finish(mproc_pool *p, mproc_async *a, int rc);
void mproc__pool_cb_queue(mproc_pool *p, mproc_async *a, unsigned ev);
/* Runs the queued callbacks, in order, outside p->mu (not under it). Returns how many ran;
 * none inside a callback (the outer call runs them when it is done). */
int mproc__pool_run_callbacks(mproc_pool *p);
/* Whether this thread is running callbacks now. */
bool mproc__pool_in_callbacks(void);

#endif /* MPROC_POOL_ASYNC_H */
