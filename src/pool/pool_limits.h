/*
 * A pool's limits (pool_limits.c): the pool's side of core/limits.h — the options read
 * into mproc__limits, and what a worker does around each task (the CPU seconds moved per
 * task, the RSS looked at after it). The rest (setting them, the boot message, naming the
 * limit a dead worker broke) is core/limits.h's.
 */
#ifndef MPROC_POOL_LIMITS_H
#define MPROC_POOL_LIMITS_H

#include "core/limits.h"

#include <stdbool.h>

/* Caller: checks and copies o's limits into l (mproc__limits_init's codes). */
int mproc__pool_limits_init(mproc__limits *l, const mproc_pool_opts *o);

/* Worker, before each task: gives it its CPU seconds (a syscall only when the limit is on). */
void mproc__pool_limits_task_begin(const mproc__limits *l);
/* Worker, after each task: true when the worker went past max_memory_per_child. */
bool mproc__pool_limits_over_rss(const mproc__limits *l);

#endif /* MPROC_POOL_LIMITS_H */
