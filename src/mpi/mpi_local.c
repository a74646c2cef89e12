/*
 * Rank 0's own workers. The pool is made before MPI_Init (mpi_pool.c), so its supervisor and
 * workers come from a process without MPI, as on a serving rank. Each task the master gives
 * rank "0" becomes an apply_async / map_async on that pool, whose supervisor contains
 * crashes and enforces task_timeout as anywhere; each result becomes the same record a
 * serving rank would send (mpis_put_result), which the master posts on the engine pool's
 * result ring by the path MPI results take. No thread: the local pool's callbacks run in
 * mpil_poll, inside the master's pump.
 */
#define _GNU_SOURCE
#include "mpi/mpi_local.h"
#include "mpi/mpi_serve.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct ljob {
  uint64_t id;
  mproc_async *a;
  bool map;
  char *in;  /* our copy of a chunk's input that was not in the caller's array, or NULL */
  char *out; /* our buffer for a chunk's output not shared with the caller, or NULL */
  size_t out_bytes;
  struct mpil_local *l;
  struct ljob *next; /* on the done list */
} ljob;

struct mpil_local {
  mproc_pool *pool;
  ljob *done; /* finished, not yet a record (callbacks may not free their own async) */
  mpiw_batch out;
  size_t running;
};

static void on_done(mproc_async *a, void *ctx) {
  (void)a;
  ljob *j = ctx;
  j->next = j->l->done;
  j->l->done = j;
}

static void job_free(ljob *j) {
  mproc_async_free(j->a);
  free(j->in);
  free(j->out);
  free(j);
}

mpil_local *mpil_new(mproc_pool *pool) {
  mpil_local *l = calloc(1, sizeof *l);
  if (l)
    l->pool = pool;
  return l;
}

static int submit_map(ljob *j, const mproc__task_hdr *h, const char *body,
                      const mproc_async_opts *cb) {
  size_t in_bytes = h->count * h->in_size;
  bool in_shared = h->flags & MPROC__MAP_IN_SHARED;
  const char *in = in_shared ? h->in_ptr : body;
  const char *args = in_shared ? body : body + ((in_bytes + 15) & ~(size_t)15);
  if (!in_shared) { /* the ring's copy is gone after the take: map_async reads it till done */
    if (!(j->in = malloc(in_bytes ? in_bytes : 1)))
      return MPROC_ENOMEM;
    memcpy(j->in, in, in_bytes);
    in = j->in;
  }
  char *out = h->out_ptr;
  if (!(h->flags & MPROC__MAP_OUT_SHARED)) {
    j->out_bytes = h->count * h->out_size;
    if (!(out = j->out = malloc(j->out_bytes ? j->out_bytes : 1)))
      return MPROC_ENOMEM;
  }
  mproc_map_opts mo = {.args = h->args_len ? args : NULL, .args_len = h->args_len};
  return mproc_pool_map_async_ex(j->l->pool, h->map, in, h->count, h->in_size, out,
                                 h->out_size, &mo, cb, &j->a);
}

int mpil_submit(mpil_local *l, const mproc__task_hdr *h, const char *body, size_t len) {
  ljob *j = calloc(1, sizeof *j);
  if (!j)
    return MPROC_ENOMEM;
  *j = (ljob){.id = h->id, .map = h->kind == MPROC__TASK_MAP, .l = l};
  mproc_async_opts cb = {.callback = on_done, .error_callback = on_done, .ctx = j};
  /* The argument is copied by apply_async: the ring's bytes may go after the take. */
  int rc = j->map ? submit_map(j, h, body, &cb)
                  : mproc_pool_apply_async_ex(l->pool, h->task, body, len, &cb, &j->a);
  if (rc) {
    job_free(j);
    return rc;
  }
  l->running++;
  return 0;
}

int mpil_poll(mpil_local *l, double timeout) {
  int rc = mproc_pool_poll(l->pool, l->running ? timeout : 0);
  if (rc == -EINTR)
    return rc;
  int n = 0;
  while (l->done) {
    ljob *j = l->done;
    l->done = j->next;
    mpis_put_result(&l->out, j->id, j->a, j->map, j->out, j->out_bytes);
    job_free(j);
    l->running--;
    n++;
  }
  return n;
}

size_t mpil_running(const mpil_local *l) { return l->running; }

char *mpil_results(mpil_local *l, size_t *len) {
  if (!l->out.records)
    return NULL;
  char *buf = l->out.buf;
  *len = l->out.len;
  free(l->out.seg);
  l->out = (mpiw_batch){0}; /* the records are copies: buf alone holds the message */
  return buf;
}

void mpil_terminate(mpil_local *l) {
  mproc_pool_terminate(l->pool); /* unfinished jobs' error callbacks run here */
  while (l->done) {
    ljob *j = l->done;
    l->done = j->next;
    job_free(j);
  }
  l->running = 0;
  mpiw_batch_free(&l->out);
}

void mpil_free(mpil_local *l) {
  if (!l)
    return;
  mpil_terminate(l);
  mproc_pool_free(l->pool);
  free(l);
}
