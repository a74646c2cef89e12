/*
 * The contract between the pool's three kinds of process (the caller's pool.c, pool_map.c,
 * pool_imap.c, the supervisor, the workers): what crosses the rings, the shared control
 * block, and the supervisor's and workers' entry points.
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
 *
 * A child forked from the caller after the pool was made may use it too (a "client",
 * pool_client.c): the result ring has one reader, so a client registers a ring of its own
 * with the supervisor and its task ids carry its ticket in their top bits (the caller's
 * are 0). Workers post a client's results on the relay ring and poke ctl_fd; the supervisor
 * moves each to its client's ring (pool_relay.c).
 */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include "core/internal.h"
#include "core/ring.h"
#include "pool/pool_limits.h"

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- messages on the task ring ---- */

/* RETIRE (id 0, no body): the worker that takes it exits, not to be replaced: how
 * mproc_pool_resize shrinks the pool behind the tasks already queued. */
enum { MPROC__TASK_APPLY = 1, MPROC__TASK_MAP = 2, MPROC__TASK_RETIRE = 3 };

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
  /* A chunk staged in the map stage: where its block ends, and the stage's generation then
   * (the worker maps the stage in with one call, not a fault per page). NULL: not staged. */
  const char *stage_end;
  uint64_t stage_gen;
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

/* ---- clients: ids, and the registration socket ---- */

/* A task id's top 16 bits: the ticket of the client that submitted it (0: the caller). */
#define MPROC__TICKET_SHIFT 48
static inline uint32_t mproc__id_ticket(uint64_t id) {
  return (uint32_t)(id >> MPROC__TICKET_SHIFT);
}

/* One message on the registration socket (SOCK_SEQPACKET: messages stay whole however many
 * clients send at once). ADD brings, in this order, the client's ring, the eventfd to
 * signal after moving its results, the reply socket (the supervisor writes one int32, 0 or
 * -errno, and closes it) and, where the kernel has them, a pidfd of the client (its end
 * ends the registration). DROP: the client freed the pool. */
enum { MPROC__REG_ADD = 1, MPROC__REG_DROP = 2 };
typedef struct mproc__reg_msg {
  uint32_t op;
  uint32_t ticket;
  uint64_t ring_len; /* ADD: the ring's mapping length (mproc__ring_fd) */
} mproc__reg_msg;

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
  MPROC__SLOT_SHRUNK,      /* took a RETIRE: exiting, not replaced */
};

/* Slots the control block has room for: mproc_pool_resize grows up to this. */
#define MPROC__POOL_SLOTS 4096

typedef struct mproc__pool_slot {
  _Atomic uint64_t task_id;    /* the task held now, 0: none */
  _Atomic int64_t start_ns;    /* when it was taken (CLOCK_MONOTONIC) */
  _Atomic uint64_t progress;   /* MAP: elements of the chunk finished */
  _Atomic uint64_t expired_id; /* set by the supervisor before it kills for a timeout */
  _Atomic int32_t pid;         /* written by the supervisor; 0: none */
  _Atomic uint32_t state;
  _Atomic int32_t denied_nr;   /* the system call the sandbox's trap caught; 0: none */
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
  _Atomic uint32_t next_ticket; /* the last client ticket handed out */
  /* The supervisor is about to sleep: the next worker to post on the relay ring pokes
   * ctl_fd (only that one, as with notify_armed). */
  _Atomic uint32_t relay_armed;
  /* Workers wanted (mproc_pool_resize): the supervisor forks more while it has fewer. */
  _Atomic uint32_t target;
  mproc__pool_slot slots[];
} mproc__pool_shared;

/* ---- functions in a pool whose supervisor was not forked ---- */

/* The caller's object files that hold functions sent to the workers, by the caller's
 * addresses: a worker finds a task's function by the object it lies in and that object's
 * base in its own image. Written by the caller only (appended, n published last). */
#define MPROC__FN_OBJS 128
#define MPROC__FN_PATH 1024
typedef struct mproc__fn_obj {
  uint64_t base, lo, hi; /* the caller's load base and segment span */
  char path[MPROC__FN_PATH];
} mproc__fn_obj;
typedef struct mproc__fn_table {
  mproc__mutex mu; /* appenders: the caller and clients, each in its own process */
  _Atomic uint32_t n;
  mproc__fn_obj objs[MPROC__FN_OBJS];
} mproc__fn_table;

