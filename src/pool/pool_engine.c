/* The engine's side of the rings (pool_engine.h): tasks taken as a worker takes them,
 * results posted as a worker posts them, neither ever blocking (the engine runs in the
 * caller's own calls, which must not wait on themselves). */
#define _GNU_SOURCE
#include "pool/pool_engine.h"

#include <string.h>
#include <sys/uio.h>

int mproc__engine_take(mproc__pool_ctx *ctx,
                       void (*fn)(void *arg, const mproc__task_hdr *h, const char *body,
                                  size_t len),
                       void *arg) {
  mproc__ring_msg m;
  int rc = mproc__ring_read_begin(ctx->tasks, &m, 0);
  if (rc == -ETIMEDOUT)
    return 0;
  if (rc < 0)
    return rc == -EPROTO ? MPROC_ECLOSED : rc;
  mproc__task_hdr h;
  if (m.len >= sizeof h) {
    memcpy(&h, m.data, sizeof h);
    fn(arg, &h, (const char *)m.data + sizeof h, m.len - sizeof h);
  }
  mproc__ring_read_end(ctx->tasks, &m, true);
  return 1;
}

int mproc__engine_post(mproc__pool_ctx *ctx, const mproc__result_hdr *h, const char *msg,
                       const void *data) {
  struct iovec iov[3] = {{(void *)h, sizeof *h},
                         {(void *)(h->msg_len ? msg : ""), h->msg_len},
                         {(void *)(h->data_len ? data : ""), h->data_len}};
  int rc = mproc__ring_putv(ctx->results, iov, 3, 0);
  if (rc == 0)
    mproc__pool_notify(ctx);
  return rc;
}
