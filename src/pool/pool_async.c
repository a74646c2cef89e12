/*
 * The caller's pool machinery that every feature builds on (contract in pool_async.h): the
 * id table, submission, completion and the callback queue, and the feeders that keep the
 * task ring open past close. It calls nothing above it: collecting (pool_collect.c) and the
 * features (pool.c, pool_map.c, pool_imap.c) call it.
 * Lock order: the result ring's read side, then p->mu.
 */
#define _GNU_SOURCE
#include "pool/pool_async.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

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
  a->cb.events |= ev;
  if (a->cb.queued)
    return;
  a->cb.queued = true;
  a->cb.next = NULL;
  if (p->cb_tail)
    p->cb_tail->cb.next = a;
  else
    p->cb_head = a;
  p->cb_tail = a;
  atomic_fetch_add(&p->cb_queued, 1);
}

static void cb_unqueue(mproc_pool *p, mproc_async *a) {
  if (!a->cb.queued)
    return;
  mproc_async **pp = &p->cb_head, *prev = NULL;
  while (*pp && *pp != a) {
    prev = *pp;
    pp = &(*pp)->cb.next;
  }
  if (*pp) {
    *pp = a->cb.next;
    if (p->cb_tail == a)
      p->cb_tail = prev;
    atomic_fetch_sub(&p->cb_queued, 1);
  }
  a->cb.queued = false;
  a->cb.events = 0;
}

void mproc__pool_finish(mproc_pool *p, mproc_async *a, int rc) {
  a->rc = rc;
  if (a->hook.on_ready)
    a->hook.on_ready(a, a->hook.arg);
  if (a->cb.opts.callback || a->cb.opts.error_callback)
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

/* ---- submission ---- */

/* Whether new tasks are taken: while running, and for an imap feeder of this epoch after
 * close too (Python's imap goes on after close), until join cuts it off. */
static bool accepting(const mproc_pool *p, const unsigned *epoch) {
  return p->state == POOL_RUNNING ||
         (epoch && p->state == POOL_CLOSED && *epoch == p->feed_epoch);
}

/* Takes ids [first, first + total) for a, registers the first count of them and puts their
 * messages (made by put). Under p->mu. On failure no id stays registered (messages already
 * put run for nothing). */
int mproc__pool_submit(mproc_pool *p, mproc_async *a, size_t total, size_t count,
                       int (*put)(mproc_pool *, uint64_t, size_t, void *), void *arg,
                       const unsigned *epoch) {
  if (!accepting(p, epoch))
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
  a->view = atomic_load_explicit(&p->view, memory_order_relaxed);
  a->first_id = first;
  a->ntasks = total;
  return 0;
}

const char mproc__pool_zeros[16];

int mproc__pool_put_task(mproc_pool *p, const struct iovec *iov, int n) {
  if (!p->engine)
    return mproc__ring_putv(p->ctx.tasks, iov, n, MPROC__NEVER);
  for (;;) {
    int rc = mproc__ring_putv(p->ctx.tasks, iov, n, 0);
    if (rc != -ETIMEDOUT)
      return rc;
    rc = p->engine->pump(p->engine, mproc__now_ns() + 1000000);
    if (rc < 0 && rc != -ETIMEDOUT && rc != -EINTR)
      return rc;
  }
}

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
  return mproc__pool_put_task(p, iov, 2);
}

int mproc__pool_submit_apply(mproc_pool *p, mproc_async *a, mproc_task_fn fn, const void *arg,
                             size_t len, const unsigned *epoch) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  if (!fn || (!arg && len) || len > (size_t)PTRDIFF_MAX)
    return MPROC_EINVAL;
  if ((rc = mproc__pool_fn_check(&p->ctx, (const void *)fn)) != 0)
    return rc;
  apply_args x = {fn, arg, len};
  pthread_mutex_lock(&p->mu);
  rc = mproc__pool_submit(p, a, 1, 1, put_apply, &x, epoch);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void mproc__pool_abandon(mproc_pool *p, mproc_async *a) {
  pthread_mutex_lock(&p->mu);
  if (!atomic_load(&a->ready))
    for (size_t i = 0; i < a->ntasks; i++)
      tab_drop(p, a->first_id + i);
  cb_unqueue(p, a);
  pthread_mutex_unlock(&p->mu);
}

