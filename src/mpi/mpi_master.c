/*
 * Rank 0's engine. It takes tasks off the pool's task ring while some rank has credit
 * (work is handed out as ranks finish, not split up front), packs each rank's share into
 * one batch (a map chunk's input sent from the caller's array), and posts the results that
 * come back on the result ring (a map chunk's output copied straight to the caller's
 * array). Everything happens in pump, inside the caller's pool calls; the lock only keeps
 * two of the caller's threads from driving MPI at once (MPI_THREAD_SERIALIZED).
 */
#define _GNU_SOURCE
#include "mpi/mpi_master.h"
#include "mpi/mpi_local.h"
#include "mpi/mpi_wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A batch of small tasks goes once it has this many, or at the end of a pump's take. */
#define CREDIT_MIN 32
#define CREDIT_PER_WORKER 16
/* A big map chunk goes alone and is not copied. */
#define REF_MIN_BYTES ((size_t)64 << 10)

typedef struct rank_st {
  int workers;
  int credit, out; /* units: an apply task is 1, a map chunk chunk_cost() */
  mpiw_batch b;
  bool known[MPIW_FNS];
} rank_st;

typedef struct inflight {
  uint64_t id; /* 0: free */
  char *out;   /* the caller's array for a chunk's output, or NULL */
  uint64_t out_bytes;
  int rank, cost;
} inflight;

struct mpim_master {
  mproc__engine e; /* first: the pool's engine pointer is ours */
  pthread_mutex_t mu;
  int nranks;
  int first; /* 0 when rank 0 has workers of its own (local), else 1 */
  rank_st *r;
  mpil_local *local;
  const void *fns[MPIW_FNS];
  size_t nfns;
  inflight *fl; /* open addressing by id */
  size_t fl_cap, fl_len;
  mpiw_sends sends;
  /* A results message not all posted yet (the result ring was full). */
  char *pend;
  size_t pend_len, pend_off;
  mpiw_backoff wait;
  bool drained; /* the task ring is closed and empty */
  bool stopped, finalize;
  int take_rank; /* the rank the task being taken goes to */
  int take_rc;
};

static inflight *fl_find(mpim_master *m, uint64_t id) {
  for (size_t i = id & (m->fl_cap - 1);; i = (i + 1) & (m->fl_cap - 1)) {
    if (m->fl[i].id == id)
      return &m->fl[i];
    if (!m->fl[i].id)
      return NULL;
  }
}

/* Room for every task in flight: the credits bound them, so the table never grows. */
static void fl_put(mpim_master *m, inflight x) {
  size_t i = x.id & (m->fl_cap - 1);
  while (m->fl[i].id)
    i = (i + 1) & (m->fl_cap - 1);
  m->fl[i] = x;
  m->fl_len++;
}

static void fl_del(mpim_master *m, inflight *x) {
  size_t i = (size_t)(x - m->fl);
  m->fl[i].id = 0;
  m->fl_len--;
  /* Backward-shift: the entries after it stay findable. */
  for (size_t j = (i + 1) & (m->fl_cap - 1); m->fl[j].id; j = (j + 1) & (m->fl_cap - 1)) {
    size_t h = m->fl[j].id & (m->fl_cap - 1);
    if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
      m->fl[i] = m->fl[j];
      m->fl[j].id = 0;
      i = j;
    }
  }
}

/* The index of fn, announced to rank r before its first use there. */
static int fn_index(mpim_master *m, rank_st *r, const void *fn, uint32_t *idx) {
  size_t i = 0;
  while (i < m->nfns && m->fns[i] != fn)
    i++;
  if (i == MPIW_FNS)
    return MPROC_ETOOBIG;
  char path[4096];
  uint64_t off = 0;
  if (i == m->nfns || !r->known[i]) {
    if (mproc__fn_locate(fn, path, sizeof path, &off) != 0)
      return MPROC_EINVAL;
    size_t plen = strlen(path) + 1;
    mpiw_task t = {.kind = MPIW_FN, .fn = (uint32_t)i, .body_len = 8 + plen};
    int rc = mpiw_copy(&r->b, &t, sizeof t);
    if (rc == 0)
      rc = mpiw_copy(&r->b, &off, 8);
    if (rc == 0)
      rc = mpiw_copy(&r->b, path, plen);
    if (rc == 0)
      rc = mpiw_pad(&r->b);
    if (rc)
      return rc;
    if (i == m->nfns)
      m->fns[m->nfns++] = fn;
    r->known[i] = true;
  }
  *idx = (uint32_t)i;
  return 0;
}

