/*
 * imap / imap_unordered: an iterator over a stream of items, on top of the pool's
 * AsyncResults. Each chunk of items is one apply task whose AsyncResult carries a hook
 * (mproc__pool_apply_hooked): as the chunk's result is collected, in whichever caller thread
 * collects, the hook marks the chunk done (and, unordered, queues it) and sets the iterator's
 * sentinel, which mproc_imap_next waits on. No thread is started.
 *
 * Memory stays bounded: at most nslots chunks exist at once (submitted, running, or done
 * and being read), and an item is pulled from the input only when a slot is free.
 *
 * A chunk of one item runs the user's function directly (its AsyncResult is the item's
 * result); a bigger chunk runs run_chunk in the worker, which calls the function per item
 * and packs the outcomes as records: {int32 status, uint32 msg_len, uint64 data_len}, the
 * message, the data, padding to 8.
 */
#define _GNU_SOURCE
#include "pool/pool.h"
#include "pool/pool_engine.h"
#include "pool/pool_feed.h"
#include "pool/pool_result.h"
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BUFFERSIZE 1024

typedef struct chunk_hdr {
  mproc_task_fn fn;
  uint64_t count; /* then per item: uint64_t len, the bytes, padding to 8 */
} chunk_hdr;

typedef struct rec_hdr {
  int32_t status;
  uint32_t msg_len;
  uint64_t data_len;
} rec_hdr;

typedef struct chunk {
  struct mproc_imap *it;
  mproc_async *a; /* NULL: free, or failed to submit (then rc says why) */
  int rc;
  size_t first, count; /* input index of its first item; items in it */
  bool used, done;     /* done: set by the hook under the pool's mutex */
} chunk;

struct mproc_imap {
  mproc_pool *p;
  mproc_task_fn fn;
  const void *const *items; /* array input */
  const size_t *lens;
  size_t n;
  mproc_imap_gen_fn gen; /* generator input */
  void *gen_ctx;
  bool input_done;
  int input_err; /* reported once, after every item pulled before it */
  bool feeding;  /* registered as a feeder (mproc__pool_feed_begin) */
  unsigned epoch;
  size_t pulled, returned;
  bool unordered;
  size_t chunksize, nslots;
  chunk *slots;
  size_t *fifo; /* ordered: submission order; unordered: completion order (under p->mu) */
  size_t fifo_head, fifo_len;
  size_t *free_slots;
  size_t nfree;
  mproc_async *wake;
  /* the chunk being read */
  chunk *cur;
  size_t cur_item;
  const char *rp, *rend;
  size_t last_index;
  char *err;
  char *buf; /* a chunk being built */
  size_t cap;
  mproc_progress_fn progress;
  void *progress_ctx;
};

/* ---- in the worker ---- */

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }
/* Results are handed out in place: keep each one aligned as malloc's memory is. */
#define ALIGN_RES _Alignof(max_align_t)
static size_t pad_res(size_t n) { return (n + ALIGN_RES - 1) & ~(size_t)(ALIGN_RES - 1); }

static int grow(char **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t c = *cap ? *cap : 4096;
  while (c < need)
    c = c > SIZE_MAX / 2 ? need : c * 2; /* doubling would wrap: take just what is needed */
  char *b = realloc(*buf, c);
  if (!b)
    return MPROC_ENOMEM;
  *buf = b;
  *cap = c;
  return 0;
}

