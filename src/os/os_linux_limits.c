/*
 * Linux implementation of src/os.h, part three: what a process may do. Resource limits
 * (setrlimit), its own CPU time and peak RSS, no_new_privs, a seccomp filter (libseccomp,
 * when the build found it: MPROC__HAVE_SECCOMP) whose denied calls trap into a SIGSYS
 * handler that records the call's number before the process dies, and Landlock read-only
 * directories where the kernel has it.
 */
#define _GNU_SOURCE
#include "os/os.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/landlock.h>
#ifdef MPROC__HAVE_SECCOMP
#include <seccomp.h>
#endif

/* Older headers lack these; the kernel's values. */
#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1 /* si_code of a seccomp trap */
#endif
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

/* ---- resource limits ---- */

static int rlimit_of(int which) {
  switch (which) {
  case MPROC__RLIM_AS: return RLIMIT_AS;
  case MPROC__RLIM_DATA: return RLIMIT_DATA;
  case MPROC__RLIM_CPU: return RLIMIT_CPU;
  case MPROC__RLIM_NOFILE: return RLIMIT_NOFILE;
  case MPROC__RLIM_FSIZE: return RLIMIT_FSIZE;
  case MPROC__RLIM_NPROC: return RLIMIT_NPROC;
  default: return -1;
  }
}

int mproc__rlimit_set(int which, uint64_t soft, bool hard_too) {
  int r = rlimit_of(which);
  if (r < 0)
    return -EINVAL;
  struct rlimit rl;
  if (getrlimit(r, &rl) < 0)
    return -errno;
  rlim_t v = soft >= (uint64_t)RLIM_INFINITY ? RLIM_INFINITY : (rlim_t)soft;
  if (rl.rlim_max != RLIM_INFINITY && v > rl.rlim_max)
    v = rl.rlim_max; /* never above what this process may have */
  rl.rlim_cur = v;
  if (hard_too)
    rl.rlim_max = v;
  return setrlimit(r, &rl) < 0 ? -errno : 0;
}

int64_t mproc__cpu_time_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
    return 0;
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t mproc__peak_rss(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) < 0)
    return 0;
  return (uint64_t)ru.ru_maxrss * 1024; /* Linux counts in KiB */
}

int mproc__no_new_privs(void) {
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ? -errno : 0;
}

/* ---- the SIGSYS trap ---- */

static _Atomic int32_t *trap_record;

static void on_sigsys(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  if (trap_record && si->si_code == SYS_SECCOMP)
    atomic_store(trap_record, si->si_syscall > 0 ? si->si_syscall : -1);
  /* SA_RESETHAND made the disposition the default again, SA_NODEFER leaves the signal
   * unblocked: this second one kills at once (the filter allows tgkill to ourselves). */
  syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), sig);
}

int mproc__sigsys_trap(_Atomic int32_t *record) {
  trap_record = record;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, NULL) < 0)
    return -errno;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGSYS);
  return pthread_sigmask(SIG_UNBLOCK, &s, NULL) ? -EINVAL : 0;
}

/* ---- Landlock ---- */

int mproc__landlock_abi(void) {
  long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return v < 0 ? -errno : (int)v;
}

/* Everything a path can be used for that the running kernel knows (by ABI version). */
static uint64_t fs_access_all(int abi) {
  uint64_t a = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
               LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR |
               LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
               LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |
               LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
               LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
               LANDLOCK_ACCESS_FS_MAKE_SYM;
  if (abi >= 2)
    a |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3)
    a |= LANDLOCK_ACCESS_FS_TRUNCATE;
  return a;
}

int mproc__landlock_read_only(const char *const *dirs, size_t n) {
  int abi = mproc__landlock_abi();
  if (abi < 1)
    return abi < 0 ? abi : -EOPNOTSUPP;
  struct landlock_ruleset_attr ra = {.handled_access_fs = fs_access_all(abi)};
  int rs = (int)syscall(SYS_landlock_create_ruleset, &ra, sizeof ra, 0);
  if (rs < 0)
    return -errno;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    int fd = open(dirs[i], O_PATH | O_CLOEXEC);
    if (fd < 0) {
      rc = -errno;
      break;
    }
    struct landlock_path_beneath_attr pb = {
        .allowed_access = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR,
        .parent_fd = fd};
    if (syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) < 0)
      rc = -errno;
    close(fd);
  }
  if (rc == 0 && syscall(SYS_landlock_restrict_self, rs, 0) < 0)
    rc = -errno;
  close(rs);
  return rc;
}

/* ---- seccomp ---- */

#ifdef MPROC__HAVE_SECCOMP

bool mproc__seccomp_available(void) { return true; }

/* What a worker computing on what it was given calls (found with strace -f on the pool's
 * suites, plus what malloc, threads and stdio on open descriptors need). */
