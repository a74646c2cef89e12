/*
 * Limits and the sandbox of a child (limits.c): what a pool's workers and a single Process
 * share. The parent checks and copies them (mproc__limits_init), they reach the child by
 * fork or in its boot message, the child sets them on itself before its work
 * (mproc__limits_apply), and the parent, when the child dies, tells from the wait status
 * which limit it broke (mproc__limits_explain).
 *
 * memory_limit is enforced by a memory cgroup of the child's own where the machine lets
 * this process make one (exact: the kernel's OOM killer ends the child at the cap), else by
 * RLIMIT_DATA (an allocation past the cap fails; shared mappings are not counted).
 */
#ifndef MPROC_CORE_LIMITS_H
#define MPROC_CORE_LIMITS_H

#include "core/internal.h"
#include "core/start.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct mproc__limits {
  uint64_t memory_limit; /* bytes; 0: none */
  int memlimit_kind;     /* MPROC_MEMLIMIT_*: how memory_limit is enforced */
  uint64_t max_rss;      /* a pool's max_memory_per_child; 0: none */
  int64_t cpu_ns;        /* 0: none */
  uint64_t open_files, file_size;
  int64_t processes; /* 0: none; -1: no process; N: RLIMIT_NPROC */
  bool sandbox;
  /* MEMLIMIT_CGROUP_*: the directory the children's groups are made in, and their names'
   * prefix, one per parent object ("mproc-<pid>.<n>-"; the child's pid follows). */
  char *cg_dir;
  char cg_tag[48];
  /* The sandbox's names, each NUL-terminated and prefixed: 's' a syscall to allow, 'd' a
   * directory to read under. One block, so it crosses a boot message as bytes. */
  char *names;
  size_t names_len;
} mproc__limits;

/* Parent: checks and copies the limits (any may be 0 / NULL) into l, and picks how
 * memory_limit is enforced (how: MPROC_MEMLIMIT_NONE for the best the machine allows).
 * 0, MPROC_EINVAL, -EOPNOTSUPP (a sandbox or processes = -1 without libseccomp, read_dirs
 * without Landlock, a `how` the machine cannot give), MPROC_ENOMEM. */
int mproc__limits_init(mproc__limits *l, uint64_t memory_limit, mproc_memlimit_kind how,
                       const mproc_limits *lim, const mproc_sandbox *sb);
void mproc__limits_free(mproc__limits *l);
/* Anything to set in the child at all. */
bool mproc__limits_any(const mproc__limits *l);
/* A boot message's part. _get: 0, or -EPROTO / -ENOMEM. */
void mproc__limits_put(mproc__msg *m, const mproc__limits *l);
int mproc__limits_get(mproc__rd *r, mproc__limits *l);

/* Child: sets every limit, enters its memory group, loads the filter; *denied_nr is where
 * the SIGSYS trap records a denied call (in memory the parent sees). cpu_ns is left to the
 * caller (a pool moves it per task). 0 or -errno (the child must not go on). */
int mproc__limits_apply(const mproc__limits *l, _Atomic int32_t *denied_nr);

/* Parent, once the child pid is reaped and before mproc__limits_reaped: when a limit
 * explains its death (wait status, the syscall its trap recorded or 0), writes why into
 * buf and returns true. whose: "pool" or "process", child: "worker" or "child". */
bool mproc__limits_explain(const mproc__limits *l, const char *whose, const char *child,
                           pid_t pid, int status, int32_t denied_nr, char *buf, size_t cap);
/* Parent, after every reaped child: removes its memory group (if it made one). */
void mproc__limits_reaped(const mproc__limits *l, pid_t pid);
/* Parent, at the end: removes the memory groups of children that died unreaped. */
void mproc__limits_sweep(const mproc__limits *l);

#endif /* MPROC_CORE_LIMITS_H */
