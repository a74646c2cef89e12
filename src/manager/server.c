/*
 * The Manager's server: one process, a thread per client. The first thread accepts (never
 * a handshake: that runs in the client's own thread, so a half-sent one holds no one but
 * its sender) and reaps the threads of clients that left. Every request runs whole under
 * the server's one mutex, which is what makes each operation atomic; its reply is encoded
 * under it and sent after, so a client that stops reading its replies stalls only its own
 * thread. A blocking call (a Lock's acquire, a Queue's get, an Event's wait...) waits on
 * the server's condition variable for a change, its timeout counted here, watching its
 * client's socket: a client that goes away while it waits is noticed within WATCH_NS. A
 * client that is gone frees every Lock it held, marked dead (the next acquirer gets
 * MPROC_EOWNERDEAD). A malformed request drops that client only.
 */
#define _GNU_SOURCE
#include "manager/server.h"
#include "ipc/conn.h"
#include "ipc/listener.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDSHAKE_LIMIT 2.0 /* a client's handshake holds its own thread at most this long */
#define WATCH_NS 50000000   /* how often a waiting request looks at its client's socket */
/* The longest request taken: a header claiming more (2^62, say) drops its client at once. */
#define REQUEST_LIMIT ((uint64_t)1 << 40)

/* Python's index rules: i < 0 counts from the end; *out in range [0, n) (or [0, n] for
 * insert, which clamps as list.insert does). */
static bool index_of(int64_t i, size_t n, bool insert, size_t *out) {
  if (i < 0)
    i += (int64_t)n;
  if (insert) {
    *out = i < 0 ? 0 : (uint64_t)i > n ? n : (size_t)i;
    return true;
  }
  if (i < 0 || (uint64_t)i >= n)
    return false;
  *out = (size_t)i;
  return true;
}

static void reply_blob(mproc__mgr_msg *r, const mproc__blob *b) {
  r->nf = 1;
  r->f[0] = b->p;
  r->flen[0] = b->len;
}

/* A copy of v[vl) into *scratch as the reply's value: the table's bytes are only ours
 * while its lock is held (a local client may change them right after). */
static int reply_copy(mproc__mgr_msg *r, mproc__blob *scratch, const void *v, size_t vl) {
  if (mproc__blob_set(scratch, v, vl))
    return MPROC_ENOMEM;
  reply_blob(r, scratch);
  return 0;
}

/* The one-key operations, with t's lock held. */
static int dict_op(mproc__table *t, const mproc__mgr_msg *q, mproc__mgr_msg *r,
                   mproc__blob *scratch) {
  const void *k = q->f[0], *v;
  size_t kl = q->flen[0], vl;
  switch (q->op) {
  case MGR_D_SET:
    return q->nf == 2 ? mproc__table_set(t, k, kl, q->f[1], q->flen[1]) : -EPROTO;
  case MGR_D_GET:
    if (mproc__table_find(t, k, kl, &v, &vl))
      return MPROC_ENOTFOUND;
    return reply_copy(r, scratch, v, vl);
  case MGR_D_DEL:
    return mproc__table_remove(t, k, kl);
  case MGR_D_CONTAINS:
    r->num = mproc__table_find(t, k, kl, &v, &vl) == 0;
    return 0;
  case MGR_D_POP: {
    if (mproc__table_find(t, k, kl, &v, &vl))
      return MPROC_ENOTFOUND;
    int rc = reply_copy(r, scratch, v, vl);
    return rc ? rc : mproc__table_remove(t, k, kl);
  }
  case MGR_D_SETDEFAULT:
    if (q->nf != 2)
      return -EPROTO;
    if (mproc__table_find(t, k, kl, &v, &vl) == 0)
      return reply_copy(r, scratch, v, vl);
    if (reply_copy(r, scratch, q->f[1], q->flen[1]))
      return MPROC_ENOMEM;
    return mproc__table_set(t, k, kl, q->f[1], q->flen[1]);
  case MGR_D_ADD: {
    int64_t now = 0;
    int rc = mproc__table_add(t, k, kl, q->num, &now);
    r->num = now;
    return rc;
  }
  }
  return -EPROTO;
}

/* The pairs (or values) of a packed field, checked whole before anything changes, so that
 * a malformed batch changes nothing. */
static int packed_check(const mproc__mgr_msg *q, size_t per) {
  if (q->nf != 1 || q->num < 0)
    return -EPROTO;
  size_t off = 0, n = 0, l;
  const void *p;
  while (off < q->flen[0]) {
    if (mproc__mgr_unpack(q->f[0], q->flen[0], &off, &p, &l))
      return -EPROTO;
    n++;
  }
  return n == (uint64_t)q->num * per ? 0 : -EPROTO;
}

