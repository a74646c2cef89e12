/*
 * Pool and AsyncResult, the caller's side: submission onto the task ring, collection from
 * the result ring, and the process-local table that routes each result to its AsyncResult.
 *
 * No thread is started here. Results are collected inside mproc calls (get, wait, map,
 * join): one caller thread at a time is the collector (p->collecting); the others wait on
 * p->cv and are woken after each batch the collector dispatches, and when it leaves.
 * Lock order: the result ring's read side, then p->mu.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCESSES 4096
#define COLLECT_BATCH 256
#define RING_INITIAL_BYTES ((size_t)64 << 10)
#define MAP_WINDOW_BYTES ((size_t)8 << 20)
#define CHUNK_BYTES_MAX ((size_t)1 << 20)
#define SUPERVISOR_CHECK_NS (200 * 1000000)
#define ZERO_COPY_MIN_BYTES ((size_t)256 << 10)
/* Chunks smaller than this go through the rings: the stage saves the worker two copies, and
 * small ones cost it little. */
#define STAGE_MIN_BYTES ((size_t)64 << 10)

enum { POOL_RUNNING, POOL_CLOSED, POOL_TERMINATED, POOL_JOINED };

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

static staged *entry_staged(const entry *e) {
  return e->v & 1 ? (staged *)(e->v & ~(uintptr_t)1) : NULL;
}

static mproc_async *entry_async(const entry *e) {
  staged *st = entry_staged(e);
  return st ? st->a : (mproc_async *)e->v;
}

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

/* The chunksize chosen: Python's ceil(n / (4 * workers)), with chunks kept under
 * CHUNK_BYTES_MAX so that the copies in and out of the rings stay in cache (bench:
 * pool_map_256x1MiB). And the last workers * cs elements go in chunks a quarter that size:
 * the workers then finish within a quarter chunk of each other instead of a whole one,
 * which is most of what the pool lost to OpenMP's static split on CPU-bound work (bench:
 * pool_cpu_speedup_2), and the caller's last copy out is shorter. */
static chunk_plan plan_chunks(size_t n, size_t chosen, size_t in_size, size_t out_size,
                              int workers) {
  chunk_plan pl = {.n = n, .cs = chosen, .tail_cs = chosen};
  if (!chosen) {
    size_t w4 = 4 * (size_t)workers;
    size_t cs = n / w4 + (n % w4 != 0);
    size_t elem = in_size > out_size ? in_size : out_size;
    size_t cap = CHUNK_BYTES_MAX / elem;
    pl.cs = cs > cap ? cap : cs ? cs : 1;
    pl.tail_cs = pl.cs / 4 ? pl.cs / 4 : 1;
  }
  size_t tail = (size_t)workers * pl.cs;
  pl.head = n > tail ? (n - tail) / pl.cs : 0;
  return pl;
}

static size_t plan_count(const chunk_plan *pl) {
  size_t rest = pl->n - pl->head * pl->cs;
  return pl->head + rest / pl->tail_cs + (rest % pl->tail_cs != 0);
}

static void chunk_span(const chunk_plan *pl, size_t c, size_t *start, size_t *count) {
  size_t s = c < pl->head ? c * pl->cs : pl->head * pl->cs + (c - pl->head) * pl->tail_cs;
  size_t want = c < pl->head ? pl->cs : pl->tail_cs;
  *start = s;
  *count = pl->n - s < want ? pl->n - s : want;
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
  size_t out_size, n, nchunks, left, fail_index;
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

enum { EV_DONE = 1u, EV_PROGRESS = 2u };

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

static const char cancelled_msg[] = "the pool was terminated before the task finished";
static const char lost_msg[] = "the pool's supervisor process died before the task finished";

/* getpid() is a system call; submission asks on every task. A fork resets the cache. */
static _Atomic pid_t cached_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void pid_forget(void) { atomic_store(&cached_pid, 0); }
static void pid_hook(void) { pthread_atfork(NULL, NULL, pid_forget); }

static pid_t self_pid(void) {
  pid_t pid = atomic_load_explicit(&cached_pid, memory_order_relaxed);
  if (MPROC__UNLIKELY(pid == 0)) {
    pthread_once(&pid_once, pid_hook);
    pid = getpid();
    atomic_store(&cached_pid, pid);
  }
  return pid;
}

/* A pool is driven from the process that made it: its results are routed in that
 * process's memory (a forked child gets MPROC_ESTATE). */
static int check_pool(const mproc_pool *p) {
  if (!p)
    return MPROC_EINVAL;
  return p->owner == self_pid() ? 0 : MPROC_ESTATE;
}

/* ---- the id -> AsyncResult table (open addressing, under p->mu) ---- */

/* Ids are handed out in sequence: four consecutive ids share a home group (one cache line),
 * and groups are spread by a multiplicative hash so that probe runs stay short. */
static size_t home(const mproc_pool *p, uint64_t id) {
  uint64_t group = ((id >> 2) * 0x9E3779B97F4A7C15ull) >> 17;
  return (size_t)((group << 2) | (id & 3)) & (p->tab_cap - 1);
}

static size_t tab_find(const mproc_pool *p, uint64_t id) {
  if (!p->tab_cap)
    return SIZE_MAX;
  for (size_t i = home(p, id);; i = (i + 1) & (p->tab_cap - 1)) {
    if (p->tab[i].id == id)
      return i;
    if (p->tab[i].id == 0)
      return SIZE_MAX;
  }
}

static void tab_put(mproc_pool *p, entry e) {
  size_t i = home(p, e.id);
  while (p->tab[i].id)
    i = (i + 1) & (p->tab_cap - 1);
  p->tab[i] = e;
  p->tab_len++;
}

static void tab_insert(mproc_pool *p, uint64_t id, mproc_async *a) {
  tab_put(p, (entry){.id = id, .v = (uintptr_t)a});
}

static int tab_reserve(mproc_pool *p, size_t more) {
  if ((p->tab_len + more) * 2 <= p->tab_cap)
    return 0;
  size_t cap = p->tab_cap ? p->tab_cap : 64;
  while ((p->tab_len + more) * 2 > cap) {
    if (cap > SIZE_MAX / (2 * sizeof(entry)))
      return MPROC_ENOMEM;
    cap *= 2;
  }
  entry *old = p->tab;
  size_t old_cap = p->tab_cap;
  entry *t = calloc(cap, sizeof *t);
  if (!t)
    return MPROC_ENOMEM;
  p->tab = t;
  p->tab_cap = cap;
  p->tab_len = 0;
  for (size_t i = 0; i < old_cap; i++)
    if (old[i].id)
      tab_put(p, old[i]);
  free(old);
  return 0;
}

/* Removes id, shifting later entries of its probe run back (no tombstones). */
static void tab_delete(mproc_pool *p, uint64_t id) {
  size_t i = tab_find(p, id), mask = p->tab_cap - 1;
  if (i == SIZE_MAX)
    return;
  for (size_t j = (i + 1) & mask; p->tab[j].id; j = (j + 1) & mask) {
    size_t k = home(p, p->tab[j].id);
    /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
    bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      p->tab[i] = p->tab[j];
      i = j;
    }
  }
  p->tab[i].id = 0;
  p->tab_len--;
}

