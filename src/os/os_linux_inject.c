/*
 * Fault injection for the tests (MPROC_FAULT_INJECTION builds only): the Nth call, counted
 * over the kinds armed, fails once with the error its real counterpart gives when memory,
 * descriptors or processes run out. The count is per process: a child forked while armed
 * goes on counting from where its parent was, so a walk over N reaches the supervisor's
 * and the workers' calls too.
 */
#define _GNU_SOURCE
#include "os/os.h"
#include "testing.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/mman.h>

#ifdef MPROC_FAULT_INJECTION

static _Atomic unsigned armed_kinds;
static _Atomic long nth, counted;
/* Shared with the children forked while armed: a failure in the supervisor or a worker
 * counts as fired too. */
static _Atomic bool *fired;

bool mproc__inject(unsigned kind, int err) {
  if (!(atomic_load_explicit(&armed_kinds, memory_order_relaxed) & kind))
    return false;
  if (atomic_fetch_add(&counted, 1) + 1 != atomic_load(&nth))
    return false;
  atomic_store(fired, true);
  errno = err;
  return true;
}

void mproc__test_inject_arm(unsigned kinds, long n) {
  atomic_store(&armed_kinds, 0);
  if (!fired) {
    void *p = mmap(NULL, sizeof *fired, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      return; /* stays disarmed: the walk then sees nothing fire and says so */
    fired = p;
  }
  atomic_store(&counted, 0);
  atomic_store(fired, false);
  atomic_store(&nth, n);
  atomic_store(&armed_kinds, kinds);
}

bool mproc__test_inject_disarm(long *calls) {
  atomic_store(&armed_kinds, 0);
  if (calls)
    *calls = atomic_load(&counted);
  return fired && atomic_load(fired);
}

#endif
