/*
 * A serving rank: each TASKS batch from rank 0 becomes apply_async / map_async calls on
 * this rank's local pool (so its supervisor contains crashes and enforces task_timeout as
 * on one machine); each finished task's result joins the RESULTS batch sent back as soon
 * as nothing else is ready, so results stream back as they finish. The wait is on both:
 * the local pool's results (mproc_pool_poll, which runs the callbacks that collect them)
 * in slices that grow while nothing moves, with MPI probed between slices.
 */
#define _GNU_SOURCE
#include "mpi/mpi_serve.h"
#include "mpi/mpi_wire.h"
#include "pool/pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A TASKS message, kept while a map chunk of it runs (map_async reads its input until done). */
typedef struct inbuf {
  char *data;
  size_t refs;
} inbuf;

typedef struct job {
  uint64_t id;
  mproc_async *a;
  bool map;
  char *out;
  size_t out_bytes;
  inbuf *in;
  struct server *s;
  struct job *next; /* on the done list */
} job;

typedef struct server {
  mproc_pool *pool;
  void *fns[MPIW_FNS];
  job *done; /* finished, their results not yet in the batch (newest first) */
  mpiw_batch out;
  mpiw_sends sends;
  size_t running;
} server;

static void on_done(mproc_async *a, void *ctx) {
  (void)a;
  job *j = ctx;
  j->next = j->s->done;
  j->s->done = j;
}

static void inbuf_drop(inbuf *b) {
  if (b && --b->refs == 0) {
    free(b->data);
    free(b);
  }
}

int mpis_put_result(mpiw_batch *b, uint64_t id, mproc_async *a, bool map, const void *out,
                    size_t out_len) {
  mproc__result_hdr h = {.id = id, .fail_index = UINT64_MAX};
  void *res = NULL;
  size_t len = 0;
  h.status = mproc_async_get(a, map ? NULL : &res, map ? NULL : &len, 0);
  const char *msg = h.status ? mproc_async_error(a) : NULL;
  if (map) {
    size_t fi = mproc_async_fail_index(a);
    h.fail_index = fi == SIZE_MAX ? UINT64_MAX : fi;
  }
  const void *data = map ? out : res;
  h.msg_len = msg ? (uint32_t)strlen(msg) : 0;
  h.data_len = map ? out_len : len;
  int rc = mpiw_copy(b, &h, sizeof h);
  if (rc == 0 && (rc = mpiw_copy(b, msg, h.msg_len)) == 0 &&
      (rc = mpiw_copy(b, data, h.data_len)) == 0)
    rc = mpiw_pad(b);
  b->records++;
  free(res);
  return rc;
}

/* The job's result record into the batch, and the job gone. */
static void finish_job(server *s, job *j) {
  mpis_put_result(&s->out, j->id, j->a, j->map, j->out, j->out_bytes);
  free(j->out);
  mproc_async_free(j->a);
  inbuf_drop(j->in);
  free(j);
  s->running--;
}

/* A task that could not be submitted fails alone, at once. */
static void fail_now(server *s, uint64_t id, int rc) {
  const char *msg = mproc_strerror(rc);
  mproc__result_hdr h = {.id = id, .status = rc < 0 && rc != MPROC_ETASK ? MPROC_ETASK : rc,
                         .fail_index = 0, .msg_len = (uint32_t)strlen(msg)};
  if (mpiw_copy(&s->out, &h, sizeof h) == 0 && mpiw_copy(&s->out, msg, h.msg_len) == 0)
    mpiw_pad(&s->out);
  s->out.records++;
}