/* Appends one item's outcome to out. */
static int put_record(char **out, size_t *cap, size_t *len, int rc, mproc_result *sub) {
  const void *data;
  const char *msg;
  size_t dlen, mlen;
  mproc__result_view(sub, &data, &dlen, &msg, &mlen);
  char fallback[64];
  if (rc != 0 && !msg) {
    snprintf(fallback, sizeof fallback, "the task function returned %d", rc);
    msg = fallback;
    mlen = strlen(fallback);
  }
  if (rc != 0)
    dlen = 0;
  rec_hdr h = {.status = rc ? MPROC_ETASK : 0, .msg_len = (uint32_t)mlen, .data_len = dlen};
  _Static_assert(sizeof h % ALIGN_RES == 0, "records keep their data aligned");
  size_t need = *len + pad_res(sizeof h + pad_res(mlen) + dlen);
  if (grow(out, cap, need))
    return MPROC_ENOMEM;
  char *w = *out + *len;
  memcpy(w, &h, sizeof h);
  if (mlen)
    memcpy(w + sizeof h, msg, mlen);
  if (dlen)
    memcpy(w + sizeof h + pad_res(mlen), data, dlen);
  *len = need;
  return 0;
}

/* The task of a chunk of several items; its scratch lives as long as the worker. */
static int run_chunk(const void *arg, size_t len, mproc_result *res) {
  static mproc_result *sub;
  static char *out;
  static size_t cap;
  chunk_hdr h;
  if (len < sizeof h)
    return mproc_result_fail(res, "malformed imap chunk");
  memcpy(&h, arg, sizeof h);
  h.fn = (mproc_task_fn)mproc__pool_fn_local((const void *)h.fn);
  if (!h.fn)
    return mproc_result_fail(res, "the task function's object file could not be opened in the worker");
  if (!sub && !(sub = mproc__result_new()))
    return mproc_result_fail(res, "the worker ran out of memory");
  const char *r = (const char *)arg + sizeof h, *end = (const char *)arg + len;
  size_t olen = 0;
  for (uint64_t i = 0; i < h.count; i++) {
    uint64_t ilen;
    if ((size_t)(end - r) < sizeof ilen)
      return mproc_result_fail(res, "malformed imap chunk");
    memcpy(&ilen, r, sizeof ilen);
    r += sizeof ilen;
    if (ilen > (size_t)(end - r))
      return mproc_result_fail(res, "malformed imap chunk");
    mproc__result_reset(sub);
    int rc = h.fn(r, (size_t)ilen, sub);
    r += pad8((size_t)ilen);
    if (put_record(&out, &cap, &olen, rc, sub))
      return mproc_result_fail(res, "the worker ran out of memory for the chunk's results");
  }
  return mproc_result_set(res, out, olen);
}

bool mproc__engine_inner_fn(mproc_task_fn task, size_t *off) {
  if (task != run_chunk)
    return false;
  *off = offsetof(chunk_hdr, fn);
  return true;
}

/* ---- in the caller ---- */

/* Under the pool's mutex, in the collecting thread. */
static void on_ready(mproc_async *a, void *arg) {
  (void)a;
  chunk *c = arg;
  mproc_imap *it = c->it;
  c->done = true;
  if (it->unordered)
    it->fifo[(it->fifo_head + it->fifo_len++) % it->nslots] = (size_t)(c - it->slots);
  mproc__pool_sentinel_set(it->wake, true);
}

static void end_input(mproc_imap *it, int err) {
  it->input_done = true;
  it->input_err = err;
  if (it->feeding) {
    it->feeding = false;
    mproc__pool_feed_end(it->p, it->epoch);
  }
}

/* Pulls one item: 1 and the item, 0 at the end (or on the generator's error). */
static int pull(mproc_imap *it, const void **item, size_t *len) {
  if (it->input_done)
    return 0;
  int rc;
  if (it->gen) {
    rc = it->gen(it->gen_ctx, item, len);
    if (rc == 1 && !*item && *len)
      rc = MPROC_EINVAL;
  } else if (it->pulled < it->n) {
    *item = it->items[it->pulled];
    *len = it->lens ? it->lens[it->pulled] : 0;
    rc = (*item || !*len) ? 1 : MPROC_EINVAL;
  } else {
    rc = 0;
  }
  if (rc != 1) {
    end_input(it, rc < 0 ? rc : 0);
    return 0;
  }
  it->pulled++;
  return 1;
}

