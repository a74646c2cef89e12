/*
 * Pool and AsyncResult, the caller's side: making and ending a pool, submission onto the
 * task ring, the process-local table that routes each result to its AsyncResult, and the
 * AsyncResult and callback calls. Collecting and routing results is pool_collect.c's, map's
 * chunks pool_map.c's; the structures are in pool_caller.h.
 *
 * No thread is started here. Results are collected inside mproc calls (get, wait, map,
 * join): one caller thread at a time is the collector (p->collecting); the others wait on
 * p->cv and are woken after each batch the collector dispatches, and when it leaves.
 * Lock order: the result ring's read side, then p->mu.
 */
#define _GNU_SOURCE
#include "pool/pool_caller.h"

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
#define RING_INITIAL_BYTES ((size_t)64 << 10)

/* A pool is driven from the process that made it: its results are routed in that
 * process's memory (a forked child gets MPROC_ESTATE). */
int mproc__pool_check(const mproc_pool *p) {
  if (!p)
    return MPROC_EINVAL;
  return p->owner == mproc__getpid() ? 0 : MPROC_ESTATE;
}

/* ---- the id -> AsyncResult table (open addressing, under p->mu) ---- */

/* Ids are handed out in sequence: four consecutive ids share a home group (one cache line),
 * and groups are spread by a multiplicative hash so that probe runs stay short. */
static size_t home(const mproc_pool *p, uint64_t id) {
  uint64_t group = ((id >> 2) * 0x9E3779B97F4A7C15ull) >> 17;
  return (size_t)((group << 2) | (id & 3)) & (p->tab_cap - 1);
}