/* ---- feeders: close waits for them to put their last task ---- */

void mproc__pool_feed_done(mproc_pool *p) {
  if (--p->feeding == 0 && p->state == POOL_CLOSED)
    mproc__ring_close(p->ctx.tasks);
}

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
    mproc__pool_feed_done(p);
  }
  pthread_mutex_unlock(&p->mu);
}

void mproc__pool_cut_feeders(mproc_pool *p) {
  pthread_mutex_lock(&p->mu);
  if (p->imap_feeders) {
    p->feeding -= p->imap_feeders - 1;
    p->imap_feeders = 0;
    p->feed_epoch++;
    mproc__pool_feed_done(p); /* the last of them */
  }
  pthread_mutex_unlock(&p->mu);
}

int mproc__pool_apply_new(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                          const async_cb *cb, const async_hook *hook, const unsigned *epoch,
                          mproc_async **r) {
  mproc_async *a = calloc(1, sizeof *a);
  if (!a)
    return MPROC_ENOMEM;
  if (cb)
    a->cb = *cb;
  if (hook)
    a->hook = *hook;
  int rc = mproc__pool_submit_apply(p, a, fn, arg, len, epoch);
  if (rc) {
    free(a);
    return rc;
  }
  *r = a;
  return 0;
}

int mproc__pool_apply_hooked(mproc_pool *p, mproc_task_fn fn, const void *arg, size_t len,
                             void (*on_ready)(mproc_async *, void *), void *hook_arg,
                             unsigned epoch, mproc_async **r) {
  async_hook hook = {on_ready, hook_arg};
  return mproc__pool_apply_new(p, fn, arg, len, NULL, &hook, &epoch, r);
}

mproc_async *mproc__pool_sentinel_new(mproc_pool *p) {
  mproc_async *a = calloc(1, sizeof *a);
  if (a) {
    a->pool = p;
    a->view = atomic_load_explicit(&p->view, memory_order_relaxed);
  }
  return a;
}

/* Never registered and never with callbacks or a result: nothing else to let go. */
void mproc__pool_sentinel_free(mproc_async *a) { free(a); }

void mproc__pool_sentinel_set(mproc_async *a, bool ready) { atomic_store(&a->ready, ready); }

void mproc__pool_lock(mproc_pool *p) { pthread_mutex_lock(&p->mu); }
void mproc__pool_unlock(mproc_pool *p) { pthread_mutex_unlock(&p->mu); }
int mproc__pool_nworkers(const mproc_pool *p) { return p->ctx.nworkers; }

int mproc__pool_owned(mproc_pool *p) { return mproc__pool_check(p); }

int mproc__pool_check_fn(mproc_pool *p, const void *fn) {
  return mproc__pool_fn_check(&p->ctx, fn);
}

int mproc__async_view(const mproc_async *a, const void **res, size_t *len, const char **err) {
  *res = a->r.res;
  *len = a->r.len;
  *err = a->err;
  return a->rc;
}

/* ---- callbacks ---- */

/* Set while this thread runs callbacks: an mproc call inside a callback runs no others, so
 * they run one after another, in the order queued. */
static _Thread_local bool in_callbacks;

bool mproc__pool_in_callbacks(void) { return in_callbacks; }

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
    if (!(p->cb_head = a->cb.next))
      p->cb_tail = NULL;
    atomic_fetch_sub(&p->cb_queued, 1);
    a->cb.queued = false;
    unsigned ev = a->cb.events;
    a->cb.events = 0;
    size_t done = a->cb.done, total = a->cb.total;
    bool ok = a->rc == 0;
    mproc_async_opts cb = a->cb.opts;
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