/* Whether no worker holds a task or can still take one: then no worker touches the stage. */
static bool workers_idle(mproc_pool *p) {
  if (mproc__ring_count(p->ctx.tasks) != 0)
    return false;
  /* After the count: a worker sets its task_id before it consumes the task. */
  for (int i = 0; i < p->ctx.nworkers; i++)
    if (atomic_load(&p->ctx.sh->slots[i].task_id) != 0)
      return false;
  return true;
}

/* A staged chunk is settled: its block is free again when the worker that ran it posted
 * the result (it is done with it), and set aside otherwise. st is freed. */
static void stage_release(mproc_pool *p, staged *st, bool worker_done) {
  if (!st)
    return;
  if (worker_done)
    mproc__stage_free(&p->stage, st->blk, st->blk_len);
  else
    mproc__stage_retire(&p->stage, st->blk_len);
  free(st);
  if (p->stage.retired && !p->stage.live && workers_idle(p))
    mproc__stage_reset(&p->stage);
}

/* Forgets a task whose result nobody will wait for; a worker may still run it. A staged
 * chunk stays in the table without its AsyncResult (an orphan), so that its result, which
 * says the worker is done with the block, frees the block. */
static void tab_drop(mproc_pool *p, uint64_t id) {
  size_t i = tab_find(p, id);
  if (i == SIZE_MAX)
    return;
  staged *st = entry_staged(&p->tab[i]);
  if (st)
    st->a = NULL;
  else
    tab_delete(p, id);
}

/* ---- completion (under p->mu) ---- */

static void cb_queue(mproc_pool *p, mproc_async *a, unsigned ev) {
  a->events |= ev;
  if (a->queued)
    return;
  a->queued = true;
  a->cb_next = NULL;
  if (p->cb_tail)
    p->cb_tail->cb_next = a;
  else
    p->cb_head = a;
  p->cb_tail = a;
  atomic_fetch_add(&p->cb_queued, 1);
}

static void cb_unqueue(mproc_pool *p, mproc_async *a) {
  if (!a->queued)
    return;
  mproc_async **pp = &p->cb_head, *prev = NULL;
  while (*pp && *pp != a) {
    prev = *pp;
    pp = &(*pp)->cb_next;
  }
  if (*pp) {
    *pp = a->cb_next;
    if (p->cb_tail == a)
      p->cb_tail = prev;
    atomic_fetch_sub(&p->cb_queued, 1);
  }
  a->queued = false;
  a->events = 0;
}

static void finish(mproc_pool *p, mproc_async *a, int rc) {
  a->rc = rc;
  atomic_store_explicit(&a->ready, true, memory_order_release);
  if (a->on_ready)
    a->on_ready(a, a->on_ready_arg);
  if (a->cb.callback || a->cb.error_callback)
    cb_queue(p, a, EV_DONE);
}

static char *copy_msg(const char *msg, size_t len) {
  char *m = malloc(len + 1);
  if (m) {
    memcpy(m, msg, len);
    m[len] = 0;
  }
  return m;
}

/* data: the chunk's output (data_len bytes), from the result message or the stage. */
static void dispatch_map(mproc_async *a, const mproc__result_hdr *h, const char *msg,
                         const char *data, uint64_t data_len) {
  size_t start, count;
  chunk_span(&a->plan, (size_t)(h->id - a->first_id), &start, &count);
  if (data_len == (uint64_t)count * a->out_size && data_len)
    memcpy(a->out + start * a->out_size, data, data_len);
  a->done_items += count;
  if (h->status != 0) {
    size_t idx = start + (h->fail_index < count ? (size_t)h->fail_index : 0);
    if (idx < a->fail_index) {
      a->fail_index = idx;
      a->rc = h->status;
      free(a->err);
      a->err = copy_msg(msg, h->msg_len);
    }
  }
}

static void feed_locked(mproc_pool *p, mproc_async *a);

/* Routes one result message to its AsyncResult; unknown ids (freed, or a second delivery of
 * a task whose first reader died) are dropped. */
static void dispatch(mproc_pool *p, const void *msg, size_t len) {
  mproc__result_hdr h;
  if (len < sizeof h)
    return;
  memcpy(&h, msg, sizeof h);
  if (sizeof h + (uint64_t)h.msg_len + h.data_len > len)
    return;
  size_t i = tab_find(p, h.id);
  if (i == SIZE_MAX)
    return;
  staged *st = entry_staged(&p->tab[i]);
  mproc_async *a = entry_async(&p->tab[i]);
  tab_delete(p, h.id);
  const char *text = (const char *)msg + sizeof h;
  const char *data = text + h.msg_len;
  /* 0 and MPROC_ETASK come from the worker once it has run the whole chunk; the others
   * from the supervisor, for a worker that died (whose task may be taken again). */
  bool worker_done = h.status == 0 || h.status == MPROC_ETASK;
  if (!a) {
    stage_release(p, st, worker_done); /* an orphan */
    return;
  }
  if (a->is_map) {
    uint64_t data_len = h.data_len;
    if (st && st->blk_out) {
      data = st->blk_out;
      data_len = worker_done ? st->blk_len - (size_t)(st->blk_out - st->blk) : 0;
    }
    dispatch_map(a, &h, text, data, data_len);
    stage_release(p, st, worker_done);
    a->left--;
    if (a->cb.progress)
      cb_queue(p, a, EV_PROGRESS);
    if (a->feed)
      feed_locked(p, a);
    if (a->left == 0 && !atomic_load(&a->ready))
      finish(p, a, a->rc);
    return;
  }
  int rc = h.status;
  if (rc == 0) {
    bool small = h.data_len <= sizeof a->small_res && !a->hand_over;
    a->res = small ? a->small_res : malloc(h.data_len ? h.data_len : 1);
    if (a->res) {
      memcpy(a->res, data, h.data_len);
      a->len = h.data_len;
    } else {
      rc = MPROC_ENOMEM;
    }
  } else {
    a->err = copy_msg(text, h.msg_len);
  }
  finish(p, a, rc);
}

/* Every unfinished AsyncResult fails: MPROC_ECANCELLED after terminate, MPROC_ECRASHED when
 * the supervisor died under a running pool. */
static void cancel_all(mproc_pool *p) {
  bool lost = p->sup_lost;
  const char *msg = lost ? lost_msg : cancelled_msg;
  for (size_t i = 0; i < p->tab_cap; i++) {
    if (!p->tab[i].id)
      continue;
    mproc_async *a = entry_async(&p->tab[i]);
    staged *st = entry_staged(&p->tab[i]);
    if (st) {
      mproc__stage_retire(&p->stage, st->blk_len); /* workers may be alive yet */
      free(st);
    }
    if (!a || atomic_load(&a->ready))
      continue;
    if (!a->is_map || a->rc == 0) {
      free(a->err);
      a->err = copy_msg(msg, strlen(msg));
      a->rc = lost ? MPROC_ECRASHED : MPROC_ECANCELLED;
      if (a->is_map)
        a->fail_index = a->fail_index == SIZE_MAX ? 0 : a->fail_index;
    }
    if (a->feed) {
      a->feed = NULL;
      p->feeding--;
    }
    finish(p, a, a->rc);
  }
  if (p->tab)
    memset(p->tab, 0, p->tab_cap * sizeof *p->tab);
  p->tab_len = 0;
}

