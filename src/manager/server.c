/*
 * The Manager's server: one process, single-threaded, multiplexing every client with poll.
 * A client's message is taken with a zero timeout, so a half-sent request stays in its
 * Connection (conn keeps it across calls) and never holds the loop; each request runs to
 * the end before the next, so every operation is atomic. A malformed request drops that
 * client. Known limit: a reply is sent with a blocking send, so a client that stops
 * reading in the middle of a very large reply (beyond the socket buffer) holds the loop
 * until it reads or dies.
 */
#define _GNU_SOURCE
#include "manager/server.h"
#include "ipc/listener.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDSHAKE_LIMIT 2.0 /* a client's handshake holds the loop at most this long */

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

static int dict_op(mproc__dict *d, const mproc__mgr_msg *q, mproc__mgr_msg *r,
                   mproc__blob *scratch) {
  const void *k = q->f[0];
  size_t kl = q->flen[0];
  mproc__blob *v;
  switch (q->op) {
  case MGR_D_SET:
    return q->nf == 2 ? mproc__dict_set(d, k, kl, q->f[1], q->flen[1]) : -EPROTO;
  case MGR_D_GET:
    if (!(v = mproc__dict_find(d, k, kl)))
      return MPROC_ENOTFOUND;
    reply_blob(r, v);
    return 0;
  case MGR_D_DEL:
    return mproc__dict_remove(d, k, kl, NULL);
  case MGR_D_CONTAINS:
    r->num = mproc__dict_find(d, k, kl) != NULL;
    return 0;
  case MGR_D_POP: {
    int rc = mproc__dict_remove(d, k, kl, scratch);
    if (rc == 0)
      reply_blob(r, scratch);
    return rc;
  }
  case MGR_D_SETDEFAULT:
    if (q->nf != 2)
      return -EPROTO;
    if (!(v = mproc__dict_find(d, k, kl))) {
      int rc = mproc__dict_set(d, k, kl, q->f[1], q->flen[1]);
      if (rc || !(v = mproc__dict_find(d, k, kl)))
        return rc ? rc : MPROC_ENOMEM;
    }
    reply_blob(r, v);
    return 0;
  case MGR_D_ADD: {
    int64_t now = 0;
    if ((v = mproc__dict_find(d, k, kl))) {
      if (v->len != sizeof now)
        return MPROC_EINVAL; /* not a counter: Python's TypeError */
      memcpy(&now, v->p, sizeof now);
    }
    /* Wraps as int64_t arithmetic would, without the undefined behaviour. */
    now = (int64_t)((uint64_t)now + (uint64_t)q->num);
    int rc = v ? (memcpy(v->p, &now, sizeof now), 0) : mproc__dict_set(d, k, kl, &now, sizeof now);
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

static int dict_update(mproc__dict *d, const mproc__mgr_msg *q) {
  int rc = packed_check(q, 2);
  size_t off = 0, kl, vl;
  const void *k, *v;
  while (rc == 0 && off < q->flen[0]) {
    mproc__mgr_unpack(q->f[0], q->flen[0], &off, &k, &kl);
    mproc__mgr_unpack(q->f[0], q->flen[0], &off, &v, &vl);
    rc = mproc__dict_set(d, k, kl, v, vl);
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

static int list_remove(mproc__list *l, const mproc__mgr_msg *q) {
  if (q->nf != 1)
    return -EPROTO;
  for (size_t i = 0; i < mproc__list_len(l); i++) {
    mproc__blob *b = mproc__list_at(l, i);
    if (b->len == q->flen[0] && (b->len == 0 || memcmp(b->p, q->f[0], b->len) == 0)) {
      mproc__blob out;
      mproc__list_remove(l, i, &out);
      free(out.p);
      return 0;
    }
  }
  return MPROC_ENOTFOUND;
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
  return -EPROTO;
}

int mproc__mgr_handle(mproc__store *s, const mproc__mgr_msg *q, mproc__mgr_msg *r,
                      mproc__blob *scratch) {
  memset(r, 0, sizeof *r);
  int rc;
  if (q->op == MGR_SHUTDOWN)
    return 1;
  if (q->op == MGR_OPEN_DICT || q->op == MGR_OPEN_LIST) {
    rc = q->nf == 1 ? mproc__store_open(s, q->f[0], q->flen[0], q->op == MGR_OPEN_LIST) : -EPROTO;
    r->num = rc;
  } else if (q->op >= MGR_D_SET && q->op <= MGR_D_UPDATE) {
    mproc__dict *d = mproc__store_get(s, q->id, 0);
    size_t count = 0;
    if (!d)
      rc = MPROC_EINVAL;
    else if (q->op == MGR_D_LEN)
      rc = 0, r->num = (int64_t)mproc__dict_len(d);
    else if (q->op == MGR_D_CLEAR)
      rc = 0, mproc__dict_clear(d);
    else if (q->op == MGR_D_UPDATE)
      rc = dict_update(d, q);
    else if (q->op == MGR_D_KEYS || q->op == MGR_D_ITEMS) {
      rc = mproc__dict_snapshot(d, q->op == MGR_D_ITEMS, scratch, &count);
      if (rc == 0)
        reply_blob(r, scratch), r->num = (int64_t)count;
    } else
      rc = q->nf >= 1 ? dict_op(d, q, r, scratch) : -EPROTO;
  } else if (q->op >= MGR_L_APPEND && q->op <= MGR_L_REMOVE) {
    mproc__list *l = mproc__store_get(s, q->id, 1);
    if (!l)
      rc = MPROC_EINVAL;
    else if (q->op == MGR_L_LEN)
      rc = 0, r->num = (int64_t)mproc__list_len(l);
    else
      rc = list_op(l, q, r, scratch);
  } else {
    rc = -EPROTO;
  }
  r->id = rc < 0 ? rc : 0;
  return 0;
}

/* ---- the loop ---- */

typedef struct server {
  mproc__store *store;
  mproc_listener *l;
  mproc_conn **c;
  struct pollfd *pf;
  size_t n, cap;
} server;

static void drop(server *sv, size_t i) {
  mproc_conn_free(sv->c[i]);
  sv->c[i] = sv->c[--sv->n];
}

static void take_client(server *sv) {
  mproc_conn *c;
  if (mproc_listener_accept(sv->l, &c, 0) != 0)
    return; /* a bad or vanished client: dropped, the rest served */
  if (sv->n == sv->cap) {
    size_t cap = sv->cap ? sv->cap * 2 : 16;
    mproc_conn **nc = realloc(sv->c, cap * sizeof *nc);
    struct pollfd *np = nc ? realloc(sv->pf, (cap + 1) * sizeof *np) : NULL;
    if (nc)
      sv->c = nc;
    if (!np) {
      mproc_conn_free(c);
      return;
    }
    sv->pf = np;
    sv->cap = cap;
  }
  sv->c[sv->n++] = c;
}

/* Serves one message of client i: 0, 1 for a shutdown, -1 when the client is gone. */
static int serve_one(server *sv, size_t i) {
  void *buf;
  size_t len;
  int rc = mproc_conn_recv(sv->c[i], &buf, &len, 0);
  if (rc == MPROC_EAGAIN)
    return 0;
  if (rc)
    return -1;
  mproc__mgr_msg q, r;
  mproc__blob scratch = {0, NULL};
  int stop = 0;
  if (mproc__mgr_decode(buf, len, &q) < 0) {
    free(buf);
    return -1;
  }
  stop = mproc__mgr_handle(sv->store, &q, &r, &scratch);
  free(buf);
  size_t n = mproc__mgr_size(&r);
  unsigned char *out = malloc(n);
  if (out) {
    mproc__mgr_encode(&r, out);
    rc = mproc_conn_send(sv->c[i], out, n);
    free(out);
  }
  free(scratch.p);
  if (stop)
    return 1;
  return out && rc == 0 ? 0 : -1;
}

static void serve(server *sv) {
  for (;;) {
    sv->pf[0] = (struct pollfd){.fd = mproc_listener_fileno(sv->l), .events = POLLIN};
    for (size_t i = 0; i < sv->n; i++)
      sv->pf[i + 1] = (struct pollfd){.fd = mproc_conn_fileno(sv->c[i]), .events = POLLIN};
    size_t n = sv->n;
    int rc = mproc__poll(sv->pf, n + 1, MPROC__NEVER);
    if (rc < 0 && rc != -EINTR)
      return;
    /* Backwards: dropping client i moves the last one into its place. */
    for (size_t i = n; i-- > 0;) {
      if (!sv->pf[i + 1].revents)
        continue;
      int r = serve_one(sv, i);
      if (r == 1)
        return;
      if (r < 0)
        drop(sv, i);
    }
    if (sv->pf[0].revents)
      take_client(sv);
  }
}

int mproc__mgr_server_main(void *arg) {
  const mproc__mgr_boot *b = arg;
  mproc_conn *report = mproc_process_handle(0);
  server sv = {0};
  sv.pf = malloc(sizeof *sv.pf);
  sv.store = mproc__store_new();
  int rc = sv.pf && sv.store ? 0 : MPROC_ENOMEM;
  if (rc == 0)
    rc = mproc_listener_new(&sv.l, b->address[0] ? b->address : NULL, b->key, b->klen, 0);
  if (rc == 0)
    rc = mproc_listener_set_handshake_timeout(sv.l, HANDSHAKE_LIMIT);
  char msg[400];
  if (rc)
    snprintf(msg, sizeof msg, "!%d", rc);
  else
    snprintf(msg, sizeof msg, "%s", mproc_listener_address(sv.l));
  int sent = mproc_conn_send(report, msg, strlen(msg));
  mproc_conn_free(report);
  if (rc == 0 && sent == 0)
    serve(&sv);
  for (size_t i = 0; i < sv.n; i++)
    mproc_conn_free(sv.c[i]);
  free(sv.c);
  free(sv.pf);
  mproc_listener_free(sv.l);
  mproc__store_free(sv.store);
  return rc ? 1 : 0;
}
