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
#include "core/limits.h"
#include "core/start.h"
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
  mproc_start_method method;
  bool served;  /* a forkserver's child: its end arrives on chan, not through waitpid */
  int chan;
  void *arg_copy; /* opts.arg_len: owned */
  size_t arg_len;
  void **handles; /* opts.handles, copied */
  size_t n_handles;
  mproc__limits lim; /* opts' limits and sandbox (all zero: none) */
  /* Where the child's SIGSYS trap records the call its filter denied: a shared page, only
   * with a filter. */
  _Atomic int32_t *denied;
  char *error; /* mproc_process_error, once reaped */
};

int mproc__test_setup_errno;
bool mproc__test_no_pidfd;

/* ---- this process's own identity (as a child started by mproc) ---- */

static atomic_uint child_counter;
static const char *own_ident;   /* NULL in the main program */
static pid_t parent_at_start; /* 0 in the main program */
static const char *own_name = "MainProcess";
/* In a child: the handles its parent passed (opts.handles), as this process sees them. */
static void *const *own_handles;
static size_t own_nhandles;

void *mproc_process_handle(size_t i) { return i < own_nhandles ? own_handles[i] : NULL; }

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

/* Why a limit ended the child, if one did; then its memory group goes. */
static void explain_end(mproc_process *p, int status) {
  char buf[320];
  int32_t nr = p->denied ? atomic_load(p->denied) : 0;
  if (mproc__limits_explain(&p->lim, "process", "child", p->pid, status, nr, buf, sizeof buf))
    p->error = strdup(buf); /* NULL on ENOMEM: only the message is lost */
  mproc__limits_reaped(&p->lim, p->pid);
}

static void mark_done(mproc_process *p, bool lost, int status) {
  if (!lost && mproc__limits_any(&p->lim))
    explain_end(p, status);
  p->lost = lost;
  p->exitcode = lost ? 0 : mproc__exitcode(status);
  p->state = P_DONE;
  reg_remove(p);
}

/* A forkserver child: its wait status arrives on chan by deadline. 1, 0, or -errno. */
static int reap_served(mproc_process *p, int64_t deadline) {
  mproc__child c = {p->pid, p->pidfd, p->chan};
  int st = 0;
  int rc = mproc__child_poll(&c, deadline, &st);
  if (rc == 0)
    return 0;
  if (rc < 0 && rc != -ECHILD)
    return rc;
  mark_done(p, rc < 0, st); /* ECHILD: the server died before it could tell */
  return 1;
}

/* 1 when p is reaped now (or was reaped by someone else), 0 while it runs, or -errno. */
static int reap(mproc_process *p, int flags) {
  if (p->served)
    return reap_served(p, flags & WNOHANG ? 0 : MPROC__NEVER);
  int st = 0;
  pid_t r = mproc__waitpid(p->pid, &st, flags);
  if (r == 0)
    return 0;
  if (r < 0 && r != -ECHILD)
    return r;
  /* ECHILD: the user reaped it behind our back (waitpid(-1) or SIGCHLD ignored). */
  mark_done(p, r < 0, st);
  return 1;
}