static int submit(server *s, const mpiw_task *t, char *body, inbuf *in) {
  void *fn = t->fn < MPIW_FNS ? s->fns[t->fn] : NULL;
  if (!fn)
    return MPROC_EINVAL;
  job *j = calloc(1, sizeof *j);
  if (!j)
    return MPROC_ENOMEM;
  j->id = t->id;
  j->map = t->kind == MPIW_MAP;
  j->s = s;
  mproc_async_opts cb = {.callback = on_done, .error_callback = on_done, .ctx = j};
  int rc;
  if (!j->map) {
    if (t->inner) {
      void *inner = t->inner <= MPIW_FNS ? s->fns[t->inner - 1] : NULL;
      if (!inner || (uint64_t)t->inner_off + sizeof inner > t->body_len) {
        free(j);
        return MPROC_EINVAL;
      }
      memcpy(body + t->inner_off, &inner, sizeof inner); /* our copy of the batch */
    }
    rc = mproc_pool_apply_async_ex(s->pool, (mproc_task_fn)fn, body, t->body_len, &cb, &j->a);
  } else {
    j->out_bytes = t->count * t->out_size;
    j->out = malloc(j->out_bytes ? j->out_bytes : 1);
    mproc_map_opts mo = {.args = t->args_len ? body + t->count * t->in_size : NULL,
                         .args_len = t->args_len};
    rc = j->out ? mproc_pool_map_async_ex(s->pool, (mproc_map_fn)fn, body, t->count,
                                          t->in_size, j->out, t->out_size, &mo, &cb, &j->a)
                : MPROC_ENOMEM;
    if (rc == 0) {
      j->in = in;
      in->refs++;
    }
  }
  if (rc) {
    free(j->out);
    free(j);
    return rc;
  }
  s->running++;
  return 0;
}

static void define_fn(server *s, const mpiw_task *t, const char *body) {
  uint64_t off;
  memcpy(&off, body, 8);
  void *fn = NULL;
  if (t->fn < MPIW_FNS && t->body_len > 8 && body[t->body_len - 1] == '\0' &&
      mproc__fn_resolve(body + 8, off, &fn) == 0)
    s->fns[t->fn] = fn;
}

static void run_batch(server *s, char *data, size_t len) {
  inbuf *in = malloc(sizeof *in);
  if (!in) {
    free(data);
    return; /* rank 0 never hears of these tasks: a map or apply waits for ever; noted */
  }
  *in = (inbuf){data, 1};
  for (size_t off = 0; off + sizeof(mpiw_task) <= len;) {
    mpiw_task t;
    memcpy(&t, data + off, sizeof t);
    char *body = data + off + sizeof t;
    if (t.body_len > len - off - sizeof t)
      break;
    if (t.kind == MPIW_FN) {
      define_fn(s, &t, body);
    } else {
      int rc = submit(s, &t, body, in);
      if (rc)
        fail_now(s, t.id, rc);
    }
    off += mpiw_pad16(sizeof t + t.body_len);
  }
  inbuf_drop(in);
}

/* Receives rank 0's messages that have come: 1 on STOP, 0 otherwise; *moved when any came. */
static int take_messages(server *s, bool *moved) {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
    if (!flag)
      return 0;
    *moved = true;
    char *buf;
    size_t len;
    if (mpiw_recv(&st, &buf, &len) != 0)
      return 0; /* no memory now: it stays queued, taken at the next look */
    if (st.MPI_TAG == MPIW_STOP) {
      free(buf);
      return 1;
    }
    if (st.MPI_TAG == MPIW_TASKS)
      run_batch(s, buf, len);
    else
      free(buf);
  }
}

static void send_results(server *s) {
  while (s->done) {
    job *j = s->done;
    s->done = j->next;
    finish_job(s, j);
  }
  if (s->out.records)
    mpiw_send_batch(&s->sends, &s->out, 0, MPIW_RESULTS);
}

int mpis_serve(mproc_pool *pool) {
  server s = {.pool = pool};
  mpiw_backoff wait = {0};
  for (;;) {
    bool moved = false;
    if (take_messages(&s, &moved))
      break;
    int64_t now = mpiw_now_ns();
    int64_t nap = moved ? 0 : mpiw_idle_ns(&wait, now, 1000000);
    /* Waits on the local pool's results for the slice (they end it at once). */
    int n = mproc_pool_poll(pool, s.running ? (double)nap / 1e9 : 0);
    if (n > 0 || s.done)
      moved = true;
    send_results(&s);
    if (mpiw_test(&s.sends))
      moved = true;
    if (moved)
      mpiw_moved(&wait);
    else if (!s.running && nap > 0)
      mproc_pool_poll(pool, (double)nap / 1e9); /* nothing of ours runs: just the slice */
  }
  mproc_pool_terminate(pool); /* unfinished jobs' error callbacks run here */
  while (s.done) {
    job *j = s.done;
    s.done = j->next;
    mproc_async_free(j->a);
    free(j->out);
    inbuf_drop(j->in);
    free(j);
  }
  mpiw_batch_free(&s.out);
  MPI_Send(NULL, 0, MPI_BYTE, 0, MPIW_STOPPED, MPI_COMM_WORLD);
  mpiw_wait_all(&s.sends);
  return 0;
}