/* ---- collection ---- */

#define SPIN_NS 50000
#define QUICK_NS 3000

/* Whether a signal with a handler of the caller's came while blocked (still pending). */
static bool handler_pending(const sigset_t *old) {
  sigset_t pend;
  if (sigpending(&pend) != 0)
    return false;
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sigismember(&pend, sig) == 1 && !sigismember(old, sig) &&
        sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN)
      return true;
  }
  return false;
}

/* With signals blocked: a short look at the ring, then a sleep in ppoll on notify_fd (which
 * the workers signal when armed) with the caller's mask back, atomically: a handler that
 * runs then interrupts it, one whose signal came before is delivered there at once. */
/* Whether the collector's sleep also watches the supervisor's pidfd (set by the collector
 * only, so a dead supervisor whose pool is being terminated is not reported in a loop). */
static bool watch_supervisor(const mproc_pool *p) {
  return p->sup_fd >= 0 && !p->sup_reaped && !p->sup_seen_dead;
}

static int wait_blocked(mproc_pool *p, int64_t deadline, const sigset_t *old, bool spin) {
  mproc__ring *r = p->ctx.results;
  int64_t soon = mproc__now_ns() + SPIN_NS;
  if (spin && mproc__ring_wait_readable(r, deadline < soon ? deadline : soon) == 0)
    return 0;
  for (;;) {
    atomic_store(&p->ctx.sh->notify_armed, 1);
    if (mproc__ring_wait_readable(r, 0) == 0)
      return 0;
    /* The supervisor's pidfd turns readable when it dies: a supervisor killed from
     * outside is noticed at once, with no periodic check. */
    struct pollfd pf[2] = {{.fd = p->ctx.notify_fd, .events = POLLIN},
                           {.fd = p->sup_fd, .events = POLLIN}};
    nfds_t nfds = watch_supervisor(p) ? 2 : 1;
    int64_t left = mproc__remaining_ns(deadline);
    struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
    int n = ppoll(pf, nfds, deadline == MPROC__NEVER ? NULL : &ts, old);
    if (n < 0 && errno == EINTR)
      return -EINTR;
    if (n > 0 && nfds == 2 && pf[1].revents)
      return -ESRCH;
    if (n > 0)
      mproc__eventfd_drain(p->ctx.notify_fd);
    else if (mproc__remaining_ns(deadline) == 0)
      return -ETIMEDOUT;
  }
}

/* Waits until the result ring has a message (or is closed): 0, -ETIMEDOUT, or -EINTR when
 * a signal handler of the caller's ran meanwhile (Ctrl-C: blocking calls return). Futex
 * waits never tell (they restart), hence the blocked signals and ppoll; the synchronous
 * ones stay open, so a fault still kills at once. spin: see may_spin. */