static const int base_allow[] = {
    SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(pread64),
    SCMP_SYS(pwrite64), SCMP_SYS(lseek), SCMP_SYS(close), SCMP_SYS(fstat), SCMP_SYS(dup),
    SCMP_SYS(fcntl), SCMP_SYS(ftruncate), SCMP_SYS(fallocate), SCMP_SYS(fsync),
    SCMP_SYS(fdatasync), SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(recvmsg),
    SCMP_SYS(sendmsg), SCMP_SYS(shutdown), SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(select),
    SCMP_SYS(pselect6), SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(mmap),
    SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect), SCMP_SYS(madvise),
    SCMP_SYS(mincore), SCMP_SYS(brk), SCMP_SYS(futex), SCMP_SYS(set_robust_list),
    SCMP_SYS(get_robust_list), SCMP_SYS(rseq), SCMP_SYS(membarrier), SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_getres), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
    SCMP_SYS(gettimeofday), SCMP_SYS(time), SCMP_SYS(getpid), SCMP_SYS(gettid),
    SCMP_SYS(getppid), SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid),
    SCMP_SYS(getegid), SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity),
    SCMP_SYS(getrusage), SCMP_SYS(getrlimit), SCMP_SYS(prlimit64), SCMP_SYS(getrandom),
    SCMP_SYS(uname), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigaction), SCMP_SYS(sigaltstack),
    SCMP_SYS(restart_syscall), SCMP_SYS(set_tid_address), SCMP_SYS(arch_prctl),
};

/* One argument comparison, every field named (libseccomp's SCMP_A* macros leave datum_b
 * out, which clang's -Wmissing-field-initializers refuses). */
static struct scmp_arg_cmp arg_cmp(unsigned arg, enum scmp_compare op, scmp_datum_t a,
                                   scmp_datum_t b) {
  struct scmp_arg_cmp c = {.arg = arg, .op = op, .datum_a = a, .datum_b = b};
  return c;
}

/* Rules shared by the sandbox and the processes-only filter: threads may be made, other
 * processes may not; clone3's flags lie in memory a filter cannot read, so it says ENOSYS
 * and glibc falls back to clone. libseccomp refuses a rule whose action is the filter's
 * default, so each filter gets only the half it lacks. */
static int add_process_rules(scmp_filter_ctx f, bool sandbox) {
  int rc;
  if (sandbox) /* default: trap */
    rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                          arg_cmp(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  else /* default: allow */
    rc = seccomp_rule_add(f, SCMP_ACT_TRAP, SCMP_SYS(clone), 1,
                          arg_cmp(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
  if (rc == 0)
    rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc == 0 && !sandbox) {
    rc = seccomp_rule_add(f, SCMP_ACT_TRAP, SCMP_SYS(fork), 0);
    if (rc == 0)
      rc = seccomp_rule_add(f, SCMP_ACT_TRAP, SCMP_SYS(vfork), 0);
  }
  return rc;
}

int mproc__seccomp_apply(bool sandbox, bool no_processes, const char *const *extra,
                         size_t n_extra) {
  scmp_filter_ctx f = seccomp_init(sandbox ? SCMP_ACT_TRAP : SCMP_ACT_ALLOW);
  if (!f)
    return -ENOMEM;
  /* A binary tree of the calls instead of a list: a worker's futex and poll are checked
   * in a few steps (the kernel's cache skips the filter for most allowed calls anyway). */
  int rc = seccomp_attr_set(f, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  if (rc == -EOPNOTSUPP || rc == -EINVAL)
    rc = 0; /* an older libseccomp: the list it makes works the same, slower */
  if (rc == 0 && sandbox) {
    for (size_t i = 0; rc == 0 && i < sizeof base_allow / sizeof *base_allow; i++)
      rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, base_allow[i], 0);
    /* stat of a descriptor (glibc's fstat is fstatat(fd, "", AT_EMPTY_PATH)), not of a path. */
    if (rc == 0)
      rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 1,
                            arg_cmp(3, SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
    if (rc == 0)
      rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(statx), 1,
                            arg_cmp(2, SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
    /* Signals to itself only (abort, raise, the trap's own kill). */
    if (rc == 0)
      rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                            arg_cmp(0, SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0));
    for (size_t i = 0; rc == 0 && i < n_extra; i++) {
      int nr = seccomp_syscall_resolve_name(extra[i]);
      rc = nr == __NR_SCMP_ERROR ? -EINVAL : seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 0);
    }
  }
  if (rc == 0 && (no_processes || sandbox))
    rc = add_process_rules(f, sandbox);
  if (rc == 0)
    rc = seccomp_load(f);
  seccomp_release(f);
  return rc > 0 ? -rc : rc;
}

int mproc__syscall_nr(const char *name) {
  int nr = seccomp_syscall_resolve_name(name);
  return nr == __NR_SCMP_ERROR || nr < 0 ? -ENOENT : nr;
}

int mproc__syscall_name(int nr, char *buf, size_t cap) {
  char *n = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  if (!n)
    return -ENOENT;
  snprintf(buf, cap, "%s", n);
  free(n);
  return 0;
}

#else /* no libseccomp: the sandbox and the processes limit are refused */

bool mproc__seccomp_available(void) { return false; }

int mproc__seccomp_apply(bool sandbox, bool no_processes, const char *const *extra,
                         size_t n_extra) {
  (void)sandbox, (void)no_processes, (void)extra, (void)n_extra;
  return -EOPNOTSUPP;
}

int mproc__syscall_nr(const char *name) {
  (void)name;
  return -ENOENT;
}

int mproc__syscall_name(int nr, char *buf, size_t cap) {
  (void)nr, (void)buf, (void)cap;
  return -ENOENT;
}

#endif
