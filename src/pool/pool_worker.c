/* A pool worker: takes tasks off the task ring, runs them, posts results. */
#define _GNU_SOURCE
#include "pool/pool.h"
#include "pool/pool_result.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Where a task writes its result. Buffers are kept from task to task. */
struct mproc_result {
  char *buf;
  size_t len, cap;
  char *msg;
  size_t msg_len;
  bool has_msg;
};

#define WORKER_EXIT_INIT 3 /* the initializer failed */
#define WORKER_EXIT_LOST 4 /* the rings are unusable */

static int reserve(char **buf, size_t *cap, size_t len) {
  if (len <= *cap && *buf)
    return 0;
  if (len > (size_t)PTRDIFF_MAX)
    return MPROC_ENOMEM;
  size_t c = *cap ? *cap : 256;
  while (c < len)
    c = c > (size_t)PTRDIFF_MAX / 2 ? len : c * 2;
  char *b = malloc(c);
  if (!b)
    return MPROC_ENOMEM;
  free(*buf);
  *buf = b;
  *cap = c;
  return 0;
}

void *mproc_result_alloc(mproc_result *res, size_t len) {
  if (!res)
    return NULL;
  if (reserve(&res->buf, &res->cap, len) < 0)
    return NULL;
  res->len = len;
  return res->buf;
}

int mproc_result_set(mproc_result *res, const void *buf, size_t len) {
  if (!res || (!buf && len))
    return MPROC_EINVAL;
  void *dst = mproc_result_alloc(res, len);
  if (!dst)
    return MPROC_ENOMEM;
  if (len)
    memcpy(dst, buf, len);
  return 0;
}

static void set_msgv(mproc_result *res, const char *fmt, va_list ap) {
  char small[256];
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  size_t len = n < 0 ? 0 : (size_t)n;
  if (len > MPROC__POOL_MSG_MAX)
    len = MPROC__POOL_MSG_MAX;
  char *m = malloc(len + 1);
  if (m) {
    if (len < sizeof small)
      memcpy(m, small, len + 1);
    else
      vsnprintf(m, len + 1, fmt, ap2);
    free(res->msg);
    res->msg = m;
    res->msg_len = len;
  }
  res->has_msg = true;
  va_end(ap2);
}

int mproc_result_fail(mproc_result *res, const char *fmt, ...) {
  if (!res)
    return MPROC_EINVAL;
  if (!fmt)
    fmt = "task failed";
  va_list ap;
  va_start(ap, fmt);
  set_msgv(res, fmt, ap);
  va_end(ap);
  return MPROC_ETASK;
}

