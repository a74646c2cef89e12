/*
 * The supervisor's side of clients (pool.h): children forked from the caller after the pool
 * was made, which use it too. A client registers its own result ring over the registration
 * socket; workers post its results on the relay ring; this file moves them over, one copy
 * per result, in the supervisor's loop. A client that ends (its pidfd) or frees the pool
 * (DROP) is forgotten, and results that come for it later are dropped.
 */
#define _GNU_SOURCE
#include "pool/pool.h"

#include <stdlib.h>
#include <string.h>

/* Results moved per round, so that deaths and timeouts are looked at in between. */
#define MOVE_BATCH 1024

struct mproc__relay_client {
  uint32_t ticket;
  bool signal; /* results were moved to it this round */
  mproc__ring *ring;
  int efd, pidfd;
};

static void client_close(mproc__relay_client *c) {
  mproc__ring_free(c->ring);
  mproc__close(c->efd);
  mproc__close(c->pidfd);
}

static void drop_at(mproc__relay *r, size_t i) {
  client_close(&r->c[i]);
  r->c[i] = r->c[--r->n];
}

static mproc__relay_client *find(mproc__relay *r, uint32_t ticket) {
  for (size_t i = 0; i < r->n; i++)
    if (r->c[i].ticket == ticket)
      return &r->c[i];
  return NULL;
}

/* ---- registrations ---- */

/* fds: ring, eventfd, reply socket, pidfd (optional). Takes them all over. */
static int add(mproc__relay *r, const mproc__reg_msg *m, int *fds, size_t nfds) {
  if (nfds < 3 || m->ticket == 0 || find(r, m->ticket))
    return -EPROTO;
  if (r->n == r->cap) {
    size_t cap = r->cap ? 2 * r->cap : 8;
    mproc__relay_client *c = realloc(r->c, cap * sizeof *c);
    if (!c)
      return -ENOMEM;
    r->c = c;
    r->cap = cap;
  }
  mproc__ring *ring = mproc__ring_attach(fds[0], (size_t)m->ring_len);
  fds[0] = -1; /* attach took it, even on failure */
  if (!ring)
    return -ENOMEM;
  r->c[r->n++] = (mproc__relay_client){.ticket = m->ticket, .ring = ring, .efd = fds[1],
                                       .pidfd = nfds > 3 ? fds[3] : -1};
  fds[1] = fds[3] = -1;
  return 0;
}

static void on_message(mproc__relay *r) {
  mproc__reg_msg m;
  int fds[4] = {-1, -1, -1, -1};
  size_t nfds = 4;
  ssize_t n = mproc__recv_fds(r->ctx->reg_sup, &m, sizeof m, fds, &nfds);
  if (n == 0) {
    r->reg_eof = true; /* the caller and every client closed theirs */
    return;
  }
  if (n < 0)
    return; /* -EMSGSIZE closed what came; the client sees its reply socket close */
  for (size_t i = nfds; i < 4; i++)
    fds[i] = -1;
  if ((size_t)n == sizeof m && m.op == MPROC__REG_ADD) {
    int32_t rc = add(r, &m, fds, nfds);
    if (fds[2] >= 0)
      (void)mproc__write_sock(fds[2], &rc, sizeof rc);
  } else if ((size_t)n == sizeof m && m.op == MPROC__REG_DROP) {
    mproc__relay_client *c = find(r, m.ticket);
    if (c)
      drop_at(r, (size_t)(c - r->c));
  }
  for (size_t i = 0; i < 4; i++)
    mproc__close(fds[i]);
}

size_t mproc__relay_nfds(const mproc__relay *r) { return 1 + r->n; }

void mproc__relay_fds(const mproc__relay *r, struct pollfd *fds) {
  fds[0] = (struct pollfd){.fd = r->reg_eof ? -1 : r->ctx->reg_sup, .events = POLLIN};
  for (size_t i = 0; i < r->n; i++)
    fds[1 + i] = (struct pollfd){.fd = r->c[i].pidfd, .events = POLLIN};
}

void mproc__relay_events(mproc__relay *r, const struct pollfd *fds) {
  /* Ends first, by index from the top, before a registration moves the table. */
  size_t n = r->n;
  for (size_t i = n; i-- > 0;)
    if (fds[1 + i].fd >= 0 && fds[1 + i].revents)
      drop_at(r, i);
  if (fds[0].fd >= 0 && fds[0].revents)
    on_message(r);
}

/* ---- results ---- */

/* One result for a client: a copy into its ring; a result that does not fit in memory
 * becomes a short failure. */
static void move_one(mproc__relay_client *c, const mproc__ring_msg *m) {
  if (mproc__ring_put(c->ring, m->data, m->len, MPROC__NEVER) == MPROC_ENOMEM) {
    mproc__result_hdr h;
    memcpy(&h, m->data, sizeof h);
    static const char msg[] = "the task's result did not fit in shared memory";
    mproc__result_hdr f = {.id = h.id, .status = MPROC_ETASK, .fail_index = h.fail_index,
                           .msg_len = sizeof msg - 1};
    struct iovec iov[2] = {{&f, sizeof f}, {(void *)msg, sizeof msg - 1}};
    (void)mproc__ring_putv(c->ring, iov, 2, MPROC__NEVER);
  }
  c->signal = true;
}

bool mproc__relay_move(mproc__relay *r) {
  mproc__ring_msg m;
  int n = 0;
  for (; n < MOVE_BATCH && mproc__ring_read_begin(r->ctx->relay, &m, 0) == 0; n++) {
    mproc__result_hdr h;
    if (m.len >= sizeof h) {
      memcpy(&h, m.data, sizeof h);
      mproc__relay_client *c = find(r, mproc__id_ticket(h.id));
      if (c)
        move_one(c, &m);
    }
    mproc__ring_read_end(r->ctx->relay, &m, true);
  }
  for (size_t i = 0; i < r->n; i++) {
    if (r->c[i].signal)
      (void)mproc__eventfd_signal(r->c[i].efd);
    r->c[i].signal = false;
  }
  return n == MOVE_BATCH;
}

void mproc__relay_forget(mproc__relay *r) {
  for (size_t i = 0; i < r->n; i++)
    client_close(&r->c[i]);
  free(r->c);
  r->c = NULL;
  r->n = r->cap = 0;
}