static int wait_results(mproc_pool *p, int64_t deadline, bool spin) {
  /* A result due within microseconds is waited for without the two mask syscalls; a
   * handler that runs in that instant is seen at the next wait. */
  int64_t quick = mproc__now_ns() + QUICK_NS;
  if (mproc__ring_wait_readable(p->ctx.results, deadline < quick ? deadline : quick) == 0)
    return 0;
  if (mproc__remaining_ns(deadline) == 0)
    return -ETIMEDOUT;
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  sigdelset(&all, SIGTRAP);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = wait_blocked(p, deadline, &old, spin);
  if (rc != -EINTR && handler_pending(&old))
    rc = -EINTR; /* it came during the look: delivered below, reported now */
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

/* Takes results off the ring until the deadline brings one, then whatever else is there.
 * Called by the collector without p->mu. 0, -ETIMEDOUT, MPROC_ECLOSED, -EINTR, or -ESRCH
 * when the supervisor died. */
static int collect(mproc_pool *p, int64_t deadline, bool spin) {
  mproc__ring_msg m;
  int rc = wait_results(p, deadline, spin);
  if (rc == 0)
    rc = mproc__ring_read_begin(p->ctx.results, &m, 0);
  if (rc == -ETIMEDOUT)
    return mproc__remaining_ns(deadline) ? 0 : rc;
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&p->mu);
  for (int n = 0;; n++) {
    dispatch(p, m.data, m.len);
    mproc__ring_read_end(p->ctx.results, &m, true);
    /* Only the collector reads this ring, so a no-wait read under p->mu cannot deadlock. */
    if (n == COLLECT_BATCH || mproc__ring_read_begin(p->ctx.results, &m, 0) != 0)
      break;
  }
  if (p->poll_wake)
    atomic_store(&p->poll_wake->ready, true);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

/* A supervisor that died without being asked to (the collector's check, between slices):
 * closing the result ring lets the collector drain it and then fail what is left. */
static void check_supervisor(mproc_pool *p) {
  if (p->sup_fd < 0 || mproc__poll_fd(p->sup_fd, POLLIN, 0, NULL) != 1)
    return;
  if (atomic_load(&p->ctx.sh->flags) & MPROC__FLAG_TERMINATE)
    return;
  pthread_mutex_lock(&p->mu);
  /* Closed, it exits on its own once every task is done; then nothing is left to lose. */
  bool lost = p->state == POOL_RUNNING || p->state == POOL_CLOSED;
  if (lost) {
    p->sup_lost = true;
    if (p->state == POOL_RUNNING)
      p->state = POOL_TERMINATED; /* later submissions: MPROC_ECLOSED */
  }
  pthread_mutex_unlock(&p->mu);
  if (lost) {
    mproc__ring_close(p->ctx.tasks);
    mproc__ring_close(p->ctx.results);
  }
}

static int cond_wait_until(mproc_pool *p, int64_t deadline) {
  if (deadline == MPROC__NEVER)
    return pthread_cond_wait(&p->cv, &p->mu);
  struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
  return pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* Whether the collector may spin long for a result (under p->mu). Not while every CPU has
 * a worker with a task: the spin would take a CPU from one of them, and the result it waits
 * for comes later by as much (2 workers on 2 CPUs, map of 1M int64: the caller spent a
 * quarter of its time spinning). A few microseconds it always spins: results of short
 * tasks come that quickly, and a sleep costs each of them a wake-up. */
static bool may_spin(const mproc_pool *p) {
  size_t busy = p->tab_len < (size_t)p->ctx.nworkers ? p->tab_len : (size_t)p->ctx.nworkers;
  return busy < (size_t)p->ncpu;
}

/* Waits (under p->mu) until a is ready (a NULL: until the ring is drained and closed) or
 * the deadline, collecting meanwhile. 0 or MPROC_ETIMEDOUT. */
static int await_locked(mproc_pool *p, mproc_async *a, int64_t deadline) {
  while (!(a && atomic_load(&a->ready))) {
    if (p->collecting) {
      if (cond_wait_until(p, deadline) == ETIMEDOUT && !(a && atomic_load(&a->ready)))
        return MPROC_ETIMEDOUT;
      continue;
    }
    p->collecting = true;
    bool spin = may_spin(p);
    pthread_mutex_unlock(&p->mu);
    /* Without the supervisor's pidfd to watch, long waits go in slices so that a
     * supervisor killed from outside is still noticed. */
    int64_t until = deadline;
    if (!watch_supervisor(p) && deadline - mproc__now_ns() > SUPERVISOR_CHECK_NS)
      until = mproc__now_ns() + SUPERVISOR_CHECK_NS;
    int rc = collect(p, until, spin);
    if (rc == -ESRCH) {
      p->sup_seen_dead = true; /* seen once; from now on the slices above look again */
      check_supervisor(p);
      rc = 0;
    } else if (rc == -ETIMEDOUT && deadline > until) {
      check_supervisor(p);
      rc = 0;
    }
    pthread_mutex_lock(&p->mu);
    p->collecting = false;
    pthread_cond_broadcast(&p->cv);
    if (rc == MPROC_ECLOSED) {
      cancel_all(p); /* the supervisor is gone: nothing more will come */
      return 0;
    }
    if (rc == -ETIMEDOUT && !(a && atomic_load(&a->ready)))
      return MPROC_ETIMEDOUT;
    if (rc < 0 && rc != -ETIMEDOUT)
      return rc;
  }
  return 0;
}

/* Set while this thread runs callbacks: an mproc call inside a callback runs no others, so
 * they run one after another, in the order queued. */
static _Thread_local bool in_callbacks;

static int run_callbacks(mproc_pool *p);
static void cut_feeders(mproc_pool *p);
static void abandon(mproc_pool *p, mproc_async *r);

/* After every wait: the callbacks due, and the descriptor kept truthful (readable while
 * results or callbacks wait) for a caller that watches it. */
static void after_wait(mproc_pool *p) {
  if (in_callbacks)
    return; /* the outer call does it when they are done */
  if (atomic_load_explicit(&p->cb_queued, memory_order_relaxed))
    run_callbacks(p);
  if (atomic_load_explicit(&p->fd_wanted, memory_order_relaxed)) {
    atomic_store(&p->ctx.sh->notify_armed, 1);
    if (mproc__ring_wait_readable(p->ctx.results, 0) == 0 || atomic_load(&p->cb_queued))
      mproc__eventfd_signal(p->ctx.notify_fd);
  }
}

static int await(mproc_async *a, int64_t deadline) {
  /* A ready result's pool may be gone already: nothing of it is touched then. */
  if (atomic_load_explicit(&a->ready, memory_order_acquire))
    return 0;
  mproc_pool *p = a->pool;
  pthread_mutex_lock(&p->mu);
  int rc = await_locked(p, a, deadline);
  pthread_mutex_unlock(&p->mu);
  after_wait(p);
  return rc;
}

/* ---- the supervisor's end ---- */

static void wait_supervisor(mproc_pool *p) {
  pthread_mutex_lock(&p->join_mu);
  if (!p->sup_reaped) {
    pid_t r = mproc__waitpid(p->sup_pid, NULL, 0);
    /* -ECHILD: the caller ignores SIGCHLD and the kernel reaped it; the pidfd still tells. */
    if (r < 0 && p->sup_fd >= 0)
      mproc__poll_fd(p->sup_fd, POLLIN, MPROC__NEVER, NULL);
    p->sup_reaped = true;
  }
  pthread_mutex_unlock(&p->join_mu);
}

/* After the supervisor's exit: collects what it left behind, cancels the rest. */
static void settle(mproc_pool *p) {
  wait_supervisor(p);
  mproc__ring_close(p->ctx.results);
  mproc__ring_close(p->ctx.tasks);
  pthread_mutex_lock(&p->mu);
  while (await_locked(p, NULL, MPROC__NEVER) == -EINTR)
    ; /* free and terminate finish whatever the signals */
  pthread_mutex_unlock(&p->mu);
}

/* ---- making and ending a pool ---- */

static int check_opts(const mproc_pool_opts *o) {
  if (!o)
    return 0;
  if (o->processes < 0 || o->processes > MAX_PROCESSES)
    return MPROC_EINVAL;
  if (!(o->task_timeout >= 0) || o->task_timeout > 1e9)
    return MPROC_EINVAL;
  if (!o->initargs && o->initargs_len)
    return MPROC_EINVAL;
  return 0;
}

static void release(mproc_pool *p) {
  mproc__ring_free(p->ctx.tasks);
  mproc__ring_free(p->ctx.results);
  mproc__shared_unmap(p->ctx.sh, p->ctx.sh_len);
  mproc__stage_destroy(&p->stage);
  mproc__close(p->ctx.ctl_fd);
  mproc__close(p->ctx.notify_fd);
  mproc__close(p->sup_fd);
  free(p->poll_wake);
  free(p->ctx.initargs);
  for (size_t i = 0; i < p->tab_cap; i++)
    if (p->tab[i].id)
      free(entry_staged(&p->tab[i]));
  free(p->tab);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->join_mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

static int init_locals(mproc_pool *p) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (rc)
    return -rc;
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->join_mu, NULL);
  p->sup_fd = -1;
  p->ctx.ctl_fd = -1;
  p->ctx.notify_fd = -1;
  p->owner = self_pid();
  return 0;
}

static int init_shared(mproc_pool *p, const mproc_pool_opts *o) {
  mproc__pool_ctx *c = &p->ctx;
  p->ncpu = mproc__cpu_count();
  c->nworkers = o && o->processes ? o->processes : p->ncpu;
  c->maxtasks = o ? o->maxtasksperchild : 0;
  c->timeout_s = o ? o->task_timeout : 0;
  c->timeout_ns = (int64_t)(c->timeout_s * 1e9);
  c->initializer = o ? o->initializer : NULL;
  c->caller = p->owner;
  if (o && o->initargs_len) {
    if (!(c->initargs = malloc(o->initargs_len)))
      return MPROC_ENOMEM;
    memcpy(c->initargs, o->initargs, o->initargs_len);
    c->initargs_len = o->initargs_len;
  }
  c->sh_len = mproc__page_round(sizeof *c->sh + (size_t)c->nworkers * sizeof(mproc__pool_slot));
  if (!(c->sh = mproc__shared_map(c->sh_len)))
    return -errno;
  atomic_store(&c->sh->sup_deadline, MPROC__NEVER);
  /* Small to start with (a pool starts fast); the rings grow for big tasks and results. */
  mproc__ring_opts ro = {.initial_bytes = RING_INITIAL_BYTES};
  int rc = mproc__ring_new(&c->tasks, &ro);
  if (rc == 0)
    rc = mproc__ring_new(&c->results, &ro);
  if (rc == 0)
    rc = mproc__stage_init(&p->stage);
  if (rc == 0 && (c->ctl_fd = mproc__eventfd()) < 0)
    rc = c->ctl_fd;
  if (rc == 0 && (c->notify_fd = mproc__eventfd()) < 0)
    rc = c->notify_fd;
  return rc;
}

/* Waits until every first worker has run its initializer (or one failed). */
static int wait_boot(mproc_pool *p) {
  mproc__pool_shared *sh = p->ctx.sh;
  for (;;) {
    uint32_t b = atomic_load(&sh->boot);
    if (b == MPROC__BOOT_OK)
      return 0;
    if (b == MPROC__BOOT_FAILED)
      return MPROC_ETASK;
    /* A slice, so a supervisor that died without a word is noticed too. */
    mproc__futex_wait(&sh->boot, MPROC__BOOT_WAIT, mproc__now_ns() + 50 * 1000000);
    if (atomic_load(&sh->boot) == MPROC__BOOT_WAIT &&
        mproc__waitpid(p->sup_pid, NULL, WNOHANG) != 0) {
      p->sup_reaped = true;
      return MPROC_ECRASHED;
    }
  }
}

int mproc_pool_new(mproc_pool **out, const mproc_pool_opts *opts) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  int rc = check_opts(opts);
  if (rc)
    return rc;
  mproc_pool *p = calloc(1, sizeof *p);
  if (!p)
    return MPROC_ENOMEM;
  if ((rc = init_locals(p)) != 0) {
    free(p);
    return rc;
  }
  if ((rc = init_shared(p, opts)) != 0) {
    release(p);
    return rc;
  }
  pid_t pid = mproc__fork();
  if (pid == 0)
    mproc__pool_supervise(&p->ctx);
  if (pid < 0) {
    rc = -errno;
    release(p);
    return rc;
  }
  p->sup_pid = pid;
  p->sup_fd = mproc__pidfd_open(pid);
  if ((rc = wait_boot(p)) != 0) {
    wait_supervisor(p); /* it kills and reaps the workers before it exits */
    release(p);
    return rc;
  }
  *out = p;
  return 0;
}