/* The rank with the most credit left, or -1 when all are full. cost: a map chunk's. */
static int pick_rank(mpim_master *m) {
  int best = -1, room = 0;
  for (int i = m->first; i < m->nranks; i++) {
    int left = m->r[i].credit - m->r[i].out;
    if (left > room) {
      room = left;
      best = i;
    }
  }
  return best;
}

static int encode(mpim_master *m, rank_st *r, const mproc__task_hdr *h, const char *body,
                  size_t len, inflight *x) {
  bool map = h->kind == MPROC__TASK_MAP;
  uint32_t fn;
  int rc = fn_index(m, r, map ? (const void *)h->map : (const void *)h->task, &fn);
  if (rc)
    return rc;
  mpiw_task t = {.kind = map ? MPIW_MAP : MPIW_APPLY, .fn = fn, .id = h->id};
  if (!map) {
    size_t off;
    void *inner = NULL;
    if (mproc__engine_inner_fn(h->task, &off) && off + sizeof inner <= len) {
      memcpy(&inner, body + off, sizeof inner);
      uint32_t ii;
      if ((rc = fn_index(m, r, inner, &ii)) != 0)
        return rc;
      t.inner = ii + 1;
      t.inner_off = (uint32_t)off;
    }
    t.body_len = len;
    if ((rc = mpiw_copy(&r->b, &t, sizeof t)) == 0 && (rc = mpiw_copy(&r->b, body, len)) == 0)
      rc = mpiw_pad(&r->b);
    return rc;
  }
  size_t in_bytes = h->count * h->in_size;
  bool in_shared = h->flags & MPROC__MAP_IN_SHARED;
  const char *in = in_shared ? h->in_ptr : body;
  const char *args = in_shared ? body : body + ((in_bytes + 15) & ~(size_t)15);
  t.in_size = h->in_size;
  t.out_size = h->out_size;
  t.count = h->count;
  t.args_len = h->args_len;
  t.start = h->start;
  t.body_len = in_bytes + h->args_len;
  if ((rc = mpiw_copy(&r->b, &t, sizeof t)) != 0)
    return rc;
  /* From the caller's array itself when it is big: it stays valid until the chunk's result
   * (map's contract), and the send completes before that. */
  rc = in_shared && in_bytes >= REF_MIN_BYTES ? mpiw_ref(&r->b, in, in_bytes)
                                              : mpiw_copy(&r->b, in, in_bytes);
  if (rc == 0)
    rc = mpiw_copy(&r->b, args, h->args_len);
  if (rc == 0)
    rc = mpiw_pad(&r->b);
  if (h->flags & MPROC__MAP_OUT_SHARED) {
    x->out = h->out_ptr;
    x->out_bytes = h->count * h->out_size;
  }
  return rc;
}

/* A task that could not be handed out fails alone, at once. */
static void fail_task(mpim_master *m, uint64_t id, int rc) {
  const char *msg = rc == MPROC_ETOOBIG ? "too many distinct functions for one MPI pool"
                                        : "the task's function or argument could not be sent";
  mproc__result_hdr f = {.id = id, .status = MPROC_ETASK, .fail_index = 0,
                         .msg_len = (uint32_t)strlen(msg)};
  if (mproc__engine_post(m->e.pool, &f, msg, NULL) != 0)
    m->take_rc = rc;
}

/* A map chunk of count elements keeps min(count, workers) of the rank's workers busy (the
 * rank splits it again over them); each of those workers is given MAP_DEPTH such chunks
 * in flight. One or two were too few: on a machine whose cores all run workers, rank 0
 * and a serving rank wait up to a scheduler slice (~3 ms) for a CPU, so a result's
 * replacement came after the rank's next chunk had finished and every rank ran one chunk
 * at a time (a CPU-bound map of 4.7 ms tasks lost ~0.2 ms a task). */
#define MAP_DEPTH 4
static int chunk_cost(const rank_st *r, uint64_t count) {
  uint64_t w = r->workers > 0 ? (uint64_t)r->workers : 1, busy = count < w ? count : w;
  uint64_t c = (uint64_t)r->credit * busy / (w * MAP_DEPTH);
  return c > 1 ? (int)c : 1;
}