size_t mproc__tab_find(const mproc_pool *p, uint64_t id) {
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

void mproc__tab_insert(mproc_pool *p, uint64_t id, mproc_async *a) {
  tab_put(p, (entry){.id = id, .v = (uintptr_t)a});
}

int mproc__tab_reserve(mproc_pool *p, size_t more) {
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
void mproc__tab_delete(mproc_pool *p, uint64_t id) {
  size_t i = mproc__tab_find(p, id);
  if (i != SIZE_MAX)
    mproc__tab_delete_at(p, i);
}

void mproc__tab_delete_at(mproc_pool *p, size_t i) {
  size_t mask = p->tab_cap - 1;
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

/* Forgets a task whose result nobody will wait for; a worker may still run it. A staged
 * chunk stays in the table without its AsyncResult (an orphan), so that its result, which
 * says the worker is done with the block, frees the block. */
static void tab_drop(mproc_pool *p, uint64_t id) {
  size_t i = mproc__tab_find(p, id);
  if (i == SIZE_MAX)
    return;
  staged *st = entry_staged(&p->tab[i]);
  if (st)
    st->a = NULL;
  else
    mproc__tab_delete_at(p, i);
}

/* ---- completion (under p->mu) ---- */

void mproc__pool_cb_queue(mproc_pool *p, mproc_async *a, unsigned ev) {
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

void mproc__pool_finish(mproc_pool *p, mproc_async *a, int rc) {
  a->rc = rc;
  if (a->on_ready)
    a->on_ready(a, a->on_ready_arg);
  if (a->cb.callback || a->cb.error_callback)
    mproc__pool_cb_queue(p, a, EV_DONE);
  /* Last: a thread that sees ready without p->mu may free a at once, so a must already be
   * queued (mproc_async_free then takes it off the queue). */
  atomic_store_explicit(&a->ready, true, memory_order_release);
}

char *mproc__pool_copy_msg(const char *msg, size_t len) {
  char *m = malloc(len + 1);
  if (m) {
    memcpy(m, msg, len);
    m[len] = 0;
  }
  return m;
}

/* ---- waiting ---- */

/* Set while this thread runs callbacks: an mproc call inside a callback runs no others, so
 * they run one after another, in the order queued. */
static _Thread_local bool in_callbacks;

static void cut_feeders(mproc_pool *p);

/* After every wait: the callbacks due, and the descriptor kept truthful (readable while
 * results or callbacks wait) for a caller that watches it. */
static void after_wait(mproc_pool *p) {
  if (in_callbacks)
    return; /* the outer call does it when they are done */
  if (atomic_load_explicit(&p->cb_queued, memory_order_relaxed))
    mproc__pool_run_callbacks(p);
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
  int rc = mproc__pool_await_locked(p, a, deadline);
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
  while (mproc__pool_await_locked(p, NULL, MPROC__NEVER) == -EINTR)
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
  p->owner = mproc__getpid();
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
      return atomic_load(&sh->boot_rc);
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
  int rc = mproc__pool_check(p);
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
  int rc = mproc__pool_check(p);
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
  if (p->sup_fd >= 0 && !p->sup_reaped && poll(&pf, 1, -1) < 0 && errno == EINTR)
    return -EINTR; /* any other failure: settle below waits for the supervisor anyway */
  settle(p);
  pthread_mutex_lock(&p->mu);
  if (p->state == POOL_CLOSED)
    p->state = POOL_JOINED;
  pthread_mutex_unlock(&p->mu);
  mproc__pool_run_callbacks(p);
  return 0;
}

int mproc_pool_terminate(mproc_pool *p) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  pthread_mutex_lock(&p->mu);
  if (p->state != POOL_JOINED)
    p->state = POOL_TERMINATED;
  pthread_mutex_unlock(&p->mu);
  atomic_fetch_or(&p->ctx.sh->flags, MPROC__FLAG_TERMINATE);
  mproc__eventfd_signal(p->ctx.ctl_fd);
  settle(p);
  mproc__pool_run_callbacks(p);
  return 0;
}

void mproc_pool_free(mproc_pool *p) {
  if (!p)
    return;
  if (p->owner == mproc__getpid()) {
    mproc_pool_terminate(p);
    pthread_mutex_lock(&p->mu);
    mproc__pool_cancel_all(p);
    pthread_mutex_unlock(&p->mu);
    mproc__pool_run_callbacks(p); /* none stays queued: an AsyncResult freed later must not look here */
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
int mproc__pool_submit(mproc_pool *p, mproc_async *a, size_t total, size_t count,
                         int (*put)(mproc_pool *, uint64_t, size_t, void *), void *arg) {
  if (p->state != POOL_RUNNING)
    return MPROC_ECLOSED;
  int rc = mproc__tab_reserve(p, count);
  if (rc)
    return rc;
  /* The ids are used up even if a put fails below: the tasks put before it still run, and
   * their results must not reach a later submission that got the same ids. */
  uint64_t first = p->next_id + 1;
  p->next_id += total;
  size_t i = 0;
  for (; i < count; i++) {
    mproc__tab_insert(p, first + i, a);
    if ((rc = put(p, first + i, i, arg)) != 0)
      break;
  }
  if (rc) {
    for (size_t j = 0; j <= i && j < count; j++)
      tab_drop(p, first + j);
    return rc;
  }
  a->pool = p;
  a->first_id = first;
  return 0;
}

/* A base for empty iovecs (never NULL) and for padding. */
const char mproc__pool_zeros[16];

typedef struct apply_args {
  mproc_task_fn fn;
  const void *arg;
  size_t len;
} apply_args;

static int put_apply(mproc_pool *p, uint64_t id, size_t i, void *arg) {
  (void)i;
  apply_args *x = arg;
  mproc__task_hdr h = {.id = id, .kind = MPROC__TASK_APPLY, .task = x->fn};
  struct iovec iov[2] = {{&h, sizeof h}, {(void *)(x->arg ? x->arg : mproc__pool_zeros), x->len}};
  return mproc__ring_putv(p->ctx.tasks, iov, 2, MPROC__NEVER);
}

static int apply_submit(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                        mproc_async *a) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  if (!fn || (!arg && len) || len > (size_t)PTRDIFF_MAX)
    return MPROC_EINVAL;
  apply_args x = {fn, arg, len};
  pthread_mutex_lock(&p->mu);
  rc = mproc__pool_submit(p, a, 1, 1, put_apply, &x);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int mproc_pool_apply_async(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                           mproc_async **r) {
  return mproc_pool_apply_async_ex(p, fn, arg, len, NULL, r);
}

int mproc_pool_apply(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len, void **res,
                     size_t *res_len) {
  mproc_async a = {.hand_over = true};
  int rc = apply_submit(p, fn, arg, len, &a);
  if (rc)
    return rc;
  if ((rc = await(&a, MPROC__NEVER)) != 0) {
    mproc__pool_abandon(p, &a);
    free(a.res); /* another collector may have finished it meanwhile */
    free(a.err);
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
void mproc__pool_abandon(mproc_pool *p, mproc_async *r) {
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
    mproc__pool_abandon(r->pool, r);
  free(r->err);
  if (r->res != r->small_res)
    free(r->res);
  free(r);
}

/* ---- hooks for pool_imap.c ---- */

int mproc__pool_feed_begin(mproc_pool *p, unsigned *epoch) {
  int rc = mproc__pool_check(p);
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
  int rc = mproc__tab_reserve(p, 1);
  if (rc)
    return rc;
  uint64_t id = p->next_id + 1;
  mproc__tab_insert(p, id, a);
  if ((rc = put_apply(p, id, 0, x)) != 0) {
    mproc__tab_delete(p, id);
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
  int rc = mproc__pool_check(p);
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

int mproc__pool_owned(mproc_pool *p) { return mproc__pool_check(p); }

int mproc__async_view(const mproc_async *a, const void **res, size_t *len, const char **err) {
  *res = a->res;
  *len = a->len;
  *err = a->err;
  return a->rc;
}

/* ---- callbacks and the descriptor ---- */

/* Runs the queued callbacks, in order, outside p->mu. Returns how many ran. */
int mproc__pool_run_callbacks(mproc_pool *p) {
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
    size_t done = a->done_items, total = a->plan.n;
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

int mproc_pool_fileno(mproc_pool *p) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  atomic_store(&p->fd_wanted, true);
  after_wait(p);
  return p->ctx.notify_fd;
}

int mproc_pool_poll(mproc_pool *p, double timeout) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  int64_t deadline = mproc__deadline(timeout);
  mproc__eventfd_drain(p->ctx.notify_fd); /* what it announced is looked at below */
  pthread_mutex_lock(&p->mu);
  if (!p->poll_wake && !(p->poll_wake = mproc__pool_sentinel_new(p))) {
    pthread_mutex_unlock(&p->mu);
    return MPROC_ENOMEM;
  }
  bool due = atomic_load(&p->cb_queued) > 0 || mproc__ring_wait_readable(p->ctx.results, 0) == 0;
  atomic_store(&p->poll_wake->ready, false);
  rc = mproc__pool_await_locked(p, p->poll_wake, due ? 0 : deadline);
  pthread_mutex_unlock(&p->mu);
  int n = mproc__pool_run_callbacks(p);
  after_wait(p);
  return rc == 0 || rc == MPROC_ETIMEDOUT ? n : rc;
}
