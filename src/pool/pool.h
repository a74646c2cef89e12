/*
 * Private to the pool layer (pool.c, pool_supervisor.c, pool_worker.c).
 *
 * Processes: the caller (who made the pool) forks one supervisor; the supervisor forks the
 * workers. All three share one control block (mproc__pool_shared, anonymous shared memory
 * made before the first fork) and two rings: tasks (caller -> workers) and results
 * (workers and supervisor -> caller).
 *
 * A worker takes a task off the ring and records its id in its own slot inside the same
 * read (between mproc__ring_read_begin and _read_end), so at any instant a dead worker's slot
 * names exactly the task it held. The supervisor, on that worker's death, posts a failure
 * result for that id. A task whose reader died inside the read may be delivered again; the
 * caller keeps the first result for an id and ignores the rest.
 */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include "core/internal.h"
#include "core/ring.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- messages on the task ring ---- */

enum { MPROC__TASK_APPLY = 1, MPROC__TASK_MAP = 2 };

/* MAP flags: the chunk's input / output lies in shared memory that the workers map at the
 * same address (checked by the caller against the supervisor's mappings): no copy. */
enum { MPROC__MAP_IN_SHARED = 1u, MPROC__MAP_OUT_SHARED = 2u };

typedef struct mproc__task_hdr {
  uint64_t id; /* never 0 for real tasks */
  uint32_t kind;
  uint32_t flags; /* MAP: MPROC__MAP_* */
  mproc_task_fn task; /* APPLY */
  mproc_map_fn map;   /* MAP */
  uint64_t in_size, out_size, count, args_len; /* MAP */
  uint64_t start; /* MAP: index of the chunk's first element in the whole call */
  const char *in_ptr; /* MAP_IN_SHARED: the chunk's input */
  char *out_ptr;      /* MAP_OUT_SHARED: where the chunk's output goes */
  /* APPLY: the argument bytes follow. MAP: count * in_size input bytes (none when
   * MAP_IN_SHARED), padding to 16, then args_len bytes of args. */
} mproc__task_hdr;

/* ---- messages on the result ring ---- */

typedef struct mproc__result_hdr {
  uint64_t id;
  int32_t status;      /* 0, MPROC_ETASK, MPROC_ECRASHED, MPROC_EEXPIRED */
  uint32_t msg_len;    /* message bytes that follow the header (no NUL) */
  uint64_t fail_index; /* MAP: first failed element within the chunk; UINT64_MAX: none */
  uint64_t data_len;   /* result bytes after the message */
} mproc__result_hdr;

/* A failure message is cut here (the API promises at least 4 KiB). */
#define MPROC__POOL_MSG_MAX 65536

/* ---- the shared control block ---- */

enum {
  MPROC__SLOT_EMPTY = 0,   /* no process */
  MPROC__SLOT_STARTING,    /* forked, initializer running */
  MPROC__SLOT_READY,       /* taking tasks */
  MPROC__SLOT_INIT_FAILED, /* initializer returned nonzero; exiting */
  MPROC__SLOT_RETIRING,    /* reached maxtasksperchild; exiting, to be replaced */
  MPROC__SLOT_STOPPED,     /* found the task ring closed and drained; exiting, not replaced */
};

typedef struct mproc__pool_slot {
  _Atomic uint64_t task_id;    /* the task held now, 0: none */
  _Atomic int64_t start_ns;    /* when it was taken (CLOCK_MONOTONIC) */
  _Atomic uint64_t progress;   /* MAP: elements of the chunk finished */
  _Atomic uint64_t expired_id; /* set by the supervisor before it kills for a timeout */
  _Atomic int32_t pid;         /* written by the supervisor; 0: none */
  _Atomic uint32_t state;
} MPROC__ALIGNED mproc__pool_slot;

enum { MPROC__BOOT_WAIT = 0, MPROC__BOOT_OK = 1, MPROC__BOOT_FAILED = 2 };
enum { MPROC__FLAG_TERMINATE = 1u };