static int dict_update(mproc__table *t, const mproc__mgr_msg *q) {
  int rc = packed_check(q, 2);
  size_t off = 0, kl, vl;
  const void *k, *v;
  while (rc == 0 && off < q->flen[0]) {
    mproc__mgr_unpack(q->f[0], q->flen[0], &off, &k, &kl);
    mproc__mgr_unpack(q->f[0], q->flen[0], &off, &v, &vl);
    rc = mproc__table_set(t, k, kl, v, vl);
  }
  return rc;
}

static int list_extend(mproc__list *l, const mproc__mgr_msg *q) {
  int rc = packed_check(q, 1);
  size_t off = 0, vl;
  const void *v;
  while (rc == 0 && off < q->flen[0]) {
    mproc__mgr_unpack(q->f[0], q->flen[0], &off, &v, &vl);
    rc = mproc__list_insert(l, mproc__list_len(l), v, vl);
  }
  return rc;
}

static bool blob_is(const mproc__blob *b, const void *v, size_t vl) {
  return b->len == vl && (vl == 0 || memcmp(b->p, v, vl) == 0);
}

static int list_remove(mproc__list *l, const mproc__mgr_msg *q) {
  if (q->nf != 1)
    return -EPROTO;
  for (size_t i = 0; i < mproc__list_len(l); i++) {
    mproc__blob *b = mproc__list_at(l, i);
    if (blob_is(b, q->f[0], q->flen[0])) {
      mproc__blob out;
      mproc__list_remove(l, i, &out);
      free(out.p);
      return 0;
    }
  }
  return MPROC_ENOTFOUND;
}

/* Python's slice bound: i < 0 counts from the end, then clamped to [0, n]. */
static size_t slice_bound(int64_t i, size_t n) {
  size_t out;
  index_of(i, n, true, &out);
  return out;
}

static int list_index(mproc__list *l, const mproc__mgr_msg *q, mproc__mgr_msg *r) {
  if (q->nf != 2 || q->flen[1] != 8)
    return -EPROTO;
  size_t n = mproc__list_len(l);
  size_t stop = slice_bound(mproc__mgr_get_i64(q->f[1]), n);
  for (size_t i = slice_bound(q->num, n); i < stop; i++)
    if (blob_is(mproc__list_at(l, i), q->f[0], q->flen[0])) {
      r->num = (int64_t)i;
      return 0;
    }
  return MPROC_ENOTFOUND;
}

static int list_snapshot(mproc__list *l, mproc__mgr_msg *r, mproc__blob *scratch) {
  size_t n = mproc__list_len(l), len = 0;
  for (size_t i = 0; i < n; i++)
    len += 8 + mproc__list_at(l, i)->len;
  unsigned char *w = scratch->p = malloc(len ? len : 1);
  if (!w)
    return MPROC_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    mproc__blob *b = mproc__list_at(l, i);
    mproc_bytes one = {b->p, b->len};
    mproc__mgr_pack(&one, 1, w);
    w += 8 + b->len;
  }
  scratch->len = len;
  reply_blob(r, scratch);
  r->num = (int64_t)n;
  return 0;
}

/* The whole-list calls: clear, index, count, reverse, sort, the snapshot. */
static int list_whole(mproc__list *l, const mproc__mgr_msg *q, mproc__mgr_msg *r,
                    mproc__blob *scratch) {
  switch (q->op) {
  case MGR_L_LEN:
    r->num = (int64_t)mproc__list_len(l);
    return 0;
  case MGR_L_CLEAR:
    mproc__list_clear(l);
    return 0;
  case MGR_L_INDEX:
    return list_index(l, q, r);
  case MGR_L_COUNT:
    if (q->nf != 1)
      return -EPROTO;
    for (size_t i = 0; i < mproc__list_len(l); i++)
      r->num += blob_is(mproc__list_at(l, i), q->f[0], q->flen[0]);
    return 0;
  case MGR_L_REVERSE:
    mproc__list_reverse(l);
    return 0;
  case MGR_L_SORT:
    return mproc__list_sort(l, q->num != 0);
  case MGR_L_ITEMS:
    return list_snapshot(l, r, scratch);
  }
  return -EPROTO;
}

