/*
 * Process: one child running target(arg), with Python's lifecycle and exit codes, and the
 * process-local registry of started children that mproc_active_children and the exit
 * handler walk.
 *
 * Lifecycle: NEW -> RUNNING (start) -> DONE (reaped by join, is_alive, active_children or
 * free). Only the process that started a child may wait for, signal or reap it: a handle
 * inherited by a forked child is inert there (MPROC_ESTATE), and freeing it there releases
 * only that copy.
 *
 * Daemons die with their parent: at normal exit (the atexit handler kills them) and on any
 * death (the child sets PR_SET_PDEATHSIG=SIGKILL). The death signal is tied to the parent
 * *thread*: a daemon started from a thread that ends before the process is killed then.
 */
#define _GNU_SOURCE
#include "core/process.h"
#include "testing.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { P_NEW, P_RUNNING, P_DONE };

struct mproc_process {
  mproc_target_fn target;
  void *arg;
  char *name;
  char *ident; /* Python's _identity: "2", or "1:2" for the 2nd child of Process-1 */
  bool daemon;
  bool lost;   /* someone else reaped it: the exit status is unknown */
  int state;
  pid_t pid;
  pid_t owner; /* the process that started it */
  int pidfd;   /* -1 where pidfds are missing */
  int exitcode;
};

int mproc__test_setup_errno;
bool mproc__test_no_pidfd;

/* ---- this process's own identity (as a child started by mproc) ---- */

static atomic_uint child_counter;
static char *own_ident;   /* NULL in the main program */
static pid_t parent_at_start; /* 0 in the main program */
static const char *own_name = "MainProcess";

const char *mproc_current_process_name(void) { return own_name; }

int mproc_cpu_count(void) { return mproc__cpu_count(); }

/* ---- the children registry: started, not yet reaped ---- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mproc_process **reg;
static size_t reg_len, reg_cap;

static void reg_atfork_prepare(void) { pthread_mutex_lock(&reg_lock); }
static void reg_atfork_parent(void) { pthread_mutex_unlock(&reg_lock); }
/* A forked child is no parent of its parent's children: it starts with an empty registry
 * (the array is the child's own copy, so keeping its allocation is fine). */
static void reg_atfork_child(void) {
  pthread_mutex_init(&reg_lock, NULL);
  reg_len = 0;
}

/* Room for one more entry, made before the fork so that registering cannot fail after. */
static int reg_reserve(void) {
  pthread_mutex_lock(&reg_lock);
  int rc = 0;
  if (reg_len == reg_cap) {
    size_t cap = reg_cap ? reg_cap * 2 : 16;
    mproc_process **n = realloc(reg, cap * sizeof *n);
    if (n) {
      reg = n;
      reg_cap = cap;
    } else {
      rc = MPROC_ENOMEM;
    }
  }
  pthread_mutex_unlock(&reg_lock);
  return rc;
}