static int append_item(mproc_imap *it, size_t *blen, const void *item, size_t len) {
  uint64_t l = len;
  if (grow(&it->buf, &it->cap, *blen + sizeof l + pad8(len)))
    return MPROC_ENOMEM;
  memcpy(it->buf + *blen, &l, sizeof l);
  if (len)
    memcpy(it->buf + *blen + sizeof l, item, len);
  *blen += sizeof l + pad8(len);
  return 0;
}

/* Builds and submits one chunk into slot c: 1 submitted (or failed, to be reported at its
 * items' positions), 0 nothing left to pull. */
static int submit_one(mproc_imap *it, chunk *c) {
  const void *item = NULL;
  size_t len = 0, blen = sizeof(chunk_hdr);
  size_t first = it->pulled, count = 0;
  int rc = 0;
  if (it->chunksize == 1) {
    if (!pull(it, &item, &len))
      return 0;
    count = 1;
  } else {
    rc = grow(&it->buf, &it->cap, blen);
    while (rc == 0 && count < it->chunksize && pull(it, &item, &len)) {
      rc = append_item(it, &blen, item, len);
      count++;
    }
    if (count == 0)
      return 0;
    chunk_hdr h = {.fn = it->fn, .count = count};
    if (rc == 0)
      memcpy(it->buf, &h, sizeof h);
  }
  *c = (chunk){.it = it, .first = first, .count = count, .used = true};
  if (rc == 0) {
    if (it->chunksize == 1)
      rc = mproc__pool_apply_hooked(it->p, it->fn, item, len, on_ready, c, it->epoch, &c->a);
    else
      rc = mproc__pool_apply_hooked(it->p, run_chunk, it->buf, blen, on_ready, c, it->epoch,
                                    &c->a);
  }
  mproc__pool_lock(it->p);
  if (!it->unordered)
    it->fifo[(it->fifo_head + it->fifo_len++) % it->nslots] = (size_t)(c - it->slots);
  if (rc != 0) {
    /* Its items fail with rc (the pool closed: MPROC_ECLOSED), then the iteration ends:
     * nothing more is pulled. */
    c->rc = rc;
    on_ready(NULL, c);
  }
  mproc__pool_unlock(it->p);
  if (rc != 0)
    end_input(it, it->input_err);
  return 1;
}

/* Submits chunks while slots are free and the input lasts. */
static void refill(mproc_imap *it) {
  while (it->nfree > 0 && !it->input_done) {
    chunk *c = &it->slots[it->free_slots[it->nfree - 1]];
    if (!submit_one(it, c))
      break;
    it->nfree--;
  }
}

/* Makes the next done chunk (in the iterator's order) current: true if there was one. */
static bool pick(mproc_imap *it) {
  chunk *c = NULL;
  mproc__pool_lock(it->p);
  if (it->fifo_len > 0) {
    chunk *head = &it->slots[it->fifo[it->fifo_head]];
    if (head->done) {
      c = head;
      it->fifo_head = (it->fifo_head + 1) % it->nslots;
      it->fifo_len--;
    }
  }
  if (!c)
    mproc__pool_sentinel_set(it->wake, false);
  mproc__pool_unlock(it->p);
  if (!c)
    return false;
  it->cur = c;
  it->cur_item = 0;
  it->rp = it->rend = NULL;
  if (c->a && it->chunksize > 1) {
    const void *d;
    size_t l;
    const char *e;
    c->rc = mproc__async_view(c->a, &d, &l, &e);
    it->rp = d ? d : "";
    it->rend = it->rp + (d ? l : 0);
  }
  return true;
}

static void release_cur(mproc_imap *it) {
  chunk *c = it->cur;
  mproc_async_free(c->a); /* ready: nothing left in the pool */
  c->a = NULL;
  c->used = false;
  it->free_slots[it->nfree++] = (size_t)(c - it->slots);
  it->cur = NULL;
}

