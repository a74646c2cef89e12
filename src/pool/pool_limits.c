/*
 * A pool's limits around each task (the rest is core/limits.c's).
 *
 * The per-task CPU limit rides on RLIMIT_CPU, a per-process total in whole seconds: before
 * a task the soft limit is moved to (CPU used so far + the task's seconds + SLACK), rounded
 * up. Reading the process's CPU clock is a system call (no vDSO), so a task that starts
 * within SLACK of wall time after the last move keeps that limit: the worker cannot have
 * used more than SLACK of CPU since (one thread), so the task still has its seconds. A
 * stream of short tasks pays one vDSO clock read each. The peak RSS (getrusage, a system
 * call too) is looked at after a task when a millisecond has passed since the last look:
 * a task that grew the worker by much took longer than that.
 */
#define _GNU_SOURCE
#include "pool/pool_limits.h"

#include <string.h>

#define NS 1000000000LL
#define SLACK (NS / 4)
#define RSS_EVERY (NS / 1000)

int mproc__pool_limits_init(mproc__limits *l, const mproc_pool_opts *o) {
  if (!o) {
    memset(l, 0, sizeof *l);
    return 0;
  }
  int rc = mproc__limits_init(l, o->memory_limit, o->memory_limit_how, o->limits, o->sandbox);
  if (rc == 0)
    l->max_rss = o->max_memory_per_child;
  return rc;
}

void mproc__pool_limits_task_begin(const mproc__limits *l) {
  static int64_t moved_at; /* wall clock of the last move; 0: none yet */
  if (l->cpu_ns <= 0)
    return;
  int64_t now = mproc__now_ns();
  if (moved_at && now - moved_at < SLACK)
    return;
  int64_t need = mproc__cpu_time_ns() + l->cpu_ns + SLACK;
  if (mproc__rlimit_set(MPROC__RLIM_CPU, (uint64_t)((need + NS - 1) / NS), false) == 0)
    moved_at = now;
}

bool mproc__pool_limits_over_rss(const mproc__limits *l) {
  static int64_t looked_at;
  if (!l->max_rss)
    return false;
  int64_t now = mproc__now_ns();
  if (looked_at && now - looked_at < RSS_EVERY)
    return false;
  looked_at = now;
  return mproc__peak_rss() > l->max_rss;
}