static void reg_add(mproc_process *p) {
  pthread_mutex_lock(&reg_lock);
  if (reg_len < reg_cap)
    reg[reg_len++] = p;
  pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(mproc_process *p) {
  pthread_mutex_lock(&reg_lock);
  for (size_t i = 0; i < reg_len; i++) {
    if (reg[i] == p) {
      reg[i] = reg[--reg_len];
      break;
    }
  }
  pthread_mutex_unlock(&reg_lock);
}

/* The i-th registered child, or NULL past the end. */
static mproc_process *reg_get(size_t i) {
  pthread_mutex_lock(&reg_lock);
  mproc_process *p = i < reg_len ? reg[i] : NULL;
  pthread_mutex_unlock(&reg_lock);
  return p;
}

/* ---- reaping ---- */

static bool owned(const mproc_process *p) { return p->owner == mproc__getpid(); }

/* 1 when p is reaped now (or was reaped by someone else), 0 while it runs, or -errno. */
static int reap(mproc_process *p, int flags) {
  int st = 0;
  pid_t r = mproc__waitpid(p->pid, &st, flags);
  if (r == 0)
    return 0;
  if (r < 0 && r != -ECHILD)
    return r;
  /* ECHILD: the user reaped it behind our back (waitpid(-1) or SIGCHLD ignored). */
  p->lost = r < 0;
  p->exitcode = r < 0 ? 0 : mproc__exitcode(st);
  p->state = P_DONE;
  reg_remove(p);
  return 1;
}

static void nap(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  nanosleep(&ts, NULL);
}

/* Without a pidfd: WNOHANG with a backoff capped at 10 ms, bounded by the deadline. */
static int wait_by_polling(mproc_process *p, int64_t deadline) {
  int64_t backoff = 100000;
  for (;;) {
    int rc = reap(p, WNOHANG);
    if (rc != 0)
      return rc < 0 ? rc : 0;
    int64_t left = mproc__remaining_ns(deadline);
    if (left == 0)
      return MPROC_ETIMEDOUT;
    nap(left < backoff ? left : backoff);
    backoff = backoff * 2 > 10000000 ? 10000000 : backoff * 2;
  }
}

static int wait_until(mproc_process *p, int64_t deadline) {
  if (deadline == MPROC__NEVER) {
    int rc = reap(p, 0);
    return rc < 0 ? rc : 0;
  }
  if (p->pidfd < 0)
    return wait_by_polling(p, deadline);
  for (;;) {
    int rc = reap(p, WNOHANG);
    if (rc != 0)
      return rc < 0 ? rc : 0;
    /* The pidfd turns readable when the child ends; then WNOHANG reaps it. */
    rc = mproc__poll_fd(p->pidfd, POLLIN, deadline, NULL);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return reap(p, WNOHANG) == 1 ? 0 : MPROC_ETIMEDOUT;
  }
}

/* Python's util._exit_function: kill the daemons, then join every child left. Runs at
 * normal exit (atexit) and in an mproc child when its target returns. */
static void exit_children(void) {
  for (size_t i = 0;; i++) {
    mproc_process *p = reg_get(i);
    if (!p)
      break;
    if (p->daemon)
      (void)mproc__kill(p->pid, SIGKILL);
  }
  mproc_process *p;
  while ((p = reg_get(0)) != NULL) {
    if (wait_until(p, MPROC__NEVER) < 0)
      reg_remove(p); /* cannot be waited for: do not loop on it */
  }
}

/* Registered at the first start, not in a constructor: no fork can need the registry reset
 * before then, and constructors of a static library run in no guaranteed order. */
static void register_handlers(void) {
  pthread_atfork(reg_atfork_prepare, reg_atfork_parent, reg_atfork_child);
  atexit(exit_children);
}

static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

/* ---- new / start ---- */

int mproc_process_new(mproc_process **out, mproc_target_fn target, void *arg,
                      const mproc_process_opts *opts) {
  if (!out || !target)
    return MPROC_EINVAL;
  mproc_process *p = calloc(1, sizeof *p);
  if (!p)
    return MPROC_ENOMEM;
  unsigned n = atomic_fetch_add(&child_counter, 1) + 1;
  int len = own_ident ? asprintf(&p->ident, "%s:%u", own_ident, n)
                      : asprintf(&p->ident, "%u", n);
  if (len < 0)
    p->ident = NULL;
  if (p->ident) {
    if (opts && opts->name)
      p->name = strdup(opts->name);
    else if (asprintf(&p->name, "Process-%s", p->ident) < 0)
      p->name = NULL;
  }
  if (!p->ident || !p->name) {
    free(p->ident);
    free(p->name);
    free(p);
    return MPROC_ENOMEM;
  }
  p->target = target;
  p->arg = arg;
  p->daemon = opts && opts->daemon;
  p->pidfd = -1;
  *out = p;
  return 0;
}

/* In the child, before the target runs. names: "name\0ident\0", copied by the parent
 * before the fork (a malloc in the child costs ~30 us of copied pages per start, and the
 * target may free its inherited handle). Returns 0 or a positive errno for start. */
static int child_setup(mproc_process *p, pid_t parent, char *names) {
  if (mproc__test_setup_errno)
    return mproc__test_setup_errno;
  if (p->daemon) {
    int rc = mproc__die_with_parent(parent, SIGKILL);
    if (rc < 0)
      return -rc;
  }
  own_name = names;
  own_ident = names + strlen(names) + 1;
  parent_at_start = parent;
  atomic_store(&child_counter, 0);
  return 0;
}

static _Noreturn void child_main(mproc_process *p, pid_t parent, int errfd, char *names) {
  int err = child_setup(p, parent, names);
  if (err) {
    (void)mproc__write_full(errfd, &err, sizeof err);
    _exit(255);
  }
  /* EOF on the pipe tells start that setup succeeded. */
  mproc__close(errfd);
  int code = p->target(p->arg);
  exit_children();
  fflush(stdout);
  fflush(stderr);
  _exit(code);
}

/* Reads the child's setup report from the non-blocking pipe: 0 (EOF) or -errno. A child
 * reports within microseconds, while a sleep and wake-up costs tens of them: retry for up
 * to 40 us before blocking, yielding meanwhile so that a child queued on this CPU runs
 * (a pure spin measured worse: it kept the child off the CPU). */
static int read_setup_report(int fd) {
  int64_t spin_until = mproc__now_ns() + 40000;
  while (mproc__poll_fd(fd, POLLIN, 0, NULL) == 0 && mproc__now_ns() < spin_until)
    mproc__yield();
  int err = 0;
  ssize_t n = mproc__read_full(fd, &err, sizeof err);
  if (n < 0)
    return (int)n;
  if (n == 0)
    return 0;
  return n == sizeof err && err > 0 ? -err : -EIO;
}

static char *names_copy(const mproc_process *p) {
  size_t nl = strlen(p->name) + 1, il = strlen(p->ident) + 1;
  char *c = malloc(nl + il);
  if (c) {
    memcpy(c, p->name, nl);
    memcpy(c + nl, p->ident, il);
  }
  return c;
}

int mproc_process_start(mproc_process *p) {
  if (!p)
    return MPROC_EINVAL;
  if (p->state != P_NEW)
    return MPROC_ESTATE;
  int rc = reg_reserve();
  if (rc)
    return rc;
  pthread_once(&handlers_once, register_handlers);
  char *names = names_copy(p);
  if (!names)
    return MPROC_ENOMEM;
  int fds[2];
  rc = mproc__pipe(fds, true);
  if (rc) {
    free(names);
    return rc;
  }
  pid_t parent = mproc__getpid();
  pid_t pid = mproc__fork();
  if (pid == 0) {
    mproc__close(fds[0]);
    child_main(p, parent, fds[1], names);
  }
  rc = pid < 0 ? -errno : 0;
  free(names);
  mproc__close(fds[1]);
  if (rc == 0)
    rc = read_setup_report(fds[0]);
  mproc__close(fds[0]);
  if (rc < 0) {
    if (pid > 0) {
      (void)mproc__kill(pid, SIGKILL);
      mproc__waitpid(pid, NULL, 0);
    }
    return rc;
  }
  p->pid = pid;
  p->owner = parent;
  /* Safe after fork: the pid cannot be reused before we reap it. */
  int fd = mproc__test_no_pidfd ? -ENOSYS : mproc__pidfd_open(pid);
  p->pidfd = fd < 0 ? -1 : fd;
  p->state = P_RUNNING;
  reg_add(p);
  return 0;
}

/* ---- waiting and signals ---- */

/* What join and the signals may do with p: MPROC_EINVAL, MPROC_ESTATE (never started, or
 * not ours), 1 when it is reaped (nothing left to do), 0 while it can be waited for. */
static int waitable(const mproc_process *p) {
  if (!p)
    return MPROC_EINVAL;
  if (p->state == P_NEW || !owned(p))
    return MPROC_ESTATE;
  return p->state == P_DONE;
}

int mproc_process_join(mproc_process *p, double timeout) {
  int rc = waitable(p);
  return rc ? (rc > 0 ? 0 : rc) : wait_until(p, mproc__deadline(timeout));
}

bool mproc_process_is_alive(mproc_process *p) {
  if (!p || p->state != P_RUNNING || !owned(p))
    return false;
  return reap(p, WNOHANG) == 0;
}

static int send_signal(mproc_process *p, int sig) {
  int rc = waitable(p);
  if (rc)
    return rc > 0 ? 0 : rc;
  /* Not reaped yet, so the pid is still ours even if the child has ended. */
  rc = mproc__kill(p->pid, sig);
  return rc == -ESRCH ? 0 : rc;
}

int mproc_process_terminate(mproc_process *p) { return send_signal(p, SIGTERM); }
int mproc_process_kill(mproc_process *p) { return send_signal(p, SIGKILL); }
int mproc_process_interrupt(mproc_process *p) { return send_signal(p, SIGINT); }

/* ---- accessors ---- */

pid_t mproc_process_pid(const mproc_process *p) { return p ? p->pid : 0; }

int mproc_process_exitcode(const mproc_process *p, int *code) {
  if (!p || !code)
    return MPROC_EINVAL;
  if (p->state != P_DONE)
    return MPROC_ESTATE;
  if (p->lost)
    return -ECHILD;
  *code = p->exitcode;
  return 0;
}

const char *mproc_process_name(const mproc_process *p) { return p ? p->name : NULL; }
bool mproc_process_daemon(const mproc_process *p) { return p && p->daemon; }
int mproc_process_sentinel(const mproc_process *p) {
  return p && p->state != P_NEW ? p->pidfd : -1;
}

void mproc_process_free(mproc_process *p) {
  if (!p)
    return;
  if (p->state == P_RUNNING && owned(p) && reap(p, WNOHANG) == 0) {
    (void)mproc__kill(p->pid, SIGKILL);
    reap(p, 0);
  }
  reg_remove(p); /* whatever reap could do: the registry must not keep freed memory */
  mproc__close(p->pidfd);
  free(p->name);
  free(p->ident);
  free(p);
}

pid_t mproc_parent_pid(void) { return parent_at_start ? parent_at_start : getppid(); }

int mproc_active_children(mproc_process **procs, size_t max) {
  size_t i = 0;
  int alive = 0;
  mproc_process *p;
  /* A reaped child leaves the registry and the last entry takes its index. */
  while ((p = reg_get(i)) != NULL) {
    if (reap(p, WNOHANG) == 1)
      continue;
    if (procs && (size_t)alive < max)
      procs[alive] = p;
    alive++;
    i++;
  }
  return alive;
}

/* ---- for mproc_wait ---- */

int mproc__process_wait_fd(const mproc_process *p, int *fd) {
  if (!p)
    return MPROC_EINVAL;
  if (p->state == P_NEW)
    return MPROC_ESTATE;
  if (p->state == P_DONE)
    return 1;
  if (!owned(p))
    return MPROC_ESTATE;
  *fd = p->pidfd;
  return 0;
}

bool mproc__process_ended(const mproc_process *p) {
  siginfo_t si;
  for (;;) {
    memset(&si, 0, sizeof si);
    int rc = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if (rc == 0)
      return si.si_pid != 0;
    if (errno != EINTR)
      return true; /* ECHILD: it is gone */
  }
}