/* Inside the task ring's read: the task joins its rank's batch (rank 0: its local pool). */
static void take_one(void *arg, const mproc__task_hdr *h, const char *body, size_t len) {
  mpim_master *m = arg;
  rank_st *r = &m->r[m->take_rank];
  if (h->kind != MPROC__TASK_APPLY && h->kind != MPROC__TASK_MAP)
    return;
  inflight x = {.id = h->id, .rank = m->take_rank, .cost = 1};
  if (h->kind == MPROC__TASK_MAP)
    x.cost = chunk_cost(r, h->count);
  int rc;
  if (m->take_rank == 0) {
    /* The output, when shared, is written in place by the local workers: x.out stays NULL. */
    if ((rc = mpil_submit(m->local, h, body, len)) != 0) {
      fail_task(m, h->id, rc);
      return;
    }
  } else {
    size_t mark_len = r->b.len, mark_seg = r->b.nseg, mark_bytes = r->b.bytes;
    if ((rc = encode(m, r, h, body, len, &x)) != 0) {
      /* Undo the half-written record; the task fails alone. */
      r->b.len = mark_len;
      r->b.nseg = mark_seg;
      r->b.bytes = mark_bytes;
      if (mark_seg && !r->b.seg[mark_seg - 1].ext)
        r->b.seg[mark_seg - 1].len = r->b.len - r->b.seg[mark_seg - 1].off;
      fail_task(m, h->id, rc);
      return;
    }
    r->b.records++;
  }
  r->out += x.cost;
  fl_put(m, x);
}

static int flush(mpim_master *m, int i) {
  rank_st *r = &m->r[i];
  if (i == 0 || !r->b.records)
    return 0;
  return mpiw_send_batch(&m->sends, &r->b, i, MPIW_TASKS);
}

/* Takes tasks while ranks have credit; true when any was taken. */
static bool take_tasks(mpim_master *m) {
  bool any = false;
  while (!m->drained) {
    int i = pick_rank(m);
    if (i < 0)
      break;
    m->take_rank = i;
    int rc = mproc__engine_take(m->e.pool, take_one, m);
    if (rc == MPROC_ECLOSED)
      m->drained = true;
    if (rc != 1)
      break;
    any = true;
    if (m->r[i].b.bytes >= MPIW_BATCH_BYTES)
      flush(m, i);
  }
  for (int i = 1; i < m->nranks; i++)
    flush(m, i);
  return any;
}

/* Posts the records of the pending results message from pend_off; false when the result
 * ring filled up (the rest waits for the collector). */
static bool post_pending(mpim_master *m) {
  while (m->pend && m->pend_off + sizeof(mproc__result_hdr) <= m->pend_len) {
    mproc__result_hdr h;
    const char *rec = m->pend + m->pend_off;
    memcpy(&h, rec, sizeof h);
    size_t total = sizeof h + h.msg_len + h.data_len;
    if (total > m->pend_len - m->pend_off)
      break; /* cannot happen from our ranks: drop the rest */
    inflight *x = fl_find(m, h.id);
    if (x) {
      const char *data = rec + sizeof h + h.msg_len;
      mproc__result_hdr ph = h;
      if (x->out) {
        if (h.data_len == x->out_bytes)
          memcpy(x->out, data, h.data_len);
        ph.data_len = 0;
      }
      int rc = mproc__engine_post(m->e.pool, &ph, rec + sizeof h, data);
      if (rc == -ETIMEDOUT)
        return false;
      m->r[x->rank].out -= x->cost;
      fl_del(m, x);
    }
    m->pend_off += mpiw_pad16(total);
  }
  free(m->pend);
  m->pend = NULL;
  return true;
}

/* Receives the results that have come (rank 0's own workers' first); true when any did. */
static bool take_results(mpim_master *m) {
  bool any = false;
  while (post_pending(m)) {
    if (m->local && (m->pend = mpil_results(m->local, &m->pend_len)) != NULL) {
      m->pend_off = 0;
      any = true;
      continue;
    }
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, MPIW_RESULTS, MPI_COMM_WORLD, &flag, &st);
    if (!flag)
      break;
    if (mpiw_recv(&st, &m->pend, &m->pend_len) != 0)
      break;
    m->pend_off = 0;
    any = true;
  }
  return any;
}