static void set_msg(mproc_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_msg(mproc_result *res, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_msgv(res, fmt, ap);
  va_end(ap);
}

/* Puts a result where its submitter will find it: the result ring for the caller's tasks,
 * the relay ring for a client's (with a poke when the supervisor, who moves it on, sleeps). */
static int put_result(mproc__pool_ctx *ctx, uint64_t id, const struct iovec *iov, int n) {
  bool client = mproc__id_ticket(id) != 0;
  int rc = mproc__ring_putv(client ? ctx->relay : ctx->results, iov, n, MPROC__NEVER);
  if (rc == MPROC_ENOMEM)
    return rc;
  if (!client)
    mproc__pool_notify(ctx);
  else if (atomic_load(&ctx->sh->relay_armed) && atomic_exchange(&ctx->sh->relay_armed, 0))
    (void)mproc__eventfd_signal(ctx->ctl_fd);
  return rc;
}

int mproc__pool_post_failure(mproc__pool_ctx *ctx, uint64_t id, int status, uint64_t fail_index,
                             const char *msg) {
  mproc__result_hdr h = {.id = id, .status = status, .fail_index = fail_index};
  size_t len = msg ? strlen(msg) : 0;
  h.msg_len = (uint32_t)(len > MPROC__POOL_MSG_MAX ? MPROC__POOL_MSG_MAX : len);
  struct iovec iov[2] = {{&h, sizeof h}, {(void *)(msg ? msg : ""), h.msg_len}};
  return put_result(ctx, id, iov, 2);
}

/* Posts the task's outcome: data on success (or always, for map chunks). */
static void post(mproc__pool_ctx *ctx, uint64_t id, int status, uint64_t fail_index,
                 mproc_result *res, bool with_data) {
  mproc__result_hdr h = {.id = id, .status = status, .fail_index = fail_index};
  h.msg_len = res->has_msg && res->msg ? (uint32_t)res->msg_len : 0;
  h.data_len = with_data ? res->len : 0;
  struct iovec iov[3] = {{&h, sizeof h}, {h.msg_len ? res->msg : (char *)&h, h.msg_len},
                         {h.data_len ? res->buf : (char *)&h, h.data_len}};
  if (put_result(ctx, id, iov, 3) == MPROC_ENOMEM)
    mproc__pool_post_failure(ctx, id, MPROC_ETASK, fail_index,
                             "the task's result did not fit in shared memory");
}

static void run_apply(mproc__pool_ctx *ctx, const mproc__task_hdr *h, const char *arg,
                      size_t len, mproc_result *res) {
  mproc_task_fn fn = (mproc_task_fn)mproc__pool_fn_local((const void *)h->task);
  if (!fn) {
    mproc__pool_post_failure(ctx, h->id, MPROC_ETASK, UINT64_MAX,
                             "the task function's object file could not be opened in the worker");
    return;
  }
  int rc = fn(arg, len, res);
  if (rc != 0 && !res->has_msg)
    set_msg(res, "the task function returned %d", rc);
  post(ctx, h->id, rc ? MPROC_ETASK : 0, UINT64_MAX, res, rc == 0);
}

/* Maps the stage in up to a staged chunk's end, in one call: a worker touching the stage's
 * pages one by one takes a fault per page (~10 us each on a VM, against ~0.5 us a page
 * here). [stage_base, mapped_to) is what this worker has mapped since the stage last gave
 * pages back (the generation changes then): everything below a block's end is committed. */
static void map_stage_in(mproc__pool_ctx *ctx, const mproc__task_hdr *h) {
  static const char *mapped_to;
  static uint64_t mapped_gen;
  if (!mapped_to || h->stage_gen != mapped_gen) {
    mapped_to = ctx->stage_base;
    mapped_gen = h->stage_gen;
  }
  if (h->stage_end > mapped_to) {
    (void)mproc__shared_commit((void *)mapped_to, (size_t)(h->stage_end - mapped_to));
    mapped_to = h->stage_end;
  }
}

static void run_map(mproc__pool_ctx *ctx, mproc__pool_slot *slot, const mproc__task_hdr *h,
                    const char *in, mproc_result *res) {
  if (h->stage_end)
    map_stage_in(ctx, h);
  size_t count = h->count, isz = h->in_size, osz = h->out_size;
  bool in_shared = h->flags & MPROC__MAP_IN_SHARED, out_shared = h->flags & MPROC__MAP_OUT_SHARED;
  size_t args_off = in_shared ? 0 : (count * isz + 15) & ~(size_t)15;
  const void *args = h->args_len ? in + args_off : NULL;
  if (in_shared)
    in = h->in_ptr;
  char *out = mproc_result_alloc(res, out_shared ? 0 : count * osz);
  if (out && out_shared)
    out = h->out_ptr;
  if (!out) {
    mproc__pool_post_failure(ctx, h->id, MPROC_ETASK, 0,
                             "the worker ran out of memory for the chunk's results");
    return;
  }
  mproc_map_fn fn = (mproc_map_fn)mproc__pool_fn_local((const void *)h->map);
  if (!fn) {
    mproc__pool_post_failure(ctx, h->id, MPROC_ETASK, 0,
                             "the map function's object file could not be opened in the worker");
    return;
  }
  uint64_t fail = UINT64_MAX;
  int frc = 0;
  bool timed = ctx->timeout_ns > 0;
  for (size_t i = 0; i < count; i++) {
    /* task_timeout applies to each element: the supervisor reads the latest start. */
    if (timed)
      atomic_store_explicit(&slot->start_ns, mproc__now_ns(), memory_order_relaxed);
    int rc = fn(in + i * isz, out + i * osz, args);
    if (MPROC__UNLIKELY(rc != 0) && fail == UINT64_MAX) {
      fail = i;
      frc = rc;
    }
    atomic_store_explicit(&slot->progress, i + 1, memory_order_relaxed);
  }
  if (fail != UINT64_MAX)
    set_msg(res, "the map function returned %d for element %llu", frc,
            (unsigned long long)(h->start + fail));
  post(ctx, h->id, fail == UINT64_MAX ? 0 : MPROC_ETASK, fail, res, !out_shared);
}

/* Runs the initializer and reports the start. */
static void start(mproc__pool_ctx *ctx, mproc__pool_slot *slot) {
  mproc__pool_fn_setup(ctx);
  if (ctx->initializer && ctx->initializer(ctx->initargs, ctx->initargs_len) != 0) {
    atomic_store(&slot->state, MPROC__SLOT_INIT_FAILED);
    _exit(WORKER_EXIT_INIT);
  }
  /* After the initializer (it may load what the sandbox would deny), before any task. */
  if (mproc__limits_apply(&ctx->lim, &slot->denied_nr) != 0) {
    atomic_store(&slot->state, MPROC__SLOT_INIT_FAILED);
    _exit(WORKER_EXIT_INIT);
  }
  atomic_store(&slot->state, MPROC__SLOT_READY);
  mproc__pool_shared *sh = ctx->sh;
  if (atomic_load(&sh->boot) == MPROC__BOOT_WAIT &&
      atomic_fetch_add(&sh->ready, 1) + 1 == (uint32_t)ctx->nworkers) {
    atomic_store(&sh->boot, MPROC__BOOT_OK);
    mproc__futex_wake(&sh->boot, INT32_MAX);
  }
}

/* Takes one task: copies it out and records it in the slot inside the same read, so the
 * slot names the task from the instant it leaves the ring. Returns the kind (0: retry). */
static uint32_t take(mproc__pool_ctx *ctx, mproc__pool_slot *slot, mproc__task_hdr *h,
                     char **in, size_t *in_cap, size_t *len) {
  mproc__ring_msg m;
  int rc = mproc__ring_read_begin(ctx->tasks, &m, MPROC__NEVER);
  if (rc == MPROC_ECLOSED || rc == -EPROTO) {
    /* The pool was closed and the ring is drained: done, not to be replaced. (Or the ring
     * was scribbled over: a replacement would find it so too; the pool ends instead.) */
    atomic_store(&slot->state, MPROC__SLOT_STOPPED);
    _exit(0);
  }
  if (rc < 0)
    _exit(WORKER_EXIT_LOST);
  if (m.len < sizeof *h) {
    mproc__ring_read_end(ctx->tasks, &m, true);
    return 0;
  }
  memcpy(h, m.data, sizeof *h);
  *len = m.len - sizeof *h;
  if (reserve(in, in_cap, *len) < 0) {
    mproc__ring_read_end(ctx->tasks, &m, true);
    mproc__pool_post_failure(ctx, h->id, MPROC_ETASK, 0,
                             "the worker ran out of memory for the task's argument");
    return 0;
  }
  memcpy(*in, (const char *)m.data + sizeof *h, *len);
  atomic_store_explicit(&slot->progress, 0, memory_order_relaxed);
  if (ctx->timeout_ns > 0)
    atomic_store_explicit(&slot->start_ns, mproc__now_ns(), memory_order_relaxed);
  atomic_store_explicit(&slot->task_id, h->id, memory_order_release);
  mproc__ring_read_end(ctx->tasks, &m, true);
  return h->kind;
}

_Noreturn void mproc__pool_worker(mproc__pool_ctx *ctx, int slot_i, const sigset_t *orig_mask) {
  mproc__pool_slot *slot = &ctx->sh->slots[slot_i];
  mproc__set_signal_mask(orig_mask);
  start(ctx, slot);
  mproc_result res = {0};
  char *in = NULL;
  size_t in_cap = 0;
  unsigned done = 0;
  for (;;) {
    mproc__task_hdr h;
    size_t len = 0;
    uint32_t kind = take(ctx, slot, &h, &in, &in_cap, &len);
    if (kind == 0)
      continue;
    if (kind == MPROC__TASK_RETIRE) {
      atomic_store(&slot->state, MPROC__SLOT_SHRUNK);
      _exit(0);
    }
    if (ctx->timeout_ns > 0) {
      /* Recorded the task, then look at the supervisor's deadline (it stores its deadline,
       * then looks at the slots): one of us sees the other. */
      atomic_thread_fence(memory_order_seq_cst);
      if (atomic_load(&slot->start_ns) + ctx->timeout_ns < atomic_load(&ctx->sh->sup_deadline))
        mproc__eventfd_signal(ctx->ctl_fd);
    }
    mproc__result_reset(&res);
    mproc__pool_limits_task_begin(&ctx->lim);
    if (kind == MPROC__TASK_APPLY)
      run_apply(ctx, &h, in, len, &res);
    else if (kind == MPROC__TASK_MAP)
      run_map(ctx, slot, &h, in, &res);
    atomic_store_explicit(&slot->task_id, 0, memory_order_release);
    if ((ctx->maxtasks && ++done >= ctx->maxtasks) || mproc__pool_limits_over_rss(&ctx->lim)) {
      atomic_store(&slot->state, MPROC__SLOT_RETIRING);
      _exit(0);
    }
  }
}

/* ---- results of one's own (imap chunks, pool_imap.c) ---- */

mproc_result *mproc__result_new(void) { return calloc(1, sizeof(mproc_result)); }

void mproc__result_reset(mproc_result *r) {
  r->len = 0;
  r->has_msg = false;
  r->msg_len = 0;
}

void mproc__result_view(const mproc_result *r, const void **data, size_t *len,
                        const char **msg, size_t *msg_len) {
  *data = r->buf ? r->buf : "";
  *len = r->len;
  *msg = r->has_msg && r->msg ? r->msg : NULL;
  *msg_len = *msg ? r->msg_len : 0;
}

void mproc__pool_notify(mproc__pool_ctx *ctx) {
  /* After the result's put (seq_cst): a caller that armed before looking at the ring either
   * saw the result or is woken here. Only the first poster after an arming pays the write. */
  if (atomic_load(&ctx->sh->notify_armed) && atomic_exchange(&ctx->sh->notify_armed, 0))
    mproc__eventfd_signal(ctx->notify_fd);
}