typedef struct mproc__pool_shared {
  _Atomic uint32_t boot;  /* futex: MPROC__BOOT_* */
  _Atomic uint32_t ready; /* first workers whose initializer succeeded */
  _Atomic uint32_t flags; /* MPROC__FLAG_* */
  _Atomic uint32_t notify_armed; /* the caller sleeps on (or watches) notify_fd */
  /* The supervisor's next wake-up for a task_timeout: a worker starting a task pokes it
   * only when that task's deadline comes sooner (with many tasks, rarely). */
  _Atomic int64_t sup_deadline;
  _Atomic int32_t boot_rc; /* BOOT_FAILED: mproc_pool_new's error (set before boot) */
  mproc__pool_slot slots[];
} mproc__pool_shared;

/* What the supervisor and the workers need; lives in the caller's mproc_pool and reaches
 * them through fork. */
typedef struct mproc__pool_ctx {
  mproc__pool_shared *sh;
  size_t sh_len;
  mproc__ring *tasks;
  mproc__ring *results;
  int ctl_fd; /* eventfd: "look again" for the supervisor (terminate, task start) */
  int notify_fd; /* eventfd: results arrived, for the caller (mproc_pool_fileno, Ctrl-C) */
  int nworkers;
  unsigned maxtasks;
  int64_t timeout_ns;
  double timeout_s;
  int (*initializer)(const void *initargs, size_t len);
  void *initargs;
  size_t initargs_len;
  pid_t caller;
} mproc__pool_ctx;

/* The supervisor's whole life (pool_supervisor.c). Never returns. */
/* ---- the map stage (pool_stage.c): the caller's, used under p->mu ---- */

typedef struct mproc__stage_ext mproc__stage_ext;
typedef struct mproc__stage {
  char *base;             /* NULL: no stage (chunks go through the rings) */
  size_t reserved;        /* address space, shared with the supervisor and workers */
  size_t committed;       /* [base, base + committed) has its pages */
  size_t live;            /* blocks handed out and not freed or retired */
  size_t retired;         /* bytes a worker may still touch, free again at the next reset */
  mproc__stage_ext *free; /* the free extents, by offset, coalesced */
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
/* For tests: blocks live, bytes retired, bytes committed now. */
void mproc__pool_stage_usage(mproc_pool *p, size_t *live, size_t *retired, size_t *committed);

_Noreturn void mproc__pool_supervise(mproc__pool_ctx *ctx);
/* One worker's whole life (pool_worker.c), in slot; orig_mask is the caller's signal mask.
 * Never returns. */
_Noreturn void mproc__pool_worker(mproc__pool_ctx *ctx, int slot, const sigset_t *orig_mask);

/* Posts a failure result and tells the caller (pool_worker.c; used by the supervisor for
 * dead workers). */
int mproc__pool_post_failure(mproc__pool_ctx *ctx, uint64_t id, int status, uint64_t fail_index,
                             const char *msg);

/* For tests: the supervisor's pid, and the live workers' pids (returns how many). */
pid_t mproc__pool_supervisor_pid(mproc_pool *p);
int mproc__pool_worker_pids(mproc_pool *p, pid_t *pids, size_t max);

/* After posting a result: wakes the caller through notify_fd when it asked (armed). */
void mproc__pool_notify(mproc__pool_ctx *ctx);

/* ---- for pool_imap.c (iterators over results) ---- */

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
/* 0 in the pool's owner; MPROC_ESTATE in a forked child (its results are not its own). */
int mproc__pool_owned(mproc_pool *p);
/* A ready result's code, data and message, not copied (owned by a). */
int mproc__async_view(const mproc_async *a, const void **res, size_t *len, const char **err);

/* A result of one's own, for running task functions inside a task (imap chunks). */
/* msg[0..len) as a malloc'd string; NULL without memory. */
char *mproc__pool_copy_msg(const char *msg, size_t len);
mproc_result *mproc__result_new(void);
/* Empties it for the next call. */
void mproc__result_reset(mproc_result *r);
void mproc__result_view(const mproc_result *r, const void **data, size_t *len,
                        const char **msg, size_t *msg_len);

#endif /* MPROC_POOL_H */