/* What the supervisor and the workers need; lives in the caller's mproc_pool and reaches
 * them through fork, or through the boot message (pool_start.c). */
typedef struct mproc__pool_ctx {
  mproc__pool_shared *sh;
  size_t sh_len;
  mproc__ring *tasks;
  mproc__ring *results;
  mproc__ring *relay; /* clients' results, workers -> supervisor */
  int reg_fd;  /* the registration socket's sending end: the caller's, inherited by clients */
  int reg_sup; /* its receiving end: the supervisor's (-1 elsewhere once it started) */
  int ctl_fd; /* eventfd: "look again" for the supervisor (terminate, task start) */
  int notify_fd; /* eventfd: results arrived, for the caller (mproc_pool_fileno, Ctrl-C) */
  /* Workers at the start; raised by mproc_pool_resize (the caller's copy and the
   * supervisor's each), so loops over slots [0, nworkers) see every slot ever used. */
  int nworkers;
  unsigned maxtasks;
  int64_t timeout_ns;
  double timeout_s;
  int (*initializer)(const void *initargs, size_t len);
  void *initargs;
  size_t initargs_len;
  pid_t caller;
  const char *stage_base; /* the map stage's area (NULL: none), at this address everywhere */
  mproc__fn_table *fns; /* NULL when the supervisor was forked: functions are as they are */
  pid_t parent; /* the supervisor's parent: the caller, or the forkserver */
  mproc__limits lim; /* limits and sandbox set in each worker (core/limits.c) */
} mproc__pool_ctx;

/* ---- the supervisor's side of clients (pool_relay.c) ---- */

typedef struct mproc__relay_client mproc__relay_client;
typedef struct mproc__relay {
  mproc__pool_ctx *ctx;
  mproc__relay_client *c;
  size_t n, cap;
  bool reg_eof; /* every sending end is closed: no registration can come */
} mproc__relay;

/* Descriptors to poll: the registration socket, then each client's pidfd. *n of them. */
size_t mproc__relay_nfds(const mproc__relay *r);
void mproc__relay_fds(const mproc__relay *r, struct pollfd *fds);
/* After poll: registrations and ends (fds as filled above, with their revents). */
void mproc__relay_events(mproc__relay *r, const struct pollfd *fds);
/* Moves the results on the relay ring to their clients' rings, then signals those clients;
 * true when it stopped at its batch with more left. */
bool mproc__relay_move(mproc__relay *r);
/* In a worker just forked from the supervisor: lets go of the clients' rings and
 * descriptors (only the supervisor talks to clients). */
void mproc__relay_forget(mproc__relay *r);

/* ---- the supervisor's and the workers' lives ---- */

/* The supervisor's whole life (pool_supervisor.c). Never returns. */
_Noreturn void mproc__pool_supervise(mproc__pool_ctx *ctx);
/* One worker's whole life (pool_worker.c), in slot; orig_mask is the caller's signal mask.
 * Never returns. */
_Noreturn void mproc__pool_worker(mproc__pool_ctx *ctx, int slot, const sigset_t *orig_mask);

/* Posts a failure result and tells the caller (pool_worker.c; used by the supervisor for
 * dead workers). */
int mproc__pool_post_failure(mproc__pool_ctx *ctx, uint64_t id, int status, uint64_t fail_index,
                             const char *msg);

/* After posting a result: wakes the caller through notify_fd when it asked (armed). */
void mproc__pool_notify(mproc__pool_ctx *ctx);

/* Caller side (pool_fn.c): makes fn findable by the workers (MPROC_EINVAL when it lies in
 * no loaded object file, MPROC_ETOOBIG past MPROC__FN_OBJS objects). 0 at once for a
 * forked supervisor. */
int mproc__pool_fn_check(mproc__pool_ctx *ctx, const void *fn);
/* Worker side: uses ctx's table from now on (a worker calls it once). */
void mproc__pool_fn_setup(const mproc__pool_ctx *ctx);
/* Worker side: the worker's address of the caller's function fn (fn itself under fork), or
 * NULL when its object cannot be found or opened here. */
void *mproc__pool_fn_local(const void *fn);

/* Starts the supervisor with method (spawn or forkserver; pool_start.c): 0 with its pid
 * and a pidfd (-1 if none), or -errno. ctx->fns must be set. */
int mproc__pool_start_unforked(mproc__pool_ctx *ctx, mproc_start_method method, pid_t *pid,
                               int *pidfd);

#endif /* MPROC_POOL_H */
