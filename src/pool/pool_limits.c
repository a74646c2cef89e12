/*
 * A pool's limits and sandbox: the caller checks and copies them (mproc__pool_limits_init),
 * each worker sets them on itself after its initializer and before its first task, and the
 * supervisor, when a worker dies, tells from the wait status (SIGXCPU, SIGXFSZ, SIGSYS with
 * the call the trap recorded in the worker's slot) which limit the task broke.
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

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define NS 1000000000LL
#define SLACK (NS / 4)
#define RSS_EVERY (NS / 1000)

/* ---- the caller: checking and copying ---- */

static int add_names(mproc__pool_limits *l, char kind, const char *const *v, size_t n) {
  if (n && !v)
    return MPROC_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (!v[i] || !v[i][0] || strlen(v[i]) > 4096)
      return MPROC_EINVAL;
    size_t len = strlen(v[i]) + 2;
    char *b = realloc(l->names, l->names_len + len);
    if (!b)
      return MPROC_ENOMEM;
    l->names = b;
    b[l->names_len] = kind;
    memcpy(b + l->names_len + 1, v[i], len - 1);
    l->names_len += len;
  }
  return 0;
}

static int check_limits(mproc__pool_limits *l, const mproc_limits *lim) {
  if (!(lim->cpu_seconds >= 0) || lim->cpu_seconds > 1e9 || lim->processes < -1)
    return MPROC_EINVAL;
  l->cpu_ns = lim->cpu_seconds > 0 ? (int64_t)(lim->cpu_seconds * NS) : 0;
  l->open_files = lim->open_files;
  l->file_size = lim->file_size;
  l->processes = lim->processes;
  if (l->processes == -1 && !mproc__seccomp_available())
    return -EOPNOTSUPP;
  return 0;
}

int mproc__pool_limits_init(mproc__pool_limits *l, const mproc_pool_opts *o) {
  memset(l, 0, sizeof *l);
  if (!o)
    return 0;
  l->memory_limit = o->memory_limit;
  l->max_rss = o->max_memory_per_child;
  int rc = o->limits ? check_limits(l, o->limits) : 0;
  const mproc_sandbox *sb = o->sandbox;
  if (rc == 0 && sb) {
    l->sandbox = true;
    if (!mproc__seccomp_available())
      rc = -EOPNOTSUPP;
    if (rc == 0)
      rc = add_names(l, 's', sb->allow_syscalls, sb->n_allow_syscalls);
    if (rc == 0)
      rc = add_names(l, 'd', sb->read_dirs, sb->n_read_dirs);
    if (rc == 0 && sb->n_read_dirs && mproc__landlock_abi() < 1)
      rc = -EOPNOTSUPP;
    for (size_t i = 0; rc == 0 && i < sb->n_allow_syscalls; i++)
      if (mproc__syscall_nr(sb->allow_syscalls[i]) < 0)
        rc = MPROC_EINVAL;
  }
  if (rc)
    mproc__pool_limits_free(l);
  return rc;
}

void mproc__pool_limits_free(mproc__pool_limits *l) {
  free(l->names);
  l->names = NULL;
  l->names_len = 0;
}

/* ---- the boot message ---- */

void mproc__pool_limits_put(mproc__msg *m, const mproc__pool_limits *l) {
  mproc__msg_put_u64(m, l->memory_limit);
  mproc__msg_put_u64(m, l->max_rss);
  mproc__msg_put_u64(m, (uint64_t)l->cpu_ns);
  mproc__msg_put_u64(m, l->open_files);
  mproc__msg_put_u64(m, l->file_size);
  mproc__msg_put_u64(m, (uint64_t)l->processes);
  mproc__msg_put_u64(m, l->sandbox);
  mproc__msg_put_u64(m, l->names_len);
  mproc__msg_put(m, l->names, l->names_len);
}

int mproc__pool_limits_get(mproc__rd *r, mproc__pool_limits *l) {
  memset(l, 0, sizeof *l);
  l->memory_limit = mproc__rd_u64(r);
  l->max_rss = mproc__rd_u64(r);
  l->cpu_ns = (int64_t)mproc__rd_u64(r);
  l->open_files = mproc__rd_u64(r);
  l->file_size = mproc__rd_u64(r);
  l->processes = (int64_t)mproc__rd_u64(r);
  l->sandbox = mproc__rd_u64(r) != 0;
  size_t n = (size_t)mproc__rd_u64(r);
  const void *b = mproc__rd_bytes(r, n);
  if (r->bad || (n && !b))
    return -EPROTO;
  if (n && !(l->names = malloc(n)))
    return -ENOMEM;
  if (n)
    memcpy(l->names, b, n);
  l->names_len = n;
  return 0;
}

/* ---- the worker ---- */