int mproc_pool_close(mproc_pool *p) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  pthread_mutex_lock(&p->mu);
  if (p->state == POOL_RUNNING) {
    p->state = POOL_CLOSED;
    /* Workers drain the closed ring, then exit. A map still putting its chunks closes it
     * when it has put the last one. */
    if (p->feeding == 0)
      rc = mproc__ring_close(p->ctx.tasks);
  }
  pthread_mutex_unlock(&p->mu);
  return rc == MPROC_ECLOSED ? 0 : rc;
}

int mproc_pool_join(mproc_pool *p) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  pthread_mutex_lock(&p->mu);
  int state = p->state;
  pthread_mutex_unlock(&p->mu);
  if (state == POOL_RUNNING)
    return MPROC_ESTATE;
  cut_feeders(p);
  /* Interruptible (Ctrl-C): the supervisor exits once every task is done. */
  struct pollfd pf = {.fd = p->sup_fd, .events = POLLIN};
  while (p->sup_fd >= 0 && !p->sup_reaped && poll(&pf, 1, -1) < 0)
    if (errno == EINTR)
      return -EINTR;
  settle(p);
  pthread_mutex_lock(&p->mu);
  if (p->state == POOL_CLOSED)
    p->state = POOL_JOINED;
  pthread_mutex_unlock(&p->mu);
  run_callbacks(p);
  return 0;
}

int mproc_pool_terminate(mproc_pool *p) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  pthread_mutex_lock(&p->mu);
  if (p->state != POOL_JOINED)
    p->state = POOL_TERMINATED;
  pthread_mutex_unlock(&p->mu);
  atomic_fetch_or(&p->ctx.sh->flags, MPROC__FLAG_TERMINATE);
  mproc__eventfd_signal(p->ctx.ctl_fd);
  settle(p);
  run_callbacks(p);
  return 0;
}

void mproc_pool_free(mproc_pool *p) {
  if (!p)
    return;
  if (p->owner == self_pid()) {
    mproc_pool_terminate(p);
    pthread_mutex_lock(&p->mu);
    cancel_all(p);
    pthread_mutex_unlock(&p->mu);
    run_callbacks(p); /* none stays queued: an AsyncResult freed later must not look here */
  }
  /* In a forked child only this process's view goes: the pool's processes are the owner's. */
  release(p);
}

pid_t mproc__pool_supervisor_pid(mproc_pool *p) { return p ? p->sup_pid : 0; }

int mproc__pool_worker_pids(mproc_pool *p, pid_t *pids, size_t max) {
  if (!p)
    return MPROC_EINVAL;
  int n = 0;
  for (int i = 0; i < p->ctx.nworkers; i++) {
    pid_t pid = atomic_load(&p->ctx.sh->slots[i].pid);
    uint32_t st = atomic_load(&p->ctx.sh->slots[i].state);
    if (pid > 0 && st == MPROC__SLOT_READY) {
      if (pids && (size_t)n < max)
        pids[n] = pid;
      n++;
    }
  }
  return n;
}

/* ---- submission ---- */

/* Takes ids [first, first + total) for a, registers the first count of them and puts their
 * messages (made by put). Under p->mu. On failure no id stays registered (messages already
 * put run for nothing). */
static int submit_locked(mproc_pool *p, mproc_async *a, size_t total, size_t count,
                         int (*put)(mproc_pool *, uint64_t, size_t, void *), void *arg) {
  if (p->state != POOL_RUNNING)
    return MPROC_ECLOSED;
  int rc = tab_reserve(p, count);
  if (rc)
    return rc;
  uint64_t first = p->next_id + 1;
  size_t i = 0;
  for (; i < count; i++) {
    tab_insert(p, first + i, a);
    if ((rc = put(p, first + i, i, arg)) != 0)
      break;
  }
  if (rc) {
    for (size_t j = 0; j <= i && j < count; j++)
      tab_drop(p, first + j);
    return rc;
  }
  p->next_id += total;
  a->pool = p;
  a->first_id = first;
  return 0;
}

/* A base for empty iovecs (never NULL) and for padding. */
static const char zeros[16];

typedef struct apply_args {
  mproc_task_fn fn;
  const void *arg;
  size_t len;
} apply_args;

static int put_apply(mproc_pool *p, uint64_t id, size_t i, void *arg) {
  (void)i;
  apply_args *x = arg;
  mproc__task_hdr h = {.id = id, .kind = MPROC__TASK_APPLY, .task = x->fn};
  struct iovec iov[2] = {{&h, sizeof h}, {(void *)(x->arg ? x->arg : zeros), x->len}};
  return mproc__ring_putv(p->ctx.tasks, iov, 2, MPROC__NEVER);
}

