/*
 * A pool's supervisor born by spawn or by the forkserver: what of the caller's
 * mproc__pool_ctx crosses in the boot message, and the supervisor's side that rebuilds it.
 * The shared memory (control block, the rings, the stage, the function table) is mapped
 * at the caller's addresses, so every pointer into it stays valid; the eventfds cross as
 * descriptors; the initializer as (object file, offset). The workers fork from the
 * supervisor as always.
 */
#define _GNU_SOURCE
#include "pool/pool.h"
#include "core/start.h"

#include <stdlib.h>
#include <string.h>

static void put_ptr(mproc__msg *m, const void *p) { mproc__msg_put_u64(m, (uintptr_t)p); }
static void *get_ptr(mproc__rd *r) { return (void *)(uintptr_t)mproc__rd_u64(r); }

static void supervisor_boot(int chan, mproc__rd *r) {
  static mproc__pool_ctx c; /* the supervisor's whole life */
  c.sh = get_ptr(r);
  c.sh_len = (size_t)mproc__rd_u64(r);
  c.tasks = mproc__ring_import(r);
  c.results = mproc__ring_import(r);
  c.relay = mproc__ring_import(r);
  c.reg_fd = -1;
  c.reg_sup = mproc__rd_fd(r);
  c.ctl_fd = mproc__rd_fd(r);
  c.notify_fd = mproc__rd_fd(r);
  c.nworkers = (int)mproc__rd_u64(r);
  c.maxtasks = (unsigned)mproc__rd_u64(r);
  c.timeout_ns = (int64_t)mproc__rd_u64(r);
  mproc__rd_get(r, &c.timeout_s, sizeof c.timeout_s);
  if (mproc__rd_u64(r))
    c.initializer = (int (*)(const void *, size_t))mproc__rd_fn(r);
  c.initargs_len = (size_t)mproc__rd_u64(r);
  const void *ia = mproc__rd_bytes(r, c.initargs_len);
  /* A copy, as under fork: inside the boot message it may be misaligned for the
   * initializer's type. For the supervisor's whole life. */
  c.initargs = ia && c.initargs_len ? malloc(c.initargs_len) : NULL;
  if (c.initargs)
    memcpy(c.initargs, ia, c.initargs_len);
  c.caller = (pid_t)mproc__rd_u64(r);
  c.stage_base = get_ptr(r);
  c.fns = get_ptr(r);
  c.parent = getppid();
  int lrc = mproc__limits_get(r, &c.lim);
  int rc = r->bad || !c.tasks || !c.results || !c.relay ? -EPROTO : lrc;
  if (rc == 0 && c.initargs_len && !c.initargs)
    rc = -ENOMEM;
  mproc__boot_report(chan, rc);
  if (rc)
    _exit(255);
  mproc__pool_supervise(&c);
}

int mproc__pool_start_unforked(mproc__pool_ctx *ctx, mproc_start_method method, pid_t *pid,
                               int *pidfd) {
  mproc__msg m;
  mproc__msg_init(&m);
  mproc__msg_put_mem(&m, ctx->sh);
  mproc__msg_put_mem(&m, ctx->fns);
  if (ctx->stage_base)
    mproc__msg_put_mem(&m, ctx->stage_base);
  put_ptr(&m, ctx->sh);
  mproc__msg_put_u64(&m, ctx->sh_len);
  (void)mproc__ring_export(ctx->tasks, &m);
  (void)mproc__ring_export(ctx->results, &m);
  (void)mproc__ring_export(ctx->relay, &m);
  mproc__msg_put_fd(&m, ctx->reg_sup);
  mproc__msg_put_fd(&m, ctx->ctl_fd);
  mproc__msg_put_fd(&m, ctx->notify_fd);
  mproc__msg_put_u64(&m, (uint64_t)ctx->nworkers);
  mproc__msg_put_u64(&m, ctx->maxtasks);
  mproc__msg_put_u64(&m, (uint64_t)ctx->timeout_ns);
  mproc__msg_put(&m, &ctx->timeout_s, sizeof ctx->timeout_s);
  mproc__msg_put_u64(&m, ctx->initializer != NULL);
  if (ctx->initializer)
    mproc__msg_put_fn(&m, (const void *)ctx->initializer);
  mproc__msg_put_u64(&m, ctx->initargs_len);
  mproc__msg_put(&m, ctx->initargs, ctx->initargs_len);
  mproc__msg_put_u64(&m, (uint64_t)ctx->caller);
  put_ptr(&m, ctx->stage_base);
  put_ptr(&m, ctx->fns);
  mproc__limits_put(&m, &ctx->lim);
  mproc__child c;
  int rc = mproc__child_start(method, supervisor_boot, &m, &c);
  mproc__msg_free(&m);
  if (rc)
    return rc;
  /* The chan would bring a forkserver child's exit status; the pidfd tells enough. */
  mproc__close(c.chan);
  *pid = c.pid;
  *pidfd = c.pidfd;
  return 0;
}