static int list_op(mproc__list *l, const mproc__mgr_msg *q, mproc__mgr_msg *r,
                   mproc__blob *scratch) {
  size_t n = mproc__list_len(l), i;
  switch (q->op) {
  case MGR_L_APPEND:
    return q->nf == 1 ? mproc__list_insert(l, n, q->f[0], q->flen[0]) : -EPROTO;
  case MGR_L_INSERT:
    index_of(q->num, n, true, &i);
    return q->nf == 1 ? mproc__list_insert(l, i, q->f[0], q->flen[0]) : -EPROTO;
  case MGR_L_GET:
    if (!index_of(q->num, n, false, &i))
      return MPROC_ENOTFOUND;
    reply_blob(r, mproc__list_at(l, i));
    return 0;
  case MGR_L_SET: {
    if (q->nf != 1)
      return -EPROTO;
    if (!index_of(q->num, n, false, &i))
      return MPROC_ENOTFOUND;
    mproc__blob b;
    if (mproc__blob_set(&b, q->f[0], q->flen[0]))
      return MPROC_ENOMEM;
    free(mproc__list_at(l, i)->p);
    *mproc__list_at(l, i) = b;
    return 0;
  }
  case MGR_L_POP:
    if (!index_of(q->num, n, false, &i))
      return MPROC_ENOTFOUND;
    mproc__list_remove(l, i, scratch);
    reply_blob(r, scratch);
    return 0;
  case MGR_L_EXTEND:
    return list_extend(l, q);
  case MGR_L_REMOVE:
    return list_remove(l, q);
  }
  return list_whole(l, q, r, scratch);
}

/* The keys, values, or keys and values alternating (what: MGR_SNAP_*), oldest first,
 * packed as proto.h says into *scratch, their count in r->num. */
static int dict_snapshot(mproc__table *t, int what, mproc__mgr_msg *r, mproc__blob *scratch) {
  size_t size = 0, n = 0, end = mproc__table_end(t), kl, vl;
  const void *k, *v;
  for (size_t i = 0; i < end; i++)
    if (mproc__table_at(t, i, &k, &kl, &v, &vl) == 0)
      size += (what & MGR_SNAP_KEYS ? 8 + kl : 0) + (what & MGR_SNAP_VALUES ? 8 + vl : 0);
  unsigned char *w = scratch->p = malloc(size ? size : 1);
  if (!w)
    return MPROC_ENOMEM;
  for (size_t i = 0; i < end; i++) {
    if (mproc__table_at(t, i, &k, &kl, &v, &vl))
      continue;
    mproc_bytes kv[2] = {{k, kl}, {v, vl}};
    const mproc_bytes *from = what & MGR_SNAP_KEYS ? kv : kv + 1;
    size_t per = what == (MGR_SNAP_KEYS | MGR_SNAP_VALUES) ? 2 : 1;
    mproc__mgr_pack(from, per, w);
    w += mproc__mgr_packed_size(from, per);
    n++;
  }
  scratch->len = size;
  reply_blob(r, scratch);
  r->num = (int64_t)n;
  return 0;
}

/* Python's popitem: the newest pair, packed (key, value), removed. */
static int dict_popitem(mproc__table *t, mproc__mgr_msg *r, mproc__blob *scratch) {
  const void *k, *v;
  size_t kl, vl;
  for (size_t i = mproc__table_end(t); i-- > 0;)
    if (mproc__table_at(t, i, &k, &kl, &v, &vl) == 0) {
      mproc_bytes kv[2] = {{k, kl}, {v, vl}};
      size_t len = mproc__mgr_packed_size(kv, 2);
      /* The reply first: out of memory, the pair stays. */
      if (!(scratch->p = malloc(len)))
        return MPROC_ENOMEM;
      mproc__mgr_pack(kv, 2, scratch->p);
      scratch->len = len;
      reply_blob(r, scratch);
      r->num = 1;
      return mproc__table_remove(t, k, kl);
    }
  return MPROC_ENOTFOUND;
}

static int dict_locked(mproc__table *t, const mproc__mgr_msg *q, mproc__mgr_msg *r,
                       mproc__blob *scratch) {
  switch (q->op) {
  case MGR_D_LEN:
    r->num = (int64_t)mproc__table_len(t);
    return 0;
  case MGR_D_CLEAR:
    return mproc__table_clear(t);
  case MGR_D_UPDATE:
    return dict_update(t, q);
  case MGR_D_KEYS:
    return dict_snapshot(t, MGR_SNAP_KEYS, r, scratch);
  case MGR_D_VALUES:
    return dict_snapshot(t, MGR_SNAP_VALUES, r, scratch);
  case MGR_D_ITEMS:
    return dict_snapshot(t, MGR_SNAP_KEYS | MGR_SNAP_VALUES, r, scratch);
  case MGR_D_POPITEM:
    return dict_popitem(t, r, scratch);
  }
  return q->nf >= 1 ? dict_op(t, q, r, scratch) : -EPROTO;
}