static int apply_submit(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                        mproc_async *a) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  if (!fn || (!arg && len) || len > (size_t)PTRDIFF_MAX)
    return MPROC_EINVAL;
  apply_args x = {fn, arg, len};
  pthread_mutex_lock(&p->mu);
  rc = submit_locked(p, a, 1, 1, put_apply, &x);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int mproc_pool_apply_async(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                           mproc_async **r) {
  if (!r)
    return MPROC_EINVAL;
  *r = NULL;
  mproc_async *a = calloc(1, sizeof *a);
  if (!a)
    return MPROC_ENOMEM;
  int rc = apply_submit(p, fn, arg, len, a);
  if (rc) {
    free(a);
    return rc;
  }
  *r = a;
  return 0;
}

int mproc_pool_apply(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len, void **res,
                     size_t *res_len) {
  mproc_async a = {.hand_over = true};
  int rc = apply_submit(p, fn, arg, len, &a);
  if (rc)
    return rc;
  if ((rc = await(&a, MPROC__NEVER)) != 0) {
    abandon(p, &a);
    return rc;
  }
  rc = a.rc;
  if (rc == 0 && res) {
    *res = a.res; /* handed over: no second copy */
    a.res = NULL;
  } else if (res) {
    *res = NULL;
  }
  if (res_len)
    *res_len = rc == 0 ? a.len : 0;
  free(a.res);
  free(a.err);
  return rc;
}

/* ---- map ---- */


/* A big chunk whose input or output is not shared already gets a block of the stage: its
 * input copied there, its output written there by the worker. false: through the rings. */
static staged *stage_chunk(mproc_pool *p, const map_args *x, size_t start, size_t count,
                           mproc__task_hdr *h) {
  size_t in_bytes = x->flags & MPROC__MAP_IN_SHARED ? 0 : count * x->in_size;
  size_t out_bytes = x->flags & MPROC__MAP_OUT_SHARED ? 0 : count * x->out_size;
  size_t out_off = (in_bytes + 63) & ~(size_t)63;
  if (in_bytes + out_bytes < STAGE_MIN_BYTES)
    return NULL;
  if (p->stage.retired && !p->stage.live && workers_idle(p))
    mproc__stage_reset(&p->stage);
  staged *st = malloc(sizeof *st);
  char *blk = st ? mproc__stage_alloc(&p->stage, out_off + out_bytes) : NULL;
  if (!blk) {
    free(st);
    return NULL;
  }
  if (in_bytes) {
    memcpy(blk, x->in + start * x->in_size, in_bytes);
    h->in_ptr = blk;
    h->flags |= MPROC__MAP_IN_SHARED;
  }
  if (out_bytes) {
    h->out_ptr = blk + out_off;
    h->flags |= MPROC__MAP_OUT_SHARED;
  }
  *st = (staged){.blk = blk, .blk_len = out_off + out_bytes,
                 .blk_out = out_bytes ? blk + out_off : NULL};
  return st;
}

static int put_chunk(mproc_pool *p, uint64_t id, size_t c, void *arg) {
  map_args *x = arg;
  size_t start, count;
  chunk_span(&x->plan, c, &start, &count);
  mproc__task_hdr h = {.id = id,
                       .kind = MPROC__TASK_MAP,
                       .flags = x->flags,
                       .map = x->fn,
                       .in_size = x->in_size,
                       .out_size = x->out_size,
                       .count = count,
                       .args_len = x->args_len,
                       .start = start};
  if (x->flags & MPROC__MAP_IN_SHARED)
    h.in_ptr = x->in + start * x->in_size;
  if (x->flags & MPROC__MAP_OUT_SHARED)
    h.out_ptr = x->out + start * x->out_size;
  staged *st = stage_chunk(p, x, start, count, &h);
  size_t bytes = h.flags & MPROC__MAP_IN_SHARED ? 0 : count * x->in_size;
  struct iovec iov[4] = {{&h, sizeof h},
                         {(void *)(x->in + start * x->in_size), bytes},
                         {(void *)zeros, ((bytes + 15) & ~(size_t)15) - bytes},
                         {(void *)(x->args ? x->args : zeros), x->args_len}};
  int rc = mproc__ring_putv(p->ctx.tasks, iov, 4, MPROC__NEVER);
  if (st && rc == 0) {
    entry *e = &p->tab[tab_find(p, id)];
    st->a = (mproc_async *)e->v;
    e->v = (uintptr_t)st | 1;
  } else if (st) {
    mproc__stage_free(&p->stage, st->blk, st->blk_len); /* no worker saw it */
    free(st);
  }
  return rc;
}

static int check_map(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                     void *out, size_t out_size, const mproc_map_opts *o) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  if (!fn || in_size == 0 || (n && !in) || (n && out_size && !out))
    return MPROC_EINVAL;
  if (o && !o->args && o->args_len)
    return MPROC_EINVAL;
  size_t lim = (size_t)PTRDIFF_MAX / 2;
  if (in_size > lim || out_size > lim || (n && (n > lim / in_size || (out_size && n > lim / out_size))))
    return MPROC_EINVAL;
  return 0;
}

/* The chunks in flight at once for map (not map_async): enough to keep every worker busy,
 * few enough that the rings stay small and their memory stays in cache. */
static size_t feed_window(const mproc_pool *p, const map_args *x) {
  size_t elem = x->in_size > x->out_size ? x->in_size : x->out_size;
  size_t bytes = x->plan.cs > SIZE_MAX / elem ? SIZE_MAX : x->plan.cs * elem;
  size_t w = MAP_WINDOW_BYTES / (bytes ? bytes : 1), least = 2 * (size_t)p->ctx.nworkers + 1;
  return w > least ? w : least;
}

/* Puts the next chunks of a windowed map as earlier ones come back. Under p->mu. A chunk
 * that cannot be put fails with the rest of the unsent ones. */
static void feed_locked(mproc_pool *p, mproc_async *a) {
  while (a->sent < a->nchunks && a->sent - (a->nchunks - a->left) < a->window) {
    uint64_t id = a->first_id + a->sent;
    int rc = p->state == POOL_TERMINATED ? MPROC_ECANCELLED : tab_reserve(p, 1);
    if (rc == 0) {
      tab_insert(p, id, a);
      if ((rc = put_chunk(p, id, a->sent, (void *)a->feed)) != 0)
        tab_delete(p, id);
    }
    if (rc) {
      size_t idx, count;
      chunk_span(&a->plan, a->sent, &idx, &count);
      if (idx < a->fail_index) {
        a->fail_index = idx;
        a->rc = rc;
      }
      a->left -= a->nchunks - a->sent;
      a->sent = a->nchunks;
      break;
    }
    a->sent++;
  }
  if (a->sent == a->nchunks && a->feed) {
    a->feed = NULL;
    if (--p->feeding == 0 && p->state == POOL_CLOSED)
      mproc__ring_close(p->ctx.tasks);
  }
}

/* Whether [addr, addr + len) is memory the workers share at the same address: a shared
 * mapping of the caller that the supervisor (whose memory every worker copies) maps at the
 * same place, from the same object. Worth the look only for big data. */