/* The sandbox's names of one kind, as an array (malloc'd; *n of them). */
static const char **names_of(const mproc__pool_limits *l, char kind, size_t *n) {
  *n = 0;
  const char **v = malloc((l->names_len / 2 + 1) * sizeof *v);
  if (!v)
    return NULL;
  for (size_t off = 0; off < l->names_len; off += strlen(l->names + off) + 1)
    if (l->names[off] == kind)
      v[(*n)++] = l->names + off + 1;
  return v;
}

static int apply_sandbox(const mproc__pool_limits *l) {
  size_t ns = 0, nd = 0;
  const char **sys = names_of(l, 's', &ns), **dirs = names_of(l, 'd', &nd);
  int rc = sys && dirs ? 0 : -ENOMEM;
  /* Landlock first: its own calls are among those the filter then denies. */
  if (rc == 0 && nd)
    rc = mproc__landlock_read_only(dirs, nd);
  if (rc == 0 && nd) { /* the directories are readable: opening must be allowed too */
    static const char *const open_calls[] = {"openat", "open"};
    const char **all = realloc(sys, (ns + 2) * sizeof *all);
    if (!all)
      rc = -ENOMEM;
    else {
      sys = all;
      sys[ns++] = open_calls[0];
      sys[ns++] = open_calls[1];
    }
  }
  if (rc == 0)
    rc = mproc__seccomp_apply(true, true, sys, ns); /* the sandbox allows no process */
  free(sys);
  free(dirs);
  return rc;
}

int mproc__pool_limits_apply(const mproc__pool_limits *l, _Atomic int32_t *denied_nr) {
  int rc = 0;
  if (l->memory_limit)
    rc = mproc__rlimit_set(MPROC__RLIM_DATA, l->memory_limit, false);
  if (rc == 0 && l->open_files)
    rc = mproc__rlimit_set(MPROC__RLIM_NOFILE, l->open_files, false);
  if (rc == 0 && l->file_size)
    rc = mproc__rlimit_set(MPROC__RLIM_FSIZE, l->file_size, false);
  if (rc == 0 && l->processes > 0)
    rc = mproc__rlimit_set(MPROC__RLIM_NPROC, (uint64_t)l->processes, false);
  if (rc == 0 && (l->sandbox || l->processes == -1)) {
    rc = mproc__sigsys_trap(denied_nr);
    if (rc == 0)
      rc = mproc__no_new_privs();
    if (rc == 0)
      rc = l->sandbox ? apply_sandbox(l) : mproc__seccomp_apply(false, true, NULL, 0);
  }
  return rc;
}

void mproc__pool_limits_task_begin(const mproc__pool_limits *l) {
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

bool mproc__pool_limits_over_rss(const mproc__pool_limits *l) {
  static int64_t looked_at;
  if (!l->max_rss)
    return false;
  int64_t now = mproc__now_ns();
  if (looked_at && now - looked_at < RSS_EVERY)
    return false;
  looked_at = now;
  return mproc__peak_rss() > l->max_rss;
}

/* ---- the supervisor ---- */

bool mproc__pool_limits_explain(const mproc__pool_limits *l, pid_t pid, int status,
                                int32_t denied_nr, char *buf, size_t cap) {
  if (!WIFSIGNALED(status))
    return false;
  int sig = WTERMSIG(status);
  if (sig == SIGXCPU && l->cpu_ns) {
    snprintf(buf, cap,
             "the task used more CPU time than the pool's limits.cpu_seconds (%g s); its "
             "worker (pid %d) was killed by SIGXCPU",
             (double)l->cpu_ns / NS, (int)pid);
    return true;
  }
  if (sig == SIGXFSZ && l->file_size) {
    snprintf(buf, cap,
             "the task wrote a file past the pool's limits.file_size (%llu bytes); its worker "
             "(pid %d) was killed by SIGXFSZ",
             (unsigned long long)l->file_size, (int)pid);
    return true;
  }
  if (sig == SIGSYS && denied_nr) {
    char name[64];
    if (mproc__syscall_name(denied_nr, name, sizeof name) < 0)
      snprintf(name, sizeof name, "system call %d", (int)denied_nr);
    bool proc = !strcmp(name, "fork") || !strcmp(name, "vfork") || !strcmp(name, "clone");
    if (proc && l->processes == -1)
      snprintf(buf, cap,
               "the task tried to start a process (%s), which the pool's limits.processes "
               "(-1) forbids; its worker (pid %d) was killed by SIGSYS",
               name, (int)pid);
    else
      snprintf(buf, cap,
               "the task made a system call the pool's sandbox denies: %s (nr %d); its "
               "worker (pid %d) was killed by SIGSYS",
               name, (int)denied_nr, (int)pid);
    return true;
  }
  if (l->memory_limit && (sig == SIGSEGV || sig == SIGBUS || sig == SIGABRT)) {
    snprintf(buf, cap,
             "the worker (pid %d) was killed by signal %d (%s) while running the task, with "
             "its memory capped by the pool's memory_limit (%llu bytes, RLIMIT_DATA: an "
             "allocation past it fails)",
             (int)pid, sig, strsignal(sig), (unsigned long long)l->memory_limit);
    return true;
  }
  return false;
}