static int dict_request(mproc__store *s, const mproc__mgr_msg *q, mproc__mgr_msg *r,
                        mproc__blob *scratch) {
  mproc__table *t = mproc__store_get(s, q->id, MGR_K_DICT);
  if (!t)
    return MPROC_EINVAL;
  if (q->op == MGR_D_SHM)
    return 0; /* the server sends the descriptors after the reply */
  int rc = mproc__table_lock(t);
  if (rc)
    return rc;
  rc = dict_locked(t, q, r, scratch);
  mproc__table_unlock(t);
  return rc;
}

static bool is_dict_op(int op) {
  return (op >= MGR_D_SET && op <= MGR_D_UPDATE) || op == MGR_D_VALUES ||
         op == MGR_D_POPITEM || op == MGR_D_SHM;
}

static bool is_list_op(int op) {
  return (op >= MGR_L_APPEND && op <= MGR_L_REMOVE) || (op >= MGR_L_CLEAR && op <= MGR_L_ITEMS);
}

int mproc__mgr_handle(mproc__store *s, const mproc__mgr_waiter *w, const mproc__mgr_msg *q,
                      mproc__mgr_msg *r, mproc__blob *scratch) {
  memset(r, 0, sizeof *r);
  int rc;
  if (q->op == MGR_SHUTDOWN)
    return 1;
  if (q->op == MGR_OPEN_DICT || q->op == MGR_OPEN_LIST) {
    rc = q->nf == 1 ? mproc__store_open(s, q->f[0], q->flen[0], q->op == MGR_OPEN_LIST, 0, NULL, 0)
                    : -EPROTO;
    r->num = rc;
  } else if (q->op == MGR_OPEN) {
    rc = q->nf >= 1 ? mproc__store_open(s, q->f[0], q->flen[0], q->id, q->num,
                                        q->nf == 2 ? q->f[1] : NULL, q->nf == 2 ? q->flen[1] : 0)
                    : -EPROTO;
    r->num = rc;
  } else if (is_dict_op(q->op)) {
    rc = dict_request(s, q, r, scratch);
  } else if (is_list_op(q->op)) {
    mproc__list *l = mproc__store_get(s, q->id, MGR_K_LIST);
    rc = l ? list_op(l, q, r, scratch) : MPROC_EINVAL;
  } else if (q->op >= MGR_V_GET) {
    rc = mproc__mgr_sync(s, w, q, r, scratch);
  } else {
    rc = -EPROTO;
  }
  r->id = rc < 0 ? rc : 0;
  return 0;
}

/* ---- the threads ---- */

typedef struct server server;

typedef struct client {
  server *sv;
  int fd;        /* until admitted */
  mproc_conn *c; /* set under mu once the handshake passed */
  uint64_t who;
  pthread_t t;
  bool done; /* its thread ended: the first thread joins it and frees it */
  struct client *next;
} client;

struct server {
  mproc__store *store;
  mproc_listener *l;
  pthread_mutex_t mu;
  pthread_cond_t changed;
  client *clients;
  uint64_t next_who;
  bool stopping;
  int wake; /* an eventfd: a client ended, or asked for the shutdown */
  bool unix_; /* the listener's a Unix socket: descriptors can be sent to its clients */
  mproc__alive alive; /* held by the first thread for the server's life (table.h) */
};

static int wait_change(void *ctx, int64_t deadline) {
  client *cl = ctx;
  server *sv = cl->sv;
  for (;;) {
    if (sv->stopping)
      return MGR_GONE;
    int64_t left = mproc__remaining_ns(deadline);
    if (left == 0)
      return -ETIMEDOUT;
    /* A slice at most, then a look at the socket: a client that died while waiting
     * (hence sends nothing, so any readiness means its end) is noticed. */
    int64_t slice = left < WATCH_NS ? left : WATCH_NS;
    int64_t until = mproc__now_ns() + slice; /* CLOCK_MONOTONIC, as the condition's */
    struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
    bool woken = pthread_cond_timedwait(&sv->changed, &sv->mu, &ts) == 0;
    /* Woken too: a dead client must not take the unit or message it was waiting for. */
    short rev = 0;
    if (mproc__poll_fd(mproc__conn_fd(cl->c), POLLIN | POLLRDHUP, 0, &rev) > 0 && rev)
      return MGR_GONE;
    if (woken)
      return 0;
  }
}