static int pump(mproc__engine *e, int64_t deadline) {
  mpim_master *m = (mpim_master *)e;
  for (;;) {
    pthread_mutex_lock(&m->mu);
    bool moved = false;
    int rc = 0, n = 0;
    if (!m->stopped && m->local) {
      n = mpil_poll(m->local, 0);
      rc = n < 0 ? n : 0;
      moved = n > 0;
    }
    if (!m->stopped) {
      moved |= take_results(m);
      moved |= take_tasks(m);
      mpiw_test(&m->sends);
    }
    if (rc == 0)
      rc = m->take_rc;
    m->take_rc = 0;
    int64_t now = mpiw_now_ns();
    int64_t nap = moved || m->stopped ? 0 : mpiw_idle_ns(&m->wait, now, deadline - now);
    if (moved)
      mpiw_moved(&m->wait);
    /* The nap on rank 0's own workers, when one runs: their results end it at once. It
     * holds the lock: the local pool's callbacks fill what take_results reads. */
    if (nap > 0 && rc == 0 && m->local && mpil_running(m->local)) {
      n = mpil_poll(m->local, (double)nap / 1e9);
      nap = 0;
      rc = n < 0 ? n : 0;
      moved = n > 0; /* its records are posted at the caller's next pump */
    }
    pthread_mutex_unlock(&m->mu);
    if (rc)
      return rc;
    if (moved || m->stopped)
      return 0;
    if (now >= deadline)
      return -ETIMEDOUT;
    if (nap > 0) {
      struct timespec ts = {nap / 1000000000, nap % 1000000000};
      if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
        return -EINTR;
    }
  }
}

static bool idle(mproc__engine *e) {
  mpim_master *m = (mpim_master *)e;
  pthread_mutex_lock(&m->mu);
  bool r = m->stopped || (m->drained && m->fl_len == 0 && !m->pend);
  pthread_mutex_unlock(&m->mu);
  return r;
}

void mpim_stop_ranks(mpim_master *m) {
  pthread_mutex_lock(&m->mu);
  if (!m->stopped) {
    m->stopped = true;
    if (m->local)
      mpil_terminate(m->local);
    for (int i = 1; i < m->nranks; i++)
      MPI_Send(NULL, 0, MPI_BYTE, i, MPIW_STOP, MPI_COMM_WORLD);
    /* Whatever a rank sent before its STOPPED is taken and dropped: no send of theirs stays
     * unmatched (Finalize would wait for it). */
    for (int i = 1; i < m->nranks; i++) {
      for (;;) {
        MPI_Status st;
        char *buf;
        size_t len;
        MPI_Probe(i, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
        if (mpiw_recv(&st, &buf, &len) != 0)
          MPI_Recv(NULL, 0, MPI_BYTE, i, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        else
          free(buf);
        if (st.MPI_TAG == MPIW_STOPPED)
          break;
      }
    }
    mpiw_wait_all(&m->sends);
  }
  pthread_mutex_unlock(&m->mu);
}

static void terminate(mproc__engine *e) { mpim_stop_ranks((mpim_master *)e); }

void mpim_master_free(mpim_master *m) {
  if (!m)
    return;
  mpim_stop_ranks(m);
  mpil_free(m->local);
  for (int i = 0; i < m->nranks; i++)
    mpiw_batch_free(&m->r[i].b);
  free(m->r);
  free(m->fl);
  free(m->pend);
  pthread_mutex_destroy(&m->mu);
  bool fin = m->finalize;
  free(m);
  if (fin)
    MPI_Finalize();
}

static void release(mproc__engine *e) { mpim_master_free((mpim_master *)e); }

mproc__engine *mpim_engine(mpim_master *m) { return &m->e; }

mpim_master *mpim_master_new(int nranks, const int *workers, mproc_pool *local, bool finalize) {
  mpim_master *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->nranks = nranks;
  m->finalize = finalize;
  m->e = (mproc__engine){.pump = pump, .idle = idle, .terminate = terminate, .release = release};
  pthread_mutex_init(&m->mu, NULL);
  const char *env = getenv("MPROC_MPI_CREDIT");
  int fixed = env ? atoi(env) : 0;
  size_t total = 0;
  m->r = calloc((size_t)nranks, sizeof *m->r);
  m->first = local ? 0 : 1;
  for (int i = m->first; m->r && i < nranks; i++) {
    rank_st *r = &m->r[i];
    r->workers = workers[i];
    r->credit = fixed > 0 ? fixed : CREDIT_PER_WORKER * workers[i];
    if (fixed <= 0 && r->credit < CREDIT_MIN)
      r->credit = CREDIT_MIN;
    total += (size_t)r->credit;
  }
  m->fl_cap = 16;
  while (m->fl_cap < 2 * total + 2)
    m->fl_cap *= 2;
  m->fl = calloc(m->fl_cap, sizeof *m->fl);
  if (m->r && m->fl && local && !(m->local = mpil_new(local))) {
    free(m->fl);
    m->fl = NULL;
  }
  if (!m->r || !m->fl) {
    free(m->r);
    free(m->fl);
    free(m);
    return NULL;
  }
  return m;
}
