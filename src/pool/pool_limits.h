/*
 * A pool's limits and sandbox (pool_limits.c): checked and copied by the caller, carried to
 * the supervisor (by fork or in the boot message), set by each worker after its initializer,
 * and read by the supervisor to say which limit a dead worker broke.
 */
#ifndef MPROC_POOL_LIMITS_H
#define MPROC_POOL_LIMITS_H

#include "core/internal.h"
#include "core/start.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct mproc__pool_limits {
  uint64_t memory_limit; /* RLIMIT_DATA, bytes; 0: none */
  uint64_t max_rss;      /* max_memory_per_child; 0: none */
  int64_t cpu_ns;        /* per task; 0: none */
  uint64_t open_files, file_size;
  int64_t processes; /* 0: none; -1: no process; N: RLIMIT_NPROC */
  bool sandbox;
  /* The sandbox's names, each NUL-terminated and prefixed: 's' a syscall to allow, 'd' a
   * directory to read under. One block, so it crosses the boot message as bytes. */
  char *names;
  size_t names_len;
} mproc__pool_limits;

/* Caller: checks and copies o's limits into l: 0, MPROC_EINVAL, -EOPNOTSUPP (a sandbox or
 * processes = -1 without libseccomp, read_dirs without Landlock), MPROC_ENOMEM. */
int mproc__pool_limits_init(mproc__pool_limits *l, const mproc_pool_opts *o);
void mproc__pool_limits_free(mproc__pool_limits *l);
/* The boot message's part (pool_start.c). _get: 0, or -EPROTO / -ENOMEM. */
void mproc__pool_limits_put(mproc__msg *m, const mproc__pool_limits *l);
int mproc__pool_limits_get(mproc__rd *r, mproc__pool_limits *l);

/* Worker, after its initializer: sets every limit and loads the filter; *denied_nr is where
 * the SIGSYS trap records a denied call. 0 or -errno (the worker must not take tasks). */
int mproc__pool_limits_apply(const mproc__pool_limits *l, _Atomic int32_t *denied_nr);
/* Worker, before each task: gives it its CPU seconds (a syscall only when the limit is on). */
void mproc__pool_limits_task_begin(const mproc__pool_limits *l);
/* Worker, after each task: true when the worker went past max_memory_per_child. */
bool mproc__pool_limits_over_rss(const mproc__pool_limits *l);

/* Supervisor: when a limit explains the death of a worker (wait status, the syscall its
 * trap recorded or 0), writes the task's failure message into buf and returns true. */
bool mproc__pool_limits_explain(const mproc__pool_limits *l, pid_t pid, int status,
                                int32_t denied_nr, char *buf, size_t cap);

#endif /* MPROC_POOL_LIMITS_H */
