/*
 * The pool's supervisor: a small single-threaded process forked by mproc_pool_new. It forks
 * the workers, notices each death as it happens (signalfd for SIGCHLD, in poll), fails the
 * task the dead worker held, replaces the worker, kills workers whose task ran past the
 * timeout, and takes everything down with it when the caller dies or terminates the pool.
 */
#define _GNU_SOURCE
#include "pool/pool.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Replacements whose initializer fails this many times in a row stop the respawning. */
#define INIT_FAIL_LIMIT 3

typedef struct sup {
  mproc__pool_ctx *ctx;
  pid_t self;
  int sig_fd, caller_fd;
  sigset_t orig_mask;
  int live;        /* workers alive */
  int init_streak; /* replacements whose initializer failed in a row */
  bool broken;     /* no more replacements: tasks fail at once when no worker is left */
  bool closed_seen; /* (broken) the task ring was closed and is drained */
  bool stopping;    /* a worker found the task ring closed and drained: grow no more */
  char broken_msg[256];
  mproc__relay relay; /* clients: children of the caller that use the pool */
  struct pollfd *fds;
  size_t fds_cap;
} sup;

static _Noreturn void kill_all_and_exit(sup *s, int code) {
  mproc__pool_shared *sh = s->ctx->sh;
  for (int i = 0; i < s->ctx->nworkers; i++) {
    pid_t pid = atomic_load(&sh->slots[i].pid);
    if (pid > 0)
      (void)mproc__kill(pid, SIGKILL);
  }
  for (int i = 0; i < s->ctx->nworkers; i++) {
    pid_t pid = atomic_load(&sh->slots[i].pid);
    if (pid > 0) {
      mproc__waitpid(pid, NULL, 0);
      atomic_store(&sh->slots[i].pid, 0);
      mproc__limits_reaped(&s->ctx->lim, pid);
    }
  }
  _exit(code);
}

/* Forks the worker for slot i. false when fork failed. */
static bool spawn(sup *s, int i) {
  mproc__pool_slot *slot = &s->ctx->sh->slots[i];
  atomic_store(&slot->task_id, 0);
  atomic_store(&slot->expired_id, 0);
  atomic_store(&slot->progress, 0);
  atomic_store(&slot->denied_nr, 0);
  atomic_store(&slot->state, MPROC__SLOT_STARTING);
  pid_t pid = mproc__fork_lean();
  if (pid == 0) {
    /* The supervisor is single-threaded, so its death signal is the process's death. */
    if (mproc__die_with_parent(s->self, SIGKILL) < 0)
      _exit(1);
    /* Set here too: the caller may see this worker ready before fork returns up there. */
    atomic_store(&slot->pid, mproc__getpid());
    mproc__close(s->sig_fd);
    mproc__close(s->caller_fd);
    mproc__close(s->ctx->reg_sup);
    mproc__relay_forget(&s->relay);
    mproc__pool_worker(s->ctx, i, &s->orig_mask);
  }
  if (pid < 0) {
    atomic_store(&slot->state, MPROC__SLOT_EMPTY);
    return false;
  }
  atomic_store(&slot->pid, pid);
  s->live++;
  return true;
}