static void broadcast(void *ctx) {
  client *cl = ctx;
  pthread_cond_broadcast(&cl->sv->changed);
}

/* Runs one request whole under the mutex and encodes its reply: the reply (malloc'd) and
 * *n, or NULL to drop the client. *stop for a shutdown. fds[0] >= 0: the descriptors to
 * send after the reply (MGR_D_SHM's; they live as long as the server). */
static unsigned char *run(client *cl, const mproc__mgr_msg *q, size_t *n, bool *stop,
                          int fds[2]) {
  server *sv = cl->sv;
  mproc__mgr_waiter w = {.who = cl->who, .wait = wait_change, .changed = broadcast, .ctx = cl};
  mproc__mgr_msg r;
  mproc__blob scratch = {0, NULL};
  pthread_mutex_lock(&sv->mu);
  *stop = mproc__mgr_handle(sv->store, &w, q, &r, &scratch) == 1;
  fds[0] = -1;
  unsigned char numbers[8];
  if (q->op == MGR_D_SHM && r.id == 0) {
    mproc__table *t = mproc__store_get(sv->store, q->id, MGR_K_DICT);
    if (!sv->alive.l) {
      r.id = MPROC_ESTATE; /* no life page: the client uses the requests */
    } else {
      /* Their numbers here too: a client that started this server reaches them through
       * pidfd_getfd when the socket cannot carry them (TCP). */
      mproc__mgr_put_i64(numbers, (int64_t)((uint64_t)(uint32_t)t->fd << 32 |
                                            (uint32_t)sv->alive.fd));
      r.nf = 1;
      r.f[0] = numbers;
      r.flen[0] = sizeof numbers;
      if (sv->unix_)
        fds[0] = t->fd, fds[1] = sv->alive.fd;
    }
  }
  if (*stop) {
    sv->stopping = true;
    pthread_cond_broadcast(&sv->changed);
  }
  unsigned char *out = NULL;
  if (r.id != MGR_GONE && (out = malloc(*n = mproc__mgr_size(&r))))
    mproc__mgr_encode(&r, out);
  pthread_mutex_unlock(&sv->mu);
  free(scratch.p);
  return out;
}

static void serve_client(client *cl) {
  for (;;) {
    void *buf;
    size_t len, n;
    if (mproc_conn_recv(cl->c, &buf, &len, MPROC_FOREVER))
      return; /* gone, or a frame too long or malformed */
    mproc__mgr_msg q;
    bool stop = false;
    int fds[2] = {-1, -1};
    unsigned char *out =
        mproc__mgr_decode(buf, len, &q) == 0 ? run(cl, &q, &n, &stop, fds) : NULL;
    free(buf);
    int rc = out ? mproc_conn_send(cl->c, out, n) : MPROC_EINVAL;
    free(out);
    /* One byte after the reply carries them: the client's conn reads whole frames only,
     * so its recvmsg of this byte is the one that takes them. */
    if (rc == 0 && fds[0] >= 0)
      rc = mproc__send_fds(mproc__conn_fd(cl->c), "F", 1, fds, 2);
    if (rc || stop)
      return;
  }
}

static void *client_main(void *arg) {
  client *cl = arg;
  server *sv = cl->sv;
  mproc_conn *c = NULL;
  if (mproc__listener_admit(sv->l, cl->fd, &c) == 0) {
    mproc__conn_set_limit(c, REQUEST_LIMIT);
    pthread_mutex_lock(&sv->mu);
    cl->c = c;
    bool stopping = sv->stopping;
    pthread_mutex_unlock(&sv->mu);
    if (!stopping)
      serve_client(cl);
  }
  pthread_mutex_lock(&sv->mu);
  if (mproc__store_orphan(sv->store, cl->who))
    pthread_cond_broadcast(&sv->changed);
  cl->done = true;
  pthread_mutex_unlock(&sv->mu);
  (void)mproc__eventfd_signal(sv->wake);
  return NULL;
}