static bool shared_with_workers(mproc_pool *p, const void *addr, size_t len) {
  if (len < ZERO_COPY_MIN_BYTES)
    return false;
  mproc__mapping_id mine, theirs;
  if (mproc__shared_mapping_find(0, addr, len, &mine) != 0 ||
      mproc__shared_mapping_find(p->sup_pid, addr, len, &theirs) != 0)
    return false;
  return mine.start == theirs.start && mine.dev == theirs.dev &&
         mine.inode == theirs.inode && mine.offset == theirs.offset;
}

/* x must live until a is ready when windowed (map: the caller's frame). */
static int map_submit(mproc_pool *p, map_args *x, const mproc_map_opts *o, mproc_async *a,
                      bool windowed) {
  int rc = check_map(p, x->fn, x->in, x->n, x->in_size, a->out, x->out_size, o);
  if (rc)
    return rc;
  size_t n = x->n, in_size = x->in_size, out_size = x->out_size;
  if (shared_with_workers(p, x->in, n * in_size))
    x->flags |= MPROC__MAP_IN_SHARED;
  if (out_size && shared_with_workers(p, x->out, n * out_size))
    x->flags |= MPROC__MAP_OUT_SHARED;
  x->args = o ? o->args : NULL;
  x->args_len = o ? o->args_len : 0;
  x->plan = plan_chunks(n, o ? o->chunksize : 0, in_size, out_size, p->ctx.nworkers);
  a->is_map = true;
  a->out_size = out_size;
  a->n = n;
  a->plan = x->plan;
  a->nchunks = plan_count(&x->plan);
  a->left = a->nchunks;
  a->fail_index = SIZE_MAX;
  a->window = windowed ? feed_window(p, x) : a->nchunks;
  a->sent = a->window < a->nchunks ? a->window : a->nchunks;
  pthread_mutex_lock(&p->mu);
  if (n == 0) {
    rc = p->state == POOL_RUNNING ? 0 : MPROC_ECLOSED;
    if (rc == 0)
      finish(p, a, 0);
  } else {
    rc = submit_locked(p, a, a->nchunks, a->sent, put_chunk, x);
    if (rc == 0 && a->sent < a->nchunks) {
      a->feed = x;
      p->feeding++;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int mproc_pool_map_async(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                         size_t in_size, void *out, size_t out_size, const mproc_map_opts *opts,
                         mproc_async **r) {
  if (!r)
    return MPROC_EINVAL;
  *r = NULL;
  mproc_async *a = calloc(1, sizeof *a);
  if (!a)
    return MPROC_ENOMEM;
  map_args x = {.fn = fn, .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n};
  a->out = out;
  int rc = map_submit(p, &x, opts, a, false);
  if (rc) {
    free(a);
    return rc;
  }
  *r = a;
  return 0;
}

int mproc_pool_map(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                   void *out, size_t out_size, const mproc_map_opts *opts) {
  mproc_async a = {.out = out};
  map_args x = {.fn = fn, .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n};
  int rc = map_submit(p, &x, opts, &a, true);
  if (rc)
    return rc;
  if ((rc = await(&a, MPROC__NEVER)) != 0) {
    abandon(p, &a);
    free(a.err);
    return rc;
  }
  free(a.err);
  return a.rc;
}

/* ---- AsyncResult ---- */

int mproc_async_wait(mproc_async *r, double timeout) {
  if (!r)
    return MPROC_EINVAL;
  return await(r, mproc__deadline(timeout));
}

int mproc_async_get(mproc_async *r, void **res, size_t *len, double timeout) {
  if (!r)
    return MPROC_EINVAL;
  int rc = await(r, mproc__deadline(timeout));
  if (rc)
    return rc;
  if (res)
    *res = NULL;
  if (len)
    *len = 0;
  if (r->rc)
    return r->rc;
  if (res && !r->is_map) {
    if (!(*res = malloc(r->len ? r->len : 1)))
      return MPROC_ENOMEM;
    memcpy(*res, r->res, r->len);
  }
  if (len && !r->is_map)
    *len = r->len;
  return 0;
}

bool mproc_async_ready(mproc_async *r) {
  if (!r)
    return false;
  await(r, 0); /* collects what has arrived: there is no thread to do it */
  return atomic_load(&r->ready);
}

bool mproc_async_successful(mproc_async *r) { return mproc_async_ready(r) && r->rc == 0; }

const char *mproc_async_error(mproc_async *r) {
  if (!r || !atomic_load(&r->ready) || r->rc == 0)
    return NULL;
  return r->err ? r->err : mproc_strerror(r->rc);
}

size_t mproc_async_fail_index(mproc_async *r) {
  if (!r || !r->is_map || !atomic_load(&r->ready) || r->rc == 0)
    return SIZE_MAX;
  return r->fail_index;
}

/* Forgets r's tasks (their results will be dropped) and its callbacks. */
static void abandon(mproc_pool *p, mproc_async *r) {
  pthread_mutex_lock(&p->mu);
  if (!atomic_load(&r->ready)) {
    size_t count = r->is_map ? r->nchunks : 1;
    for (size_t i = 0; i < count; i++)
      tab_drop(p, r->first_id + i);
    if (r->feed) {
      r->feed = NULL;
      if (--p->feeding == 0 && p->state == POOL_CLOSED)
        mproc__ring_close(p->ctx.tasks);
    }
  }
  cb_unqueue(p, r);
  pthread_mutex_unlock(&p->mu);
}

void mproc_async_free(mproc_async *r) {
  if (!r)
    return;
  if (r->pool && (!atomic_load(&r->ready) || r->queued))
    abandon(r->pool, r);
  free(r->err);
  if (r->res != r->small_res)
    free(r->res);
  free(r);
}

/* ---- hooks for pool_imap.c ---- */

int mproc__pool_feed_begin(mproc_pool *p, unsigned *epoch) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  pthread_mutex_lock(&p->mu);
  rc = p->state == POOL_RUNNING ? 0 : MPROC_ECLOSED;
  if (rc == 0) {
    p->feeding++;
    p->imap_feeders++;
    *epoch = p->feed_epoch;
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void mproc__pool_feed_end(mproc_pool *p, unsigned epoch) {
  pthread_mutex_lock(&p->mu);
  if (epoch == p->feed_epoch) {
    p->imap_feeders--;
    if (--p->feeding == 0 && p->state == POOL_CLOSED)
      mproc__ring_close(p->ctx.tasks);
  }
  pthread_mutex_unlock(&p->mu);
}

static void cut_feeders(mproc_pool *p) {
  pthread_mutex_lock(&p->mu);
  if (p->imap_feeders) {
    p->feeding -= p->imap_feeders;
    p->imap_feeders = 0;
    p->feed_epoch++;
    if (p->feeding == 0 && p->state == POOL_CLOSED)
      mproc__ring_close(p->ctx.tasks);
  }
  pthread_mutex_unlock(&p->mu);
}

/* One task for a feeder of this epoch: accepted after close too, until join cuts it. */
static int submit_fed(mproc_pool *p, mproc_async *a, apply_args *x, unsigned epoch) {
  bool open = p->state == POOL_RUNNING || (p->state == POOL_CLOSED && epoch == p->feed_epoch);
  if (!open)
    return MPROC_ECLOSED;
  int rc = tab_reserve(p, 1);
  if (rc)
    return rc;
  uint64_t id = p->next_id + 1;
  tab_insert(p, id, a);
  if ((rc = put_apply(p, id, 0, x)) != 0) {
    tab_delete(p, id);
    return rc;
  }
  p->next_id++;
  a->pool = p;
  a->first_id = id;
  return 0;
}

int mproc__pool_apply_hooked(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                             void (*on_ready)(mproc_async *, void *), void *hook_arg,
                             unsigned epoch, mproc_async **r) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  if (!fn || (!arg && len) || len > (size_t)PTRDIFF_MAX)
    return MPROC_EINVAL;
  mproc_async *a = calloc(1, sizeof *a);
  if (!a)
    return MPROC_ENOMEM;
  a->on_ready = on_ready;
  a->on_ready_arg = hook_arg;
  apply_args x = {fn, arg, len};
  pthread_mutex_lock(&p->mu);
  rc = submit_fed(p, a, &x, epoch);
  pthread_mutex_unlock(&p->mu);
  if (rc) {
    free(a);
    return rc;
  }
  *r = a;
  return 0;
}

mproc_async *mproc__pool_sentinel_new(mproc_pool *p) {
  mproc_async *a = calloc(1, sizeof *a);
  if (a)
    a->pool = p;
  return a;
}

void mproc__pool_sentinel_free(mproc_async *a) {
  if (a)
    atomic_store(&a->ready, true); /* never registered: nothing to remove */
  mproc_async_free(a);
}

void mproc__pool_sentinel_set(mproc_async *a, bool ready) { atomic_store(&a->ready, ready); }

int mproc__pool_await(mproc_async *a, int64_t deadline) { return await(a, deadline); }

void mproc__pool_lock(mproc_pool *p) { pthread_mutex_lock(&p->mu); }
void mproc__pool_unlock(mproc_pool *p) { pthread_mutex_unlock(&p->mu); }
int mproc__pool_nworkers(const mproc_pool *p) { return p->ctx.nworkers; }

void mproc__pool_stage_usage(mproc_pool *p, size_t *live, size_t *retired, size_t *committed) {
  pthread_mutex_lock(&p->mu);
  *live = p->stage.live;
  *retired = p->stage.retired;
  *committed = p->stage.committed;
  pthread_mutex_unlock(&p->mu);
}
int mproc__pool_owned(mproc_pool *p) { return check_pool(p); }

int mproc__async_view(const mproc_async *a, const void **res, size_t *len, const char **err) {
  *res = a->res;
  *len = a->len;
  *err = a->err;
  return a->rc;
}

/* ---- callbacks and the descriptor ---- */

/* Runs the queued callbacks, in order, outside p->mu. Returns how many ran. */
static int run_callbacks(mproc_pool *p) {
  if (in_callbacks)
    return 0;
  in_callbacks = true;
  int n = 0;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    mproc_async *a = p->cb_head;
    if (!a) {
      pthread_mutex_unlock(&p->mu);
      in_callbacks = false;
      return n;
    }
    if (!(p->cb_head = a->cb_next))
      p->cb_tail = NULL;
    atomic_fetch_sub(&p->cb_queued, 1);
    a->queued = false;
    unsigned ev = a->events;
    a->events = 0;
    size_t done = a->done_items, total = a->n;
    bool ok = a->rc == 0;
    mproc_async_opts cb = a->cb;
    pthread_mutex_unlock(&p->mu);
    if ((ev & EV_PROGRESS) && cb.progress) {
      cb.progress(done, total, cb.ctx);
      n++;
    }
    mproc_async_fn f = ok ? cb.callback : cb.error_callback;
    if ((ev & EV_DONE) && f) {
      f(a, cb.ctx);
      n++;
    }
  }
}

int mproc_pool_apply_async_ex(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                              const mproc_async_opts *cb, mproc_async **r) {
  if (!r)
    return MPROC_EINVAL;
  *r = NULL;
  mproc_async *a = calloc(1, sizeof *a);
  if (!a)
    return MPROC_ENOMEM;
  if (cb)
    a->cb = *cb;
  int rc = apply_submit(p, fn, arg, len, a);
  if (rc) {
    free(a);
    return rc;
  }
  *r = a;
  return 0;
}

int mproc_pool_map_async_ex(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                            size_t in_size, void *out, size_t out_size,
                            const mproc_map_opts *opts, const mproc_async_opts *cb,
                            mproc_async **r) {
  if (!r)
    return MPROC_EINVAL;
  *r = NULL;
  mproc_async *a = calloc(1, sizeof *a);
  if (!a)
    return MPROC_ENOMEM;
  if (cb)
    a->cb = *cb;
  map_args x = {.fn = fn, .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n};
  a->out = out;
  int rc = map_submit(p, &x, opts, a, false);
  if (rc) {
    free(a);
    return rc;
  }
  if (n == 0 && (a->cb.callback || a->cb.error_callback)) {
    pthread_mutex_lock(&p->mu);
    a->pool = p;
    cb_queue(p, a, EV_DONE);
    pthread_mutex_unlock(&p->mu);
  }
  *r = a;
  return 0;
}

int mproc_pool_map_ex(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                      void *out, size_t out_size, const mproc_map_opts *opts,
                      const mproc_async_opts *cb) {
  mproc_async a = {.out = out};
  if (cb)
    a.cb = *cb;
  map_args x = {.fn = fn, .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n};
  int rc = map_submit(p, &x, opts, &a, true);
  if (rc)
    return rc;
  if (n == 0) {
    run_callbacks(p); /* queued by the immediate finish */
    abandon(p, &a);
    return 0;
  }
  if ((rc = await(&a, MPROC__NEVER)) == 0)
    run_callbacks(p); /* a lives in this frame: its callbacks run before the return */
  abandon(p, &a);
  free(a.err);
  return rc ? rc : a.rc;
}

int mproc_pool_fileno(mproc_pool *p) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  atomic_store(&p->fd_wanted, true);
  after_wait(p);
  return p->ctx.notify_fd;
}

int mproc_pool_poll(mproc_pool *p, double timeout) {
  int rc = check_pool(p);
  if (rc)
    return rc;
  int64_t deadline = mproc__deadline(timeout);
  mproc__eventfd_drain(p->ctx.notify_fd); /* what it announced is looked at below */
  pthread_mutex_lock(&p->mu);
  if (!p->poll_wake && !(p->poll_wake = calloc(1, sizeof *p->poll_wake))) {
    pthread_mutex_unlock(&p->mu);
    return MPROC_ENOMEM;
  }
  p->poll_wake->pool = p;
  bool due = atomic_load(&p->cb_queued) > 0 || mproc__ring_wait_readable(p->ctx.results, 0) == 0;
  atomic_store(&p->poll_wake->ready, false);
  rc = await_locked(p, p->poll_wake, due ? 0 : deadline);
  pthread_mutex_unlock(&p->mu);
  int n = run_callbacks(p);
  after_wait(p);
  return rc == 0 || rc == MPROC_ETIMEDOUT ? n : rc;
}
