/*
 * map and map_async, the caller's side: how the input is cut into chunks (chunk_plan), how a
 * chunk crosses (by address when in/out are shared with the workers already, through the
 * stage when big, else through the rings), the window of chunks a map keeps in flight, and
 * what comes back. Under p->mu unless said otherwise.
 */
#define _GNU_SOURCE
#include "pool/pool_collect.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>

/* What a map keeps in flight, and a chunk's most. Small, so the stage's blocks are reused
 * soon: a process's first touch of a shared page costs ~6 us on a VM with shadow page
 * tables even when the page is populated (it is the host's fault, not the guest's), so a
 * map that ran through 16 MiB of fresh stage paid ~50 ms where one that recycles 2 MiB
 * pays ~5 ms; warm, 256 KiB chunks measure as fast as 1 MiB ones (bench: pool_map_*). */
#define MAP_WINDOW_BYTES ((size_t)2 << 20)
#define CHUNK_BYTES_MAX ((size_t)256 << 10)
#define ZERO_COPY_MIN_BYTES ((size_t)256 << 10)
/* Chunks smaller than this go through the rings: the stage saves the worker two copies, and
 * small ones cost it little. */
#define STAGE_MIN_BYTES ((size_t)64 << 10)

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

/* A map's AsyncResult: the part every AsyncResult has first (it is what the caller holds),
 * then the map's own. One task per chunk; results are routed here (map_route). */
typedef struct map_async {
  mproc_async a;
  char *out;
  size_t out_size, nchunks, left, fail_index;
  chunk_plan plan;
  /* Chunks are put a window at a time while feed is set (map: the caller waits inside the
   * call anyway), so a big map never holds more than the window in the rings. */
  const map_args *feed;
  size_t sent, window;
} map_async;

static map_async *map_of(mproc_async *a) { return (map_async *)a; }

/* A chunk that crossed through the stage (pool_stage.c): its block, and where the worker
 * writes its output there (NULL: the output is not staged). */
typedef struct map_staged {
  staged st;
  char *blk;
  size_t blk_len;
  char *blk_out;
} map_staged;