/* Sends sig to a started, unreaped child: through its pidfd where it has one. */
static int kill_child(mproc_process *p, int sig) {
  mproc__child c = {p->pid, p->pidfd, p->served ? p->chan : -1};
  return mproc__child_kill(&c, sig);
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
  if (p->served) {
    int rc = reap_served(p, deadline);
    return rc < 0 ? rc : rc == 1 ? 0 : MPROC_ETIMEDOUT;
  }
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
      (void)kill_child(p, SIGKILL);
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

/* What opts says beyond name and daemon: the method, a copy of arg, the handles. */
static int copy_opts(mproc_process *p, const mproc_process_opts *opts) {
  if ((unsigned)opts->start_method > MPROC_START_SPAWN ||
      (opts->n_handles > 0 && !opts->handles) || opts->n_handles > MPROC__FDS_MAX)
    return MPROC_EINVAL;
  p->method = opts->start_method;
  if (opts->memory_limit && opts->memory_limit < ((size_t)1 << 20)) /* below what a child needs */
    return MPROC_EINVAL;
  int rc = mproc__limits_init(&p->lim, opts->memory_limit, opts->memory_limit_how,
                              opts->limits, opts->sandbox);
  if (rc)
    return rc;
  if (p->lim.sandbox || p->lim.processes == -1) {
    if (!(p->denied = mproc__shared_map(sizeof *p->denied)))
      return MPROC_ENOMEM;
  }
  if (opts->arg_len > 0) {
    if (!p->arg)
      return MPROC_EINVAL;
    if (!(p->arg_copy = malloc(opts->arg_len)))
      return MPROC_ENOMEM;
    memcpy(p->arg_copy, p->arg, opts->arg_len);
    p->arg = p->arg_copy;
    p->arg_len = opts->arg_len;
  }
  if (opts->n_handles > 0) {
    if (!(p->handles = malloc(opts->n_handles * sizeof *p->handles)))
      return MPROC_ENOMEM;
    memcpy(p->handles, opts->handles, opts->n_handles * sizeof *p->handles);
    p->n_handles = opts->n_handles;
  }
  return 0;
}

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
  p->chan = -1;
  int rc = opts ? copy_opts(p, opts) : 0;
  if (rc) {
    mproc_process_free(p);
    return rc;
  }
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
  own_handles = p->handles;
  own_nhandles = p->n_handles;
  atomic_store(&child_counter, 0);
  /* Last: the sandbox may deny what the set-up above needs. */
  int rc = mproc__limits_apply(&p->lim, p->denied);
  return rc < 0 ? -rc : 0;
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

static int start_forked(mproc_process *p);
static int start_unforked(mproc_process *p, mproc_start_method m);

int mproc_process_start(mproc_process *p) {
  if (!p)
    return MPROC_EINVAL;
  if (p->state != P_NEW)
    return MPROC_ESTATE;
  int rc = reg_reserve();
  if (rc)
    return rc;
  pthread_once(&handlers_once, register_handlers);
  mproc_start_method m = mproc__start_resolve(p->method);
  rc = m == MPROC_START_FORK ? start_forked(p) : start_unforked(p, m);
  if (rc == 0) {
    p->owner = mproc__getpid();
    p->state = P_RUNNING;
    reg_add(p);
  }
  return rc;
}

static int start_forked(mproc_process *p) {
  char *names = names_copy(p);
  if (!names)
    return MPROC_ENOMEM;
  int fds[2];
  int rc = mproc__pipe(fds, true);
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
  /* Safe after fork: the pid cannot be reused before we reap it. */
  int fd = mproc__test_no_pidfd ? -ENOSYS : mproc__pidfd_open(pid);
  p->pidfd = fd < 0 ? -1 : fd;
  return 0;
}

/* ---- spawn and forkserver ---- */

/* The child's side of start_unforked: reads what it wrote, sets up, reports, runs. */
static void process_boot(int chan, mproc__rd *r) {
  mproc_target_fn target = (mproc_target_fn)mproc__rd_fn(r);
  size_t arg_len = (size_t)mproc__rd_u64(r);
  const void *arg_in = mproc__rd_bytes(r, arg_len);
  bool daemon = mproc__rd_u64(r) != 0;
  pid_t parent = (pid_t)mproc__rd_u64(r);
  const char *name = mproc__rd_str(r), *ident = mproc__rd_str(r);
  mproc__limits lim;
  int lerr = mproc__limits_get(r, &lim);
  _Atomic int32_t *denied = (_Atomic int32_t *)(uintptr_t)mproc__rd_u64(r);
  size_t n = (size_t)mproc__rd_u64(r);
  void **handles = n <= MPROC__FDS_MAX ? calloc(n ? n : 1, sizeof *handles) : NULL;
  for (size_t i = 0; handles && i < n && !r->bad; i++)
    handles[i] = mproc__handle_import(r);
  /* A copy, so that the target gets memory aligned for any type. */
  void *arg = arg_len ? malloc(arg_len) : NULL;
  int err = !handles || (arg_len && !arg) ? -ENOMEM : 0;
  if (!err && (r->bad || !target || !name || !ident))
    err = r->err ? r->err : -EPROTO;
  if (!err && lerr)
    err = lerr;
  if (!err && daemon) /* under forkserver the parent is the server, which dies with ours */
    err = mproc__die_with_parent(getppid(), SIGKILL);
  if (err) {
    mproc__boot_report(chan, err);
    _exit(255);
  }
  if (arg_len)
    memcpy(arg, arg_in, arg_len);
  own_name = name;
  own_ident = ident;
  parent_at_start = parent;
  own_handles = handles;
  own_nhandles = n;
  /* Last before the report: the sandbox may deny what the set-up above needs. */
  err = mproc__limits_apply(&lim, denied);
  mproc__boot_report(chan, err);
  if (err)
    _exit(255);
  int code = target(arg);
  exit_children();
  fflush(stdout);
  fflush(stderr);
  _exit(code);
}

static int start_unforked(mproc_process *p, mproc_start_method m) {
  /* The child cannot see the caller's memory: a pointer must come with its length. */
  if (p->arg && !p->arg_len)
    return MPROC_EINVAL;
  mproc__msg msg;
  mproc__msg_init(&msg);
  mproc__msg_put_fn(&msg, (const void *)p->target);
  mproc__msg_put_u64(&msg, p->arg_len);
  mproc__msg_put(&msg, p->arg, p->arg_len);
  mproc__msg_put_u64(&msg, p->daemon);
  mproc__msg_put_u64(&msg, (uint64_t)mproc__getpid());
  mproc__msg_put_str(&msg, p->name);
  mproc__msg_put_str(&msg, p->ident);
  mproc__limits_put(&msg, &p->lim);
  mproc__msg_put_u64(&msg, (uint64_t)(uintptr_t)p->denied);
  if (p->denied)
    mproc__msg_put_mem(&msg, p->denied);
  mproc__msg_put_u64(&msg, p->n_handles);
  int rc = 0;
  for (size_t i = 0; i < p->n_handles && rc == 0; i++)
    rc = mproc__handle_export(p->handles[i], &msg);
  mproc__child c;
  if (rc == 0)
    rc = mproc__child_start(m, process_boot, &msg, &c);
  mproc__msg_free(&msg);
  if (rc)
    return rc;
  if (mproc__test_no_pidfd) { /* as on a kernel before pidfd_open (5.3) */
    mproc__close(c.pidfd);
    c.pidfd = -1;
  }
  p->pid = c.pid;
  p->pidfd = c.pidfd;
  p->chan = c.chan;
  p->served = m == MPROC_START_FORKSERVER;
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
  rc = kill_child(p, sig);
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
const char *mproc_process_error(const mproc_process *p) { return p ? p->error : NULL; }
mproc_memlimit_kind mproc_process_memlimit(const mproc_process *p) {
  return p ? (mproc_memlimit_kind)p->lim.memlimit_kind : MPROC_MEMLIMIT_NONE;
}
bool mproc_process_daemon(const mproc_process *p) { return p && p->daemon; }
int mproc_process_sentinel(const mproc_process *p) {
  return p && p->state != P_NEW ? (p->served ? p->chan : p->pidfd) : -1;
}

void mproc_process_free(mproc_process *p) {
  if (!p)
    return;
  if (p->state == P_RUNNING && owned(p) && reap(p, WNOHANG) == 0) {
    (void)kill_child(p, SIGKILL);
    reap(p, 0);
  }
  reg_remove(p); /* whatever reap could do: the registry must not keep freed memory */
  mproc__close(p->pidfd);
  mproc__close(p->chan);
  free(p->arg_copy);
  free(p->handles);
  free(p->error);
  if (owned(p))
    mproc__limits_sweep(&p->lim); /* the group of a child reaped behind our back */
  mproc__limits_free(&p->lim);
  if (p->denied)
    mproc__shared_unmap((void *)p->denied, sizeof *p->denied);
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
  *fd = p->served ? p->chan : p->pidfd; /* chan: readable once the server has reaped it */
  return 0;
}

bool mproc__process_ended(const mproc_process *p) {
  if (p->served)
    return mproc__poll_fd(p->chan, POLLIN, 0, NULL) != 0;
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