static void set_err(mproc_imap *it, const char *msg, size_t len) {
  free(it->err);
  it->err = msg ? mproc__pool_copy_msg(msg, len) : NULL;
}

/* The current chunk's next item. */
static int take(mproc_imap *it, const void **res, size_t *len) {
  chunk *c = it->cur;
  const void *data = "";
  size_t dlen = 0;
  int rc;
  if (!c->a) {
    rc = c->rc;
    const char *m = mproc_strerror(rc);
    set_err(it, m, strlen(m));
  } else if (it->chunksize == 1 || c->rc != 0) {
    const char *e;
    const void *d;
    size_t l;
    rc = mproc__async_view(c->a, &d, &l, &e);
    if (rc == 0) {
      data = d;
      dlen = l;
      set_err(it, NULL, 0);
    } else {
      e = e ? e : mproc_strerror(rc);
      set_err(it, e, strlen(e));
    }
  } else {
    rec_hdr h;
    if ((size_t)(it->rend - it->rp) < sizeof h) {
      rc = MPROC_ETASK;
      set_err(it, "malformed imap chunk result", 27);
    } else {
      memcpy(&h, it->rp, sizeof h);
      const char *msg = it->rp + sizeof h;
      rc = h.status;
      data = msg + pad_res(h.msg_len);
      dlen = (size_t)h.data_len;
      set_err(it, rc ? msg : NULL, h.msg_len);
      it->rp += pad_res(sizeof h + pad_res(h.msg_len) + dlen);
    }
  }
  it->last_index = c->first + it->cur_item++;
  it->returned++;
  if (res)
    *res = rc == 0 ? data : NULL;
  if (len)
    *len = rc == 0 ? dlen : 0;
  if (it->progress)
    it->progress(it->returned, it->gen ? 0 : it->n, it->progress_ctx);
  return rc;
}

int mproc_imap_next(mproc_imap *it, const void **res, size_t *len, double timeout) {
  if (!it)
    return MPROC_EINVAL;
  int orc = mproc__pool_owned(it->p);
  if (orc)
    return orc;
  if (res)
    *res = NULL;
  if (len)
    *len = 0;
  int64_t deadline = mproc__deadline(timeout);
  for (;;) {
    if (it->cur && it->cur_item == it->cur->count)
      release_cur(it);
    if (it->cur)
      return take(it, res, len);
    refill(it);
    if (pick(it))
      continue;
    if (it->nfree == it->nslots && it->input_done) {
      int rc = it->input_err ? it->input_err : MPROC_EOF;
      it->input_err = 0;
      set_err(it, NULL, 0);
      return rc;
    }
    int rc = mproc__pool_await(it->wake, deadline);
    if (rc != 0)
      return rc;
  }
}

size_t mproc_imap_index(const mproc_imap *it) { return it ? it->last_index : SIZE_MAX; }

const char *mproc_imap_error(const mproc_imap *it) { return it ? it->err : NULL; }

void mproc_imap_free(mproc_imap *it) {
  if (!it)
    return;
  if (it->feeding)
    mproc__pool_feed_end(it->p, it->epoch);
  /* Each free removes the chunk from the pool under its mutex: its hook cannot run after. */
  for (size_t i = 0; it->slots && i < it->nslots; i++) /* slots NULL: made without memory */
    if (it->slots[i].used)
      mproc_async_free(it->slots[i].a);
  mproc__pool_sentinel_free(it->wake);
  free(it->slots);
  free(it->fifo);
  free(it->free_slots);
  free(it->err);
  free(it->buf);
  free(it);
}