static void describe(char *buf, size_t cap, pid_t pid, int status) {
  if (WIFSIGNALED(status))
    snprintf(buf, cap, "the worker (pid %d) was killed by signal %d (%s)", (int)pid,
             WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(buf, cap, "the worker (pid %d) exited with status %d", (int)pid,
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* The task a dead worker held fails, alone. */
static void fail_held_task(sup *s, mproc__pool_slot *slot, pid_t pid, int status) {
  uint64_t id = atomic_load(&slot->task_id);
  if (id == 0)
    return;
  char msg[320], why[200];
  int code = MPROC_ECRASHED;
  describe(why, sizeof why, pid, status);
  if (atomic_load(&slot->expired_id) == id) {
    code = MPROC_EEXPIRED;
    snprintf(msg, sizeof msg,
             "the task ran longer than the pool's task_timeout (%g s); its worker (pid %d) "
             "was killed",
             s->ctx->timeout_s, (int)pid);
  } else if (!mproc__limits_explain(&s->ctx->lim, "pool", "worker", pid, status,
                                    atomic_load(&slot->denied_nr), msg, sizeof msg)) {
    snprintf(msg, sizeof msg, "%s while running the task", why);
  }
  mproc__pool_post_failure(s->ctx, id, code, atomic_load(&slot->progress), msg);
}

static void replace(sup *s, int i) {
  while (!s->broken) {
    if (spawn(s, i))
      return;
    if (++s->init_streak >= INIT_FAIL_LIMIT) {
      s->broken = true;
      snprintf(s->broken_msg, sizeof s->broken_msg,
               "no worker is left to run the task: a replacement worker could not be forked");
    }
  }
}

/* The pool cannot start: mproc_pool_new returns rc. */
static _Noreturn void boot_failed(sup *s, int rc) {
  mproc__pool_shared *sh = s->ctx->sh;
  atomic_store(&sh->boot_rc, rc);
  atomic_store(&sh->boot, MPROC__BOOT_FAILED);
  mproc__futex_wake(&sh->boot, INT32_MAX);
  kill_all_and_exit(s, 0);
}

static void on_death(sup *s, pid_t pid, int status) {
  mproc__pool_shared *sh = s->ctx->sh;
  int i = 0;
  while (i < s->ctx->nworkers && atomic_load(&sh->slots[i].pid) != pid)
    i++;
  if (i == s->ctx->nworkers)
    return;
  mproc__pool_slot *slot = &sh->slots[i];
  atomic_store(&slot->pid, 0);
  s->live--;
  if (atomic_load(&sh->boot) == MPROC__BOOT_WAIT)
    boot_failed(s, atomic_load(&slot->state) == MPROC__SLOT_INIT_FAILED ? MPROC_ETASK
                                                                        : MPROC_ECRASHED);
  uint32_t state = atomic_load(&slot->state);
  atomic_store(&slot->state, MPROC__SLOT_EMPTY);
  switch (state) {
  case MPROC__SLOT_STOPPED:
    s->stopping = true;
    return;
  case MPROC__SLOT_SHRUNK:
    return;
  case MPROC__SLOT_STARTING:
  case MPROC__SLOT_INIT_FAILED:
    if (++s->init_streak >= INIT_FAIL_LIMIT) {
      s->broken = true;
      snprintf(s->broken_msg, sizeof s->broken_msg,
               "no worker is left to run the task: the pool's initializer failed in %d "
               "replacement workers in a row (last: worker pid %d)",
               s->init_streak, (int)pid);
      return;
    }
    break;
  case MPROC__SLOT_READY:
    s->init_streak = 0;
    fail_held_task(s, slot, pid, status);
    break;
  default: /* RETIRING */
    break;
  }
  replace(s, i);
}

/* mproc_pool_resize asked for more workers than there are: forks them in empty slots. */
static void grow(sup *s) {
  int target = (int)atomic_load(&s->ctx->sh->target);
  if (s->broken || s->stopping || target <= s->live || target > MPROC__POOL_SLOTS)
    return;
  if (target > s->ctx->nworkers)
    s->ctx->nworkers = target;
  for (int i = 0; i < s->ctx->nworkers && s->live < target; i++) {
    mproc__pool_slot *slot = &s->ctx->sh->slots[i];
    if (atomic_load(&slot->pid) == 0 && atomic_load(&slot->state) == MPROC__SLOT_EMPTY &&
        !spawn(s, i))
      return; /* no process to be had now: the next round tries again */
  }
}

static void reap(sup *s) {
  for (;;) {
    int status;
    pid_t pid = mproc__waitpid(-1, &status, WNOHANG);
    if (pid <= 0)
      return;
    on_death(s, pid, status);
    mproc__limits_reaped(&s->ctx->lim, pid); /* after on_death: it may read the group */
  }
}

/* Kills workers whose task ran past the timeout; returns the nearest deadline ahead. */
static int64_t check_timeouts(sup *s) {
  mproc__pool_ctx *ctx = s->ctx;
  if (ctx->timeout_ns <= 0)
    return MPROC__NEVER;
  int64_t now = mproc__now_ns(), next = MPROC__NEVER;
  for (int i = 0; i < ctx->nworkers; i++) {
    mproc__pool_slot *slot = &ctx->sh->slots[i];
    pid_t pid = atomic_load(&slot->pid);
    uint64_t id = atomic_load_explicit(&slot->task_id, memory_order_acquire);
    if (pid <= 0 || id == 0 || atomic_load(&slot->expired_id) == id)
      continue;
    int64_t dl = atomic_load(&slot->start_ns) + ctx->timeout_ns;
    if (dl > now) {
      next = dl < next ? dl : next;
    } else if (atomic_load(&slot->task_id) == id) {
      atomic_store(&slot->expired_id, id);
      (void)mproc__kill(pid, SIGKILL);
    }
  }
  return next;
}

/* Tells the workers when we will next look at the timeouts (they poke us for a sooner
 * one). Store, then look at the slots again; a worker records its task, then reads the
 * deadline: so either it pokes, or this second look counts its task. */
static int64_t publish_deadline(sup *s, int64_t deadline) {
  atomic_store(&s->ctx->sh->sup_deadline, deadline);
  int64_t again = check_timeouts(s);
  if (again < deadline) {
    deadline = again;
    atomic_store(&s->ctx->sh->sup_deadline, deadline);
  }
  return deadline;
}

/* With no worker left and none coming, every task fails at once. */
static void drain_broken(sup *s) {
  mproc__ring_msg m;
  int rc;
  while ((rc = mproc__ring_read_begin(s->ctx->tasks, &m, 0)) == 0) {
    mproc__task_hdr h;
    bool whole = m.len >= sizeof h;
    if (whole)
      memcpy(&h, m.data, sizeof h);
    mproc__ring_read_end(s->ctx->tasks, &m, true);
    if (!whole)
      continue;
    mproc__pool_post_failure(s->ctx, h.id, MPROC_ECRASHED, 0, s->broken_msg);
  }
  if (rc == MPROC_ECLOSED)
    s->closed_seen = true;
}

/* The pool's work is done: what clients are owed goes to them, then the supervisor goes. */
static _Noreturn void finish(sup *s) {
  while (mproc__relay_move(&s->relay))
    ;
  _exit(0);
}

static bool caller_gone(sup *s) { return getppid() != s->ctx->parent; }

static void setup_signals(sup *s) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGUSR1);
  /* An inherited SIG_IGN for SIGCHLD would make the kernel reap workers behind our back. */
  mproc__signal_set(SIGCHLD, false);
  /* Ctrl-C reaches the whole foreground group: it is the caller's to handle (as billiard
   * does, the pool's processes ignore it; the workers inherit this). */
  mproc__signal_set(SIGINT, true);
  mproc__block_signals(&mask, &s->orig_mask);
  s->sig_fd = mproc__signalfd(&mask);
  if (s->sig_fd < 0)
    _exit(1);
  /* SIGUSR1 comes when the caller's thread that made the pool ends; the process may live on,
   * so it only makes us look (getppid). The pidfd sees the process itself end. */
  if (mproc__die_with_parent(s->ctx->parent, SIGUSR1) < 0)
    _exit(1);
  s->caller_fd = mproc__pidfd_open(s->ctx->caller);
}

/* The poll set: signals, ctl_fd, the caller, then the clients' (pool_relay.c). NULL when
 * memory for a bigger set ran out (the clients then wait a round). */
static struct pollfd *poll_set(sup *s, size_t *n) {
  size_t want = 3 + mproc__relay_nfds(&s->relay);
  if (want > s->fds_cap) {
    struct pollfd *f = realloc(s->fds, want * sizeof *f);
    if (f) {
      s->fds = f;
      s->fds_cap = want;
    }
  }
  if (want > s->fds_cap)
    want = 3;
  struct pollfd *fds = s->fds;
  fds[0] = (struct pollfd){s->sig_fd, POLLIN, 0};
  fds[1] = (struct pollfd){s->ctx->ctl_fd, POLLIN, 0};
  fds[2] = (struct pollfd){s->caller_fd, POLLIN, 0}; /* -1: poll skips it */
  if (want > 3)
    mproc__relay_fds(&s->relay, fds + 3);
  *n = want;
  return fds;
}

/* One round of poll: returns after any event or the nearest task deadline. */
static void wait_events(sup *s, int64_t deadline) {
  size_t nfds;
  struct pollfd *fds = poll_set(s, &nfds);
  int rc = mproc__poll(fds, nfds, deadline);
  if (rc <= 0)
    return;
  if (fds[1].revents)
    mproc__eventfd_drain(s->ctx->ctl_fd);
  if (fds[2].revents)
    kill_all_and_exit(s, 0);
  if (nfds > 3)
    mproc__relay_events(&s->relay, fds + 3);
  int sig;
  while ((sig = mproc__signalfd_read(s->sig_fd)) > 0) {
    if (sig == SIGTERM)
      kill_all_and_exit(s, 0);
  }
}

_Noreturn void mproc__pool_supervise(mproc__pool_ctx *ctx) {
  sup s = {.ctx = ctx, .self = mproc__getpid(), .caller_fd = -1, .relay.ctx = ctx};
  mproc__close(ctx->reg_fd); /* the caller's and its clients' end; forked, we have a copy */
  ctx->reg_fd = -1;
  if (!(s.fds = malloc(3 * sizeof *s.fds)))
    _exit(1);
  s.fds_cap = 3;
  setup_signals(&s);
  if (caller_gone(&s))
    _exit(0);
  for (int i = 0; i < ctx->nworkers; i++)
    if (!spawn(&s, i))
      boot_failed(&s, -EAGAIN); /* fork's error for a process limit or no memory */
  for (;;) {
    if (caller_gone(&s) || (atomic_load(&ctx->sh->flags) & MPROC__FLAG_TERMINATE))
      kill_all_and_exit(&s, 0);
    reap(&s);
    grow(&s);
    int64_t deadline = check_timeouts(&s);
    if (mproc__relay_move(&s.relay))
      deadline = 0; /* more to move: after a look at everything else */
    if (s.broken && s.live == 0) {
      drain_broken(&s);
      if (s.closed_seen)
        finish(&s);
      /* Tasks may still come; this state is terminal, so a short period is acceptable. */
      int64_t soon = mproc__now_ns() + 10 * 1000000;
      deadline = soon < deadline ? soon : deadline;
    } else if (s.live == 0) {
      finish(&s); /* every worker found the closed ring drained */
    }
    /* Armed, then one more look (both seq_cst): a result posted before the arming is seen
     * here, one posted after it pokes ctl_fd. */
    atomic_store(&ctx->sh->relay_armed, 1);
    if (mproc__ring_wait_readable(ctx->relay, 0) == 0)
      deadline = 0;
    wait_events(&s, publish_deadline(&s, deadline));
  }
}