/* Joins and frees the clients whose threads ended (all of them when all). */
static void reap(server *sv, bool all) {
  pthread_mutex_lock(&sv->mu);
  for (client **p = &sv->clients; *p;) {
    client *cl = *p;
    if (!cl->done && !all) {
      p = &cl->next;
      continue;
    }
    *p = cl->next;
    pthread_mutex_unlock(&sv->mu);
    mproc__thread_join(cl->t);
    mproc_conn_free(cl->c);
    free(cl);
    pthread_mutex_lock(&sv->mu);
  }
  pthread_mutex_unlock(&sv->mu);
}

static void take_client(server *sv) {
  int fd = mproc__listener_take(sv->l, 0);
  if (fd < 0)
    return; /* none after all, or a vanished one */
  client *cl = calloc(1, sizeof *cl);
  if (cl) {
    cl->sv = sv;
    cl->fd = fd;
    pthread_mutex_lock(&sv->mu);
    cl->who = ++sv->next_who;
    if (mproc__thread_start(&cl->t, client_main, cl) == 0) {
      cl->next = sv->clients;
      sv->clients = cl;
      pthread_mutex_unlock(&sv->mu);
      return;
    }
    pthread_mutex_unlock(&sv->mu);
    free(cl);
  }
  /* No thread for it: closed now, so its client learns at once (MPROC_EOF), not after
   * its connect timeout. */
  mproc__close(fd);
}

/* Wakes every client's thread for the end: waits see stopping, reads and writes return. */
static void stop_all(server *sv) {
  pthread_mutex_lock(&sv->mu);
  sv->stopping = true;
  for (client *cl = sv->clients; cl; cl = cl->next)
    if (cl->c && !cl->done)
      mproc__sock_shutdown(mproc__conn_fd(cl->c));
  pthread_cond_broadcast(&sv->changed);
  pthread_mutex_unlock(&sv->mu);
}

static void serve(server *sv) {
  for (;;) {
    struct pollfd pf[2] = {{.fd = mproc_listener_fileno(sv->l), .events = POLLIN},
                           {.fd = sv->wake, .events = POLLIN}};
    int rc = mproc__poll(pf, 2, MPROC__NEVER);
    if (rc < 0 && rc != -EINTR)
      break;
    if (pf[1].revents) {
      mproc__eventfd_drain(sv->wake);
      reap(sv, false);
      pthread_mutex_lock(&sv->mu);
      bool stopping = sv->stopping;
      pthread_mutex_unlock(&sv->mu);
      if (stopping)
        break;
    }
    if (pf[0].revents)
      take_client(sv);
  }
  stop_all(sv);
  reap(sv, true);
}

static int server_init(server *sv, const mproc__mgr_boot *b) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&sv->changed, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&sv->mu, NULL);
  /* Every dict holds a descriptor here (its table's memfd) and every client one: the soft
   * limit's 1024 would cap them, the hard one is ours to take (poll only, no select). */
  (void)mproc__rlimit_set(MPROC__RLIM_NOFILE, UINT64_MAX, false);
  sv->wake = mproc__eventfd();
  if (sv->wake < 0)
    return sv->wake;
  if (!(sv->store = mproc__store_new()))
    return MPROC_ENOMEM;
  int rc = mproc_listener_new(&sv->l, b->address[0] ? b->address : NULL, b->key, b->klen, 0);
  if (rc == 0)
    rc = mproc_listener_set_handshake_timeout(sv->l, HANDSHAKE_LIMIT);
  if (rc == 0) {
    sv->unix_ = strncmp(mproc_listener_address(sv->l), "unix:", 5) == 0;
    /* This thread lives as long as the server: the lock it takes is its life. Without
     * it, clients use the requests only. */
    if (mproc__alive_create(&sv->alive))
      sv->alive.l = NULL;
  }
  return rc;
}

int mproc__mgr_server_main(void *arg) {
  const mproc__mgr_boot *b = arg;
  mproc_conn *report = mproc_process_handle(0);
  server sv = {.wake = -1};
  int rc = server_init(&sv, b);
  char msg[400];
  if (rc)
    snprintf(msg, sizeof msg, "!%d", rc);
  else
    snprintf(msg, sizeof msg, "%s", mproc_listener_address(sv.l));
  int sent = mproc_conn_send(report, msg, strlen(msg));
  mproc_conn_free(report);
  if (rc == 0 && sent == 0)
    serve(&sv);
  mproc_listener_free(sv.l);
  mproc__alive_detach(&sv.alive); /* released: the clients see the end at once */
  mproc__store_free(sv.store);
  if (sv.wake >= 0)
    mproc__close(sv.wake);
  pthread_cond_destroy(&sv.changed);
  pthread_mutex_destroy(&sv.mu);
  return rc ? 1 : 0;
}