static const mproc__route map_route;

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
    size_t cap = CHUNK_BYTES_MAX / elem ? CHUNK_BYTES_MAX / elem : 1; /* big elements: one a chunk */
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
static void stage_release(mproc_pool *p, map_staged *st, bool worker_done) {
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

/* data: the chunk's output (data_len bytes), from the result message or the stage. */
static void chunk_result(map_async *m, const mproc__result_hdr *h, const char *msg,
                         const char *data, uint64_t data_len) {
  size_t start, count;
  chunk_span(&m->plan, (size_t)(h->id - m->a.first_id), &start, &count);
  if (data_len == (uint64_t)count * m->out_size && data_len)
    memcpy(m->out + start * m->out_size, data, data_len);
  m->a.cb.done += count;
  if (h->status != 0) {
    size_t idx = start + (h->fail_index < count ? (size_t)h->fail_index : 0);
    if (idx < m->fail_index) {
      m->fail_index = idx;
      m->a.rc = h->status;
      free(m->a.err);
      m->a.err = mproc__pool_copy_msg(msg, h->msg_len);
    }
  }
}

static void feed_locked(mproc_pool *p, map_async *m);

/* A chunk's result (a NULL: an orphan, whose block only is settled). */
static void map_result(mproc_pool *p, mproc_async *a, staged *s, const mproc__result_hdr *h,
                       const char *text, const char *data) {
  map_staged *st = (map_staged *)s;
  /* 0 and MPROC_ETASK come from the worker once it has run the whole chunk; the others
   * from the supervisor, for a worker that died (whose task may be taken again). */
  bool worker_done = h->status == 0 || h->status == MPROC_ETASK;
  if (!a) {
    stage_release(p, st, worker_done);
    return;
  }
  map_async *m = map_of(a);
  uint64_t data_len = h->data_len;
  if (st && st->blk_out) {
    data = st->blk_out;
    data_len = worker_done ? st->blk_len - (size_t)(st->blk_out - st->blk) : 0;
  }
  chunk_result(m, h, text, data, data_len);
  stage_release(p, st, worker_done);
  m->left--;
  if (a->cb.opts.progress)
    mproc__pool_cb_queue(p, a, EV_PROGRESS);
  if (m->feed)
    feed_locked(p, m);
  if (m->left == 0 && !atomic_load(&a->ready))
    mproc__pool_finish(p, a, a->rc);
}

/* A map keeps the first failure (its lowest index): the pool's going fails it only if
 * nothing failed before, at index 0. */
static void map_cancel(mproc_pool *p, mproc_async *a, int rc, const char *msg) {
  map_async *m = map_of(a);
  if (a->rc == 0) {
    free(a->err);
    a->err = mproc__pool_copy_msg(msg, strlen(msg));
    a->rc = rc;
    m->fail_index = 0;
  }
  if (m->feed) {
    m->feed = NULL;
    p->feeding--; /* the task ring is closed already: nothing waits for this */
  }
}

/* Its worker may be alive yet: the block is set aside. */
static void map_drop(mproc_pool *p, staged *s) {
  map_staged *st = (map_staged *)s;
  mproc__stage_retire(&p->stage, st->blk_len);
  free(st);
}

static const mproc__route map_route = {map_result, map_cancel, map_drop};

/* A big chunk whose input or output is not shared already gets a block of the stage: its
 * input copied there, its output written there by the worker. NULL: through the rings. */
static map_staged *stage_chunk(mproc_pool *p, const map_args *x, size_t start, size_t count,
                               mproc__task_hdr *h) {
  size_t in_bytes = x->flags & MPROC__MAP_IN_SHARED ? 0 : count * x->in_size;
  size_t out_bytes = x->flags & MPROC__MAP_OUT_SHARED ? 0 : count * x->out_size;
  size_t out_off = (in_bytes + 63) & ~(size_t)63;
  if (in_bytes + out_bytes < STAGE_MIN_BYTES)
    return NULL;
  if (p->stage.retired && !p->stage.live && workers_idle(p))
    mproc__stage_reset(&p->stage);
  map_staged *st = malloc(sizeof *st);
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
  h->stage_end = blk + mproc__page_round(out_off + out_bytes);
  h->stage_gen = p->stage.gen;
  *st = (map_staged){.st.route = &map_route, .blk = blk, .blk_len = out_off + out_bytes,
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
  map_staged *st = stage_chunk(p, x, start, count, &h);
  size_t bytes = h.flags & MPROC__MAP_IN_SHARED ? 0 : count * x->in_size;
  struct iovec iov[4] = {{&h, sizeof h},
                         {(void *)(x->in + start * x->in_size), bytes},
                         {(void *)mproc__pool_zeros, ((bytes + 15) & ~(size_t)15) - bytes},
                         {(void *)(x->args ? x->args : mproc__pool_zeros), x->args_len}};
  int rc = mproc__pool_put_task(p, iov, 4);
  if (st && rc == 0) {
    entry *e = &p->tab[mproc__tab_find(p, id)];
    st->st.a = (mproc_async *)e->v;
    e->v = (uintptr_t)st | 1;
  } else if (st) {
    mproc__stage_free(&p->stage, st->blk, st->blk_len); /* no worker saw it */
    free(st);
  }
  return rc;
}

static int check_map(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                     void *out, size_t out_size, const mproc_map_opts *o) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  if (!fn || in_size == 0 || (n && !in) || (n && out_size && !out))
    return MPROC_EINVAL;
  if (o && !o->args && o->args_len)
    return MPROC_EINVAL;
  if ((rc = mproc__pool_fn_check(&p->ctx, (const void *)fn)) != 0)
    return rc;
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

/* m puts no more chunks. Under p->mu. */
static void feed_stop(mproc_pool *p, map_async *m) {
  m->feed = NULL;
  mproc__pool_feed_done(p);
}

/* Puts the next chunks of a windowed map as earlier ones come back. Under p->mu. A chunk
 * that cannot be put fails with the rest of the unsent ones. */
static void feed_locked(mproc_pool *p, map_async *m) {
  while (m->sent < m->nchunks && m->sent - (m->nchunks - m->left) < m->window) {
    uint64_t id = m->a.first_id + m->sent;
    int rc = p->state == POOL_TERMINATED ? MPROC_ECANCELLED : mproc__tab_reserve(p, 1);
    if (rc == 0) {
      mproc__tab_insert(p, id, &m->a);
      if ((rc = put_chunk(p, id, m->sent, (void *)m->feed)) != 0)
        mproc__tab_delete(p, id);
    }
    if (rc) {
      size_t idx, count;
      chunk_span(&m->plan, m->sent, &idx, &count);
      if (idx < m->fail_index) {
        m->fail_index = idx;
        m->a.rc = rc;
      }
      m->left -= m->nchunks - m->sent;
      m->sent = m->nchunks;
      break;
    }
    m->sent++;
  }
  if (m->sent == m->nchunks && m->feed)
    feed_stop(p, m);
}

/* Whether [addr, addr + len) is memory the workers share at the same address: a shared
 * mapping of the caller that the supervisor (whose memory every worker copies) maps at the
 * same place, from the same object. Worth the look only for big data. */
static bool shared_with_workers(mproc_pool *p, const void *addr, size_t len) {
  if (p->engine)
    return true; /* it runs in this process: it sends and receives from the caller's memory */
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
static int map_submit(mproc_pool *p, map_args *x, const mproc_map_opts *o, map_async *m,
                      bool windowed) {
  int rc = check_map(p, x->fn, x->in, x->n, x->in_size, m->out, x->out_size, o);
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
  m->a.is_map = true;
  m->a.route = &map_route;
  m->a.cb.total = n;
  m->out_size = out_size;
  m->plan = x->plan;
  m->nchunks = plan_count(&x->plan);
  m->left = m->nchunks;
  m->fail_index = SIZE_MAX;
  m->window = windowed ? feed_window(p, x) : m->nchunks;
  m->sent = m->window < m->nchunks ? m->window : m->nchunks;
  pthread_mutex_lock(&p->mu);
  if (n == 0) {
    rc = p->state == POOL_RUNNING ? 0 : MPROC_ECLOSED;
    if (rc == 0) {
      m->a.pool = p; /* for its callbacks' queue, which finish joins */
      mproc__pool_finish(p, &m->a, 0);
    }
  } else {
    rc = mproc__pool_submit(p, &m->a, m->nchunks, m->sent, put_chunk, x, NULL);
    if (rc == 0 && m->sent < m->nchunks) {
      m->feed = x;
      p->feeding++;
    }
  }
  pthread_mutex_unlock(&p->mu);
  /* A fresh output array would fault a page at a time as results are copied in: mapped in
   * with one look (and one populate if any is missing) while the first chunks run. */
  if (rc == 0 && n && out_size && !(x->flags & MPROC__MAP_OUT_SHARED))
    mproc__prefault_write(m->out, n * out_size);
  return rc;
}

int mproc_pool_map_async(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                         size_t in_size, void *out, size_t out_size, const mproc_map_opts *opts,
                         mproc_async **r) {
  return mproc_pool_map_async_ex(p, fn, in, n, in_size, out, out_size, opts, NULL, r);
}

int mproc_pool_map(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                   void *out, size_t out_size, const mproc_map_opts *opts) {
  return mproc_pool_map_ex(p, fn, in, n, in_size, out, out_size, opts, NULL);
}

int mproc_pool_map_async_ex(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n,
                            size_t in_size, void *out, size_t out_size,
                            const mproc_map_opts *opts, const mproc_async_opts *cb,
                            mproc_async **r) {
  if (!r)
    return MPROC_EINVAL;
  *r = NULL;
  map_async *m = calloc(1, sizeof *m);
  if (!m)
    return MPROC_ENOMEM;
  if (cb)
    m->a.cb.opts = *cb;
  map_args x = {.fn = fn, .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n};
  m->out = out;
  int rc = map_submit(p, &x, opts, m, false);
  if (rc) {
    free(m);
    return rc;
  }
  *r = &m->a;
  return 0;
}

int mproc_pool_map_ex(mproc_pool *p, mproc_map_fn fn, const void *in, size_t n, size_t in_size,
                      void *out, size_t out_size, const mproc_map_opts *opts,
                      const mproc_async_opts *cb) {
  map_async m = {.out = out};
  if (cb)
    m.a.cb.opts = *cb;
  map_args x = {.fn = fn, .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n};
  int rc = map_submit(p, &x, opts, &m, true);
  if (rc)
    return rc;
  if (n == 0) {
    mproc__pool_run_callbacks(p); /* queued by the immediate finish */
    mproc__pool_abandon(p, &m.a);
    return 0;
  }
  if ((rc = mproc__pool_await(&m.a, MPROC__NEVER)) == 0)
    mproc__pool_run_callbacks(p); /* m lives in this frame: its callbacks run before the return */
  /* x lives in this frame too: a wait cut short (Ctrl-C) stops the feeding first. */
  pthread_mutex_lock(&p->mu);
  if (m.feed)
    feed_stop(p, &m);
  pthread_mutex_unlock(&p->mu);
  mproc__pool_abandon(p, &m.a);
  free(m.a.err);
  return rc ? rc : m.a.rc;
}

size_t mproc_async_fail_index(mproc_async *r) {
  if (!r || !r->is_map || !atomic_load(&r->ready) || r->rc == 0)
    return SIZE_MAX;
  return map_of(r)->fail_index;
}

/* ---- test hooks (testing.h) ---- */

void mproc__pool_stage_usage(mproc_pool *p, size_t *live, size_t *retired, size_t *committed) {
  pthread_mutex_lock(&p->mu);
  *live = p->stage.live;
  *retired = p->stage.retired;
  *committed = p->stage.committed;
  pthread_mutex_unlock(&p->mu);
}
