/*
 * Resizing a running pool, and listing its workers. Growing sets the wanted count in the
 * control block and wakes the supervisor, which forks the new workers. Shrinking puts one
 * RETIRE message per worker to go on the task ring, behind the tasks already queued: the
 * workers that take them exit when they are done with what they hold, so no task is cut
 * short or lost, and the supervisor does not replace them.
 */
#define _GNU_SOURCE
#include "pool/pool_async.h"

#include <string.h>
#include <sys/uio.h>

int mproc_pool_resize(mproc_pool *p, int n) {
  int rc = mproc__pool_owner_check(p);
  if (rc)
    return rc;
  if (n < 1 || n > MPROC__POOL_SLOTS)
    return MPROC_EINVAL;
  if (p->engine)
    return MPROC_ESTATE; /* its workers are the engine's (other ranks' pools) */
  pthread_mutex_lock(&p->mu);
  mproc__pool_shared *sh = p->ctx.sh;
  int old = (int)atomic_load(&sh->target);
  if (p->state != POOL_RUNNING)
    rc = MPROC_ESTATE;
  for (int k = old; rc == 0 && k > n; k--) {
    mproc__task_hdr h;
    memset(&h, 0, sizeof h);
    h.kind = MPROC__TASK_RETIRE;
    struct iovec iov = {&h, sizeof h};
    rc = mproc__ring_putv(p->ctx.tasks, &iov, 1, MPROC__NEVER);
    if (rc == 0)
      atomic_store(&sh->target, (uint32_t)(k - 1)); /* one fewer for each retire put */
  }
  if (rc == 0 && n > old) {
    /* Before the target: the caller's loops over slots must cover the new ones first. */
    if (n > p->ctx.nworkers)
      p->ctx.nworkers = n;
    atomic_store(&sh->target, (uint32_t)n);
  }
  pthread_mutex_unlock(&p->mu);
  (void)mproc__eventfd_signal(p->ctx.ctl_fd);
  return rc;
}

int mproc_pool_workers(mproc_pool *p, pid_t *pids, size_t n) {
  int rc = mproc__pool_check(p);
  if (rc)
    return rc;
  if (!pids && n)
    return MPROC_EINVAL;
  int found = 0;
  for (int i = 0; i < MPROC__POOL_SLOTS && i < p->ctx.nworkers; i++) {
    mproc__pool_slot *slot = &p->ctx.sh->slots[i];
    pid_t pid = atomic_load(&slot->pid);
    if (pid > 0 && atomic_load(&slot->state) == MPROC__SLOT_READY) {
      if ((size_t)found < n)
        pids[found] = pid;
      found++;
    }
  }
  return found;
}
