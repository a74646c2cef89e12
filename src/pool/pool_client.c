/*
 * A pool used in a child forked after the pool was made: a client (pool.h has the
 * protocol). The child's copy of the mproc_pool is the owner's memory as it was at the
 * fork: its id table, callbacks and map stage belong to the owner's calls and are left
 * alone. At its first call the child makes a view of its own: an empty table, its own
 * result ring registered with the supervisor, an eventfd the supervisor signals after
 * moving results over, ids carrying its ticket. close, join and terminate stay the owner's.
 * Nothing here calls the rest of the caller's machinery (pool_async.c calls in).
 */
#define _GNU_SOURCE
#include "pool/pool_async.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A client's own result ring, to start with (it grows like any ring). */
#define CLIENT_RING_BYTES ((size_t)64 << 10)

int mproc__pool_init_sync(mproc_pool *p) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (rc)
    return -rc;
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->join_mu, NULL);
  return 0;
}

/* Lets go of the owner's calls as this process copied them, without touching what they
 * point to (the owner's). Another thread of the owner may have held the locks at the fork:
 * they are made anew. */
static int forget_owner(mproc_pool *p) {
  int rc = mproc__pool_init_sync(p);
  for (size_t i = 0; i < p->tab_cap; i++)
    if (p->tab[i].id)
      free(entry_staged(&p->tab[i])); /* this process's copy of the record */
  free(p->tab);
  p->tab = NULL;
  p->tab_cap = p->tab_len = 0;
  p->cb_head = p->cb_tail = NULL;
  atomic_store(&p->cb_queued, 0);
  atomic_store(&p->fd_wanted, false);
  free(p->poll_wake);
  p->poll_wake = NULL;
  p->collecting = false;
  p->feeding = p->imap_feeders = 0;
  /* The stage's blocks are handed out by the owner: a client's chunks go through the rings. */
  mproc__stage_destroy(&p->stage);
  p->ctx.stage_base = NULL;
  return rc;
}

static uint32_t new_ticket(mproc__pool_shared *sh) {
  for (;;) {
    uint32_t t = (atomic_fetch_add(&sh->next_ticket, 1) + 1) & 0xFFFFu;
    if (t)
      return t;
  }
}

/* Waits for the supervisor's reply on sock: its int32, or MPROC_ECLOSED when it is gone. */
static int await_reply(const mproc_pool *p, int sock) {
  for (;;) {
    struct pollfd pf[2] = {{.fd = sock, .events = POLLIN}, {.fd = p->sup_fd, .events = POLLIN}};
    int n = mproc__poll(pf, p->sup_fd >= 0 ? 2 : 1, MPROC__NEVER);
    if (n == -EINTR)
      continue;
    if (n < 0)
      return n;
    if (pf[0].revents) {
      int32_t rc;
      ssize_t got = mproc__read_full(sock, &rc, sizeof rc);
      return got == (ssize_t)sizeof rc ? rc : MPROC_ECLOSED; /* EOF: it died on the way */
    }
    if (pf[1].revents)
      return MPROC_ECLOSED;
  }
}

/* Hands ring and efd to the supervisor under ticket; 0 once it has them. */
static int register_ring(mproc_pool *p, mproc__ring *ring, int efd, uint32_t ticket) {
  size_t ring_len;
  int ring_fd = mproc__ring_fd(ring, &ring_len);
  if (ring_fd < 0)
    return ring_fd; /* -EBADF: anonymous memory (no memfd here) cannot be handed over */
  int rs[2];
  int rc = mproc__socketpair(rs, true);
  if (rc)
    return rc;
  int pidfd = mproc__pidfd_open(mproc__getpid()); /* without one: kept until the pool ends */
  int fds[4] = {ring_fd, efd, rs[1], pidfd};
  mproc__reg_msg m = {.op = MPROC__REG_ADD, .ticket = ticket, .ring_len = ring_len};
  rc = mproc__send_fds(p->ctx.reg_fd, &m, sizeof m, fds, pidfd >= 0 ? 4 : 3);
  /* Our copies go now: the supervisor's reply end closing tells us if it dies first. */
  mproc__close(rs[1]);
  mproc__close(pidfd);
  if (rc == -EPIPE || rc == -ECONNREFUSED || rc == -EBADF)
    rc = MPROC_ECLOSED; /* the supervisor has gone (or the pool was freed here) */
  if (rc == 0)
    rc = await_reply(p, rs[0]);
  mproc__close(rs[0]);
  return rc;
}

static int become_client(mproc_pool *p) {
  int rc = forget_owner(p);
  mproc__ring *ring = NULL;
  int efd = -1;
  mproc__ring_opts ro = {.initial_bytes = CLIENT_RING_BYTES};
  if (rc == 0)
    rc = mproc__ring_new(&ring, &ro);
  if (rc == 0 && (efd = mproc__eventfd()) < 0)
    rc = efd;
  uint32_t ticket = new_ticket(p->ctx.sh);
  if (rc == 0)
    rc = register_ring(p, ring, efd, ticket);
  if (rc) {
    mproc__ring_free(ring);
    mproc__close(efd);
    return rc;
  }
  mproc__ring_free(p->ctx.results); /* this process's mapping of its parent's ring */
  p->ctx.results = ring;
  mproc__close(p->ctx.notify_fd);
  p->ctx.notify_fd = efd;
  p->ticket = ticket;
  p->next_id = (uint64_t)ticket << MPROC__TICKET_SHIFT;
  return 0;
}

/* This process's first call on a pool another process's view was made for. One thread
 * makes the view; the others of this process wait for it. */
static int adopt(mproc_pool *p, uint32_t me) {
  uint32_t seen = atomic_load(&p->claim);
  if (seen != me && atomic_compare_exchange_strong(&p->claim, &seen, me)) {
    p->view_rc = become_client(p);
    atomic_store_explicit(&p->view, me, memory_order_release);
  }
  while (atomic_load_explicit(&p->view, memory_order_acquire) != me)
    mproc__yield(); /* another thread here is registering (a round trip to the supervisor) */
  return p->view_rc;
}

int mproc__pool_check(mproc_pool *p) {
  if (!p)
    return MPROC_EINVAL;
  uint32_t me = (uint32_t)mproc__getpid();
  if (atomic_load_explicit(&p->view, memory_order_acquire) == me)
    return p->view_rc;
  if (p->engine)
    return MPROC_ESTATE; /* its engine (MPI) is the owner's alone: never used in a child */
  return adopt(p, me);
}

int mproc__pool_owner_check(const mproc_pool *p) {
  if (!p)
    return MPROC_EINVAL;
  return p->owner == mproc__getpid() ? 0 : MPROC_ESTATE;
}

void mproc__pool_client_leave(mproc_pool *p) {
  if (!p->ticket || atomic_load(&p->view) != (uint32_t)mproc__getpid() || p->view_rc)
    return;
  mproc__reg_msg m = {.op = MPROC__REG_DROP, .ticket = p->ticket};
  /* Best effort: a client that ends without it is let go when its pidfd says so. */
  (void)mproc__write_sock(p->ctx.reg_fd, &m, sizeof m);
}
