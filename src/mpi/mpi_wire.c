/* Batches and their sends (mpi_wire.h). */
#define _GNU_SOURCE
#include "mpi/mpi_wire.h"

#include <mproc.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPIN_NS 50000
#define FIRST_SLEEP_NS 10000

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return 0;
  size_t c = *cap ? *cap : 16;
  while (c < need)
    c *= 2;
  void *q = realloc(*p, c * elem);
  if (!q)
    return MPROC_ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

static int add_seg(mpiw_batch *b, const char *ext, size_t off, size_t len) {
  if (!ext && b->nseg && !b->seg[b->nseg - 1].ext) {
    b->seg[b->nseg - 1].len += len; /* one piece of buf as long as nothing comes between */
    return 0;
  }
  int rc = grow((void **)&b->seg, &b->segcap, b->nseg + 1, sizeof *b->seg);
  if (rc)
    return rc;
  b->seg[b->nseg++] = (mpiw_seg){ext, off, len};
  return 0;
}

int mpiw_copy(mpiw_batch *b, const void *p, size_t len) {
  if (!len)
    return 0;
  size_t cap = b->cap;
  int rc = grow((void **)&b->buf, &cap, b->len + len, 1);
  if (rc)
    return rc;
  b->cap = cap;
  if ((rc = add_seg(b, NULL, b->len, len)) != 0)
    return rc;
  if (p)
    memcpy(b->buf + b->len, p, len);
  else
    memset(b->buf + b->len, 0, len);
  b->len += len;
  b->bytes += len;
  return 0;
}

int mpiw_ref(mpiw_batch *b, const void *p, size_t len) {
  if (!len)
    return 0;
  int rc = add_seg(b, p, 0, len);
  if (rc == 0)
    b->bytes += len;
  return rc;
}

int mpiw_pad(mpiw_batch *b) { return mpiw_copy(b, NULL, mpiw_pad16(b->bytes) - b->bytes); }

void mpiw_batch_free(mpiw_batch *b) {
  free(b->buf);
  free(b->seg);
  *b = (mpiw_batch){0};
}

/* The message as one datatype over absolute addresses (sent from MPI_BOTTOM). */
static int make_type(const mpiw_batch *b, MPI_Datatype *t) {
  int *lens = malloc(b->nseg * sizeof *lens);
  MPI_Aint *at = malloc(b->nseg * sizeof *at);
  int rc = lens && at ? 0 : MPROC_ENOMEM;
  for (size_t i = 0; rc == 0 && i < b->nseg; i++) {
    if (b->seg[i].len > INT_MAX)
      rc = MPROC_ETOOBIG;
    lens[i] = (int)b->seg[i].len;
    MPI_Get_address(b->seg[i].ext ? b->seg[i].ext : b->buf + b->seg[i].off, &at[i]);
  }
  if (rc == 0 && (MPI_Type_create_hindexed((int)b->nseg, lens, at, MPI_BYTE, t) != MPI_SUCCESS ||
                  MPI_Type_commit(t) != MPI_SUCCESS))
    rc = MPROC_ENOMEM;
  free(lens);
  free(at);
  return rc;
}

int mpiw_send_batch(mpiw_sends *s, mpiw_batch *b, int dest, int tag) {
  int rc = grow((void **)&s->s, &s->cap, s->n + 1, sizeof *s->s);
  if (rc)
    return rc;
  mpiw_send *x = &s->s[s->n];
  x->buf = b->buf;
  x->type = MPI_DATATYPE_NULL;
  if (b->nseg <= 1 && (b->nseg == 0 || !b->seg[0].ext)) {
    if (b->len > INT_MAX)
      return MPROC_ETOOBIG;
    rc = MPI_Isend(b->buf, (int)b->len, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &x->req);
  } else {
    if ((rc = make_type(b, &x->type)) != 0)
      return rc;
    rc = MPI_Isend(MPI_BOTTOM, 1, x->type, dest, tag, MPI_COMM_WORLD, &x->req);
  }
  if (rc != MPI_SUCCESS) {
    if (x->type != MPI_DATATYPE_NULL)
      MPI_Type_free(&x->type);
    return MPROC_ECLOSED;
  }
  s->n++;
  free(b->seg);
  *b = (mpiw_batch){0};
  return 0;
}

static void settle(mpiw_send *x) {
  free(x->buf);
  if (x->type != MPI_DATATYPE_NULL)
    MPI_Type_free(&x->type);
}

bool mpiw_test(mpiw_sends *s) {
  bool any = false;
  for (size_t i = 0; i < s->n;) {
    int done = 0;
    MPI_Test(&s->s[i].req, &done, MPI_STATUS_IGNORE);
    if (!done) {
      i++;
      continue;
    }
    settle(&s->s[i]);
    s->s[i] = s->s[--s->n];
    any = true;
  }
  return any;
}

void mpiw_wait_all(mpiw_sends *s) {
  for (size_t i = 0; i < s->n; i++) {
    MPI_Wait(&s->s[i].req, MPI_STATUS_IGNORE);
    settle(&s->s[i]);
  }
  free(s->s);
  *s = (mpiw_sends){0};
}

int mpiw_recv(const MPI_Status *st, char **buf, size_t *len) {
  int n = 0;
  MPI_Get_count(st, MPI_BYTE, &n);
  char *b = malloc(n > 0 ? (size_t)n : 1);
  if (!b)
    return MPROC_ENOMEM;
  MPI_Recv(b, n, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  *buf = b;
  *len = (size_t)n;
  return 0;
}

int64_t mpiw_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int64_t mpiw_idle_ns(mpiw_backoff *b, int64_t now, int64_t max_ns) {
  if (!b->idle_since) {
    b->idle_since = now;
    b->sleep_ns = FIRST_SLEEP_NS;
  }
  if (now - b->idle_since < SPIN_NS)
    return 0;
  int64_t s = b->sleep_ns;
  b->sleep_ns = s * 2 > 1000000 ? 1000000 : s * 2;
  return s < max_ns ? s : max_ns;
}
