/*
 * Limits and the sandbox of a child: checked and copied by the parent, set by the child on
 * itself (after a pool worker's initializer, before a Process's target), and read back by
 * the parent to say which limit a dead child broke: SIGXCPU, SIGXFSZ, SIGSYS with the call
 * the trap recorded, the OOM killer's count in the child's memory group, or a crash with
 * RLIMIT_DATA on.
 *
 * A child's memory group is named "mproc-<parent pid>-<child pid>" and made by the child
 * itself (the parent cannot move a process it has not forked yet, and one group per child
 * makes the cap per child, as RLIMIT_DATA's is); the parent removes it once the child is
 * reaped, and sweeps its prefix at the end for children that died unseen.
 */
#define _GNU_SOURCE
#include "core/limits.h"
#include "testing.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define NS 1000000000LL

/* ---- the parent: checking and copying ---- */

static int add_names(mproc__limits *l, char kind, const char *const *v, size_t n) {
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

static int check_limits(mproc__limits *l, const mproc_limits *lim) {
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

static int check_sandbox(mproc__limits *l, const mproc_sandbox *sb) {
  l->sandbox = true;
  if (!mproc__seccomp_available())
    return -EOPNOTSUPP;
  int rc = add_names(l, 's', sb->allow_syscalls, sb->n_allow_syscalls);
  if (rc == 0)
    rc = add_names(l, 'd', sb->read_dirs, sb->n_read_dirs);
  if (rc == 0 && sb->n_read_dirs && mproc__landlock_abi() < 1)
    rc = -EOPNOTSUPP;
  for (size_t i = 0; rc == 0 && i < sb->n_allow_syscalls; i++)
    if (mproc__syscall_nr(sb->allow_syscalls[i]) < 0)
      rc = MPROC_EINVAL;
  return rc;
}

/* Picks how memory_limit is kept: a cgroup where one can be made, else RLIMIT_DATA. */
static int pick_memlimit(mproc__limits *l, mproc_memlimit_kind how) {
  if ((unsigned)how > MPROC_MEMLIMIT_CGROUP_V1)
    return MPROC_EINVAL;
  if (!l->memory_limit)
    return how == MPROC_MEMLIMIT_NONE ? 0 : MPROC_EINVAL;
  if (how == MPROC_MEMLIMIT_RLIMIT_DATA) {
    l->memlimit_kind = how;
    return 0;
  }
  char dir[MPROC__MEMCG_PATH];
  int kind = mproc__memcg_probe(dir, sizeof dir);
  int got = kind == MPROC__MEMCG_V2   ? MPROC_MEMLIMIT_CGROUP_V2
            : kind == MPROC__MEMCG_V1 ? MPROC_MEMLIMIT_CGROUP_V1
                                      : MPROC_MEMLIMIT_RLIMIT_DATA;
  if (how != MPROC_MEMLIMIT_NONE && got != (int)how)
    return -EOPNOTSUPP;
  l->memlimit_kind = got;
  if (kind > 0) {
    if (!(l->cg_dir = strdup(dir)))
      return MPROC_ENOMEM;
    static _Atomic unsigned seq;
    snprintf(l->cg_tag, sizeof l->cg_tag, "mproc-%d.%u-", (int)mproc__getpid(),
             atomic_fetch_add(&seq, 1) + 1);
  }
  return 0;
}

int mproc__limits_init(mproc__limits *l, uint64_t memory_limit, mproc_memlimit_kind how,
                       const mproc_limits *lim, const mproc_sandbox *sb) {
  memset(l, 0, sizeof *l);
  l->memory_limit = memory_limit;
  int rc = lim ? check_limits(l, lim) : 0;
  if (rc == 0 && sb)
    rc = check_sandbox(l, sb);
  if (rc == 0)
    rc = pick_memlimit(l, how);
  if (rc)
    mproc__limits_free(l);
  return rc;
}

void mproc__limits_free(mproc__limits *l) {
  free(l->names);
  free(l->cg_dir);
  l->names = l->cg_dir = NULL;
  l->names_len = 0;
}

bool mproc__limits_any(const mproc__limits *l) {
  return l->memory_limit || l->max_rss || l->cpu_ns || l->open_files || l->file_size ||
         l->processes || l->sandbox;
}

/* ---- the boot message ---- */

void mproc__limits_put(mproc__msg *m, const mproc__limits *l) {
  mproc__msg_put_u64(m, l->memory_limit);
  mproc__msg_put_u64(m, (uint64_t)l->memlimit_kind);
  mproc__msg_put_u64(m, l->max_rss);
  mproc__msg_put_u64(m, (uint64_t)l->cpu_ns);
  mproc__msg_put_u64(m, l->open_files);
  mproc__msg_put_u64(m, l->file_size);
  mproc__msg_put_u64(m, (uint64_t)l->processes);
  mproc__msg_put_u64(m, l->sandbox);
  mproc__msg_put_str(m, l->cg_tag);
  mproc__msg_put_str(m, l->cg_dir ? l->cg_dir : "");
  mproc__msg_put_u64(m, l->names_len);
  mproc__msg_put(m, l->names, l->names_len);
}

static int copy_bytes(char **to, const void *b, size_t n) {
  if (n && !(*to = malloc(n)))
    return -ENOMEM;
  if (n)
    memcpy(*to, b, n);
  return 0;
}

int mproc__limits_get(mproc__rd *r, mproc__limits *l) {
  memset(l, 0, sizeof *l);
  l->memory_limit = mproc__rd_u64(r);
  l->memlimit_kind = (int)mproc__rd_u64(r);
  l->max_rss = mproc__rd_u64(r);
  l->cpu_ns = (int64_t)mproc__rd_u64(r);
  l->open_files = mproc__rd_u64(r);
  l->file_size = mproc__rd_u64(r);
  l->processes = (int64_t)mproc__rd_u64(r);
  l->sandbox = mproc__rd_u64(r) != 0;
  const char *tag = mproc__rd_str(r), *dir = mproc__rd_str(r);
  size_t n = (size_t)mproc__rd_u64(r);
  const void *b = mproc__rd_bytes(r, n);
  if (r->bad || !dir || !tag || strlen(tag) >= sizeof l->cg_tag || (n && !b))
    return -EPROTO;
  memcpy(l->cg_tag, tag, strlen(tag) + 1);
  int rc = dir[0] ? copy_bytes(&l->cg_dir, dir, strlen(dir) + 1) : 0;
  if (rc == 0)
    rc = copy_bytes(&l->names, b, n);
  if (rc)
    mproc__limits_free(l);
  else
    l->names_len = n;
  return rc;
}

/* ---- the child ---- */

/* The sandbox's names of one kind, as an array (malloc'd; *n of them). */
static const char **names_of(const mproc__limits *l, char kind, size_t *n) {
  *n = 0;
  const char **v = malloc((l->names_len / 2 + 1) * sizeof *v);
  if (!v)
    return NULL;
  for (size_t off = 0; off < l->names_len; off += strlen(l->names + off) + 1)
    if (l->names[off] == kind)
      v[(*n)++] = l->names + off + 1;
  return v;
}

static int apply_sandbox(const mproc__limits *l) {
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

static void group_name(const mproc__limits *l, pid_t pid, char *buf, size_t cap) {
  snprintf(buf, cap, "%s%d", l->cg_tag, (int)pid);
}

static int apply_memory(const mproc__limits *l) {
  if (!l->memory_limit)
    return 0;
  if (!l->cg_dir)
    return mproc__rlimit_set(MPROC__RLIM_DATA, l->memory_limit, false);
  char name[64];
  group_name(l, mproc__getpid(), name, sizeof name);
  int kind = l->memlimit_kind == MPROC_MEMLIMIT_CGROUP_V2 ? MPROC__MEMCG_V2 : MPROC__MEMCG_V1;
  return mproc__memcg_enter(kind, l->cg_dir, name, l->memory_limit);
}

int mproc__limits_apply(const mproc__limits *l, _Atomic int32_t *denied_nr) {
  int rc = apply_memory(l);
  if (rc == 0 && l->cpu_ns) {
    int64_t need = mproc__cpu_time_ns() + l->cpu_ns;
    rc = mproc__rlimit_set(MPROC__RLIM_CPU, (uint64_t)((need + NS - 1) / NS), false);
  }
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

/* ---- the parent, after the child's end ---- */

static bool explain_sigsys(const mproc__limits *l, const char *whose, const char *child,
                           pid_t pid, int32_t nr, char *buf, size_t cap) {
  char name[64];
  if (mproc__syscall_name(nr, name, sizeof name) < 0)
    snprintf(name, sizeof name, "system call %d", (int)nr);
  bool proc = !strcmp(name, "fork") || !strcmp(name, "vfork") || !strcmp(name, "clone");
  if (proc && l->processes == -1)
    snprintf(buf, cap,
             "the task tried to start a process (%s), which the %s's limits.processes (-1) "
             "forbids; its %s (pid %d) was killed by SIGSYS",
             name, whose, child, (int)pid);
  else
    snprintf(buf, cap,
             "the task made a system call the %s's sandbox denies: %s (nr %d); its %s (pid "
             "%d) was killed by SIGSYS",
             whose, name, (int)nr, child, (int)pid);
  return true;
}

static bool explain_memory(const mproc__limits *l, const char *whose, const char *child,
                           pid_t pid, int sig, char *buf, size_t cap) {
  unsigned long long cap_b = (unsigned long long)l->memory_limit;
  if (l->cg_dir) {
    char name[64];
    group_name(l, pid, name, sizeof name);
    int kind = l->memlimit_kind == MPROC_MEMLIMIT_CGROUP_V2 ? MPROC__MEMCG_V2 : MPROC__MEMCG_V1;
    if (sig != SIGKILL || mproc__memcg_oom_kills(kind, l->cg_dir, name) <= 0)
      return false;
    snprintf(buf, cap,
             "the task went past the %s's memory_limit (%llu bytes, a memory cgroup v%d): the "
             "kernel's OOM killer killed its %s (pid %d)",
             whose, cap_b, kind, child, (int)pid);
    return true;
  }
  if (sig != SIGSEGV && sig != SIGBUS && sig != SIGABRT)
    return false;
  snprintf(buf, cap,
           "the %s (pid %d) was killed by signal %d (%s) while running the task, with its "
           "memory capped by the %s's memory_limit (%llu bytes, RLIMIT_DATA: an allocation "
           "past it fails)",
           child, (int)pid, sig, strsignal(sig), whose, cap_b);
  return true;
}

bool mproc__limits_explain(const mproc__limits *l, const char *whose, const char *child,
                           pid_t pid, int status, int32_t denied_nr, char *buf, size_t cap) {
  if (!WIFSIGNALED(status))
    return false;
  int sig = WTERMSIG(status);
  if (sig == SIGXCPU && l->cpu_ns) {
    snprintf(buf, cap,
             "the task used more CPU time than the %s's limits.cpu_seconds (%g s); its %s "
             "(pid %d) was killed by SIGXCPU",
             whose, (double)l->cpu_ns / NS, child, (int)pid);
    return true;
  }
  if (sig == SIGXFSZ && l->file_size) {
    snprintf(buf, cap,
             "the task wrote a file past the %s's limits.file_size (%llu bytes); its %s (pid "
             "%d) was killed by SIGXFSZ",
             whose, (unsigned long long)l->file_size, child, (int)pid);
    return true;
  }
  if (sig == SIGSYS && denied_nr)
    return explain_sigsys(l, whose, child, pid, denied_nr, buf, cap);
  return l->memory_limit && explain_memory(l, whose, child, pid, sig, buf, cap);
}

void mproc__limits_reaped(const mproc__limits *l, pid_t pid) {
  if (!l->cg_dir)
    return;
  char name[64];
  group_name(l, pid, name, sizeof name);
  (void)mproc__memcg_remove(l->cg_dir, name, true);
}

void mproc__limits_sweep(const mproc__limits *l) {
  if (!l->cg_dir)
    return;
  mproc__memcg_sweep(l->cg_dir, l->cg_tag);
}

/* ---- test hooks (testing.h) ---- */

int mproc__test_memcg_dir(char *dir, size_t cap) { return mproc__memcg_probe(dir, cap); }