static int imap_new(mproc_pool *p, mproc_task_fn fn, const mproc_imap_opts *o,
                    mproc_imap **out) {
  if (!out)
    return MPROC_EINVAL;
  *out = NULL;
  if (!p || !fn)
    return MPROC_EINVAL;
  int rc = mproc__pool_check_fn(p, (const void *)fn);
  if (rc)
    return rc;
  mproc_imap *it = calloc(1, sizeof *it);
  if (!it)
    return MPROC_ENOMEM;
  it->p = p;
  it->fn = fn;
  it->last_index = SIZE_MAX;
  it->unordered = o && o->unordered;
  it->chunksize = o && o->chunksize ? o->chunksize : 1;
  size_t bs = o && o->buffersize ? o->buffersize : DEFAULT_BUFFERSIZE;
  size_t least = 2 * (size_t)mproc__pool_nworkers(p);
  it->nslots = bs / it->chunksize + (bs % it->chunksize != 0);
  if (it->nslots < 1 || (!(o && o->buffersize) && it->nslots < least))
    it->nslots = it->nslots < 1 ? 1 : least;
  it->progress = o ? o->progress : NULL;
  it->progress_ctx = o ? o->progress_ctx : NULL;
  it->slots = calloc(it->nslots, sizeof *it->slots);
  it->fifo = calloc(it->nslots, sizeof *it->fifo);
  it->free_slots = calloc(it->nslots, sizeof *it->free_slots);
  it->wake = mproc__pool_sentinel_new(p);
  if (!it->slots || !it->fifo || !it->free_slots || !it->wake) {
    mproc_imap_free(it);
    return MPROC_ENOMEM;
  }
  for (size_t i = 0; i < it->nslots; i++)
    it->free_slots[i] = it->nslots - 1 - i;
  it->nfree = it->nslots;
  rc = mproc__pool_feed_begin(p, &it->epoch);
  if (rc) {
    mproc_imap_free(it);
    return rc;
  }
  it->feeding = true;
  *out = it;
  return 0;
}

/* The first submission also checks the pool's state: a closed pool fails here. */
static int imap_start(mproc_imap **out) {
  mproc_imap *it = *out;
  refill(it);
  if (it->nfree < it->nslots && !it->slots[it->fifo[it->fifo_head]].a) {
    chunk *c = &it->slots[it->fifo[it->fifo_head]];
    int rc = c->rc;
    if (rc == MPROC_ECLOSED || rc == MPROC_ESTATE || rc == MPROC_EINVAL) {
      mproc_imap_free(it);
      *out = NULL;
      return rc;
    }
  }
  return 0;
}

/* Where an imap's items come from: an array of n, or a generator. */
typedef struct imap_source {
  const void *const *items;
  const size_t *lens;
  size_t n;
  bool from_gen; /* gen, never NULL, gives the items */
  mproc_imap_gen_fn gen;
  void *gen_ctx;
} imap_source;

static int imap_open(mproc_pool *p, mproc_task_fn fn, const mproc_imap_opts *o,
                     const imap_source *src, mproc_imap **out) {
  bool valid = src->from_gen ? src->gen != NULL : !src->n || (src->items && src->lens);
  if (!valid) {
    if (out)
      *out = NULL;
    return MPROC_EINVAL;
  }
  int rc = imap_new(p, fn, o, out);
  if (rc)
    return rc;
  mproc_imap *it = *out;
  it->items = src->items;
  it->lens = src->lens;
  it->n = src->n;
  it->gen = src->gen;
  it->gen_ctx = src->gen_ctx;
  return imap_start(out);
}

int mproc_pool_imap(mproc_pool *p, mproc_task_fn fn, const void *const *items,
                    const size_t *lens, size_t n, const mproc_imap_opts *opts,
                    mproc_imap **it) {
  imap_source src = {.items = items, .lens = lens, .n = n};
  return imap_open(p, fn, opts, &src, it);
}

int mproc_pool_imap_gen(mproc_pool *p, mproc_task_fn fn, mproc_imap_gen_fn gen, void *gen_ctx,
                        const mproc_imap_opts *opts, mproc_imap **it) {
  imap_source src = {.from_gen = true, .gen = gen, .gen_ctx = gen_ctx};
  return imap_open(p, fn, opts, &src, it);
}
